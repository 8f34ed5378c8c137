"""`softkey config ...` and `softkey pin verify`, judged by python-fido2 on the same state.

The CLI reaches the device through tools.admin (real authenticatorConfig / clientPIN requests
through ``handle_cbor``); every check of the outcome here is python-fido2's own reading of the
key (getInfo, ClientPin, makeCredential), offline on the state file and through a running
key's control socket. Every test gets its own $XDG_DATA_HOME.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2

from softkey.authenticator import Authenticator
from softkey.tools import admin, paths
from softkey.tools.cli import cli
from softkey.transports.inprocess import VirtualCtapDevice

ERR = CtapError.ERR
ES256 = [{"type": "public-key", "alg": -7}]
PIN = "123456"
NO_CONFIG = "profile has no authenticatorConfig (CTAP 2.1 only)"
VERBS: list[list[str]] = [
    ["config", "toggle-always-uv"],
    ["config", "set-min-pin-length", "8"],
    ["config", "force-pin-change"],
    ["config", "enable-ep"],
]


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("SOFTKEY_KEY", "SOFTKEY_STATE", "SOFTKEY_PIN", "SOFTKEY_NEW_PIN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data" / "softkey"


Run = Callable[..., Result]


@pytest.fixture
def run(data_home: Path) -> Run:
    runner = CliRunner()

    def invoke(*args: str, pin: str | None = None, code: int = 0) -> Result:
        env = {"SOFTKEY_PIN": pin} if pin is not None else None
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    return invoke


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def _new_key(data_home: Path, profile: str = "ctap2.1", name: str = "default") -> Path:
    """A fresh key's state file, made by the device itself (no CLI involved)."""
    data_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = data_home / f"{name}.sqlite3"
    Authenticator(profile, state).close()
    return state


def _ctap(auth: Authenticator) -> Ctap2:
    return Ctap2(VirtualCtapDevice(auth))


def _info(state: Path) -> Any:
    with Authenticator(state=state) as auth:
        return _ctap(auth).get_info()


def _set_pin(state: Path, pin: str = PIN) -> None:
    with Authenticator(state=state) as auth:
        ClientPin(_ctap(auth)).set_pin(pin)


def _retries(state: Path) -> int:
    with Authenticator(state=state) as auth:
        return ClientPin(_ctap(auth)).get_pin_retries()[0]


def _token_error(state: Path, pin: str) -> int | None:
    """None if python-fido2 gets a PIN token with ``pin``, else the CTAP status."""
    with Authenticator(state=state) as auth:
        try:
            ClientPin(_ctap(auth)).get_pin_token(pin)
        except CtapError as exc:
            return int(exc.code)
    return None


# -- toggle-always-uv ---------------------------------------------------------------------------


def test_toggle_always_uv_offline_is_what_python_fido2_reads(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    assert _info(state).options["alwaysUv"] is False
    body = _json(run("config", "toggle-always-uv", "--json"))
    assert body["always_uv"] is True
    assert (body["key"], body["state"], body["running"]) == ("default", str(state), False)
    info = _info(state)
    assert info.options["alwaysUv"] is True
    assert info.options["makeCredUvNotRqd"] is False  # alwaysUv: every makeCredential needs UV
    text = run("config", "toggle-always-uv").stdout
    assert "alwaysUv is now off for key 'default'" in text
    assert _info(state).options["alwaysUv"] is False


def test_toggle_always_uv_with_a_pin_needs_the_right_pin(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    _set_pin(state)
    # No PIN given and no terminal to ask on: refused before any PIN is tried.
    assert "SOFTKEY_PIN" in run("config", "toggle-always-uv", code=1).stderr
    assert _retries(state) == 8 and _info(state).options["alwaysUv"] is False

    wrong = run("config", "toggle-always-uv", pin="000000", code=1)
    assert wrong.stderr.strip() == "Error: wrong PIN; 7 retries left"
    assert _retries(state) == 7
    assert _info(state).options["alwaysUv"] is False

    body = _json(run("config", "toggle-always-uv", "--json", pin=PIN))
    assert body["always_uv"] is True
    assert _info(state).options["alwaysUv"] is True
    assert _retries(state) == 8  # the right PIN refills the retries
    # The device now wants a token for makeCredential: alwaysUv is really on.
    with Authenticator(state=state) as auth, pytest.raises(CtapError) as excinfo:
        _ctap(auth).make_credential(os.urandom(32), {"id": "a.test"}, {"id": b"u"}, ES256)
    assert excinfo.value.code == ERR.PUAT_REQUIRED


# -- set-min-pin-length -------------------------------------------------------------------------


def test_set_min_pin_length_8_refuses_a_6_digit_pin(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    rps = ["--rp-id", "example.com", "--rp-id", "rp2.test"]
    body = _json(run("config", "set-min-pin-length", "8", *rps, "--json"))
    assert body["min_pin_length"] == 8 and body["previous_min_pin_length"] == 4
    assert body["min_pin_length_rp_ids"] == ["example.com", "rp2.test"]
    assert _info(state).min_pin_length == 8
    with Authenticator(state=state) as auth:
        client_pin = ClientPin(_ctap(auth))
        with pytest.raises(CtapError) as excinfo:
            client_pin.set_pin("123456")
        assert excinfo.value.code == ERR.PIN_POLICY_VIOLATION
        client_pin.set_pin("12345678")
    assert _token_error(state, "12345678") is None


def test_set_min_pin_length_above_the_pin_forces_a_change(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    _set_pin(state, PIN)
    result = run("config", "set-min-pin-length", "8", pin=PIN)
    assert "minimum PIN length of key 'default' is now 8" in result.stdout
    assert "must be changed before its next use" in result.stdout
    info = _info(state)
    assert info.min_pin_length == 8 and info.force_pin_change is True
    with Authenticator(state=state) as auth:
        client_pin = ClientPin(_ctap(auth))
        with pytest.raises(CtapError) as excinfo:
            client_pin.change_pin(PIN, "654321")
        assert excinfo.value.code == ERR.PIN_POLICY_VIOLATION
        client_pin.change_pin(PIN, "87654321")
    assert _info(state).force_pin_change is False
    assert _token_error(state, "87654321") is None


def test_min_pin_length_may_not_decrease(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    run("config", "set-min-pin-length", "8")
    _set_pin(state, "12345678")
    refused = run("config", "set-min-pin-length", "6", pin="12345678", code=1)
    assert "the minimum PIN length can only grow (it is 8, not 6)" in refused.stderr
    assert "`softkey reset`" in refused.stderr
    assert _info(state).min_pin_length == 8
    assert _retries(state) == 8  # the PIN was right; only the policy refused
    # Equal is no decrease; too long for any PIN is refused by the device too.
    run("config", "set-min-pin-length", "8", pin="12345678")
    too_long = run("config", "set-min-pin-length", "64", pin="12345678", code=1)
    assert "no PIN can be 64 characters long" in too_long.stderr
    assert _info(state).min_pin_length == 8


def test_min_pin_length_rp_ids_reach_the_min_pin_length_extension(
    run: Run, data_home: Path
) -> None:
    state = _new_key(data_home)
    run("config", "set-min-pin-length", "6", "--rp-id", "example.com")

    def reported(rp: str) -> Any:
        with Authenticator(state=state) as auth:
            att = _ctap(auth).make_credential(
                os.urandom(32), {"id": rp}, {"id": b"u"}, ES256, extensions={"minPinLength": True}
            )
        return (att.auth_data.extensions or {}).get("minPinLength")

    assert reported("example.com") == 6
    assert reported("other.test") is None


def test_set_min_pin_length_usage_and_rp_id_limit(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    run("config", "set-min-pin-length", "0", code=2)
    rps = [arg for i in range(5) for arg in ("--rp-id", f"rp{i}.test")]
    too_many = run("config", "set-min-pin-length", "6", *rps, code=1)
    assert "too many --rp-id: this key lets at most 4 RPs read the length" in too_many.stderr
    assert _info(state).min_pin_length == 4


def test_always_uv_without_a_pin_blocks_other_config(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    run("config", "toggle-always-uv")
    refused = run("config", "set-min-pin-length", "6", code=1)
    assert "alwaysUv is on and no PIN is set: set one with `softkey pin set`" in refused.stderr
    assert _info(state).min_pin_length == 4


# -- force-pin-change ---------------------------------------------------------------------------


def test_force_pin_change_until_the_pin_is_changed(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    _set_pin(state)
    assert _token_error(state, PIN) is None
    body = _json(run("config", "force-pin-change", "--json", pin=PIN))
    assert body["force_pin_change"] is True
    assert _info(state).force_pin_change is True
    assert _token_error(state, PIN) == ERR.PIN_INVALID
    # `pin verify` says the PIN is right, and that it must change; a wrong one is still wrong.
    verified = run("pin", "verify", pin=PIN)
    assert "PIN verified" in verified.stdout and "softkey pin change" in verified.stderr
    wrong = run("pin", "verify", pin="000000", code=1)
    assert "wrong PIN; 7 retries left" in wrong.stderr
    # Other config verbs cannot get a token either, and say why.
    refused = run("config", "toggle-always-uv", pin=PIN, code=1)
    assert "the PIN is right, but the key requires a new one" in refused.stderr
    assert _info(state).options["alwaysUv"] is False

    with Authenticator(state=state) as auth:
        ClientPin(_ctap(auth)).change_pin(PIN, "246810")
    assert _info(state).force_pin_change is False
    assert _token_error(state, "246810") is None


def test_force_pin_change_without_a_pin_is_refused(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    refused = run("config", "force-pin-change", code=1)
    assert "no PIN is set, so there is none to change" in refused.stderr
    assert _info(state).force_pin_change is False


# -- enable-ep ----------------------------------------------------------------------------------


def test_enable_ep_where_getinfo_offers_it(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    _set_pin(state)
    assert _info(state).options["ep"] is False
    body = _json(run("config", "enable-ep", "--json", pin=PIN))
    assert body["enterprise_attestation"] is True
    assert _info(state).options["ep"] is True
    run("reset", "--yes")  # what README promises: only a reset disables it
    assert _info(state).options["ep"] is False


def test_enable_ep_elsewhere_names_the_profiles_that_have_it(run: Run, data_home: Path) -> None:
    state = _new_key(data_home, "nitrokey-3")
    refused = run("config", "enable-ep", code=1)
    lines = refused.stderr.strip().splitlines()
    assert lines == [
        'Error: the nitrokey-3 profile has no enterprise attestation (no "ep" in getInfo); '
        "profiles with it: ctap2.1, ctap2.2 (see `softkey profiles`)"
    ]
    assert "ep" not in _info(state).options
    # The list is what `softkey profiles` shows.
    listed = _json(run("profiles", "--json"))["profiles"]
    assert [p["name"] for p in listed if "ep" in p["options"]] == ["ctap2.1", "ctap2.2"]


# -- profiles without authenticatorConfig -------------------------------------------------------


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre"])
@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[1])
def test_profiles_without_authenticator_config(
    run: Run, data_home: Path, profile: str, verb: list[str]
) -> None:
    state = _new_key(data_home, profile)
    _set_pin(state)
    # No SOFTKEY_PIN: the refusal comes before anybody is asked for a PIN.
    refused = run(*verb, code=1)
    assert refused.stderr.strip() == (
        f"Error: the {profile} {NO_CONFIG}; profiles with it: ctap2.1, ctap2.2, "
        "yubikey-bio, nitrokey-3, unlimited-rk (see `softkey profiles`)"
    )
    assert _retries(state) == 8
    assert "authnrCfg" not in _info(state).options


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre"])
def test_the_device_itself_refuses_config_on_older_profiles(profile: str) -> None:
    """The admin op's phrasing of the device's INVALID_COMMAND, not only the getInfo check."""
    with Authenticator(profile) as auth:
        reply = admin.dispatch(auth, "config_toggle_always_uv", {})
        assert reply == {"ok": False, "code": "unsupported", "error": reply["error"]}
        assert f"the {profile} {NO_CONFIG}" in reply["error"]
        refusal = admin._config_refusal(auth, auth.handle_cbor(b"\x0d\xa1\x01\x02")[0], 2)
        assert str(refusal) == reply["error"]


# -- pin verify ---------------------------------------------------------------------------------


def test_pin_verify_right_and_wrong(run: Run, data_home: Path) -> None:
    state = _new_key(data_home, name="work")
    _set_pin(state)
    ok = run("pin", "verify", "--key", "work", pin=PIN)
    assert ok.stdout.strip() == "PIN verified on key 'work' (8 retries left)"

    wrong = run("pin", "verify", "--key", "work", pin="654321", code=1)
    assert wrong.stderr.strip() == "Error: wrong PIN; 7 retries left"
    assert _retries(state) == 7
    body = _json(run("pin", "verify", "--key", "work", "--json", pin="111111", code=1))
    assert body["verified"] is False and body["retries"] == 6 and body["reason"] == "wrong_pin"
    assert body["key"] == "work" and body["running"] is False
    assert _retries(state) == 6

    body = _json(run("pin", "verify", "--key", "work", "--json", pin=PIN))
    assert body["verified"] is True and body["retries"] == 8 and body["error"] is None
    assert _retries(state) == 8


def test_pin_verify_until_blocked(run: Run, data_home: Path, tmp_path: Path) -> None:
    state = tmp_path / "elsewhere.sqlite3"
    Authenticator("ctap2.0", state).close()
    _set_pin(state, "4321")
    for left in range(7, 0, -1):
        wrong = run("pin", "verify", "--state", str(state), pin="0000", code=1)
        assert f"wrong PIN; {left} {'retry' if left == 1 else 'retries'} left" in wrong.stderr
    blocked = run("pin", "verify", "--state", str(state), pin="0000", code=1)
    assert "the PIN is blocked (no retries left)" in blocked.stderr
    assert _retries(state) == 0
    # Blocked: not even the right PIN works, and none is asked for.
    assert _token_error(state, "4321") == ERR.PIN_BLOCKED
    body = _json(run("pin", "verify", "--state", str(state), "--json", code=1))
    assert body["verified"] is False and body["blocked"] is True
    assert body["reason"] == "pin_blocked"


def test_pin_verify_without_a_pin_set(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    refused = run("pin", "verify", pin=PIN, code=1)
    assert refused.stderr.strip() == (
        "Error: no PIN is set on this key; set one with `softkey pin set`"
    )
    assert _info(state).options["clientPin"] is False


# -- info ---------------------------------------------------------------------------------------


def test_info_reports_the_configuration(run: Run, data_home: Path) -> None:
    state = _new_key(data_home)
    _set_pin(state)
    run("config", "toggle-always-uv", pin=PIN)
    run("config", "set-min-pin-length", "6", "--rp-id", "example.com", pin=PIN)
    run("config", "enable-ep", pin=PIN)
    run("config", "force-pin-change", pin=PIN)
    data = _json(run("info", "--json"))
    info = _info(state)
    assert data["config"] == {
        "authenticator_config": True,
        "always_uv": info.options["alwaysUv"],
        "enterprise_attestation": info.options["ep"],
        "min_pin_length": info.min_pin_length,
        "force_pin_change": info.force_pin_change,
        "min_pin_length_rp_ids": ["example.com"],
        "max_rp_ids_for_min_pin_length": info.max_rpids_for_min_pin,
    }
    assert (info.options["alwaysUv"], info.options["ep"]) == (True, True)
    assert (info.min_pin_length, info.force_pin_change) == (6, True)


def test_info_config_of_a_ctap20_key(run: Run, data_home: Path) -> None:
    _new_key(data_home, "ctap2.0")
    assert _json(run("info", "--json"))["config"] == {
        "authenticator_config": False,
        "always_uv": None,
        "enterprise_attestation": None,
        "min_pin_length": 4,
        "force_pin_change": False,
        "min_pin_length_rp_ids": [],
        "max_rp_ids_for_min_pin_length": None,
    }


# -- through a running key's control socket -----------------------------------------------------


@pytest.fixture
def running(data_home: Path) -> Iterator[Authenticator]:
    """A key "running" as `softkey run` serves it: admin calls go to its own object."""
    from softkey.transports.control import ControlServer

    state = _new_key(data_home, name="live")
    auth = Authenticator(state=state)
    lock = threading.Lock()

    def admin_call(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return admin.dispatch(auth, request["name"], request["args"])

    with ControlServer(paths.control_socket_path(state), {"admin": admin_call}):
        yield auth
    auth.close()


def test_config_verbs_go_through_a_running_key(run: Run, running: Authenticator) -> None:
    ClientPin(_ctap(running)).set_pin(PIN)
    body = _json(run("config", "toggle-always-uv", "--key", "live", "--json", pin=PIN))
    assert body["running"] is True and body["always_uv"] is True
    # The running key's own object changed: python-fido2 asks it.
    assert _ctap(running).get_info().options["alwaysUv"] is True

    run("config", "set-min-pin-length", "6", "--key", "live", "--rp-id", "a.test", pin=PIN)
    assert _ctap(running).get_info().min_pin_length == 6
    with pytest.raises(CtapError) as excinfo:
        ClientPin(_ctap(running)).change_pin(PIN, "12345")
    assert excinfo.value.code == ERR.PIN_POLICY_VIOLATION
    refused = run("config", "set-min-pin-length", "5", "--key", "live", pin=PIN, code=1)
    assert "can only grow (it is 6, not 5)" in refused.stderr

    run("config", "enable-ep", "--key", "live", pin=PIN)
    assert _ctap(running).get_info().options["ep"] is True

    run("config", "force-pin-change", "--key", "live", pin=PIN)
    assert _ctap(running).get_info().force_pin_change is True
    with pytest.raises(CtapError) as excinfo:
        ClientPin(_ctap(running)).get_pin_token(PIN)
    assert excinfo.value.code == ERR.PIN_INVALID


def test_pin_verify_through_a_running_key(run: Run, running: Authenticator) -> None:
    ClientPin(_ctap(running)).set_pin(PIN)
    body = _json(run("pin", "verify", "--key", "live", "--json", pin=PIN))
    assert body["running"] is True and body["verified"] is True
    assert (
        "wrong PIN; 7 retries left" in run("pin", "verify", "--key", "live", pin="0", code=1).stderr
    )
    assert ClientPin(_ctap(running)).get_pin_retries()[0] == 7
    run("pin", "verify", "--key", "live", pin="1", code=1)
    # The third wrong PIN in a row since power-up: a running key needs a replug first.
    third = run("pin", "verify", "--key", "live", pin="2", code=1)
    assert "3 wrong PINs in a row (5 left before the PIN is blocked)" in third.stderr
    assert "`softkey replug`" in third.stderr
    with pytest.raises(CtapError) as excinfo:
        ClientPin(_ctap(running)).get_pin_token(PIN)
    assert excinfo.value.code == ERR.PIN_AUTH_BLOCKED
    running.power_cycle()
    assert "PIN verified" in run("pin", "verify", "--key", "live", pin=PIN).stdout
    assert ClientPin(_ctap(running)).get_pin_retries()[0] == 8


def test_profile_without_config_through_a_running_key(run: Run, data_home: Path) -> None:
    from softkey.transports.control import ControlServer

    state = _new_key(data_home, "ctap2.1-pre", name="pre")
    with Authenticator(state=state) as auth:
        socket_path = paths.control_socket_path(state)
        with ControlServer(
            socket_path, {"admin": lambda r: admin.dispatch(auth, r["name"], r["args"])}
        ):
            refused = run("config", "toggle-always-uv", "--key", "pre", code=1)
    assert f"the ctap2.1-pre {NO_CONFIG}" in refused.stderr
