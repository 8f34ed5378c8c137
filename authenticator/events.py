"""What the key did, as a stream of events (``Authenticator.events``).

The device emits an event where each thing happens:

| type | emitted by (extra fields) |
|---|---|
| ``credentialAdded`` | makeCredential success, ctap2.py (``resident``, ``up``, ``uv``) |
| ``credentialAsserted`` | getAssertion / getNextAssertion success, ctap2.py (``up``, ``uv``) |
| ``credentialUpdated`` | credential management updateUserInformation, credman.py |
| ``credentialDeleted`` | ``Authenticator.delete_credential`` (credman delete, the CLI) |
| ``reset`` | ``Authenticator.factory_reset`` (authenticatorReset, the CLI) |
| ``pinChanged`` | a PIN stored: setPIN/changePIN, the CLI; pin.py (``change``: set/changed) |
| ``presenceRequested`` | ``Authenticator.confirm_presence``: a person is asked (``purpose``) |
| ``presenceApproved`` | ... they approved (``purpose``) |
| ``presenceDenied`` | ... declined, nobody answered, or cancelled (``purpose``, ``verdict``) |

Every event is a JSON-able dict with ``type``, ``seq`` (1, 2, ... per key since it started),
``timestamp`` (ISO 8601 UTC, milliseconds), ``rp_id``, ``credential_id`` (base64url, unpadded)
and ``sign_count`` (null where they do not apply). A silent getAssertion (``up`` false, the
pre-flight a client sends to find which allowList ID the key holds) is an assertion too: it
moves the signature counter, so it has its event, with ``up`` false.

Never in an event: PINs or their hashes, keys, tokens, user handles, user names, extension
inputs or outputs. An rp_id is the request's text: whoever shows it on a terminal escapes it
(softkey.transports.display.printable). Events are runtime state: a bounded in-memory history
(``history``) and subscribers; nothing is stored.
"""

from __future__ import annotations

import base64
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("softkey.events")

EVENT_TYPES = (
    "credentialAdded",
    "credentialAsserted",
    "credentialUpdated",
    "credentialDeleted",
    "reset",
    "pinChanged",
    "presenceRequested",
    "presenceApproved",
    "presenceDenied",
)
DEFAULT_HISTORY = 1000

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventBus:
    """Emits events to subscribers and keeps the last ``history`` of them.

    ``wall``: seconds since the epoch, for timestamps (injectable; the device's ``Clock`` is
    monotonic and says nothing about the date). A subscriber is called in the thread that
    emits (the transport's worker, holding the authenticator): it must be quick and must not
    call back into the authenticator. One that raises is logged and skipped.

    The history keeps each event's raw parts (the wall time, the credential ID's bytes) and
    builds the dict (ISO timestamp, base64url ID) when it is read: every makeCredential and
    getAssertion emits, and nobody may ever look.
    """

    def __init__(
        self, *, history: int = DEFAULT_HISTORY, wall: Callable[[], float] = time.time
    ) -> None:
        self.wall = wall
        self._history: deque[_Raw] = deque(maxlen=history)
        self._subscribers: tuple[Subscriber, ...] = ()
        self._seq = 0

    @property
    def history(self) -> list[Event]:
        """The most recent events, oldest first (copies)."""
        return [_event(raw) for raw in list(self._history)]

    @property
    def last_seq(self) -> int:
        return self._seq

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns the unsubscribe."""
        self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def emit(
        self,
        type_: str,
        *,
        rp_id: str | None = None,
        credential_id: bytes | None = None,
        sign_count: int | None = None,
        **fields: Any,
    ) -> None:
        if type_ not in _EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        self._seq += 1
        raw = (type_, self._seq, self.wall(), rp_id, credential_id, sign_count, fields)
        self._history.append(raw)
        subscribers = self._subscribers
        if not subscribers:
            return
        event = _event(raw)
        for subscriber in subscribers:
            try:
                subscriber(dict(event))
            except Exception:  # a listener must never break the device
                log.exception("an event subscriber failed")


# An event as kept: (type, seq, wall seconds, rp_id, credential ID bytes, sign_count, extra
# fields); ``_event`` makes the documented dict of it.
_Raw = tuple[str, int, float, str | None, bytes | None, int | None, dict[str, Any]]
_EVENT_TYPES = frozenset(EVENT_TYPES)


def _event(raw: _Raw) -> Event:
    type_, seq, wall, rp_id, credential_id, sign_count, fields = raw
    return {
        "type": type_,
        "seq": seq,
        "timestamp": _timestamp(wall),
        "rp_id": rp_id,
        "credential_id": b64url(credential_id) if credential_id is not None else None,
        "sign_count": sign_count,
        **fields,
    }


def auth_data_flags(auth_data: bytes) -> tuple[bool, bool, int | None]:
    """(up, uv, signCount) of an authenticatorData (CTAP 2.1 §6.1, WebAuthn §6.1)."""
    if len(auth_data) < 37:
        return False, False, None
    flags = auth_data[32]
    (counter,) = struct.unpack_from(">I", auth_data, 33)
    return bool(flags & 0x01), bool(flags & 0x04), counter


def credential_asserted(
    bus: EventBus, rp_id: str | None, credential_id: bytes, auth_data: bytes
) -> None:
    """The ``credentialAsserted`` event of an assertion the device just made."""
    up, uv, counter = auth_data_flags(auth_data)
    bus.emit(
        "credentialAsserted",
        rp_id=rp_id,
        credential_id=credential_id,
        sign_count=counter,
        up=up,
        uv=uv,
    )


def credential_added(
    bus: EventBus, rp_id: str, credential_id: bytes, auth_data: bytes, *, resident: bool
) -> None:
    """The ``credentialAdded`` event of a makeCredential the device just answered."""
    up, uv, counter = auth_data_flags(auth_data)
    bus.emit(
        "credentialAdded",
        rp_id=rp_id,
        credential_id=credential_id,
        sign_count=counter,
        resident=resident,
        up=up,
        uv=uv,
    )
