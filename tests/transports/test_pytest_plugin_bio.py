"""The pytest plugin with a fingerprint key, as a relying party's test suite uses it.

The RP under test is python-fido2's ``Fido2Server`` or py_webauthn; the key is the ``softkey``
fixture on the yubikey-bio preset with ``enrolled=True``. UV-required ceremonies pass through
the sensor with no PIN entry (the fixture is given no PIN to type), fail with
``set_user_verified(False)``, count uvRetries down as CTAP 2.1 says, and fall back to the PIN
once the sensor is blocked.
"""

from __future__ import annotations

import json

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import (
    AuthenticatorData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

REQUIRED = UserVerificationRequirement.REQUIRED
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
BIO = pytest.mark.softkey(profile="yubikey-bio", enrolled=True)


def _register(softkey, server: Fido2Server):
    options, state = server.register_begin(
        ALICE, resident_key_requirement=ResidentKeyRequirement.REQUIRED, user_verification=REQUIRED
    )
    return server.register_complete(state, softkey.create(options)).credential_data


def _log_in(softkey, server: Fido2Server, credential) -> AuthenticatorData:
    options, state = server.authenticate_begin([credential], user_verification=REQUIRED)
    response = softkey.get(options)
    server.authenticate_complete(state, [credential], response)  # raises unless UV is set
    raw = response["response"]["authenticatorData"]
    return AuthenticatorData(websafe_decode(raw))


def _uv_retries(softkey) -> int:
    return ClientPin(softkey.ctap2).get_uv_retries()


def _ctap_code(error: ClientError) -> int:
    assert isinstance(error.cause, CtapError), error
    return error.cause.code


@BIO
def test_uv_required_login_through_the_sensor_with_no_pin(softkey) -> None:
    server = Fido2Server(RP)
    softkey.pin = None  # the client has no PIN to give: only the finger can verify
    softkey.set_user_verified(True)
    credential = _register(softkey, server)
    data = _log_in(softkey, server, credential)
    assert data.is_user_verified() and data.is_user_present()
    assert softkey.presence_requests == []  # the finger on the sensor was the touch
    purposes = [r.purpose for r in softkey.uv_requests]
    assert purposes == ["fingerprint for makeCredential", "fingerprint for getAssertion"]
    info = softkey.ctap2.info
    assert info.options["uv"] is True and info.options["bioEnroll"] is True


@BIO
def test_a_failing_finger_is_uv_invalid_and_counts_down_then_the_pin_takes_over(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)
    pin, softkey.pin = softkey.pin, None
    softkey.set_user_verified(False)
    for left in (2, 1):
        with pytest.raises(ClientError) as failed:
            _log_in(softkey, server, credential)
        assert _ctap_code(failed.value) == CtapError.ERR.UV_INVALID
        assert "set_user_verified" in str(failed.value)
        assert _uv_retries(softkey) == left
    # The third failure blocks the sensor (UV_BLOCKED): python-fido2 falls back to the PIN,
    # which this client does not have ...
    with pytest.raises(ClientError) as blocked:
        _log_in(softkey, server, credential)
    assert "PIN" in str(blocked.value)
    assert _uv_retries(softkey) == 0
    # ... and with it, the login passes (UV by PIN) and the sensor works again.
    softkey.pin = pin
    data = _log_in(softkey, server, credential)
    assert data.is_user_verified()
    assert _uv_retries(softkey) == 3
    softkey.set_user_verified(True)
    softkey.pin = None
    assert _log_in(softkey, server, credential).is_user_verified()


@BIO
def test_next_uv_verdicts_script_one_check_each(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)
    softkey.next_uv_verdicts("fail", "timeout")
    with pytest.raises(ClientError) as failed:
        _log_in(softkey, server, credential)
    assert _ctap_code(failed.value) == CtapError.ERR.UV_INVALID
    with pytest.raises(ClientError) as timed_out:
        _log_in(softkey, server, credential)
    assert _ctap_code(timed_out.value) == CtapError.ERR.USER_ACTION_TIMEOUT
    assert _uv_retries(softkey) == 2  # a timeout costs no retry
    assert _log_in(softkey, server, credential).is_user_verified()  # back to the default
    assert _uv_retries(softkey) == 3
    with pytest.raises(ValueError, match="approve"):
        softkey.next_uv_verdicts("deny")  # presence words are not fingerprint verdicts


def test_enrolled_factory_key_with_its_own_pin_and_a_second_finger(softkey_factory) -> None:
    key = softkey_factory(profile="yubikey-bio", enrolled=True, pin="24680")
    assert key.pin == "24680"
    assert ClientPin(key.ctap2).get_pin_retries()[0] == 8
    key.enroll_finger("left index")
    templates = key.authenticator.pin_uv.builtin.templates()
    assert [t.name for t in templates] == ["finger 1", "left index"]
    plain = softkey_factory(profile="yubikey-bio")
    assert plain.ctap2.info.options["uv"] is False and plain.pin is None


def test_enrolled_needs_a_sensor_and_set_user_verified_too(softkey_factory) -> None:
    with pytest.raises(ValueError, match="fingerprint sensor"):
        softkey_factory(profile="ctap2.1", enrolled=True)
    key = softkey_factory(profile="ctap2.1")
    with pytest.raises(ValueError, match="yubikey-bio"):
        key.set_user_verified(True)


@BIO
def test_py_webauthn_requires_uv_and_gets_it_from_the_sensor(softkey) -> None:
    webauthn = pytest.importorskip("webauthn")
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    softkey.pin = None
    origin, rp_id = softkey.origin, softkey.rp_id
    options = webauthn.generate_registration_options(
        rp_id=rp_id,
        rp_name="Example",
        user_name="alice",
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
    )
    credential = softkey.create(webauthn.options_to_json(options))
    verified = webauthn.verify_registration_response(
        credential=credential,
        expected_challenge=options.challenge,
        expected_rp_id=rp_id,
        expected_origin=origin,
        require_user_verification=True,
    )
    request = webauthn.generate_authentication_options(
        rp_id=rp_id, user_verification=UserVerificationRequirement.REQUIRED
    )
    assertion = softkey.get(json.loads(webauthn.options_to_json(request)))
    result = webauthn.verify_authentication_response(
        credential=assertion,
        expected_challenge=request.challenge,
        expected_rp_id=rp_id,
        expected_origin=origin,
        credential_public_key=verified.credential_public_key,
        credential_current_sign_count=verified.sign_count,
        require_user_verification=True,
    )
    assert result.user_verified is True
