"""The ``softkey`` fixture's injected faults and event log (a mixin of ``SoftKey``).

``key.inject_fault("bad_signature")`` makes the next request that reaches the user (a
makeCredential, or a getAssertion with up=true) get a broken answer; the client's silent
up=false pre-flight does not count. ``count=N`` for the next N such requests, ``value=`` for the
kinds that take one, ``on="getAssertion"`` (or "makeCredential") to spare the other command.
Kinds and the consumption rule: authenticator/faults.py. ``key.faults`` lists what is still
set, ``key.clear_faults()`` removes it all. Stored credentials and counters are never changed.

``key.events`` is what the key did, oldest first (authenticator/events.py): dicts with
``type`` (credentialAdded, credentialAsserted, credentialUpdated, credentialDeleted, reset,
pinChanged, presenceRequested/Approved/Denied), ``seq``, ``timestamp``, ``rp_id``,
``credential_id`` (base64url), ``sign_count``; never a secret. ``key.clear_events()`` starts
the list afresh. The key keeps its last 1000 events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softkey.authenticator import Authenticator


class FaultMethods:
    """Mixed into ``SoftKey``; needs ``self.authenticator``."""

    authenticator: Authenticator
    _events_after: int = 0

    def inject_fault(
        self, kind: str, count: int = 1, *, value: Any = None, on: str = "any"
    ) -> dict[str, Any]:
        """Set a fault for the next ``count`` requests that reach the user; returns its record
        (``id``, ``kind``, ``value``, ``count``, ``left``, ``on``, ``label``). ValueError
        (``FaultError``) for a kind, value or count that makes no sense."""
        return self.authenticator.faults.add(kind, count, value, on).record()

    def clear_faults(self, kind: str | None = None) -> int:
        """Remove every fault (or those of ``kind``); returns how many there were."""
        return self.authenticator.faults.clear(kind)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The faults still set, with the uses ``left`` of each."""
        return self.authenticator.faults.records()

    @property
    def events(self) -> list[dict[str, Any]]:
        """What the key did since it was made (or since ``clear_events()``), oldest first."""
        after = self._events_after
        return [e for e in self.authenticator.events.history if e["seq"] > after]

    def clear_events(self) -> None:
        self._events_after = self.authenticator.events.last_seq
