"""python-fido2 ``CtapDevice`` over an in-process ``Authenticator`` (no sockets, no HID).

``Ctap2(VirtualCtapDevice(Authenticator()))`` and ``Fido2Client`` drive the device unchanged.
CTAPHID_CBOR maps to ``handle_cbor``, CTAPHID_MSG to ``handle_u2f``; ``event`` cancels a
pending presence wait and ``on_keepalive`` hears UPNEEDED, as over USB. An injected fault's
hold (authenticator/faults.py) is honoured here: a delay advances the authenticator's
``FakeClock`` (a real clock: waits, ``event`` cutting it short), no answer raises
``NoAnswerError`` (a ``TimeoutError``), as a HID transport's read timeout is an ``OSError``.

``InProcessHid`` goes one layer lower: real CTAPHID reports through transports/ctaphid.py and
the threaded driver UHID and UDP use, for python-fido2's ``CtapHidDevice``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Hashable, Iterator
from threading import Event

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID, CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from softkey.authenticator import Authenticator
from softkey.authenticator.environment import KEEPALIVE_PROCESSING, Clock
from softkey.authenticator.faults import NoAnswerError

from .ctaphid import REPORT_SIZE, CtapHidEngine, capabilities_for
from .server import HidServer


class _Interaction:
    def __init__(self, event: Event | None, on_keepalive: Callable[[STATUS], None] | None) -> None:
        self._event = event
        self._on_keepalive = on_keepalive
        self._last: int | None = None

    def keepalive(self, status: int) -> None:
        # python-fido2 reports each keepalive status once per run of equal statuses.
        if self._on_keepalive is not None and status != self._last:
            self._last = status
            self._on_keepalive(STATUS(status))

    def cancelled(self) -> bool:
        return self._event is not None and self._event.is_set()


class VirtualCtapDevice(CtapDevice):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    @property
    def capabilities(self) -> int:
        # What INIT would say over HID: no CBOR on a U2F-only key, so python-fido2's
        # Fido2Client falls back to CTAP1 here too.
        return int(capabilities_for(self.authenticator.profile))

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        interaction = _Interaction(event, on_keepalive)
        if cmd == CTAPHID.CBOR and not self.capabilities & CAPABILITY.CBOR:
            # As over HID, where the engine answers ERR_INVALID_CMD (CTAP 2.1 §11.2.9.1.6).
            raise CtapError(CtapError.ERR.INVALID_COMMAND)
        if cmd == CTAPHID.CBOR:
            response = self.authenticator.handle_cbor(bytes(data), interaction)
            return self._honour_hold(response, event, interaction)
        if cmd == CTAPHID.MSG:
            return self.authenticator.handle_u2f(bytes(data), interaction)
        if cmd == CTAPHID.PING:
            return bytes(data)
        if cmd == CTAPHID.WINK:
            self.authenticator.wink()
            return b""
        raise CtapError(CtapError.ERR.INVALID_COMMAND)

    def _honour_hold(
        self, response: bytes, event: Event | None, interaction: _Interaction
    ) -> bytes:
        hold = getattr(self.authenticator.last_outcome, "hold", None)
        if hold is None:
            return response
        if hold.no_answer:
            raise NoAnswerError("the key did not answer (injected fault no_answer)")
        if hold.delay > 0:
            interaction.keepalive(KEEPALIVE_PROCESSING)
            advance = getattr(self.authenticator.clock, "advance", None)
            if callable(advance):
                advance(hold.delay)  # a FakeClock: the test's time moves, nobody sleeps
            elif event is not None:
                if event.wait(hold.delay):
                    raise CtapError(CtapError.ERR.KEEPALIVE_CANCEL)
            else:
                time.sleep(hold.delay)
        return response

    def close(self) -> None:
        return None

    @classmethod
    def list_devices(cls) -> Iterator[VirtualCtapDevice]:
        return iter(())


# -- CTAPHID in-process: the same framing and driver as UHID/UDP, no sockets ---------------


class InProcessHid:
    """A virtual USB port: one CTAPHID endpoint (transports/ctaphid.py + the threaded
    driver) that any number of in-process host connections talk to, each getting the
    answers for its own channels.

    ``CtapHidDevice`` over ``open_device()`` exercises the whole HID path in a test: INIT,
    fragmentation, KEEPALIVE, CANCEL, CHANNEL_BUSY.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        clock: Clock | None = None,
        engine: CtapHidEngine | None = None,
    ) -> None:
        self.server = HidServer(authenticator, self._deliver, clock=clock, engine=engine)
        self.server.start()

    @staticmethod
    def _deliver(report: bytes, peer: Hashable | None) -> None:
        if isinstance(peer, InProcessHidConnection):
            peer.inbox.put(report)

    def connect(self, timeout: float = 10.0) -> InProcessHidConnection:
        return InProcessHidConnection(self, timeout)

    def open_device(self, timeout: float = 10.0) -> CtapHidDevice:
        descriptor = HidDescriptor(
            "inprocess", 0x1209, 0x5A5A, REPORT_SIZE, REPORT_SIZE, "softkey (in-process)", None
        )
        return CtapHidDevice(descriptor, self.connect(timeout))

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> InProcessHid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessHidConnection(CtapHidConnection):
    """python-fido2's ``CtapHidConnection`` to an ``InProcessHid`` port."""

    def __init__(self, port: InProcessHid, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.inbox: queue.Queue[bytes] = queue.Queue()

    def write_packet(self, data: bytes) -> None:
        self.port.server.feed(bytes(data), self)

    def read_packet(self) -> bytes:
        try:
            return self.inbox.get(timeout=self.timeout)
        except queue.Empty:
            raise OSError(f"no report from the device within {self.timeout:g} s") from None

    def close(self) -> None:
        return None
