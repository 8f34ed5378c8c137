"""What each CTAP version advertises and accepts, and device presets. Data, not subclasses.

Base profiles follow the table in DESIGN.md; presets add the slot capacities the seeds cite
(YubiKey 5: 25, SoloKey: 50, Nitrokey 3: 10, Nitrokey FIDO2: 8). AAGUIDs are our own
(stable per profile), never a real vendor's: an RP checking metadata must not mistake the
emulator for real hardware.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from .ctap import CoseAlg

CTAP2_0 = "2.0"
CTAP2_1_PRE = "2.1-pre"
CTAP2_1 = "2.1"

_AAGUID_NAMESPACE = uuid.UUID("5f0f5c1e-8a0b-4d0e-9a63-5f1f7e1a0001")


def _aaguid(name: str) -> bytes:
    return uuid.uuid5(_AAGUID_NAMESPACE, "softkey/" + name).bytes


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    ctap: str  # CTAP2_0 | CTAP2_1_PRE | CTAP2_1
    rk_capacity: int | None  # None: unlimited (platform-like)
    aaguid: bytes
    algorithms: tuple[int, ...] = (CoseAlg.ES256, CoseAlg.EDDSA)
    pin_protocols: tuple[int, ...] = (1,)
    max_cred_count_in_list: int = 8
    firmware_version: int = 0x00010000
    reset_window: float = 10.0  # seconds after power-up in which reset is allowed
    min_pin_length: int = 4
    enterprise_attestation: bool = False
    extensions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def versions(self) -> tuple[str, ...]:
        versions = ["U2F_V2", "FIDO_2_0"]
        if self.ctap in (CTAP2_1_PRE, CTAP2_1):
            versions.append("FIDO_2_1_PRE")
        if self.ctap == CTAP2_1:
            versions.append("FIDO_2_1")
        return tuple(versions)

    @property
    def credman(self) -> str:
        """none | preview (0x41 only) | full (0x0A, and 0x41 as shipping 2.1 keys do)."""
        return {CTAP2_0: "none", CTAP2_1_PRE: "preview", CTAP2_1: "full"}[self.ctap]

    @property
    def is_2_1(self) -> bool:
        return self.ctap == CTAP2_1

    def with_capacity(self, capacity: int | None) -> Profile:
        return replace(self, rk_capacity=capacity)


def _base(name: str, ctap: str, description: str, **kw: object) -> Profile:
    pin_protocols = (2, 1) if ctap == CTAP2_1 else (1,)
    return Profile(
        name=name,
        description=description,
        ctap=ctap,
        aaguid=_aaguid(name),
        pin_protocols=pin_protocols,
        **kw,  # type: ignore[arg-type]
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _base("ctap2.0", CTAP2_0, "CTAP 2.0 key: no credential management", rk_capacity=25),
        _base(
            "ctap2.1-pre", CTAP2_1_PRE, "CTAP 2.1 preview key: credMgmt 0x41", rk_capacity=25
        ),
        _base("ctap2.1", CTAP2_1, "CTAP 2.1 key: credMgmt 0x0A, PIN protocol 2", rk_capacity=25),
        _base("yubikey-5", CTAP2_1_PRE, "YubiKey 5-like: 2.1-pre, 25 slots", rk_capacity=25),
        _base("solokey", CTAP2_1_PRE, "SoloKey-like: 2.1-pre, 50 slots", rk_capacity=50),
        _base("nitrokey-3", CTAP2_1, "Nitrokey 3-like: 2.1, 10 slots", rk_capacity=10),
        _base("nitrokey-fido2", CTAP2_0, "Nitrokey FIDO2-like: 2.0, 8 slots", rk_capacity=8),
        _base(
            "unlimited-rk",
            CTAP2_1,
            "platform-like: 2.1, unlimited discoverable credentials",
            rk_capacity=None,
        ),
    )
}

DEFAULT_PROFILE = "ctap2.1"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}"
        ) from None
