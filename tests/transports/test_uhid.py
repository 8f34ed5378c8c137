"""struct uhid_event codec at exact byte offsets, and the UHID event loop over a socketpair.

The offsets are those of include/uapi/linux/uhid.h (packed, 4376 bytes), checked here with
struct calls written independently of transports/uhid.py. A SOCK_SEQPACKET socketpair stands
in for /dev/uhid: like the character device it delivers one whole event per read.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports import uhid
from softkey.transports.ctaphid import Command, HidError, Message, MessageReader, fragment

NATIVE = "<" if struct.pack("=H", 1) == b"\x01\x00" else ">"
DESCRIPTOR_HEX = (
    "06 D0 F1 09 01 A1 01 09 20 15 00 26 FF 00 75 08 95 40 81 02 09 21 15 00 26 FF 00 75 08 "
    "95 40 91 02 C0"
)


def u16(buf: bytes, offset: int) -> int:
    return struct.unpack_from(NATIVE + "H", buf, offset)[0]


def u32(buf: bytes, offset: int) -> int:
    return struct.unpack_from(NATIVE + "I", buf, offset)[0]


# -- codec --------------------------------------------------------------------------------------


def test_fido_report_descriptor() -> None:
    assert uhid.FIDO_REPORT_DESCRIPTOR == bytes.fromhex(DESCRIPTOR_HEX)
    assert len(uhid.FIDO_REPORT_DESCRIPTOR) == 34


def test_create2_layout() -> None:
    info = uhid.DeviceInfo(
        name="softkey test",
        phys="softkey/phys",
        uniq="softkey-abc",
        vendor=0x1209,
        product=0x5A5A,
        version=0x0102,
        country=7,
    )
    event = uhid.encode_create2(info)
    assert len(event) == 4376
    assert u32(event, 0) == 11  # UHID_CREATE2
    assert event[4 : 4 + 13] == b"softkey test\0"
    assert event[4 + 12 : 132] == bytes(128 - 12)  # name[128] NUL-padded
    assert event[132 : 132 + 13] == b"softkey/phys\0"
    assert event[196 : 196 + 12] == b"softkey-abc\0"
    assert u16(event, 260) == 34  # rd_size
    assert u16(event, 262) == 0x03  # bus: BUS_USB
    assert u32(event, 264) == 0x1209  # vendor
    assert u32(event, 268) == 0x5A5A  # product
    assert u32(event, 272) == 0x0102  # version
    assert u32(event, 276) == 7  # country
    assert event[280 : 280 + 34] == bytes.fromhex(DESCRIPTOR_HEX)
    assert event[280 + 34 :] == bytes(4376 - 280 - 34)


def test_input2_layout() -> None:
    report = bytes(range(64))
    event = uhid.encode_input2(report)
    assert len(event) == 4376
    assert u32(event, 0) == 12  # UHID_INPUT2
    assert u16(event, 4) == 64
    assert event[6:70] == report
    assert event[70:] == bytes(4376 - 70)


def test_destroy_and_replies_layout() -> None:
    destroy = uhid.encode_destroy()
    assert len(destroy) == 4376 and u32(destroy, 0) == 1 and destroy[4:] == bytes(4372)
    reply = uhid.encode_get_report_reply(0xABCDEF01, errno.EIO)
    assert u32(reply, 0) == 10 and u32(reply, 4) == 0xABCDEF01
    assert u16(reply, 8) == errno.EIO and u16(reply, 10) == 0
    set_reply = uhid.encode_set_report_reply(42, errno.EIO)
    assert u32(set_reply, 0) == 14 and u32(set_reply, 4) == 42 and u16(set_reply, 8) == errno.EIO


def _kernel_output(data: bytes, rtype: int = 1) -> bytes:
    """An UHID_OUTPUT event as the kernel writes it, built by hand."""
    buf = bytearray(4376)
    struct.pack_into(NATIVE + "I", buf, 0, 6)
    buf[4 : 4 + len(data)] = data
    struct.pack_into(NATIVE + "H", buf, 4100, len(data))
    buf[4102] = rtype
    return bytes(buf)


def test_decode_output_at_kernel_offsets() -> None:
    data = b"\0" + bytes(range(1, 65))
    event = uhid.decode_event(_kernel_output(data))
    assert event.type == uhid.EventType.OUTPUT
    assert event.data == data and len(event.data) == 65
    assert event.rtype == uhid.ReportType.OUTPUT
    assert uhid.encode_output(data) == _kernel_output(data)


def test_decode_other_events() -> None:
    start = bytearray(4376)
    struct.pack_into(NATIVE + "IQ", start, 0, 2, 0b101)
    assert uhid.decode_event(bytes(start)) == uhid.UhidEvent(2, dev_flags=0b101)
    get_report = bytearray(4376)
    struct.pack_into(NATIVE + "IIBB", get_report, 0, 9, 77, 3, 0)
    event = uhid.decode_event(bytes(get_report))
    assert (event.type, event.id, event.rnum, event.rtype) == (9, 77, 3, 0)
    set_report = bytearray(4376)
    struct.pack_into(NATIVE + "IIBBH", set_report, 0, 13, 78, 0, 0, 3)
    set_report[12:15] = b"abc"
    event = uhid.decode_event(bytes(set_report))
    assert (event.type, event.id, event.data) == (13, 78, b"abc")
    assert uhid.decode_event(struct.pack(NATIVE + "I", 4)).type == uhid.EventType.OPEN
    with pytest.raises(ValueError):
        uhid.decode_event(b"\x01\x02")


def test_output_size_is_clamped() -> None:
    raw = bytearray(_kernel_output(b"\0" * 10))
    struct.pack_into(NATIVE + "H", raw, 4100, 0xFFFF)
    assert len(uhid.decode_event(bytes(raw)).data) == 4096


@pytest.mark.parametrize("field", ["name", "phys", "uniq"])
def test_device_strings_must_be_ascii(field: str) -> None:
    with pytest.raises(ValueError):
        uhid.DeviceInfo(**{field: "clé"})
    with pytest.raises(ValueError):
        uhid.DeviceInfo(**{field: "x" * 200})
    with pytest.raises(ValueError):
        uhid.DeviceInfo(**{field: "a\nb"})


def test_open_uhid_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(uhid.UhidUnavailable) as excinfo:
        uhid.open_uhid(tmp_path / "uhid")
    assert excinfo.value.problem == "missing"
    assert "uhid" in str(excinfo.value)


def test_find_hidraw_matches_uniq(tmp_path: Path) -> None:
    for name, uniq in (("hidraw0", "other"), ("hidraw3", "softkey-123")):
        device = tmp_path / name / "device"
        device.mkdir(parents=True)
        (device / "uevent").write_text(
            f"DRIVER=hid-generic\nHID_ID=0003:00001209:00005A5A\nHID_UNIQ={uniq}\n"
        )
    assert uhid.find_hidraw("softkey-123", tmp_path) == "/dev/hidraw3"
    assert uhid.find_hidraw("softkey-12", tmp_path) is None
    assert uhid.find_hidraw("x", tmp_path / "missing") is None


# -- the event loop, with a socketpair as the kernel -------------------------------------------


class Kernel:
    """The kernel's side of /dev/uhid: reads our events, writes OUTPUT/START/OPEN events."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.events: list[uhid.UhidEvent] = []

    def read_event(self) -> uhid.UhidEvent:
        raw = self.sock.recv(8192)
        assert len(raw) == 4376  # every event is written whole
        event = uhid.decode_event(raw)
        self.events.append(event)
        return event

    def read_raw(self) -> bytes:
        return self.sock.recv(8192)

    def send(self, event: bytes) -> None:
        self.sock.send(event)


class HostConnection(CtapHidConnection):
    """A host process using the hidraw node: packets via the fake kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def write_packet(self, data: bytes) -> None:
        # hidraw puts the report number (0: no report IDs) before the 64 bytes: size 65.
        self.kernel.send(uhid.encode_output(b"\0" + bytes(data)))

    def read_packet(self) -> bytes:
        while True:
            event = self.kernel.read_event()
            if event.type == uhid.EventType.INPUT2:
                assert len(event.data) == 64
                return event.data

    def close(self) -> None:
        return None


@pytest.fixture
def plugged() -> Iterator[tuple[uhid.UhidDevice, Kernel, Authenticator]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    auth = Authenticator("ctap2.1", clock=FakeClock())
    info = uhid.DeviceInfo(name="softkey ctap2.1", uniq="softkey-test")
    device = uhid.UhidDevice(ours.fileno(), auth, info)
    kernel = Kernel(theirs)
    device.plug()
    created = kernel.read_event()
    assert created.type == uhid.EventType.CREATE2
    kernel.send(uhid.encode_start(0))
    kernel.send(uhid.encode_simple(uhid.EventType.OPEN))
    thread = threading.Thread(target=device.serve, daemon=True)
    thread.start()
    yield device, kernel, auth
    device.close()
    thread.join(5)
    assert not thread.is_alive()
    ours.close()
    theirs.close()


def _hid_device(kernel: Kernel) -> CtapHidDevice:
    descriptor = HidDescriptor("/dev/hidraw-test", 0x1209, 0x5A5A, 64, 64, "softkey", None)
    return CtapHidDevice(descriptor, HostConnection(kernel))


def test_init_getinfo_make_credential_through_the_event_loop(plugged) -> None:
    device, kernel, auth = plugged
    hid = _hid_device(kernel)
    assert hid.capabilities == 0x05
    ctap = Ctap2(hid)
    assert ctap.get_info().versions[-1] == "FIDO_2_1"
    made = ctap.make_credential(
        os.urandom(32),
        {"id": "example.com", "name": "Ex"},
        {"id": b"u1", "name": "alice"},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )
    assert made.auth_data.is_user_present()
    assert [c.user_name for c in auth.credentials()] == ["alice"]
    assert device.started and device.opened


def test_feature_report_requests_are_answered_at_once(plugged) -> None:
    device, kernel, _ = plugged
    kernel.send(uhid.encode_get_report(1234, 0, uhid.ReportType.FEATURE))
    reply = kernel.read_raw()
    assert u32(reply, 0) == 10 and u32(reply, 4) == 1234 and u16(reply, 8) == errno.EIO
    kernel.send(uhid.encode_set_report(99, 0, uhid.ReportType.FEATURE, b"x"))
    reply = kernel.read_raw()
    assert u32(reply, 0) == 14 and u32(reply, 4) == 99 and u16(reply, 8) == errno.EIO


def test_non_output_reports_and_close_events_are_harmless(plugged) -> None:
    device, kernel, _ = plugged
    kernel.send(uhid.encode_output(b"\0" + bytes(64), rtype=uhid.ReportType.FEATURE))
    kernel.send(uhid.encode_simple(uhid.EventType.CLOSE))
    kernel.send(struct.pack(NATIVE + "I", 99).ljust(4376, b"\0"))  # unknown type
    hid = _hid_device(kernel)  # still answers INIT
    assert hid.ping(b"still here") == b"still here"
    assert not device.opened


def test_replug_destroys_recreates_and_power_cycles(plugged) -> None:
    device, kernel, auth = plugged
    hid = _hid_device(kernel)
    ctap = Ctap2(hid)
    ctap.make_credential(
        os.urandom(32),
        {"id": "example.com"},
        {"id": b"u1", "name": "a"},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )
    auth.clock.advance(60)  # type: ignore[attr-defined]
    device.replug()
    assert kernel.read_event().type == uhid.EventType.DESTROY
    assert kernel.read_event().type == uhid.EventType.CREATE2
    assert auth.powered_up_at == auth.clock.monotonic()  # power_cycle() ran: window reopens
    # A new device: the old channel is gone, so the old handle gets INVALID_CHANNEL...
    with pytest.raises(CtapError) as excinfo:
        hid.ping(b"old channel")
    assert excinfo.value.code == HidError.INVALID_CHANNEL
    # ...and a host that opens it again finds the credential still there.
    assertion = Ctap2(_hid_device(kernel)).get_assertion("example.com", os.urandom(32))
    assert assertion.user["id"] == b"u1"


def test_close_sends_destroy() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        device = uhid.UhidDevice(ours.fileno(), Authenticator())
        kernel = Kernel(theirs)
        device.plug()
        assert kernel.read_event().type == uhid.EventType.CREATE2
        device.close()
        assert kernel.read_event().type == uhid.EventType.DESTROY
        device.close()  # idempotent: no second DESTROY
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(8192)


def test_output_packets_are_stripped_of_the_report_id(plugged) -> None:
    _, kernel, _ = plugged
    nonce = b"12345678"
    for report in fragment(0xFFFFFFFF, Command.INIT, nonce):
        kernel.send(uhid.encode_output(b"\0" + report))
    reader = MessageReader()
    message = None
    while message is None:
        event = kernel.read_event()
        assert event.type == uhid.EventType.INPUT2
        message = reader.feed(event.data)
    assert isinstance(message, Message) and message.data[:8] == nonce
