"""Imported credentials (any credential ID) and the backup flags BE/BS, judged by RPs.

The relying parties are python-fido2's Fido2Server and py_webauthn; the client is python-fido2's
Fido2Client (the pytest fixture's ``softkey.client`` / ``softkey.get``). The fixture's WebDriver
methods (transports/webdriver.py) add, list, remove and flag the credentials.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fido2 import cbor as fido2_cbor
from fido2.client import ClientError
from fido2.cose import CoseKey
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
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
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
)
from webauthn.helpers.structs import UserVerificationRequirement as WebauthnUv

from softkey.authenticator import Authenticator, cose
from softkey.authenticator.imported import (
    MAX_CREDENTIAL_ID_LEN,
    CredentialError,
    StoredCredential,
    add_credential,
    get_credentials,
)
from softkey.authenticator.profiles import get_profile
from softkey.authenticator.store import SCHEMA_VERSION
from softkey.tools import state_export
from softkey.transports.inprocess import VirtualCtapDevice

RP_ID = "example.com"
ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id=RP_ID, name="Example")
DISCOURAGED = UserVerificationRequirement.DISCOURAGED


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _der(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _rp_record(cred: StoredCredential) -> AttestedCredentialData:
    """What the RP's database holds for a credential it got from a fixture file: ID and
    public key (the COSE key the key reports must be the private key's)."""
    assert cred.public_key is not None
    public = CoseKey.parse(fido2_cbor.decode(cred.public_key))
    return AttestedCredentialData.create(b"\0" * 16, cred.credential_id, public)


def _auth_data(response: dict) -> AuthenticatorData:
    return AuthenticatorData(websafe_decode(response["response"]["authenticatorData"]))


def _login(softkey, server: Fido2Server, credential: AttestedCredentialData, usernameless=False):
    request, state = server.authenticate_begin(
        None if usernameless else [credential], user_verification=DISCOURAGED
    )
    response = softkey.get(request)
    result = server.authenticate_complete(state, [credential], response)
    assert result.credential_id == credential.credential_id
    return response


# -- any credential ID logs in ------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 64, 300])
def test_an_imported_non_resident_credential_with_any_id_logs_in(softkey, length: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(length)
    added = softkey.add_credential(cred_id, RP_ID, _pem(key), sign_count=41)
    assert (added.credential_id, added.resident, added.imported) == (cred_id, False, True)
    assert softkey.get_credentials()[0].credential_id == cred_id

    server = Fido2Server(RP)
    record = _rp_record(added)
    response = _login(softkey, server, record)
    assert websafe_decode(response["rawId"]) == cred_id  # the ID the RP gave comes back
    # Fido2Server checked the signature with the fixture key's public key. The counter went on
    # from 41 (python-fido2's client also signs a silent up=false pre-flight per login).
    first = _auth_data(response).counter
    assert first > 41
    assert [c.sign_count for c in softkey.get_credentials()] == [first]
    second = _auth_data(_login(softkey, server, record)).counter
    assert second > first
    assert [c.sign_count for c in softkey.get_credentials()] == [second]
    # No slot taken.
    assert softkey.authenticator.store.resident_count() == 0


def test_a_300_byte_id_is_announced_in_get_info_so_platforms_send_it(softkey) -> None:
    assert softkey.ctap2.info.max_cred_id_length == 183  # the key's own IDs
    softkey.add_credential(os.urandom(300), RP_ID, _pem(ed25519.Ed25519PrivateKey.generate()))
    assert softkey.ctap2.info.max_cred_id_length == 300


def test_an_imported_resident_credential_logs_in_usernameless(softkey) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cred_id = os.urandom(16)
    added = softkey.add_credential(
        cred_id, RP_ID, _der(key), user_handle=b"alice-id", resident=True, user_name="alice"
    )
    assert added.resident and added.imported and added.user_handle == b"alice-id"
    assert softkey.authenticator.store.resident_count() == 1  # it takes a slot

    server = Fido2Server(RP)
    response = _login(softkey, server, _rp_record(added), usernameless=True)
    assert websafe_decode(response["response"]["userHandle"]) == b"alice-id"
    assert websafe_decode(response["rawId"]) == cred_id


def test_py_webauthn_verifies_an_imported_login_with_the_fixture_key(softkey) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cred_id = os.urandom(16)
    added = softkey.add_credential(cred_id, RP_ID, key, sign_count=7)
    assert added.alg == -35
    # py_webauthn 3.0 cannot check ES384 (test_algorithms.py): let Fido2Server judge, and
    # py_webauthn an Ed25519 one.
    _login(softkey, Fido2Server(RP), _rp_record(added))

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_id = os.urandom(64)
    ed_added = softkey.add_credential(ed_id, RP_ID, _pem(ed).decode(), sign_count=7)
    options = generate_authentication_options(
        rp_id=RP_ID,
        allow_credentials=[PublicKeyCredentialDescriptor(id=ed_id)],
        user_verification=WebauthnUv.DISCOURAGED,
    )
    assert ed_added.public_key is not None
    verified = verify_authentication_response(
        credential=softkey.get(options_to_json(options)),
        expected_challenge=options.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=ed_added.public_key,
        credential_current_sign_count=7,
    )
    assert verified.new_sign_count > 7
    assert softkey.get_credentials()[-1].sign_count == verified.new_sign_count
    assert verified.credential_backed_up is False
    assert verified.credential_device_type == CredentialDeviceType.SINGLE_DEVICE


def test_webdriver_text_arguments_are_base64url(softkey) -> None:
    import base64

    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(20)
    b64 = base64.urlsafe_b64encode(cred_id).rstrip(b"=").decode()
    der_b64 = base64.urlsafe_b64encode(_der(key)).rstrip(b"=").decode()
    added = softkey.add_credential(b64, RP_ID, der_b64, user_handle="dXNlcg", resident=True)
    assert added.credential_id == cred_id and added.user_handle == b"user"
    softkey.remove_credential(b64)
    assert softkey.get_credentials() == []


@pytest.mark.skipif(not cose.MLDSA, reason="cryptography backend without ML-DSA")
def test_ml_dsa_imports_where_the_profile_offers_it(softkey_factory) -> None:
    from cryptography.hazmat.primitives.asymmetric import mldsa

    key = mldsa.MLDSA44PrivateKey.generate()
    modern = softkey_factory(profile="ctap2.1")
    added = modern.add_credential(os.urandom(32), RP_ID, _pem(key))
    assert added.alg == -48
    _login(modern, Fido2Server(RP), _rp_record(added))
    old = softkey_factory(profile="yubikey-5")
    with pytest.raises(CredentialError, match="does not make credentials of COSE algorithm -48"):
        old.add_credential(os.urandom(32), RP_ID, _pem(key))


# -- listing, counters, removal, reset -------------------------------------------------------------


def test_get_credentials_lists_every_stored_credential_with_sign_counts(softkey) -> None:
    server = Fido2Server(RP)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"native", name="native"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=DISCOURAGED,
    )
    native = server.register_complete(state, softkey.create(options)).credential_data
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"nr", name="nr"),
        resident_key_requirement=ResidentKeyRequirement.DISCOURAGED,
        user_verification=DISCOURAGED,
    )
    non_resident = server.register_complete(state, softkey.create(options)).credential_data
    key = ec.generate_private_key(ec.SECP256R1())
    resident_id, plain_id = os.urandom(16), os.urandom(16)
    softkey.add_credential(resident_id, RP_ID, _pem(key), user_handle=b"u", resident=True)
    softkey.add_credential(plain_id, RP_ID, _pem(key), sign_count=100)

    listed = {c.credential_id: c for c in softkey.get_credentials()}
    # The key's own non-resident credential is stored nowhere but in its ID: not listed.
    assert set(listed) == {native.credential_id, resident_id, plain_id}
    assert non_resident.credential_id not in listed
    assert [(c.resident, c.imported) for c in softkey.get_credentials()] == [
        (True, True),  # most recent resident first
        (True, False),
        (False, True),
    ]
    assert listed[native.credential_id].public_key == fido2_cbor.encode(dict(native.public_key))
    assert all(c.private_key is None for c in listed.values())

    for _ in range(3):
        native_count = _auth_data(_login(softkey, server, native)).counter
    plain_count = _auth_data(_login(softkey, server, _rp_record(listed[plain_id]))).counter
    counts = {c.credential_id: c.sign_count for c in softkey.get_credentials()}
    # What the last signature of each carried (and nothing for the one never used).
    assert counts == {native.credential_id: native_count, resident_id: 0, plain_id: plain_count}
    assert native_count >= 3 and plain_count > 100


def test_private_keys_only_when_asked_and_they_are_the_given_ones(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(16)
    softkey.add_credential(cred_id, RP_ID, _pem(key))
    (listed,) = softkey.get_credentials(include_private_keys=True)
    assert listed.private_key is not None
    loaded = serialization.load_pem_private_key(listed.private_key, None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    assert softkey.get_credentials()[0].private_key is None


def test_a_listed_credential_added_back_after_removal_works_native_ones_too(softkey) -> None:
    """Save and restore as a WebDriver test does: get_credentials with private keys, remove
    all, add each back with its own ID (a native ID stays native)."""
    server = Fido2Server(RP)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"bob", name="bob"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=DISCOURAGED,
    )
    native = server.register_complete(state, softkey.create(options)).credential_data
    saved = softkey.get_credentials(include_private_keys=True)
    softkey.remove_all_credentials()
    with pytest.raises(ClientError):
        _login(softkey, server, native)
    for cred in saved:
        softkey.add_credential(
            cred.credential_id,
            cred.rp_id,
            cred.private_key,
            user_handle=cred.user_handle,
            sign_count=cred.sign_count,
            resident=cred.resident,
        )
    (restored,) = softkey.get_credentials()
    assert (restored.credential_id, restored.imported) == (native.credential_id, False)
    _login(softkey, server, native, usernameless=True)


def test_remove_credential_and_remove_all(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first, second, third = os.urandom(16), os.urandom(16), os.urandom(16)
    softkey.add_credential(first, RP_ID, _pem(key))
    softkey.add_credential(second, RP_ID, _pem(key), user_handle=b"u2", resident=True)
    softkey.add_credential(third, RP_ID, _pem(key))
    record = _rp_record(softkey.get_credentials()[1])  # third: the newest non-resident
    assert record.credential_id == third

    first_record = _rp_record(softkey.get_credentials()[-1])
    assert first_record.credential_id == first
    softkey.remove_credential(first)
    assert {c.credential_id for c in softkey.get_credentials()} == {second, third}
    with pytest.raises(ClientError):
        _login(softkey, Fido2Server(RP), first_record)
    with pytest.raises(CredentialError, match="no credential with that ID"):
        softkey.remove_credential(first)

    softkey.remove_credential(second)  # a resident one frees its slot
    assert softkey.authenticator.store.resident_count() == 0
    softkey.remove_all_credentials()
    assert softkey.get_credentials() == []
    with pytest.raises(ClientError):
        _login(softkey, Fido2Server(RP), record)


def test_reset_kills_imported_credentials(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plain_id, resident_id = os.urandom(16), os.urandom(64)
    plain = softkey.add_credential(plain_id, RP_ID, _pem(key))
    softkey.add_credential(resident_id, RP_ID, _pem(key), user_handle=b"u", resident=True)
    server = Fido2Server(RP)
    _login(softkey, server, _rp_record(plain))

    softkey.reset()
    assert softkey.get_credentials() == []
    with pytest.raises(ClientError) as excinfo:
        _login(softkey, server, _rp_record(plain))
    assert excinfo.value.cause.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(ClientError):
        _login(softkey, server, _rp_record(plain), usernameless=True)


def test_a_sealed_row_opens_only_for_its_id_rp_and_master_key(tmp_path: Path) -> None:
    state = tmp_path / "k.sqlite3"
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(16)
    with Authenticator(state=state) as auth:
        add_credential(auth, cred_id, RP_ID, _pem(key))
        assert auth.secrets_of(cred_id, hashlib.sha256(RP_ID.encode()).digest()) is not None
        assert auth.secrets_of(cred_id, hashlib.sha256(b"other.example").digest()) is None
    # The private key is not in the file in the clear.
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    assert raw not in state.read_bytes()
    # Claiming the row for another RP, or flipping a bit of it, makes it "not mine".
    other_hash = hashlib.sha256(b"other.example").digest()
    _update_row(state, rp_id="other.example", rp_id_hash=other_hash)
    with Authenticator(state=state) as auth:
        assert auth.secrets_of(cred_id, other_hash) is None
        assert get_credentials(auth)[0].public_key is None
    db = sqlite3.connect(state)
    (sealed,) = db.execute("SELECT sealed FROM imported_credentials").fetchone()
    db.close()
    flipped = bytes([sealed[0] ^ 1]) + bytes(sealed[1:])
    _update_row(state, rp_id=RP_ID, rp_id_hash=hashlib.sha256(RP_ID.encode()).digest())
    with Authenticator(state=state) as auth:
        assert auth.secrets_of(cred_id, hashlib.sha256(RP_ID.encode()).digest()) is not None
    _update_row(state, sealed=flipped)
    with Authenticator(state=state) as auth:
        assert auth.secrets_of(cred_id, hashlib.sha256(RP_ID.encode()).digest()) is None


def _update_row(state: Path, **columns: object) -> None:
    db = sqlite3.connect(state)
    for name, value in columns.items():
        db.execute(f"UPDATE imported_credentials SET {name} = ?", (value,))
    db.commit()
    db.close()


# -- slots, credential management ------------------------------------------------------------------


def test_resident_imported_credentials_count_against_capacity(softkey_factory) -> None:
    softkey = softkey_factory(profile="nitrokey-fido2")  # 8 slots
    key = ec.generate_private_key(ec.SECP256R1())
    for n in range(8):
        softkey.add_credential(
            os.urandom(16), RP_ID, _pem(key), user_handle=bytes([n + 1]), resident=True
        )
    with pytest.raises(CredentialError, match=r"slots full \(8/8\)") as excinfo:
        softkey.add_credential(os.urandom(16), RP_ID, _pem(key), user_handle=b"x", resident=True)
    assert excinfo.value.code == "full"
    # Non-resident imported ones take no slot: any number fit.
    for _ in range(20):
        softkey.add_credential(os.urandom(16), RP_ID, _pem(key))
    assert softkey.authenticator.store.resident_count() == 8
    assert len(softkey.get_credentials()) == 28
    # And the key itself says it is full (makeCredential rk).
    with pytest.raises(CtapError) as ctap_error:
        softkey.ctap2.make_credential(
            os.urandom(32),
            {"id": RP_ID},
            {"id": b"new"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
    assert ctap_error.value.code == CtapError.ERR.KEY_STORE_FULL


def test_same_rp_and_user_handle_replaces_the_slot_as_make_credential_does(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old, new = os.urandom(16), os.urandom(16)
    softkey.add_credential(old, RP_ID, _pem(key), user_handle=b"same", resident=True)
    softkey.add_credential(new, RP_ID, _pem(key), user_handle=b"same", resident=True)
    assert [c.credential_id for c in softkey.get_credentials()] == [new]
    assert softkey.authenticator.store.get_imported(old) is None  # its key went with it


def test_credential_management_lists_and_deletes_imported_resident_ones(softkey_factory) -> None:
    softkey = softkey_factory(pin="123456")
    key = ed25519.Ed25519PrivateKey.generate()
    cred_id = os.urandom(48)
    softkey.add_credential(
        cred_id, RP_ID, _pem(key), user_handle=b"carol", resident=True, user_name="carol"
    )
    ctap = softkey.ctap2
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token("123456", ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, client_pin.protocol, token)
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    (entry,) = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    assert entry[CredentialManagement.RESULT.CREDENTIAL_ID]["id"] == cred_id
    public = entry[CredentialManagement.RESULT.PUBLIC_KEY]
    assert public[-2] == key.public_key().public_bytes_raw()
    cm.delete_cred({"id": cred_id, "type": "public-key"})
    assert softkey.get_credentials() == []
    assert softkey.authenticator.store.get_imported(cred_id) is None


# -- refusals --------------------------------------------------------------------------------------


def test_refusals(softkey) -> None:
    key = _pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialError, match="1 to 1023 bytes"):
        softkey.add_credential(b"", RP_ID, key)
    with pytest.raises(CredentialError, match="1 to 1023 bytes"):
        softkey.add_credential(b"x" * (MAX_CREDENTIAL_ID_LEN + 1), RP_ID, key)
    with pytest.raises(CredentialError, match="needs a user handle"):
        softkey.add_credential(b"id", RP_ID, key, resident=True)
    with pytest.raises(CredentialError, match="large blob needs a resident"):
        softkey.add_credential(b"id", RP_ID, key, large_blob=b"blob")
    with pytest.raises(CredentialError, match="cannot read the private key"):
        softkey.add_credential(b"id", RP_ID, b"not a key")
    p521 = _pem(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(CredentialError, match="use P-256, P-384 or Ed25519"):
        softkey.add_credential(b"id", RP_ID, p521)
    with pytest.raises(CredentialError, match="RP ID is not usable"):
        softkey.add_credential(b"id", "", key)
    assert softkey.get_credentials() == []


def test_a_native_id_cannot_be_given_another_key(softkey) -> None:
    server = Fido2Server(RP)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"d", name="d"), user_verification=DISCOURAGED
    )
    native = server.register_complete(state, softkey.create(options)).credential_data
    with pytest.raises(CredentialError, match="made itself"):
        softkey.add_credential(
            native.credential_id, RP_ID, _pem(ec.generate_private_key(ec.SECP256R1()))
        )


# -- backup flags BE / BS --------------------------------------------------------------------------


def _flags(auth_data: bytes) -> tuple[bool, bool]:
    return bool(auth_data[32] & 0x08), bool(auth_data[32] & 0x10)


def _py_webauthn_register(softkey):
    options = generate_registration_options(
        rp_id=RP_ID,
        rp_name="Example",
        user_name="alice",
        authenticator_selection=AuthenticatorSelectionCriteria(
            user_verification=WebauthnUv.DISCOURAGED
        ),
    )
    return verify_registration_response(
        credential=softkey.create(options_to_json(options)),
        expected_challenge=options.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
    )


def _py_webauthn_login(softkey, registration, sign_count: int = 0):
    options = generate_authentication_options(
        rp_id=RP_ID,
        allow_credentials=[PublicKeyCredentialDescriptor(id=registration.credential_id)],
        user_verification=WebauthnUv.DISCOURAGED,
    )
    return verify_authentication_response(
        credential=softkey.get(options_to_json(options)),
        expected_challenge=options.challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=registration.credential_public_key,
        credential_current_sign_count=sign_count,
    )


def test_no_preset_sets_backup_flags(softkey) -> None:
    registration = _py_webauthn_register(softkey)
    assert registration.credential_backed_up is False
    assert registration.credential_device_type == CredentialDeviceType.SINGLE_DEVICE
    assert _py_webauthn_login(softkey, registration).credential_backed_up is False


@pytest.mark.parametrize(
    ("eligible", "state", "device_type"),
    [
        (True, False, CredentialDeviceType.MULTI_DEVICE),
        (True, True, CredentialDeviceType.MULTI_DEVICE),
    ],
)
def test_profile_default_flags_appear_in_make_credential_and_get_assertion(
    softkey_factory, eligible: bool, state: bool, device_type: CredentialDeviceType
) -> None:
    profile = replace(get_profile("ctap2.1"), backup_eligible=eligible, backup_state=state)
    softkey = softkey_factory(profile=profile)
    registration = _py_webauthn_register(softkey)
    assert registration.credential_device_type == device_type
    assert registration.credential_backed_up is state
    login = _py_webauthn_login(softkey, registration)
    assert (login.credential_device_type, login.credential_backed_up) == (device_type, state)


def test_bs_without_be_is_refused_everywhere(softkey) -> None:
    with pytest.raises(ValueError, match="backup_state needs backup_eligible"):
        replace(get_profile("ctap2.1"), backup_state=True)
    key = _pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialError, match=r"WebAuthn §6\.1\.3"):
        softkey.add_credential(b"id", RP_ID, key, backup_state=True)
    softkey.add_credential(b"id", RP_ID, key)
    with pytest.raises(CredentialError, match="backup state .BS. without backup eligibility"):
        softkey.set_credential_properties(b"id", backup_state=True)
    softkey.set_credential_properties(b"id", backup_eligible=True, backup_state=True)
    with pytest.raises(CredentialError, match="without backup eligibility"):
        softkey.set_credential_properties(b"id", backup_eligible=False)  # BS would stay on
    (cred,) = softkey.get_credentials()
    assert (cred.backup_eligible, cred.backup_state) == (True, True)


def test_set_credential_properties_shows_in_every_following_assertion_exactly(softkey) -> None:
    registration = _py_webauthn_register(softkey)  # a resident? no: non-resident, not stored
    with pytest.raises(CredentialError, match="no credential with that ID is stored"):
        softkey.set_credential_properties(registration.credential_id, backup_eligible=True)

    key = ed25519.Ed25519PrivateKey.generate()
    cred_id = os.urandom(16)
    added = softkey.add_credential(cred_id, RP_ID, _pem(key), backup_eligible=True)
    assert (added.backup_eligible, added.backup_state) == (True, False)
    server = Fido2Server(RP)
    record = _rp_record(added)
    seen = []
    for eligible, state in [(True, False), (True, True), (False, False), (True, True)]:
        softkey.set_credential_properties(cred_id, backup_eligible=eligible, backup_state=state)
        auth_data = _auth_data(_login(softkey, server, record))
        seen.append((auth_data.is_backup_eligible(), auth_data.is_backed_up()))
    assert seen == [(True, False), (True, True), (False, False), (True, True)]
    # One flag alone keeps the other.
    softkey.set_credential_properties(cred_id, backup_state=False)
    assert _flags(bytes(_auth_data(_login(softkey, server, record)))) == (True, False)


def test_resident_properties_go_with_the_credential(softkey) -> None:
    key = _pem(ec.generate_private_key(ec.SECP256R1()))
    softkey.add_credential(b"r", RP_ID, key, user_handle=b"u", resident=True, backup_eligible=True)
    assert softkey.authenticator.store.get_properties(b"r") == (True, False)
    softkey.remove_credential(b"r")
    assert softkey.authenticator.store.get_properties(b"r") is None


# -- large blob ------------------------------------------------------------------------------------


def test_a_large_blob_added_with_the_credential_is_read_by_the_client(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(16)
    blob = b"certificate for alice " * 20
    added = softkey.add_credential(
        cred_id, RP_ID, _pem(key), user_handle=b"alice", resident=True, large_blob=blob
    )
    assert added.large_blob == blob
    server = Fido2Server(RP)
    request, _state = server.authenticate_begin(None, user_verification=DISCOURAGED)
    selection = softkey.client.get_assertion(
        {**dict(request.public_key), "extensions": {"largeBlob": {"read": True}}}
    )
    results = selection.get_response(0).client_extension_results
    assert websafe_decode(results["largeBlob"]["blob"]) == blob


# -- state schema 4, export / import ---------------------------------------------------------------


def test_export_import_carries_imported_credentials_and_old_exports_still_import(
    tmp_path: Path,
) -> None:
    assert SCHEMA_VERSION >= 4  # 4 added the imported_credentials table
    source = tmp_path / "src.sqlite3"
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(16)
    with Authenticator(state=source) as auth:
        add_credential(auth, cred_id, RP_ID, _pem(key), backup_eligible=True, sign_count=9)
    export = tmp_path / "src.json"
    state_export.export_state(source, export)
    assert "imported_credentials" in export.read_text()
    copy = tmp_path / "copy.sqlite3"
    state_export.import_state(export, copy)
    with Authenticator(state=copy) as auth:
        ctap = Ctap2(VirtualCtapDevice(auth))
        assertion = ctap.get_assertion(
            RP_ID, os.urandom(32), [{"type": "public-key", "id": cred_id}]
        )
        assert assertion.auth_data.counter == 10
        assert _flags(bytes(assertion.auth_data)) == (True, False)

    # An export from schema 3 (no new tables) imports and is migrated to the current schema.
    old = tmp_path / "old.sqlite3"
    with Authenticator(state=old):
        pass
    db = sqlite3.connect(old)
    db.execute("DROP TABLE imported_credentials")
    db.execute("DROP TABLE credential_properties")
    db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (b"3",))
    db.commit()
    db.close()
    old_export = tmp_path / "old.json"
    state_export.export_state(old, old_export)
    assert "imported_credentials" not in old_export.read_text()
    migrated = tmp_path / "migrated.sqlite3"
    state_export.import_state(old_export, migrated)
    with Authenticator(state=migrated) as auth:
        assert auth.store.get_int("schema_version") == SCHEMA_VERSION
        add_credential(auth, cred_id, RP_ID, _pem(key))
        assert [c.credential_id for c in get_credentials(auth)] == [cred_id]
