"""What the device needs from the world, passed in so tests and transports control it.

- ``Clock``: monotonic seconds (reset window, token lifetimes).
- ``Presence``: the person at the key, asked to approve a request (user presence, CTAP 2.1
  §6.1.2 step 13 and friends). The transport lends an ``Interaction`` for each request so a
  presence policy that waits can emit KEEPALIVE(UPNEEDED) and notice CTAPHID_CANCEL without
  the authenticator knowing about framing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

# CTAPHID_KEEPALIVE status bytes (CTAP 2.1 §11.2.9.2.1).
KEEPALIVE_PROCESSING = 1
KEEPALIVE_UPNEEDED = 2


class Clock(Protocol):
    def monotonic(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand: no sleeps in tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Verdict(Enum):
    APPROVED = "approved"
    DENIED = "denied"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PresenceRequest:
    """What the person is asked to approve; shown by prompting presence policies."""

    purpose: str  # "makeCredential", "getAssertion", "reset", "selection", ...
    rp_id: str | None = None
    user_name: str | None = None


class Interaction(Protocol):
    """Per-request callbacks from the transport."""

    def keepalive(self, status: int) -> None: ...

    def cancelled(self) -> bool: ...


class NoInteraction:
    """For callers without a transport (in-process use, CLI)."""

    def keepalive(self, status: int) -> None:
        return None

    def cancelled(self) -> bool:
        return False


class Presence(Protocol):
    def confirm(self, request: PresenceRequest, interaction: Interaction) -> Verdict: ...


class AutoPresence:
    """Approves everything at once: a person who always touches the key."""

    def confirm(self, request: PresenceRequest, interaction: Interaction) -> Verdict:
        return Verdict.APPROVED


class FixedPresence:
    """Always gives the same verdict (deny, timeout...)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def confirm(self, request: PresenceRequest, interaction: Interaction) -> Verdict:
        return self.verdict


class ScriptedPresence:
    """Gives verdicts from a script, then a default; records every request it saw."""

    def __init__(
        self, verdicts: Iterable[Verdict] = (), default: Verdict = Verdict.APPROVED
    ) -> None:
        self.verdicts = list(verdicts)
        self.default = default
        self.requests: list[PresenceRequest] = []

    def confirm(self, request: PresenceRequest, interaction: Interaction) -> Verdict:
        self.requests.append(request)
        return self.verdicts.pop(0) if self.verdicts else self.default


def presence_from_name(name: str) -> Presence:
    """`auto` | `deny` | `timeout`: the policies that need no terminal or socket."""
    policies: dict[str, Callable[[], Presence]] = {
        "auto": AutoPresence,
        "deny": lambda: FixedPresence(Verdict.DENIED),
        "timeout": lambda: FixedPresence(Verdict.TIMEOUT),
    }
    try:
        return policies[name]()
    except KeyError:
        raise ValueError(f"unknown presence policy {name!r}") from None


RandomSource = Callable[[int], bytes]
system_random: RandomSource = os.urandom
