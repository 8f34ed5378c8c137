"""`softkey` CLI verbs through click's CliRunner, judged by python-fido2 on the same state.

Every test gets its own $XDG_DATA_HOME, so `--key NAME` resolves inside tmp_path.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator
from softkey.tools import paths
from softkey.tools.cli import cli
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in (
        "SOFTKEY_KEY",
        "SOFTKEY_STATE",
        "SOFTKEY_PIN",
        "SOFTKEY_NEW_PIN",
        "SOFTKEY_PASSPHRASE",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data" / "softkey"


Run = Callable[..., Result]


@pytest.fixture
def run(data_home: Path) -> Run:
    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, code: int = 0
    ) -> Result:
        result = runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    return invoke


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def _state(data_home: Path, name: str = "default") -> Path:
    return data_home / f"{name}.sqlite3"


def _make_non_resident(state: Path, rp: str = "example.com") -> bytes:
    with Authenticator(state=state) as auth:
        att = Ctap2(VirtualCtapDevice(auth)).make_credential(
            os.urandom(32), {"id": rp, "name": rp}, {"id": b"nr-user", "name": "nr"}, ES256
        )
    return att.auth_data.credential_data.credential_id


def _assert_with(state: Path, cred_id: bytes, rp: str = "example.com") -> Any:
    """python-fido2 getAssertion with allowList=[cred_id] on the key at ``state``."""
    with Authenticator(state=state) as auth:
        return Ctap2(VirtualCtapDevice(auth)).get_assertion(
            rp, os.urandom(32), [{"type": "public-key", "id": cred_id}]
        )


# -- fill, list, reset: the acceptance scenario ------------------------------------------------


@pytest.mark.parametrize(("profile", "capacity"), [("yubikey-5", 25), ("nitrokey-fido2", 8)])
def test_fill_until_full_list_then_reset(
    run: Run, data_home: Path, profile: str, capacity: int
) -> None:
    run("fill", "--profile", profile, "--count", "1", "--rp", "seed.test")
    old_id = _make_non_resident(_state(data_home))
    assert _assert_with(_state(data_home), old_id).credential["id"] == old_id

    result = run("fill", "--until-full", "--json")
    assert _json(result)["created"] == capacity - 1 and _json(result)["full"] is True

    listing = _json(run("credentials", "list", "--json"))
    assert len(listing["credentials"]) == capacity
    assert (listing["used"], listing["capacity"], listing["free"]) == (capacity, capacity, 0)
    assert len({c["credential_id"] for c in listing["credentials"]}) == capacity

    # The key itself says it is full (python-fido2, not our bookkeeping).
    with Authenticator(state=_state(data_home)) as auth, pytest.raises(CtapError) as excinfo:
        Ctap2(VirtualCtapDevice(auth)).make_credential(
            os.urandom(32), {"id": "x.test"}, {"id": b"new"}, ES256, options={"rk": True}
        )
    assert excinfo.value.code == CtapError.ERR.KEY_STORE_FULL

    reset = run("reset", "--yes")
    assert f"{capacity} resident credentials deleted" in reset.stdout
    assert "skips the device's rule" in reset.stderr
    assert _json(run("credentials", "list", "--json"))["credentials"] == []
    with pytest.raises(CtapError) as excinfo:
        _assert_with(_state(data_home), old_id)
    assert excinfo.value.code == CtapError.ERR.NO_CREDENTIALS
    # A resident credential's ID is dead too, even though it was listed before.
    first = listing["credentials"][-1]
    with pytest.raises(CtapError):
        _assert_with(_state(data_home), bytes.fromhex(first["credential_id"]), first["rp_id"])


def test_fill_count_25_on_yubikey_is_exactly_full_and_more_is_refused(
    run: Run, data_home: Path
) -> None:
    result = run("fill", "--profile", "yubikey-5", "--count", "25")
    assert "created 25 resident credentials" in result.stdout
    assert _json(run("info", "--json"))["resident_credentials"] == {
        "used": 25,
        "capacity": 25,
        "free": 0,
    }
    over = run("fill", "--count", "1", code=1)
    assert over.stderr.strip() == (
        "Error: slots full (25/25); delete some with `softkey credentials delete` or reset"
    )
    assert "created 0" in over.stdout


def test_fill_stops_at_capacity_and_reports_partial_progress(run: Run) -> None:
    result = run("fill", "--profile", "nitrokey-3", "--count", "14", "--json", code=1)
    body = _json(result)
    assert (body["created"], body["used"], body["full"]) == (10, 10, True)
    assert body["stopped"]["status"] == "CTAP2_ERR_KEY_STORE_FULL"
    assert "slots full (10/10)" in result.stderr


def test_fill_names_continue_and_credentials_assert(run: Run, data_home: Path) -> None:
    run("fill", "--profile", "solokey", "--count", "2", "--user-prefix", "bob")
    run("fill", "--count", "2", "--user-prefix", "bob")
    creds = _json(run("credentials", "list", "--json"))["credentials"]
    assert [c["user_name"] for c in creds] == ["bob-0004", "bob-0003", "bob-0002", "bob-0001"]
    # The filled credentials are real: usernameless login finds all four.
    with Authenticator(state=_state(data_home)) as auth:
        ctap = Ctap2(VirtualCtapDevice(auth))
        assertions = ctap.get_assertions("fill.softkey.test", os.urandom(32))
    assert {a.user["id"] for a in assertions} == {c["user_name"].encode() for c in creds}


def test_fill_a_thousand_into_a_file(run: Run) -> None:
    result = run("fill", "--profile", "unlimited-rk", "--count", "1000", "--json")
    assert _json(result)["created"] == 1000
    assert _json(run("info", "--json"))["resident_credentials"]["used"] == 1000


def test_fill_usage_errors(run: Run) -> None:
    assert "--count N or --until-full" in run("fill", code=2).stderr
    run("fill", "--count", "1", "--until-full", code=2)
    run("fill", "--count", "0", code=2)
    result = run("fill", "--profile", "unlimited-rk", "--until-full", code=2)
    assert "no slot limit" in result.stderr
    bad = run("fill", "--profile", "yubikey-9", "--count", "1", code=2).stderr
    assert "'yubikey-9' is not one of" in bad and "yubikey-5" in bad


def test_fill_refuses_a_different_profile_for_an_existing_key(run: Run) -> None:
    run("fill", "--profile", "yubikey-5", "--count", "1")
    result = run("fill", "--profile", "solokey", "--count", "1", code=1)
    assert "'yubikey-5' key, not 'solokey'" in result.stderr


# -- credentials delete -------------------------------------------------------------------------


def test_delete_by_unique_prefix(run: Run, data_home: Path) -> None:
    run("fill", "--profile", "ctap2.1", "--count", "3")
    creds = _json(run("credentials", "list", "--json"))["credentials"]
    target = creds[1]
    ids = [c["credential_id"] for c in creds]
    prefix = next(
        target["credential_id"][:n]
        for n in range(2, 80)
        if sum(i.startswith(target["credential_id"][:n]) for i in ids) == 1
    )
    result = run("credentials", "delete", prefix, "--yes")
    assert "1 deleted; 2 slots used of 25" in result.stdout
    assert result.stderr == ""  # ctap2.1 has credential management: no note
    left = [c["credential_id"] for c in _json(run("credentials", "list", "--json"))["credentials"]]
    assert left == [ids[0], ids[2]]
    with pytest.raises(CtapError) as excinfo:
        _assert_with(_state(data_home), bytes.fromhex(target["credential_id"]), target["rp_id"])
    assert excinfo.value.code == CtapError.ERR.NO_CREDENTIALS


def test_delete_refusals(run: Run) -> None:
    run("fill", "--count", "3")
    # Every credential ID starts with the format version byte: "01" is ambiguous.
    assert "give more characters" in run("credentials", "delete", "01", "--yes", code=1).stderr
    missing = run("credentials", "delete", "ff", "--yes", code=1)
    assert "non-resident credentials are not stored" in missing.stderr
    assert "hex or base64url" in run("credentials", "delete", "x.y", "--yes", code=2).stderr
    # A base64url prefix works like a hex one: every ID starts with byte 01, "A" in base64url.
    assert "give more characters" in run("credentials", "delete", "A", "--yes", code=1).stderr
    run("credentials", "delete", "--yes", code=2)
    run("credentials", "delete", "--all", "--rp", "a.test", "--yes", code=2)
    assert (
        "no resident credential for a.test"
        in run("credentials", "delete", "--rp", "a.test", "--yes", code=1).stderr
    )
    assert _json(run("credentials", "list", "--json"))["used"] == 3


def test_delete_confirms_unless_yes(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    run("fill", "--count", "2")
    no_tty = run("credentials", "delete", "--all", input="y\n", code=1)
    assert "no terminal" in no_tty.stderr and "add --yes" in no_tty.stderr
    # CliRunner's input stands in for a person at a terminal from here on.
    monkeypatch.setattr("softkey.tools.cli.interactive", lambda: True)
    refused = run("credentials", "delete", "--all", input="n\n", code=1)
    assert "not confirmed" in refused.stderr
    assert _json(run("credentials", "list", "--json"))["used"] == 2
    run("credentials", "delete", "--all", input="y\n")
    assert _json(run("credentials", "list", "--json"))["used"] == 0


def test_delete_by_rp_and_the_ctap20_note(run: Run) -> None:
    run("fill", "--profile", "ctap2.0", "--count", "2", "--rp", "a.test")
    run("fill", "--count", "3", "--rp", "b.test")
    result = run("credentials", "delete", "--rp", "a.test", "--yes")
    assert "2 deleted; 3 slots used" in result.stdout
    assert "has no credential management: only a reset frees its slots" in result.stderr
    remaining = _json(run("credentials", "list", "--json"))["credentials"]
    assert {c["rp_id"] for c in remaining} == {"b.test"}
    assert len(_json(run("credentials", "list", "--rp", "b.test", "--json"))["credentials"]) == 3


# -- reset ----------------------------------------------------------------------------------------


def test_reset_without_yes_needs_an_answer(
    run: Run, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("fill", "--count", "2")
    result = run("reset", input="y\n", code=1)  # piped, not typed: not an answer
    assert "add --yes" in result.stderr
    assert _json(run("credentials", "list", "--json"))["used"] == 2
    monkeypatch.setattr("softkey.tools.cli.interactive", lambda: True)
    run("reset", input="y\n")
    assert _json(run("credentials", "list", "--json"))["used"] == 0


def test_reset_of_a_missing_key_is_refused(run: Run) -> None:
    result = run("reset", "--yes", code=1)
    assert "there is no key 'default'" in result.stderr
    assert "softkey init" in result.stderr


# -- info, keys, profiles -------------------------------------------------------------------------


def test_info_json_schema_and_human_output(run: Run, data_home: Path) -> None:
    run("fill", "--profile", "nitrokey-3", "--count", "2")
    cred_id = _make_non_resident(_state(data_home))
    _assert_with(_state(data_home), cred_id)
    _assert_with(_state(data_home), cred_id)
    data = _json(run("info", "--json"))
    expected_keys = {
        "key",
        "state",
        "running",
        "profile",
        "description",
        "ctap",
        "aaguid",
        "versions",
        "extensions",
        "options",
        "algorithms",
        "pin_uv_auth_protocols",
        "credential_management",
        "resident_credentials",
        "pin",
        "counters",
        "firmware_version",
        "max_msg_size",
    }
    assert expected_keys <= set(data)
    assert data["key"] == "default" and data["running"] is False
    assert data["profile"] == "nitrokey-3" and data["ctap"] == "2.1"
    assert data["resident_credentials"] == {"used": 2, "capacity": 10, "free": 8}
    assert data["pin"]["set"] is False
    assert data["counters"] == {"credentials": 1, "signatures": 2}
    with Authenticator(state=_state(data_home)) as auth:
        info = Ctap2(VirtualCtapDevice(auth)).info
    assert data["versions"] == info.versions
    assert data["aaguid"] == str(info.aaguid)

    text = run("info").stdout
    assert "nitrokey-3" in text and str(info.aaguid) in text
    assert "2 used, 8 free (of 10)" in text


def test_secrets_are_never_printed(run: Run, data_home: Path) -> None:
    run("fill", "--count", "2")
    with Authenticator(state=_state(data_home)) as auth:
        master = auth.store.get_meta("master_key")
    assert master is not None
    outputs = [
        run("info", "--json").output,
        run("info").output,
        run("credentials", "list", "--json").output,
        run("keys", "--json").output,
        run("fill", "--count", "1", "--json").output,
    ]
    for text in outputs:
        assert master.hex() not in text and master.hex().upper() not in text


def test_missing_key_and_bad_selection(run: Run, tmp_path: Path) -> None:
    result = run("info", code=1)
    assert "there is no key 'default'" in result.stderr
    assert not (tmp_path / "data" / "softkey" / "default.sqlite3").exists()
    assert "not both" in run("info", "--key", "a", "--state", str(tmp_path / "x"), code=2).stderr
    assert "invalid key name" in run("info", "--key", "../etc", code=2).stderr
    other = tmp_path / "elsewhere.sqlite3"
    run("fill", "--state", str(other), "--count", "1")
    assert _json(run("info", "--state", str(other), "--json"))["key"] is None


def test_env_selects_the_key_and_options_override_it(run: Run, tmp_path: Path) -> None:
    run("fill", "--key", "work", "--profile", "solokey", "--count", "1")
    assert _json(run("info", "--json", env={"SOFTKEY_KEY": "work"}))["profile"] == "solokey"
    other = tmp_path / "other.sqlite3"
    run("fill", "--state", str(other), "--profile", "ctap2.0", "--count", "1")
    data = _json(run("info", "--state", str(other), "--json", env={"SOFTKEY_KEY": "work"}))
    assert data["profile"] == "ctap2.0"


def test_keys_lists_several_keys(run: Run, data_home: Path) -> None:
    assert "no keys" in run("keys").stdout
    run("fill", "--key", "a", "--profile", "yubikey-5", "--count", "3")
    run("fill", "--key", "b", "--profile", "unlimited-rk", "--count", "1")
    listing = _json(run("keys", "--json"))
    assert listing["data_dir"] == str(data_home)
    assert [
        (k["key"], k["profile"], k["used"], k["capacity"], k["running"]) for k in listing["keys"]
    ] == [
        ("a", "yubikey-5", 3, 25, False),
        ("b", "unlimited-rk", 1, None, False),
    ]
    text = run("keys").stdout
    assert "3/25" in text and "1/unlimited" in text
    # Separate state files and control sockets per key.
    assert paths.control_socket_path(_state(data_home, "a")) != paths.control_socket_path(
        _state(data_home, "b")
    )


def test_profiles_match_what_python_fido2_reads(run: Run) -> None:
    from softkey.authenticator.profiles import PROFILES

    rows = {p["name"]: p for p in _json(run("profiles", "--json"))["profiles"]}
    assert set(rows) == set(PROFILES)
    assert [n for n, r in rows.items() if r["default"]] == ["ctap2.1"]
    for name, row in rows.items():
        if not PROFILES[name].ctap2:  # U2F-only: no getInfo (tests/transports/test_u2f_profile.py)
            assert row["versions"] == ["U2F_V2"]
            continue
        with Authenticator(name) as auth:
            info = Ctap2(VirtualCtapDevice(auth)).info
        assert row["versions"] == info.versions
        assert row["aaguid"] == str(info.aaguid)
        assert row["capacity"] == PROFILES[name].rk_capacity
    assert rows["yubikey-5"]["capacity"] == 25
    assert rows["ctap2.0"]["credential_management"] == "none"
    text = run("profiles").stdout
    assert "yubikey-5" in text and "FIDO_2_1_PRE" in text


# -- add-credential -------------------------------------------------------------------------------


def _pem(key: Any, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_add_non_resident_credential_signs_with_the_given_key(
    run: Run, data_home: Path, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _pem(key, tmp_path / "rp-fixture.pem")
    run("fill", "--profile", "yubikey-5", "--count", "1")
    result = run(
        "add-credential",
        "--rp",
        "example.com",
        "--private-key",
        str(pem),
        "--counter",
        "41",
        "--json",
    )
    body = _json(result)
    assert body["resident"] is False and body["used"] == 1  # no slot taken
    cred_id = bytes.fromhex(body["credential_id"])

    client_data_hash = os.urandom(32)
    with Authenticator(state=_state(data_home)) as auth:
        assertion = Ctap2(VirtualCtapDevice(auth)).get_assertion(
            "example.com", client_data_hash, [{"type": "public-key", "id": cred_id}]
        )
    assert assertion.auth_data.counter == 42
    key.public_key().verify(
        assertion.signature,
        bytes(assertion.auth_data) + client_data_hash,
        ec.ECDSA(hashes.SHA256()),
    )
    # Bound to its RP like any credential of this key.
    with pytest.raises(CtapError):
        _assert_with(_state(data_home), cred_id, "other.test")


def test_add_resident_ed25519_credential_is_discoverable(
    run: Run, data_home: Path, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = _pem(key, tmp_path / "ed.pem")
    result = run(
        "add-credential",
        "--rp",
        "example.com",
        "--private-key",
        str(pem),
        "--resident",
        "--user-handle",
        "a1b2c3",
        "--user-name",
        "carol",
        "--display-name",
        "Carol",
        "--profile",
        "ctap2.1",
    )
    assert "added a resident credential for example.com" in result.stdout
    listing = _json(run("credentials", "list", "--json"))["credentials"]
    assert [(c["user_name"], c["user_handle"], c["alg"]) for c in listing] == [
        ("carol", "a1b2c3", -8)
    ]
    cdh = os.urandom(32)
    with Authenticator(state=_state(data_home)) as auth:
        assertion = Ctap2(VirtualCtapDevice(auth)).get_assertion("example.com", cdh)
    assert assertion.user["id"] == bytes.fromhex("a1b2c3")
    key.public_key().verify(assertion.signature, bytes(assertion.auth_data) + cdh)


def test_add_credential_refusals(run: Run, tmp_path: Path) -> None:
    p256 = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "p256.pem")
    p521 = _pem(ec.generate_private_key(ec.SECP521R1()), tmp_path / "p521.pem")
    run("fill", "--profile", "nitrokey-fido2", "--until-full")
    base = ("add-credential", "--rp", "example.com", "--private-key")

    full = run(*base, str(p256), "--resident", "--user-handle", "01", code=1)
    assert "slots full (8/8)" in full.stderr
    assert "use P-256, P-384 or Ed25519" in run(*base, str(p521), code=2).stderr
    # Any ID is accepted (an imported credential, tests/tools/test_webdriver_surface.py), but
    # not one longer than WebAuthn's 1023 bytes.
    assert "1 to 1023 bytes" in run(*base, str(p256), "--credential-id", "00" * 1024, code=2).stderr
    assert "needs --user-handle" in run(*base, str(p256), "--resident", code=2).stderr
    assert "only apply to --resident" in run(*base, str(p256), "--user-handle", "01", code=2).stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    assert "PKCS#8 PEM" in run(*base, str(garbage), code=2).stderr
    assert _json(run("credentials", "list", "--json"))["used"] == 8


def test_add_credential_respects_the_profiles_algorithms(tmp_path: Path) -> None:
    from dataclasses import replace

    from softkey.authenticator.profiles import get_profile
    from softkey.tools.admin import AdminError, add_credential

    es256_only = replace(get_profile("ctap2.1"), name="es256-only", algorithms=(-7,))
    pem = _pem(ec.generate_private_key(ec.SECP384R1()), tmp_path / "p384.pem").read_text()
    with Authenticator(es256_only) as auth, pytest.raises(AdminError) as excinfo:
        add_credential(auth, rp="example.com", private_key_pem=pem)
    assert "does not make ES384 credentials (it offers ES256)" in str(excinfo.value)
    assert excinfo.value.code == "usage"


def test_add_credential_reseeds_with_its_own_id(run: Run, data_home: Path, tmp_path: Path) -> None:
    pem = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "k.pem")
    first = _json(run("add-credential", "--rp", "example.com", "--private-key", str(pem), "--json"))
    again = _json(
        run(
            "add-credential",
            "--rp",
            "example.com",
            "--private-key",
            str(pem),
            "--credential-id",
            first["credential_id"],
            "--counter",
            "7",
            "--json",
        )
    )
    assert again["credential_id"] == first["credential_id"]
    assertion = _assert_with(_state(data_home), bytes.fromhex(first["credential_id"]))
    assert assertion.auth_data.counter == 8


# -- export / import -----------------------------------------------------------------------------


def test_export_import_keeps_credentials_working(run: Run, data_home: Path, tmp_path: Path) -> None:
    run("fill", "--key", "ci", "--profile", "solokey", "--count", "3")
    non_resident = _make_non_resident(_state(data_home, "ci"))
    _assert_with(_state(data_home, "ci"), non_resident)  # counter 1
    export = tmp_path / "ci-key.json"
    result = run("export", "--key", "ci", str(export))
    assert "master key in the clear" in result.stderr
    assert stat.S_IMODE(export.stat().st_mode) == 0o600

    run("import", "--key", "copy", str(export))
    copy = _state(data_home, "copy")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assertion = _assert_with(copy, non_resident)
    assert assertion.auth_data.counter == 2  # counters travel too
    original = _json(run("credentials", "list", "--key", "ci", "--json"))["credentials"]
    imported = _json(run("credentials", "list", "--key", "copy", "--json"))["credentials"]
    assert imported == original
    with Authenticator(state=copy) as auth:
        found = Ctap2(VirtualCtapDevice(auth)).get_assertions("fill.softkey.test", os.urandom(32))
    assert len(found) == 3
    assert _json(run("info", "--key", "copy", "--json"))["profile"] == "solokey"


def test_encrypted_export_roundtrip(run: Run, data_home: Path, tmp_path: Path) -> None:
    run("fill", "--count", "1")
    cred_id = _make_non_resident(_state(data_home))
    with Authenticator(state=_state(data_home)) as auth:
        master = auth.store.get_meta("master_key")
    assert master is not None
    export = tmp_path / "enc.json"
    run("export", str(export), "--passphrase", env={"SOFTKEY_PASSPHRASE": "correct horse"})
    text = export.read_text()
    assert master.hex() not in text and '"ciphertext"' in text
    assert json.loads(text)["encryption"]["kdf"] == "scrypt"

    wrong = run("import", "--key", "x", str(export), env={"SOFTKEY_PASSPHRASE": "wrong"}, code=1)
    assert "wrong passphrase" in wrong.stderr
    assert not _state(data_home, "x").exists()
    run("import", "--key", "x", str(export), env={"SOFTKEY_PASSPHRASE": "correct horse"})
    assert _assert_with(_state(data_home, "x"), cred_id).credential["id"] == cred_id


def test_tampered_encrypted_header_is_rejected(run: Run, tmp_path: Path) -> None:
    run("fill", "--count", "1")
    export = tmp_path / "enc.json"
    run("export", str(export), "--passphrase", env={"SOFTKEY_PASSPHRASE": "pw"})
    doc = json.loads(export.read_text())
    doc["profile"] = "ctap2.0"
    export.write_text(json.dumps(doc))
    result = run("import", "--key", "y", str(export), env={"SOFTKEY_PASSPHRASE": "pw"}, code=1)
    assert "wrong passphrase (or the export file was modified)" in result.stderr


def test_import_refuses_to_overwrite_without_force(
    run: Run, data_home: Path, tmp_path: Path
) -> None:
    run("fill", "--key", "src", "--count", "2")
    run("fill", "--key", "dst", "--count", "5")
    export = tmp_path / "src.json"
    run("export", "--key", "src", str(export))
    result = run("import", "--key", "dst", str(export), code=1)
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert _json(run("info", "--key", "dst", "--json"))["resident_credentials"]["used"] == 5
    run("import", "--key", "dst", str(export), "--force")
    assert _json(run("info", "--key", "dst", "--json"))["resident_credentials"]["used"] == 2
    # export refuses to overwrite its file, too
    assert "already exists" in run("export", "--key", "src", str(export), code=1).stderr


def test_import_rejects_files_that_are_not_exports(run: Run, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    assert "not a softkey export" in run("import", str(bogus), code=1).stderr
    future = tmp_path / "future.json"
    future.write_text('{"format": "softkey-state-export", "version": 99}')
    assert "upgrade softkey" in run("import", str(future), code=1).stderr
    missing = run("import", str(tmp_path / "nope.json"), code=1)
    assert "does not exist" in missing.stderr


def test_export_file_format_is_documented_shape(run: Run, tmp_path: Path) -> None:
    run("fill", "--profile", "yubikey-5", "--count", "2")
    export = tmp_path / "plain.json"
    run("export", str(export))
    doc = json.loads(export.read_text())
    assert (doc["format"], doc["version"], doc["profile"], doc["encryption"]) == (
        "softkey-state-export",
        1,
        "yubikey-5",
        None,
    )
    tables = doc["state"]["tables"]
    assert {"meta", "credentials", "counters"} <= set(tables)
    assert len(tables["credentials"]["rows"]) == 2
    meta = {row[0]: row[1] for row in tables["meta"]["rows"]}
    assert len(bytes.fromhex(meta["master_key"]["hex"])) == 32


# -- PIN ------------------------------------------------------------------------------------------


def test_pin_set_status_change(run: Run, data_home: Path) -> None:
    run("fill", "--profile", "ctap2.1", "--count", "1")
    assert "no PIN set" in run("pin", "status").stdout
    run("pin", "set", env={"SOFTKEY_PIN": "123456"})  # SOFTKEY_PIN works for `set` too
    status = _json(run("pin", "status", "--json"))
    assert status["set"] is True and status["retries"] == 8
    assert "123456" not in run("info").stdout

    assert "already set" in run("pin", "set", env={"SOFTKEY_PIN": "1111"}, code=1).stderr
    wrong = run("pin", "change", env={"SOFTKEY_PIN": "000000", "SOFTKEY_NEW_PIN": "654321"}, code=1)
    assert "wrong current PIN; 7 retries left" in wrong.stderr
    assert _json(run("pin", "status", "--json"))["retries"] == 7
    run("pin", "change", env={"SOFTKEY_PIN": "123456", "SOFTKEY_NEW_PIN": "654321"})
    assert _json(run("pin", "status", "--json"))["retries"] == 8

    # python-fido2 confirms the new PIN works.
    from fido2.ctap2 import ClientPin

    with Authenticator(state=_state(data_home)) as auth:
        ClientPin(Ctap2(VirtualCtapDevice(auth))).get_pin_token("654321")


def test_fill_on_a_pin_protected_key_uses_the_pin(run: Run) -> None:
    run("fill", "--profile", "yubikey-5", "--count", "1")
    run("pin", "set", env={"SOFTKEY_NEW_PIN": "4321"})
    run("fill", "--count", "12", env={"SOFTKEY_PIN": "4321"})
    assert _json(run("credentials", "list", "--json"))["used"] == 13
    wrong = run("fill", "--count", "1", env={"SOFTKEY_PIN": "9999"}, code=1)
    assert "wrong PIN" in wrong.stderr


def test_short_pin_is_refused_with_the_policy(run: Run) -> None:
    run("fill", "--count", "1")
    result = run("pin", "set", env={"SOFTKEY_NEW_PIN": "12"}, code=1)
    assert "PIN policy" in result.stderr or "at least" in result.stderr
    assert _json(run("pin", "status", "--json"))["set"] is False


# -- a running key (control socket served in this process) ------------------------------------


def test_verbs_go_through_a_running_keys_control_socket(run: Run, data_home: Path) -> None:
    import threading

    from softkey.tools.admin import dispatch
    from softkey.transports.control import ControlServer

    run("fill", "--key", "live", "--profile", "yubikey-5", "--count", "2")
    state = _state(data_home, "live")
    auth = Authenticator(state=state)
    lock = threading.Lock()

    def admin(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return dispatch(auth, request["name"], request["args"])

    with ControlServer(paths.control_socket_path(state), {"admin": admin}):
        assert _json(run("info", "--key", "live", "--json"))["running"] is True
        run("fill", "--key", "live", "--count", "3")
        assert auth.store.resident_count() == 5  # the running key's own object did it
        wrong = run("fill", "--key", "live", "--profile", "solokey", "--count", "1", code=1)
        assert "'yubikey-5' key, not 'solokey'" in wrong.stderr
        old = auth.wrapper
        run("reset", "--key", "live", "--yes")
        assert auth.wrapper is not old and auth.credentials() == []
        refused = run("import", "--key", "live", str(data_home / "x.json"), code=1)
        assert "is running" in refused.stderr
    auth.close()


def test_running_key_without_admin_calls_refuses_writes(run: Run, data_home: Path) -> None:
    from softkey.transports.control import ControlServer

    run("fill", "--key", "old", "--count", "2")
    state = _state(data_home, "old")
    with ControlServer(paths.control_socket_path(state), {"status": lambda r: {}}):
        # Reads still work on the file (WAL lets them run beside the key's writes).
        data = _json(run("credentials", "list", "--key", "old", "--json"))
        assert data["running"] is True and data["used"] == 2
        refused = run("fill", "--key", "old", "--count", "1", code=1)
        assert refused.stderr.startswith("Error: key 'old' is running; stop it")
        assert "softkey run --key old" in refused.stderr
    assert _json(run("credentials", "list", "--key", "old", "--json"))["used"] == 2


def test_stale_socket_means_not_running(run: Run, data_home: Path) -> None:
    import socket

    run("fill", "--key", "s", "--count", "1")
    sock_path = paths.control_socket_path(_state(data_home, "s"))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays; nobody listens (a killed key)
    assert _json(run("info", "--key", "s", "--json"))["running"] is False
    run("fill", "--key", "s", "--count", "1")
