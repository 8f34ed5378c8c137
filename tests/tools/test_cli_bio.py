"""The CLI and a fingerprint key (yubikey-bio), as real processes.

`softkey init --enrolled` (PIN and one finger, offline), `softkey set-user-verified` (the
running key's fingerprint checks; refused offline), `softkey run --user-verified`, and the
default of a running bio key: fingerprint checks follow --presence like a touch (touch: a
matching finger, deny: one that does not match). The platform is python-fido2 over UDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2

from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]
GA = ClientPin.PERMISSION.GET_ASSERTION


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(root / "xdg"), PYTHONUNBUFFERED="1", **extra)
    return env


def softkey(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env=_env(root, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir(mode=0o700)
    return tmp_path


class RunningKey:
    """`softkey run --transport udp --port 0 --ready-json ...` until the test ends."""

    def __init__(self, root: Path, state: Path, *extra: str) -> None:
        self.root, self.state = root, state
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "softkey.tools.cli", "run", "--transport", "udp"]
            + ["--port", "0", "--state", str(state), "--ready-json", *extra],
            cwd=REPO,
            env=_env(root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"softkey run did not come up: {self.proc.stderr.read()}")
        self.port = json.loads(line)["address"]["port"]

    def client_pin(self) -> ClientPin:
        return ClientPin(Ctap2(open_udp_device("127.0.0.1", self.port, timeout=30)))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return softkey(self.root, *args, "--state", str(self.state))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def start() -> Iterator[Callable[..., RunningKey]]:
    started: list[RunningKey] = []

    def run(root: Path, state: Path, *extra: str) -> RunningKey:
        key = RunningKey(root, state, *extra)
        started.append(key)
        return key

    yield run
    for key in started:
        key.stop()


def _status(fn: Callable[[], Any]) -> int:
    try:
        fn()
    except CtapError as exc:
        return exc.code
    return 0


# -- offline: init --enrolled ----------------------------------------------------------------------


def test_init_enrolled_sets_the_default_pin_and_enrolls_one_finger(root: Path) -> None:
    state = root / "keys" / "bio.sqlite3"
    made = softkey(root, "init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled")
    assert made.returncode == 0, made.stderr
    assert "PIN set (123456, the default); finger 'finger 1' enrolled" in made.stdout
    info = json.loads(softkey(root, "info", "--state", str(state), "--json").stdout)
    assert info["options"]["uv"] is True and info["options"]["bioEnroll"] is True
    assert [t["name"] for t in info["bio"]["templates"]] == ["finger 1"]
    assert info["bio"]["uv_retries"] == 3 and info["pin"]["uv_retries"] == 3
    text = softkey(root, "info", "--state", str(state)).stdout
    assert "fingerprint: 1 of 5 fingers enrolled (finger 1), 3 UV retries left" in text
    verify = softkey(root, "pin", "verify", "--state", str(state), SOFTKEY_PIN="123456")
    assert verify.returncode == 0, verify.stderr


def test_init_enrolled_takes_softkey_pin_and_reports_json(root: Path) -> None:
    state = root / "keys" / "bio.sqlite3"
    made = softkey(
        root,
        *("init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled", "--json"),
        SOFTKEY_PIN="97531",
    )
    assert made.returncode == 0, made.stderr
    document = json.loads(made.stdout)
    assert document["created"] is True and len(document["bio"]["templates"]) == 1
    assert (
        softkey(root, "pin", "verify", "--state", str(state), SOFTKEY_PIN="97531").returncode == 0
    )
    plain = root / "keys" / "plain.sqlite3"
    made = softkey(root, "init", "--state", str(plain), "--json")
    assert json.loads(made.stdout)["bio"] is None


def test_init_enrolled_refuses_in_one_line_and_leaves_nothing(root: Path) -> None:
    state = root / "keys" / "k.sqlite3"
    no_sensor = softkey(root, "init", "--state", str(state), "--enrolled")
    assert no_sensor.returncode == 2
    assert "--profile yubikey-bio" in _one_error_line(no_sensor)
    short = softkey(
        root, "init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled",
        SOFTKEY_PIN="12",
    )  # fmt: skip
    assert short.returncode == 1
    assert "PIN" in _one_error_line(short)
    assert list((root / "keys").iterdir()) == []


# -- set-user-verified -----------------------------------------------------------------------------


def test_set_user_verified_needs_a_running_key(root: Path) -> None:
    state = root / "keys" / "bio.sqlite3"
    softkey(root, "init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled")
    offline = softkey(root, "set-user-verified", "true", "--state", str(state))
    assert offline.returncode == 1
    assert "is not running" in _one_error_line(offline)
    once = softkey(root, "set-user-verified", "default", "--once", "--state", str(state))
    assert once.returncode == 2
    _one_error_line(once)


def test_a_running_bio_key_follows_set_user_verified(root: Path, start) -> None:
    state = root / "keys" / "bio.sqlite3"
    softkey(root, "init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled")
    key = start(root, state, "--presence", "auto", "--user-verified", "false")
    client_pin = key.client_pin()
    assert _status(lambda: client_pin.get_uv_token(GA, "example.com")) == CtapError.ERR.UV_INVALID
    assert client_pin.get_uv_retries() == 2
    status = json.loads(key.cli("status", "--json").stdout)
    assert status["user_verified"] is False

    done = key.cli("set-user-verified", "true", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user_verified"] is True
    assert len(client_pin.get_uv_token(GA, "example.com")) == 32
    assert client_pin.get_uv_retries() == 3

    once = key.cli("set-user-verified", "false", "--once")
    assert once.returncode == 0, once.stderr
    assert "fail (CTAP2_ERR_UV_INVALID, a UV retry spent) next, then match" in once.stdout
    assert _status(lambda: client_pin.get_uv_token(GA, "example.com")) == CtapError.ERR.UV_INVALID
    assert _status(lambda: client_pin.get_uv_token(GA, "example.com")) == 0

    # default: checks follow --presence (auto here), like a touch.
    assert key.cli("set-user-verified", "default").returncode == 0
    assert json.loads(key.cli("status", "--json").stdout)["user_verified"] is None
    assert _status(lambda: client_pin.get_uv_token(GA, "example.com")) == 0


def test_by_default_a_running_bio_key_asks_like_a_touch(root: Path, start) -> None:
    state = root / "keys" / "bio.sqlite3"
    softkey(root, "init", "--state", str(state), "--profile", "yubikey-bio", "--enrolled")
    key = start(root, state, "--presence", "wait")
    outcomes: list[int] = []

    def ask() -> None:
        client_pin = key.client_pin()
        outcomes.append(_status(lambda: client_pin.get_uv_token(GA, "example.com")))

    for verb in ("deny", "touch"):
        asking = threading.Thread(target=ask)
        asking.start()
        decided = key.cli(verb, "--wait", "20")
        assert decided.returncode == 0, decided.stderr
        assert "fingerprint for getAssertion for example.com" in decided.stdout
        asking.join(30)
    assert outcomes == [CtapError.ERR.UV_INVALID, 0]


def test_keys_without_a_sensor_refuse_in_one_line(root: Path, start) -> None:
    state = root / "keys" / "plain.sqlite3"
    refused = softkey(
        root, "run", "--transport", "udp", "--port", "0", "--state", str(state),
        "--user-verified", "true",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "fingerprint sensor" in _one_error_line(refused)
    assert not state.exists()
    key = start(root, state, "--presence", "auto")
    result = key.cli("set-user-verified", "true")
    assert result.returncode == 1
    assert "no fingerprint sensor" in _one_error_line(result)
