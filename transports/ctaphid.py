"""A sans-IO CTAPHID engine (CTAP 2.1 §11.2): 64-byte reports in, reports out.

The engine owns every piece of framing state (allocated channels, the message being
reassembled, the command being executed) and does no I/O, owns no thread and reads no clock:
the driver passes ``now`` with every call. Garbage becomes a CTAPHID_ERROR report, never an
exception.

Driver contract:

- ``receive(report, now, peer)`` for every report from a host; ``peer`` says who sent it (a
  UDP address, a connection; None where there is only one host, as over UHID). The ``Output``
  holds reports to send at once and, when a CBOR/MSG/WINK message is complete, the
  ``Request`` the driver must execute (in a worker when it may wait for a person, so reports
  keep flowing: CANCEL, other channels -> BUSY; see transports/server.py).
- Every report the engine returns is a ``Report``: the bytes plus ``peer``, where it must go.
  The driver sends each report to its ``peer`` and keeps no address table of its own.
- ``tick(now)`` by ``next_deadline()`` (or every few tens of ms): message timeouts and
  KEEPALIVE every 100 ms while a request runs.
- ``keepalive(request, status, now)`` when the authenticator reports progress (UPNEEDED
  while waiting for a person); ``request.cancelled`` tells it whether the host cancelled.
- ``complete(request, response, now)`` with the authenticator's answer.

Transactions are device-wide (§11.2.5.3): from the first packet of a request until its
response, any other channel's request is answered ERR_CHANNEL_BUSY. INIT is always answered:
it touches no authenticator state and lets a new client find the device while another works.

Where reports go (several hosts share one device over UDP or in-process; see docs/ctaphid.md):

- A transaction belongs to the peer that sent its initialization packet, fixed when the engine
  accepts that packet (starts reassembling it, or executes/answers it at once). Everything
  about the transaction goes to that peer and no one else: its response, KEEPALIVEs,
  ERR_MSG_TIMEOUT, ERR_INVALID_SEQ, ERR_OTHER. A timeout noticed while another host's packet
  is handled still goes to the owner.
- A continuation packet from any other peer is ignored, like a spurious one (§11.2.4): it
  neither adds to the message nor earns an answer, so it can neither change the request nor
  redirect or reveal its response.
- Every other answer is a reply to the packet that caused it and goes to that packet's
  sender: INIT responses (on broadcast, with the new channel id inside: the new channel's
  first owner is whoever sent that INIT), PING echoes, and each error rejecting the packet
  (ERR_CHANNEL_BUSY, ERR_INVALID_CMD/LEN/CHANNEL, ...). Such an error carries the channel id
  from the rejected packet's own header, never the id of the channel that keeps the device
  busy, and no data: the sender learns nothing it did not send.
- A rejected packet changes no owner. An initialization packet from another peer on a channel
  whose message is being reassembled gets ERR_CHANNEL_BUSY and leaves that message alone.
- INIT (resync) and CANCEL keep their meaning for the channel whoever sends them, as on USB,
  where the device cannot tell processes apart: they can end another host's transaction (a
  denial of service any local client has anyway) but never send its data elsewhere: an
  abandoned request's answer is dropped, a cancelled one answers its owner.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, unique

from softkey.authenticator.environment import KEEPALIVE_PROCESSING, KEEPALIVE_UPNEEDED
from softkey.authenticator.profiles import Profile

REPORT_SIZE = 64
BROADCAST_CID = 0xFFFFFFFF
RESERVED_CID = 0
TYPE_INIT = 0x80
INIT_HEADER = 7  # CID(4) CMD(1) BCNT(2)
CONT_HEADER = 5  # CID(4) SEQ(1)
INIT_DATA = REPORT_SIZE - INIT_HEADER  # 57
CONT_DATA = REPORT_SIZE - CONT_HEADER  # 59
MAX_SEQ = 0x7F
# One initialization packet and 128 continuation packets (seq 0..127): §11.2.4.
MAX_MESSAGE_SIZE = INIT_DATA + (MAX_SEQ + 1) * CONT_DATA  # 7609
PROTOCOL_VERSION = 2  # CTAPHID protocol version identifier (§11.2.9.1.3)
KEEPALIVE_INTERVAL = 0.1  # seconds between KEEPALIVE packets (§11.2.9.2.1)
# Two bounds on reassembling one message; either one expiring answers ERR_MSG_TIMEOUT to the
# message's owner and frees the device:
# - DEFAULT_MSG_TIMEOUT: the next packet must come within 0.5 s of the previous one (a host
#   that died mid-message blocks the others only this long);
# - DEFAULT_MSG_TOTAL_TIMEOUT: the whole message must arrive within 3 s of its init packet,
#   so a host cannot hold the device for 129 x 0.5 s ~ 1 min by trickling continuations. A
#   host writes a message's reports back to back: the largest message (129 reports) takes
#   ~0.13 s at a 1 ms USB polling interval, ~0.65 s at 5 ms (common for FIDO keys), and far
#   less over UHID/UDP, so 3 s leaves a margin of 4.5x over 5 ms polling (23 ms per report on
#   average) while bounding how long one message can keep everyone else at CHANNEL_BUSY.
DEFAULT_MSG_TIMEOUT = 0.5
DEFAULT_MSG_TOTAL_TIMEOUT = 3.0
MAX_CHANNELS = 1024  # least recently used channels are forgotten beyond this
NONCE_SIZE = 8


@unique
class Command(IntEnum):
    """CTAPHID command codes (CTAP 2.1 §11.2.9), without the TYPE_INIT bit."""

    PING = 0x01
    MSG = 0x03
    LOCK = 0x04
    INIT = 0x06
    WINK = 0x08
    CBOR = 0x10
    CANCEL = 0x11
    KEEPALIVE = 0x3B
    ERROR = 0x3F


@unique
class HidError(IntEnum):
    """CTAPHID_ERROR codes (CTAP 2.1 §11.2.9.1.6)."""

    INVALID_CMD = 0x01
    INVALID_PAR = 0x02
    INVALID_LEN = 0x03
    INVALID_SEQ = 0x04
    MSG_TIMEOUT = 0x05
    CHANNEL_BUSY = 0x06
    LOCK_REQUIRED = 0x0A
    INVALID_CHANNEL = 0x0B
    OTHER = 0x7F


class Capability(IntFlag):
    """CTAPHID_INIT capability flags (§11.2.9.1.3)."""

    WINK = 0x01
    LOCK = 0x02
    CBOR = 0x04
    NMSG = 0x08  # set when CTAPHID_MSG is *not* implemented


DEFAULT_CAPABILITIES = Capability.WINK | Capability.CBOR


def capabilities_for(profile: Profile) -> Capability:
    """The INIT capability flags of a device of ``profile`` (§11.2.9.1.3): WINK always; CBOR
    when it speaks CTAP2; NMSG only when it does not speak CTAP1/U2F (every profile does, so
    never today). A U2F-only key sets neither CBOR nor NMSG, like the keys made before CTAP2,
    and the engine then answers CTAPHID_CBOR with ERR_INVALID_CMD."""
    capabilities = Capability.WINK
    if profile.ctap2:
        capabilities |= Capability.CBOR
    if "U2F_V2" not in profile.versions:
        capabilities |= Capability.NMSG
    return capabilities


# Requests the engine hands to the driver (everything else it answers itself).
EXECUTED = (Command.CBOR, Command.MSG, Command.WINK)
# Commands a host may not send: the device-to-host ones, and CTAPHID_LOCK. LOCK is optional
# (§11.2.9.2.2) and deliberately not implemented: any local process could renew a lock every
# few seconds and keep every other client at ERR_CHANNEL_BUSY for ever; capping one channel's
# locked time would not help, since a client gets fresh channels at will (broadcast INIT, or
# any id over UDP). No mainstream client uses LOCK; it answers ERR_INVALID_CMD and the
# U2F-era LOCK capability bit is never advertised, even if a caller asks for it.
REFUSED = (Command.KEEPALIVE, Command.ERROR, Command.LOCK)
_COMMANDS = {int(command): command for command in Command}
_CID_BYTE = struct.Struct(">IB")
# Requests that must carry data (a command byte at least); see ``_dispatch``.
_NEEDS_DATA = (Command.CBOR, Command.MSG)
_KEEPALIVE_STATUSES = (KEEPALIVE_PROCESSING, KEEPALIVE_UPNEEDED)


# -- framing helpers (used by the engine, by clients and by tests) ------------------------


def fragment(cid: int, cmd: int, data: bytes = b"") -> list[bytes]:
    """Split one message into 64-byte reports: an init packet, then continuations."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise ValueError(f"a CTAPHID message holds at most {MAX_MESSAGE_SIZE} bytes")
    reports = [
        (struct.pack(">IBH", cid, TYPE_INIT | cmd, len(data)) + data[:INIT_DATA]).ljust(
            REPORT_SIZE, b"\0"
        )
    ]
    rest = data[INIT_DATA:]
    seq = 0
    while rest:
        chunk, rest = rest[:CONT_DATA], rest[CONT_DATA:]
        reports.append((struct.pack(">IB", cid, seq) + chunk).ljust(REPORT_SIZE, b"\0"))
        seq += 1
    return reports


def error_report(cid: int, code: HidError) -> bytes:
    return fragment(cid, Command.ERROR, bytes([code]))[0]


class Report(bytes):
    """A report the engine sends, with its destination: ``peer`` is the host it must reach
    (compares and behaves as the plain report bytes)."""

    peer: Hashable | None

    def __new__(cls, data: bytes, peer: Hashable | None) -> Report:
        report = super().__new__(cls, data)
        report.peer = peer
        return report


def _to(peer: Hashable | None, reports: Iterable[bytes]) -> list[Report]:
    return [Report(report, peer) for report in reports]


@dataclass(frozen=True)
class Message:
    """One reassembled message (as a host sees the device's answers)."""

    cid: int
    cmd: int
    data: bytes


class MessageReader:
    """Host-side reassembly of the device's reports into messages (clients and tests)."""

    def __init__(self) -> None:
        self._partial: dict[int, tuple[int, int, bytearray, int]] = {}

    def feed(self, report: bytes) -> Message | None:
        cid, first = struct.unpack_from(">IB", report)
        if first & TYPE_INIT:
            cmd = first & 0x7F
            (length,) = struct.unpack_from(">H", report, 5)
            data = bytearray(report[INIT_HEADER : INIT_HEADER + min(length, INIT_DATA)])
            if len(data) >= length:
                self._partial.pop(cid, None)
                return Message(cid, cmd, bytes(data))
            self._partial[cid] = (cmd, length, data, 0)
            return None
        if cid not in self._partial:
            return None
        cmd, length, data, seq = self._partial[cid]
        if first != seq:
            raise ValueError(f"continuation {first} out of sequence (expected {seq})")
        data += report[CONT_HEADER : CONT_HEADER + min(CONT_DATA, length - len(data))]
        if len(data) >= length:
            del self._partial[cid]
            return Message(cid, cmd, bytes(data))
        self._partial[cid] = (cmd, length, data, seq + 1)
        return None

    def feed_all(self, reports: Iterable[bytes]) -> list[Message]:
        return [m for m in (self.feed(r) for r in reports) if m is not None]


# -- the engine ------------------------------------------------------------------------------


@dataclass(eq=False)
class Request:
    """A complete CBOR/MSG/WINK message the driver must execute."""

    cid: int
    command: Command
    payload: bytes
    started: float
    # Who sent the request's init packet: its keepalives and response go there, only there.
    peer: Hashable | None = None
    # Set by CANCEL: a presence wait must end with CTAP2_ERR_KEEPALIVE_CANCEL.
    cancelled: bool = False
    # Set by INIT-resync, unplug or power cycle: the response is dropped.
    abandoned: bool = False
    # Set by the driver for an injected "no answer" (authenticator/faults.py): no KEEPALIVE.
    silent: bool = False
    keepalive_status: int = KEEPALIVE_PROCESSING
    next_keepalive: float = 0.0  # when the next periodic KEEPALIVE is due

    def __post_init__(self) -> None:
        self.next_keepalive = self.started + KEEPALIVE_INTERVAL


@dataclass(slots=True)
class Output:
    """What one incoming report produced: reports to send, each to its ``peer`` (answers to
    the packet go to its sender, a timed-out message's error to that message's owner)."""

    reports: list[Report] = field(default_factory=list)
    request: Request | None = None


@dataclass
class _Assembly:
    cid: int
    cmd: Command
    length: int
    data: bytearray
    next_seq: int
    last_packet: float
    deadline: float  # set at the init packet: the whole message must have arrived by then
    peer: Hashable | None  # who sent the init packet; only its continuations count


class CtapHidEngine:
    """CTAPHID framing state machine for one device.

    ``accept_any_channel``: treat every channel other than 0 and broadcast as allocated.
    Simulator-style UDP clients send on channels they never INITed; USB hosts always INIT.
    """

    def __init__(
        self,
        *,
        device_version: tuple[int, int, int] = (0, 1, 0),
        capabilities: Capability = DEFAULT_CAPABILITIES,
        accept_any_channel: bool = False,
        msg_timeout: float = DEFAULT_MSG_TIMEOUT,
        msg_total_timeout: float = DEFAULT_MSG_TOTAL_TIMEOUT,
        random: Callable[[int], bytes] = os.urandom,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.device_version = device_version
        # LOCK is not implemented (see REFUSED), so its bit is never advertised.
        self.capabilities = capabilities & ~Capability.LOCK
        self.accept_any_channel = accept_any_channel
        self.msg_timeout = msg_timeout
        self.msg_total_timeout = msg_total_timeout
        self.random = random
        self.max_channels = max_channels
        self._channels: OrderedDict[int, None] = OrderedDict()
        self._assembly: _Assembly | None = None
        self.request: Request | None = None

    # -- public API ----------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A transaction is in progress (a message being received or executed)."""
        return self._assembly is not None or self.request is not None

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self._channels)

    def receive(self, report: bytes, now: float, peer: Hashable | None = None) -> Output:
        """One report from ``peer``. Answers to it are addressed to ``peer``; an error for
        another host's message that timed out meanwhile is addressed to that host."""
        out = Output(self._expire(now) if self._assembly is not None else [])
        if not report:
            return out
        # hidraw reports always have the declared size; pad short writes like HID does and
        # ignore anything beyond the report.
        if len(report) != REPORT_SIZE or type(report) is not bytes:
            report = bytes(report[:REPORT_SIZE]).ljust(REPORT_SIZE, b"\0")
        cid, first = _CID_BYTE.unpack_from(report)
        replies: list[bytes] = []
        if first & TYPE_INIT:
            length = (report[5] << 8) | report[6]
            out.request = self._init_packet(
                replies, cid, first & 0x7F, length, report[INIT_HEADER:], now, peer
            )
        else:
            out.request = self._continuation(replies, cid, first, report[CONT_HEADER:], now, peer)
        if replies:
            out.reports += _to(peer, replies)
        return out

    def tick(self, now: float) -> list[Report]:
        """Timeouts and periodic keepalives; call by ``next_deadline()`` (or every 50 ms)."""
        reports = self._expire(now)
        request = self.request
        if (
            request is not None
            and not request.abandoned
            and not request.silent
            and now >= request.next_keepalive
        ):
            request.next_keepalive = now + KEEPALIVE_INTERVAL
            reports.append(self._keepalive_report(request))
        return reports

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work (a message's timeout, the running request's next
        KEEPALIVE); None when nothing is scheduled. A driver sleeps until then."""
        due: float | None = None
        assembly = self._assembly
        if assembly is not None:
            due = min(assembly.last_packet + self.msg_timeout, assembly.deadline)
        request = self.request
        if request is not None and not request.abandoned and not request.silent:
            if due is None or request.next_keepalive < due:
                due = request.next_keepalive
        return due

    def keepalive(self, request: Request, status: int, now: float) -> list[Report]:
        """The running command reports progress; a new status is sent at once."""
        if request is not self.request or request.abandoned:
            return []
        if status not in _KEEPALIVE_STATUSES:
            return []
        changed = status != request.keepalive_status
        request.keepalive_status = status
        if changed or now >= request.next_keepalive:
            request.next_keepalive = now + KEEPALIVE_INTERVAL
            return [self._keepalive_report(request)]
        return []

    def complete(self, request: Request, response: bytes, now: float) -> list[Report]:
        """The authenticator answered ``request``; frame the response (unless abandoned) for
        the request's owner."""
        if request is self.request:
            self.request = None
        if request.abandoned:
            return []
        if len(response) > MAX_MESSAGE_SIZE:
            return _to(request.peer, [error_report(request.cid, HidError.OTHER)])
        return _to(request.peer, fragment(request.cid, request.command, response))

    def abort(self) -> Request | None:
        """Unplug or power cycle: drop the partial message, cancel and abandon the running
        request (its response is never sent). Returns that request, if any."""
        self._assembly = None
        request = self.request
        if request is not None:
            request.cancelled = True
            request.abandoned = True
        return request

    def forget_channels(self) -> None:
        """A new USB device: no channel allocated before it exists."""
        self._channels.clear()

    # -- packets -------------------------------------------------------------------------

    def _init_packet(
        self,
        out: list[bytes],
        cid: int,
        cmd: int,
        length: int,
        data: bytes,
        now: float,
        peer: Hashable | None,
    ) -> Request | None:
        """Answers (for the sender) go to ``out``; returns the request to execute, if any."""
        if cmd == Command.CANCEL:
            # CANCEL never gets a reply (§11.2.9.1.5), whatever channel it came on.
            self._cancel(cid)
            return None
        if cid == RESERVED_CID:
            out.append(error_report(cid, HidError.INVALID_CHANNEL))
            return None
        if cmd == Command.INIT:
            out.extend(self._init(cid, length, data[:NONCE_SIZE]))
            return None
        if cid == BROADCAST_CID or not self._known(cid):
            out.append(error_report(cid, HidError.INVALID_CHANNEL))
            return None
        # Rejections carry the packet's own channel id (the sender's), never the busy one's.
        if self.request is not None:
            out.append(error_report(cid, HidError.CHANNEL_BUSY))
            return None
        if self._assembly is not None:
            if self._assembly.cid != cid or self._assembly.peer != peer:
                # Another channel's message, or another host's on this channel: left alone.
                out.append(error_report(cid, HidError.CHANNEL_BUSY))
                return None
            # A new request before the previous one was complete: both are void.
            self._assembly = None
            out.append(error_report(cid, HidError.INVALID_SEQ))
            return None
        command = _COMMANDS.get(cmd)
        if command is None or command in REFUSED:
            out.append(error_report(cid, HidError.INVALID_CMD))
            return None
        if length > MAX_MESSAGE_SIZE:
            out.append(error_report(cid, HidError.INVALID_LEN))
            return None
        self._touch(cid)
        if length <= INIT_DATA:
            return self._dispatch(out, cid, command, bytes(data[:length]), now, peer)
        self._assembly = _Assembly(
            cid,
            command,
            length,
            bytearray(data[:INIT_DATA]),
            0,
            now,
            now + self.msg_total_timeout,
            peer,
        )
        return None

    def _continuation(
        self, out: list[bytes], cid: int, seq: int, data: bytes, now: float, peer: Hashable | None
    ) -> Request | None:
        assembly = self._assembly
        if assembly is None or assembly.cid != cid or assembly.peer != peer:
            # A spurious continuation (no init packet before it) is ignored (§11.2.4); so is
            # one from a host other than the message's owner: it never touches the message.
            return None
        if seq != assembly.next_seq:
            self._assembly = None
            out.append(error_report(cid, HidError.INVALID_SEQ))
            return None
        assembly.data += data[: assembly.length - len(assembly.data)]
        assembly.next_seq += 1
        assembly.last_packet = now
        if len(assembly.data) >= assembly.length:
            self._assembly = None
            return self._dispatch(out, cid, assembly.cmd, bytes(assembly.data), now, peer)
        return None

    def _expire(self, now: float) -> list[Report]:
        assembly = self._assembly
        if assembly is None:
            return []
        # The total bound runs from the init packet: continuations do not extend it.
        if now - assembly.last_packet > self.msg_timeout or now > assembly.deadline:
            self._assembly = None
            return _to(assembly.peer, [error_report(assembly.cid, HidError.MSG_TIMEOUT)])
        return []

    # -- commands ------------------------------------------------------------------------

    def _init(self, cid: int, length: int, nonce: bytes) -> list[bytes]:
        if length != NONCE_SIZE:
            return [error_report(cid, HidError.INVALID_LEN)]
        if cid == BROADCAST_CID:
            new_cid = self._allocate()
        elif self._known(cid):
            # Resynchronise (§11.2.9.1.3): abandon whatever this channel had in flight.
            new_cid = cid
            if self._assembly is not None and self._assembly.cid == cid:
                self._assembly = None
            if self.request is not None and self.request.cid == cid:
                self.request.cancelled = True
                self.request.abandoned = True
            self._touch(cid)
        else:
            return [error_report(cid, HidError.INVALID_CHANNEL)]
        major, minor, build = self.device_version
        payload = nonce + struct.pack(
            ">IBBBBB", new_cid, PROTOCOL_VERSION, major, minor, build, int(self.capabilities)
        )
        return fragment(cid, Command.INIT, payload)

    def _dispatch(
        self,
        out: list[bytes],
        cid: int,
        command: Command,
        data: bytes,
        now: float,
        peer: Hashable | None,
    ) -> Request | None:
        if command == Command.PING:
            out.extend(fragment(cid, Command.PING, data))
        elif not self._supported(command):
            out.append(error_report(cid, HidError.INVALID_CMD))
        elif command == Command.WINK and data:
            out.append(error_report(cid, HidError.INVALID_LEN))
        elif command in _NEEDS_DATA and not data:
            # CTAPHID_MSG and CTAPHID_CBOR requests carry BCNT 1..(n+1) (§11.2.9.1.1,
            # §11.2.9.1.2): at least the U2F/CTAP command byte. BCNT 0 is a framing error,
            # answered here, not a CTAP1/CTAP2 request for the authenticator to refuse.
            out.append(error_report(cid, HidError.INVALID_LEN))
        else:
            self.request = Request(cid, command, data, now, peer)
            return self.request
        return None

    def _supported(self, command: Command) -> bool:
        if command == Command.CBOR:
            return Capability.CBOR in self.capabilities
        if command == Command.WINK:
            return Capability.WINK in self.capabilities
        if command == Command.MSG:
            return Capability.NMSG not in self.capabilities
        return False

    def _cancel(self, cid: int) -> None:
        if self.request is not None and self.request.cid == cid:
            self.request.cancelled = True
        if self._assembly is not None and self._assembly.cid == cid:
            self._assembly = None

    def _keepalive_report(self, request: Request) -> Report:
        report = fragment(request.cid, Command.KEEPALIVE, bytes([request.keepalive_status]))[0]
        return Report(report, request.peer)

    # -- channels ------------------------------------------------------------------------

    def _known(self, cid: int) -> bool:
        if cid in (RESERVED_CID, BROADCAST_CID):
            return False
        return self.accept_any_channel or cid in self._channels

    def _touch(self, cid: int) -> None:
        if cid in self._channels:
            self._channels.move_to_end(cid)
        elif self.accept_any_channel:
            self._remember(cid)

    def _remember(self, cid: int) -> None:
        self._channels[cid] = None
        while len(self._channels) > self.max_channels:
            self._channels.popitem(last=False)

    def _allocate(self) -> int:
        while True:
            (cid,) = struct.unpack(">I", self.random(4))
            if cid not in (RESERVED_CID, BROADCAST_CID) and cid not in self._channels:
                self._remember(cid)
                return cid
