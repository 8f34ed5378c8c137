"""authenticatorConfig (CTAP 2.1 §6.11), judged by python-fido2's Config."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fido2.ctap2.config import Config

from softkey.authenticator import Status, get_profile
from softkey.authenticator.cbor import encode
from softkey.authenticator.config import ConfigCmd, SetMinPinLengthKey, min_pin_length_rp_ids

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    RP_ID,
    Key,
    assertion,
    cred_id,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)


def test_enums_match_python_fido2() -> None:
    assert {m.name: m.value for m in ConfigCmd} == {
        "ENABLE_ENTERPRISE_ATTESTATION": Config.CMD.ENABLE_ENTERPRISE_ATT,
        "TOGGLE_ALWAYS_UV": Config.CMD.TOGGLE_ALWAYS_UV,
        "SET_MIN_PIN_LENGTH": Config.CMD.SET_MIN_PIN_LENGTH,
        "VENDOR_PROTOTYPE": Config.CMD.VENDOR_PROTOTYPE,
    }
    assert [m.value for m in SetMinPinLengthKey] == [
        Config.PARAM.NEW_MIN_PIN_LENGTH,
        Config.PARAM.MIN_PIN_LENGTH_RPIDS,
        Config.PARAM.FORCE_CHANGE_PIN,
    ]


def config(key: Key, pin: str | None = "1234", permissions=PERM.AUTHENTICATOR_CFG) -> Config:
    if pin is None:
        return Config(key.ctap)
    cp = key.client_pin()
    return Config(key.ctap, cp.protocol, cp.get_pin_token(pin, permissions))


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre"])
def test_absent_before_2_1(profile: str) -> None:
    key = with_pin(profile)
    assert not Config.is_supported(key.ctap.info)
    assert raw(key.auth, 0x0D, {1: 2}) == bytes([Status.INVALID_COMMAND])


def test_toggle_always_uv() -> None:
    key = with_pin("ctap2.1")
    cid = cred_id(make(key))
    assert key.ctap.info.options["alwaysUv"] is False
    config(key).toggle_always_uv()
    info = key.ctap.info
    assert info.options["alwaysUv"] is True
    assert info.options["makeCredUvNotRqd"] is False
    # Every makeCredential and every presence-checked getAssertion now needs a token.
    assert status_of(make, key) == ERR.PUAT_REQUIRED
    assert status_of(assertion, key, allow=[cid]) == ERR.PUAT_REQUIRED
    # A silent (up=false) probe is no user action and stays possible.
    assertion(key, allow=[cid], options={"up": False})
    token = key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    assert make(key, token).auth_data.is_user_verified()

    config(key).toggle_always_uv()
    assert key.ctap.info.options["alwaysUv"] is False
    make(key)


def test_always_uv_without_a_pin_asks_for_one() -> None:
    key = new_key("ctap2.1")
    config(key, pin=None).toggle_always_uv()  # no PIN: no token needed
    assert status_of(make, key) == ERR.PIN_NOT_SET
    # Turning it off again needs no PIN either...
    config(key, pin=None).toggle_always_uv()
    make(key)
    # ...but once a PIN exists, every config change needs the acfg permission.
    config(key, pin=None).toggle_always_uv()
    key.client_pin().set_pin("1234")
    assert status_of(config(key, pin=None).toggle_always_uv) == ERR.PUAT_REQUIRED
    config(key).toggle_always_uv()
    assert key.ctap.info.options["alwaysUv"] is False


def test_needs_the_acfg_permission() -> None:
    key = with_pin("ctap2.1")
    cfg = config(key, permissions=PERM.CREDENTIAL_MGMT)
    assert status_of(cfg.toggle_always_uv) == ERR.PIN_AUTH_INVALID
    assert status_of(config(key, pin=None).toggle_always_uv) == ERR.PUAT_REQUIRED
    assert key.ctap.info.options["alwaysUv"] is False


def test_mac_covers_subcommand_and_parameters() -> None:
    key = with_pin("ctap2.1")
    cfg = config(key)
    token, protocol = cfg.pin_uv.token, cfg.pin_uv.protocol
    mac_for_6 = protocol.authenticate(token, b"\xff" * 32 + b"\x0d\x03" + encode({1: 6, 3: False}))
    request = {1: 3, 2: {1: 8, 3: False}, 3: protocol.VERSION, 4: mac_for_6}
    assert raw(key.auth, 0x0D, request) == bytes([Status.PIN_AUTH_INVALID])
    assert key.ctap.info.min_pin_length == 4


def test_set_min_pin_length_forces_a_pin_change() -> None:
    key = with_pin("ctap2.1", pin="12345")
    config(key, pin="12345").set_min_pin_length(6, rp_ids=["example.com"])
    info = key.ctap.info
    assert info.min_pin_length == 6
    assert info.force_pin_change is True  # the 5-character PIN is now too short
    assert min_pin_length_rp_ids(key.auth) == ["example.com"]
    cp = key.client_pin()
    assert status_of(cp.get_pin_token, "12345") == ERR.PIN_INVALID
    assert cp.get_pin_retries()[0] == 8  # the PIN was right; only its use is refused
    assert status_of(cp.change_pin, "12345", "54321") == ERR.PIN_POLICY_VIOLATION
    cp.change_pin("12345", "123456")
    assert key.ctap.info.force_pin_change is False
    cp.get_pin_token("123456")


def test_force_change_pin_requires_a_different_pin() -> None:
    key = with_pin("ctap2.1", pin="123456")
    config(key, pin="123456").set_min_pin_length(force_change_pin=True)
    assert key.ctap.info.force_pin_change is True
    assert key.ctap.info.min_pin_length == 4
    cp = key.client_pin()
    assert status_of(cp.change_pin, "123456", "123456") == ERR.PIN_POLICY_VIOLATION
    cp.change_pin("123456", "654321")
    cp.get_pin_token("654321")


def test_set_min_pin_length_rules() -> None:
    key = new_key("ctap2.1")
    cfg = config(key, pin=None)
    cfg.set_min_pin_length(8)  # no PIN yet: no token needed
    assert status_of(cfg.set_min_pin_length, 7) == ERR.PIN_POLICY_VIOLATION
    assert status_of(cfg.set_min_pin_length, 64) == ERR.PIN_POLICY_VIOLATION
    assert status_of(cfg.set_min_pin_length, force_change_pin=True) == ERR.PIN_NOT_SET
    too_many = [f"rp{i}.example" for i in range(5)]
    assert key.ctap.info.max_rpids_for_min_pin == 4
    assert status_of(cfg.set_min_pin_length, rp_ids=too_many) == ERR.INVALID_PARAMETER
    assert key.ctap.info.min_pin_length == 8
    assert raw(key.auth, 0x0D, {1: 3}) == bytes([Status.MISSING_PARAMETER])
    assert status_of(key.client_pin().set_pin, "1234567") == ERR.PIN_POLICY_VIOLATION
    key.client_pin().set_pin("12345678")


def test_vendor_prototype_and_unknown_subcommands() -> None:
    key = new_key("nitrokey-3")
    assert key.ctap.info.vendor_prototype_config_commands == []
    for sub in (0xFF, 0x04, 0x01):  # 0x01: no enterprise attestation on this profile
        assert raw(key.auth, 0x0D, {1: sub}) == bytes([Status.INVALID_SUBCOMMAND])
    assert raw(key.auth, 0x0D, {}) == bytes([Status.MISSING_PARAMETER])


def test_enable_enterprise_attestation_where_offered() -> None:
    key = with_pin("ctap2.1")
    assert key.ctap.info.options["ep"] is False
    config(key).enable_enterprise_attestation()
    assert key.ctap.info.options["ep"] is True
    # A preset without ep neither advertises nor accepts it.
    assert "ep" not in new_key("nitrokey-3").ctap.info.options
    custom = replace(get_profile("nitrokey-3"), enterprise_attestation=True)
    key = new_key(custom)
    assert key.ctap.info.options["ep"] is False
    config(key, pin=None).enable_enterprise_attestation()
    assert key.ctap.info.options["ep"] is True


def test_reset_forgets_the_configuration() -> None:
    key = with_pin("ctap2.1")
    cfg = config(key)
    cfg.toggle_always_uv()
    cfg.set_min_pin_length(6)
    key.ctap.reset()
    info = key.ctap.info
    assert info.options["alwaysUv"] is False
    assert info.min_pin_length == 4
    assert info.options["clientPin"] is False
