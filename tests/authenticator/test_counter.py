"""Signature counter modes (per-credential, global, zero) and set_counter, judged by
py_webauthn's clone detection."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse

from softkey.authenticator import Authenticator
from softkey.authenticator.counters import CounterMode
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]
ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")


def make(ctap: Ctap2, user: bytes) -> bytes:
    att = ctap.make_credential(os.urandom(32), {"id": "example.com"}, {"id": user}, ES256)
    return att.auth_data.credential_data.credential_id


def sign(ctap: Ctap2, cred: bytes) -> int:
    return ctap.get_assertion(
        "example.com", os.urandom(32), [{"type": "public-key", "id": cred}]
    ).auth_data.counter


def _register(auth: Authenticator):
    """Register one credential through Fido2Client; py_webauthn verifies the registration."""
    client = Fido2Client(VirtualCtapDevice(auth), DefaultClientDataCollector(ORIGIN))
    server = Fido2Server(RP)
    options, _ = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="U"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    reg = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
    )
    cred = registration.response.attestation_object.auth_data.credential_data
    return client, server, reg, cred


def test_per_credential_is_the_default_and_independent() -> None:
    auth = Authenticator()
    assert auth.counter_mode is CounterMode.PER_CREDENTIAL
    ctap = Ctap2(VirtualCtapDevice(auth))
    a, b = make(ctap, b"a"), make(ctap, b"b")
    assert [sign(ctap, a) for _ in range(3)] == [1, 2, 3]
    assert sign(ctap, b) == 1
    assert auth.counter(a) == 3 and auth.counter(b) == 1


def test_global_counter_is_shared_by_all_credentials_and_u2f() -> None:
    auth = Authenticator(counter_mode="global")
    ctap = Ctap2(VirtualCtapDevice(auth))
    a, b = make(ctap, b"a"), make(ctap, b"b")
    assert [sign(ctap, a), sign(ctap, b), sign(ctap, a)] == [1, 2, 3]
    app = hashlib.sha256(b"example.com").digest()
    assert Ctap1(VirtualCtapDevice(auth)).authenticate(os.urandom(32), app, b).counter == 4
    assert auth.counter(a) == auth.counter(b) == 4


def test_zero_mode_always_signs_zero_and_rps_accept_it() -> None:
    auth = Authenticator(counter_mode="zero")
    client, server, reg, cred = _register(auth)
    for _ in range(3):
        request, _ = server.authenticate_begin(
            [cred], user_verification=UserVerificationRequirement.DISCOURAGED
        )
        response = client.get_assertion(request.public_key).get_response(0)
        assert response.response.authenticator_data.counter == 0
        verified = verify_authentication_response(
            credential=dict(response),
            expected_challenge=request.public_key.challenge,
            expected_rp_id="example.com",
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=0,
        )
        assert verified.new_sign_count == 0
    with pytest.raises(ValueError, match="zero"):
        auth.set_counter(cred.credential_id, 5)


def test_mode_is_remembered_in_the_state_and_survives_reset(tmp_path: Path) -> None:
    path = tmp_path / "key.db"
    with Authenticator("ctap2.1", path, counter_mode="global") as auth:
        Ctap2(VirtualCtapDevice(auth)).reset()
        assert auth.counter_mode is CounterMode.GLOBAL
    with Authenticator(state=path) as auth:
        assert auth.counter_mode is CounterMode.GLOBAL
    with Authenticator(state=path, counter_mode="per-credential") as auth:
        assert auth.counter_mode is CounterMode.PER_CREDENTIAL
    with Authenticator(state=path) as auth:
        assert auth.counter_mode is CounterMode.PER_CREDENTIAL


def test_counters_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "key.db"
    with Authenticator("ctap2.1", path) as auth:
        ctap = Ctap2(VirtualCtapDevice(auth))
        cred = make(ctap, b"a")
        sign(ctap, cred)
        sign(ctap, cred)
    with Authenticator(state=path) as auth:
        assert sign(Ctap2(VirtualCtapDevice(auth)), cred) == 3


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="counter mode"):
        Authenticator(counter_mode="random")


@pytest.mark.parametrize("value", [-1, 2**32, True, 1.5])
def test_set_counter_rejects_values_a_counter_cannot_hold(value: object) -> None:
    auth = Authenticator()
    with pytest.raises(ValueError):
        auth.set_counter(b"x" * 32, value)  # type: ignore[arg-type]


def test_set_counter_in_global_mode_sets_the_device_counter() -> None:
    auth = Authenticator(counter_mode="global")
    ctap = Ctap2(VirtualCtapDevice(auth))
    a, b = make(ctap, b"a"), make(ctap, b"b")
    auth.set_counter(a, 41)
    assert sign(ctap, b) == 42


def test_set_counter_drives_rp_clone_detection() -> None:
    """An RP test rewinds the counter and expects its clone detection to fire."""
    auth = Authenticator()
    client, server, reg, cred = _register(auth)

    def login(stored_count: int) -> int:
        request, _ = server.authenticate_begin(
            [cred], user_verification=UserVerificationRequirement.DISCOURAGED
        )
        response = client.get_assertion(request.public_key).get_response(0)
        return verify_authentication_response(
            credential=dict(response),
            expected_challenge=request.public_key.challenge,
            expected_rp_id="example.com",
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=stored_count,
        ).new_sign_count

    auth.set_counter(cred.credential_id, 1000)
    stored = login(0)
    assert stored > 1000
    assert auth.counter(cred.credential_id) == stored
    # A "clone" whose counter lags behind what the RP has seen.
    auth.set_counter(cred.credential_id, 10)
    with pytest.raises(InvalidAuthenticationResponse, match="count"):
        login(stored)


@pytest.mark.parametrize("mode", ["per-credential", "global"])
def test_counter_stays_at_its_32_bit_top(mode: str) -> None:
    # authenticatorData carries a uint32: at 0xFFFFFFFF the counter stays there instead of
    # wrapping to 0 (counters.py says why), over CTAP2 and U2F alike.
    auth = Authenticator(counter_mode=mode)
    ctap = Ctap2(VirtualCtapDevice(auth))
    cred = make(ctap, b"u")
    auth.set_counter(cred, 0xFFFFFFFE)
    assert [sign(ctap, cred) for _ in range(3)] == [0xFFFFFFFF] * 3
    assert auth.counter(cred) == 0xFFFFFFFF

    app = hashlib.sha256(b"https://u2f.example").digest()
    u2f = Ctap1(VirtualCtapDevice(auth))
    handle = u2f.register(os.urandom(32), app).key_handle
    auth.set_counter(handle, 0xFFFFFFFF)
    assert u2f.authenticate(os.urandom(32), app, handle).counter == 0xFFFFFFFF
