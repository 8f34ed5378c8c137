"""The u2f profile: a U2F-only key (CTAP1 alone), as keys made before CTAP2 were.

Its CTAPHID_INIT capabilities lack CBOR (and NMSG: it does speak CTAPHID_MSG), per CTAP 2.1
§11.2.9.1.3; CTAPHID_CBOR is answered ERR_INVALID_CMD by the transport (§11.2.9.1.6); U2F
messages work. python-fido2's Fido2Client, reading the INIT capabilities, falls back to CTAP1,
and Fido2Server checks the fido-u2f attestation against the key's root. Every HID test runs
over the in-process CTAPHID connection and over real UDP sockets (transports/udp.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fido2.attestation import AttestationVerifier
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.ctap import CtapError
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import PROFILES, Authenticator, get_profile
from softkey.authenticator.ctap import Status
from softkey.authenticator.profiles import U2F
from softkey.tools.cli import cli
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    Capability,
    Command,
    HidError,
    capabilities_for,
)
from softkey.transports.inprocess import VirtualCtapDevice

ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
GET_INFO = b"\x04"
U2F_VERSION_APDU = bytes.fromhex("0003000000")  # CLA INS=VERSION P1 P2, Le (short)


class TrustAnchor(AttestationVerifier):
    """python-fido2's verifier trusting one root: the key's exported attestation CA."""

    def __init__(self, root_der: bytes) -> None:
        super().__init__()
        self.root_der = root_der

    def ca_lookup(self, attestation_result, auth_data) -> bytes:  # type: ignore[override]
        return self.root_der


# -- the profile as data ------------------------------------------------------------------------


def test_the_profile_says_u2f_only() -> None:
    profile = get_profile("u2f")
    assert profile.ctap == U2F and profile.ctap2 is False
    assert profile.versions == ("U2F_V2",)
    assert profile.credman == "none"
    assert profile.pin_protocols == ()
    assert profile.algorithms == (-7,)  # U2F signs with P-256 only
    assert profile.rk_capacity == 0
    # Every other profile speaks CTAP2 (and U2F too).
    assert [name for name, p in PROFILES.items() if not p.ctap2] == ["u2f"]


def test_capabilities_follow_the_profile() -> None:
    """§11.2.9.1.3: CBOR set iff the key speaks CTAP2; NMSG never (every profile has MSG)."""
    for name, profile in PROFILES.items():
        caps = capabilities_for(profile)
        assert Capability.WINK in caps, name
        assert (Capability.CBOR in caps) is profile.ctap2, name
        assert Capability.NMSG not in caps and Capability.LOCK not in caps, name
    assert capabilities_for(get_profile("u2f")) == Capability.WINK


def test_the_authenticator_itself_has_no_ctap2() -> None:
    auth = Authenticator("u2f")
    # A direct caller (no transport in between) hears "no such command" for any CTAP2 request.
    for request in (GET_INFO, b"\x07", b"", b"\x01\xa0"):
        assert auth.handle_cbor(request) == bytes([Status.INVALID_COMMAND])
    assert auth.info() == {"versions": ["U2F_V2"]}
    with pytest.raises(Exception, match="no PIN"):
        auth.set_pin("123456")
    assert auth.pin_status()["set"] is False
    # VirtualCtapDevice reports the same capabilities as HID INIT would.
    device = VirtualCtapDevice(auth)
    assert device.capabilities == Capability.WINK
    with pytest.raises(ValueError):
        Ctap2(device)  # python-fido2 refuses CTAP2 on a device without the CBOR capability
    with pytest.raises(CtapError) as exc:
        device.call(0x10, GET_INFO)
    assert exc.value.code == CtapError.ERR.INVALID_COMMAND
    assert Ctap1(device).get_version() == "U2F_V2"


# -- over CTAPHID (in-process and UDP) -----------------------------------------------------------

KINDS = pytest.mark.parametrize("kind", ["inprocess", "udp"])


@KINDS
def test_init_capabilities_lack_cbor(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator("u2f"))
    host = port.raw()
    nonce = os.urandom(8)
    host.send(BROADCAST_CID, Command.INIT, nonce)
    answer = host.read()
    assert answer.data[:8] == nonce
    capabilities = answer.data[16]
    assert not capabilities & Capability.CBOR  # 0x04: no CTAP2
    assert not capabilities & Capability.NMSG  # 0x08: CTAPHID_MSG is implemented
    assert capabilities == Capability.WINK
    # python-fido2 reads the same byte.
    device = port.open_device()
    assert device.capabilities == 0x01
    with pytest.raises(ValueError):
        Ctap2(device)


@KINDS
def test_raw_cbor_is_an_invalid_command_and_msg_works(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator("u2f"))
    host = port.raw()
    cid = host.init()
    for payload in (GET_INFO, b"", b"\x01" + bytes(100)):  # one packet, empty, several
        host.send(cid, Command.CBOR, payload)
        answer = host.read()
        assert (answer.cid, answer.cmd, answer.data) == (
            cid,
            Command.ERROR,
            bytes([HidError.INVALID_CMD]),
        )
    # The key is not left busy: U2F VERSION over CTAPHID_MSG answers.
    host.send(cid, Command.MSG, U2F_VERSION_APDU)
    answer = host.read()
    assert (answer.cmd, answer.data) == (Command.MSG, b"U2F_V2\x90\x00")
    assert Ctap1(port.open_device()).get_version() == "U2F_V2"


@KINDS
def test_fido2_client_falls_back_to_ctap1_and_fido2_server_verifies(
    kind: str, make_port: Callable
) -> None:
    auth = Authenticator("u2f")
    port = make_port(kind, auth)
    client = Fido2Client(port.open_device(), DefaultClientDataCollector(ORIGIN))
    assert client.info.versions == ["U2F_V2"]  # what the CTAP1 backend reports
    server = Fido2Server(
        RP, attestation="direct", verify_attestation=TrustAnchor(auth.attestation.root_der())
    )
    user = PublicKeyCredentialUserEntity(id=b"user-u2f", name="dora", display_name="Dora")
    options, state = server.register_begin(
        user, user_verification=UserVerificationRequirement.DISCOURAGED
    )
    registration = client.make_credential(options.public_key)
    attestation = registration.response.attestation_object
    assert attestation.fmt == "fido-u2f"
    # The chain is checked against the key's root (verify_attestation), not skipped.
    auth_data = server.register_complete(state, registration)
    credential = auth_data.credential_data
    assert credential is not None
    assert credential.aaguid == bytes(16)  # U2F has no AAGUID: the platform writes zeros

    for expected_counter in (1, 2):
        request, state = server.authenticate_begin(
            [credential], user_verification=UserVerificationRequirement.DISCOURAGED
        )
        response = client.get_assertion(request.public_key).get_response(0)
        server.authenticate_complete(state, [credential], response)
        assert response.response.authenticator_data.counter == expected_counter
    assert auth.credentials() == []  # nothing stored on the key


@KINDS
def test_no_discoverable_credentials_over_u2f(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator("u2f"))
    client = Fido2Client(port.open_device(), DefaultClientDataCollector(ORIGIN))
    options, _ = Fido2Server(RP).register_begin(
        PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="U"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    with pytest.raises(ClientError) as exc:
        client.make_credential(options.public_key)
    assert exc.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("SOFTKEY_KEY", "SOFTKEY_STATE", "SOFTKEY_PIN", "SOFTKEY_NEW_PIN"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    return invoke


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_profiles_lists_u2f(run: Callable[..., Result]) -> None:
    rows = {row["name"]: row for row in _json(run("profiles", "--json"))["profiles"]}
    u2f = rows["u2f"]
    assert u2f["ctap"] == "u2f" and u2f["default"] is False
    assert u2f["versions"] == ["U2F_V2"]
    assert (u2f["options"], u2f["extensions"], u2f["pin_uv_auth_protocols"]) == ({}, [], [])
    assert (u2f["capacity"], u2f["credential_management"], u2f["algorithms"]) == (0, "none", [-7])
    assert any(line.split()[:2] == ["u2f", "u2f"] for line in run("profiles").stdout.splitlines())


def test_init_then_info(run: Callable[..., Result]) -> None:
    created = _json(run("init", "--profile", "u2f", "--json"))
    assert created["profile"] == "u2f" and created["resident_credentials"]["capacity"] == 0
    data = _json(run("info", "--json"))
    assert data["profile"] == "u2f" and data["ctap"] == "u2f"
    assert data["versions"] == ["U2F_V2"]
    assert (data["options"], data["extensions"], data["pin_uv_auth_protocols"]) == ({}, [], [])
    assert data["resident_credentials"] == {"used": 0, "capacity": 0, "free": 0}
    assert data["pin"]["set"] is False and data["pin"]["retries"] is None
    assert data["config"]["authenticator_config"] is False
    text = run("info").stdout
    assert "U2F_V2" in text and "none (U2F has no PIN)" in text
    assert run("credentials", "list", "--json").exit_code == 0


@pytest.mark.parametrize(
    ("verb", "message"),
    [
        (("pin", "set"), "a U2F-only key has no PIN"),
        (("pin", "change"), "a U2F-only key has no PIN"),
        (("pin", "status"), "a U2F-only key has no PIN"),
        (("pin", "verify"), "a U2F-only key has no PIN"),
        (("fill", "--count", "1"), "a U2F-only key has no discoverable credentials"),
        (("config", "toggle-always-uv"), "the u2f profile has no authenticatorConfig"),
    ],
)
def test_verbs_that_cannot_apply_say_so_in_one_line(
    run: Callable[..., Result], verb: tuple[str, ...], message: str
) -> None:
    run("init", "--profile", "u2f")
    # Secrets in the environment: the refusal must come before any PIN is read or used.
    env = {"SOFTKEY_PIN": "123456", "SOFTKEY_NEW_PIN": "654321"}
    result = run(*verb, code=1, env=env)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {message}"), lines
    assert "Traceback" not in result.output


def test_demo_refuses_u2f(run: Callable[..., Result]) -> None:
    result = run("demo", "--profile", "u2f", code=2)
    assert "U2F-only" in result.stderr


def test_add_credential_only_non_resident(run: Callable[..., Result], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = tmp_path / "key.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    run("init", "--profile", "u2f")
    args = ("add-credential", "--rp", "example.com", "--private-key", str(pem))
    refused = run(*args, "--resident", "--user-handle", "0a0b", code=1)
    assert "a U2F-only key has no discoverable credentials" in refused.stderr
    made = _json(run(*args, "--json"))
    # A non-resident credential is a U2F key handle: AUTHENTICATE for that application signs.
    handle = bytes.fromhex(made["credential_id"])
    state = tmp_path / "data" / "softkey" / "default.sqlite3"
    with Authenticator(state=state) as auth:
        app = hashlib.sha256(b"example.com").digest()
        apdu = b"\x00\x02\x03\x00" + bytes([64 + 1 + len(handle)])
        apdu += os.urandom(32) + app + bytes([len(handle)]) + handle
        answer = auth.handle_u2f(apdu)
    assert answer[-2:] == b"\x90\x00" and answer[0] == 0x01
    assert struct.unpack(">I", answer[1:5])[0] == 1
