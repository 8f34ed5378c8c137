"""softkey's authenticator: a pure CTAP2 device (bytes in, bytes out)."""

from .ctap import Cmd, CtapError, Status
from .device import Authenticator
from .environment import (
    AutoPresence,
    FakeClock,
    FixedPresence,
    PresenceRequest,
    ScriptedPresence,
    SystemClock,
    Verdict,
)
from .profiles import PROFILES, Profile, get_profile
from .store import StateError

__all__ = [
    "Authenticator",
    "AutoPresence",
    "Cmd",
    "CtapError",
    "FakeClock",
    "FixedPresence",
    "PROFILES",
    "PresenceRequest",
    "Profile",
    "ScriptedPresence",
    "StateError",
    "Status",
    "SystemClock",
    "Verdict",
    "get_profile",
]
