"""Issue 16 item 1: deviations from the spec that independent test suites found.

Each test names the spec section it checks; reverting the fix makes it fail.

- CTAP 2.0 option rules on 2.0 and 2.1-pre keys (CTAP 2.0 §5.1, §5.2) vs 2.1's (§6.1.2 and
  §6.2.2 step 5);
- rp.icon / user.icon as CTAP 2.0 §5.1 members, user.icon stored and returned (§5.2), the
  state schema 3 that stores it, and export/import of it;
- credential-management preview (0x41) on a 2.1 key with a getPinToken token;
- device quirks as data: yubikey-5's getPINRetries without a PIN.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fido2.ctap2.credman import CredentialManagement

from softkey.authenticator import PROFILES, Authenticator, Status, get_profile
from softkey.authenticator.credman import CredMgmtCmd
from softkey.authenticator.ctap2 import rp_id_hash
from softkey.authenticator.params import MAX_ICON_LEN
from softkey.authenticator.profiles import (
    CTAP2_0,
    CTAP2_1,
    CTAP2_1_PRE,
    KNOWN_QUIRKS,
    PIN_RETRIES_WITHOUT_PIN,
    Quirk,
)
from softkey.authenticator.store import SCHEMA_VERSION, Store
from softkey.tools import state_export
from softkey.tools.dev import gen_profiles_doc

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    ES256,
    PERM,
    PROTOCOLS,
    RP_ID,
    Key,
    cred_id,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)

# Profiles by the option rules and icon handling their CTAP version calls for.
RULES_2_0 = ["ctap2.0", "ctap2.1-pre", "yubikey-5", "solokey", "nitrokey-fido2"]
RULES_2_1 = ["ctap2.1", "nitrokey-3", "unlimited-rk"]
ICON = "https://example.com/alice.png"


def _ctap2_profiles(ctap: str) -> list[str]:
    return [name for name, p in PROFILES.items() if p.ctap == ctap]


def test_each_version_gets_its_option_rules_and_icons() -> None:
    # 2.1-pre keys follow CTAP 2.0 (FIDO_2_1_PRE = FIDO_2_0 plus the preview commands).
    for name in _ctap2_profiles(CTAP2_0) + _ctap2_profiles(CTAP2_1_PRE):
        assert (PROFILES[name].option_rules, PROFILES[name].icons) == (CTAP2_0, True), name
    for name in _ctap2_profiles(CTAP2_1):
        assert (PROFILES[name].option_rules, PROFILES[name].icons) == (CTAP2_1, False), name
    assert set(RULES_2_0) | set(RULES_2_1) <= set(PROFILES)


# -- 1. option rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", RULES_2_0)
@pytest.mark.parametrize("up", [True, False])
def test_2_0_make_credential_up_is_an_invalid_option(profile: str, up: bool) -> None:
    # CTAP 2.0 §5.1: makeCredential's options are rk and uv; "up" is known but not valid
    # for this command -> CTAP2_ERR_INVALID_OPTION, whatever its value.
    key = new_key(profile)
    assert status_of(make, key, options={"up": up}) == ERR.INVALID_OPTION
    assert key.auth.last_outcome is not None and "up" in key.auth.last_outcome.reason
    make(key)  # without the option it works


@pytest.mark.parametrize("profile", RULES_2_0)
def test_2_0_options_are_processed_before_the_pin_checks(profile: str) -> None:
    # CTAP 2.0 §5.1: options (step 3) come before "pinAuth not present and clientPin set ->
    # PIN_REQUIRED" (step 6).
    key = with_pin(profile)
    assert status_of(make, key, options={"up": True}) == ERR.INVALID_OPTION
    assert status_of(make, key) == ERR.PUAT_REQUIRED  # 0x36, PIN_REQUIRED in CTAP 2.0


@pytest.mark.parametrize("profile", RULES_2_1)
def test_2_1_make_credential_up_true_is_the_default(profile: str) -> None:
    # CTAP 2.1 §6.1.2 step 5: "up" false is INVALID_OPTION; true is what makeCredential does.
    key = new_key(profile)
    made = make(key, options={"up": True})
    assert made.auth_data.flags & 0x01  # UP
    assert status_of(make, key, options={"up": False}) == ERR.INVALID_OPTION


@pytest.mark.parametrize("profile", RULES_2_0)
@pytest.mark.parametrize("rk", [True, False])
def test_2_0_get_assertion_rk_is_an_invalid_option(profile: str, rk: bool) -> None:
    # CTAP 2.0 §5.2: getAssertion's options are up and uv; "rk" is known but not valid
    # for this command -> CTAP2_ERR_INVALID_OPTION.
    key = new_key(profile)
    made = cred_id(make(key))
    status = status_of(
        key.ctap.get_assertion,
        RP_ID,
        os.urandom(32),
        [{"type": "public-key", "id": made}],
        options={"rk": rk},
    )
    assert status == ERR.INVALID_OPTION


@pytest.mark.parametrize("profile", RULES_2_1)
def test_2_1_get_assertion_rk_is_an_unsupported_option(profile: str) -> None:
    # CTAP 2.1 §6.2.2 step 5: "rk" present -> CTAP2_ERR_UNSUPPORTED_OPTION.
    key = new_key(profile)
    made = cred_id(make(key))
    allow = [{"type": "public-key", "id": made}]
    status = status_of(key.ctap.get_assertion, RP_ID, os.urandom(32), allow, options={"rk": True})
    assert status == ERR.UNSUPPORTED_OPTION


# -- 2. icons -----------------------------------------------------------------------------------


def _make_with_icons(key: Key, token: bytes | None, rp: dict, user: dict, version: int = 1):
    cdh = os.urandom(32)
    kw = {}
    if token is not None:
        kw = {
            "pin_uv_param": PROTOCOLS[version]().authenticate(token, cdh),
            "pin_uv_protocol": version,
        }
    return key.ctap.make_credential(cdh, rp, user, ES256, options={"rk": True}, **kw)


def _assert_user(key: Key, token: bytes | None, version: int = 1) -> dict:
    cdh = os.urandom(32)
    kw = {}
    if token is not None:
        kw = {
            "pin_uv_param": PROTOCOLS[version]().authenticate(token, cdh),
            "pin_uv_protocol": version,
        }
    return key.ctap.get_assertion(RP_ID, cdh, **kw).user


@pytest.mark.parametrize("profile", RULES_2_0)
@pytest.mark.parametrize("where", ["rp", "user"])
@pytest.mark.parametrize("icon", [7, b"https://x", ["https://x"], True])
def test_2_0_icons_must_be_text(profile: str, where: str, icon: object) -> None:
    # CTAP 2.0 §5.1: rp and user "(optionally) a URL of type text string" for the icon;
    # a member of the wrong CBOR type is CTAP2_ERR_CBOR_UNEXPECTED_TYPE.
    key = new_key(profile)
    rp = {"id": RP_ID, "name": "Example"}
    user = {"id": b"alice", "name": "alice"}
    (rp if where == "rp" else user)["icon"] = icon
    assert status_of(_make_with_icons, key, None, rp, user) == ERR.CBOR_UNEXPECTED_TYPE
    assert key.auth.credentials() == []


@pytest.mark.parametrize("profile", RULES_2_1)
def test_2_1_ignores_icons(profile: str) -> None:
    # CTAP 2.1 (WebAuthn L2) has no icon member: unknown members are ignored, whatever
    # their type, and nothing is stored.
    key = with_pin(profile)
    token = key.client_pin().get_pin_token("1234")  # getPinToken: mc and ga
    rp = {"id": RP_ID, "icon": 7}
    user = {"id": b"alice", "name": "alice", "icon": ICON}
    _make_with_icons(key, token, rp, user, version=2)
    assert key.auth.credentials()[0].user_icon is None
    token = key.client_pin().get_pin_token("1234")
    assert _assert_user(key, token, version=2) == {"id": b"alice", "name": "alice"}


@pytest.mark.parametrize("profile", RULES_2_0)
def test_2_0_stores_user_icon_and_returns_it_after_uv(profile: str) -> None:
    # CTAP 2.0 §5.1 step 10 stores the user parameter; §5.2's user member carries icon,
    # like name and displayName only when the user was verified.
    key = with_pin(profile)
    token = key.client_pin().get_pin_token("1234")
    rp = {"id": RP_ID, "name": "Example", "icon": "https://example.com/rp.png"}
    user = {"id": b"alice", "name": "alice", "displayName": "Alice", "icon": ICON}
    _make_with_icons(key, token, rp, user)
    assert key.auth.credentials()[0].user_icon == ICON
    assert _assert_user(key, token) == user
    assert _assert_user(key, None) == {"id": b"alice"}  # no UV: no identifiable data


def test_2_0_drops_an_overlong_icon_without_cutting_it() -> None:
    # WebAuthn L1 §5.4.1 lets an authenticator ignore an icon over 128 bytes.
    key = with_pin("ctap2.0")
    token = key.client_pin().get_pin_token("1234")
    long_icon = "https://example.com/" + "a" * (MAX_ICON_LEN - 19)
    assert len(long_icon.encode()) == MAX_ICON_LEN + 1
    _make_with_icons(key, token, {"id": RP_ID}, {"id": b"alice", "icon": long_icon})
    assert key.auth.credentials()[0].user_icon is None
    fits = long_icon[:-1]
    _make_with_icons(key, token, {"id": RP_ID}, {"id": b"bob", "icon": fits})
    assert {c.user_icon for c in key.auth.credentials()} == {None, fits}


def test_preview_credential_management_shows_the_icon() -> None:
    key = with_pin("ctap2.1-pre")
    cp = key.client_pin()
    token = cp.get_pin_token("1234")
    user = {"id": b"alice", "name": "alice", "icon": ICON}
    _make_with_icons(key, token, {"id": RP_ID}, user)
    cm = CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234"))
    entry = cm.enumerate_creds(rp_id_hash(RP_ID))[0]
    assert entry[CredentialManagement.RESULT.USER] == user


# -- 2b. state schema 3: the user_icon column ---------------------------------------------------


def _downgrade_to_schema_2(path: Path) -> None:
    """What a schema-2 softkey left: no user_icon column, schema_version 2."""
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE credentials DROP COLUMN user_icon")
    db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (b"2",))
    db.commit()
    db.close()


def _columns(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute("PRAGMA table_info(credentials)")}
    finally:
        db.close()


def _fill(path: Path, user: bytes, icon: str | None) -> None:
    with Authenticator("ctap2.0", path) as auth:
        key = Key(auth, clock=None)  # type: ignore[arg-type]
        entity: dict = {"id": user, "name": user.decode()}
        if icon is not None:
            entity["icon"] = icon
        _make_with_icons(key, None, {"id": RP_ID}, entity)


def test_schema_2_state_migrates_to_3(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 3  # 3 added credentials.user_icon
    path = tmp_path / "key.sqlite3"
    _fill(path, b"old", None)
    _downgrade_to_schema_2(path)
    assert "user_icon" not in _columns(path)

    with Authenticator(state=path) as auth:
        assert auth.store.get_int("schema_version") == SCHEMA_VERSION
        (old,) = auth.credentials()
        assert (old.user_id, old.user_icon) == (b"old", None)
    assert "user_icon" in _columns(path)
    _fill(path, b"new", ICON)
    with _open(path) as store:
        icons = {c.user_id: c.user_icon for c in store.list_resident()}
    assert icons == {b"old": None, b"new": ICON}


class _open:  # a Store as a context manager, closed on exit
    def __init__(self, path: Path) -> None:
        self.store = Store(path)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def test_export_import_carries_the_icon_and_schema_2_exports(tmp_path: Path) -> None:
    source = tmp_path / "src.sqlite3"
    _fill(source, b"alice", ICON)
    export = tmp_path / "src.json"
    state_export.export_state(source, export)
    copy = tmp_path / "copy.sqlite3"
    state_export.import_state(export, copy)
    with _open(copy) as store:
        assert [c.user_icon for c in store.list_resident()] == [ICON]

    # An export written by schema 2 (no user_icon column) still imports.
    old = tmp_path / "old.sqlite3"
    _fill(old, b"bob", None)
    _downgrade_to_schema_2(old)
    old_export = tmp_path / "old.json"
    state_export.export_state(old, old_export)
    assert "user_icon" not in old_export.read_text()
    imported = tmp_path / "imported.sqlite3"
    state_export.import_state(old_export, imported)
    with _open(imported) as store:
        assert store.get_int("schema_version") == SCHEMA_VERSION
        assert [(c.user_id, c.user_icon) for c in store.list_resident()] == [(b"bob", None)]


# -- 3. preview credential management with a getPinToken token ---------------------------------


def _metadata(key: Key, command: int, token: bytes, version: int) -> bytes:
    protocol = PROTOCOLS[version]()
    param = protocol.authenticate(token, bytes([CredMgmtCmd.GET_CREDS_METADATA]))
    return raw(key.auth, command, {1: CredMgmtCmd.GET_CREDS_METADATA, 3: version, 4: param})


@pytest.mark.parametrize("version", [2, 1])
def test_2_1_preview_command_takes_a_get_pin_token_token(version: int) -> None:
    # A preview-only platform gets its token with getPinToken (clientPIN 0x05): CTAP 2.1
    # §6.5.5.7 gives it mc and ga, §6.8 wants cm. 0x41 accepts it (docs/profiles.md
    # "Behaviour choices"); 0x0A stays strict (§6.8).
    key = with_pin("ctap2.1")
    make(key, key.client_pin(2).get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID), rk=True)
    cp = key.client_pin(version)
    token = cp.get_pin_token("1234")  # no permissions: python-fido2 sends 0x05
    response = _metadata(key, 0x41, token, version)
    assert response[0] == Status.SUCCESS
    assert _metadata(key, 0x0A, token, version) == bytes([Status.PIN_AUTH_INVALID])
    assert "CM permission" in key.auth.last_outcome.reason  # type: ignore[union-attr]
    # The preview's other subcommands work with it too.
    cm_request = {1: CredMgmtCmd.ENUMERATE_RPS_BEGIN, 3: version}
    cm_request[4] = PROTOCOLS[version]().authenticate(token, bytes([cm_request[1]]))
    assert raw(key.auth, 0x41, cm_request)[0] == Status.SUCCESS


def test_2_1_preview_command_refuses_a_permission_token_without_cm() -> None:
    # A token from subcommand 0x09 comes from a platform that knows permissions (and 0x0A):
    # without cm it is refused on both commands (§6.8).
    key = with_pin("ctap2.1")
    token = key.client_pin(2).get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    assert _metadata(key, 0x41, token, 2) == bytes([Status.PIN_AUTH_INVALID])
    assert _metadata(key, 0x0A, token, 2) == bytes([Status.PIN_AUTH_INVALID])
    token = key.client_pin(2).get_pin_token("1234", PERM.CREDENTIAL_MGMT)
    assert _metadata(key, 0x41, token, 2)[0] == Status.SUCCESS
    assert _metadata(key, 0x0A, token, 2)[0] == Status.SUCCESS


def test_preview_acceptance_is_profile_data() -> None:
    strict = replace(get_profile("ctap2.1"), preview_accepts_pin_token=False)
    key = Key(Authenticator(strict), clock=None)  # type: ignore[arg-type]
    key.client_pin().set_pin("1234")
    token = key.client_pin(2).get_pin_token("1234")
    assert _metadata(key, 0x41, token, 2) == bytes([Status.PIN_AUTH_INVALID])


def test_2_1_pre_preview_takes_its_legacy_token() -> None:
    key = with_pin("ctap2.1-pre")
    token = key.client_pin().get_pin_token("1234")
    assert _metadata(key, 0x41, token, 1)[0] == Status.SUCCESS


# -- 4. quirks ------------------------------------------------------------------------------------


def test_yubikey_5_get_pin_retries_without_a_pin_is_pin_not_set() -> None:
    # A vendor quirk, not the spec: CTAP 2.1 §6.5.5.2 / CTAP 2.0 §5.5.3 return the retries.
    assert get_profile("yubikey-5").has_quirk(PIN_RETRIES_WITHOUT_PIN)
    key = new_key("yubikey-5")
    assert status_of(key.client_pin().get_pin_retries) == ERR.PIN_NOT_SET
    key.client_pin().set_pin("1234")
    assert key.client_pin().get_pin_retries() == (8, None)


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1", "solokey"])
def test_spec_profiles_answer_get_pin_retries_without_a_pin(profile: str) -> None:
    # CTAP 2.0 §5.5.3 / CTAP 2.1 §6.5.5.2: getPINRetries returns the retry counter.
    assert not get_profile(profile).quirks
    assert new_key(profile).client_pin().get_pin_retries()[0] == 8


def test_quirks_are_keyed_by_name_not_by_preset() -> None:
    quirk = get_profile("yubikey-5").quirks[0]
    with_quirk = replace(get_profile("ctap2.1"), quirks=(quirk,))
    key = Key(Authenticator(with_quirk), clock=None)  # type: ignore[arg-type]
    assert status_of(key.client_pin().get_pin_retries) == ERR.PIN_NOT_SET
    without = replace(get_profile("yubikey-5"), quirks=())
    key = Key(Authenticator(without), clock=None)  # type: ignore[arg-type]
    assert key.client_pin().get_pin_retries()[0] == 8


def test_quirks_are_known_and_cite_evidence() -> None:
    for profile in PROFILES.values():
        for quirk in profile.quirks:
            assert quirk.name in KNOWN_QUIRKS
            assert quirk.description and quirk.evidence
    with pytest.raises(ValueError, match="unknown quirks"):
        replace(get_profile("ctap2.1"), quirks=(Quirk("no_such_quirk", "d", "e"),))


def test_docs_list_quirks_and_choices() -> None:
    # docs/profiles.md is generated (test_profiles.py checks it is current).
    text = gen_profiles_doc.DOC.read_text()
    yubikey = text.split("## `yubikey-5`", 1)[1].split("\n## ", 1)[0]
    quirk = get_profile("yubikey-5").quirks[0]
    assert f"`{quirk.name}`: {quirk.description}" in yubikey
    assert quirk.evidence in yubikey
    solokey = text.split("## `solokey`", 1)[1].split("\n## ", 1)[0]
    assert "quirks: none" in solokey
    assert "## Behaviour choices" in text
    for needle in ("Profile.option_rules", "Profile.icons", "preview_accepts_pin_token"):
        assert needle in text
