"""The control socket: line-delimited JSON over a 0600 Unix socket."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from softkey.transports import control


def _echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"echo": request.get("value")}


def _refuse(request: dict[str, Any]) -> dict[str, Any]:
    raise control.OperationError("not now")


def _crash(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("bug")


HANDLERS = {"echo": _echo, "refuse": _refuse, "crash": _crash}


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "key.sock"


def test_request_and_errors(sock_path: Path) -> None:
    with control.ControlServer(sock_path, HANDLERS):
        assert control.call(sock_path, "echo", value=[1, "a"]) == {"ok": True, "echo": [1, "a"]}
        assert control.call(sock_path, "refuse") == {"ok": False, "error": "not now"}
        crashed = control.call(sock_path, "crash")
        assert crashed["ok"] is False and "internal error" in crashed["error"]
        unknown = control.call(sock_path, "bogus")
        assert unknown == {"ok": False, "error": "unknown operation 'bogus'"}


def test_socket_is_private_and_removed_on_close(sock_path: Path) -> None:
    server = control.ControlServer(sock_path, HANDLERS).start()
    mode = os.stat(sock_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    server.close()
    assert not sock_path.exists()
    with pytest.raises(control.NotRunning):
        control.call(sock_path, "echo")


def test_several_requests_on_one_connection_and_garbage(sock_path: Path) -> None:
    with control.ControlServer(sock_path, HANDLERS):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect(str(sock_path))
        with client, client.makefile("rwb") as stream:
            for line in (
                b"not json\n",
                b"[1,2]\n",
                b'{"op": 5}\n',
                b'{"op": "echo", "value": 1}\n',
            ):
                stream.write(line)
                stream.flush()
            replies = [json.loads(stream.readline()) for _ in range(4)]
    assert [r["ok"] for r in replies] == [False, False, False, True]
    assert replies[0]["error"] == "not a JSON line"
    assert replies[3]["echo"] == 1


def test_second_server_on_same_socket_is_refused(sock_path: Path) -> None:
    with control.ControlServer(sock_path, HANDLERS):
        with pytest.raises(control.ControlError, match="already running"):
            control.ControlServer(sock_path, HANDLERS).start()
        assert control.call(sock_path, "echo", value=2)["echo"] == 2  # first one unharmed


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # a key killed with SIGKILL leaves this behind
    with control.ControlServer(sock_path, HANDLERS):
        assert control.call(sock_path, "echo", value=3)["echo"] == 3


def test_a_file_in_the_way_is_not_deleted(sock_path: Path) -> None:
    sock_path.write_text("precious")
    with pytest.raises(control.ControlError, match="not a socket"):
        control.ControlServer(sock_path, HANDLERS).start()
    assert sock_path.read_text() == "precious"


def test_client_reports_a_key_that_does_not_answer(sock_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(sock_path))
    silent.listen(1)
    with silent:
        with pytest.raises(control.ControlError, match="did not answer"):
            control.call(sock_path, "status", timeout=0.2)
