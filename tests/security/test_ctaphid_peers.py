"""CTAPHID with several hosts on one device (UDP, in-process): every report reaches only the
host it belongs to, and no host can hold the device for long (CTAP 2.1 §11.2).

- A transaction's response, keepalives and errors go to the peer that sent its initialization
  packet; a spoofed continuation, a rejected or invalid packet bearing the victim's channel id
  never redirects them, nor reaches into the victim's message.
- A stalled message's ERR_MSG_TIMEOUT goes to its owner, not to whoever sends the packet
  during which the timeout is noticed (that would leak the stalled channel's id).
- An error rejecting a packet goes to that packet's sender and carries the channel id from the
  packet's own header: nothing the sender did not already know.
- CTAPHID_LOCK is refused, so a renewing client cannot lock the others out.
- A message must arrive within DEFAULT_MSG_TOTAL_TIMEOUT of its first packet, however
  promptly each continuation follows the previous one.

Clocks are fake (time moves only when a test says so); threads are awaited on conditions.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Hashable, Iterator

import pytest
from fido2 import cbor
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    CONT_DATA,
    DEFAULT_MSG_TIMEOUT,
    DEFAULT_MSG_TOTAL_TIMEOUT,
    MAX_MESSAGE_SIZE,
    Capability,
    Command,
    CtapHidEngine,
    HidError,
    Message,
    MessageReader,
    error_report,
    fragment,
)
from softkey.transports.inprocess import VirtualCtapDevice
from softkey.transports.presence import WaitingPresence
from softkey.transports.server import HidServer
from softkey.transports.udp import UdpTransport

VICTIM = ("127.0.0.1", 40001)
ATTACKER = ("127.0.0.1", 40002)
BYSTANDER = ("127.0.0.1", 40003)
WAIT = 10.0  # upper bound for a thread to get somewhere; never a timing assertion
RP_ID = "example.com"
CTAP2_OK = 0x00
CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D


class Wire:
    """The fake ``send``: records every (report, peer) the server emits."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Hashable | None]] = []
        self._cond = threading.Condition()

    def __call__(self, report: bytes, peer: Hashable | None) -> None:
        assert len(report) == 64
        with self._cond:
            self.sent.append((bytes(report), peer))
            self._cond.notify_all()

    def reports(self, peer: Hashable | None) -> list[bytes]:
        with self._cond:
            return [report for report, to in self.sent if to == peer]

    def messages(self, peer: Hashable | None) -> list[Message]:
        return MessageReader().feed_all(self.reports(peer))

    def wait_for(self, peer: Hashable | None, cmd: int) -> Message:
        """The first complete ``cmd`` message sent to ``peer`` (waiting for the worker)."""

        def found() -> Message | None:
            return next((m for m in self.messages(peer) if m.cmd == cmd), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout=WAIT)
        message = found()
        assert message is not None, f"{peer} never got a {cmd:#x} message: {self.sent}"
        return message


class Device:
    """A HidServer (UDP flavour: any channel accepted) with a fake wire and a fake clock, and
    one resident credential; getAssertion waits for ``presence.touch()``."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.auth = Authenticator("ctap2.1", clock=self.clock)
        made = Ctap2(VirtualCtapDevice(self.auth)).make_credential(
            os.urandom(32),
            {"id": RP_ID, "name": "Example"},
            {"id": b"victim", "name": "victim"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
        credential = made.auth_data.credential_data
        assert credential is not None
        self.credential_id = credential.credential_id
        self.presence = WaitingPresence(clock=self.clock)
        self.auth.presence = self.presence
        self.wire = Wire()
        # The ticker never runs by itself: timeouts are noticed exactly where a test says.
        self.server = HidServer(
            self.auth,
            self.wire,
            engine=CtapHidEngine(accept_any_channel=True),
            clock=self.clock,
            tick_interval=3600,
        ).start()

    def send(self, peer: Hashable, reports: list[bytes]) -> None:
        for report in reports:
            self.server.feed(report, peer)

    def init(self, peer: Hashable) -> int:
        nonce = os.urandom(8)
        self.send(peer, fragment(BROADCAST_CID, Command.INIT, nonce))
        (reply,) = [m for m in self.wire.messages(peer) if m.data[:8] == nonce]
        assert reply.cid == BROADCAST_CID and reply.cmd == Command.INIT
        return int(struct.unpack_from(">I", reply.data, 8)[0])

    def get_assertion(self, cid: int) -> list[bytes]:
        request = b"\x02" + cbor.encode(
            {
                1: RP_ID,
                2: hashlib.sha256(b"victim's login").digest(),
                3: [{"type": "public-key", "id": self.credential_id}],
            }
        )
        reports = fragment(cid, Command.CBOR, request)
        assert len(reports) >= 2  # a multi-packet message
        return reports

    def assert_signed(self, answer: Message, cid: int) -> None:
        assert answer.cid == cid and answer.cmd == Command.CBOR
        assert answer.data[0] == CTAP2_OK, f"status {answer.data[0]:#x}"
        assertion = cbor.decode(answer.data[1:])
        assert isinstance(assertion, dict)
        assert assertion[1]["id"] == self.credential_id

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def device() -> Iterator[Device]:
    device = Device()
    yield device
    device.close()


def _continuation(cid: int, seq: int, fill: int = 0xEE) -> bytes:
    return struct.pack(">IB", cid, seq) + bytes([fill]) * CONT_DATA


def _init_packet(cid: int, cmd: int, length: int, fill: int = 0xEE) -> bytes:
    return (struct.pack(">IBH", cid, 0x80 | cmd, length) + bytes([fill]) * 57)[:64]


def _assert_only_refusals(wire: Wire, peer: Hashable, cids: set[int]) -> None:
    """Everything ``peer`` got is a one-byte CTAPHID_ERROR on a channel it named itself."""
    for report in wire.reports(peer):
        (message,) = MessageReader().feed_all([report])
        assert message.cmd == Command.ERROR and len(message.data) == 1, message
        assert message.cid in cids, message


# -- 1b. a spoofed packet on the victim's channel redirects nothing --------------------------

SPOOFS = {
    "continuation seq 0": lambda cid: _continuation(cid, 0),
    "continuation seq 1": lambda cid: _continuation(cid, 1),
    "continuation seq 127": lambda cid: _continuation(cid, 0x7F),
    "bare channel id": lambda cid: struct.pack(">IB", cid, 0),
    "CBOR init packet (busy)": lambda cid: _init_packet(cid, Command.CBOR, 1),
    "PING init packet (busy)": lambda cid: _init_packet(cid, Command.PING, 200),
    "unknown command (busy)": lambda cid: _init_packet(cid, 0x7F, 0),
    "LOCK (busy)": lambda cid: _init_packet(cid, Command.LOCK, 1),
    "too long (busy)": lambda cid: _init_packet(cid, Command.CBOR, MAX_MESSAGE_SIZE + 1),
}


@pytest.mark.parametrize("spoof", list(SPOOFS), ids=list(SPOOFS))
def test_spoofed_packet_does_not_redirect_a_running_get_assertion(
    device: Device, spoof: str
) -> None:
    cid = device.init(VICTIM)
    device.send(VICTIM, device.get_assertion(cid))
    assert device.presence.wait_for_request(WAIT) is not None  # waiting for the victim's touch
    device.send(ATTACKER, [SPOOFS[spoof](cid)])
    assert device.presence.touch() is not None

    device.assert_signed(device.wire.wait_for(VICTIM, Command.CBOR), cid)
    keepalives = [m for m in device.wire.messages(VICTIM) if m.cmd == Command.KEEPALIVE]
    assert keepalives and all(m.cid == cid for m in keepalives)  # UPNEEDED, to the victim
    # The attacker at most hears that the channel it named is busy: no keepalive, no answer.
    _assert_only_refusals(device.wire, ATTACKER, {cid})
    busy = error_report(cid, HidError.CHANNEL_BUSY)
    assert device.wire.reports(ATTACKER) in ([], [busy])


def test_spoofed_continuation_cannot_enter_the_victims_message(device: Device) -> None:
    cid = device.init(VICTIM)
    reports = device.get_assertion(cid)
    device.send(VICTIM, reports[:1])
    # The attacker races the victim's first continuation (and a later one) with its own.
    device.send(ATTACKER, [_continuation(cid, 0), _continuation(cid, 1)])
    device.send(VICTIM, reports[1:])
    assert device.presence.wait_for_request(WAIT) is not None, device.wire.sent
    assert device.presence.touch() is not None
    device.assert_signed(device.wire.wait_for(VICTIM, Command.CBOR), cid)
    assert device.wire.reports(ATTACKER) == []


def test_foreign_init_packet_mid_message_is_busy_for_its_sender_only(device: Device) -> None:
    victim, attacker = device.init(VICTIM), device.init(ATTACKER)
    data = os.urandom(300)
    ping = fragment(victim, Command.PING, data)
    device.send(VICTIM, ping[:2])
    device.send(ATTACKER, fragment(victim, Command.PING, b"mine now"))  # on the victim's channel
    device.send(ATTACKER, fragment(attacker, Command.PING, b"me too"))  # on its own
    # Each refusal carries the channel id from the attacker's own packet; the victim's message
    # is untouched (not voided with ERR_INVALID_SEQ) and the attacker learns no other id.
    assert device.wire.reports(ATTACKER)[1:] == [
        error_report(victim, HidError.CHANNEL_BUSY),
        error_report(attacker, HidError.CHANNEL_BUSY),
    ]
    before = len(device.wire.reports(VICTIM))
    device.send(VICTIM, ping[2:])
    assert device.wire.messages(VICTIM)[-1] == Message(victim, Command.PING, data)
    assert len(device.wire.reports(VICTIM)) == before + len(ping)
    assert len(device.wire.reports(ATTACKER)) == 3  # INIT reply, two refusals: nothing more


def test_cancel_from_another_host_is_answered_to_the_owner(device: Device) -> None:
    cid = device.init(VICTIM)
    device.send(VICTIM, device.get_assertion(cid))
    assert device.presence.wait_for_request(WAIT) is not None
    # CANCEL acts on the channel whoever sends it (as on USB, where processes look alike);
    # the cancelled request still answers its owner only.
    device.send(ATTACKER, fragment(cid, Command.CANCEL))
    answer = device.wire.wait_for(VICTIM, Command.CBOR)
    assert answer == Message(cid, Command.CBOR, bytes([CTAP2_ERR_KEEPALIVE_CANCEL]))
    assert device.wire.reports(ATTACKER) == []


# -- 1a. a stalled message's timeout goes to its owner ---------------------------------------


@pytest.mark.parametrize("noticed", ["on another host's packet", "by the ticker"])
def test_stalled_message_timeout_goes_to_its_owner(device: Device, noticed: str) -> None:
    victim, other = device.init(VICTIM), device.init(ATTACKER)
    device.send(VICTIM, fragment(victim, Command.PING, os.urandom(200))[:2])
    device.clock.advance(DEFAULT_MSG_TIMEOUT + 0.1)
    if noticed == "by the ticker":
        device.server.tick()
    device.send(ATTACKER, fragment(other, Command.PING, b"hello"))
    assert device.wire.messages(VICTIM)[-1] == Message(
        victim, Command.ERROR, bytes([HidError.MSG_TIMEOUT])
    )
    # The other host gets its echo and nothing naming the stalled channel.
    assert device.wire.messages(ATTACKER)[-1] == Message(other, Command.PING, b"hello")
    assert all(struct.unpack_from(">I", r)[0] != victim for r in device.wire.reports(ATTACKER))


def test_timeout_of_a_victims_message_never_reaches_an_attacker_using_its_channel(
    device: Device,
) -> None:
    victim = device.init(VICTIM)
    device.send(VICTIM, fragment(victim, Command.PING, os.urandom(200))[:2])
    device.send(ATTACKER, [_continuation(victim, 1)])  # used to claim the victim's channel
    device.clock.advance(DEFAULT_MSG_TIMEOUT + 0.1)
    device.server.tick()
    assert device.wire.messages(VICTIM)[-1].data == bytes([HidError.MSG_TIMEOUT])
    assert device.wire.reports(ATTACKER) == []


# -- 2. CTAPHID_LOCK ---------------------------------------------------------------------------


def test_a_renewing_lock_cannot_hold_the_device(device: Device) -> None:
    locker, other = device.init(ATTACKER), device.init(BYSTANDER)
    for _ in range(13):  # renew a 10 s lock every 5 s for a minute
        device.send(ATTACKER, fragment(locker, Command.LOCK, b"\x0a"))
        assert device.wire.messages(ATTACKER)[-1] == Message(
            locker, Command.ERROR, bytes([HidError.INVALID_CMD])
        )
        device.send(BYSTANDER, fragment(other, Command.PING, b"still mine"))
        assert device.wire.messages(BYSTANDER)[-1] == Message(other, Command.PING, b"still mine")
        device.clock.advance(5)


def test_lock_is_not_advertised(device: Device) -> None:
    nonce = os.urandom(8)
    device.send(VICTIM, fragment(BROADCAST_CID, Command.INIT, nonce))
    capabilities = device.wire.messages(VICTIM)[-1].data[16]
    assert not capabilities & Capability.LOCK
    assert capabilities == Capability.WINK | Capability.CBOR


# -- 3. the message timeout runs from the first packet -----------------------------------------


def test_trickled_message_times_out_from_its_first_packet(device: Device) -> None:
    trickler, other = device.init(ATTACKER), device.init(BYSTANDER)
    reports = fragment(trickler, Command.PING, os.urandom(MAX_MESSAGE_SIZE))
    step = DEFAULT_MSG_TIMEOUT * 0.8  # each continuation well within the per-packet bound
    device.send(ATTACKER, reports[:1])
    sent = 1
    while not device.wire.reports(ATTACKER)[1:]:  # [0] is the INIT reply
        device.clock.advance(step)
        device.send(ATTACKER, [reports[sent]])
        sent += 1
        assert sent < len(reports), "the trickled message was accepted"
    assert device.wire.messages(ATTACKER)[-1] == Message(
        trickler, Command.ERROR, bytes([HidError.MSG_TIMEOUT])
    )
    assert (sent - 1) * step > DEFAULT_MSG_TOTAL_TIMEOUT >= (sent - 2) * step  # not earlier
    device.send(BYSTANDER, fragment(other, Command.PING, b"my turn"))
    assert device.wire.messages(BYSTANDER)[-1] == Message(other, Command.PING, b"my turn")


@pytest.mark.parametrize("gap", [0.0, 0.02])  # back to back; one per 20 ms (2.56 s in all)
def test_largest_message_sent_promptly_is_accepted(device: Device, gap: float) -> None:
    cid = device.init(VICTIM)
    data = os.urandom(MAX_MESSAGE_SIZE)
    reports = fragment(cid, Command.PING, data)
    assert len(reports) == 129
    for report in reports:
        device.send(VICTIM, [report])
        device.clock.advance(gap)
    assert device.wire.messages(VICTIM)[-1] == Message(cid, Command.PING, data)


# -- the engine's addressing, packet by packet ------------------------------------------------


def test_engine_addresses_each_report() -> None:
    engine = CtapHidEngine(accept_any_channel=True)
    now = 10.0
    broadcast_init = fragment(BROADCAST_CID, Command.INIT, bytes(8))[0]
    (init,) = engine.receive(broadcast_init, now, VICTIM).reports
    assert init.peer == VICTIM  # the INIT reply (with the new channel) to its sender
    (cid,) = struct.unpack_from(">I", init, 15)
    out = engine.receive(fragment(cid, Command.CBOR, b"\x04")[0], now, VICTIM)
    request = out.request
    assert request is not None and request.peer == VICTIM and out.reports == []
    (busy,) = engine.receive(fragment(cid, Command.PING, b"x")[0], now, ATTACKER).reports
    assert busy == error_report(cid, HidError.CHANNEL_BUSY) and busy.peer == ATTACKER
    assert engine.receive(_continuation(cid, 0), now, ATTACKER).reports == []
    (keepalive,) = engine.tick(now + 1)
    assert keepalive.peer == VICTIM
    assert {r.peer for r in engine.complete(request, b"\x00" + bytes(100), now + 1)} == {VICTIM}


def test_resync_from_another_host_drops_the_answer_instead_of_redirecting_it() -> None:
    engine = CtapHidEngine(accept_any_channel=True)
    cid = 0x01020304
    request = engine.receive(fragment(cid, Command.CBOR, b"\x04")[0], 0.0, VICTIM).request
    assert request is not None
    (reply,) = engine.receive(fragment(cid, Command.INIT, b"attacker")[0], 0.0, ATTACKER).reports
    assert reply.peer == ATTACKER and reply[7:15] == b"attacker"  # its own INIT answered
    assert request.abandoned
    assert engine.tick(1.0) == []
    assert engine.complete(request, b"\x00secret", 1.0) == []  # sent to no one


# -- the same over real UDP sockets -------------------------------------------------------------


class UdpHost:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(address)
        self.reader = MessageReader()

    def send(self, reports: list[bytes]) -> None:
        for report in reports:
            self.sock.send(report)

    def read(self) -> Message:
        while True:
            message = self.reader.feed(self.sock.recv(64))
            if message is not None:
                return message

    def init(self) -> tuple[int, list[Message]]:
        """A new channel, and every message that arrived before the INIT reply."""
        nonce = os.urandom(8)
        self.send(fragment(BROADCAST_CID, Command.INIT, nonce))
        before: list[Message] = []
        while True:
            message = self.read()
            if message.cid == BROADCAST_CID and message.data[:8] == nonce:
                return int(struct.unpack_from(">I", message.data, 8)[0]), before
            before.append(message)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def udp() -> Iterator[tuple[Device, UdpTransport]]:
    device = Device()
    device.close()  # the fake-wire server; the UDP transport brings its own
    transport = UdpTransport(device.auth, "127.0.0.1", 0, clock=device.clock)
    thread = transport.serve_in_thread()
    yield device, transport
    transport.close()
    thread.join(WAIT)


def test_udp_spoofed_continuation_from_another_socket(udp: tuple[Device, UdpTransport]) -> None:
    device, transport = udp
    victim, attacker = UdpHost(transport.address), UdpHost(transport.address)
    try:
        cid, _ = victim.init()
        victim.send(device.get_assertion(cid))
        assert device.presence.wait_for_request(WAIT) is not None
        attacker.send([_continuation(cid, 0), _init_packet(cid, Command.CBOR, 1)])
        _, heard = attacker.init()  # the attacker's datagrams were handled before this answer
        assert heard == [Message(cid, Command.ERROR, bytes([HidError.CHANNEL_BUSY]))]
        assert device.presence.touch() is not None
        answer = victim.read()
        while answer.cmd == Command.KEEPALIVE:
            answer = victim.read()
        device.assert_signed(answer, cid)
        _, heard = attacker.init()
        assert heard == []  # no keepalive, no assertion
    finally:
        victim.close()
        attacker.close()


def test_udp_stalled_timeout_reaches_the_stalled_socket(udp: tuple[Device, UdpTransport]) -> None:
    device, transport = udp
    stalled, other = UdpHost(transport.address), UdpHost(transport.address)
    try:
        cid, _ = stalled.init()
        stalled.send(fragment(cid, Command.PING, os.urandom(200))[:2])
        stalled.init()  # handled: the partial message is in
        own, _ = other.init()
        device.clock.advance(DEFAULT_MSG_TIMEOUT + 0.1)
        other.send(fragment(own, Command.PING, b"hello"))
        assert other.read() == Message(own, Command.PING, b"hello")
        assert stalled.read() == Message(cid, Command.ERROR, bytes([HidError.MSG_TIMEOUT]))
        _, heard = other.init()
        assert heard == []
    finally:
        stalled.close()
        other.close()
