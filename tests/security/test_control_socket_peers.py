"""The control socket trusts no one but its own user (issue: local trust boundary, item 2).

Attacks are staged by a real other uid (users.py): a socket planted where the CLI would look,
a stale-looking socket of someone else's, a connection from another uid to a loosened socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from users import ATTACKER, as_uid

from softkey.authenticator import Authenticator
from softkey.tools import paths
from softkey.transports import control

REPO = Path(__file__).resolve().parents[2]


def _start_impostor(path: Path, received: Path, ready: Path) -> int:
    """Fork a process of ATTACKER's that listens on ``path`` and records every byte sent to it
    in ``received`` (a file it creates). Returns its pid; it exits after 20 s."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(ATTACKER, ATTACKER, ATTACKER)
            os.setresuid(ATTACKER, ATTACKER, ATTACKER)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            os.umask(0)
            server.bind(str(path))
            server.listen(4)
            server.settimeout(20)
            with open(received, "wb") as log:
                os.chmod(received, 0o666)
                open(ready, "w").close()
                while True:
                    conn, _ = server.accept()
                    conn.settimeout(2)
                    try:
                        while data := conn.recv(65536):
                            log.write(data)
                            log.flush()
                    except OSError:
                        pass
                    conn.close()
        except BaseException:
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline, "the impostor did not start"
        time.sleep(0.02)
    return pid


def _stop(pid: int) -> None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def test_the_client_sends_nothing_to_a_socket_of_another_user(shared_base: Path) -> None:
    sock = shared_base / "shared" / "impostor.sock"
    received, ready = shared_base / "shared" / "got", shared_base / "shared" / "ready"
    pid = _start_impostor(sock, received, ready)
    try:
        with pytest.raises(control.ControlError, match="uid 40001.*nothing was sent"):
            control.call(sock, "admin", name="pin_set", args={"pin": "271828"})
        time.sleep(0.2)
    finally:
        _stop(pid)
    assert received.read_bytes() == b""


def test_a_socket_planted_where_the_state_lives_gets_no_pin(shared_base: Path) -> None:
    """The old layout put NAME.sock next to the state; in a shared directory an attacker could
    plant it there and read the PIN `softkey pin set` sends. Now the socket of such a state
    lives in the user's runtime directory, and the planted one is never contacted."""
    state = shared_base / "shared" / "key.sqlite3"
    Authenticator(state=state).close()
    planted = state.with_suffix(".sock")
    received, ready = shared_base / "shared" / "got", shared_base / "shared" / "ready"
    pid = _start_impostor(planted, received, ready)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_RUNTIME_DIR=str(shared_base / "run-root"), SOFTKEY_NEW_PIN="271828")
    (shared_base / "run-root").mkdir(mode=0o700)
    try:
        assert paths.control_socket_path(state) != planted
        result = subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", "pin", "set", "--state", str(state)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        time.sleep(0.2)
    finally:
        _stop(pid)
    assert result.returncode == 0, result.stderr
    assert b"271828" not in received.read_bytes() and received.read_bytes() == b""
    with Authenticator(state=state) as auth:
        assert auth.pin_uv.is_set


def test_a_socket_of_another_user_is_an_error_and_is_never_deleted(shared_base: Path) -> None:
    sock = shared_base / "shared" / "key.sock"
    received, ready = shared_base / "shared" / "got", shared_base / "shared" / "ready"
    pid = _start_impostor(sock, received, ready)
    _stop(pid)  # now it looks stale: nobody listens
    server = control.ControlServer(sock, {})
    with pytest.raises(control.ControlError, match="not yours"):
        server.check_available()
    assert sock.exists() and os.lstat(sock).st_uid == ATTACKER


def test_a_stale_socket_of_our_own_is_cleaned_up(tmp_path: Path) -> None:
    sock = tmp_path / "key.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # bound, never listened, closed: what a killed key leaves
    with control.ControlServer(sock, {"status": lambda r: {"up": 1}}):
        assert control.call(sock, "status") == {"ok": True, "up": 1}


def test_the_server_answers_no_other_uid(shared_base: Path) -> None:
    directory = shared_base / "srv"
    directory.mkdir(mode=0o755)
    sock = directory / "key.sock"
    calls: list[dict] = []
    with control.ControlServer(sock, {"status": lambda r: calls.append(r) or {"secret": 1}}):
        sock.chmod(0o666)  # a loosened socket: only SO_PEERCRED still stands in the way

        def attack() -> int:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(str(sock))
            try:
                client.sendall(json.dumps({"op": "status"}).encode() + b"\n")
                answer = client.recv(65536)
            except OSError:
                answer = b""
            sys.stdout.write(answer.decode(errors="replace"))
            return 0

        outcome = as_uid(ATTACKER, attack)
        assert outcome.returncode == 0, outcome.stderr
        assert outcome.stdout == ""
        assert calls == []
        # Our own user still gets answers.
        assert control.call(sock, "status")["secret"] == 1
        assert len(calls) == 1


def test_the_runtime_socket_directory_must_be_ours(shared_base: Path) -> None:
    """/tmp/softkey-UID pre-created by someone else is refused, never used."""
    runtime = shared_base / "shared" / "rt"
    assert as_uid(ATTACKER, lambda: os.mkdir(runtime, 0o777)).returncode == 0
    server = control.ControlServer(runtime / "k.sock", {})
    with pytest.raises(control.ControlError, match="uid 40001"):
        server.start()
    assert not (runtime / "k.sock").exists()


def test_connections_run_in_threads_and_the_check_does_not_block(tmp_path: Path) -> None:
    sock = tmp_path / "key.sock"
    gate = threading.Event()

    def slow(request: dict) -> dict:
        gate.wait(5)
        return {}

    with control.ControlServer(sock, {"slow": slow, "fast": lambda r: {"x": 1}}):
        t = threading.Thread(target=lambda: control.call(sock, "slow"))
        t.start()
        assert control.call(sock, "fast")["x"] == 1
        gate.set()
        t.join(5)
