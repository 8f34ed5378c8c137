"""Built-in user verification on the yubikey-bio preset: a fingerprint sensor.

The platform is python-fido2 2.2.1 throughout (ClientPin, FPBioEnrollment, Ctap2): it
enrolls through its own capture loop, asks for tokens with getPinUvAuthTokenUsingUv
(clientPIN 0x06) and reads getUVRetries (0x07), so a pass means an independent client
agrees with the device. Fingerprint outcomes are scripted with ``ScriptedVerifier`` and
presence with ``ScriptedPresence``, both recording what the key asked.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from fido2.ctap2 import ClientPin, Ctap2
from fido2.ctap2.bio import BioEnrollment, CaptureError, FPBioEnrollment
from fido2.webauthn import AuthenticatorData

from softkey.authenticator import Authenticator, FakeClock, ScriptedPresence, Verdict
from softkey.authenticator.builtin_uv import ScriptedVerifier
from softkey.authenticator.ctap import InfoKey
from softkey.authenticator.ctap2 import get_info
from softkey.authenticator.profiles import get_profile
from softkey.transports.inprocess import VirtualCtapDevice

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import ERR, ES256, PERM, RP_ID, status_of  # noqa: E402

PIN = "123456"
FEEDBACK = FPBioEnrollment.FEEDBACK
A, D, T = Verdict.APPROVED, Verdict.DENIED, Verdict.TIMEOUT


class BioKey:
    """A yubikey-bio key, its scripted finger and person, and a python-fido2 platform."""

    def __init__(self, profile: str = "yubikey-bio", state: Path | None = None) -> None:
        self.verifier = ScriptedVerifier(default=Verdict.APPROVED)
        # Presence is declined unless a test says otherwise: a passing UV ceremony shows the
        # finger on the sensor was the touch.
        self.presence = ScriptedPresence(default=Verdict.DENIED)
        self.clock = FakeClock()
        self.auth = Authenticator(
            profile, state, presence=self.presence, clock=self.clock, verifier=self.verifier
        )

    @property
    def ctap(self) -> Ctap2:
        return Ctap2(VirtualCtapDevice(self.auth))  # a fresh getInfo each time

    def client_pin(self) -> ClientPin:
        return ClientPin(self.ctap)

    def options(self) -> dict:
        return dict(self.ctap.info.options)

    def bio(self, permissions: int = PERM.BIO_ENROLL) -> FPBioEnrollment:
        client_pin = self.client_pin()
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION(permissions))
        return FPBioEnrollment(self.ctap, client_pin.protocol, token)

    def enroll(self, name: str | None = None) -> bytes:
        bio = self.bio()
        context = bio.enroll()
        template_id = None
        while template_id is None:
            template_id = context.capture()
        if name:
            bio.set_name(template_id, name)
        return template_id

    def set_pin(self) -> BioKey:
        self.client_pin().set_pin(PIN)
        return self

    def uv_token(self, permissions: int = PERM.GET_ASSERTION, rp_id: str | None = RP_ID):
        return self.client_pin().get_uv_token(ClientPin.PERMISSION(permissions), rp_id)


def enrolled_key(**kw) -> BioKey:
    key = BioKey(**kw).set_pin()
    key.enroll("thumb")
    key.verifier.requests.clear()
    return key


def make_credential(key: BioKey, **kw):
    return key.ctap.make_credential(
        hashlib.sha256(os.urandom(8)).digest(),
        {"id": RP_ID, "name": "Example"},
        {"id": b"user-1", "name": "alice"},
        ES256,
        **kw,
    )


# -- the preset and getInfo -----------------------------------------------------------------------


def test_the_preset_is_a_2_1_key_with_a_sensor_and_an_aaguid_of_our_own() -> None:
    profile = get_profile("yubikey-bio")
    assert profile.ctap == "2.1" and profile.rk_capacity == 25
    assert profile.bio is not None and profile.bio.max_uv_retries == 3
    info = BioKey().ctap.info
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"]
    # Made like every other preset's (profiles._aaguid), not a real vendor's AAGUID.
    yubico_bio = {"d8522d9f-575b-4866-88a9-ba99fa02f35b", "dd86a2da-86a0-4cbe-b462-4bd31f57bc6f"}
    assert str(info.aaguid) not in yubico_bio
    assert info.aaguid == get_profile("yubikey-bio").aaguid
    assert info.uv_modality == 0x02  # USER_VERIFY_FINGERPRINT_INTERNAL
    assert info.preferred_platform_uv_attempts == 3


def test_get_info_options_flip_as_fingers_are_enrolled_and_removed() -> None:
    key = BioKey()
    options = key.options()
    assert options["uv"] is False and options["bioEnroll"] is False
    assert options["userVerificationMgmtPreview"] is False
    assert options["uvBioEnroll"] is True and options["pinUvAuthToken"] is True
    assert BioEnrollment.is_supported(key.ctap.info)
    key.set_pin()
    template = key.enroll()
    options = key.options()
    assert options["uv"] is True and options["bioEnroll"] is True
    assert options["userVerificationMgmtPreview"] is True
    key.bio().remove_enrollment(template)
    assert key.options()["uv"] is False and key.options()["bioEnroll"] is False


def test_a_key_without_a_sensor_has_none_of_it() -> None:
    key = BioKey("ctap2.1")
    info = key.ctap.info
    assert "uv" not in info.options and "bioEnroll" not in info.options
    raw = get_info(key.auth)
    assert InfoKey.UV_MODALITY not in raw and InfoKey.PREFERRED_PLATFORM_UV_ATTEMPTS not in raw
    for command in (0x09, 0x40):
        assert status_of(key.ctap.send_cbor, command, {6: True}) == ERR.INVALID_COMMAND
    key.set_pin()
    client_pin = key.client_pin()
    assert status_of(client_pin.get_uv_retries) == ERR.INVALID_SUBCOMMAND
    assert status_of(client_pin.get_uv_token, PERM.GET_ASSERTION, RP_ID) == ERR.INVALID_SUBCOMMAND
    # The "uv" option on a key with no built-in UV: INVALID_OPTION (CTAP 2.1 §6.1.2 step 5).
    assert status_of(make_credential, key, options={"uv": True}) == ERR.INVALID_OPTION


# -- authenticatorBioEnrollment with python-fido2's FPBioEnrollment -------------------------------


def test_enroll_through_the_capture_loop_then_enumerate_rename_and_remove() -> None:
    key = BioKey().set_pin()
    bio = key.bio()
    assert bio.get_modality() == BioEnrollment.MODALITY.FINGERPRINT
    sensor = bio.get_fingerprint_sensor_info()
    assert sensor == {1: 1, 2: 1, 3: 4, 8: 15}  # fingerprint, touch sensor, 4 samples, 15 bytes
    assert bio.enumerate_enrollments() == {}  # INVALID_OPTION: nothing enrolled yet

    context = bio.enroll()
    remaining = []
    template_id = None
    while template_id is None:
        template_id = context.capture()
        remaining.append(context.remaining)
    assert remaining == [3, 2, 1, 0]
    assert [r.purpose for r in key.verifier.requests] == [
        f"enroll a fingerprint (sample {n} of 4)" for n in (1, 2, 3, 4)
    ]
    assert bio.enumerate_enrollments() == {template_id: ""}

    bio.set_name(template_id, "right thumb")
    second = key.enroll("left index")
    bio = key.bio()  # the token from before the second enrollment was replaced
    assert bio.enumerate_enrollments() == {template_id: "right thumb", second: "left index"}
    bio.remove_enrollment(template_id)
    assert bio.enumerate_enrollments() == {second: "left index"}
    bio.remove_enrollment(second)
    assert bio.enumerate_enrollments() == {}


def test_sample_feedback_follows_the_verifier() -> None:
    key = BioKey().set_pin()
    key.verifier.verdicts = [A, D, T, A, A, A]
    context = key.bio().enroll()
    assert context.capture() is None and context.remaining == 3
    with pytest.raises(CaptureError) as poor:
        context.capture()
    assert poor.value.code == FEEDBACK.FP_POOR_QUALITY and context.remaining == 3
    with pytest.raises(CaptureError) as idle:
        context.capture()
    assert idle.value.code == FEEDBACK.NO_USER_ACTIVITY and context.remaining == 3
    assert context.capture() is None and context.remaining == 2
    assert context.capture() is None
    template_id = context.capture()
    assert template_id is not None and context.remaining == 0
    assert key.options()["bioEnroll"] is True


def test_a_cancelled_enrollment_enrolls_nothing() -> None:
    key = BioKey().set_pin()
    bio = key.bio()
    context = bio.enroll()
    context.capture()
    context.cancel()
    assert bio.enumerate_enrollments() == {}
    # The enrollment is gone: continuing it is refused.
    assert status_of(bio.enroll_capture_next, b"\x00\x01") == ERR.NOT_ALLOWED


def test_any_other_command_ends_an_enrollment_in_progress() -> None:
    key = BioKey().set_pin()
    bio = key.bio()
    template_id, _, _ = bio.enroll_begin()
    key.ctap.get_info()  # any other command
    assert status_of(bio.enroll_capture_next, template_id) == ERR.NOT_ALLOWED
    template_id, _, _ = bio.enroll_begin()
    assert status_of(bio.enroll_capture_next, b"\xff\xff") == ERR.INVALID_OPTION


def test_enrolling_needs_a_pin_and_a_token_with_be() -> None:
    key = BioKey()
    bio_cmd = 0x09
    # No token at all: PUAT_REQUIRED; no PIN set: PIN_NOT_SET (real bio keys need a PIN first).
    assert status_of(key.ctap.send_cbor, bio_cmd, {1: 1, 2: 1}) == ERR.PUAT_REQUIRED
    assert status_of(key.ctap.send_cbor, bio_cmd, {1: 1, 2: 1, 4: 2, 5: b"\0" * 32}) == (
        ERR.PIN_NOT_SET
    )
    key.set_pin()
    no_be = key.bio(PERM.CREDENTIAL_MGMT | PERM.LARGE_BLOB_WRITE)
    assert status_of(no_be.enroll_begin) == ERR.PIN_AUTH_INVALID
    assert status_of(no_be.enumerate_enrollments) == ERR.PIN_AUTH_INVALID
    # Sensor info needs no token (python-fido2 calls it without one).
    assert FPBioEnrollment(key.ctap, None, None).get_fingerprint_sensor_info()[3] == 4


def test_the_preview_command_takes_a_get_pin_token_token_and_0x09_does_not() -> None:
    key = BioKey().set_pin()
    client_pin = key.client_pin()
    legacy = client_pin.get_pin_token(PIN)  # getPinToken (0x05): mc and ga only
    ctap = key.ctap
    message = bytes([1, 4])  # modality || enumerateEnrollments
    param = client_pin.protocol.authenticate(legacy, message)
    request = {1: 1, 2: 4, 4: client_pin.protocol.VERSION, 5: param}
    assert status_of(ctap.send_cbor, 0x09, request) == ERR.PIN_AUTH_INVALID
    assert status_of(ctap.send_cbor, 0x40, request) == ERR.INVALID_OPTION  # accepted: none
    assert ctap.send_cbor(0x40, {6: True}) == {1: 1}  # getModality on the prototype


def test_a_full_sensor_and_bad_template_ids_and_names() -> None:
    key = BioKey().set_pin()
    for n in range(5):
        key.enroll(f"finger {n}")
    bio = key.bio()
    assert status_of(bio.enroll_begin) == ERR.FP_DATABASE_FULL
    assert status_of(bio.remove_enrollment, b"\x12\x34\x56") == ERR.INVALID_OPTION
    assert status_of(bio.set_name, b"\x12\x34\x56", "x") == ERR.INVALID_OPTION
    first = next(iter(bio.enumerate_enrollments()))
    assert status_of(bio.set_name, first, "a" * 16) == ERR.INVALID_PARAMETER  # 15 bytes at most
    bio.set_name(first, "a" * 15)
    assert bio.enumerate_enrollments()[first] == "a" * 15


def test_malformed_bio_requests_get_spec_codes() -> None:
    ctap = BioKey().set_pin().ctap
    assert status_of(ctap.send_cbor, 0x09, {}) == ERR.MISSING_PARAMETER
    assert status_of(ctap.send_cbor, 0x09, {2: 7}) == ERR.MISSING_PARAMETER  # no modality
    assert status_of(ctap.send_cbor, 0x09, {1: 2, 2: 7}) == ERR.INVALID_PARAMETER
    assert status_of(ctap.send_cbor, 0x09, {1: 1, 2: 0x20}) == ERR.INVALID_SUBCOMMAND
    assert status_of(ctap.send_cbor, 0x09, {1: "1", 2: 7}) == ERR.CBOR_UNEXPECTED_TYPE
    assert status_of(ctap.send_cbor, 0x09, {1: 1, 2: 7, 3: {3: "soon"}}) == (
        ERR.CBOR_UNEXPECTED_TYPE
    )


# -- clientPIN 0x06 / 0x07 ------------------------------------------------------------------------


def _assert_uv_and_up(response) -> None:
    data = response.auth_data
    assert data.flags & AuthenticatorData.FLAG.UV and data.flags & AuthenticatorData.FLAG.UP


def test_a_token_from_the_fingerprint_signs_in_with_uv_and_no_touch() -> None:
    key = enrolled_key()
    cred = make_credential(key, options={"rk": True, "uv": True})
    _assert_uv_and_up(cred)
    token = key.uv_token(PERM.GET_ASSERTION)
    client_pin = key.client_pin()
    client_data_hash = os.urandom(32)
    # A new ClientPin has a new shared secret, but the token is what authenticates.
    assertion = key.ctap.get_assertion(
        RP_ID,
        client_data_hash,
        pin_uv_param=client_pin.protocol.authenticate(token, client_data_hash),
        pin_uv_protocol=client_pin.protocol.VERSION,
    )
    _assert_uv_and_up(assertion)
    assert key.presence.requests == []  # presence is declined: the finger was the touch
    assert [r.purpose for r in key.verifier.requests] == [
        "fingerprint for makeCredential",
        "fingerprint for getAssertion",
    ]


def test_a_failing_finger_counts_uv_retries_down_then_the_pin_unblocks_it() -> None:
    key = enrolled_key()
    client_pin = key.client_pin()
    assert client_pin.get_uv_retries() == 3
    key.verifier.default = Verdict.DENIED
    assert status_of(key.uv_token) == ERR.UV_INVALID
    assert client_pin.get_uv_retries() == 2
    assert status_of(key.uv_token) == ERR.UV_INVALID
    assert client_pin.get_uv_retries() == 1
    assert status_of(key.uv_token) == ERR.UV_BLOCKED  # the last retry blocks the sensor
    assert client_pin.get_uv_retries() == 0
    asked = len(key.verifier.requests)
    key.verifier.default = Verdict.APPROVED
    assert status_of(key.uv_token) == ERR.UV_BLOCKED  # at once, the finger is not asked
    assert status_of(make_credential, key, options={"uv": True}) == ERR.UV_BLOCKED
    assert len(key.verifier.requests) == asked
    client_pin.get_pin_token(PIN, PERM.GET_ASSERTION, RP_ID)  # the PIN fallback
    assert client_pin.get_uv_retries() == 3
    assert len(key.uv_token()) == 32


def test_a_match_restores_uv_retries_and_a_timeout_costs_none() -> None:
    key = enrolled_key()
    key.verifier.verdicts = [D, T, A]
    assert status_of(key.uv_token) == ERR.UV_INVALID
    assert status_of(key.uv_token) == ERR.USER_ACTION_TIMEOUT
    assert key.client_pin().get_uv_retries() == 2
    key.uv_token()
    assert key.client_pin().get_uv_retries() == 3


def test_uv_tokens_need_an_enrolled_finger_and_allowed_permissions() -> None:
    key = BioKey().set_pin()
    assert status_of(key.uv_token) == ERR.NOT_ALLOWED  # uv is false: nothing enrolled
    key.enroll()
    assert status_of(key.uv_token, PERM.AUTHENTICATOR_CFG, None) == ERR.UNAUTHORIZED_PERMISSION
    assert status_of(key.uv_token, 0, None) == ERR.INVALID_PARAMETER
    assert status_of(key.uv_token, PERM.GET_ASSERTION, None) == ERR.MISSING_PARAMETER
    # uvBioEnroll: a be token may come from the finger, and enrolls the next one.
    client_pin = key.client_pin()
    token = client_pin.get_uv_token(PERM.BIO_ENROLL)
    bio = FPBioEnrollment(key.ctap, client_pin.protocol, token)
    assert len(bio.enumerate_enrollments()) == 1


# -- the "uv" option of makeCredential / getAssertion ---------------------------------------------


def test_the_uv_option_uses_the_sensor_for_both_commands() -> None:
    key = enrolled_key()
    cred = make_credential(key, options={"uv": True, "rk": True})
    _assert_uv_and_up(cred)
    assertion = key.ctap.get_assertion(RP_ID, os.urandom(32), options={"uv": True})
    _assert_uv_and_up(assertion)
    assert assertion.user["name"] == "alice"  # identifiable user data only after UV
    silent = key.ctap.get_assertion(RP_ID, os.urandom(32), options={"uv": True, "up": False})
    assert silent.auth_data.flags & AuthenticatorData.FLAG.UV
    assert not silent.auth_data.flags & AuthenticatorData.FLAG.UP
    assert key.presence.requests == []


def test_the_uv_option_fails_like_the_token_path() -> None:
    key = enrolled_key()
    key.verifier.verdicts = [D, T]
    assert status_of(make_credential, key, options={"uv": True}) == ERR.UV_INVALID
    assert status_of(key.ctap.get_assertion, RP_ID, os.urandom(32), options={"uv": True}) == (
        ERR.USER_ACTION_TIMEOUT
    )
    assert key.client_pin().get_uv_retries() == 2
    empty = BioKey().set_pin()
    assert status_of(make_credential, empty, options={"uv": True}) == ERR.INVALID_OPTION


def test_always_uv_uses_the_sensor_when_no_uv_is_asked_for() -> None:
    key = enrolled_key()
    config_token = key.client_pin().get_pin_token(PIN, PERM.AUTHENTICATOR_CFG)
    from fido2.ctap2.config import Config

    client_pin = key.client_pin()
    Config(key.ctap, client_pin.protocol, config_token).toggle_always_uv()
    assert key.options()["alwaysUv"] is True
    cred = make_credential(key)  # neither uv nor a pinUvAuthParam
    _assert_uv_and_up(cred)
    assert key.verifier.requests[-1].purpose == "fingerprint for makeCredential"


# -- state -----------------------------------------------------------------------------------------


def test_enrollments_and_uv_retries_persist_and_reset_wipes_them(tmp_path: Path) -> None:
    state = tmp_path / "bio.sqlite3"
    key = enrolled_key(state=state)
    key.verifier.default = Verdict.DENIED
    status_of(key.uv_token)
    key.auth.power_cycle()
    assert key.client_pin().get_uv_retries() == 2  # a power cycle does not refill them
    key.auth.close()
    again = BioKey(state=state)
    assert again.client_pin().get_uv_retries() == 2
    assert again.options()["bioEnroll"] is True
    assert again.auth.pin_status()["uv_retries"] == 2
    again.auth.factory_reset()
    assert again.options()["bioEnroll"] is False and again.options()["clientPin"] is False
    assert again.client_pin().get_uv_retries() == 3
    again.auth.close()
