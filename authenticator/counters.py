"""Signature counter modes (WebAuthn §6.1.1) shared by CTAP2 and CTAP1/U2F.

- ``per-credential`` (default, like most security keys): each credential has its own counter,
  advanced and persisted before its signature leaves the device.
- ``global``: one counter for the whole device (older keys); every signature advances it.
- ``zero``: always 0, like synced passkeys; RPs must then skip clone detection.

The mode is remembered in the state (meta ``counter_mode``) and survives authenticatorReset,
since it describes the emulated device rather than its credentials. ``set_counter`` lets an
RP's test rewind or advance a counter to exercise its clone detection.

At 0xFFFFFFFF (the most authenticatorData's 32-bit field holds) the counter stays there. CTAP
2.1 §6.2.2 says to increment "by some positive value", which is impossible past the top; of
the two ways out, wrapping to 0 tells an RP (WebAuthn §6.1.1, §7.2) both that the
authenticator has no counter and, against its stored value, that it was cloned, while staying
at the top keeps the counter monotonic (never decreasing) and flags only the repeat.

Durability without a commit per signature, as firmware does it: values are reserved in blocks
of ``RESERVE_BLOCK``. Before handing out c .. c+K-1 the store persists c+K-1 (store.py
"signature counters"); the values themselves come from memory. A crash (kill -9) or power loss
loses only the unused rest of a block, so the counter jumps forward by less than K and never
repeats or goes back: WebAuthn §6.1.1 asks only that it increase. A clean close writes the last
value back, so an orderly restart continues without a jump. Reading the state file directly
while the key runs shows the reservation, not the last value.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

MAX_COUNTER = 0xFFFFFFFF
META_MODE = "counter_mode"
META_GLOBAL = "global_counter"


class CounterMode(str, Enum):
    PER_CREDENTIAL = "per-credential"
    GLOBAL = "global"
    ZERO = "zero"


DEFAULT_MODE = CounterMode.PER_CREDENTIAL

# Values reserved per durable write: one commit (and fsync) per this many signatures of a
# credential (per-credential mode) or of the device (global mode).
RESERVE_BLOCK = 256


def parse_mode(name: str | CounterMode) -> CounterMode:
    try:
        return CounterMode(name)
    except ValueError:
        choices = ", ".join(m.value for m in CounterMode)
        raise ValueError(f"unknown counter mode {name!r}; choose one of: {choices}") from None


def resolve_mode(store: Store, requested: str | CounterMode | None) -> CounterMode:
    """The requested mode (remembered from now on), else the stored one, else the default."""
    if requested is not None:
        mode = parse_mode(requested)
        store.set_meta(META_MODE, mode.value.encode())
        return mode
    stored = store.get_meta(META_MODE)
    if stored is None:
        return DEFAULT_MODE
    try:
        return CounterMode(stored.decode())
    except (ValueError, UnicodeDecodeError):
        return DEFAULT_MODE


def next_value(store: Store, mode: CounterMode, credential_id: bytes) -> int:
    """The counter to put in the next authenticatorData, persisted first."""
    if mode is CounterMode.ZERO:
        return 0
    if mode is CounterMode.GLOBAL:
        return store.increment(META_GLOBAL, MAX_COUNTER, RESERVE_BLOCK)
    return store.increment_counter(credential_id, MAX_COUNTER, RESERVE_BLOCK)


def current_value(store: Store, mode: CounterMode, credential_id: bytes) -> int:
    """The value the last signature carried (0 if none yet)."""
    if mode is CounterMode.ZERO:
        return 0
    if mode is CounterMode.GLOBAL:
        return store.counter_value(META_GLOBAL)
    return store.get_counter(credential_id)


def set_value(store: Store, mode: CounterMode, credential_id: bytes, value: int) -> None:
    """Set the counter; the next signature carries ``value + 1``.

    In ``global`` mode there is one counter, so this sets the device's counter. In ``zero``
    mode there is nothing to set.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"a signature counter is an integer from 0 to {MAX_COUNTER}")
    if mode is CounterMode.ZERO:
        raise ValueError("counter mode is 'zero': signatures always carry 0, nothing to set")
    if mode is CounterMode.GLOBAL:
        store.set_counter_value(META_GLOBAL, value)
    else:
        store.set_counter(credential_id, value)
