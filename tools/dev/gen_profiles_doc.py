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
from softkey.authenticator.profiles import CTAP2_0, CTAP2_1, CTAP2_1_PRE, Profile

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
}

CREDMAN = {
    "none": "none: a slot is freed only by reset (which kills every credential)",
    "preview": "0x41 (credentialMgmtPreview): metadata, enumerate, delete",
    "full": "0x0A (credMgmt) + 0x41 alias: metadata, enumerate, delete, updateUserInformation",
}

VERSION_NAMES = {CTAP2_0: "CTAP 2.0", CTAP2_1_PRE: "CTAP 2.1 PRE", CTAP2_1: "CTAP 2.1"}


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


def profile_info(profile: Profile, *, with_pin: bool = False) -> dict[int, Any]:
    """getInfo of a fresh in-memory key of this profile (optionally with a PIN set)."""
    with Authenticator(profile) as auth:
        if with_pin:
            auth.set_pin("1234")
        return get_info(auth)


def _summary() -> list[str]:
    lines = [
        "| profile | CTAP | slots | credential management | PIN/UV protocols | "
        "authenticatorConfig |",
        "|---|---|---|---|---|---|",
    ]
    for profile in PROFILES.values():
        slots = "unlimited" if profile.rk_capacity is None else str(profile.rk_capacity)
        protocols = ", ".join(str(p) for p in profile.pin_protocols)
        lines.append(
            f"| `{profile.name}` | {VERSION_NAMES[profile.ctap]} | {slots} | "
            f"{profile.credman} | {protocols} | {'yes' if profile.authnr_cfg else 'no'} |"
        )
    return lines


def _section(profile: Profile) -> list[str]:
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
        "",
        "`clientPin` is present on every profile: `false` until a PIN is set, then `true`.",
        "",
        *_summary(),
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
