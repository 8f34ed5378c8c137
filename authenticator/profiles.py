"""What each CTAP version advertises and accepts, and device presets. Data, not subclasses.

Base profiles follow the table in DESIGN.md; presets add the slot capacities the seeds cite
(YubiKey 5: 25, SoloKey: 50, Nitrokey 3: 10, Nitrokey FIDO2: 8). What a CTAP version adds
(PIN protocol 2, permission-scoped tokens, makeCredUvNotRqd, authenticatorConfig) is set per
version in ``_base``; docs/profiles.md (tools/dev/gen_profiles_doc.py) shows each getInfo.
AAGUIDs are our own (stable per profile), never a real vendor's: an RP checking metadata
must not mistake the emulator for real hardware.
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
    # getInfo order; the platform's pubKeyCredParams order picks the one used. ES384 is
    # verified end-to-end in tests/authenticator/test_algorithms.py.
    algorithms: tuple[int, ...] = (CoseAlg.ES256, CoseAlg.EDDSA, CoseAlg.ES384)
    pin_protocols: tuple[int, ...] = (1,)
    max_cred_count_in_list: int = 8
    firmware_version: int = 0x00010000
    reset_window: float = 10.0  # seconds after power-up in which reset is allowed
    min_pin_length: int = 4
    enterprise_attestation: bool = False
    # Empty: the CTAP version's set (extensions.supported); else exactly these.
    extensions: tuple[str, ...] = field(default_factory=tuple)
    # maxSerializedLargeBlobArray (getInfo 0x0B) where largeBlobKey is supported; the spec
    # asks for at least 1024 bytes.
    max_serialized_large_blob_array: int = 4096
    # CTAP 2.1 features (all False on 2.0 and 2.1-pre keys; set per version by _base).
    # pinUvAuthToken: permission-scoped tokens (clientPIN subcommand 0x09, §6.5.5.7).
    pin_uv_auth_token: bool = False
    # makeCredUvNotRqd: a non-discoverable makeCredential needs no UV even with a PIN set.
    make_cred_uv_not_rqd: bool = False
    # authnrCfg: authenticatorConfig (0x0D): toggleAlwaysUv, setMinPINLength (§6.11).
    authnr_cfg: bool = False
    max_rpids_for_set_min_pin_length: int = 0
    # maxPINRetries: wrong PINs before the PIN is blocked for good (only reset helps).
    pin_retries: int = 8

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
    # What each CTAP version defines; presets only add capacity (and, rarely, ep).
    by_version: dict[str, dict[str, object]] = {
        CTAP2_0: {"pin_protocols": (1,)},
        CTAP2_1_PRE: {"pin_protocols": (1,)},
        CTAP2_1: {
            "pin_protocols": (2, 1),
            "pin_uv_auth_token": True,
            "make_cred_uv_not_rqd": True,
            "authnr_cfg": True,
            "max_rpids_for_set_min_pin_length": 4,
        },
    }
    settings = {**by_version[ctap], **kw}
    return Profile(
        name=name,
        description=description,
        ctap=ctap,
        aaguid=_aaguid(name),
        **settings,  # type: ignore[arg-type]
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _base("ctap2.0", CTAP2_0, "CTAP 2.0 key: no credential management", rk_capacity=25),
        _base("ctap2.1-pre", CTAP2_1_PRE, "CTAP 2.1 preview key: credMgmt 0x41", rk_capacity=25),
        _base(
            "ctap2.1",
            CTAP2_1,
            "CTAP 2.1 key: credMgmt 0x0A, PIN protocol 2, enterprise attestation (ep)",
            rk_capacity=25,
            enterprise_attestation=True,
        ),
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
