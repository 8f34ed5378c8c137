"""Generate docs/profiles.md from the code: each profile's real getInfo response.

    python -m softkey.tools.dev.gen_profiles_doc           # rewrite docs/profiles.md
    python -m softkey.tools.dev.gen_profiles_doc --check   # exit 1 if the file is stale

tests/authenticator/test_profiles.py runs the check, so the document cannot drift from
what the device answers.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from softkey.authenticator import PROFILES, Authenticator
from softkey.authenticator.ctap import InfoKey
from softkey.authenticator.ctap2 import get_info
from softkey.authenticator.params import MAX_ICON_LEN
from softkey.authenticator.profiles import CTAP2_0, CTAP2_1, CTAP2_1_PRE, CTAP2_2, U2F, Profile
from softkey.transports.ctaphid import capabilities_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"

# The spec's member names (CTAP 2.1 §6.4).
MEMBER_NAMES = {
    InfoKey.VERSIONS: "versions",
    InfoKey.EXTENSIONS: "extensions",
    InfoKey.AAGUID: "aaguid",
    InfoKey.OPTIONS: "options",
    InfoKey.MAX_MSG_SIZE: "maxMsgSize",
    InfoKey.PIN_UV_AUTH_PROTOCOLS: "pinUvAuthProtocols",
    InfoKey.MAX_CREDENTIAL_COUNT_IN_LIST: "maxCredentialCountInList",
    InfoKey.MAX_CREDENTIAL_ID_LENGTH: "maxCredentialIdLength",
    InfoKey.TRANSPORTS: "transports",
    InfoKey.ALGORITHMS: "algorithms",
    InfoKey.MAX_SERIALIZED_LARGE_BLOB_ARRAY: "maxSerializedLargeBlobArray",
    InfoKey.FORCE_PIN_CHANGE: "forcePINChange",
    InfoKey.MIN_PIN_LENGTH: "minPINLength",
    InfoKey.FIRMWARE_VERSION: "firmwareVersion",
    InfoKey.MAX_CRED_BLOB_LENGTH: "maxCredBlobLength",
    InfoKey.MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH: "maxRPIDsForSetMinPINLength",
    InfoKey.PREFERRED_PLATFORM_UV_ATTEMPTS: "preferredPlatformUvAttempts",
    InfoKey.UV_MODALITY: "uvModality",
    InfoKey.CERTIFICATIONS: "certifications",
    InfoKey.REMAINING_DISCOVERABLE_CREDENTIALS: "remainingDiscoverableCredentials",
    InfoKey.VENDOR_PROTOTYPE_CONFIG_COMMANDS: "vendorPrototypeConfigCommands",
    # CTAP 2.2 §6.4
    InfoKey.ATTESTATION_FORMATS: "attestationFormats",
    InfoKey.UV_COUNT_SINCE_LAST_PIN_ENTRY: "uvCountSinceLastPinEntry",
    InfoKey.LONG_TOUCH_FOR_RESET: "longTouchForReset",
    InfoKey.ENC_IDENTIFIER: "encIdentifier",
    InfoKey.TRANSPORTS_FOR_RESET: "transportsForReset",
    InfoKey.PIN_COMPLEXITY_POLICY: "pinComplexityPolicy",
    InfoKey.PIN_COMPLEXITY_POLICY_URL: "pinComplexityPolicyURL",
    InfoKey.MAX_PIN_LENGTH: "maxPINLength",
}

CREDMAN = {
    "none": "none: a slot is freed only by reset (which kills every credential)",
    "preview": "0x41 (credentialMgmtPreview): metadata, enumerate, delete",
    "full": "0x0A (credMgmt) + 0x41 alias: metadata, enumerate, delete, updateUserInformation",
}

VERSION_NAMES = {
    U2F: "U2F only (CTAP1)",
    CTAP2_0: "CTAP 2.0",
    CTAP2_1_PRE: "CTAP 2.1 PRE",
    CTAP2_1: "CTAP 2.1",
    CTAP2_2: "CTAP 2.2",
}

# Where the specs leave a choice (or a profile's version is a draft), what softkey does and why.
DECISIONS = [
    "## Behaviour choices",
    "",
    "- **Option rules** (`Profile.option_rules`). CTAP 2.0 lists only `rk` and `uv` for",
    "  makeCredential and only `up` and `uv` for getAssertion; an option known but not valid",
    "  for the command is CTAP2_ERR_INVALID_OPTION (§5.1, §5.2). CTAP 2.1 accepts",
    "  makeCredential `up: true` and answers getAssertion `rk` with",
    "  CTAP2_ERR_UNSUPPORTED_OPTION (§6.1.2, §6.2.2 step 5). **2.1-pre keys follow CTAP 2.0**:",
    "  `FIDO_2_1_PRE` announces the 2.1 preview commands (credential management 0x41) on top",
    "  of `FIDO_2_0`, not 2.1's reworked makeCredential/getAssertion, and these profiles",
    "  already answer the rest of those commands (an unknown pinProtocol, the `uv` option)",
    "  with 2.0's codes. Not checked against 2.1-pre hardware.",
    "- **Icons** (`Profile.icons`). `rp.icon` and `user.icon` are text members in CTAP 2.0",
    "  §5.1, and step 10 stores the user parameter, so 2.0 and 2.1-pre keys type-check both",
    "  and keep `user.icon`, returning it with `name`/`displayName` in getAssertion (and",
    "  credential management) once the user is verified (§5.2). An icon longer than",
    f"  {MAX_ICON_LEN} bytes is dropped, as WebAuthn L1 §5.4.1 allows, never cut. CTAP 2.1",
    "  keys ignore icon as an unknown member: WebAuthn L2 removed it and CTAP 2.1's entity",
    "  descriptions no longer list it.",
    "- **Preview credential management with a getPinToken token** (2.1 keys,",
    "  `Profile.preview_accepts_pin_token`). 2.1 keys keep 0x41 for platforms that know only",
    "  the preview; such a platform gets its token with getPinToken (clientPIN 0x05) because",
    "  the preview has no permissions (python-fido2 2.x sends 0x41 only to keys without",
    "  `credMgmt` and then asks for its token with getPinToken when `pinUvAuthToken` is",
    "  absent). CTAP 2.1 §6.5.5.7 gives that token mc and ga only while §6.8 asks for cm, so a",
    "  strict 0x41 would lock those platforms out. softkey accepts a getPinToken token on",
    "  0x41 (its timers and RP binding still apply) and keeps 0x0A strict: 0x0A needs cm, and",
    "  a token from subcommand 0x09 without cm is refused on both. What shipping 2.1",
    "  firmware does here is not documented by the spec; this is a choice, not a measurement.",
    "- **Built-in user verification** (`Profile.bio`, a fingerprint sensor; builtin_uv.py,",
    "  bio_enrollment.py). One match attempt per request (no internal retries), so a",
    "  platform's preferredPlatformUvAttempts are real attempts. A failed match spends a",
    "  uvRetry (CTAP2_ERR_UV_INVALID); the last one answers CTAP2_ERR_UV_BLOCKED, and a",
    "  blocked sensor answers it at once, so the platform asks for the PIN (python-fido2 and",
    "  Chromium fall back on UV_BLOCKED); a right PIN resets uvRetries, as Yubico documents",
    "  for the YubiKey Bio. No finger in time is CTAP2_ERR_USER_ACTION_TIMEOUT and costs no",
    "  retry. The finger is also the user's presence: a token from clientPIN 0x06 starts with",
    "  userPresent and the `uv` option sets UP without a second touch. `uv` in getInfo is",
    "  false until a finger is enrolled, and then the `uv` option or 0x06 on an empty sensor",
    "  is CTAP2_ERR_INVALID_OPTION / CTAP2_ERR_NOT_ALLOWED. Where §6.7 leaves bio-enrollment",
    "  error codes open, softkey answers as Chromium's virtual authenticator does",
    "  (CTAP2_ERR_INVALID_OPTION for an unknown templateId or nothing to enumerate). With",
    "  alwaysUv on, a request without UV uses the sensor (§6.1.2 step 5.4).",
    "- **Quirks** (`Profile.quirks`). A vendor preset lists each place it follows its",
    "  vendor's observed behaviour instead of the spec, with the evidence; the code keys off",
    "  the quirk, never the preset's name. The generic `ctap2.x` profiles have none.",
]


def _plain(value: Any) -> Any:
    """JSON-friendly form: ints for IntEnums, hex for bytes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(key: int, value: Any) -> str:
    if key == InfoKey.AAGUID:
        return f"`{uuid.UUID(bytes=value)}`"
    if key == InfoKey.FIRMWARE_VERSION:
        return f"`{value}` (0x{value:08x})"
    return "`" + json.dumps(_plain(value), separators=(", ", ": ")) + "`"


def _name(key: int) -> str:
    try:
        return MEMBER_NAMES.get(InfoKey(key), InfoKey(key).name)
    except ValueError:
        return f"0x{key:02x}"


def profile_info(
    profile: Profile, *, with_pin: bool = False, enrolled: bool = False
) -> dict[int, Any]:
    """getInfo of a fresh in-memory key of this profile (optionally with a PIN set, and a
    finger enrolled through authenticatorBioEnrollment)."""
    from softkey.transports.bio_enroll import enroll_finger

    with Authenticator(profile) as auth:
        if with_pin or enrolled:
            auth.set_pin("1234")
        if enrolled:
            enroll_finger(auth, "1234")
        return get_info(auth)


def _summary() -> list[str]:
    lines = [
        "| profile | CTAP | slots | credential management | PIN/UV protocols | "
        "authenticatorConfig | option rules | icon kept | quirks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for profile in PROFILES.values():
        slots = "unlimited" if profile.rk_capacity is None else str(profile.rk_capacity)
        protocols = ", ".join(str(p) for p in profile.pin_protocols) or "none"
        quirks = ", ".join(f"`{q.name}`" for q in profile.quirks) or "none"
        lines.append(
            f"| `{profile.name}` | {VERSION_NAMES[profile.ctap]} | {slots} | "
            f"{profile.credman} | {protocols} | {'yes' if profile.authnr_cfg else 'no'} | "
            f"{VERSION_NAMES[profile.option_rules] if profile.ctap2 else 'n/a'} | "
            f"{('yes' if profile.icons else 'no') if profile.ctap2 else 'n/a'} | "
            f"{quirks} |"
        )
    return lines


# What each behaviour setting of a profile means, as the per-profile lists say it.
OPTION_RULES = {
    CTAP2_0: "CTAP 2.0 rules: makeCredential `up` (true or false) and getAssertion `rk` are "
    "CTAP2_ERR_INVALID_OPTION, options known but not valid for the command (CTAP 2.0 §5.1, "
    "§5.2)",
    CTAP2_1: "CTAP 2.1 rules: makeCredential `up: false` is CTAP2_ERR_INVALID_OPTION and "
    "`up: true` the default (§6.1.2 step 5); getAssertion `rk` is "
    "CTAP2_ERR_UNSUPPORTED_OPTION (§6.2.2 step 5)",
}


def _behaviour(profile: Profile) -> list[str]:
    """The decisions docs/profiles.md's "Behaviour choices" explains, for one profile."""
    lines: list[str] = []
    if "FIDO_2_0" in profile.versions:  # options and icons arise only with CTAP2 commands
        lines.append(f"- options: {OPTION_RULES[profile.option_rules]}")
        if profile.icons:
            lines.append(
                "- `rp.icon` / `user.icon`: text strings, else CTAP2_ERR_CBOR_UNEXPECTED_TYPE; "
                f"`user.icon` (up to {MAX_ICON_LEN} bytes) is stored with a discoverable "
                "credential and returned in getAssertion's user after user verification "
                "(CTAP 2.0 §5.1, §5.2)"
            )
        else:
            lines.append(
                "- `rp.icon` / `user.icon`: ignored (CTAP 2.1 and WebAuthn L2 have no icon)"
            )
    if profile.credman == "full":
        verdict = (
            "accepted (a preview-only platform cannot ask for cm)"
            if profile.preview_accepts_pin_token
            else "refused (no cm permission)"
        )
        lines.append(
            f"- 0x41 with a getPinToken (clientPIN 0x05) token: {verdict}; 0x0A needs a "
            "token with the cm permission"
        )
    if profile.bio is not None:
        sensor = profile.bio
        commands = (
            "0x09 (bioEnroll) and the 0x40 prototype (userVerificationMgmtPreview)"
            if profile.is_2_1
            else "the 0x40 prototype (userVerificationMgmtPreview)"
        )
        lines.append(
            f"- fingerprint sensor (built-in UV): authenticatorBioEnrollment {commands}; "
            f"{sensor.max_templates} fingers, {sensor.samples} good samples each, names of up "
            f"to {sensor.max_template_friendly_name} bytes; uvRetries {sensor.max_uv_retries} "
            "(a failed match spends one, the last blocks the sensor until a right PIN); "
            "clientPIN 0x06 getPinUvAuthTokenUsingUvWithPermissions (be through UV, acfg only "
            "with the PIN) and 0x07 getUVRetries; enrolling needs a PIN first"
        )
    if profile.quirks:
        lines.append("- quirks (where this preset follows its vendor instead of the spec):")
        for quirk in profile.quirks:
            lines.append(f"  - `{quirk.name}`: {quirk.description}. Evidence: {quirk.evidence}.")
    else:
        lines.append("- quirks: none; follows the spec")
    return lines


def _u2f_section(profile: Profile) -> list[str]:
    """A U2F-only key has no getInfo (a CTAP2 command): what it is instead of the table."""
    capabilities = int(capabilities_for(profile))
    algorithms = ", ".join(str(int(a)) for a in profile.algorithms)
    return [
        f"## `{profile.name}`",
        "",
        f"{profile.description}.",
        "",
        f"- CTAP version: {VERSION_NAMES[profile.ctap]}, `U2F_V2` (U2F VERSION answers it);",
        "  no CTAP2, so no authenticatorGetInfo and no table below",
        f"- CTAPHID INIT capabilities: `0x{capabilities:02x}` (WINK): neither CBOR (0x04) nor",
        "  NMSG (0x08), as on keys made before CTAP2 (CTAP 2.1 §11.2.9.1.3). CTAPHID_CBOR is",
        "  answered ERR_INVALID_CMD; U2F REGISTER, AUTHENTICATE and VERSION travel in",
        "  CTAPHID_MSG. python-fido2's Fido2Client falls back to CTAP1 on it",
        "  (tests/transports/test_u2f_profile.py)",
        f"- credentials: COSE alg {algorithms} (P-256) only, non-resident; the key handle is a",
        "  credential ID (docs/credential-id.md) kept by the relying party. Attestation format",
        "  fido-u2f with the batch certificate; the platform builds authenticatorData with a",
        "  zero AAGUID",
        "- discoverable-credential slots: 0; credential management, PIN, user verification,",
        "  authenticatorConfig and authenticatorReset: none. `softkey reset` (the operator's",
        "  wipe) still makes a new master key, so every key handle stops working",
        *_behaviour(profile),
        "",
    ]


def _section(profile: Profile) -> list[str]:
    if not profile.ctap2:
        return _u2f_section(profile)
    info = profile_info(profile)
    with_pin = profile_info(profile, with_pin=True)
    slots = "no fixed limit" if profile.rk_capacity is None else f"{profile.rk_capacity}"
    lines = [
        f"## `{profile.name}`",
        "",
        f"{profile.description}.",
        "",
        f"- CTAP version: {VERSION_NAMES[profile.ctap]}; discoverable-credential slots: {slots}",
        f"- credential management: {CREDMAN[profile.credman]}",
        f"- reset: within {profile.reset_window:g} s of power-up, with user presence; "
        "wipes slots, PIN and counters and makes a new master key",
        *_behaviour(profile),
        "",
        "| member | key | getInfo of a new key |",
        "|---|---|---|",
    ]
    for key, value in sorted(info.items()):
        lines.append(f"| {_name(key)} | 0x{int(key):02x} | {_cell(key, value)} |")
    changed = {
        name: value
        for name, value in with_pin[InfoKey.OPTIONS].items()
        if info[InfoKey.OPTIONS].get(name) != value
    }
    lines += [
        "",
        f"After a PIN is set, options change to: `{json.dumps(changed)}`.",
        "",
    ]
    if profile.bio is not None:
        enrolled = profile_info(profile, enrolled=True)[InfoKey.OPTIONS]
        flipped = {
            name: value
            for name, value in enrolled.items()
            if with_pin[InfoKey.OPTIONS].get(name) != value
        }
        lines += [f"After a finger is enrolled, options change to: `{json.dumps(flipped)}`.", ""]
    return lines


def render() -> str:
    lines = [
        "# Profiles",
        "",
        "<!-- Generated by tools/dev/gen_profiles_doc.py from the code; do not edit by hand. -->",
        "",
        "A profile is data (`authenticator/profiles.py`): which CTAP version the key speaks,",
        "how many discoverable credentials it holds, and what it advertises. Pick one with",
        "`softkey run --profile NAME` or `Authenticator(NAME)`. The tables below are the",
        "device's actual `authenticatorGetInfo` answers (CTAP 2.1 §6.4) for a new key.",
        "",
        "What each version defines:",
        "",
        "- **CTAP 2.0** (`FIDO_2_0`): members 0x01-0x06; options rk, up, plat, clientPin.",
        "  PIN protocol 1 only. No credential management: once the slots are full, only",
        "  authenticatorReset frees them, and reset makes a new master key, so every",
        "  non-resident credential made before it stops working.",
        "- **CTAP 2.1 PRE** (`FIDO_2_1_PRE`): adds members 0x07-0x0A and the prototype",
        "  credential management command 0x41 (option credentialMgmtPreview). Legacy PIN",
        "  tokens (getPinToken) without permissions.",
        "- **CTAP 2.1** (`FIDO_2_1`): credential management 0x0A (credMgmt) with",
        "  updateUserInformation, PIN protocol 2, permission-scoped pinUvAuthTokens",
        "  (pinUvAuthToken), makeCredUvNotRqd, authenticatorConfig (authnrCfg, alwaysUv,",
        "  setMinPINLength), members forcePINChange, minPINLength, firmwareVersion,",
        "  maxRPIDsForSetMinPINLength and remainingDiscoverableCredentials. Like shipping",
        "  2.1 keys it still answers 0x41 and advertises credentialMgmtPreview.",
        "- **CTAP 2.2** (`FIDO_2_2`): everything of 2.1, plus the persistent read-only",
        "  credential-management token (permission pcmr, option perCredMgmtRO: survives",
        "  power cycles until the PIN changes or the key is reset, and only reads), the",
        "  extensions hmac-secret-mc and thirdPartyPayment, makeCredential's",
        "  attestationFormatsPreference, a PIN complexity policy setMinPINLength can switch",
        "  on, and members attestationFormats, longTouchForReset, encIdentifier (once a PIN",
        "  is set), transportsForReset, pinComplexityPolicy and maxPINLength. No",
        "  uvCountSinceLastPinEntry (no built-in UV) and no pinComplexityPolicyURL.",
        "",
        "- **U2F only** (`U2F_V2`, profile `u2f`): CTAP1 alone, no CTAP2 and so no getInfo;",
        "  its CTAPHID INIT capabilities lack CBOR, and clients fall back to U2F messages.",
        "",
        "`clientPin` is present on every CTAP2 profile: `false` until a PIN is set, then `true`.",
        "",
        "`algorithms` -48/-49/-50 are ML-DSA-44/65/87 (FIPS 204), offered by CTAP 2.1 and",
        'later profiles after the classic ones (credential-id.md, "ML-DSA"; a self-attesting',
        "key drops -50).",
        "",
        *_summary(),
        "",
        *DECISIONS,
        "",
    ]
    for profile in PROFILES.values():
        lines += _section(profile)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(
                f"{DOC} is stale: run `python -m softkey.tools.dev.gen_profiles_doc`",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
