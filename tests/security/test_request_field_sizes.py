"""Request field sizes on the CTAP path: makeCredential, getAssertion, updateUserInformation.

- clientDataHash is a SHA-256 hash: exactly 32 bytes (CTAP 2.1 §6.1/§6.2, WebAuthn §5.8.1);
- user.id, the user handle, is 1 to 64 bytes (WebAuthn §5.4.3, §5.1.3 step 5);
- rp.id is 1 to 253 bytes (a domain name, WebAuthn §4 "RP ID", RFC 1035 §2.3.4);
- anything else is CTAP1_ERR_INVALID_LENGTH, "Invalid message or item length" (CTAP 2.1
  §8.2), and nothing is stored;
- user.name, user.displayName and rp.name are stored truncated to 64 bytes at a character
  boundary (CTAP 2.1 §6.1, WebAuthn §6.4.1 "String Truncation").

The limits are shared with the admin path (tools/admin.py add-credential) through
softkey.authenticator.params. The platform side is python-fido2's Ctap2, which sends
whatever it is given, against the in-process device.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement

from softkey.authenticator import Authenticator, Status, params
from softkey.authenticator.cbor import encode
from softkey.authenticator.ctap2 import rp_id_hash
from softkey.transports.inprocess import VirtualCtapDevice

sys.path.insert(0, str(Path(__file__).parents[1] / "authenticator"))  # pinkit (importlib mode)
from pinkit import PERM, make, with_pin  # noqa: E402

RP = {"id": "example.com", "name": "Example"}
ES256 = [{"type": "public-key", "alg": -7}]
RK = {"rk": True}


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator("ctap2.1")


@pytest.fixture
def ctap(auth: Authenticator) -> Ctap2:
    return Ctap2(VirtualCtapDevice(auth))


def _error(fn, *args, **kwargs) -> int:
    with pytest.raises(CtapError) as exc:
        fn(*args, **kwargs)
    return exc.value.code


def test_the_limits_are_the_documented_ones() -> None:
    assert params.CLIENT_DATA_HASH_LEN == 32
    assert (params.MIN_USER_HANDLE_LEN, params.MAX_USER_HANDLE_LEN) == (1, 64)
    assert params.MAX_RP_ID_LEN == 253
    assert params.MAX_NAME_LEN == 64


# -- clientDataHash ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_make_credential_client_data_hash_must_be_32_bytes(auth, ctap, size: int) -> None:
    status = _error(ctap.make_credential, os.urandom(size), RP, {"id": b"u"}, ES256, options=RK)
    assert status == Status.INVALID_LENGTH
    assert auth.store.resident_count() == 0


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_get_assertion_client_data_hash_must_be_32_bytes(ctap, size: int) -> None:
    ctap.make_credential(os.urandom(32), RP, {"id": b"u"}, ES256, options=RK)
    assert _error(ctap.get_assertion, "example.com", os.urandom(size)) == Status.INVALID_LENGTH


def test_32_byte_client_data_hash_works_both_ways(ctap) -> None:
    ctap.make_credential(os.urandom(32), RP, {"id": b"u"}, ES256, options=RK)
    assert ctap.get_assertion("example.com", os.urandom(32)).user == {"id": b"u"}


# -- user.id -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 65, 100, 1000])
@pytest.mark.parametrize("rk", [True, False])
def test_user_id_outside_1_to_64_bytes_is_refused_and_not_stored(
    auth, ctap, size: int, rk: bool
) -> None:
    ctap.make_credential(os.urandom(32), RP, {"id": b"existing"}, ES256, options=RK)
    before = auth.store.resident_count()
    options = RK if rk else None
    user = {"id": b"\x07" * size, "name": "mallory"}
    status = _error(ctap.make_credential, os.urandom(32), RP, user, ES256, options=options)
    assert status == Status.INVALID_LENGTH
    assert auth.store.resident_count() == before
    assert all(len(c.user_id) <= 64 for c in auth.credentials())


@pytest.mark.parametrize("size", [1, 63, 64])
def test_user_id_of_1_to_64_bytes_is_stored_whole(auth, ctap, size: int) -> None:
    user_id = os.urandom(size)
    ctap.make_credential(os.urandom(32), RP, {"id": user_id}, ES256, options=RK)
    assert [c.user_id for c in auth.credentials()] == [user_id]
    assert ctap.get_assertion("example.com", os.urandom(32)).user == {"id": user_id}


def test_65_byte_user_id_in_a_raw_request_is_refused(auth) -> None:
    # The same without python-fido2, as a hostile platform would send it.
    request = {1: os.urandom(32), 2: RP, 3: {"id": b"x" * 65}, 4: ES256, 7: RK}
    assert auth.handle_cbor(b"\x01" + encode(request)) == bytes([Status.INVALID_LENGTH])
    assert auth.store.resident_count() == 0


# -- rp.id -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rp_id",
    ["", "a" * 254, "a." * 200 + "com", "é" * 127],  # 0, 254, 403 and 254 bytes (UTF-8)
    ids=["empty", "254", "403", "254-utf8"],
)
def test_empty_or_overlong_rp_id_is_refused(auth, ctap, rp_id: str) -> None:
    status = _error(
        ctap.make_credential, os.urandom(32), {"id": rp_id}, {"id": b"u"}, ES256, options=RK
    )
    assert status == Status.INVALID_LENGTH
    assert auth.store.resident_count() == 0
    assert _error(ctap.get_assertion, rp_id, os.urandom(32)) == Status.INVALID_LENGTH


@pytest.mark.parametrize("rp_id", ["a", "a" * 253, "é" * 126 + "a"], ids=["1", "253", "253-utf8"])
def test_rp_id_of_1_to_253_bytes_works(auth, ctap, rp_id: str) -> None:
    ctap.make_credential(os.urandom(32), {"id": rp_id}, {"id": b"u"}, ES256, options=RK)
    assert [c.rp_id for c in auth.credentials()] == [rp_id]
    assert ctap.get_assertion(rp_id, os.urandom(32)).user == {"id": b"u"}


# -- names: stored truncated -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("n" * 64, "n" * 64),
        ("n" * 65, "n" * 64),
        ("n" * 1000, "n" * 64),
        ("é" * 40, "é" * 32),  # 2-byte characters: exactly 64 bytes
        ("€" * 30, "€" * 21),  # 3-byte characters: 63 bytes, never half a character
        ("a" + "😀" * 20, "a" + "😀" * 15),  # 1 + 4 * 15 = 61 bytes
    ],
    ids=["64", "65", "1000", "2-byte", "3-byte", "4-byte"],
)
def test_names_are_stored_at_most_64_bytes(auth, ctap, name: str, stored: str) -> None:
    user = {"id": b"u", "name": name, "displayName": name}
    ctap.make_credential(
        os.urandom(32), {"id": "example.com", "name": name}, user, ES256, options=RK
    )
    (cred,) = auth.credentials()
    assert (cred.rp_name, cred.user_name, cred.user_display_name) == (stored, stored, stored)
    assert all(len(s.encode()) <= 64 for s in (cred.rp_name, cred.user_name))


def test_absent_names_stay_absent(auth, ctap) -> None:
    ctap.make_credential(os.urandom(32), {"id": "example.com"}, {"id": b"u"}, ES256, options=RK)
    (cred,) = auth.credentials()
    assert (cred.rp_name, cred.user_name, cred.user_display_name) == (None, None, None)


# -- credentialManagement updateUserInformation -------------------------------------------------


def _managed(user: bytes = b"alice"):
    key = with_pin("ctap2.1")
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.MAKE_CREDENTIAL, "example.com")
    make(key, token, cp.protocol.VERSION, user=user, rk=True)
    cp = key.client_pin()
    cm = CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT))
    entry = cm.enumerate_creds(rp_id_hash("example.com"))[0]
    return key, cm, entry[CredentialManagement.RESULT.CREDENTIAL_ID]


def _raw_update(key, cm: CredentialManagement, descriptor, user: dict) -> bytes:
    """updateUserInformation (0x0A/0x07) written by hand: python-fido2 drops an empty id."""
    sub_params = {2: {"id": descriptor["id"], "type": "public-key"}, 3: user}
    protocol = cm.pin_uv.protocol
    auth_param = protocol.authenticate(cm.pin_uv.token, b"\x07" + encode(sub_params))
    request = {1: 0x07, 2: sub_params, 3: protocol.VERSION, 4: auth_param}
    return key.auth.handle_cbor(b"\x0a" + encode(request))


@pytest.mark.parametrize("size", [0, 65, 200])
def test_update_user_information_refuses_a_user_id_outside_1_to_64(size: int) -> None:
    key, cm, descriptor = _managed()
    response = _raw_update(key, cm, descriptor, {"id": b"a" * size, "name": "x" * 100})
    assert response == bytes([Status.INVALID_LENGTH])
    (cred,) = key.auth.credentials()
    assert (cred.user_id, cred.user_name) == (b"alice", "alice")
    # The same request with the credential's own user.id goes through.
    assert _raw_update(key, cm, descriptor, {"id": b"alice", "name": "x"}) == b"\x00"
    assert key.auth.credentials()[0].user_name == "x"


def test_update_user_information_stores_names_truncated() -> None:
    key, cm, descriptor = _managed()
    cm.update_user_info(descriptor, {"id": b"alice", "name": "n" * 300, "displayName": "€" * 30})
    (cred,) = key.auth.credentials()
    assert (cred.user_name, cred.user_display_name) == ("n" * 64, "€" * 21)


def test_update_user_information_with_a_64_byte_user_id() -> None:
    user_id = b"\x01" * 64
    key, cm, descriptor = _managed(user_id)
    cm.update_user_info(descriptor, {"id": user_id, "name": "new"})
    (cred,) = key.auth.credentials()
    assert (cred.user_id, cred.user_name) == (user_id, "new")


# -- the admin path agrees ---------------------------------------------------------------------


def test_admin_user_handle_limit_is_the_ctap_one() -> None:
    from softkey.tools import admin

    assert admin.MAX_USER_HANDLE == params.MAX_USER_HANDLE_LEN
    assert params.user_handle_problem(b"") is not None
    assert params.user_handle_problem(b"x" * 64) is None
    assert params.user_handle_problem(b"x" * 65) is not None
    assert params.rp_id_problem("") is not None
    assert params.rp_id_problem("a" * 253) is None
    assert params.rp_id_problem("a" * 254) is not None
