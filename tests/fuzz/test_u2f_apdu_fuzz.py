"""U2F APDUs, fuzzed: any bytes get a U2F status word, never 6F00 or a traceback; valid
requests in any ISO 7816-4 encoding give answers python-fido2 verifies; and the key's
credentials made beforehand keep working (the fuzz harness checks after every case)."""

from __future__ import annotations

import struct

import pytest
from fido2.ctap1 import RegistrationData, SignatureData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator
from softkey.tools.dev.fuzz import PROFILES, Harness, Target, WorldKind, check_u2f_reply

INS = st.sampled_from([0x01, 0x02, 0x03]) | st.integers(0, 255)
P1 = st.sampled_from([0x00, 0x03, 0x07, 0x08]) | st.integers(0, 255)
KINDS = st.builds(WorldKind, st.sampled_from(PROFILES), st.booleans(), st.booleans())


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes, extended: bool, le: bool) -> bytes:
    header = bytes([cla, ins, p1, p2])
    if extended:
        body = b"\x00" + struct.pack(">H", len(data)) + data if data else b""
        return header + body + (b"\x00\x00" if le else b"")
    body = bytes([len(data)]) + data if data else b""
    return header + body + (b"\x00" if le else b"")


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=KINDS, raw=st.binary(max_size=300))
def test_arbitrary_bytes(harness: Harness, kind: WorldKind, raw: bytes) -> None:
    harness.run(bytes([kind.byte(Target.U2F), 0]) + raw)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=KINDS,
    cla=st.sampled_from([0]) | st.integers(0, 255),
    ins=INS,
    p1=P1,
    p2=st.integers(0, 255),
    flags=st.integers(0, 7),
    material=st.binary(max_size=300),
)
def test_structured_apdus(
    harness: Harness, kind: WorldKind, cla: int, ins: int, p1: int, p2: int, flags: int,
    material: bytes,
) -> None:  # fmt: skip
    # flags bit 1 puts the key's own U2F application and key handle in the request.
    harness.run(bytes([kind.byte(Target.U2F), 1, cla, ins, p1, p2, flags]) + material)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    challenge=st.binary(min_size=32, max_size=32),
    app=st.binary(min_size=32, max_size=32),
    extended=st.booleans(),
    le=st.booleans(),
    p1=st.sampled_from([0x03, 0x08]),
)
def test_valid_requests_in_any_encoding_verify(
    challenge: bytes, app: bytes, extended: bool, le: bool, p1: int
) -> None:
    auth = Authenticator("ctap2.1")
    response = auth.handle_u2f(apdu(0, 1, 0, 0, challenge + app, extended, le))
    check_u2f_reply(response)
    assert response[-2:] == b"\x90\x00"
    registration = RegistrationData(response[:-2])
    registration.verify(app, challenge)  # python-fido2 checks the attestation signature

    handle = registration.key_handle
    body = challenge + app + bytes([len(handle)]) + handle
    response = auth.handle_u2f(apdu(0, 2, p1, 0, body, extended, le))
    assert response[-2:] == b"\x90\x00"
    signature = SignatureData(response[:-2])
    signature.verify(app, challenge, registration.public_key)
    assert signature.user_presence == (1 if p1 == 0x03 else 0)
    assert signature.counter == 1

    # Any single-bit change of the application makes the handle foreign.
    for bit in (0, 7, 255):
        other = bytearray(app)
        other[bit // 8] ^= 1 << (bit % 8)
        body = challenge + bytes(other) + bytes([len(handle)]) + handle
        assert auth.handle_u2f(apdu(0, 2, p1, 0, body, extended, le)) == b"\x6a\x80"
