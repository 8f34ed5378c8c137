"""makeCredential / getAssertion once a PIN exists: pinUvAuthParam, the uv flag, each CTAP
version's clientPin errors, and the pinUvAuthToken usage rules of CTAP 2.1 §6.5.2.1.

The end-to-end judge is python-fido2's Fido2Client (asking for the PIN through its
UserInteraction) with Fido2Server checking the UV flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2.credman import CredentialManagement
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import FixedPresence, ScriptedPresence, Verdict
from softkey.authenticator.ctap2 import rp_id_hash
from softkey.transports.inprocess import VirtualCtapDevice

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    RP_ID,
    assertion,
    cred_id,
    make,
    new_key,
    status_of,
    with_pin,
)

MC_GA = PERM.MAKE_CREDENTIAL | PERM.GET_ASSERTION


# -- the touch probe ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1"])
@pytest.mark.parametrize("command", ["mc", "ga"])
def test_zero_length_pin_uv_auth_param_is_a_touch_probe(profile: str, command: str) -> None:
    presence = ScriptedPresence()
    key = new_key(profile, presence=presence)

    def probe():
        if command == "mc":
            return make(key, pin_uv_param=b"", pin_uv_protocol=1)
        return assertion(key, pin_uv_param=b"", pin_uv_protocol=1)

    assert status_of(probe) == ERR.PIN_NOT_SET
    assert [r.purpose for r in presence.requests] == ["select this key"]
    key.client_pin().set_pin("1234")
    assert status_of(probe) == ERR.PIN_INVALID
    assert len(presence.requests) == 2
    # Only after presence: a refused touch says so, and reveals nothing about the PIN.
    for verdict in (Verdict.DENIED, Verdict.TIMEOUT):
        key.auth.presence = FixedPresence(verdict)
        assert status_of(probe) == ERR.OPERATION_DENIED
    assert key.client_pin().get_pin_retries()[0] == 8


# -- what needs a token, per version ----------------------------------------------------------


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre"])
def test_2_0_make_credential_needs_the_pin_once_set(profile: str) -> None:
    key = new_key(profile)
    make(key)  # no PIN yet: fine
    key.client_pin().set_pin("1234")
    # CTAP2_ERR_PIN_REQUIRED (0x36) in 2.0 — the same byte 2.1 calls PUAT_REQUIRED.
    assert status_of(make, key) == 0x36
    assert status_of(make, key, rk=True) == 0x36
    token = key.client_pin().get_pin_token("1234")
    assert make(key, token, 1).auth_data.is_user_verified()


def test_2_1_make_cred_uv_not_rqd_only_for_non_discoverable() -> None:
    key = with_pin("ctap2.1")
    assert key.ctap.info.options["makeCredUvNotRqd"] is True
    att = make(key)  # non-discoverable: no token needed (makeCredUvNotRqd)
    assert att.auth_data.is_user_present() and not att.auth_data.is_user_verified()
    assert status_of(make, key, rk=True) == ERR.PUAT_REQUIRED
    assert key.auth.credentials() == []
    token = key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    assert make(key, token, rk=True).auth_data.is_user_verified()


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1"])
def test_get_assertion_without_token_has_no_uv_flag(profile: str) -> None:
    key = new_key(profile)
    cid = cred_id(make(key))
    key.client_pin().set_pin("1234")
    got = assertion(key, allow=[cid])
    assert got.auth_data.is_user_present() and not got.auth_data.is_user_verified()
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    version = cp.protocol.VERSION
    assert assertion(key, token, version, allow=[cid]).auth_data.is_user_verified()


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1"])
def test_uv_option_is_not_a_substitute_for_the_pin(profile: str) -> None:
    key = with_pin(profile)
    code = ERR.INVALID_OPTION if profile == "ctap2.1" else ERR.UNSUPPORTED_OPTION
    assert status_of(make, key, options={"uv": True}) == code


def test_pin_uv_auth_param_checks() -> None:
    key = new_key("ctap2.1")
    cdh = b"\x01" * 32
    # A pinUvAuthParam on a key without a PIN.
    assert status_of(make, key, cdh=cdh, pin_uv_param=b"\x00" * 32, pin_uv_protocol=2) == (
        ERR.PIN_NOT_SET
    )
    key.client_pin().set_pin("1234")
    token = key.client_pin().get_pin_token("1234", MC_GA, RP_ID)
    assert status_of(make, key, pin_uv_param=b"\x00" * 32, pin_uv_protocol=2) == (
        ERR.PIN_AUTH_INVALID
    )
    assert status_of(make, key, pin_uv_param=b"\x00" * 32) == ERR.MISSING_PARAMETER
    assert status_of(make, key, pin_uv_param=b"\x00" * 32, pin_uv_protocol=3) == (
        ERR.INVALID_PARAMETER
    )
    # The MAC covers the clientDataHash: one made over another hash does not verify.
    from pinkit import PROTOCOLS

    wrong = PROTOCOLS[2]().authenticate(token, b"\x02" * 32)
    assert status_of(make, key, cdh=cdh, pin_uv_param=wrong, pin_uv_protocol=2) == (
        ERR.PIN_AUTH_INVALID
    )
    assert make(key, token, 2, cdh=cdh).auth_data.is_user_verified()


def test_2_0_unknown_protocol_is_pin_auth_invalid() -> None:
    key = with_pin("ctap2.0")
    assert status_of(make, key, pin_uv_param=b"\x00" * 16, pin_uv_protocol=2) == (
        ERR.PIN_AUTH_INVALID
    )


# -- pinUvAuthToken usage rules (2.1) --------------------------------------------------------------


def test_token_permissions_and_rp_binding() -> None:
    key = with_pin("ctap2.1")
    cid = cred_id(make(key))
    cp = key.client_pin()
    mc_only = cp.get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    assert status_of(assertion, key, mc_only, allow=[cid]) == ERR.PIN_AUTH_INVALID
    other_rp = cp.get_pin_token("1234", MC_GA, "other.example")
    assert status_of(make, key, other_rp) == ERR.PIN_AUTH_INVALID
    assert status_of(assertion, key, other_rp, allow=[cid]) == ERR.PIN_AUTH_INVALID
    # Legacy getPinToken on 2.1: default permissions mc+ga, bound to the first RP used.
    legacy = cp.get_pin_token("1234")
    assert make(key, legacy).auth_data.is_user_verified()
    fresh = cp.get_pin_token("1234")
    make(key, fresh, rp="first.example")
    assert status_of(make, key, fresh, rp="second.example") == ERR.PIN_AUTH_INVALID
    # ...and without cm it cannot manage credentials.
    cm = CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234"))
    assert status_of(cm.get_metadata) == ERR.PIN_AUTH_INVALID


def test_token_is_consumed_by_presence_but_not_by_a_silent_assertion() -> None:
    key = with_pin("ctap2.1")
    cid = cred_id(make(key))
    token = key.client_pin().get_pin_token("1234", MC_GA, RP_ID)
    # up=false (a platform's pre-flight): uv, no up, and the token stays usable.
    silent = assertion(key, token, allow=[cid], options={"up": False})
    assert silent.auth_data.is_user_verified() and not silent.auth_data.is_user_present()
    got = assertion(key, token, allow=[cid])
    assert got.auth_data.is_user_verified() and got.auth_data.is_user_present()
    # Used for a presence-checked operation: mc and ga permissions are gone.
    assert status_of(assertion, key, token, allow=[cid]) == ERR.PIN_AUTH_INVALID
    assert status_of(make, key, token) == ERR.PIN_AUTH_INVALID

    token = key.client_pin().get_pin_token("1234", MC_GA, RP_ID)
    make(key, token)
    assert status_of(make, key, token) == ERR.PIN_AUTH_INVALID


def test_presence_clears_every_permission_but_lbw() -> None:
    key = with_pin("ctap2.1")
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.MAKE_CREDENTIAL | PERM.CREDENTIAL_MGMT, RP_ID)
    cm = CredentialManagement(key.ctap, cp.protocol, token)
    # Credential management does not use the token up...
    assert cm.enumerate_creds(rp_id_hash(RP_ID)) == []
    assert cm.enumerate_creds(rp_id_hash(RP_ID)) == []
    # ...but a makeCredential that collects presence takes cm away together with mc.
    make(key, token, rk=True)
    assert status_of(cm.enumerate_creds_begin, rp_id_hash(RP_ID)) == ERR.PIN_AUTH_INVALID


def test_refused_presence_does_not_consume_the_token() -> None:
    key = with_pin("ctap2.1", presence=ScriptedPresence([Verdict.DENIED]))
    token = key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    # The first touch is refused; the spec clears the token only once presence is given.
    assert status_of(make, key, token) == ERR.OPERATION_DENIED
    assert make(key, token).auth_data.is_user_verified()


def test_token_expiry_follows_the_clock() -> None:
    key = with_pin("ctap2.1")
    cid = cred_id(make(key))
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    key.clock.advance(31)  # not used within the initial usage time limit
    assert status_of(assertion, key, token, allow=[cid], options={"up": False}) == (
        ERR.PIN_AUTH_INVALID
    )

    token = cp.get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    for _ in range(20):  # used in time: it lives on, up to the 10-minute maximum
        key.clock.advance(29)
        assertion(key, token, allow=[cid], options={"up": False})
    key.clock.advance(21)  # 601 s after it was issued
    assert status_of(assertion, key, token, allow=[cid], options={"up": False}) == (
        ERR.PIN_AUTH_INVALID
    )


def test_2_0_token_is_not_consumed_and_does_not_expire() -> None:
    key = with_pin("ctap2.0")
    token = key.client_pin().get_pin_token("1234")
    for _ in range(3):
        key.clock.advance(3600)
        assert make(key, token, 1).auth_data.is_user_verified()


# -- end to end: Fido2Client asks for the PIN, Fido2Server checks the UV flag ------------------


class _PinEntry(UserInteraction):
    def __init__(self, pin: str) -> None:
        self.pin = pin
        self.asked = 0

    def request_pin(self, permissions, rp_id):  # type: ignore[override]
        self.asked += 1
        return self.pin


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1"])
@pytest.mark.parametrize("resident", [False, True])
def test_fido2_client_with_pin_and_uv_required(profile: str, resident: bool) -> None:
    key = with_pin(profile, pin="4321")
    entry = _PinEntry("4321")
    client = Fido2Client(
        VirtualCtapDevice(key.auth), DefaultClientDataCollector("https://example.com"), entry
    )
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Example"))
    user = PublicKeyCredentialUserEntity(id=b"user-1", name="alice", display_name="Alice")

    options, state = server.register_begin(
        user,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    registration = client.make_credential(options.public_key)
    # register_complete raises unless the UV flag is set (user_verification=required).
    auth_data = server.register_complete(state, registration)
    assert auth_data.is_user_verified()
    credential = auth_data.credential_data

    request, state = server.authenticate_begin(
        None if resident else [credential], user_verification=UserVerificationRequirement.REQUIRED
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    assert response.response.authenticator_data.is_user_verified()
    if resident:
        assert response.response.user_handle == b"user-1"
    assert entry.asked == 2
    assert key.client_pin().get_pin_retries()[0] == 8


def test_fido2_client_with_a_wrong_pin_reports_it() -> None:
    key = with_pin("ctap2.1", pin="4321")
    client = Fido2Client(
        VirtualCtapDevice(key.auth),
        DefaultClientDataCollector("https://example.com"),
        _PinEntry("0000"),
    )
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Example"))
    options, _ = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="U"),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    from fido2.client import ClientError

    with pytest.raises(ClientError) as exc:
        client.make_credential(options.public_key)
    assert exc.value.cause.code == ERR.PIN_INVALID
    assert key.client_pin().get_pin_retries()[0] == 7
