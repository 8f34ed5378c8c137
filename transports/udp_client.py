"""The client side of CTAPHID over UDP (transports/udp.py): python-fido2's ``CtapHidDevice``
reaching a UDP key as if it were a HID device."""

from __future__ import annotations

import socket

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from .ctaphid import REPORT_SIZE
from .udp import DEFAULT_HOST, DEFAULT_PORT, POWER_CYCLE_PACKET, _family


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
