"""ES256, EdDSA and ES384 for every credential kind, verified end-to-end by Fido2Server and
py_webauthn; the platform's pubKeyCredParams order decides."""

from __future__ import annotations

import os

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.ctap2 import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn import verify_authentication_response, verify_registration_response

from softkey.authenticator import PROFILES, Authenticator
from softkey.transports.inprocess import VirtualCtapDevice

ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ALGS = {"ES256": -7, "EdDSA": -8, "ES384": -35}


@pytest.mark.parametrize("profile", sorted(n for n, p in PROFILES.items() if p.ctap2))
def test_every_profile_offers_es256_eddsa_es384_in_that_order(profile: str) -> None:
    auth = Authenticator(profile)
    assert auth.profile.algorithms[:2] == (-7, -8)
    assert -35 in auth.profile.algorithms
    info = Ctap2(VirtualCtapDevice(auth)).get_info()
    if auth.profile.ctap != "2.0":
        assert [a["alg"] for a in info.algorithms] == list(auth.profile.algorithms)


@pytest.mark.parametrize("alg", sorted(ALGS))
@pytest.mark.parametrize("resident", [False, True])
def test_register_and_login_with_each_algorithm(alg: str, resident: bool) -> None:
    auth = Authenticator("ctap2.1")
    client = Fido2Client(VirtualCtapDevice(auth), DefaultClientDataCollector(ORIGIN))
    server = Fido2Server(RP, attestation="direct")
    server.allowed_algorithms = [a for a in server.allowed_algorithms if a.alg == ALGS[alg]]
    assert len(server.allowed_algorithms) == 1
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user", name="alice", display_name="Alice"),
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    credential = server.register_complete(state, registration).credential_data
    assert credential is not None
    assert credential.public_key[3] == ALGS[alg]
    reg = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
        supported_pub_key_algs=[ALGS[alg]],  # type: ignore[list-item]
    )

    request, state = server.authenticate_begin(
        None if resident else [credential],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    if alg == "ES384":
        # py_webauthn 3.0 cannot check ES384 assertion signatures (it knows ECDSA only with
        # SHA-256/512), so Fido2Server above is the judge for ES384 logins.
        return
    verify_authentication_response(
        credential=dict(response),
        expected_challenge=request.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
        credential_public_key=reg.credential_public_key,
        credential_current_sign_count=0,
    )


@pytest.mark.parametrize(
    ("requested", "chosen"),
    [([-35, -7, -8], -35), ([-257, -8, -7], -8), ([-7, -35], -7), ([-36, -35], -35)],
)
def test_first_supported_in_platform_order_wins(requested: list[int], chosen: int) -> None:
    ctap = Ctap2(VirtualCtapDevice(Authenticator()))
    att = ctap.make_credential(
        os.urandom(32),
        {"id": "example.com"},
        {"id": b"u"},
        [{"type": "public-key", "alg": a} for a in requested],
    )
    assert att.auth_data.credential_data.public_key[3] == chosen
