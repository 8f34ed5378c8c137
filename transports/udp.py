"""CTAPHID over UDP, the convention of open-source firmware simulators.

One raw 64-byte CTAPHID report per datagram (no report-id byte); the device listens on
127.0.0.1:8111 by default. Each sending address is a separate host: answers to a datagram go
to its sender, and a transaction's response, keepalives and timeout go to the address that
sent its first packet, whatever other sockets send on that channel (docs/ctaphid.md). A
datagram equal to ``POWER_CYCLE_PACKET`` power-cycles the key (volatile state such as PIN
tokens goes; stored state and allocated channels stay). Simulator clients may talk on a
channel they never allocated with INIT, so every channel except 0 and broadcast is accepted
here.

``UdpCtapHidConnection`` is the client side, for python-fido2's ``CtapHidDevice``.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Hashable

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from softkey.authenticator import Authenticator
from softkey.authenticator.environment import Clock

from .ctaphid import REPORT_SIZE, CtapHidEngine, capabilities_for
from .server import HidServer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8111
POWER_CYCLE_PACKET = bytes.fromhex(
    "ac1052ca95e569de69e02ebff333485f13f9b2da34c5a8a340526697a9ab2e0b"
    "394d8d04973c134005be1a0140bff6045bb26eb77a73eaa47813f6b49a7250dc"
)
_MAX_DATAGRAM = 2048


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class UdpTransport:
    """Serves one authenticator on a UDP socket until ``stop()``."""

    def __init__(
        self,
        authenticator: Authenticator,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        clock: Clock | None = None,
        after_request: Callable[[], None] | None = None,
    ) -> None:
        self.sock = socket.socket(_family(host), socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.server = HidServer(
            authenticator,
            self._send,
            engine=CtapHidEngine(
                accept_any_channel=True, capabilities=capabilities_for(authenticator.profile)
            ),
            clock=clock,
            after_request=after_request,
        )
        self._stop = threading.Event()
        self._serving = threading.Event()
        self._served = threading.Event()
        self.power_cycles = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _send(self, report: bytes, peer: Hashable | None) -> None:
        if peer is not None:
            self.sock.sendto(report, peer)  # type: ignore[call-overload]

    def handle_datagram(self, data: bytes, peer: Hashable) -> None:
        if data == POWER_CYCLE_PACKET:
            self.power_cycle()
        else:
            self.server.feed(data, peer)

    def power_cycle(self) -> None:
        self.server.power_cycle(forget_channels=False)
        self.power_cycles += 1

    def serve(self) -> None:
        """Answer datagrams until ``stop()``."""
        self.server.start()
        self._serving.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([self.sock], [], [], 0.1)
                if not readable:
                    continue
                try:
                    data, peer = self.sock.recvfrom(_MAX_DATAGRAM)
                except OSError:
                    continue  # e.g. ICMP port unreachable from a client that went away
                self.handle_datagram(data, peer)
        finally:
            self._served.set()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        if self._serving.is_set():
            self._served.wait(5)  # let serve() leave select() before the socket goes
        self.server.close()
        self.sock.close()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="softkey-udp", daemon=True)
        thread.start()
        return thread


class UdpCtapHidConnection(CtapHidConnection):
    """Client side: python-fido2 reaches a UDP key as if it were a HID device."""

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 35.0
    ) -> None:
        self.sock = socket.socket(_family(host), socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))

    def write_packet(self, data: bytes) -> None:
        self.sock.send(bytes(data))

    def read_packet(self) -> bytes:
        try:
            return self.sock.recv(REPORT_SIZE)
        except TimeoutError:
            raise OSError("the UDP key did not answer in time") from None

    def power_cycle(self) -> None:
        self.sock.send(POWER_CYCLE_PACKET)

    def close(self) -> None:
        self.sock.close()


def open_udp_device(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 35.0
) -> CtapHidDevice:
    """A python-fido2 ``CtapHidDevice`` for the key listening on ``host:port``."""
    descriptor = HidDescriptor(
        f"udp:{host}:{port}", 0, 0, REPORT_SIZE, REPORT_SIZE, "softkey (UDP)", None
    )
    return CtapHidDevice(descriptor, UdpCtapHidConnection(host, port, timeout))
