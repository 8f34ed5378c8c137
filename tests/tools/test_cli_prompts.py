"""Questions and hidden PIN prompts need a person at a real terminal (a pty here); a pipe gets
a clear error instead (tests/tools/test_cli_matrix.py)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

from softkey.authenticator import Authenticator

REPO = Path(__file__).resolve().parents[2]


def _on_a_terminal(args: list[str], answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run `softkey ARGS` with a pty as its controlling terminal; answer each (prompt, reply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "softkey.tools.cli", *args], env)
    seen = b""
    deadline = time.monotonic() + 60
    pending = list(answers)
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if pending and pending[0][0] in seen:
            prompt, reply = pending.pop(0)
            seen = seen.replace(prompt, b"<" + prompt + b">", 1)
            os.write(fd, reply)
        assert time.monotonic() < deadline, seen
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def test_pin_set_asks_twice_on_a_terminal_and_never_echoes(tmp_path: Path) -> None:
    state = tmp_path / "k.sqlite3"
    Authenticator(state=state).close()
    code, seen = _on_a_terminal(
        ["pin", "set", "--state", str(state)],
        [(b"New PIN:", b"8642\n"), (b"Repeat for confirmation:", b"8642\n")],
    )
    assert code == 0, seen
    assert b"8642" not in seen  # hidden input
    assert b"PIN set" in seen
    with Authenticator(state=state) as auth:
        assert auth.pin_uv.is_set


def test_reset_asks_and_no_keeps_everything(tmp_path: Path) -> None:
    state = tmp_path / "k.sqlite3"
    with Authenticator(state=state) as auth:
        master = auth.store.get_meta("master_key")
    code, seen = _on_a_terminal(["reset", "--state", str(state)], [(b"[y/N]:", b"n\n")])
    assert code == 1 and b"not confirmed" in seen, seen
    with Authenticator(state=state) as auth:
        assert auth.store.get_meta("master_key") == master
