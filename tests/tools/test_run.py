"""`softkey run` as a real process, driven by python-fido2 over UDP and by the control verbs.

A person at the key is simulated through the control socket: with ``--presence wait`` a
getAssertion blocks until `softkey touch` (or `softkey deny`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator
from softkey.tools import paths
from softkey.tools.cli import cli
from softkey.transports import control
from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]
RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice", "displayName": "Alice"}
ES256 = [{"type": "public-key", "alg": -7}]


def softkey(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _poll(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Wait for another process/thread to reach a state (not a timing assertion)."""
    pause = threading.Event()
    deadline = 0.0
    while deadline < timeout:
        value = condition()
        if value:
            return value
        pause.wait(0.05)
        deadline += 0.05
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Served:
    proc: subprocess.Popen[str]
    state: Path
    socket: Path
    port: int

    def status(self) -> dict[str, Any]:
        return control.call(self.socket, "status")

    def pending(self) -> dict[str, Any] | None:
        return self.status()["pending_presence"]


def _start(tmp_path: Path, *extra: str) -> Served:
    state = tmp_path / "ci.sqlite3"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softkey.tools.cli",
            "run",
            "--transport",
            "udp",
            "--port",
            "0",
            "--state",
            str(state),
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sock = paths.control_socket_path(state)

    def ready() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(f"softkey run exited {proc.returncode}: {proc.stderr.read()}")
        try:
            return control.call(sock, "status")
        except control.ControlError:
            return None

    status = _poll(ready, "softkey run to answer on its control socket")
    return Served(proc, state, sock, status["udp"]["port"])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    key = _start(tmp_path, "--presence", "wait", "--profile", "yubikey-5")
    try:
        yield key
    finally:
        if key.proc.poll() is None:
            key.proc.kill()
            key.proc.wait(10)


class Background:
    """A python-fido2 call that blocks on the key's presence check, in a thread."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = call()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result


def test_run_udp_with_control_socket_presence(served: Served) -> None:
    # status: JSON-able, names the transport, address, profile and slots
    shown = softkey("status", "--state", str(served.state), "--json")
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert status["transport"] == "udp"
    assert status["address"] == f"127.0.0.1:{served.port}"
    assert status["profile"] == "yubikey-5"
    assert status["presence_mode"] == "wait"
    assert status["pending_presence"] is None
    assert status["slots"] == {"used": 0, "capacity": 25, "free": 25}
    human = softkey("status", "--state", str(served.state))
    assert f"UDP 127.0.0.1:{served.port}" in human.output
    assert "0 used, 25 free (of 25)" in human.output

    ctap = Ctap2(open_udp_device("127.0.0.1", served.port, timeout=30))

    # makeCredential waits for a touch...
    make = Background(
        lambda: ctap.make_credential(os.urandom(32), RP, USER, ES256, options={"rk": True})
    )
    pending = _poll(served.pending, "makeCredential to wait for a touch")
    assert pending == {"purpose": "makeCredential", "rp_id": "example.com"}
    assert make.thread.is_alive()
    touched = softkey("touch", "--state", str(served.state))
    assert touched.exit_code == 0, touched.output
    assert "approved: makeCredential for example.com" in touched.output
    credential = make.join().auth_data.credential_data
    assert make.error is None
    assert served.status()["slots"] == {"used": 1, "capacity": 25, "free": 24}

    # ...and so does getAssertion: it blocks until `softkey touch`.
    get = Background(
        lambda: ctap.get_assertion(
            "example.com", b"\x01" * 32, [{"type": "public-key", "id": credential.credential_id}]
        )
    )
    assert _poll(served.pending, "getAssertion to wait")["purpose"] == "getAssertion"
    assert get.thread.is_alive() and get.result is None
    assert "pending_presence" in served.status()
    human = softkey("status", "--state", str(served.state))
    assert "waiting for a touch: getAssertion for example.com" in human.output
    assert softkey("touch", "--state", str(served.state)).exit_code == 0
    assertion = get.join()
    assertion.verify(b"\x01" * 32, credential.public_key)

    # `softkey deny`, waiting for the request to show up
    denied = Background(lambda: ctap.get_assertion("example.com", b"\x02" * 32))
    result = softkey("deny", "--state", str(served.state), "--wait", "20")
    assert result.exit_code == 0 and "denied: getAssertion" in result.output
    denied.join()
    assert isinstance(denied.error, CtapError)
    assert denied.error.code == CtapError.ERR.OPERATION_DENIED

    # nothing pending: touch says so and fails
    idle = softkey("touch", "--state", str(served.state))
    assert idle.exit_code == 1 and "not waiting for a person" in idle.output

    # replug: a power cycle; over UDP the channels survive, the credential too
    replugged = softkey("replug", "--state", str(served.state))
    assert replugged.exit_code == 0 and "replugged" in replugged.output
    assert served.status()["power_cycles"] == 1
    assert ctap.get_info().versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE"]

    # other CLI verbs reach the running key through the same socket
    info = control.call(served.socket, "admin", name="info", args={})
    assert info["ok"] and info["result"]["profile"] == "yubikey-5"
    assert info["result"]["resident_credentials"]["used"] == 1

    # one key, one process
    second = softkey("run", "--transport", "udp", "--port", "0", "--state", str(served.state))
    assert second.exit_code == 1 and "already running" in second.output

    # SIGTERM unplugs cleanly
    served.proc.send_signal(signal.SIGTERM)
    out, err = served.proc.communicate(timeout=20)
    assert served.proc.returncode == 0, err
    assert f"plugged in via UDP 127.0.0.1:{served.port}; profile yubikey-5" in out
    assert f"state {served.state}" in out
    assert "unplugged" in out
    # the operator sees what waits and how it ended
    assert (
        "waiting 30 s for `softkey touch` or `softkey deny`: makeCredential for "
        "example.com (alice)" in err
    )
    assert "softkey: approved" in err and "softkey: denied" in err
    assert not served.socket.exists()
    assert stat.S_IMODE(served.state.stat().st_mode) == 0o600
    gone = softkey("status", "--state", str(served.state))
    assert gone.exit_code == 1 and "is not running" in gone.output


def test_run_stops_on_ctrl_c_and_warns_about_auto_presence(tmp_path: Path) -> None:
    key = _start(tmp_path, "--presence", "auto")
    try:
        ctap = Ctap2(open_udp_device("127.0.0.1", key.port, timeout=30))
        made = ctap.make_credential(os.urandom(32), RP, USER, ES256)  # approved at once
        assert made.auth_data.is_user_present()
        refused = softkey("touch", "--state", str(key.state))
        assert refused.exit_code == 1 and "--presence auto" in refused.output
        key.proc.send_signal(signal.SIGINT)
        out, err = key.proc.communicate(timeout=20)
    finally:
        if key.proc.poll() is None:
            key.proc.kill()
            key.proc.wait(10)
    assert key.proc.returncode == 0
    assert "unplugged" in out
    assert "any local process can use this key silently" in err
    assert not key.socket.exists()


# -- UHID unavailable ---------------------------------------------------------------------------


def _assert_guidance(output: str) -> None:
    assert "sudo modprobe uhid" in output
    assert "udev --install" in output
    assert "softkey run --transport udp" in output


def test_run_uhid_without_dev_uhid_exits_1_with_guidance(tmp_path: Path) -> None:
    state = tmp_path / "k.sqlite3"
    result = softkey("run", "--uhid-device", str(tmp_path / "uhid"), "--state", str(state))
    assert result.exit_code == 1
    assert "does not exist" in result.output
    _assert_guidance(result.output)
    assert not state.exists()  # failed before touching any state


def test_run_uhid_permission_denied_exits_1_with_guidance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(tmp_path / "uhid")
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fspath(path) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    result = softkey("run", "--uhid-device", target, "--state", str(tmp_path / "k.sqlite3"))
    assert result.exit_code == 1
    assert "permission denied" in result.output
    assert "udev --install" in result.output
    assert "--transport udp" in result.output


@pytest.mark.skipif(os.path.exists("/dev/uhid"), reason="this machine has /dev/uhid")
def test_softkey_run_on_this_machine_explains_missing_uhid(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", "run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "/dev/uhid does not exist" in proc.stderr
    _assert_guidance(proc.stderr)


def test_udev_rule_and_module_snippet_ship() -> None:
    rules = (REPO / "tools" / "udev" / "70-softkey-uhid.rules").read_text()
    assert 'KERNEL=="uhid"' in rules and 'TAG+="uaccess"' in rules and 'MODE="0660"' in rules
    assert (REPO / "tools" / "udev" / "softkey-uhid.conf").read_text().strip().endswith("uhid")


# -- other refusals -----------------------------------------------------------------------------


def test_verbs_say_when_no_key_is_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    for verb in ("status", "touch", "deny", "replug"):
        result = softkey(verb, "--key", "work")
        assert result.exit_code == 1
        assert "key 'work' is not running" in result.output
        assert "softkey run --key work" in result.output


def test_udp_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = softkey(
            "run",
            "--transport",
            "udp",
            "--port",
            str(port),
            "--state",
            str(tmp_path / "k.sqlite3"),
            "--presence",
            "auto",
        )
    assert result.exit_code == 1
    assert f"cannot listen on UDP 127.0.0.1:{port}" in result.output
    assert "--port" in result.output


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    result = softkey(
        "run",
        "--transport",
        "udp",
        "--port",
        "0",
        "--profile",
        "nope",
        "--state",
        str(tmp_path / "k.sqlite3"),
    )
    assert result.exit_code == 2
    assert "'nope' is not one of" in result.output and "yubikey-5" in result.output
    assert not (tmp_path / "k.sqlite3").exists()


def test_running_key_control_operations_in_process(tmp_path: Path) -> None:
    from softkey.authenticator import AutoPresence
    from softkey.tools.run import RunningKey
    from softkey.transports.presence import WaitingPresence
    from softkey.transports.server import HidServer

    state = tmp_path / "k.sqlite3"
    auth = Authenticator("nitrokey-fido2", state, presence=WaitingPresence(timeout=30))
    replugs: list[int] = []
    key = RunningKey(auth, auth.presence, state, "wait")
    server = HidServer(auth, lambda report, peer: None)
    key.attach("udp", server, lambda: replugs.append(1), {"address": "127.0.0.1:1"})
    sock = paths.control_socket_path(state)
    with control.ControlServer(sock, key.handlers()):
        assert control.call(sock, "touch", wait=-1)["ok"] is False
        assert control.call(sock, "touch", wait=True)["ok"] is False
        assert control.call(sock, "replug") == {"ok": True, "power_cycles": 1}
        assert replugs == [1]
        bad = control.call(sock, "admin", name=5)
        assert bad["ok"] is False and bad["code"] == "usage"
        creds = control.call(sock, "admin", name="credentials", args={})
        assert creds["ok"] is True
        status = control.call(sock, "status")
        assert status["slots"] == {"used": 0, "capacity": 8, "free": 8}
        key.presence = AutoPresence()
        refused = control.call(sock, "deny")
        assert refused["ok"] is False and "decides by itself" in refused["error"]
    auth.close()


def test_command_line_state_wins_over_environment_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOFTKEY_KEY", "work")
    state = tmp_path / "other.sqlite3"
    result = softkey("status", "--state", str(state))
    assert result.exit_code == 1
    assert f"the key at {state} is not running" in result.output


# -- status --wait: the readiness signal for scripts ---------------------------------------------


def test_status_wait_gives_up_on_a_key_that_never_starts(tmp_path: Path) -> None:
    result = softkey("status", "--wait", "0.3", "--state", str(tmp_path / "never.sqlite3"))
    assert result.exit_code == 1
    assert "did not start within 0.3 s" in result.output


def test_status_wait_over_uhid_waits_for_the_hidraw_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from softkey.tools import run as run_module

    replies = iter([None, {"hidraw": None}, {"hidraw": "/dev/hidraw3"}])

    def fake_call(state: Path, op: str, **params: Any) -> dict[str, Any]:
        uhid = next(replies)
        if uhid is None:
            raise run_module.RunError("not running")
        return {"ok": True, "transport": "uhid", "uhid": uhid}

    monkeypatch.setattr(run_module, "call_running", fake_call)
    reply = run_module.wait_until_ready(tmp_path / "k.sqlite3", timeout=10)
    assert reply["uhid"]["hidraw"] == "/dev/hidraw3"

    monkeypatch.setattr(
        run_module,
        "call_running",
        lambda state, op, **kw: {"ok": True, "transport": "uhid", "uhid": {"hidraw": None}},
    )
    with pytest.raises(run_module.RunError, match="no hidraw node"):
        run_module.wait_until_ready(tmp_path / "k.sqlite3", timeout=0.2)


def test_status_wait_returns_once_a_udp_key_answers(served: Served) -> None:
    result = softkey("status", "--wait", "10", "--json", "--state", str(served.state))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["udp"]["port"] == served.port
