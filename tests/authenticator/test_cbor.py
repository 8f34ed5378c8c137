"""CTAP2 canonical CBOR: encoder agrees with python-fido2 and cbor2; decoder is strict."""

from __future__ import annotations

import cbor2
import pytest
from fido2 import cbor as fido2_cbor
from hypothesis import given
from hypothesis import strategies as st

from softkey.authenticator import cbor
from softkey.authenticator.ctap import CtapError, Status

scalars = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.booleans()
)
keys = st.integers(min_value=-(2**31), max_value=2**32) | st.text(max_size=10)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_encoding_matches_python_fido2(value) -> None:
    assert cbor.encode(value) == fido2_cbor.encode(value)


@given(values)
def test_round_trip_through_our_decoder_and_cbor2(value) -> None:
    encoded = cbor.encode(value)
    assert cbor.decode(encoded) == value
    assert cbor2.loads(encoded) == value


def test_mixed_key_map_uses_ctap2_order_not_length_first() -> None:
    # 24 (major 0, 2 bytes) sorts before -1 (major 1, 1 byte) in CTAP2 canonical form.
    assert cbor.encode({-1: 0, 24: 0}) == bytes.fromhex("a2181800" + "2000")


@pytest.mark.parametrize(
    "hexdata",
    [
        "",  # nothing
        "18",  # truncated uint8
        "1817",  # 23 encoded in two bytes: not shortest form
        "190017",  # same, three bytes
        "5f4100ff",  # indefinite-length byte string
        "9f01ff",  # indefinite-length array
        "bf0101ff",  # indefinite-length map
        "a202010101",  # keys 2 then 1: not canonical order
        "a201010101",  # duplicate key
        "c11a514b67b0",  # tag
        "f93c00",  # half float
        "fb3ff0000000000000",  # double float
        "f7",  # undefined
        "62c328",  # invalid UTF-8
        "0000",  # trailing byte
        "a1",  # truncated map
        "5a7fffffff",  # byte string longer than the message
        "9bffffffffffffffff",  # huge array count
        "81" * 20 + "00",  # nested too deep
        "a1810000",  # array as a map key
        "1c",  # reserved additional info
    ],
)
def test_malformed_is_invalid_cbor(hexdata: str) -> None:
    with pytest.raises(CtapError) as exc:
        cbor.decode(bytes.fromhex(hexdata))
    assert exc.value.status == Status.INVALID_CBOR


@given(st.binary(max_size=64))
def test_decoder_never_raises_anything_but_ctap_error(data: bytes) -> None:
    try:
        cbor.decode(data)
    except CtapError as exc:
        assert exc.status == Status.INVALID_CBOR
