"""The fixture's client as relying-party stacks use it: py_webauthn JSON in and out (judged by
py_webauthn's own verify_* functions), Fido2Server, and errors that name their cause."""

from __future__ import annotations

import json

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
)
from webauthn.helpers.structs import UserVerificationRequirement as UV

from softkey.transports.rp_client import ExplainedClientError, creation_options, request_options

RP_ID = "example.com"
ORIGIN = "https://example.com"


def _register_with_py_webauthn(softkey, uv: UV | None = None, resident: bool = False):
    selection = None
    if uv is not None or resident:
        selection = AuthenticatorSelectionCriteria(
            user_verification=uv or UV.PREFERRED,
            resident_key=ResidentKeyRequirement.REQUIRED if resident else None,
        )
    options = generate_registration_options(
        rp_id=RP_ID, rp_name="Example", user_name="alice", authenticator_selection=selection
    )
    credential = softkey.create(options_to_json(options))
    return options, verify_registration_response(
        credential=credential,
        expected_challenge=options.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        require_user_verification=uv == UV.REQUIRED,
    )


def _log_in_with_py_webauthn(softkey, registered, uv: UV = UV.PREFERRED, allow: bool = True):
    options = generate_authentication_options(
        rp_id=RP_ID,
        allow_credentials=[PublicKeyCredentialDescriptor(id=registered.credential_id)]
        if allow
        else [],
        user_verification=uv,
    )
    return verify_authentication_response(
        credential=softkey.get(options_to_json(options)),
        expected_challenge=options.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=registered.credential_public_key,
        credential_current_sign_count=registered.sign_count,
        require_user_verification=uv == UV.REQUIRED,
    )


# -- py_webauthn, its default options --------------------------------------------------------------


@pytest.mark.softkey(pin="1234")
def test_py_webauthn_default_options_register_and_log_in_on_a_key_with_a_pin(softkey) -> None:
    options, registered = _register_with_py_webauthn(softkey)  # UV "preferred" (the default)
    assert registered.user_verified
    login = _log_in_with_py_webauthn(softkey, registered)
    assert login.user_verified and login.credential_id == registered.credential_id


@pytest.mark.softkey(pin="1234")
def test_py_webauthn_uv_required_usernameless(softkey) -> None:
    _, registered = _register_with_py_webauthn(softkey, uv=UV.REQUIRED, resident=True)
    login = _log_in_with_py_webauthn(softkey, registered, uv=UV.REQUIRED, allow=False)
    assert login.user_verified and login.credential_id == registered.credential_id


def test_default_options_without_a_pin_say_how_to_give_the_fixture_one(softkey) -> None:
    options = generate_registration_options(rp_id=RP_ID, rp_name="Example", user_name="alice")
    with pytest.raises(ClientError) as excinfo:
        softkey.create(options_to_json(options))
    error = excinfo.value
    assert isinstance(error, ExplainedClientError)
    assert error.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED  # python-fido2's code kept
    assert "has none" in str(error) and "pytest.mark.softkey(pin=" in str(error)


@pytest.mark.softkey(pin="1234")
def test_discouraged_uv_on_a_key_with_a_pin_is_not_verified(softkey) -> None:
    # The judge must be able to tell: without UV the UV flag is clear and "required" fails.
    _, registered = _register_with_py_webauthn(softkey, uv=UV.DISCOURAGED)
    assert not registered.user_verified


def test_a_key_whose_pin_the_client_does_not_know(softkey) -> None:
    softkey.set_pin("1234")
    softkey.pin = None  # e.g. a template key with a PIN, and no pin= given to the fixture
    options = generate_registration_options(rp_id=RP_ID, rp_name="Example", user_name="alice")
    with pytest.raises(ClientError) as excinfo:
        softkey.create(options_to_json(options))
    assert "the key has a PIN" in str(excinfo.value) and "pin=" in str(excinfo.value)


# -- Fido2Server through the same JSON helpers --------------------------------------------------


@pytest.mark.softkey(pin="1234")
def test_fido2server_takes_the_json_the_helpers_return(softkey) -> None:
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Example"))
    user = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
    options, state = server.register_begin(
        user, user_verification=UserVerificationRequirement.REQUIRED
    )
    registration = softkey.create(options)
    json.dumps(registration)  # plain JSON, as a browser would POST it
    auth_data = server.register_complete(state, registration)
    assert auth_data.is_user_verified()

    request, state = server.authenticate_begin([auth_data.credential_data])
    assertion = softkey.get(request)
    result = server.authenticate_complete(state, [auth_data.credential_data], assertion)
    assert result.credential_id == auth_data.credential_data.credential_id


# -- errors that say what happened --------------------------------------------------------------


@pytest.mark.softkey(profile="nitrokey-3")
def test_key_store_full_is_named_with_its_capacity(softkey) -> None:
    def options_for(user: str) -> str:
        return options_to_json(
            generate_registration_options(
                rp_id=RP_ID,
                rp_name="Example",
                user_name=user,
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.REQUIRED,
                    user_verification=UV.DISCOURAGED,
                ),
            )
        )

    for i in range(10):
        softkey.create(options_for(f"user{i}"))
    with pytest.raises(ClientError) as excinfo:
        softkey.create(options_for("one-too-many"))
    error = excinfo.value
    assert error.cause.code == CtapError.ERR.KEY_STORE_FULL  # python-fido2's fields kept
    assert str(error).startswith("KEY_STORE_FULL: all 10 discoverable-credential slots")
    assert "nitrokey-3" in str(error)
    assert len(softkey.credentials()) == 10


# -- the signature counter and python-fido2's pre-flight ----------------------------------------


@pytest.mark.softkey(pin="1234")
def test_first_login_counts_the_clients_silent_preflight(softkey) -> None:
    # CTAP 2.1 §6.2.2 increments the counter on every getAssertion, up=false included; with an
    # allowList python-fido2 first asks silently which ID is on the key (Fido2Client
    # _filter_creds), so the first login reports 2. A raw getAssertion reports one step.
    _, registered = _register_with_py_webauthn(softkey)
    assert registered.sign_count == 0
    assert _log_in_with_py_webauthn(softkey, registered).new_sign_count == 2
    raw = softkey.ctap2.get_assertion(
        RP_ID, b"\0" * 32, [{"type": "public-key", "id": registered.credential_id}]
    )
    assert raw.auth_data.counter == 3


# -- option shapes -----------------------------------------------------------------------------


def test_every_options_shape_an_rp_test_has_at_hand() -> None:
    options = generate_registration_options(rp_id=RP_ID, rp_name="Example", user_name="alice")
    text = options_to_json(options)
    shapes = [text, text.encode(), json.loads(text), {"publicKey": json.loads(text)}]
    parsed = [creation_options(shape) for shape in shapes]
    assert all(p == parsed[0] for p in parsed)
    assert parsed[0].challenge == options.challenge and parsed[0].rp.id == RP_ID
    assert creation_options(parsed[0]) is parsed[0]

    request = generate_authentication_options(rp_id=RP_ID)
    assert request_options(options_to_json(request)).challenge == request.challenge


def test_unreadable_options_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        creation_options(42)
    with pytest.raises(TypeError):
        request_options(None)
