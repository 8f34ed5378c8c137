"""Independent judges: python-fido2's Fido2Client + Fido2Server and py_webauthn.

Registration and login for non-resident and resident credentials must verify with both
relying-party libraries, not only with our own code.
"""

from __future__ import annotations

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn import verify_authentication_response, verify_registration_response

from softkey.authenticator import Authenticator
from softkey.transports.inprocess import VirtualCtapDevice

ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")


def _client(auth: Authenticator) -> Fido2Client:
    return Fido2Client(VirtualCtapDevice(auth), DefaultClientDataCollector(ORIGIN))


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1"])
@pytest.mark.parametrize("resident", [False, True])
def test_register_and_login_verify_with_fido2_server(profile: str, resident: bool) -> None:
    auth = Authenticator(profile)
    client = _client(auth)
    server = Fido2Server(RP, attestation="direct")
    user = PublicKeyCredentialUserEntity(id=b"user-1", name="alice", display_name="Alice")

    options, state = server.register_begin(
        user,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, registration)
    credential = auth_data.credential_data
    assert credential is not None
    assert auth_data.is_user_present()
    assert credential.aaguid == auth.profile.aaguid
    assert len(auth.credentials()) == (1 if resident else 0)

    # Resident: usernameless (no allowCredentials). Non-resident: the RP sends the ID.
    request, state = server.authenticate_begin(
        None if resident else [credential],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    selection = client.get_assertion(request.public_key)
    response = selection.get_response(0)
    verified = server.authenticate_complete(state, [credential], response)
    assert verified.credential_id == credential.credential_id


@pytest.mark.parametrize("resident", [False, True])
def test_register_and_login_verify_with_py_webauthn(resident: bool) -> None:
    auth = Authenticator("ctap2.1")
    client = _client(auth)
    server = Fido2Server(RP, attestation="direct")
    options, _ = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-2", name="bob", display_name="Bob"),
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    verified_reg = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
    )
    assert verified_reg.fmt == "packed"
    assert verified_reg.sign_count == 0

    request, _ = server.authenticate_begin(
        None if resident else [registration.response.attestation_object.auth_data.credential_data],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    previous = 0
    for _ in range(2):
        assertion = client.get_assertion(request.public_key).get_response(0)
        verified = verify_authentication_response(
            credential=dict(assertion),
            expected_challenge=request.public_key.challenge,
            expected_rp_id="example.com",
            expected_origin=ORIGIN,
            credential_public_key=verified_reg.credential_public_key,
            credential_current_sign_count=previous,
        )
        # Per-credential counter: strictly increasing, so clone detection passes. (The
        # client's silent up=false pre-flight for an allowList also counts, as on real keys.)
        assert verified.new_sign_count > previous
        previous = verified.new_sign_count


def test_eddsa_credential_verifies() -> None:
    auth = Authenticator("ctap2.1")
    client = _client(auth)
    server = Fido2Server(RP, attestation="direct")
    server.allowed_algorithms = [
        a for a in server.allowed_algorithms if a.alg == -8
    ]  # ask for Ed25519 only
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-3", name="carol", display_name="Carol"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, registration)
    assert auth_data.credential_data is not None
    assert auth_data.credential_data.public_key[3] == -8
    request, state = server.authenticate_begin(
        [auth_data.credential_data], user_verification=UserVerificationRequirement.DISCOURAGED
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [auth_data.credential_data], response)
