"""The master key and the PIN never appear in logs, traces or command output.

A real key runs with `--trace` and every logger at DEBUG; a platform (python-fido2 over UDP)
and the CLI then do what touches the secrets: set the PIN through the control socket, get
tokens, try a wrong PIN, change the PIN, make and use credentials (with hmac-secret), manage
credentials, write a large blob, read info. Everything the key process printed, everything
the CLI printed, and every file next to the state other than the SQLite database itself
(which must hold the master key) are searched for the master key (raw, hex, base64) and for
each PIN (raw, hex, base64).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2, LargeBlobs
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator.store import Store
from softkey.transports.udp import open_udp_device

FIRST_PIN = "s3cr3t-PIN-one"
SECOND_PIN = "s3cr3t-PIN-two"
WRONG_PIN = "s3cr3t-PIN-bad"
RP_ID = "secrets.example"
ORIGIN = f"https://{RP_ID}"
SQLITE_FILES = ("", "-wal", "-shm", "-journal")


def encodings(secret: bytes) -> dict[str, bytes]:
    """Ways a secret could leak into text: raw, hex (both cases), base64 (both alphabets,
    with and without padding)."""
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret),
        "base64url": base64.urlsafe_b64encode(secret),
    }
    forms["base64-nopad"] = forms["base64"].rstrip(b"=")
    forms["base64url-nopad"] = forms["base64url"].rstrip(b"=")
    return forms


class _Pin(UserInteraction):
    def __init__(self, pin: str) -> None:
        self.pin = pin

    def request_pin(self, permissions, rp_id):  # type: ignore[no-untyped-def]
        return self.pin

    def request_uv(self, permissions, rp_id):  # type: ignore[no-untyped-def]
        return True


def test_master_key_and_pins_never_leave_the_state(key_process, tmp_path: Path) -> None:
    key = key_process(tmp_path / "key", "--presence", "auto", "--trace", debug=True)
    cli_output = b""

    # The PIN, set through the CLI and the control socket (SOFTKEY_NEW_PIN, never argv).
    result = key.cli("pin", "set", env={"SOFTKEY_NEW_PIN": FIRST_PIN})
    assert result.returncode == 0, result.stderr
    cli_output += result.stdout + result.stderr

    device = open_udp_device("127.0.0.1", key.port, timeout=30)
    ctap = Ctap2(device)
    client_pin = ClientPin(ctap)
    # A wrong guess, then the right PIN, then a change of PIN over CTAP.
    try:
        client_pin.get_pin_token(WRONG_PIN)
        raise AssertionError("a wrong PIN gave a token")
    except CtapError as exc:
        assert exc.code == CtapError.ERR.PIN_INVALID
    client_pin.get_pin_token(FIRST_PIN)
    client_pin.change_pin(FIRST_PIN, SECOND_PIN)

    # A WebAuthn registration and login with PIN and hmac-secret (python-fido2's client).
    client = Fido2Client(
        device,
        DefaultClientDataCollector(ORIGIN),
        user_interaction=_Pin(SECOND_PIN),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Secrets"))
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=UserVerificationRequirement.REQUIRED,
        extensions={"hmacCreateSecret": True},
    )
    registration = client.make_credential(options.public_key)
    assert registration.client_extension_results["hmacCreateSecret"] is True
    credential = server.register_complete(state, registration).credential_data
    request, state = server.authenticate_begin(
        None,
        user_verification=UserVerificationRequirement.REQUIRED,
        extensions={"hmacGetSecret": {"salt1": os.urandom(32)}},
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    assert response.client_extension_results["hmacGetSecret"]["output1"]

    # Credential management and a large-blob write with a token.
    token = client_pin.get_pin_token(
        SECOND_PIN,
        ClientPin.PERMISSION.CREDENTIAL_MGMT | ClientPin.PERMISSION.LARGE_BLOB_WRITE,
    )
    credman = CredentialManagement(ctap, client_pin.protocol, token)
    assert credman.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    creds = credman.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    assert len(creds) == 1
    blobs = LargeBlobs(ctap, client_pin.protocol, token)
    blob_key = os.urandom(32)
    blobs.put_blob(blob_key, b"large blob contents")
    assert blobs.get_blob(blob_key) == b"large blob contents"
    device.close()

    # The operator's read commands, through the control socket.
    for args in (
        ("info", "--json"),
        ("credentials", "list", "--json"),
        ("pin", "status", "--json"),
        ("status", "--json"),
    ):
        result = key.cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        cli_output += result.stdout + result.stderr

    key.stop()
    logged = key.output()
    # The trace did run (so "nothing logged" is not "nothing ran").
    assert b"clientPIN" in logged and b"makeCredential" in logged and b"getAssertion" in logged
    assert b"pinUvAuthParam=present" in logged

    store = Store(key.state)
    master = store.get_meta("master_key")
    store.close()
    assert master is not None and len(master) == 32

    other_files = b""
    for path in sorted(key.state.parent.rglob("*")):
        if path.is_file() and path.name not in {key.state.name + s for s in SQLITE_FILES}:
            other_files += path.read_bytes()
    database = b"".join(
        p.read_bytes() for p in (Path(f"{key.state}{s}") for s in SQLITE_FILES) if p.exists()
    )
    assert master in database  # the secret is where it should be, so the search is sound

    places = {"key output": logged, "CLI output": cli_output, "other files": other_files}
    for where, text in places.items():
        for form, value in encodings(master).items():
            assert value not in text, f"master key ({form}) found in {where}"
        for pin in (FIRST_PIN, SECOND_PIN, WRONG_PIN):
            for form, value in encodings(pin.encode()).items():
                assert value not in text, f"a PIN ({form}) found in {where}"
    for pin in (FIRST_PIN, SECOND_PIN, WRONG_PIN):
        assert pin.encode() not in database, "a PIN is stored in the clear"
