"""The state path is hostile ground (issue: local trust boundary, item 1).

Each attack is staged by a real other uid (users.py) in a /tmp-like shared directory; the
victim is root (the test process's own CLI) or another real uid. softkey must refuse, say why
in one line, never follow a planted link, never chmod what it did not create, and never adopt a
file another user can read.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from users import ATTACKER, VICTIM, as_uid, home_of, softkey_as

from softkey.authenticator import Authenticator, StateError
from softkey.authenticator.private_files import PrivateFileError, open_private
from softkey.authenticator.store import StateLock

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    return subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _refused(result: Any, *words: str) -> None:
    """Exit 1, a one-line error naming the problem, no traceback (a CompletedProcess or a
    users.Outcome)."""
    code, err = result.returncode, result.stderr
    assert code == 1, (code, err)
    assert "Traceback" not in err and "Traceback" not in result.stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_state_file_planted_world_readable_by_another_user_is_not_adopted(shared_base: Path):
    state = shared_base / "shared" / "key.sqlite3"

    def plant() -> None:
        fd = os.open(state, os.O_CREAT | os.O_WRONLY, 0o666)
        os.fchmod(fd, 0o666)
        os.close(fd)

    assert as_uid(ATTACKER, plant).returncode == 0
    # Root as the victim: the file is not root's, so no master key is ever written into it.
    _refused(_cli("fill", "--state", str(state), "--count", "1"), str(state), "uid 40001")
    assert state.stat().st_size == 0 and _mode(state) == 0o666
    # Another real user as the victim: the same.
    victim = softkey_as(VICTIM, "fill", "--state", str(state), "--count", "1")
    _refused(victim, "uid 40001")
    assert state.stat().st_size == 0


def test_a_planted_symlink_is_neither_followed_nor_chmoded(shared_base: Path) -> None:
    target = shared_base / "precious.conf"  # a root file softkey must not chmod or overwrite
    target.write_text("keep me\n")
    target.chmod(0o644)
    state = shared_base / "shared" / "key.sqlite3"
    assert as_uid(ATTACKER, lambda: os.symlink(target, state)).returncode == 0
    _refused(_cli("fill", "--state", str(state), "--count", "1"), "symbolic link")
    run = ("run", "--transport", "udp", "--port", "0", "--presence", "auto")
    _refused(_cli(*run, "--state", str(state)), "symbolic")
    assert _mode(target) == 0o644 and target.read_text() == "keep me\n"
    assert os.path.islink(state)


@pytest.mark.parametrize("sidecar", ["-wal", "-shm", "-journal", ".lock"])
def test_planted_sidecars_are_refused(shared_base: Path, sidecar: str) -> None:
    """SQLite opens -wal/-shm by name, following links: softkey checks them first."""
    target = shared_base / "victim-target"
    target.write_bytes(b"x" * 100)
    target.chmod(0o644)
    state = shared_base / "shared" / "key.sqlite3"
    assert _cli("fill", "--state", str(state), "--count", "1").returncode == 0
    planted = Path(str(state) + sidecar)
    for leftover in ("-wal", "-shm"):  # as after a clean close, with the key stopped
        Path(str(state) + leftover).unlink(missing_ok=True)
    assert as_uid(ATTACKER, lambda: os.symlink(target, planted)).returncode == 0
    result = _cli("fill", "--state", str(state), "--count", "1")
    _refused(result, str(planted))
    assert target.read_bytes() == b"x" * 100 and _mode(target) == 0o644


def test_a_file_of_ours_others_can_read_is_refused_not_quietly_resecured(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    state.chmod(0o644)
    result = _cli("info", "--state", str(state))
    _refused(result, "may already have been copied", f"chmod 600 {state}")
    assert _mode(state) == 0o644  # the owner decides; softkey does not hide the exposure
    state.chmod(0o600)
    assert _cli("info", "--state", str(state)).returncode == 0


def test_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    os.link(state, tmp_path / "copy")
    with pytest.raises(StateError, match="2 hard links"):
        Authenticator(state=state)


def test_fifo_or_directory_as_state_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.sqlite3"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(StateError, match="not a regular file"):
        Authenticator(state=fifo)
    _refused(_cli("fill", "--state", str(tmp_path), "--count", "1"), "directory")


@pytest.mark.parametrize(
    ("mode", "owner", "words"),
    [
        (0o777, 0, "writable by every user"),
        (0o775, None, "writable by its group"),
        (0o755, ATTACKER, "belongs to uid 40001"),
    ],
)
def test_directories_others_can_change_are_refused(
    shared_base: Path, mode: int, owner: int | None, words: str
) -> None:
    directory = shared_base / "dir"
    directory.mkdir()
    if owner is not None:
        os.chown(directory, owner, owner)
    else:
        os.chown(directory, 0, 65534)  # group nogroup: not a private group of root's
    directory.chmod(mode)
    state = directory / "key.sqlite3"
    _refused(_cli("fill", "--state", str(state), "--count", "1"), words)
    assert not state.exists()


def test_a_non_root_user_gets_one_line_errors_not_tracebacks(shared_base: Path) -> None:
    home = home_of(shared_base, VICTIM)
    rootdir = shared_base / "roots"
    rootdir.mkdir(mode=0o755)
    root_state = rootdir / "key.sqlite3"
    Authenticator(state=root_state).close()
    for args in (
        ("info", "--state", str(root_state)),  # not theirs (and unreadable: 0600 root)
        ("fill", "--state", str(rootdir / "new.sqlite3"), "--count", "1"),  # read-only dir
        ("fill", "--state", str(home / "missing" / "k.sqlite3"), "--count", "1"),
        ("export", "--state", str(root_state), str(home / "out.json")),
    ):
        result = softkey_as(VICTIM, *args, home=home)
        _refused(result)
    assert sorted(p.name for p in rootdir.iterdir()) == ["key.sqlite3"]


def test_an_export_over_a_planted_symlink_replaces_the_link_not_its_target(
    shared_base: Path, tmp_path: Path
) -> None:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    target = shared_base / "precious.conf"
    target.write_text("keep me\n")
    target.chmod(0o644)
    out = shared_base / "shared" / "export.json"
    assert as_uid(ATTACKER, lambda: os.symlink(target, out)).returncode == 0
    _refused(_cli("export", "--state", str(state), str(out)), "already exists")
    # --force replaces a link of ours... but this one is the attacker's, in a sticky directory:
    # the kernel forbids replacing it, and softkey says so instead of writing through it.
    result = _cli("export", "--state", str(state), str(out), "--force")
    assert "Traceback" not in result.stderr
    assert target.read_text() == "keep me\n" and _mode(target) == 0o644
    assert result.returncode == 1 or (not out.is_symlink() and _mode(out) == 0o600)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_lock_file_is_checked_like_the_state(shared_base: Path) -> None:
    state = shared_base / "shared" / "key.sqlite3"

    def plant() -> None:
        os.close(os.open(str(state) + ".lock", os.O_CREAT | os.O_WRONLY, 0o644))

    assert as_uid(ATTACKER, plant).returncode == 0
    with pytest.raises(StateError, match="uid 40001"):
        StateLock(state).acquire(blocking=False)


def test_open_private_never_widens_and_fixes_a_tight_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        fd = open_private(tmp_path / "f")
    finally:
        os.umask(old)
    os.close(fd)
    assert _mode(tmp_path / "f") == 0o600
    with pytest.raises(PrivateFileError, match="already exists"):
        open_private(tmp_path / "f", exclusive=True)


def test_ca_export_never_writes_through_a_planted_symlink(
    shared_base: Path, tmp_path: Path
) -> None:
    """`attestation export-ca -o` writes through the same private write as exports: a link that
    another user planted under the name is replaced (or refused), its target never written."""
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    target = shared_base / "precious.conf"
    target.write_text("keep me\n")
    target.chmod(0o644)
    own = tmp_path / "ca.pem"
    os.symlink(target, own)  # in a directory of ours: replaced by the certificate
    result = _cli("attestation", "export-ca", "--state", str(state), "-o", str(own))
    assert result.returncode == 0, result.stderr
    assert not own.is_symlink() and "BEGIN CERTIFICATE" in own.read_text()
    planted = shared_base / "shared" / "ca.pem"  # another user's link in a sticky directory
    assert as_uid(ATTACKER, lambda: os.symlink(target, planted)).returncode == 0
    result = _cli("attestation", "export-ca", "--state", str(state), "-o", str(planted))
    assert "Traceback" not in result.stderr
    # Root may replace the link (sticky bits do not bind root); it never writes its target.
    assert result.returncode == 1 or not planted.is_symlink()
    assert target.read_text() == "keep me\n" and _mode(target) == 0o644
    assert [p.name for p in planted.parent.iterdir() if p.name.endswith(".tmp")] == []
