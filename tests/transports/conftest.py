"""Fixtures for transport tests: a raw CTAPHID host and HID ports (in-process and UDP)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator

import pytest
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection

from softkey.authenticator import Authenticator
from softkey.authenticator.environment import Clock
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    Command,
    Message,
    MessageReader,
    fragment,
)
from softkey.transports.inprocess import InProcessHid
from softkey.transports.udp import UdpCtapHidConnection, UdpTransport, open_udp_device


class RawHost:
    """A host that speaks CTAPHID packet by packet (to provoke what real clients avoid)."""

    def __init__(self, connection: CtapHidConnection) -> None:
        self.connection = connection
        self.reader = MessageReader()

    def write(self, reports: list[bytes]) -> None:
        for report in reports:
            self.connection.write_packet(report)

    def send(self, cid: int, cmd: int, data: bytes = b"") -> None:
        self.write(fragment(cid, cmd, data))

    def read(self, *, skip_keepalive: bool = True) -> Message:
        while True:
            message = self.reader.feed(self.connection.read_packet())
            if message is None:
                continue
            if skip_keepalive and message.cmd == Command.KEEPALIVE:
                continue
            return message

    def sync(self) -> None:
        """Make sure the device has handled everything this host sent (UDP is asynchronous):
        a broadcast INIT is answered even mid-transaction and disturbs nothing."""
        self.init()

    def init(self) -> int:
        nonce = os.urandom(8)
        self.send(BROADCAST_CID, Command.INIT, nonce)
        message = self.read()
        assert message.cid == BROADCAST_CID and message.cmd == Command.INIT
        assert message.data[:8] == nonce
        (cid,) = struct.unpack_from(">I", message.data, 8)
        return cid


class Port:
    """One served authenticator and ways to reach it (python-fido2 device, raw host)."""

    def __init__(self, kind: str, auth: Authenticator, clock: Clock | None) -> None:
        self.kind = kind
        self.auth = auth
        self._devices: list[CtapHidDevice] = []
        self._raw: list[CtapHidConnection] = []
        if kind == "inprocess":
            self.inprocess = InProcessHid(auth, clock=clock)
            self.server = self.inprocess.server
        else:
            self.udp = UdpTransport(auth, "127.0.0.1", 0, clock=clock)
            self.server = self.udp.server
            self._thread = self.udp.serve_in_thread()

    def open_device(self) -> CtapHidDevice:
        if self.kind == "inprocess":
            device = self.inprocess.open_device()
        else:
            device = open_udp_device(*self.udp.address, timeout=10)
        self._devices.append(device)
        return device

    def raw(self) -> RawHost:
        connection: CtapHidConnection
        if self.kind == "inprocess":
            connection = self.inprocess.connect()
        else:
            connection = UdpCtapHidConnection(*self.udp.address, timeout=10)
        self._raw.append(connection)
        return RawHost(connection)

    def close(self) -> None:
        for device in self._devices:
            device.close()
        for connection in self._raw:
            connection.close()
        if self.kind == "inprocess":
            self.inprocess.close()
        else:
            self.udp.close()
            self._thread.join(5)


@pytest.fixture
def make_port() -> Iterator[Callable[..., Port]]:
    ports: list[Port] = []

    def factory(kind: str, auth: Authenticator, clock: Clock | None = None) -> Port:
        port = Port(kind, auth, clock)
        ports.append(port)
        return port

    yield factory
    for port in ports:
        port.close()


@pytest.fixture
def raw_host_class() -> type[RawHost]:
    return RawHost
