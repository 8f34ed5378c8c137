"""Credential IDs through the device's front doors (tests/authenticator/test_keywrap.py checks
the KeyWrapper itself): every single-bit flip of a real ID, and every ID presented for
another RP, is answered as if it did not exist — by getAssertion (allowList), by
makeCredential's excludeList, and by U2F AUTHENTICATE — for non-resident, resident and
U2F-registered credentials alike."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from softkey.authenticator import Authenticator, Status, cose
from softkey.authenticator.cbor import decode, encode
from softkey.authenticator.ctap import CoseAlg

RP_A = "bank.example"
# Other RPs, including near-misses of RP A: a suffix, a subdomain, case, a trailing dot.
OTHER_RPS = ["evil.example", "bank.example.", "BANK.EXAMPLE", "login.bank.example", "ank.example"]
SW_WRONG_DATA = b"\x6a\x80"
SW_NEEDS_TOUCH = b"\x69\x85"  # check-only on our own handle: "test of user presence required"


def _make(auth: Authenticator, rp: str, user: bytes, rk: bool) -> bytes:
    body: dict = {
        1: os.urandom(32),
        2: {"id": rp},
        3: {"id": user},
        4: [{"type": "public-key", "alg": -7}],
    }
    if rk:
        body[7] = {"rk": True}
    response = auth.handle_cbor(b"\x01" + encode(body))
    assert response[0] == 0, response.hex()
    auth_data = decode(response[1:])[2]
    length = int.from_bytes(auth_data[53:55], "big")
    return bytes(auth_data[55 : 55 + length])


def _u2f_register(auth: Authenticator, app: bytes) -> bytes:
    response = auth.handle_u2f(b"\x00\x01\x03\x00\x40" + os.urandom(32) + app + b"\x00")
    assert response[-2:] == b"\x90\x00"
    return response[67 : 67 + response[66]]


def _assert(auth: Authenticator, rp: str, cred_id: bytes) -> int:
    body = {1: rp, 2: os.urandom(32), 3: [{"type": "public-key", "id": cred_id}]}
    return auth.handle_cbor(b"\x02" + encode(body))[0]


def _excluded(auth: Authenticator, rp: str, cred_id: bytes) -> int:
    body = {
        1: os.urandom(32),
        2: {"id": rp},
        3: {"id": b"someone-else"},
        4: [{"type": "public-key", "alg": -7}],
        5: [{"type": "public-key", "id": cred_id}],
    }
    return auth.handle_cbor(b"\x01" + encode(body))[0]


def _u2f_check(auth: Authenticator, app: bytes, handle: bytes) -> bytes:
    data = os.urandom(32) + app + bytes([len(handle)]) + handle
    return auth.handle_u2f(b"\x00\x02\x07\x00" + bytes([len(data)]) + data)


@pytest.fixture(scope="module")
def key() -> tuple[Authenticator, dict[str, bytes]]:
    auth = Authenticator("ctap2.1")
    ids = {
        "non-resident": _make(auth, RP_A, b"alice", rk=False),
        "resident": _make(auth, RP_A, b"bob", rk=True),
        "u2f": _u2f_register(auth, hashlib.sha256(RP_A.encode()).digest()),
    }
    return auth, ids


@pytest.mark.parametrize("kind", ["non-resident", "resident", "u2f"])
def test_every_single_bit_flip_is_rejected(key, kind: str) -> None:
    auth, ids = key
    original = ids[kind]
    app = hashlib.sha256(RP_A.encode()).digest()
    # The genuine ID works through every door...
    assert _assert(auth, RP_A, original) == Status.SUCCESS
    assert _u2f_check(auth, app, original) == SW_NEEDS_TOUCH
    # ...and no ID one bit away from it does.
    for bit in range(len(original) * 8):
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        tampered = bytes(flipped)
        assert _assert(auth, RP_A, tampered) == Status.NO_CREDENTIALS, f"bit {bit}"
        assert _u2f_check(auth, app, tampered) == SW_WRONG_DATA, f"bit {bit}"
    # Shorter or longer is no better.
    for tampered in (original[:-1], original + b"\x00", original[1:], b"\x00" + original):
        assert _assert(auth, RP_A, tampered) == Status.NO_CREDENTIALS
        assert _u2f_check(auth, app, tampered) == SW_WRONG_DATA


@pytest.mark.parametrize("kind", ["non-resident", "resident", "u2f"])
@pytest.mark.parametrize("other", OTHER_RPS)
def test_an_id_for_rp_a_is_unknown_to_rp_b(key, kind: str, other: str) -> None:
    auth, ids = key
    cred_id = ids[kind]
    assert _assert(auth, other, cred_id) == Status.NO_CREDENTIALS
    # excludeList: B cannot learn that the user has an account at A.
    assert _excluded(auth, RP_A, cred_id) == Status.CREDENTIAL_EXCLUDED
    assert _excluded(auth, other, cred_id) == Status.SUCCESS
    assert _u2f_check(auth, hashlib.sha256(other.encode()).digest(), cred_id) == SW_WRONG_DATA
    # Usernameless login at B does not offer A's resident credential.
    body = {1: other, 2: os.urandom(32)}
    assert auth.handle_cbor(b"\x02" + encode(body))[0] == Status.NO_CREDENTIALS


def test_a_reset_key_knows_none_of_its_old_ids(key) -> None:
    auth = Authenticator("ctap2.1")
    old = {"nr": _make(auth, RP_A, b"a", rk=False), "rk": _make(auth, RP_A, b"b", rk=True)}
    auth.factory_reset()
    for cred_id in old.values():
        assert _assert(auth, RP_A, cred_id) == Status.NO_CREDENTIALS
    # And another key (another master key) never knew them.
    _, ids = key
    stranger = Authenticator("ctap2.1")
    for cred_id in ids.values():
        assert _assert(stranger, RP_A, cred_id) == Status.NO_CREDENTIALS


@pytest.mark.parametrize("alg", [CoseAlg.ES256, CoseAlg.ES384])
def test_only_loadable_private_keys_are_accepted(alg: int) -> None:
    """Unwrapping checks a P-256/P-384 scalar with a range check (0 < d < n) instead of
    loading the key (a scalar multiplication); it must agree with cryptography exactly."""
    spec = cose._EC[alg]
    curve = spec.curve
    size = spec.size
    order = spec.order
    for value in (0, 1, 2, order - 2, order - 1, order, order + 1, 2 ** (8 * size) - 1):
        try:
            ec.derive_private_key(value, curve)
            loadable = True
        except ValueError:
            loadable = False
        assert cose.private_key_valid(alg, value.to_bytes(size, "big")) == loadable, value
    assert not cose.private_key_valid(alg, b"\x01" * (size - 1))
    assert not cose.private_key_valid(alg, b"\x01" * (size + 1))
