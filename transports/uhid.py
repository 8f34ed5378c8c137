"""Linux /dev/uhid: the key as a USB HID device every FIDO client can see.

Writing UHID_CREATE2 to /dev/uhid makes the kernel create a HID device and a /dev/hidrawN node;
browsers, libfido2, OpenSSH and python-fido2 then talk CTAPHID to it as to a plugged-in key.
Device-to-host reports go out as UHID_INPUT2 events; host-to-device reports arrive as
UHID_OUTPUT events.

``struct uhid_event`` (include/uapi/linux/uhid.h) is packed, 4376 bytes, native byte order:
a u32 ``type`` at offset 0 and a union at offset 4 (offsets below are from the event start):

- CREATE2: name[128]@4 phys[64]@132 uniq[64]@196 rd_size u16@260 bus u16@262
  vendor u32@264 product u32@268 version u32@272 country u32@276 rd_data[4096]@280
- INPUT2: size u16@4 data[4096]@6
- OUTPUT: data[4096]@4 size u16@4100 rtype u8@4102
- GET_REPORT: id u32@4 rnum u8@8 rtype u8@9 -> GET_REPORT_REPLY: id u32@4 err u16@8 size u16@10
- SET_REPORT: id u32@4 rnum u8@8 rtype u8@9 size u16@10 data@12 -> SET_REPORT_REPLY: id@4 err@8
- START: dev_flags u64@4

Host-to-device reports carry a leading report-id byte (0: the FIDO descriptor has no report
IDs), so an OUTPUT of a 64-byte CTAPHID packet has size 65.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import IntEnum, unique
from pathlib import Path

from softkey.authenticator import Authenticator
from softkey.authenticator.environment import Clock

from .ctaphid import REPORT_SIZE, CtapHidEngine, capabilities_for
from .server import DEADLINE_SLACK, HidServer

log = logging.getLogger("softkey.uhid")

UHID_PATH = "/dev/uhid"
EVENT_SIZE = 4376
DATA_MAX = 4096
BUS_USB = 0x03
# pid.codes' open-source vendor ID; the product ID is this project's default. Both can be
# changed with --vendor-id/--product-id (e.g. to match an allow-list in a test setup).
DEFAULT_VENDOR_ID = 0x1209
DEFAULT_PRODUCT_ID = 0x5A5A

# Usage page 0xF1D0 (FIDO Alliance), usage 0x01 (CTAPHID), one 64-byte input report
# (usage 0x20) and one 64-byte output report (usage 0x21); no report IDs (CTAP 2.1 §11.2.8.1).
FIDO_REPORT_DESCRIPTOR = bytes.fromhex(
    "06d0f1"  # Usage Page (FIDO Alliance)
    "0901"  # Usage (CTAPHID)
    "a101"  # Collection (Application)
    "0920"  # Usage (Input Report Data)
    "1500"  # Logical Minimum (0)
    "26ff00"  # Logical Maximum (255)
    "7508"  # Report Size (8)
    "9540"  # Report Count (64)
    "8102"  # Input (Data, Var, Abs)
    "0921"  # Usage (Output Report Data)
    "1500"  # Logical Minimum (0)
    "26ff00"  # Logical Maximum (255)
    "7508"  # Report Size (8)
    "9540"  # Report Count (64)
    "9102"  # Output (Data, Var, Abs)
    "c0"  # End Collection
)

# Offsets inside struct uhid_event.
_TYPE = struct.Struct("=I")
_CREATE2_NAME, _CREATE2_PHYS, _CREATE2_UNIQ = 4, 132, 196
_CREATE2_TAIL = struct.Struct("=HHIIII")  # rd_size, bus, vendor, product, version, country
_CREATE2_TAIL_AT = 260
_CREATE2_RD_DATA = 280
_INPUT2_SIZE_AT, _INPUT2_DATA = 4, 6
_OUTPUT_DATA, _OUTPUT_SIZE_AT, _OUTPUT_RTYPE_AT = 4, 4100, 4102
_U16, _U32, _U64 = struct.Struct("=H"), struct.Struct("=I"), struct.Struct("=Q")


@unique
class EventType(IntEnum):
    DESTROY = 1
    START = 2
    STOP = 3
    OPEN = 4
    CLOSE = 5
    OUTPUT = 6
    GET_REPORT = 9
    GET_REPORT_REPLY = 10
    CREATE2 = 11
    INPUT2 = 12
    SET_REPORT = 13
    SET_REPORT_REPLY = 14


@unique
class ReportType(IntEnum):
    FEATURE = 0
    OUTPUT = 1
    INPUT = 2


class UhidUnavailable(Exception):
    """/dev/uhid cannot be opened; the message says why."""

    def __init__(self, message: str, *, problem: str) -> None:
        super().__init__(message)
        self.problem = problem  # missing | permission | other


@dataclass(frozen=True)
class DeviceInfo:
    """What UHID_CREATE2 tells the kernel about the device."""

    name: str = "softkey FIDO2 security key"
    phys: str = "softkey/uhid"
    uniq: str = "softkey"
    vendor: int = DEFAULT_VENDOR_ID
    product: int = DEFAULT_PRODUCT_ID
    version: int = 0x0100
    country: int = 0
    bus: int = BUS_USB  # libfido2 ignores FIDO devices on any other bus
    descriptor: bytes = FIDO_REPORT_DESCRIPTOR

    def __post_init__(self) -> None:
        # udev's fido_id and sysfs expect printable ASCII; the kernel wants NUL-terminated.
        for label, text, size in (
            ("name", self.name, 128),
            ("phys", self.phys, 64),
            ("uniq", self.uniq, 64),
        ):
            if not text.isascii() or not text.isprintable() or len(text) >= size:
                raise ValueError(f"UHID {label} must be printable ASCII shorter than {size}")
        if not 0 <= self.vendor <= 0xFFFF or not 0 <= self.product <= 0xFFFF:
            raise ValueError("USB vendor and product IDs are 16-bit numbers")
        if len(self.descriptor) > DATA_MAX:
            raise ValueError("report descriptor too long")


@dataclass(frozen=True)
class UhidEvent:
    """A decoded event from the kernel (only the fields its type defines are set)."""

    type: int
    data: bytes = b""
    rtype: int | None = None
    id: int | None = None
    rnum: int | None = None
    dev_flags: int | None = None


# -- codec -----------------------------------------------------------------------------------


def _event(type_: EventType) -> bytearray:
    buf = bytearray(EVENT_SIZE)
    _TYPE.pack_into(buf, 0, type_)
    return buf


def encode_create2(info: DeviceInfo) -> bytes:
    buf = _event(EventType.CREATE2)
    for offset, text in (
        (_CREATE2_NAME, info.name),
        (_CREATE2_PHYS, info.phys),
        (_CREATE2_UNIQ, info.uniq),
    ):
        raw = text.encode("ascii")
        buf[offset : offset + len(raw)] = raw
    _CREATE2_TAIL.pack_into(
        buf,
        _CREATE2_TAIL_AT,
        len(info.descriptor),
        info.bus,
        info.vendor,
        info.product,
        info.version,
        info.country,
    )
    buf[_CREATE2_RD_DATA : _CREATE2_RD_DATA + len(info.descriptor)] = info.descriptor
    return bytes(buf)


def encode_input2(report: bytes) -> bytes:
    if len(report) > DATA_MAX:
        raise ValueError("input report too long")
    buf = _event(EventType.INPUT2)
    _U16.pack_into(buf, _INPUT2_SIZE_AT, len(report))
    buf[_INPUT2_DATA : _INPUT2_DATA + len(report)] = report
    return bytes(buf)


def encode_destroy() -> bytes:
    return bytes(_event(EventType.DESTROY))


def encode_get_report_reply(request_id: int, err: int, data: bytes = b"") -> bytes:
    buf = _event(EventType.GET_REPORT_REPLY)
    struct.pack_into("=IHH", buf, 4, request_id, err, len(data))
    buf[12 : 12 + len(data)] = data
    return bytes(buf)


def encode_set_report_reply(request_id: int, err: int) -> bytes:
    buf = _event(EventType.SET_REPORT_REPLY)
    struct.pack_into("=IH", buf, 4, request_id, err)
    return bytes(buf)


# Kernel-side encoders: what /dev/uhid sends us. Tests use them to stand in for the kernel.


def encode_output(data: bytes, rtype: int = ReportType.OUTPUT) -> bytes:
    if len(data) > DATA_MAX:
        raise ValueError("output report too long")
    buf = _event(EventType.OUTPUT)
    buf[_OUTPUT_DATA : _OUTPUT_DATA + len(data)] = data
    _U16.pack_into(buf, _OUTPUT_SIZE_AT, len(data))
    buf[_OUTPUT_RTYPE_AT] = rtype
    return bytes(buf)


def encode_start(dev_flags: int = 0) -> bytes:
    buf = _event(EventType.START)
    _U64.pack_into(buf, 4, dev_flags)
    return bytes(buf)


def encode_simple(type_: EventType) -> bytes:
    """STOP, OPEN, CLOSE: events with no payload."""
    return bytes(_event(type_))


def encode_get_report(request_id: int, rnum: int, rtype: int) -> bytes:
    buf = _event(EventType.GET_REPORT)
    struct.pack_into("=IBB", buf, 4, request_id, rnum, rtype)
    return bytes(buf)


def encode_set_report(request_id: int, rnum: int, rtype: int, data: bytes) -> bytes:
    buf = _event(EventType.SET_REPORT)
    struct.pack_into("=IBBH", buf, 4, request_id, rnum, rtype, len(data))
    buf[12 : 12 + len(data)] = data
    return bytes(buf)


def decode_event(raw: bytes) -> UhidEvent:
    """Decode an event read from /dev/uhid (short reads are zero-padded)."""
    if len(raw) < _TYPE.size:
        raise ValueError(f"a UHID event is at least 4 bytes, got {len(raw)}")
    buf = bytes(raw[:EVENT_SIZE]).ljust(EVENT_SIZE, b"\0")
    (type_,) = _TYPE.unpack_from(buf, 0)
    if type_ == EventType.OUTPUT:
        (size,) = _U16.unpack_from(buf, _OUTPUT_SIZE_AT)
        size = min(size, DATA_MAX)
        return UhidEvent(
            type_, buf[_OUTPUT_DATA : _OUTPUT_DATA + size], rtype=buf[_OUTPUT_RTYPE_AT]
        )
    if type_ == EventType.START:
        return UhidEvent(type_, dev_flags=_U64.unpack_from(buf, 4)[0])
    if type_ == EventType.GET_REPORT:
        request_id, rnum, rtype = struct.unpack_from("=IBB", buf, 4)
        return UhidEvent(type_, id=request_id, rnum=rnum, rtype=rtype)
    if type_ == EventType.SET_REPORT:
        request_id, rnum, rtype, size = struct.unpack_from("=IBBH", buf, 4)
        return UhidEvent(
            type_, buf[12 : 12 + min(size, DATA_MAX)], rtype=rtype, id=request_id, rnum=rnum
        )
    if type_ == EventType.INPUT2:
        (size,) = _U16.unpack_from(buf, _INPUT2_SIZE_AT)
        return UhidEvent(type_, buf[_INPUT2_DATA : _INPUT2_DATA + min(size, DATA_MAX)])
    return UhidEvent(type_)


# -- opening /dev/uhid -------------------------------------------------------------------------


def open_uhid(path: str | os.PathLike[str] = UHID_PATH) -> int:
    """Open /dev/uhid, or raise UhidUnavailable (``.problem``: missing | permission | other)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UhidUnavailable(
            f"{path} does not exist: the kernel's uhid module is not loaded", problem="missing"
        ) from None
    except PermissionError:
        raise UhidUnavailable(
            f"permission denied opening {path}: it is root-only unless a udev rule opens it "
            "to your user",
            problem="permission",
        ) from None
    except OSError as exc:
        raise UhidUnavailable(
            f"cannot open {path}: {exc.strerror or exc}", problem="other"
        ) from None


def find_hidraw(uniq: str, sysfs: str | os.PathLike[str] = "/sys/class/hidraw") -> str | None:
    """The /dev/hidrawN node the kernel made for the UHID device with this ``uniq``."""
    root = Path(sysfs)
    try:
        nodes = sorted(root.iterdir())
    except OSError:
        return None
    for node in nodes:
        try:
            uevent = (node / "device" / "uevent").read_text(errors="replace")
        except OSError:
            continue
        if f"HID_UNIQ={uniq}" in uevent.splitlines():
            return f"/dev/{node.name}"
    return None


# -- the device ------------------------------------------------------------------------------


class UhidDevice:
    """The key on /dev/uhid: events in, CTAPHID through the shared driver, INPUT2 out.

    ``fd`` is an open /dev/uhid (or, in tests, one end of a SOCK_SEQPACKET socketpair: both
    deliver one whole event per read and take one per write).
    """

    def __init__(
        self,
        fd: int,
        authenticator: Authenticator,
        info: DeviceInfo | None = None,
        *,
        clock: Clock | None = None,
        after_request: Callable[[], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        self.info = info or DeviceInfo()
        self.server = HidServer(
            authenticator,
            self._send_report,
            engine=CtapHidEngine(capabilities=capabilities_for(authenticator.profile)),
            clock=clock,
            after_request=after_request,
            # Requests that cannot wait for a person run in serve()'s loop, which also keeps
            # the driver's deadlines (transports/server.py): no ticker thread.
            inline=True,
            driven=True,
        )
        self.plugged = False
        self.started = False  # the kernel sent UHID_START: the HID device exists
        # UHID_OPEN comes when the first process opens the hidraw node, UHID_CLOSE when the
        # last one closes it (the kernel counts).
        self.opened = False
        self._write_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        for wake in (self._wake_r, self._wake_w):
            os.set_blocking(wake, False)  # signal.set_wakeup_fd needs it (see ``wake_fd``)
        self._stop = threading.Event()
        self._serving = threading.Event()
        self._served = threading.Event()
        self.on_start = on_start  # runs when the kernel has created the HID device

    # -- plugging --------------------------------------------------------------------------

    def plug(self) -> None:
        """UHID_CREATE2: the kernel creates the HID device (and its hidraw node)."""
        self._write(encode_create2(self.info))
        self.plugged = True
        self.server.start()

    def unplug(self) -> None:
        """UHID_DESTROY: the device disappears, as when a key is pulled out."""
        if not self.plugged:
            return
        self.plugged = False
        self.started = False
        self.opened = False
        try:
            self._write(encode_destroy())
        except OSError as exc:
            log.warning("could not destroy the UHID device: %s", exc)

    def replug(self) -> None:
        """Pull the key out and put it back: a new device, channels gone, power cycled."""
        self.server.power_cycle(forget_channels=True, between=self._recreate)

    def _recreate(self) -> None:
        self.unplug()
        self._write(encode_create2(self.info))
        self.plugged = True

    # -- I/O ---------------------------------------------------------------------------------

    def _write(self, event: bytes) -> None:
        with self._write_lock:
            written = os.write(self.fd, event)
        if written != len(event):
            raise OSError(errno.EIO, f"short write to UHID ({written} of {len(event)} bytes)")

    def _send_report(self, report: bytes, peer: Hashable | None) -> None:
        if self.plugged:
            self._write(encode_input2(report))

    def handle_event(self, event: UhidEvent) -> None:
        if event.type == EventType.OUTPUT:
            if event.rtype != ReportType.OUTPUT or not event.data:
                return
            # Strip the report-id byte hidraw puts before every output report (0 here).
            self.server.feed(event.data[1 : 1 + REPORT_SIZE])
        elif event.type == EventType.START:
            self.started = True
            if self.on_start is not None:
                self.on_start()
        elif event.type == EventType.STOP:
            self.started = False
        elif event.type == EventType.OPEN:
            self.opened = True
        elif event.type == EventType.CLOSE:
            self.opened = False
        elif event.type == EventType.GET_REPORT:
            # No feature reports on a FIDO device; answer at once so the kernel never waits.
            self._write(encode_get_report_reply(event.id or 0, errno.EIO))
        elif event.type == EventType.SET_REPORT:
            self._write(encode_set_report_reply(event.id or 0, errno.EIO))
        else:
            log.debug("ignoring UHID event type %d", event.type)

    def serve(self) -> None:
        """Read kernel events until ``stop()`` (or the fd closes)."""
        self._serving.set()
        try:
            self._serve()
        finally:
            self._served.set()

    def _serve(self) -> None:
        # Blocks until an event comes, stop() writes to the wake pipe, or the driver's next
        # deadline (a KEEPALIVE, a stalled message's timeout) is due: an idle key sleeps.
        server = self.server
        while not self._stop.is_set():
            timeout = server.timeout()
            if timeout is not None and timeout <= DEADLINE_SLACK:
                server.tick()  # due already (events kept coming): first things first
                continue
            try:
                readable, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            if not readable:
                server.tick()
                continue
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 64)
                except BlockingIOError:  # pragma: no cover - drained already
                    pass
            if self.fd not in readable:
                continue
            try:
                raw = os.read(self.fd, EVENT_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                log.error("reading /dev/uhid failed: %s", exc)
                return
            if not raw:
                return
            try:
                event = decode_event(raw)
            except ValueError as exc:
                log.warning("ignoring a malformed UHID event: %s", exc)
                continue
            try:
                self.handle_event(event)
            except OSError as exc:
                log.warning("UHID write failed: %s", exc)

    @property
    def wake_fd(self) -> int:
        """Writing a byte here wakes ``serve()``; `softkey run` makes it the signal wakeup fd
        (``signal.set_wakeup_fd``), since a signal may reach another thread while this one
        sleeps in select()."""
        return self._wake_w

    def stop(self) -> None:
        """Make ``serve()`` return (safe from signal handlers and other threads)."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        """Unplug and stop the driver threads (the caller closes ``fd``)."""
        self.stop()
        if self._serving.is_set():
            self._served.wait(5)  # serve() must leave select() before its fds go
        self.unplug()
        self.server.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
