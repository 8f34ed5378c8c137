"""Where keys live (tools/paths.py): one rule for `softkey run` and every other verb."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from softkey.tools import paths


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


def test_default_key_under_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert paths.resolve_state() == home / ".local/share/softkey/default.sqlite3"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert paths.data_dir() == home / ".local/share/softkey"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.resolve_state("work") == tmp_path / "xdg/softkey/work.sqlite3"


def test_state_path_and_key_names(tmp_path: Path) -> None:
    given = tmp_path / "ci" / "key.db"
    assert paths.resolve_state(state=given) == given
    with pytest.raises(paths.KeyPathError, match="not both"):
        paths.resolve_state("a", given)
    for bad in ("", "../x", "a/b", ".hidden", "-flag", "x" * 65, "a.sqlite3", "sp ace"):
        with pytest.raises(paths.KeyPathError, match="invalid key name"):
            paths.key_state_path(bad)
    assert paths.key_name(paths.key_state_path("my-key_2.b")) == "my-key_2.b"
    assert paths.key_name(given) is None
    assert paths.display_name(paths.key_state_path("a")) == "'a'"


def test_each_key_gets_its_own_socket(tmp_path: Path) -> None:
    a, b = paths.key_state_path("a"), paths.key_state_path("b")
    paths.prepare_state_dir(a)  # the data directory, 0700: private, so sockets sit there
    assert paths.control_socket_path(a) == a.with_name("a.sock")
    assert paths.control_socket_path(b) == b.with_name("b.sock")
    odd = tmp_path / "state.sock"  # a state file named like a socket keeps them apart
    assert paths.control_socket_path(odd) == tmp_path / "state.sock.sock"


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770, 0o730])
def test_a_socket_never_sits_where_others_can_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, -1, 65534)  # a group others are in (nogroup), not our private group
    shared.chmod(mode)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    sock = paths.control_socket_path(shared / "key.sqlite3")
    assert sock.parent == tmp_path / "run" / "softkey"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert paths.control_socket_path(shared / "key.sqlite3").parent == Path(
        f"/tmp/softkey-{os.geteuid()}"
    )


def test_long_state_paths_put_the_socket_in_the_runtime_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "key.sqlite3"
    deep.parent.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    sock = paths.control_socket_path(deep)
    assert sock.parent == tmp_path / "run" / "softkey" and sock.suffix == ".sock"
    other = paths.control_socket_path(deep.with_name("other.sqlite3"))
    assert other != sock and len(str(sock).encode()) <= 107
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("r" * 120)))
    with pytest.raises(paths.KeyPathError, match="XDG_RUNTIME_DIR"):
        paths.control_socket_path(deep)


def test_list_key_states_ignores_other_files(tmp_path: Path) -> None:
    directory = paths.data_dir()
    directory.mkdir(parents=True)
    for name in ("b.sqlite3", "a.sqlite3", "a.sqlite3-wal", "a.sock", "notes.txt", ".x.sqlite3"):
        (directory / name).write_bytes(b"")
    assert [p.name for p in paths.list_key_states()] == ["a.sqlite3", "b.sqlite3"]
