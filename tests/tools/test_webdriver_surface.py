"""WebDriver's credential commands as admin operations and CLI verbs, offline and on a running
key (its control socket), judged by python-fido2's Fido2Client + Fido2Server.

CLI names: `add-credential --credential-id` (addCredential), `credentials list --all`
(getCredentials), `credentials delete` (removeCredential / removeAllCredentials),
`credentials set-properties` (setCredentialProperties).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fido2 import cbor as fido2_cbor
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.cose import CoseKey
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialRpEntity,
    UserVerificationRequirement,
)

from softkey.authenticator import Authenticator
from softkey.authenticator.events import b64url
from softkey.tools import paths
from softkey.tools.admin import dispatch
from softkey.tools.cli import cli
from softkey.transports.inprocess import VirtualCtapDevice

REPO = Path(__file__).resolve().parents[2]
RP_ID = "example.com"
RP = PublicKeyCredentialRpEntity(id=RP_ID, name="Example")
ORIGIN = "https://example.com"
DISCOURAGED = UserVerificationRequirement.DISCOURAGED
RECORD_FIELDS = {
    "credential_id",
    "credential_id_b64url",
    "rp_id",
    "rp_name",
    "user_handle",
    "user_handle_b64url",
    "user_name",
    "user_display_name",
    "alg",
    "cred_protect",
    "counter",
    "created",
    "order",
    "resident",
    "imported",
    "backup_eligible",
    "backup_state",
    "public_key_cose",
    "large_blob",
    "large_blob_b64url",
}


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("SOFTKEY_KEY", "SOFTKEY_STATE", "SOFTKEY_PIN", "SOFTKEY_NEW_PIN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data" / "softkey"


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    if code:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return result


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def _key_file(key: Any, path: Path, encoding: str = "PEM") -> Path:
    path.write_bytes(
        key.private_bytes(
            getattr(serialization.Encoding, encoding),
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _rp_record(record: dict[str, Any]) -> AttestedCredentialData:
    """The RP's stored credential: the ID it chose and the public key the key reports."""
    public = CoseKey.parse(fido2_cbor.decode(bytes.fromhex(record["public_key_cose"])))
    return AttestedCredentialData.create(b"\0" * 16, bytes.fromhex(record["credential_id"]), public)


def _login(device: Any, credential: AttestedCredentialData, usernameless: bool = False) -> Any:
    """A Fido2Server login through python-fido2's Fido2Client; the authenticatorData."""
    server = Fido2Server(RP)
    client = Fido2Client(device, DefaultClientDataCollector(ORIGIN))
    request, state = server.authenticate_begin(
        None if usernameless else [credential], user_verification=DISCOURAGED
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    return AuthenticatorData(bytes(response.response.authenticator_data))


def _login_state(state: Path, credential: AttestedCredentialData, **kw: Any) -> Any:
    with Authenticator(state=state) as auth:
        return _login(VirtualCtapDevice(auth), credential, **kw)


# -- admin operations (the control socket's vocabulary) ------------------------------------------


def test_admin_operations_speak_json(tmp_path: Path) -> None:
    pem = _key_file(ec.generate_private_key(ec.SECP256R1()), tmp_path / "k.pem").read_text()
    cred_id = os.urandom(16)
    with Authenticator() as auth:
        added = dispatch(
            auth,
            "add_credential",
            {
                "rp": RP_ID,
                "private_key_pem": pem,
                "credential_id": b64url(cred_id),
                "counter": 5,
                "backup_eligible": True,
            },
        )
        assert added["ok"], added
        assert added["result"]["credential_id"] == cred_id.hex()
        assert added["result"]["imported"] is True and added["result"]["backup_eligible"] is True

        listing = dispatch(auth, "get_credentials", {})["result"]
        (record,) = listing["credentials"]
        assert set(record) == RECORD_FIELDS
        assert (record["counter"], record["resident"], record["order"]) == (5, False, None)
        with_keys = dispatch(auth, "get_credentials", {"include_private_keys": True})["result"]
        assert with_keys["credentials"][0]["private_key"].startswith("-----BEGIN PRIVATE KEY")
        assert "private_key" not in record

        refused = dispatch(
            auth,
            "set_credential_properties",
            {"credential_id": cred_id.hex(), "backup_eligible": False, "backup_state": True},
        )
        assert (
            refused
            == {
                "ok": False,
                "code": "usage",
                "error": refused["error"],
            }
            and "WebAuthn §6.1.3" in refused["error"]
        )
        changed = dispatch(
            auth,
            "set_credential_properties",
            {"credential_id": cred_id.hex()[:6], "backup_state": True},
        )
        assert changed["result"]["credential"]["backup_state"] is True

        missing = dispatch(auth, "remove_credential", {"credential_id": "00" * 16})
        assert missing["code"] == "not_found"
        removed = dispatch(auth, "remove_credential", {"credential_id": b64url(cred_id)})
        assert removed["result"]["removed"]["credential_id"] == cred_id.hex()
        assert dispatch(auth, "get_credentials", {})["result"]["credentials"] == []
        assert dispatch(auth, "remove_all_credentials", {})["result"]["removed"] == []


# -- offline CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 64])
def test_add_credential_with_any_id_then_log_in_list_and_delete(
    data_home: Path, tmp_path: Path, length: int
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = _key_file(key, tmp_path / "k.der", "DER")  # PKCS#8 DER works as well as PEM
    cred_id = os.urandom(length)
    added = _json(
        run(
            "add-credential",
            "--rp",
            RP_ID,
            "--private-key",
            str(der),
            "--credential-id",
            b64url(cred_id),
            "--counter",
            "10",
            "--json",
        )
    )
    assert added["credential_id"] == cred_id.hex() and added["imported"] is True
    assert added["used"] == 0  # a non-resident imported credential takes no slot

    listing = _json(run("credentials", "list", "--all", "--json"))
    (record,) = listing["credentials"]
    credential = _rp_record(record)
    state = data_home / "default.sqlite3"
    first = _login_state(state, credential).counter
    second = _login_state(state, credential).counter
    assert 10 < first < second
    assert _json(run("credentials", "list", "--all", "--json"))["credentials"][0]["counter"] == (
        second
    )
    # Plain `credentials list` shows the slots only.
    assert _json(run("credentials", "list", "--json"))["credentials"] == []
    text = run("credentials", "list", "--all").stdout
    assert "non-resident,imported" in text and "KIND" in text

    run("credentials", "delete", cred_id.hex()[:8], "--yes")
    assert _json(run("credentials", "list", "--all", "--json"))["credentials"] == []
    with pytest.raises(ClientError):
        _login_state(state, credential)


def test_resident_import_is_usernameless_and_listed_like_native_ones(
    data_home: Path, tmp_path: Path
) -> None:
    pem = _key_file(ed25519.Ed25519PrivateKey.generate(), tmp_path / "ed.pem")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"large blob bytes")
    cred_id = os.urandom(16)
    run("fill", "--count", "1", "--rp", RP_ID)
    run(
        "add-credential",
        "--rp",
        RP_ID,
        "--private-key",
        str(pem),
        "--credential-id",
        cred_id.hex(),
        "--resident",
        "--user-handle",
        "616c696365",
        "--user-name",
        "alice",
        "--large-blob",
        str(blob),
    )
    plain = _json(run("credentials", "list", "--json"))
    every = _json(run("credentials", "list", "--all", "--json"))
    assert plain == every  # no non-resident imported ones: the same records
    assert plain["used"] == 2
    imported = next(c for c in plain["credentials"] if c["imported"])
    native = next(c for c in plain["credentials"] if not c["imported"])
    assert set(imported) == set(native) == RECORD_FIELDS
    assert imported["user_name"] == "alice" and imported["resident"] is True
    assert bytes.fromhex(imported["large_blob"]) == b"large blob bytes"
    with Authenticator(state=data_home / "default.sqlite3") as auth:
        device = VirtualCtapDevice(auth)
        # Usernameless: the RP asks with an empty allowList; two residents answer, the client
        # takes the most recent one (ours).
        data = _login(device, _rp_record(imported), usernameless=True)
        assert data.is_user_present()


def test_private_keys_are_printed_only_when_asked_with_a_warning(
    tmp_path: Path, data_home: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _key_file(key, tmp_path / "k.pem")
    run("add-credential", "--rp", RP_ID, "--private-key", str(pem), "--credential-id", "c0ffee")
    quiet = run("credentials", "list", "--all", "--json")
    assert "PRIVATE KEY" not in quiet.stdout and quiet.stderr == ""
    loud = run("credentials", "list", "--all", "--private-keys", "--json")
    assert "private keys in the clear" in loud.stderr
    (record,) = _json(loud)["credentials"]
    loaded = serialization.load_pem_private_key(record["private_key"].encode(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    text = run("credentials", "list", "--all", "--private-keys", "--id-format", "hex")
    assert "c0ffee:" in text.stdout and "-----BEGIN PRIVATE KEY-----" in text.stdout


def test_set_properties_flags_appear_in_assertions_and_bs_without_be_is_refused(
    data_home: Path, tmp_path: Path
) -> None:
    pem = _key_file(ec.generate_private_key(ec.SECP256R1()), tmp_path / "k.pem")
    cred_id = os.urandom(16)
    added = _json(
        run(
            "add-credential",
            "--rp",
            RP_ID,
            "--private-key",
            str(pem),
            "--credential-id",
            cred_id.hex(),
            "--json",
        )
    )
    assert (added["backup_eligible"], added["backup_state"]) == (False, False)
    state = data_home / "default.sqlite3"
    record = _json(run("credentials", "list", "--all", "--json"))["credentials"][0]
    credential = _rp_record(record)
    data = _login_state(state, credential)
    assert (data.is_backup_eligible(), data.is_backed_up()) == (False, False)

    refused = run("credentials", "set-properties", cred_id.hex(), "--backup-state", code=2)
    assert "WebAuthn §6.1.3" in refused.stderr
    run("credentials", "set-properties", cred_id.hex()[:10], "--backup-eligible")
    data = _login_state(state, credential)
    assert (data.is_backup_eligible(), data.is_backed_up()) == (True, False)
    result = _json(
        run("credentials", "set-properties", b64url(cred_id), "--backup-state", "--json")
    )
    assert result["credential"]["backup_state"] is True and result["running"] is False
    data = _login_state(state, credential)
    assert (data.is_backup_eligible(), data.is_backed_up()) == (True, True)
    run("credentials", "set-properties", cred_id.hex(), code=2)  # neither flag given
    run("credentials", "set-properties", "ff", "--backup-eligible", code=1)  # no such ID
    refused = run(
        "add-credential",
        "--rp",
        RP_ID,
        "--private-key",
        str(pem),
        "--credential-id",
        "abcd",
        "--backup-state",
        code=2,
    )
    assert "without backup eligibility" in refused.stderr
    assert len(_json(run("credentials", "list", "--all", "--json"))["credentials"]) == 1


def test_reset_kills_imported_credentials_and_delete_all_removes_them(
    data_home: Path, tmp_path: Path
) -> None:
    pem = _key_file(ec.generate_private_key(ec.SECP256R1()), tmp_path / "k.pem")
    for n in range(3):
        run(
            "add-credential", "--rp", RP_ID, "--private-key", str(pem), "--credential-id", f"0{n}aa"
        )
    state = data_home / "default.sqlite3"
    records = _json(run("credentials", "list", "--all", "--json"))["credentials"]
    assert [r["credential_id"] for r in records] == ["02aa", "01aa", "00aa"]  # newest first
    credential = _rp_record(records[1])
    _login_state(state, credential)
    deleted = _json(run("credentials", "delete", "--all", "--yes", "--json"))
    assert len(deleted["deleted"]) == 3
    with pytest.raises(ClientError):
        _login_state(state, credential)

    run("add-credential", "--rp", RP_ID, "--private-key", str(pem), "--credential-id", "01aa")
    _login_state(state, credential)
    run("reset", "--yes")
    assert _json(run("credentials", "list", "--all", "--json"))["credentials"] == []
    with pytest.raises(ClientError):
        _login_state(state, credential)


# -- a running key: the control socket -------------------------------------------------------------


def test_the_verbs_go_through_a_running_keys_control_socket(
    data_home: Path, tmp_path: Path
) -> None:
    from softkey.transports.control import ControlServer

    pem = _key_file(ec.generate_private_key(ec.SECP256R1()), tmp_path / "k.pem")
    run("init", "--key", "live")
    state = data_home / "live.sqlite3"
    auth = Authenticator(state=state)
    lock = threading.Lock()

    def admin(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return dispatch(auth, request["name"], request["args"])

    cred_id = os.urandom(32)
    try:
        with ControlServer(paths.control_socket_path(state), {"admin": admin}):
            added = _json(
                run(
                    "add-credential",
                    "--key",
                    "live",
                    "--rp",
                    RP_ID,
                    "--private-key",
                    str(pem),
                    "--credential-id",
                    cred_id.hex(),
                    "--json",
                )
            )
            assert added["running"] is True
            # The running key's own object has it, and a client of that key logs in with it.
            record = _json(run("credentials", "list", "--key", "live", "--all", "--json"))
            assert record["running"] is True
            credential = _rp_record(record["credentials"][0])
            device = VirtualCtapDevice(auth)
            data = _login(device, credential)
            listed = _json(run("credentials", "list", "--key", "live", "--all", "--json"))
            assert listed["credentials"][0]["counter"] == data.counter
            run(
                "credentials", "set-properties", "--key", "live", cred_id.hex(), "--backup-eligible"
            )
            assert _login(device, credential).is_backup_eligible()
            run("credentials", "delete", "--key", "live", cred_id.hex(), "--yes")
            with pytest.raises(ClientError):
                _login(device, credential)
    finally:
        auth.close()


def test_a_real_running_key_over_udp(tmp_path: Path) -> None:
    """`softkey run --transport udp` in its own process; the CLI adds through its socket,
    python-fido2 logs in over UDP."""
    from softkey.transports.udp import open_udp_device

    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    state = keys / "k.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)

    def softkey(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", *args, "--state", str(state)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    pem = _key_file(ed25519.Ed25519PrivateKey.generate(), tmp_path / "k.pem")
    proc = subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "run", "--state", str(state)]
        + ["--transport", "udp", "--port", "0", "--presence", "auto", "--ready-json"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        port = json.loads(line)["address"]["port"]
        cred_id = os.urandom(64)
        added = softkey(
            "add-credential",
            "--rp",
            RP_ID,
            "--private-key",
            str(pem),
            "--credential-id",
            b64url(cred_id),
            "--resident",
            "--user-handle",
            "0102",
            "--json",
        )
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["running"] is True
        listed = json.loads(softkey("credentials", "list", "--json").stdout)
        credential = _rp_record(listed["credentials"][0])
        data = _login(open_udp_device("127.0.0.1", port), credential, usernameless=True)
        changed = softkey(
            "credentials", "set-properties", cred_id.hex(), "--backup-eligible", "--backup-state"
        )
        assert changed.returncode == 0, changed.stderr
        again = _login(open_udp_device("127.0.0.1", port), credential)
        assert (again.is_backup_eligible(), again.is_backed_up()) == (True, True)
        assert again.counter > data.counter
        listed = json.loads(softkey("credentials", "list", "--all", "--json").stdout)
        assert listed["credentials"][0]["counter"] == again.counter
        removed = softkey("credentials", "delete", "--all", "--yes", "--json")
        assert json.loads(removed.stdout)["used"] == 0
    finally:
        proc.terminate()
        proc.wait(30)
