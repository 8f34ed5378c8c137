"""`softkey fault add|list|clear` and `softkey events` against a real running key (UDP).

The key runs as `softkey run --transport udp --port 0 --presence auto --trace`; python-fido2's
``Fido2Client`` talks to it over UDP and python-fido2's ``Fido2Server`` is the relying party.
The verbs go through the key's control socket; without a running key they refuse in one line.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
DISCOURAGED = UserVerificationRequirement.DISCOURAGED
PIN = "q8#Vw2!z"


class Key:
    """A running `softkey run` on a UDP port, and `softkey` verbs against it."""

    def __init__(self, root: Path) -> None:
        keys = root / "keys"
        keys.mkdir(mode=0o700)
        self.root = root
        self.state = keys / "k.sqlite3"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
        self.env.update(XDG_DATA_HOME=str(root / "xdg"), XDG_RUNTIME_DIR=str(root / "run"))
        (root / "run").mkdir(mode=0o700)
        self.trace = root / "trace.log"
        with self.trace.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "softkey.tools.cli", "run", "--transport", "udp"]
                + ["--port", "0", "--presence", "auto", "--trace", "--ready-json"]
                + ["--state", str(self.state)],
                cwd=REPO,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"softkey run did not come up: {self.trace.read_text()}")
        self.port = json.loads(line)["address"]["port"]

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", *args, "--state", str(self.state)],
            cwd=REPO,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def json(self, *args: str) -> dict[str, Any]:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def client(self, timeout: float = 30.0) -> Fido2Client:
        device = open_udp_device("127.0.0.1", self.port, timeout=timeout)
        return Fido2Client(device, DefaultClientDataCollector("https://example.com"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def key(tmp_path: Path) -> Iterator[Key]:
    running = Key(tmp_path)
    yield running
    running.stop()


def _register(client: Fido2Client, server: Fido2Server):
    options, state = server.register_begin(ALICE, user_verification=DISCOURAGED)
    response = client.make_credential(options.public_key)
    return server.register_complete(state, response).credential_data


def _login(client: Fido2Client, server: Fido2Server, credential) -> None:
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_faults_on_a_running_key_from_the_cli(key: Key) -> None:
    server = Fido2Server(RP)
    client = key.client()
    credential = _register(client, server)

    listed = key.json("fault", "list")
    assert listed["faults"] == [] and listed["running"] is True
    assert {"key", "state", "running"} <= set(listed)
    added = key.json("fault", "add", "bad_signature", "--on", "getAssertion")
    assert added["added"]["kind"] == "bad_signature" and added["added"]["left"] == 1
    assert key.json("status")["faults"] == [added["added"]]
    text = key.cli("status")
    assert "faults     bad_signature (1 left)" in text.stdout, text.stdout

    with pytest.raises(ValueError, match="[Ss]ignature"):
        _login(client, server, credential)  # its silent pre-flight did not use the fault up
    assert key.json("fault", "list")["faults"] == []
    _login(client, server, credential)  # normal again

    key.json("fault", "add", "error", "--value", "OPERATION_DENIED", "--count", "2")
    for _ in range(2):
        with pytest.raises(ClientError) as raised:
            _login(client, server, credential)
        assert int(raised.value.cause.code) == 0x27
    _login(client, server, credential)

    key.json("fault", "add", "no_answer")
    with pytest.raises(OSError):
        _login(key.client(timeout=1.5), server, credential)  # the UDP read times out
    _login(key.client(), server, credential)  # and the key answers the next one at once

    key.json("fault", "add", "delay", "--value", "0.3")
    key.json("fault", "add", "uv_flag", "--value", "on", "--count", "3")
    cleared = key.json("fault", "clear", "delay")
    assert cleared["cleared"] == 1 and [f["kind"] for f in cleared["faults"]] == ["uv_flag"]
    assert key.json("fault", "clear")["cleared"] == 1
    assert "no faults set on" in key.cli("fault", "list").stdout

    trace = key.trace.read_text()
    marked = [line for line in trace.splitlines() if "[fault:" in line]
    assert len(marked) == 4, trace
    assert marked[0].endswith("[fault: bad_signature]") and "CTAP2_OK" in marked[0]
    assert "CTAP2_ERR_OPERATION_DENIED" in marked[1]
    assert marked[3].endswith("<no answer> [fault: no_answer]")


def test_bad_fault_input_is_one_line(key: Key) -> None:
    for args, code in [
        (("fault", "add", "up_flag", "--value", "maybe"), 2),
        (("fault", "add", "up_flag"), 2),
        (("fault", "add", "bogus"), 2),
        (("fault", "add", "aaguid", "--on", "getAssertion"), 2),
        (("fault", "add", "delay", "--value", "-1"), 2),
        (("fault", "add", "bad_signature", "--count", "0"), 2),
        (("fault", "clear", "bogus"), 2),
    ]:
        result = key.cli(*args)
        assert result.returncode == code, (args, result.stderr)
        _one_error_line(result)
        assert result.stdout == ""
    assert key.json("fault", "list")["faults"] == []


def test_events_of_a_running_key_as_json_lines(key: Key) -> None:
    server = Fido2Server(RP)
    client = key.client()
    credential = _register(client, server)
    _login(client, server, credential)
    assert key.cli("pin", "set", SOFTKEY_NEW_PIN=PIN).returncode == 0
    assert key.cli("reset", "--yes").returncode == 0

    result = key.cli("events", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    story = [e["type"] for e in lines if not e["type"].startswith("presence")]
    assert story == [
        "credentialAdded",
        "credentialAsserted",
        "credentialAsserted",
        "pinChanged",
        "reset",
    ]
    for event in lines:
        assert {"key", "state", "running", "type", "seq", "timestamp"} <= set(event)
        assert {"rp_id", "credential_id", "sign_count"} <= set(event)
        assert event["running"] is True and event["state"] == str(key.state)
    assert PIN not in result.stdout

    since = lines[2]["seq"]
    later = key.cli("events", "--json", "--since", str(since))
    assert [json.loads(x)["seq"] for x in later.stdout.splitlines()] == [
        e["seq"] for e in lines if e["seq"] > since
    ]
    text = key.cli("events")
    assert text.returncode == 0
    assert "credentialAdded rp=example.com" in text.stdout
    assert "pinChanged" in text.stdout and "change=set" in text.stdout


def test_events_follow_streams_new_events_until_interrupted(key: Key) -> None:
    last = key.json("status")  # the key is up; everything before this is history
    assert last["running"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "events", "--follow", "--json"]
        + ["--state", str(key.state)],
        cwd=REPO,
        env={**key.env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follow.stdout is not None
    out = follow.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True).start()
    try:
        _register(key.client(), Fido2Server(RP))
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "credentialAdded" for e in seen):
            seen.append(json.loads(lines.get(timeout=20)))
        assert [e["type"] for e in seen] == [
            "presenceRequested",
            "presenceApproved",
            "credentialAdded",
        ]
    finally:
        follow.send_signal(signal.SIGINT)
        code = follow.wait(20)
    assert code == 0
    assert follow.stderr is not None and "Traceback" not in follow.stderr.read()


def test_events_follow_ends_when_the_key_stops(key: Key) -> None:
    # One event in the history first: its line on stdout shows `events --follow` is subscribed
    # before the key stops (else it could start after the key is gone and rightly exit 1).
    assert key.cli("fill", "--count", "1").returncode == 0
    follow = subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "events", "--follow"]
        + ["--state", str(key.state)],
        cwd=REPO,
        env=key.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline().strip(), "no event line from `softkey events --follow`"
        key.stop()
        assert follow.wait(20) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_without_a_running_key_the_verbs_say_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    state = tmp_path / "k.sqlite3"

    def softkey(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    assert softkey("init", "--state", str(state)).returncode == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args in (
        ("fault", "add", "bad_signature"),
        ("fault", "list", "--json"),
        ("fault", "clear"),
        ("events", "--json"),
        ("events", "--follow"),
    ):
        result = softkey(*args, "--state", str(state))
        assert result.returncode == 1, (args, result.stderr)
        line = _one_error_line(result)
        assert "is not running" in line and "softkey run" in line, line
        assert result.stdout == ""
    missing = softkey("fault", "list", "--key", "nosuch")
    assert missing.returncode == 1
    assert "there is no key 'nosuch'" in _one_error_line(missing)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
