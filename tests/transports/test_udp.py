"""UDP specifics: the simulator conventions (magic power-cycle datagram, channels without
INIT, replies to the sender) over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.ctaphid import Command, HidError, Message, MessageReader, fragment
from softkey.transports.udp import POWER_CYCLE_PACKET, UdpTransport, open_udp_device


@pytest.fixture
def served() -> Iterator[tuple[UdpTransport, Authenticator]]:
    auth = Authenticator("ctap2.1", clock=FakeClock())
    transport = UdpTransport(auth, "127.0.0.1", 0)
    thread = transport.serve_in_thread()
    yield transport, auth
    transport.close()
    thread.join(5)


def _client(transport: UdpTransport) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect(transport.address)
    return sock


def _exchange(sock: socket.socket, reports: list[bytes]) -> Message:
    for report in reports:
        sock.send(report)
    reader = MessageReader()
    while True:
        message = reader.feed(sock.recv(64))
        if message is not None:
            return message


def test_magic_datagram_power_cycles_and_keeps_channels(served) -> None:
    transport, auth = served
    device = open_udp_device(*transport.address, timeout=10)
    auth.clock.advance(100)
    assert auth.powered_up_at != auth.clock.monotonic()
    device._connection.power_cycle()  # the 64-byte magic datagram
    assert device.ping(b"same channel") == b"same channel"  # channels survive
    assert auth.powered_up_at == auth.clock.monotonic()  # authenticator.power_cycle() ran
    assert transport.power_cycles == 1
    assert len(POWER_CYCLE_PACKET) == 64


def test_channels_need_no_init_over_udp(served) -> None:
    transport, _ = served
    with _client(transport) as sock:
        assert _exchange(sock, fragment(0x12345678, Command.PING, b"hi")) == Message(
            0x12345678, Command.PING, b"hi"
        )
        for cid in (0, 0xFFFFFFFF):
            assert _exchange(sock, fragment(cid, Command.PING, b"x")) == Message(
                cid, Command.ERROR, bytes([HidError.INVALID_CHANNEL])
            )


def test_garbage_datagrams_do_not_hurt(served) -> None:
    transport, _ = served
    with _client(transport) as sock:
        for junk in (b"", b"\x01", bytes(200), b"\xff" * 64, POWER_CYCLE_PACKET[:-1]):
            sock.send(junk)
        reply = _exchange(sock, fragment(0xFFFFFFFF, Command.INIT, b"12345678"))
        errors = []
        while reply.cmd == Command.ERROR:  # answers to the junk that parsed as requests
            errors.append(reply.data)
            reply = _exchange(sock, [])
        assert sorted(errors) == [bytes([HidError.INVALID_CMD]), bytes([HidError.INVALID_CHANNEL])]
        assert reply.cmd == Command.INIT and reply.data[:8] == b"12345678"
        (cid,) = struct.unpack_from(">I", reply.data, 8)
        assert _exchange(sock, fragment(cid, Command.PING, b"ok")).data == b"ok"


def test_replies_go_to_each_sender(served) -> None:
    transport, _ = served
    with _client(transport) as first, _client(transport) as second:
        assert _exchange(first, fragment(0x01010101, Command.PING, b"one")).data == b"one"
        assert _exchange(second, fragment(0x02020202, Command.PING, b"two")).data == b"two"
