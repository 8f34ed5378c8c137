"""Extensions (CTAP 2.1 §12) judged by python-fido2's Fido2Client and Ctap2: hmac-secret /
prf (both PIN protocols, with and without UV), hmac-secret-mc, credBlob, largeBlobKey,
credProtect, minPinLength; getInfo lists exactly these; unknown extensions are ignored."""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2.config import Config
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn import verify_authentication_response, verify_registration_response

from softkey.authenticator import PROFILES
from softkey.authenticator import extensions as ext
from softkey.authenticator.cbor import decode
from softkey.authenticator.ctap import Cmd
from softkey.transports.inprocess import VirtualCtapDevice

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

ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id=RP_ID, name="Example")
DISCOURAGED = UserVerificationRequirement.DISCOURAGED
REQUIRED = UserVerificationRequirement.REQUIRED


class PinEntry(UserInteraction):
    def request_pin(self, permissions: Any, rd_id: Any) -> str:
        return "1234"


def client(key: Key) -> Fido2Client:
    return Fido2Client(
        VirtualCtapDevice(key.auth), DefaultClientDataCollector(ORIGIN), user_interaction=PinEntry()
    )


def register(key: Key, server: Fido2Server, *, uv=DISCOURAGED, rk: bool = False, **extensions):
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=os.urandom(8), name="alice", display_name="Alice"),
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if rk else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=uv,
        extensions=extensions,
    )
    registration = client(key).make_credential(options.public_key)
    credential = server.register_complete(state, registration).credential_data
    return options, registration, credential


def login(key: Key, server: Fido2Server, credential, *, uv=DISCOURAGED, **extensions):
    request, state = server.authenticate_begin(
        [credential] if credential is not None else None,
        user_verification=uv,
        extensions=extensions,
    )
    response = client(key).get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential] if credential else [], response)
    return response


def prf_first(results: Any) -> bytes:
    value = results["prf"]["results"]["first"]
    return value if isinstance(value, bytes) else websafe_decode(value)


# -- getInfo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(n for n, p in PROFILES.items() if p.ctap2))
def test_get_info_lists_exactly_what_is_supported(profile: str) -> None:
    key = new_key(profile)
    info = key.ctap.info
    members = decode(raw(key.auth, Cmd.GET_INFO)[1:])
    expected = ["credProtect", "hmac-secret"]
    if key.auth.profile.at_least("2.2"):
        expected += ["hmac-secret-mc"]  # a CTAP 2.2 extension
    if key.auth.profile.at_least("2.1"):
        expected += ["credBlob", "largeBlobKey", "minPinLength"]
        assert info.max_cred_blob_length >= 32
        assert info.max_large_blob is not None and info.max_large_blob >= 1024
        assert info.options["largeBlobs"] is True
    else:
        # No credBlob, no large blobs: their getInfo members are absent, not zero.
        assert 0x0F not in members and 0x0B not in members
        assert "largeBlobs" not in info.options
    if key.auth.profile.at_least("2.2"):
        expected += ["thirdPartyPayment"]
    assert info.extensions == expected


def test_unknown_and_unsupported_extensions_are_ignored() -> None:
    key = new_key("ctap2.0")
    att = make(
        key,
        extensions={
            "example.com/future": {"x": 1},
            "credBlob": b"not on 2.0",
            "largeBlobKey": True,
            "unknown": True,
        },
    )
    assert not att.auth_data.extensions
    got = assertion(key, allow=[cred_id(att)], extensions={"credBlob": True, "whatever": 0})
    assert not got.auth_data.extensions


# -- hmac-secret / prf -------------------------------------------------------------------------


def hmac_secret_input(key: Key, version: int, salts: bytes):
    """What a platform sends (python-fido2's own ClientPin and PIN protocol objects)."""
    client_pin = key.client_pin(version)
    key_agreement, shared_secret = client_pin._get_shared_secret()
    protocol = client_pin.protocol
    salt_enc = protocol.encrypt(shared_secret, salts)
    value = {
        1: key_agreement,
        2: salt_enc,
        3: protocol.authenticate(shared_secret, salt_enc),
        4: version,
    }
    return value, protocol, shared_secret


def hmac_get(key: Key, cred: bytes, version: int, salts: bytes, token: bytes | None = None):
    value, protocol, shared = hmac_secret_input(key, version, salts)
    got = assertion(key, token, version, allow=[cred], extensions={"hmac-secret": value})
    encrypted = got.auth_data.extensions["hmac-secret"]
    return protocol.decrypt(shared, encrypted), got.auth_data.is_user_verified()


def test_prf_round_trip_through_fido2_client_and_both_rp_libraries() -> None:
    key = new_key("ctap2.2")  # hmac-secret-mc at registration is CTAP 2.2
    server = Fido2Server(RP)
    salt = os.urandom(32)
    options, registration, credential = register(key, server, prf={"eval": {"first": salt}})
    results = registration.client_extension_results
    assert results["prf"]["enabled"] is True
    at_registration = prf_first(results)  # hmac-secret-mc (the key lists it)
    reg = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
    )

    request, _ = server.authenticate_begin(
        [credential], user_verification=DISCOURAGED, extensions={"prf": {"eval": {"first": salt}}}
    )
    response = client(key).get_assertion(request.public_key).get_response(0)
    verify_authentication_response(
        credential=dict(response),
        expected_challenge=request.public_key.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=reg.credential_public_key,
        credential_current_sign_count=0,
    )
    assert prf_first(response.client_extension_results) == at_registration
    other = login(key, server, credential, prf={"eval": {"first": os.urandom(32)}})
    assert prf_first(other.client_extension_results) != at_registration


@pytest.mark.parametrize("version", [1, 2])
def test_hmac_secret_both_protocols_give_the_same_prf(version: int) -> None:
    key = new_key()
    att = make(key, extensions={"hmac-secret": True})
    assert att.auth_data.extensions == {"hmac-secret": True}
    cred = cred_id(att)
    salt1, salt2 = os.urandom(32), os.urandom(32)
    one, uv = hmac_get(key, cred, version, salt1)
    assert not uv and len(one) == 32
    both, _ = hmac_get(key, cred, version, salt1 + salt2)
    assert len(both) == 64 and both[:32] == one
    swapped, _ = hmac_get(key, cred, 3 - version, salt2 + salt1)  # the other protocol
    assert swapped == both[32:] + both[:32]
    # Derived without the project's code: decrypt the ID with raw `cryptography` as
    # docs/credential-id.md describes, take the CredRandom seed, derive CredRandomWithoutUV as
    # documented there, and apply §12.5's output = HMAC-SHA-256(CredRandom, salt1).
    master = key.auth.store.get_meta("master_key")
    assert master is not None
    k_enc = HKDF(hashes.SHA256(), 16, None, b"softkey/v1/credential-id/enc").derive(master)
    decryptor = Cipher(algorithms.AES(k_enc), modes.CTR(cred[1:17])).decryptor()
    plaintext = decryptor.update(cred[17:-16]) + decryptor.finalize()
    assert plaintext[2] & 0b10  # flags: made with hmac-secret
    key_len = plaintext[4]
    seed = plaintext[5 + key_len : 37 + key_len]
    cred_random = hmac.new(seed, b"softkey/v1/CredRandomWithoutUV", hashlib.sha256).digest()
    assert one == hmac.new(cred_random, salt1, hashlib.sha256).digest()


@pytest.mark.parametrize("version", [1, 2])
def test_hmac_secret_with_uv_differs_from_without(version: int) -> None:
    key = with_pin()
    token = key.client_pin(version).get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    cred = cred_id(make(key, token, version, rk=True, extensions={"hmac-secret": True}))
    salt = os.urandom(32)
    without_uv, uv = hmac_get(key, cred, version, salt)
    assert not uv
    ga = key.client_pin(version).get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    with_uv, uv = hmac_get(key, cred, version, salt, ga)
    assert uv
    assert with_uv != without_uv
    ga = key.client_pin(version).get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    assert hmac_get(key, cred, version, salt, ga)[0] == with_uv  # stable per UV state
    assert hmac_get(key, cred, version, salt)[0] == without_uv


def test_prf_with_user_verification_through_fido2_client() -> None:
    key = with_pin("ctap2.2")  # PRF results at registration need hmac-secret-mc (2.2)
    server = Fido2Server(RP)
    salt = os.urandom(32)
    _, registration, credential = register(key, server, uv=REQUIRED, prf={"eval": {"first": salt}})
    assert registration.response.attestation_object.auth_data.is_user_verified()
    mc_uv = prf_first(registration.client_extension_results)
    ga_uv = login(key, server, credential, uv=REQUIRED, prf={"eval": {"first": salt}})
    assert ga_uv.response.authenticator_data.is_user_verified()
    assert prf_first(ga_uv.client_extension_results) == mc_uv
    ga_plain = login(key, server, credential, uv=DISCOURAGED, prf={"eval": {"first": salt}})
    assert not ga_plain.response.authenticator_data.is_user_verified()
    assert prf_first(ga_plain.client_extension_results) != mc_uv


def test_no_hmac_secret_output_for_a_credential_made_without_it() -> None:
    key = new_key()
    cred = cred_id(make(key))
    value, _, _ = hmac_secret_input(key, 2, os.urandom(32))
    got = assertion(key, allow=[cred], extensions={"hmac-secret": value})
    assert not got.auth_data.extensions


def test_hmac_secret_outputs_follow_get_next_assertion() -> None:
    key = new_key()
    for user in (b"a", b"b"):
        make(key, rk=True, user=user, extensions={"hmac-secret": True})
    salt = os.urandom(32)
    value, protocol, shared = hmac_secret_input(key, 2, salt)
    ctap = key.ctap
    first = ctap.get_assertion(RP_ID, os.urandom(32), extensions={"hmac-secret": value})
    second = ctap.get_next_assertion()
    outputs = [
        protocol.decrypt(shared, a.auth_data.extensions["hmac-secret"]) for a in (first, second)
    ]
    assert outputs[0] != outputs[1]  # each credential its own CredRandom
    again, _ = hmac_get(key, second.credential["id"], 2, salt)
    assert again == outputs[1]


def test_hmac_secret_errors() -> None:
    key = new_key()
    cred = cred_id(make(key, extensions={"hmac-secret": True}))

    def status(value: Any) -> int:
        return status_of(assertion, key, allow=[cred], extensions={"hmac-secret": value})

    good, protocol, shared = hmac_secret_input(key, 2, os.urandom(32))
    assert status({**good, 3: bytes(32)}) == ERR.PIN_AUTH_INVALID  # saltAuth wrong
    assert status({**good, 4: 3}) == ERR.INVALID_PARAMETER  # no such PIN protocol
    for member in (1, 2, 3):
        value = dict(good)
        del value[member]
        assert status(value) == ERR.MISSING_PARAMETER
    assert status({**good, 1: {1: 2, 3: -25, -1: 1, -2: b"x", -3: b"y"}}) == ERR.INVALID_PARAMETER
    assert status("salts") == ERR.CBOR_UNEXPECTED_TYPE
    assert status({**good, 2: "not bytes"}) == ERR.CBOR_UNEXPECTED_TYPE
    for bad_length in (16, 48, 96):  # only 32 or 64 bytes of salt
        value, _, _ = hmac_secret_input(key, 2, os.urandom(bad_length))
        assert status(value) == ERR.INVALID_PARAMETER
    # Protocol 1 (no member 4: the CTAP 2.0 form) still works.
    value, protocol, shared = hmac_secret_input(key, 1, os.urandom(32))
    del value[4]
    got = assertion(key, allow=[cred], extensions={"hmac-secret": value})
    assert len(protocol.decrypt(shared, got.auth_data.extensions["hmac-secret"])) == 32


def test_hmac_secret_mc_needs_hmac_secret_and_only_exists_on_2_2() -> None:
    key = new_key("ctap2.2")
    value, _, _ = hmac_secret_input(key, 2, os.urandom(32))
    assert status_of(make, key, extensions={"hmac-secret-mc": value}) == ERR.MISSING_PARAMETER
    assert status_of(make, key, extensions={"hmac-secret": "yes"}) == ERR.CBOR_UNEXPECTED_TYPE
    old = new_key("ctap2.1")  # hmac-secret-mc is a CTAP 2.2 extension
    value, _, _ = hmac_secret_input(old, 2, os.urandom(32))
    att = make(old, extensions={"hmac-secret": True, "hmac-secret-mc": value})
    assert att.auth_data.extensions == {"hmac-secret": True}  # -mc ignored: not supported


# -- credBlob ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rk", [False, True])
def test_cred_blob_round_trip_through_fido2_client(rk: bool) -> None:
    key = new_key()
    server = Fido2Server(RP)
    blob = os.urandom(32)
    _, registration, credential = register(key, server, rk=rk, credBlob=blob)
    assert registration.response.attestation_object.auth_data.extensions["credBlob"] is True
    response = login(key, server, credential, getCredBlob=True)
    assert response.response.authenticator_data.extensions["credBlob"] == blob
    # Not asked for: not returned.
    plain = login(key, server, credential)
    assert "credBlob" not in (plain.response.authenticator_data.extensions or {})


def test_cred_blob_limits() -> None:
    key = new_key()
    limit = key.ctap.info.max_cred_blob_length
    assert limit == ext.MAX_CRED_BLOB_LENGTH
    att = make(key, extensions={"credBlob": os.urandom(limit)})
    assert att.auth_data.extensions == {"credBlob": True}
    too_long = make(key, user=b"u2", extensions={"credBlob": os.urandom(limit + 1)})
    assert too_long.auth_data.extensions == {"credBlob": False}  # not stored, not an error
    got = assertion(key, allow=[cred_id(too_long)], extensions={"credBlob": True})
    assert got.auth_data.extensions == {"credBlob": b""}
    none_stored = cred_id(make(key, user=b"u3"))
    got = assertion(key, allow=[none_stored], extensions={"credBlob": True})
    assert got.auth_data.extensions == {"credBlob": b""}
    assert status_of(make, key, extensions={"credBlob": "text"}) == ERR.CBOR_UNEXPECTED_TYPE
    assert (
        status_of(assertion, key, allow=[none_stored], extensions={"credBlob": 1})
        == ERR.CBOR_UNEXPECTED_TYPE
    )


# -- credProtect, minPinLength, largeBlobKey ---------------------------------------------------


def test_cred_protect_through_fido2_client() -> None:
    key = new_key()
    server = Fido2Server(RP)
    _, registration, credential = register(
        key,
        server,
        rk=True,
        credentialProtectionPolicy="userVerificationOptionalWithCredentialIDList",
        enforceCredentialProtectionPolicy=True,
    )
    assert registration.response.attestation_object.auth_data.extensions["credProtect"] == 2
    login(key, server, credential)  # with its ID: fine
    # Usernameless without UV: level 2 hides it.
    assert status_of(assertion, key) == ERR.NO_CREDENTIALS


def test_min_pin_length_only_for_allow_listed_rp_ids() -> None:
    key = new_key()
    Config(key.ctap).set_min_pin_length(min_pin_length=6, rp_ids=[RP_ID])
    server = Fido2Server(RP)
    _, registration, _ = register(key, server, minPinLength=True)
    assert registration.response.attestation_object.auth_data.extensions == {"minPinLength": 6}
    other = make(key, rp="other.example", extensions={"minPinLength": True})
    assert not other.auth_data.extensions
    not_asked = make(key, user=b"u2")
    assert not not_asked.auth_data.extensions
    assert status_of(make, key, extensions={"minPinLength": 1}) == ERR.CBOR_UNEXPECTED_TYPE


def test_large_blob_key_rules() -> None:
    key = new_key()
    att = make(key, rk=True, extensions={"largeBlobKey": True})
    assert len(att.large_blob_key) == 32
    assert not att.auth_data.extensions  # the key travels in response member 0x05
    got = assertion(key, allow=[cred_id(att)], extensions={"largeBlobKey": True})
    assert got.large_blob_key == att.large_blob_key
    assert assertion(key, allow=[cred_id(att)]).large_blob_key is None  # not asked
    other = make(key, rk=True, user=b"u2", extensions={"largeBlobKey": True})
    assert other.large_blob_key != att.large_blob_key
    # §12.3: false is invalid; only discoverable credentials can have a key.
    assert status_of(make, key, rk=True, extensions={"largeBlobKey": False}) == ERR.INVALID_OPTION
    assert status_of(make, key, extensions={"largeBlobKey": True}) == ERR.INVALID_OPTION
    assert status_of(assertion, key, extensions={"largeBlobKey": False}) == ERR.INVALID_OPTION
    # A resident credential made without it has none.
    plain = cred_id(make(key, rk=True, user=b"u3"))
    assert assertion(key, allow=[plain], extensions={"largeBlobKey": True}).large_blob_key is None


def test_extension_errors_come_before_the_touch() -> None:
    from softkey.authenticator import ScriptedPresence

    presence = ScriptedPresence()
    key = new_key(presence=presence)
    assert status_of(make, key, extensions={"largeBlobKey": False}) == ERR.INVALID_OPTION
    assert presence.requests == []


def test_malformed_extension_maps_never_crash() -> None:
    key = new_key()
    cred = cred_id(make(key, extensions={"hmac-secret": True}))
    for extensions in (
        {"hmac-secret": {1: 1, 2: 2, 3: 3}},
        {"hmac-secret": []},
        {"credBlob": None},
        {"hmac-secret": {1: {}, 2: b"", 3: b""}},
    ):
        response = raw(
            key.auth,
            Cmd.GET_ASSERTION,
            {1: RP_ID, 2: bytes(32), 3: [{"type": "public-key", "id": cred}], 4: extensions},
        )
        assert response[0] not in (0x00, 0x7F), (extensions, response.hex())


def test_raw_hmac_secret_through_fido2_client() -> None:
    """The hmac-secret client extension itself (hmacCreateSecret / hmacGetSecret)."""
    from fido2.ctap2.extensions import HmacSecretExtension

    key = new_key()
    fido_client = Fido2Client(
        VirtualCtapDevice(key.auth),
        DefaultClientDataCollector(ORIGIN),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )
    server = Fido2Server(RP)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"h", name="h", display_name="H"),
        user_verification=DISCOURAGED,
        extensions={"hmacCreateSecret": True},
    )
    registration = fido_client.make_credential(options.public_key)
    assert registration.client_extension_results["hmacCreateSecret"] is True
    credential = server.register_complete(state, registration).credential_data
    salt1, salt2 = os.urandom(32), os.urandom(32)
    outputs = []
    for salts in ({"salt1": salt1}, {"salt1": salt1, "salt2": salt2}):
        request, state = server.authenticate_begin(
            [credential], user_verification=DISCOURAGED, extensions={"hmacGetSecret": salts}
        )
        response = fido_client.get_assertion(request.public_key).get_response(0)
        server.authenticate_complete(state, [credential], response)
        outputs.append(response.client_extension_results["hmacGetSecret"])
    first = outputs[0]["output1"]
    assert len(websafe_decode(first) if isinstance(first, str) else first) == 32
    assert outputs[1]["output1"] == first
    assert outputs[1]["output2"] != first
