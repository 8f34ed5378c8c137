"""CTAPHID over UDP, the convention of open-source firmware simulators.

One raw 64-byte CTAPHID report per datagram (no report-id byte); the device listens on
127.0.0.1:8111 by default. Each sending address is a separate host: answers to a datagram go
to its sender, and a transaction's response, keepalives and timeout go to the address that
sent its first packet, whatever other sockets send on that channel (docs/ctaphid.md). A
datagram equal to ``POWER_CYCLE_PACKET`` power-cycles the key (volatile state such as PIN
tokens goes; stored state and allocated channels stay). Simulator clients may talk on a
channel they never allocated with INIT, so every channel except 0 and broadcast is accepted
here.

``UdpCtapHidConnection`` is the client side, for python-fido2's ``CtapHidDevice``
(transports/udp_client.py, imported from here on first use).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Hashable
from typing import Any

from softkey.authenticator import Authenticator
from softkey.authenticator.environment import Clock

from .ctaphid import CtapHidEngine, capabilities_for
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


def _reachable(address: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where this machine reaches a socket bound to ``address`` (the wildcard: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
    return (host, *address[1:])


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
        # Requests that cannot wait for a person run right here in serve()'s loop, which also
        # keeps the driver's deadlines (transports/server.py): no ticker thread.
        self.server = HidServer(
            authenticator,
            self._send,
            engine=CtapHidEngine(
                accept_any_channel=True, capabilities=capabilities_for(authenticator.profile)
            ),
            clock=clock,
            after_request=after_request,
            inline=True,
            driven=True,
        )
        # stop() (and, in `softkey run`, every signal: ``wake_fd``) sends a datagram from this
        # socket to ours, which wakes serve() wherever it sleeps; serve() ignores what comes
        # from here. No polling for the stop flag, and no select() while nothing is scheduled.
        self._waker = socket.socket(self.sock.family, socket.SOCK_DGRAM)
        try:
            self._waker.connect(_reachable(self.sock.getsockname()))
            self._waker.setblocking(False)
            self._waker_address = self._waker.getsockname()
        except OSError:
            self._waker.close()
            self.sock.close()
            raise
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
        """Answer datagrams until ``stop()``.

        Blocks on the socket until a datagram comes or the driver's next deadline (a
        KEEPALIVE, a stalled message's timeout) is due; an idle key sleeps in recvfrom().
        """
        server, sock, waker = self.server, self.sock, self._waker_address
        recvfrom, watched = sock.recvfrom, [sock]
        stopping = self._stop.is_set
        server.start()
        self._serving.set()
        try:
            while not stopping():
                try:
                    if server.due is None:
                        data, peer = recvfrom(_MAX_DATAGRAM)  # nothing scheduled: just wait
                    else:
                        if server.overdue():
                            server.tick()  # first, even while datagrams keep coming
                        # A host writes a message's reports back to back: take what is queued,
                        # and wait (up to the deadline) only when nothing is.
                        try:
                            data, peer = recvfrom(_MAX_DATAGRAM, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            if not select.select(watched, [], [], server.timeout())[0]:
                                server.tick()
                            continue
                except OSError:
                    continue  # e.g. ICMP port unreachable from a client that went away
                if peer != waker:
                    self.handle_datagram(data, peer)
        finally:
            self._served.set()

    @property
    def wake_fd(self) -> int:
        """Writing a byte here wakes ``serve()``; `softkey run` makes it the signal wakeup fd
        (``signal.set_wakeup_fd``), since a signal may reach another thread while this one
        sleeps in recvfrom()."""
        return self._waker.fileno()

    def stop(self) -> None:
        """Make ``serve()`` return (safe from signal handlers and other threads)."""
        self._stop.set()
        try:
            self._waker.send(b"")
        except OSError:  # closed already, or the buffer is full (a wake-up is pending anyway)
            pass

    def close(self) -> None:
        self.stop()
        if self._serving.is_set():
            self._served.wait(5)  # let serve() leave select() before the socket goes
        self.server.close()
        self.sock.close()
        self._waker.close()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="softkey-udp", daemon=True)
        thread.start()
        return thread


def __getattr__(name: str) -> Any:
    # The client side needs python-fido2's HID classes; a key serving UDP does not, so they
    # are imported only when asked for (cold start, docs/benchmarks.md).
    if name in ("UdpCtapHidConnection", "open_udp_device"):
        from . import udp_client

        return getattr(udp_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
