"""`softkey attestation export-ca`: the exported PEM is a trust anchor py_webauthn accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn import verify_registration_response

from softkey.authenticator import Authenticator
from softkey.tools.cli import cli
from softkey.transports.inprocess import VirtualCtapDevice

ORIGIN = "https://example.com"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("SOFTKEY_KEY", "SOFTKEY_STATE"):
        monkeypatch.delenv(name, raising=False)


def _register(state: Path):
    with Authenticator("ctap2.1", state) as auth:
        client = Fido2Client(VirtualCtapDevice(auth), DefaultClientDataCollector(ORIGIN))
        server = Fido2Server(
            PublicKeyCredentialRpEntity(id="example.com", name="Example"), attestation="direct"
        )
        options, _ = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="U"),
            user_verification=UserVerificationRequirement.DISCOURAGED,
        )
        return options, client.make_credential(options.public_key)


def test_export_ca_is_the_trust_anchor_of_the_keys_attestation(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    options, registration = _register(state)
    runner = CliRunner()
    out = tmp_path / "ca.pem"
    result = runner.invoke(cli, ["attestation", "export-ca", "--state", str(state), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "SHA-256" in result.output
    printed = runner.invoke(cli, ["attestation", "export-ca", "--state", str(state)])
    assert printed.exit_code == 0
    assert printed.stdout.encode() == out.read_bytes()
    verified = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
        pem_root_certs_bytes_by_fmt={"packed": [out.read_bytes()]},
    )
    assert verified.fmt == "packed"
    as_json = json.loads(
        runner.invoke(cli, ["attestation", "export-ca", "--state", str(state), "--json"]).stdout
    )
    assert as_json["pem"].encode() == out.read_bytes()
    assert "softkey Attestation Root CA" in as_json["subject"]


def test_export_ca_of_a_missing_key_says_how_to_create_one(tmp_path: Path) -> None:
    state = tmp_path / "nope.sqlite3"
    result = CliRunner().invoke(cli, ["attestation", "export-ca", "--state", str(state)])
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert not state.exists()
