"""CBOR map keys of other types never alias integer keys (true/false vs 1/0, 1.0 vs 1).

The finding: the strict decoder checked key order and duplicates on the encoded bytes but
stored keys in a Python dict, where ``True == 1`` and ``hash(True) == hash(1)``. A
makeCredential ``{1: cdhA, 2: rp, 3: user, 4: params, true: cdhB}`` is canonically ordered
(major type 0 sorts before major type 7), so it was accepted and decoded to
``{1: cdhB, ...}``: the attestation was signed over cdhB. Every map CTAP 2.1 defines is keyed
by integers or text strings (§8 "Message Encoding"; COSE_Keys, RFC 8152 §7), so any other
key is now CTAP2_ERR_INVALID_CBOR, in every nested map too.

Requests here are built byte by byte (not with cbor2 or our own encoder, which would
normalise or refuse the very maps under test).
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from fido2.attestation import PackedAttestation
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import PinProtocolV2
from fido2.webauthn import AuthenticatorData
from hypothesis import given
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, Status, cbor
from softkey.authenticator.ctap import CtapError
from softkey.transports.inprocess import VirtualCtapDevice

# -- a tiny hand-written CBOR writer -------------------------------------------------------

TRUE, FALSE, NULL = b"\xf5", b"\xf4", b"\xf6"
FLOAT16_ONE = b"\xf9\x3c\x00"  # 1.0 as a half float
FLOAT32_ONE = b"\xfa\x3f\x80\x00\x00"  # 1.0 as a single
FLOAT64_ONE = b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00"  # 1.0 as a double


def head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def uint(n: int) -> bytes:
    return head(0, n) if n >= 0 else head(1, -1 - n)


def bstr(data: bytes) -> bytes:
    return head(2, len(data)) + data


def tstr(text: str) -> bytes:
    data = text.encode()
    return head(3, len(data)) + data


def array(*items: bytes) -> bytes:
    return head(4, len(items)) + b"".join(items)


def cmap(*pairs: tuple[bytes, bytes]) -> bytes:
    """A map of already-encoded (key, value) pairs, written in the order given."""
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def test_writer_matches_known_encodings() -> None:
    # RFC 8949 Appendix A examples, so the writer itself is not what is under test.
    assert uint(0) == bytes.fromhex("00")
    assert uint(24) == bytes.fromhex("1818")
    assert uint(1000) == bytes.fromhex("1903e8")
    assert uint(-1) == bytes.fromhex("20")
    assert uint(-25) == bytes.fromhex("3818")
    assert bstr(b"\x01\x02\x03\x04") == bytes.fromhex("4401020304")
    assert tstr("a") == bytes.fromhex("6161")
    assert array(uint(1), uint(2)) == bytes.fromhex("820102")
    assert cmap((uint(1), uint(2)), (uint(3), uint(4))) == bytes.fromhex("a201020304")


# -- requests ------------------------------------------------------------------------------

CDH_A = hashlib.sha256(b"client data the platform showed the user").digest()
CDH_B = hashlib.sha256(b"client data the attacker wants signed").digest()
RP_ID = "example.com"
RP = cmap((tstr("id"), tstr(RP_ID)))
USER = cmap((tstr("id"), bstr(b"alice")))
ES256 = cmap((tstr("alg"), uint(-7)), (tstr("type"), tstr("public-key")))
PARAMS = array(ES256)


def make_credential(*extra: tuple[bytes, bytes], **members: bytes) -> bytes:
    """authenticatorMakeCredential with members 1-4 (overridable as m1..m4) and ``extra``
    pairs appended after them, in the order given."""
    pairs = [
        (uint(1), members.pop("m1", bstr(CDH_A))),
        (uint(2), members.pop("m2", RP)),
        (uint(3), members.pop("m3", USER)),
        (uint(4), members.pop("m4", PARAMS)),
    ]
    assert not members
    return b"\x01" + cmap(*pairs, *extra)


def get_assertion(*extra: tuple[bytes, bytes]) -> bytes:
    return b"\x02" + cmap((uint(1), tstr(RP_ID)), (uint(2), bstr(CDH_A)), *extra)


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator("ctap2.1")


def _ok(response: bytes) -> dict:
    assert response[:1] == b"\x00", f"status 0x{response[0]:02x}"
    return cbor.decode(response[1:])


def _registered(auth: Authenticator) -> bytes:
    """The ID of a discoverable credential for RP_ID, made through python-fido2."""
    ctap = Ctap2(VirtualCtapDevice(auth))
    att = ctap.make_credential(
        os.urandom(32),
        {"id": RP_ID},
        {"id": b"bob"},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )
    return att.auth_data.credential_data.credential_id


def test_a_normal_hand_built_request_works_and_is_signed_over_its_hash(auth) -> None:
    body = _ok(auth.handle_cbor(make_credential()))
    auth_data = AuthenticatorData(body[2])
    PackedAttestation().verify(body[3], auth_data, CDH_A)  # raises if not over CDH_A
    assert auth_data.rp_id_hash == hashlib.sha256(RP_ID.encode()).digest()


def test_true_key_after_key_1_does_not_replace_the_client_data_hash(auth) -> None:
    count = auth.store.resident_count()
    response = auth.handle_cbor(make_credential((TRUE, bstr(CDH_B))))
    assert response == bytes([Status.INVALID_CBOR])
    assert auth.store.resident_count() == count


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (TRUE, bstr(CDH_B)),  # aliases 1 (clientDataHash)
        (FALSE, bstr(CDH_B)),  # aliases 0
        (NULL, bstr(CDH_B)),
        (FLOAT16_ONE, bstr(CDH_B)),
        (FLOAT32_ONE, bstr(CDH_B)),
        (FLOAT64_ONE, bstr(CDH_B)),
        (bstr(b"\x01"), bstr(CDH_B)),  # byte-string keys: no CTAP map has them
        (b"\xe0", bstr(CDH_B)),  # simple value 0
        (b"\xf8\x20", bstr(CDH_B)),  # simple value 32 (two-byte form)
    ],
    ids=["true", "false", "null", "half-1.0", "single-1.0", "double-1.0", "bytes", "s0", "s32"],
)
def test_make_credential_with_a_non_integer_non_text_key_is_invalid_cbor(
    auth, key: bytes, value: bytes
) -> None:
    # After every integer key, as canonical order wants (major 2 before 3 after 0/1, 7 last).
    if key[0] >> 5 == 2:
        request = b"\x01" + cmap(
            (uint(1), bstr(CDH_A)),
            (uint(2), RP),
            (uint(3), USER),
            (uint(4), PARAMS),
            (key, value),
        )
    else:
        request = make_credential((key, value))
    assert auth.handle_cbor(request) == bytes([Status.INVALID_CBOR])


def test_false_next_to_key_0_is_invalid_cbor(auth) -> None:
    # {0: x, 1..4, false: y}: no CTAP member 0, but the two must still never merge.
    members = [
        (uint(0), bstr(b"x")),
        (uint(1), bstr(CDH_A)),
        (uint(2), RP),
        (uint(3), USER),
        (uint(4), PARAMS),
    ]
    request = b"\x01" + cmap(*members, (FALSE, bstr(b"y")))
    assert auth.handle_cbor(request) == bytes([Status.INVALID_CBOR])
    # The same request without the `false` key is fine (unknown member 0 is ignored).
    _ok(auth.handle_cbor(b"\x01" + cmap(*members)))


def test_get_assertion_with_a_true_key_is_invalid_cbor(auth) -> None:
    _registered(auth)
    _ok(auth.handle_cbor(get_assertion()))
    # true would alias 1 (rpId): an attacker's second RP ID.
    assert auth.handle_cbor(get_assertion((TRUE, tstr("evil.example")))) == bytes(
        [Status.INVALID_CBOR]
    )
    assert auth.handle_cbor(get_assertion((FALSE, tstr("x")))) == bytes([Status.INVALID_CBOR])
    assert auth.handle_cbor(get_assertion((FLOAT16_ONE, tstr("x")))) == bytes([Status.INVALID_CBOR])


NESTED = {
    "rp": dict(m2=cmap((tstr("id"), tstr(RP_ID)), (TRUE, tstr("evil.example")))),
    "user": dict(m3=cmap((tstr("id"), bstr(b"alice")), (TRUE, bstr(b"mallory")))),
    "pubKeyCredParams entry": dict(
        m4=array(
            cmap((tstr("alg"), uint(-7)), (tstr("type"), tstr("public-key")), (TRUE, uint(-8)))
        )
    ),
    "user float key": dict(m3=cmap((tstr("id"), bstr(b"alice")), (FLOAT16_ONE, bstr(b"m")))),
}


@pytest.mark.parametrize("members", NESTED.values(), ids=NESTED.keys())
def test_nested_entity_maps_refuse_bool_and_float_keys(auth, members: dict) -> None:
    assert auth.handle_cbor(make_credential(**members)) == bytes([Status.INVALID_CBOR])
    assert auth.store.resident_count() == 0


def test_options_and_extensions_maps_refuse_bool_keys(auth) -> None:
    options = cmap((tstr("rk"), TRUE), (TRUE, FALSE))
    assert auth.handle_cbor(make_credential((uint(7), options))) == bytes([Status.INVALID_CBOR])
    extensions = cmap((tstr("credProtect"), uint(3)), (TRUE, uint(1)))
    assert auth.handle_cbor(make_credential((uint(6), extensions))) == bytes([Status.INVALID_CBOR])
    assert auth.store.resident_count() == 0
    # The same maps without the stray key work.
    _ok(auth.handle_cbor(make_credential((uint(7), cmap((tstr("rk"), TRUE))))))
    assert auth.store.resident_count() == 1


# -- values: bool is not an integer and an integer is not a bool -----------------------------


def _flags(response: bytes) -> int:
    return _ok(response)[2][32]


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ((uint(7), cmap((tstr("rk"), uint(1)))), Status.CBOR_UNEXPECTED_TYPE),  # option = 1
        ((uint(7), cmap((tstr("up"), uint(0)))), Status.CBOR_UNEXPECTED_TYPE),
        ((uint(9), TRUE), Status.CBOR_UNEXPECTED_TYPE),  # pinUvAuthProtocol = true
        ((uint(10), TRUE), Status.CBOR_UNEXPECTED_TYPE),  # enterpriseAttestation = true
        ((uint(6), cmap((tstr("hmac-secret"), uint(1)))), Status.CBOR_UNEXPECTED_TYPE),
    ],
    ids=["rk=1", "up=0", "protocol=true", "ep=true", "hmac-secret=1"],
)
def test_bool_and_int_values_are_not_interchangeable(auth, extra, status) -> None:
    assert auth.handle_cbor(make_credential(extra)) == bytes([status])
    assert auth.store.resident_count() == 0


def test_pub_key_cred_params_alg_true_is_unexpected_type(auth) -> None:
    params = array(cmap((tstr("alg"), TRUE), (tstr("type"), tstr("public-key"))))
    assert auth.handle_cbor(make_credential(m4=params)) == bytes([Status.CBOR_UNEXPECTED_TYPE])


def test_cred_protect_true_is_not_level_1(auth) -> None:
    ed = 0x80  # authenticatorData flag: extension data present
    level_1 = cmap((tstr("credProtect"), uint(1)))
    assert _flags(auth.handle_cbor(make_credential((uint(6), level_1)))) & ed
    as_true = cmap((tstr("credProtect"), TRUE))
    # Not an integer level, so ignored like an unknown level: no credProtect output.
    assert not _flags(auth.handle_cbor(make_credential((uint(6), as_true)))) & ed


# -- clientPIN: the platform's COSE_Key ----------------------------------------------------


def _set_pin_request(auth: Authenticator, cose_key_pairs) -> bytes:
    """A setPIN (protocol 2) whose keyAgreement is written from ``cose_key_pairs(x, y)``."""
    ctap = Ctap2(VirtualCtapDevice(auth))
    peer = ctap.client_pin(2, 0x02)[1]  # getKeyAgreement
    protocol = PinProtocolV2()
    ours, shared = protocol.encapsulate(peer)
    new_pin_enc = protocol.encrypt(shared, b"123456".ljust(64, b"\x00"))
    request = b"\x06" + cmap(
        (uint(1), uint(2)),
        (uint(2), uint(3)),  # setPIN
        (uint(3), cmap(*cose_key_pairs(bstr(ours[-2]), bstr(ours[-3])))),
        (uint(4), bstr(protocol.authenticate(shared, new_pin_enc))),
        (uint(5), bstr(new_pin_enc)),
    )
    return request


def _pin_set(auth: Authenticator) -> bool:
    return bool(auth.pin_status().get("set"))


def test_cose_key_with_correct_members_sets_the_pin(auth) -> None:
    request = _set_pin_request(
        auth,
        lambda x, y: [
            (uint(1), uint(2)),
            (uint(3), uint(-25)),
            (uint(-1), uint(1)),
            (uint(-2), x),
            (uint(-3), y),
        ],
    )
    assert auth.handle_cbor(request) == b"\x00"
    assert _pin_set(auth)


def test_cose_key_true_key_does_not_replace_kty(auth) -> None:
    # kty 99 under key 1, then `true: 2`: once merged it read as kty 2 (EC2).
    request = _set_pin_request(
        auth,
        lambda x, y: [
            (uint(1), uint(99)),
            (uint(3), uint(-25)),
            (uint(-1), uint(1)),
            (uint(-2), x),
            (uint(-3), y),
            (TRUE, uint(2)),
        ],
    )
    assert auth.handle_cbor(request) == bytes([Status.INVALID_CBOR])
    assert not _pin_set(auth)


def test_cose_key_crv_true_is_not_p256(auth) -> None:
    request = _set_pin_request(
        auth,
        lambda x, y: [
            (uint(1), uint(2)),
            (uint(3), uint(-25)),
            (uint(-1), TRUE),
            (uint(-2), x),
            (uint(-3), y),
        ],
    )
    assert auth.handle_cbor(request) == bytes([Status.INVALID_PARAMETER])
    assert not _pin_set(auth)


# -- the decoder, as a property -------------------------------------------------------------

# Keys as (encoded bytes, the Python value a faithful decoder must give).
int_keys = st.integers(min_value=-30, max_value=30).map(lambda n: (uint(n), n))
bool_keys = st.sampled_from([(TRUE, True), (FALSE, False)])
text_keys = st.text(max_size=3).map(lambda s: (tstr(s), s))


def _canonical(entries: list[tuple[bytes, object]]) -> list[tuple[bytes, object]]:
    """Distinct encoded keys in CTAP2 canonical order (major type, length, bytes)."""
    unique = {encoded: value for encoded, value in entries}
    return sorted(unique.items(), key=lambda kv: (kv[0][0] >> 5, len(kv[0]), kv[0]))


@given(st.lists(int_keys | bool_keys, min_size=1, max_size=8))
def test_int_and_bool_keys_never_merge(entries) -> None:
    keys = _canonical(entries)
    # Value i marks entry i, so a merge would show as a missing or moved value.
    data = cmap(*[(encoded, uint(i)) for i, (encoded, _) in enumerate(keys)])
    try:
        decoded = cbor.decode(data)
    except CtapError as exc:
        assert exc.status == Status.INVALID_CBOR
        assert any(type(value) is bool for _, value in keys)
        return
    assert len(decoded) == len(keys)
    for i, (_, value) in enumerate(keys):
        (match,) = [k for k in decoded if k == value and type(k) is type(value)]
        assert decoded[match] == i


@given(st.lists(int_keys | bool_keys, min_size=1, max_size=6), st.sampled_from([1, 2, 3, 4]))
def test_int_and_bool_keys_never_merge_in_a_nested_map(entries, member) -> None:
    keys = _canonical(entries)
    inner = cmap(*[(encoded, uint(i)) for i, (encoded, _) in enumerate(keys)])
    outer = cmap((uint(member), inner))
    try:
        decoded = cbor.decode(outer)[member]
    except CtapError as exc:
        assert exc.status == Status.INVALID_CBOR
        return
    assert len(decoded) == len(keys)
    assert all(type(k) is int for k in decoded)  # no bool survives as a key


@given(st.lists(int_keys | text_keys, min_size=0, max_size=8))
def test_int_and_text_keys_still_decode_faithfully(entries) -> None:
    keys = _canonical(entries)
    data = cmap(*[(encoded, uint(i)) for i, (encoded, _) in enumerate(keys)])
    decoded = cbor.decode(data)
    assert list(decoded.items()) == [(value, i) for i, (_, value) in enumerate(keys)]
