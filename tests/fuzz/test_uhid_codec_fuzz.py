"""The struct uhid_event codec and the UHID device's event handling, fuzzed.

Whatever /dev/uhid delivers (any length, any type, any sizes in the payload), decoding gives
an event or, only for fewer than the 4 bytes of ``type``, a ValueError; every field the
encoders write comes back from the decoder; and a device fed random events still answers a
CTAPHID INIT (the fuzz harness's UHID target checks that).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.tools.dev.fuzz import Harness, Target, WorldKind
from softkey.transports import uhid

EVENT_TYPES = st.sampled_from(list(uhid.EventType)) | st.integers(0, 2**32 - 1)
NATIVE_U32 = struct.Struct("=I")


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=uhid.EVENT_SIZE + 64))
def test_decode_any_bytes(raw: bytes) -> None:
    if len(raw) < 4:
        with pytest.raises(ValueError):
            uhid.decode_event(raw)
        return
    event = uhid.decode_event(raw)
    assert event.type == NATIVE_U32.unpack_from(raw)[0]
    assert len(event.data) <= uhid.DATA_MAX


@settings(max_examples=300, deadline=None)
@given(
    event_type=EVENT_TYPES,
    payload=st.binary(max_size=uhid.EVENT_SIZE),
)
def test_decode_typed_events_with_random_payloads(event_type: int, payload: bytes) -> None:
    raw = NATIVE_U32.pack(event_type) + payload
    event = uhid.decode_event(raw)
    assert event.type == event_type
    if event_type == uhid.EventType.OUTPUT:
        # The size field (u16 at 4100) is clamped to the 4096-byte data array.
        padded = raw[: uhid.EVENT_SIZE].ljust(uhid.EVENT_SIZE, b"\0")
        size = min(struct.unpack_from("=H", padded, 4100)[0], uhid.DATA_MAX)
        assert event.data == padded[4 : 4 + size]
        assert event.rtype == padded[4102]


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=uhid.DATA_MAX),
    rtype=st.sampled_from(list(uhid.ReportType)),
    request_id=st.integers(0, 2**32 - 1),
    rnum=st.integers(0, 255),
    dev_flags=st.integers(0, 2**64 - 1),
)
def test_encoders_and_decoder_agree(
    data: bytes, rtype: int, request_id: int, rnum: int, dev_flags: int
) -> None:
    encoded = [
        uhid.encode_output(data, rtype),
        uhid.encode_start(dev_flags),
        uhid.encode_get_report(request_id, rnum, rtype),
        uhid.encode_set_report(request_id, rnum, rtype, data[: uhid.DATA_MAX - 8]),
        uhid.encode_input2(data),
    ]
    assert all(len(event) == uhid.EVENT_SIZE for event in encoded)
    output, start, get_report, set_report, input2 = (uhid.decode_event(e) for e in encoded)
    assert (output.type, output.data, output.rtype) == (uhid.EventType.OUTPUT, data, rtype)
    assert (start.type, start.dev_flags) == (uhid.EventType.START, dev_flags)
    assert (get_report.id, get_report.rnum, get_report.rtype) == (request_id, rnum, rtype)
    assert (set_report.id, set_report.rnum, set_report.rtype) == (request_id, rnum, rtype)
    assert set_report.data == data[: uhid.DATA_MAX - 8]
    assert (input2.type, input2.data) == (uhid.EventType.INPUT2, data)


def _event(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


EVENTS = st.one_of(
    st.builds(
        lambda data, rtype: uhid.encode_output(data, rtype),
        st.binary(max_size=130),
        st.sampled_from(list(uhid.ReportType)) | st.integers(0, 255),
    ),
    st.builds(uhid.encode_start, st.integers(0, 2**64 - 1)),
    st.sampled_from([uhid.EventType.STOP, uhid.EventType.OPEN, uhid.EventType.CLOSE]).map(
        uhid.encode_simple
    ),
    st.builds(
        uhid.encode_get_report,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.integers(0, 255),
    ),
    st.builds(
        uhid.encode_set_report,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=64),
    ),
    st.builds(lambda t, p: NATIVE_U32.pack(t) + p, EVENT_TYPES, st.binary(max_size=200)),
    st.binary(max_size=8),
)


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(EVENTS, max_size=8))
def test_event_streams_never_break_the_device(harness: Harness, events: list[bytes]) -> None:
    kind = WorldKind("ctap2.1", True, False)
    harness.run(bytes([kind.byte(Target.UHID)]) + b"".join(_event(e) for e in events))
