"""What each CTAP version advertises and accepts, and device presets. Data, not subclasses.

Base profiles follow the table in DESIGN.md; presets add the slot capacities the seeds cite
(YubiKey 5: 25, SoloKey: 50, Nitrokey 3: 10, Nitrokey FIDO2: 8) and, for yubikey-bio, a
fingerprint sensor (``BioSensor``: built-in UV and bio enrollment). What a CTAP version adds
(PIN protocol 2, permission-scoped tokens, makeCredUvNotRqd, authenticatorConfig; in 2.2 the
persistent pcmr token and a PIN complexity policy) is set per version in ``_base``, and
``Profile.at_least`` tells code whether a version's feature applies; docs/profiles.md
(tools/dev/gen_profiles_doc.py) shows each getInfo. AAGUIDs are our own (stable per
profile), never a real vendor's: an RP checking metadata must not mistake the emulator for
real hardware.

The ``u2f`` profile is a U2F-only key (``ctap`` = ``U2F``, ``Profile.ctap2`` False): CTAPHID
INIT advertises no CBOR capability (transports/ctaphid.py ``capabilities_for``), so clients
fall back to CTAP1; it has no getInfo, PIN, reset command or resident credentials.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from .ctap import CoseAlg

CTAP2_0 = "2.0"
CTAP2_1_PRE = "2.1-pre"
CTAP2_1 = "2.1"
# CTAP 2.2 (FIDO_2_2): everything of 2.1, plus the persistent read-only credential-management
# token (pcmr), thirdPartyPayment, hmac-secret-mc, attestationFormatsPreference and the new
# getInfo members (persistent_token.py, pin_complexity.py, extensions.py, ctap2.get_info).
CTAP2_2 = "2.2"
# CTAP2 versions oldest first: a key of one version does everything the earlier ones define.
CTAP2_VERSIONS = (CTAP2_0, CTAP2_1_PRE, CTAP2_1, CTAP2_2)
# A U2F-only key: CTAP1 alone (FIDO U2F raw messages in CTAPHID_MSG, CTAP 2.1 §11.2.9.1.1),
# no CTAP2 at all, like keys made before CTAP2 and Chromium's virtual "u2f" authenticator.
U2F = "u2f"

_AAGUID_NAMESPACE = uuid.UUID("5f0f5c1e-8a0b-4d0e-9a63-5f1f7e1a0001")


def _aaguid(name: str) -> bytes:
    return uuid.uuid5(_AAGUID_NAMESPACE, "softkey/" + name).bytes


# Device quirks: where a vendor preset follows its vendor's observed behaviour instead of the
# bare spec. Code keys off the quirk name, never off a preset's name; a preset lists each
# quirk with the evidence for it, and docs/profiles.md prints the list.
PIN_RETRIES_WITHOUT_PIN = "pin_retries_without_pin"
KNOWN_QUIRKS = frozenset({PIN_RETRIES_WITHOUT_PIN})


@dataclass(frozen=True)
class BioSensor:
    """A built-in fingerprint sensor: built-in user verification (builtin_uv.py) and
    authenticatorBioEnrollment (bio_enrollment.py), CTAP 2.1 §6.5.5.7.3 and §6.7.

    The numbers follow the YubiKey Bio series where Yubico documents them (3 fingerprint
    attempts before the PIN is required, 5 fingerprints, 15-byte names); the samples per
    enrollment are a choice (a real sensor decides by image quality).
    """

    max_templates: int = 5  # enrollBegin on a full key: CTAP2_ERR_FP_DATABASE_FULL
    samples: int = 4  # maxCaptureSamplesRequiredForEnroll: good samples per finger
    max_uv_retries: int = 3  # uvRetries after a match or a right PIN
    # getInfo preferredPlatformUvAttempts (0x11): fingerprint tries a platform makes before
    # it offers the PIN (CTAP 2.1 §6.4).
    preferred_platform_uv_attempts: int = 3
    max_template_friendly_name: int = 15  # bytes (getFingerprintSensorInfo 0x08)
    fingerprint_kind: int = 1  # 1: touch sensor, 2: swipe sensor (§6.7.3)
    # getInfo uvModality (0x12): USER_VERIFY_FINGERPRINT_INTERNAL in the FIDO registry of
    # predefined values.
    uv_modality: int = 0x00000002


@dataclass(frozen=True)
class Quirk:
    name: str  # one of KNOWN_QUIRKS: the code that implements it checks this name
    description: str  # what the key does instead of what the spec says
    evidence: str  # where the vendor's behaviour was observed or documented


# What every CTAP2 profile offers, in getInfo order (ES256 first: RPs list it first too).
CLASSIC_ALGORITHMS = (CoseAlg.ES256, CoseAlg.EDDSA, CoseAlg.ES384)
# ML-DSA-44/65/87 (FIPS 204): CTAP 2.1 and later profiles only, after the classic ones, so a
# credential is ML-DSA only when the RP puts ML-DSA before every classic algorithm in
# pubKeyCredParams (CTAP 2.1 §6.1.2 step 3: the first supported entry wins). No 2.0 or
# 2.1-pre key shipped them. Authenticator.algorithms drops what this installation's
# cryptography cannot run and what cannot fit maxMsgSize (docs/credential-id.md "ML-DSA").
MLDSA_ALGORITHMS = (CoseAlg.MLDSA44, CoseAlg.MLDSA65, CoseAlg.MLDSA87)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    ctap: str  # CTAP2_0 | CTAP2_1_PRE | CTAP2_1 | CTAP2_2 | U2F
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
    # CTAP 2.2 features (False before 2.2; set per version by _base).
    # perCredMgmtRO: the persistent read-only credential-management token, permission pcmr
    # (persistent_token.py).
    per_cred_mgmt_ro: bool = False
    # getInfo pinComplexityPolicy: the key has a PIN complexity policy that setMinPINLength
    # can switch on (pin_complexity.py).
    pin_complexity_policy: bool = False
    # maxPINRetries: wrong PINs before the PIN is blocked for good (only reset helps).
    pin_retries: int = 8
    # Whose option rules makeCredential/getAssertion follow. CTAP2_0 (2.0 and 2.1-pre keys):
    # an option "known but not valid for this command" is INVALID_OPTION (CTAP 2.0 §5.1, §5.2
    # option processing), so makeCredential "up" (any value) and getAssertion "rk" are refused
    # that way. CTAP2_1: makeCredential "up": false is INVALID_OPTION, true is the default
    # (§6.1.2 step 5); getAssertion "rk" is UNSUPPORTED_OPTION (§6.2.2 step 5).
    option_rules: str = CTAP2_1
    # rp.icon and user.icon are members (URL text strings) as in CTAP 2.0 §5.1: type-checked,
    # and user.icon is kept in a discoverable credential and returned with its user entity
    # (§5.1 step 10 "store the user parameter"; §5.2 user member). CTAP 2.1 follows WebAuthn
    # L2, which removed icon: there it is an unknown member, ignored (not checked, not kept).
    icons: bool = False
    # Credential-management preview (0x41) on a key that also has 0x0A: accept a token from
    # getPinToken (clientPIN 0x05), which CTAP 2.1 §6.5.5.7 gives only mc and ga, although
    # §6.8 asks for cm: a platform that knows only the preview cannot ask for permissions.
    # 0x0A stays strict. (On 2.1-pre keys every token is a permission-less legacy token.)
    preview_accepts_pin_token: bool = True
    # Where this preset follows its vendor's observed behaviour instead of the spec.
    quirks: tuple[Quirk, ...] = ()
    # Backup flags BE/BS every credential of the key gets unless set per credential
    # (backup.py): a testing aid for synced-passkey RP logic, off on every preset (real
    # security keys never set them). BS without BE is refused (WebAuthn §6.1.3).
    backup_eligible: bool = False
    backup_state: bool = False
    # A fingerprint sensor (built-in UV, bio enrollment); None: the PIN is the only UV.
    bio: BioSensor | None = None

    def __post_init__(self) -> None:
        unknown = [q.name for q in self.quirks if q.name not in KNOWN_QUIRKS]
        if unknown:
            raise ValueError(f"profile {self.name!r}: unknown quirks {unknown}")
        if self.backup_state and not self.backup_eligible:
            raise ValueError(f"profile {self.name!r}: backup_state needs backup_eligible")
        if self.bio is not None and not self.at_least(CTAP2_1_PRE):
            # authenticatorBioEnrollment appeared with FIDO_2_1_PRE (0x40) and 2.1 (0x09).
            raise ValueError(f"profile {self.name!r}: a fingerprint sensor needs CTAP 2.1-pre+")

    def has_quirk(self, name: str) -> bool:
        return any(q.name == name for q in self.quirks)

    @property
    def versions(self) -> tuple[str, ...]:
        if self.ctap == U2F:
            return ("U2F_V2",)
        versions = ["U2F_V2", "FIDO_2_0"]
        if self.at_least(CTAP2_1_PRE):
            versions.append("FIDO_2_1_PRE")
        if self.at_least(CTAP2_1):
            versions.append("FIDO_2_1")
        if self.at_least(CTAP2_2):
            versions.append("FIDO_2_2")
        return tuple(versions)

    def at_least(self, version: str) -> bool:
        """Speaks CTAP2 ``version`` or a later one (a U2F-only key speaks none)."""
        if self.ctap not in CTAP2_VERSIONS:
            return False
        return CTAP2_VERSIONS.index(self.ctap) >= CTAP2_VERSIONS.index(version)

    @property
    def credman(self) -> str:
        """none | preview (0x41 only) | full (0x0A, and 0x41 as shipping 2.1 keys do)."""
        if self.at_least(CTAP2_1):
            return "full"
        return {U2F: "none", CTAP2_0: "none", CTAP2_1_PRE: "preview"}[self.ctap]

    @property
    def ctap2(self) -> bool:
        """Speaks CTAP2 (CTAPHID_CBOR, authenticatorGetInfo...). False only for a U2F-only
        key: it answers CTAPHID_MSG alone and has no PIN, reset or resident credentials."""
        return self.ctap != U2F

    @property
    def is_2_1(self) -> bool:
        """CTAP 2.1 or later (2.2 keys do everything 2.1 defines)."""
        return self.at_least(CTAP2_1)

    def with_capacity(self, capacity: int | None) -> Profile:
        return replace(self, rk_capacity=capacity)


def _base(name: str, ctap: str, description: str, **kw: object) -> Profile:
    # What each CTAP version defines; presets only add capacity (and, rarely, ep or quirks).
    # 2.1-pre keys (FIDO_2_0 plus the preview commands) keep 2.0's option rules and icon.
    by_version: dict[str, dict[str, object]] = {
        # U2F signs with ECDSA P-256 only (U2F raw messages §4.3) and has no PIN.
        U2F: {"pin_protocols": (), "algorithms": (CoseAlg.ES256,)},
        CTAP2_0: {"pin_protocols": (1,), "option_rules": CTAP2_0, "icons": True},
        CTAP2_1_PRE: {"pin_protocols": (1,), "option_rules": CTAP2_0, "icons": True},
        CTAP2_1: {
            "pin_protocols": (2, 1),
            "pin_uv_auth_token": True,
            "make_cred_uv_not_rqd": True,
            "authnr_cfg": True,
            "max_rpids_for_set_min_pin_length": 4,
            "algorithms": CLASSIC_ALGORITHMS + MLDSA_ALGORITHMS,
        },
    }
    # 2.2 keeps every 2.1 setting and adds its own features.
    by_version[CTAP2_2] = {
        **by_version[CTAP2_1],
        "per_cred_mgmt_ro": True,
        "pin_complexity_policy": True,
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
        _base(
            "ctap2.2",
            CTAP2_2,
            "CTAP 2.2 key: 2.1 plus persistent read-only credential management (pcmr), "
            "thirdPartyPayment, hmac-secret-mc, attestationFormatsPreference",
            rk_capacity=25,
            enterprise_attestation=True,
        ),
        _base(
            "yubikey-5",
            CTAP2_1_PRE,
            "YubiKey 5-like: 2.1-pre, 25 slots",
            rk_capacity=25,
            quirks=(
                Quirk(
                    PIN_RETRIES_WITHOUT_PIN,
                    "clientPIN getPINRetries (0x01) before a PIN is set answers "
                    "CTAP2_ERR_PIN_NOT_SET (0x35); CTAP 2.0 §5.5.3 and CTAP 2.1 §6.5.5.2 "
                    "define no error there and return the retry count",
                    "issue 16 (deviations found by independent authenticator test suites "
                    "run against softkey): YubiKeys answer PIN_NOT_SET and Yubico's client "
                    "library expects it. Not re-checked on hardware here; python-fido2 "
                    "2.2.1's ClientPin.get_pin_retries does not special-case it (it raises)",
                ),
            ),
        ),
        _base(
            "yubikey-bio",
            CTAP2_1,
            "YubiKey Bio-like: 2.1, 25 slots, fingerprint sensor (built-in UV, bio enrollment)",
            rk_capacity=25,
            bio=BioSensor(),
        ),
        _base("solokey", CTAP2_1_PRE, "SoloKey-like: 2.1-pre, 50 slots", rk_capacity=50),
        _base("nitrokey-3", CTAP2_1, "Nitrokey 3-like: 2.1, 10 slots", rk_capacity=10),
        _base("nitrokey-fido2", CTAP2_0, "Nitrokey FIDO2-like: 2.0, 8 slots", rk_capacity=8),
        _base(
            "unlimited-rk",
            CTAP2_1,
            "platform-like: 2.1, unlimited discoverable credentials",
            rk_capacity=None,
        ),
        _base(
            "u2f",
            U2F,
            "U2F-only key (CTAP1): no CTAP2, no PIN, no discoverable credentials",
            rk_capacity=0,
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
