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
    key = key_process(tmp_path, "--presence", "auto", umask=umask, state_name="keys/key.sqlite3")
    directory = key.state.parent  # did not exist: softkey made it
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


def test_offline_fill_creates_a_private_state(tmp_path: Path) -> None:
    state = tmp_path / "new" / "deeper" / "offline.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    result = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", "fill", "--state", str(state), "--count", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        preexec_fn=lambda: os.umask(0),  # noqa: PLW1509
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _mode(state) == 0o600
    assert _mode(state.parent) == 0o700
    assert _mode(state.parent.parent) == 0o700  # every directory softkey created, not only the last
    for suffix in ("-wal", "-shm"):
        sidecar = state.with_name(state.name + suffix)
        if sidecar.exists():  # SQLite removes them when the last connection closes
            assert _mode(sidecar) == 0o600
