"""`softkey run` and its control verbs as a script or CI job sees them: real processes.

The ready line (``--ready-json`` / ``--ready-file``) replaces polling; UDP-only options are
refused without ``--transport udp``; ``--json`` on status/touch/deny/replug; and a run that
fails to come up leaves no file behind (a new state, its sidecars, a ready file).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator
from softkey.tools import paths
from softkey.tools.cli import cli
from softkey.transports import control, uhid
from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]
RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice", "displayName": "Alice"}
ES256 = [{"type": "public-key", "alg": -7}]
PORT_ERROR = "Error: --port only applies to --transport udp; add --transport udp"


def _env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update({"XDG_DATA_HOME": str(directory / "xdg"), "PYTHONUNBUFFERED": "1"})
    return env


def _keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    return directory


def softkey(directory: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One `softkey` command, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env=_env(directory),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


class Running:
    """`softkey run --ready-json ...` in the background; its stdout lines in a queue."""

    def __init__(self, directory: Path, state: Path, *extra: str) -> None:
        self.state = state
        self.proc = subprocess.Popen(
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
                "--ready-json",
                *extra,
            ],
            cwd=REPO,
            env=_env(directory),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def pump() -> None:
            for line in out:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def ready_line(self, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        """The first stdout line that is a JSON object (what a CI script waits for)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no ready line from softkey run") from None
            if line is None:
                raise AssertionError(f"softkey run exited {self.proc.wait()}: {self.stderr()}")
            self.stdout.append(line)
            if line.startswith("{"):
                return line, json.loads(line)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a clean unplug
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def run(directory: Path, state: Path, *extra: str) -> Running:
        key = Running(directory, state, *extra)
        started.append(key)
        return key

    yield run
    for key in started:
        key.stop()


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


def _poll(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    pause = threading.Event()
    waited = 0.0
    while waited < timeout:
        value = condition()
        if value:
            return value
        pause.wait(0.05)
        waited += 0.05
    raise AssertionError(f"timed out waiting for {what}")


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the ready line -----------------------------------------------------------------------------


def test_ready_json_and_ready_file_say_where_the_key_is(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    directory = _keys_dir(tmp_path)
    state = directory / "ci.sqlite3"
    ready_file = tmp_path / "ready.json"
    ready_file.write_text("stale, from a run that was killed\n")
    key = start(
        tmp_path,
        state,
        "--presence",
        "auto",
        "--profile",
        "unlimited-rk",
        "--ready-file",
        str(ready_file),
    )
    line, ready = key.ready_line()
    port = ready["address"]["port"]
    assert ready == {
        "ready": True,
        "transport": "udp",
        "address": {"host": "127.0.0.1", "port": port},
        "hidraw": None,
        "profile": "unlimited-rk",
        "state": str(state),
        "key": None,
        "control_socket": str(paths.control_socket_path(state)),
        "pid": key.proc.pid,
    }
    assert isinstance(port, int) and port > 0
    # stdout carries the ready line alone (a script reads its first line); the human startup
    # lines went to stderr.
    assert key.stdout == [line]

    # The same JSON in the file, private, and written whole (no temporary file left over).
    assert ready_file.read_text() == line
    assert stat.S_IMODE(ready_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "ready.json"]

    # Its port answers CTAPHID INIT (python-fido2 sends one to open the device) and more.
    device = open_udp_device("127.0.0.1", port, timeout=30)
    assert Ctap2(device).get_info().versions[-1] == "FIDO_2_1"
    # Its control socket answers, with the same vocabulary as `softkey info --json`.
    status = control.call(ready["control_socket"], "status")
    assert status["ok"] and status["pid"] == ready["pid"]
    assert status["slots"] == {"used": 0, "capacity": None, "free": None}
    text = softkey(tmp_path, "status", "--state", str(state))
    assert text.returncode == 0, text.stderr
    assert "slots      0 used (unlimited)" in text.stdout
    assert "∞" not in text.stdout and "no limit" not in text.stdout

    assert key.stop() == 0
    assert not ready_file.exists()  # the key is gone: so is its ready file
    assert f"softkey: created a new unlimited-rk key at {state}" in key.stderr().splitlines()


def test_ready_file_needs_an_existing_directory(tmp_path: Path) -> None:
    state = _keys_dir(tmp_path) / "k.sqlite3"
    missing = tmp_path / "no-such-dir" / "ready.json"
    result = softkey(
        tmp_path,
        "run",
        "--transport",
        "udp",
        "--port",
        "0",
        "--state",
        str(state),
        "--ready-file",
        str(missing),
    )
    assert result.returncode == 2
    error = _one_error_line(result.stderr)
    assert f"the directory {missing.parent} does not exist" in error
    assert not state.exists()


def test_an_existing_key_is_not_announced_as_new(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    state = _keys_dir(tmp_path) / "old.sqlite3"
    Authenticator(None, state).close()
    key = start(tmp_path, state, "--presence", "auto")
    key.ready_line()
    assert key.stop() == 0
    assert "created a new" not in key.stderr()


# -- UDP-only options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "8111"], PORT_ERROR),
        (
            ["--host", "127.0.0.1"],
            "Error: --host only applies to --transport udp; add --transport udp",
        ),
        (
            ["--transport", "uhid", "--port", "9", "--host", "::1"],
            "Error: --port and --host only apply to --transport udp; add --transport udp",
        ),
    ],
)
def test_udp_options_without_udp_are_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    state = _keys_dir(tmp_path) / "k.sqlite3"
    result = softkey(tmp_path, "run", "--state", str(state), *args)
    assert result.returncode == 2
    # One line: the message, maybe followed by where to read more (`... --help`).
    assert _one_error_line(result.stderr).startswith(message)
    assert result.stdout == ""
    assert not state.exists()


# -- --json on the control verbs ----------------------------------------------------------------


def test_status_json_without_a_running_key(tmp_path: Path) -> None:
    state = _keys_dir(tmp_path) / "idle.sqlite3"
    result = softkey(tmp_path, "status", "--json", "--state", str(state))
    assert result.returncode == 1
    shown = json.loads(result.stdout)
    assert shown["running"] is False
    assert shown["key"] is None and shown["state"] == str(state)
    assert "is not running" in shown["error"] and "softkey run" in shown["error"]

    named = softkey(tmp_path, "status", "--json", "--key", "work")
    assert named.returncode == 1
    assert json.loads(named.stdout)["key"] == "work"

    for verb, flag in (("touch", "approved"), ("deny", "denied"), ("replug", "replugged")):
        failed = softkey(tmp_path, verb, "--json", "--state", str(state))
        assert failed.returncode == 1, verb
        reply = json.loads(failed.stdout)
        assert reply[flag] is False and reply["running"] is False
        assert "is not running" in reply["error"]


def test_touch_deny_replug_status_json_against_a_running_key(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    state = _keys_dir(tmp_path) / "k.sqlite3"
    key = start(tmp_path, state, "--presence", "wait", "--profile", "yubikey-5")
    _, ready = key.ready_line()
    sock = ready["control_socket"]
    ctap = Ctap2(open_udp_device("127.0.0.1", ready["address"]["port"], timeout=30))

    def pending() -> Any:
        return control.call(sock, "status")["pending_presence"]

    # touch --json approves the pending makeCredential and names it
    make = Background(
        lambda: ctap.make_credential(os.urandom(32), RP, USER, ES256, options={"rk": True})
    )
    _poll(pending, "makeCredential to wait for a touch")
    touched = softkey(tmp_path, "touch", "--json", "--state", str(state))
    assert touched.returncode == 0, touched.stderr
    reply = json.loads(touched.stdout)
    assert reply["approved"] is True and reply["running"] is True
    assert reply["request"] == {
        "purpose": "makeCredential",
        "rp_id": "example.com",
        "user_name": "alice",
    }
    assert reply["key"] is None and reply["state"] == str(state)
    make.join()
    assert make.error is None

    # deny --json --wait: waits for the getAssertion, then declines it
    denied = Background(lambda: ctap.get_assertion("example.com", b"\x02" * 32))
    refused = softkey(tmp_path, "deny", "--json", "--wait", "20", "--state", str(state))
    assert refused.returncode == 0, refused.stderr
    reply = json.loads(refused.stdout)
    assert reply["denied"] is True
    assert reply["request"]["purpose"] == "getAssertion"
    assert reply["request"]["rp_id"] == "example.com"
    denied.join()
    assert isinstance(denied.error, CtapError)
    assert denied.error.code == CtapError.ERR.OPERATION_DENIED

    # nothing pending: an error, as JSON, exit 1; the key runs
    idle = softkey(tmp_path, "touch", "--json", "--state", str(state))
    assert idle.returncode == 1
    reply = json.loads(idle.stdout)
    assert reply["approved"] is False and reply["running"] is True
    assert "not waiting for a person" in reply["error"]

    replugged = softkey(tmp_path, "replug", "--json", "--state", str(state))
    assert replugged.returncode == 0, replugged.stderr
    reply = json.loads(replugged.stdout)
    assert reply["replugged"] is True and reply["power_cycles"] == 1

    shown = softkey(tmp_path, "status", "--json", "--state", str(state))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["running"] is True and status["ready"] is True
    assert status["slots"] == {"used": 1, "capacity": 25, "free": 24}
    assert status["power_cycles"] == 1
    text = softkey(tmp_path, "status", "--state", str(state))
    assert "slots      1 used, 24 free (of 25)" in text.stdout


# -- a failing run leaves nothing behind --------------------------------------------------------


def test_a_taken_udp_port_leaves_no_new_state(tmp_path: Path) -> None:
    directory = _keys_dir(tmp_path)
    state = directory / "new.sqlite3"
    ready_file = directory / "ready.json"
    ready_file.write_text("stale\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = softkey(
            tmp_path,
            "run",
            "--transport",
            "udp",
            "--port",
            str(port),
            "--presence",
            "auto",
            "--state",
            str(state),
            "--ready-json",
            "--ready-file",
            str(ready_file),
        )
    assert result.returncode == 1
    error = _one_error_line(result.stderr)
    assert error.startswith(f"Error: cannot listen on UDP 127.0.0.1:{port}: ")
    assert "pick another --port" in error
    assert "{" not in result.stdout  # never said it was ready
    assert list(directory.iterdir()) == []  # no state, -wal, -shm, .lock, socket, ready file


def test_a_taken_udp_port_keeps_an_existing_key(tmp_path: Path) -> None:
    directory = _keys_dir(tmp_path)
    state = directory / "old.sqlite3"
    auth = Authenticator("yubikey-5", state)
    aaguid = auth.profile.aaguid
    auth.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        result = softkey(
            tmp_path, "run", "--transport", "udp", "--port", port, "--state", str(state)
        )
    assert result.returncode == 1
    _one_error_line(result.stderr)
    assert [p.name for p in directory.iterdir()] == ["old.sqlite3"]
    auth = Authenticator(None, state)
    assert auth.profile.name == "yubikey-5" and auth.profile.aaguid == aaguid
    auth.close()


def test_a_missing_uhid_device_leaves_no_new_state(tmp_path: Path) -> None:
    directory = _keys_dir(tmp_path)
    state = directory / "new.sqlite3"
    result = softkey(tmp_path, "run", "--uhid-device", "/nonexistent", "--state", str(state))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "sudo modprobe uhid" in result.stderr and "--transport udp" in result.stderr
    assert list(directory.iterdir()) == []


# -- the ready line over UHID (a socketpair stands in for the kernel, as in test_run_uhid) -----


def test_ready_json_over_uhid_waits_for_the_hidraw_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = ours.detach()  # `softkey run` owns and closes it, as it would /dev/uhid
    monkeypatch.setattr(uhid, "open_uhid", lambda path: fd)
    hidraw: list[str] = []
    monkeypatch.setattr(uhid, "find_hidraw", lambda uniq: hidraw[0] if hidraw else None)
    state = _keys_dir(tmp_path) / "k.sqlite3"
    ready_file = tmp_path / "ready.json"
    result: dict[str, Any] = {}

    def run() -> None:
        args = ["run", "--state", str(state), "--presence", "auto", "--ready-json"]
        result["cli"] = CliRunner().invoke(
            cli, [*args, "--ready-file", str(ready_file)], catch_exceptions=False
        )

    runner = threading.Thread(target=run)
    runner.start()
    theirs.settimeout(20)
    try:
        assert uhid.decode_event(theirs.recv(8192)).type == uhid.EventType.CREATE2
        assert not ready_file.exists()  # plugged, but the kernel has not started it yet
        hidraw.append("/dev/hidraw7")
        theirs.send(uhid.encode_start())
        _poll(ready_file.exists, "the ready file")
        ready = json.loads(ready_file.read_text())
        assert ready["transport"] == "uhid"
        assert ready["hidraw"] == "/dev/hidraw7" and ready["address"] is None
        assert stat.S_IMODE(ready_file.stat().st_mode) == 0o600
    finally:
        theirs.close()  # the "kernel" goes away: serve() sees EOF and `softkey run` returns
        runner.join(20)
    assert not runner.is_alive()
    outcome = result["cli"]
    assert outcome.exit_code == 0, outcome.output
    printed = [json.loads(line) for line in outcome.stdout.splitlines() if line.startswith("{")]
    assert printed == [ready]
    assert not ready_file.exists()


def test_a_failing_named_key_leaves_no_data_directory(tmp_path: Path) -> None:
    # A named key lives under $XDG_DATA_HOME/softkey, which `run` makes for a new key: a run
    # that fails takes the directories it made away again (the other verbs make none).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        result = softkey(tmp_path, "run", "--transport", "udp", "--port", port, "--key", "work")
    assert result.returncode == 1
    _one_error_line(result.stderr)
    bogus = softkey(tmp_path, "run", "--transport", "udp", "--key", "new", "--profile", "bogus")
    assert bogus.returncode == 2
    assert "'bogus' is not one of" in _one_error_line(bogus.stderr)
    assert not (tmp_path / "xdg").exists()
