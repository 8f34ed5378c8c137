"""python-fido2 ``CtapDevice`` over an in-process ``Authenticator`` (no sockets, no HID).

``Ctap2(VirtualCtapDevice(Authenticator()))`` and ``Fido2Client`` drive the device unchanged.
CTAPHID_CBOR maps to ``handle_cbor``, CTAPHID_MSG to ``handle_u2f``; ``event`` cancels a
pending presence wait and ``on_keepalive`` hears UPNEEDED, as over USB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from threading import Event

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

from authenticator import Authenticator


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
        return CAPABILITY.WINK | CAPABILITY.CBOR

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        interaction = _Interaction(event, on_keepalive)
        if cmd == CTAPHID.CBOR:
            return self.authenticator.handle_cbor(bytes(data), interaction)
        if cmd == CTAPHID.MSG:
            return self.authenticator.handle_u2f(bytes(data), interaction)
        if cmd == CTAPHID.PING:
            return bytes(data)
        if cmd == CTAPHID.WINK:
            self.authenticator.wink()
            return b""
        raise CtapError(CtapError.ERR.INVALID_COMMAND)

    def close(self) -> None:
        return None

    @classmethod
    def list_devices(cls) -> Iterator[VirtualCtapDevice]:
        return iter(())
