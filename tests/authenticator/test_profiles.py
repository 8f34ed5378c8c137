"""Profiles: getInfo is exactly what each CTAP version defines; presets; docs/profiles.md.

python-fido2's feature probes (ClientPin, CredentialManagement, Config .is_supported) are
the judge of what a platform will conclude from each profile's getInfo.
"""

from __future__ import annotations

import pytest
from fido2.ctap2 import Ctap2
from fido2.ctap2.config import Config
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin

from softkey.authenticator import PROFILES, Authenticator, get_profile
from softkey.authenticator.ctap import InfoKey
from softkey.authenticator.ctap2 import get_info
from softkey.authenticator.profiles import CTAP2_0, CTAP2_1, CTAP2_1_PRE, CTAP2_2, U2F
from softkey.tools.dev import gen_profiles_doc
from softkey.transports.inprocess import VirtualCtapDevice

K = InfoKey
# Option IDs and getInfo members each version defines (CTAP 2.0 §5.4; 2.1 §6.4). An option
# or member of a later version on an earlier profile is a bug.
OPTIONS_2_0 = {"plat", "rk", "clientPin", "up", "uv"}
OPTIONS_2_1_PRE = OPTIONS_2_0 | {
    "credentialMgmtPreview",
    "bioEnroll",
    "userVerificationMgmtPreview",
    "uvToken",
}
OPTIONS_2_1 = OPTIONS_2_1_PRE | {
    "pinUvAuthToken",
    "noMcGaPermissionsWithClientPin",
    "largeBlobs",
    "ep",
    "credMgmt",
    "authnrCfg",
    "uvAcfg",
    "uvBioEnroll",
    "setMinPINLength",
    "makeCredUvNotRqd",
    "alwaysUv",
}
OPTIONS_2_2 = OPTIONS_2_1 | {"perCredMgmtRO"}
MEMBERS = {
    CTAP2_0: set(range(0x01, 0x07)),
    CTAP2_1_PRE: set(range(0x01, 0x0B)),
    CTAP2_1: set(range(0x01, 0x16)),
    CTAP2_2: set(range(0x01, 0x1E)),  # up to maxPINLength (0x1D)
}
ALLOWED_OPTIONS = {
    CTAP2_0: OPTIONS_2_0,
    CTAP2_1_PRE: OPTIONS_2_1_PRE,
    CTAP2_1: OPTIONS_2_1,
    CTAP2_2: OPTIONS_2_2,
}
# Profiles with a getInfo: all but the U2F-only key (tests/transports/test_u2f_profile.py).
CTAP2_PROFILES = [name for name, profile in PROFILES.items() if profile.ctap2]
VERSIONS = {
    CTAP2_0: ["U2F_V2", "FIDO_2_0"],
    CTAP2_1_PRE: ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE"],
    CTAP2_1: ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"],
    CTAP2_2: ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1", "FIDO_2_2"],
}


@pytest.mark.parametrize("name", CTAP2_PROFILES)
def test_get_info_is_what_the_version_defines(name: str) -> None:
    profile = get_profile(name)
    info = get_info(Authenticator(profile))
    options = info[K.OPTIONS]
    assert info[K.VERSIONS] == VERSIONS[profile.ctap]
    assert set(info) <= MEMBERS[profile.ctap]
    assert set(options) <= ALLOWED_OPTIONS[profile.ctap]
    assert options["clientPin"] is False
    assert options["rk"] is True and options["up"] is True and options["plat"] is False
    if profile.bio is None:
        assert "uv" not in options  # no built-in user verification (see test_bio.py)
    else:
        assert options["uv"] is False  # a fingerprint sensor, no finger enrolled yet
    assert info[K.PIN_UV_AUTH_PROTOCOLS] == list(profile.pin_protocols)

    if profile.ctap == CTAP2_0:
        assert set(options) == {"rk", "up", "plat", "clientPin"}
        assert profile.pin_protocols == (1,)
    if profile.ctap == CTAP2_1_PRE:
        assert options["credentialMgmtPreview"] is True
        assert set(options) == {"rk", "up", "plat", "clientPin", "credentialMgmtPreview"}
        assert profile.pin_protocols == (1,)
    if profile.ctap != CTAP2_0:
        assert info[K.TRANSPORTS] == ["usb"]
        assert info[K.MAX_CREDENTIAL_COUNT_IN_LIST] == profile.max_cred_count_in_list
        assert 64 <= info[K.MAX_CREDENTIAL_ID_LENGTH] <= 255
        assert [a["alg"] for a in info[K.ALGORITHMS]] == list(profile.algorithms)
    if profile.ctap in (CTAP2_1, CTAP2_2):
        for option in ("credMgmt", "credentialMgmtPreview", "pinUvAuthToken", "authnrCfg",
                       "setMinPINLength", "makeCredUvNotRqd"):  # fmt: skip
            assert options[option] is True, option
        assert options["alwaysUv"] is False
        assert profile.pin_protocols == (2, 1)
        assert info[K.FORCE_PIN_CHANGE] is False
        assert info[K.MIN_PIN_LENGTH] == 4
        assert info[K.FIRMWARE_VERSION] == profile.firmware_version
        assert info[K.MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH] >= 1
        if profile.rk_capacity is not None:
            assert info[K.REMAINING_DISCOVERABLE_CREDENTIALS] == profile.rk_capacity
        else:
            assert K.REMAINING_DISCOVERABLE_CREDENTIALS not in info


@pytest.mark.parametrize(
    ("name", "ctap", "capacity"),
    [
        ("yubikey-5", CTAP2_1_PRE, 25),
        ("yubikey-bio", CTAP2_1, 25),
        ("solokey", CTAP2_1_PRE, 50),
        ("nitrokey-3", CTAP2_1, 10),
        ("nitrokey-fido2", CTAP2_0, 8),
        ("unlimited-rk", CTAP2_1, None),
        ("ctap2.0", CTAP2_0, 25),
        ("ctap2.1-pre", CTAP2_1_PRE, 25),
        ("ctap2.1", CTAP2_1, 25),
        ("ctap2.2", CTAP2_2, 25),
        ("u2f", U2F, 0),
    ],
)
def test_presets(name: str, ctap: str, capacity: int | None) -> None:
    profile = get_profile(name)
    assert (profile.ctap, profile.rk_capacity) == (ctap, capacity)
    # Each preset has its own AAGUID, so an RP can tell the emulated models apart.
    assert sum(p.aaguid == profile.aaguid for p in PROFILES.values()) == 1


@pytest.mark.parametrize("name", CTAP2_PROFILES)
def test_what_python_fido2_concludes(name: str) -> None:
    profile = get_profile(name)
    auth = Authenticator(profile)
    info = Ctap2(VirtualCtapDevice(auth)).info
    assert ClientPin.is_supported(info)
    at_least_2_1 = profile.ctap in (CTAP2_1, CTAP2_2)
    assert ClientPin.is_token_supported(info) is at_least_2_1
    assert CredentialManagement.is_supported(info) is (profile.ctap != CTAP2_0)
    assert CredentialManagement.is_update_supported(info) is at_least_2_1
    assert CredentialManagement.is_readonly_supported(info) is (profile.ctap == CTAP2_2)
    assert Config.is_supported(info) is at_least_2_1
    auth.set_pin("1234")
    info = Ctap2(VirtualCtapDevice(auth)).info
    assert info.options["clientPin"] is True


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(ValueError, match="nitrokey-fido2"):
        get_profile("nitrokey-4")


def test_docs_match_the_code() -> None:
    assert gen_profiles_doc.main(["--check"]) == 0, (
        "docs/profiles.md is stale: run `python -m softkey.tools.dev.gen_profiles_doc`"
    )


def test_docs_show_each_profile_get_info() -> None:
    text = gen_profiles_doc.DOC.read_text()
    for profile in PROFILES.values():
        assert f"## `{profile.name}`" in text
        if not profile.ctap2:
            continue  # no getInfo to show
        info = gen_profiles_doc.profile_info(profile)
        assert gen_profiles_doc._cell(K.OPTIONS, info[K.OPTIONS]) in text
