"""State files and the control socket are 0600 (directories softkey creates 0700), even when
the process runs with a permissive umask: other local users must not read the master key or
drive the key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fido2.ctap2 import Ctap2

from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]

ES256 = [{"type": "public-key", "alg": -7}]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_running_key_files_and_socket_are_private(key_process, tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    key = key_process(tmp_path, "--presence", "auto", umask=umask, state_name="keys/key.sqlite3")
    # Write something so SQLite has its -wal and -shm files.
    ctap = Ctap2(open_udp_device("127.0.0.1", key.port, timeout=30))
    ctap.make_credential(
        os.urandom(32), {"id": "example.com"}, {"id": b"u"}, ES256, options={"rk": True}
    )
    files = [key.state, key.state.with_name(key.state.name + "-wal")]
    files.append(key.state.with_name(key.state.name + "-shm"))
    for path in files:
        assert path.exists(), path
        assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"
    assert stat.S_ISSOCK(key.socket.stat().st_mode)
    assert _mode(key.socket) == 0o600
    assert _mode(directory) == 0o700
    # Nothing else appeared next to the state that others could read.
    for path in directory.iterdir():
        if path.is_file() and path.name.startswith(key.state.name):
            assert _mode(path) & 0o077 == 0, path


def test_offline_fill_creates_a_private_data_directory(tmp_path: Path) -> None:
    """A named key's data directory (and its missing parents) is made 0700 under any umask."""
    xdg = tmp_path / "new" / "deeper"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env["XDG_DATA_HOME"] = str(xdg)
    result = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", "fill", "--key", "k", "--count", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        preexec_fn=lambda: os.umask(0),  # noqa: PLW1509
        check=False,
    )
    assert result.returncode == 0, result.stderr
    state = xdg / "softkey" / "k.sqlite3"
    assert _mode(state) == 0o600
    assert _mode(state.parent) == 0o700
    assert _mode(xdg) == 0o700  # every directory softkey created, not only the last
    assert _mode(xdg.parent) == 0o700
    for suffix in ("-wal", "-shm", ".lock"):
        sidecar = state.with_name(state.name + suffix)
        if sidecar.exists():  # SQLite removes -wal when the last connection closes
            assert _mode(sidecar) == 0o600


def test_state_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    """softkey makes only its own data directory; a --state elsewhere needs an existing one."""
    state = tmp_path / "new" / "deeper" / "offline.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    result = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", "fill", "--state", str(state), "--count", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()
