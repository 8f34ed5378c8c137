"""The `softkey` console script as a CI job runs it: real processes, real sockets.

Two keys run side by side over UDP (`--key a`, `--key b`); the operator verbs reach each one
through its own control socket, python-fido2 talks to them over UDP, and `--trace` prints
the decoded exchange with the device's reason for a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.transports import control
from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env["XDG_DATA_HOME"] = str(data)
    return env


def softkey(
    data: Path, *args: str, code: int = 0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env=_env(data),
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return proc


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[str]
    port: int


def _start(data: Path, name: str, profile: str) -> Running:
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
            "--key",
            name,
            "--profile",
            profile,
            "--presence",
            "auto",
            "--trace",
        ],
        cwd=REPO,
        env=_env(data),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"softkey run exited: {proc.communicate()}")
        try:
            # Same socket path rule as tools/paths.py: NAME.sock next to NAME.sqlite3.
            status = control.call(data / "softkey" / f"{name}.sock", "status", timeout=5)
        except control.ControlError:
            time.sleep(0.05)
            continue
        return Running(name, proc, status["udp"]["port"])
    proc.kill()
    raise AssertionError("softkey run did not come up")


def _stop(key: Running) -> str:
    key.proc.send_signal(signal.SIGTERM)
    _, err = key.proc.communicate(timeout=30)
    assert key.proc.returncode == 0, err
    return err


@pytest.fixture
def two_keys(tmp_path: Path) -> Iterator[tuple[Path, Running, Running]]:
    data = tmp_path / "data"
    a = _start(data, "a", "yubikey-5")
    b = _start(data, "b", "nitrokey-fido2")
    try:
        yield data, a, b
    finally:
        for key in (a, b):
            if key.proc.poll() is None:
                key.proc.kill()
                key.proc.communicate()


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def test_two_running_keys_operated_through_their_control_sockets(two_keys) -> None:
    data, a, b = two_keys
    assert a.port != b.port

    info_a = _json(softkey(data, "info", "--key", "a", "--json"))
    info_b = _json(softkey(data, "info", "--key", "b", "--json"))
    assert (info_a["running"], info_a["profile"]) == (True, "yubikey-5")
    assert (info_b["running"], info_b["profile"]) == (True, "nitrokey-fido2")
    keys = {k["key"]: k for k in _json(softkey(data, "keys", "--json"))["keys"]}
    assert keys["a"]["running"] and keys["b"]["running"]

    # Fill key b to capacity through its running process; key a is untouched.
    fill = _json(softkey(data, "fill", "--key", "b", "--until-full", "--json"))
    assert (fill["created"], fill["running"]) == (8, True)
    over = softkey(data, "fill", "--key", "b", "--count", "1", code=1)
    assert over.stderr.strip() == (
        "Error: slots full (8/8); delete some with `softkey credentials delete` or reset"
    )
    assert _json(softkey(data, "credentials", "list", "--key", "a", "--json"))["used"] == 0

    # The running key serves what the CLI made: usernameless login over UDP finds 8.
    ctap_b = Ctap2(open_udp_device(port=b.port))
    assert len(ctap_b.get_assertions("fill.softkey.test", os.urandom(32))) == 8
    status = _json(softkey(data, "status", "--key", "b", "--json"))
    assert status["slots"]["used"] == 8  # the running key's own view agrees

    # Key a: a non-resident credential over UDP, then a failing login the trace explains.
    ctap_a = Ctap2(open_udp_device(port=a.port))
    att = ctap_a.make_credential(
        os.urandom(32),
        {"id": "example.com", "name": "Ex"},
        {"id": b"u1", "name": "u1"},
        [{"type": "public-key", "alg": -7}],
    )
    cred_id = att.auth_data.credential_data.credential_id
    with pytest.raises(CtapError) as excinfo:
        ctap_a.get_assertion("example.com", os.urandom(32))
    assert excinfo.value.code == CtapError.ERR.NO_CREDENTIALS

    # Reset through the socket: the running key's old credential ID stops working at once.
    softkey(data, "reset", "--key", "a", "--yes")
    with pytest.raises(CtapError) as excinfo:
        ctap_a.get_assertion("example.com", os.urandom(32), [{"type": "public-key", "id": cred_id}])
    assert excinfo.value.code == CtapError.ERR.NO_CREDENTIALS

    refused = softkey(data, "import", "--key", "a", str(data / "nothing.json"), code=1)
    assert "key 'a' is running; stop it" in refused.stderr

    trace = _stop(a)
    _stop(b)
    assert "trace: makeCredential rp=example.com user=u1 algs=[-7] -> CTAP2_OK" in trace
    assert (
        "trace: getAssertion rp=example.com allowList=0 -> CTAP2_ERR_NO_CREDENTIALS: "
        "empty allowList and no discoverable credential for example.com"
    ) in trace
    assert "trace: getAssertion rp=example.com allowList=1 -> CTAP2_ERR_NO_CREDENTIALS" in trace

    # Stopped: the same verbs work offline on the state files.
    offline = _json(softkey(data, "info", "--key", "b", "--json"))
    assert (offline["running"], offline["resident_credentials"]["used"]) == (False, 8)


def test_console_script_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = Path(sys.executable).with_name("softkey")
    env = _env(data)
    usage = subprocess.run(
        [str(script), "fill"], env=env, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "--count N or --until-full" in usage.stderr
    ok = subprocess.run(
        [str(script), "fill", "--profile", "nitrokey-3", "--count", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    full = subprocess.run(
        [str(script), "fill", "--count", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert full.returncode == 1
    assert full.stderr.count("\n") == 1 and "slots full (10/10)" in full.stderr
    reset = subprocess.run(
        [str(script), "reset"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert reset.returncode == 1 and "add --yes" in reset.stderr
