"""authenticatorLargeBlobs (CTAP 2.1 §6.10) and the largeBlob WebAuthn extension, judged by
python-fido2's LargeBlobs and Fido2Client; each error path pinned."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2 import Ctap2
from fido2.ctap2.blob import LargeBlobs
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import Authenticator, get_profile
from softkey.authenticator import large_blobs as lb
from softkey.authenticator.ctap import MAX_MSG_SIZE, Cmd
from softkey.transports.inprocess import VirtualCtapDevice

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    PROTOCOLS,
    RP_ID,
    Key,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)

ORIGIN = "https://example.com"
MAX_FRAGMENT = MAX_MSG_SIZE - 64


def serialized(entries: bytes = b"\x80") -> bytes:
    return entries + hashlib.sha256(entries).digest()[:16]


def send(key: Key, **members: Any) -> int:
    """A hand-built largeBlobs request; the status byte."""
    names = {"get": 1, "set": 2, "offset": 3, "length": 4, "param": 5, "protocol": 6}
    return raw(key.auth, Cmd.LARGE_BLOBS, {names[k]: v for k, v in members.items()})[0]


class PinEntry(UserInteraction):
    def request_pin(self, permissions: Any, rd_id: Any) -> str:
        return "1234"


# -- through independent clients -------------------------------------------------------------


def test_initial_array_is_empty_with_its_checksum() -> None:
    key = new_key()
    assert LargeBlobs(key.ctap).read_blob_array() == []
    assert lb.read_array(key.auth) == bytes.fromhex("8076be8b528d0075f7aae98d6fa57a6d3c")


@pytest.mark.parametrize("pin", [False, True])
def test_large_blob_round_trip_through_fido2_client(pin: bool) -> None:
    key = with_pin() if pin else new_key()
    fido_client = Fido2Client(
        VirtualCtapDevice(key.auth), DefaultClientDataCollector(ORIGIN), user_interaction=PinEntry()
    )
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Example"))
    uv = UserVerificationRequirement.REQUIRED if pin else UserVerificationRequirement.DISCOURAGED
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="U"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=uv,
        extensions={"largeBlob": {"support": "required"}},
    )
    registration = fido_client.make_credential(options.public_key)
    assert registration.client_extension_results["largeBlob"]["supported"] is True
    credential = server.register_complete(state, registration).credential_data

    data = os.urandom(300)
    request, _ = server.authenticate_begin(
        [credential], user_verification=uv, extensions={"largeBlob": {"write": data}}
    )
    written = fido_client.get_assertion(request.public_key).get_response(0)
    assert written.client_extension_results["largeBlob"]["written"] is True
    request, _ = server.authenticate_begin(
        [credential], user_verification=uv, extensions={"largeBlob": {"read": True}}
    )
    read = fido_client.get_assertion(request.public_key).get_response(0)
    blob = read.client_extension_results["largeBlob"]["blob"]
    assert (blob if isinstance(blob, bytes) else websafe_decode(blob)) == data


def test_blobs_of_two_credentials_stay_apart_and_can_be_deleted() -> None:
    key = new_key()
    keys = [make(key, rk=True, user=u, extensions={"largeBlobKey": True}).large_blob_key
            for u in (b"a", b"b")]  # fmt: skip
    blobs = LargeBlobs(key.ctap)
    blobs.put_blob(keys[0], b"first")
    blobs.put_blob(keys[1], b"second")
    assert blobs.get_blob(keys[0]) == b"first"
    assert blobs.get_blob(keys[1]) == b"second"
    blobs.delete_blob(keys[0])
    assert blobs.get_blob(keys[0]) is None
    assert blobs.get_blob(keys[1]) == b"second"


def test_multi_fragment_write_and_read_with_a_configured_size() -> None:
    profile = replace(get_profile("ctap2.1"), max_serialized_large_blob_array=30_000)
    key = new_key(profile)
    assert key.ctap.info.max_large_blob == 30_000
    array = [{1: os.urandom(5000), 2: os.urandom(12), 3: 5000} for _ in range(4)]
    blobs = LargeBlobs(key.ctap)
    blobs.write_blob_array(array)  # > 2 fragments of maxMsgSize - 64
    assert len(lb.read_array(key.auth)) > 2 * MAX_FRAGMENT
    assert [dict(e) for e in LargeBlobs(key.ctap).read_blob_array()] == array


def test_array_survives_reopen_and_reset_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "key.db"
    with Authenticator("ctap2.1", path) as auth:
        LargeBlobs(Ctap2(VirtualCtapDevice(auth))).write_blob_array([{1: b"x", 2: b"y", 3: 1}])
    with Authenticator(state=path) as auth:
        ctap = Ctap2(VirtualCtapDevice(auth))
        assert len(LargeBlobs(ctap).read_blob_array()) == 1
        ctap.reset()
        assert LargeBlobs(ctap).read_blob_array() == []


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "yubikey-5"])
def test_older_profiles_have_no_large_blobs(profile: str) -> None:
    key = new_key(profile)
    assert send(key, get=10, offset=0) == ERR.INVALID_COMMAND


# -- error paths -----------------------------------------------------------------------------------


def test_write_with_a_bad_checksum_is_integrity_failure_and_changes_nothing() -> None:
    key = new_key()
    good = serialized(b"\x81\xa1\x01\x41x")
    assert send(key, set=good, offset=0, length=len(good)) == 0
    bad = good[:-1] + bytes([good[-1] ^ 1])
    assert send(key, set=bad, offset=0, length=len(bad)) == ERR.INTEGRITY_FAILURE
    assert lb.read_array(key.auth) == good


def test_fragments_must_arrive_in_order_and_uninterrupted() -> None:
    key = new_key()
    data = serialized(b"\x81" + b"\x58\x30" + os.urandom(48))
    half = len(data) // 2
    assert send(key, set=data[half:], offset=half) == ERR.INVALID_SEQ  # nothing started
    assert send(key, set=data[:half], offset=0, length=len(data)) == 0
    assert send(key, set=data[half + 1 :], offset=half + 1) == ERR.INVALID_SEQ  # a gap
    key.ctap.get_info()  # any other command abandons the write
    assert send(key, set=data[half:], offset=half) == ERR.INVALID_SEQ
    assert send(key, set=data[:half], offset=0, length=len(data)) == 0
    assert send(key, get=5, offset=0) == 0  # reading does not abandon it
    assert send(key, set=data[half:], offset=half) == 0
    assert lb.read_array(key.auth) == data


def test_parameter_errors() -> None:
    key = new_key()
    cases = [
        ({"get": 10}, ERR.INVALID_PARAMETER),  # no offset
        ({"offset": 0}, ERR.INVALID_PARAMETER),  # neither get nor set
        ({"get": 10, "set": b"x" * 17, "offset": 0, "length": 17}, ERR.INVALID_PARAMETER),
        ({"get": 10, "offset": 0, "length": 10}, ERR.INVALID_PARAMETER),  # length with get
        ({"get": 10, "offset": 18}, ERR.INVALID_PARAMETER),  # past the 17-byte array
        ({"get": 10, "offset": -1}, ERR.INVALID_PARAMETER),
        ({"get": MAX_FRAGMENT + 1, "offset": 0}, ERR.INVALID_LENGTH),
        ({"set": serialized()}, ERR.INVALID_PARAMETER),  # no offset
        ({"set": serialized(), "offset": 0}, ERR.INVALID_PARAMETER),  # no length
        ({"set": b"\x80", "offset": 0, "length": 16}, ERR.INVALID_PARAMETER),  # < 17 bytes
        ({"set": b"x" * 20, "offset": 0, "length": 19}, ERR.INVALID_PARAMETER),  # overlong
        ({"set": b"x" * (MAX_FRAGMENT + 1), "offset": 0, "length": 4096}, ERR.INVALID_LENGTH),
        ({"set": b"x" * 17, "offset": 0, "length": 4097}, ERR.LARGE_BLOB_STORAGE_FULL),
        ({"get": "ten", "offset": 0}, ERR.CBOR_UNEXPECTED_TYPE),
        ({"set": "text", "offset": 0, "length": 17}, ERR.CBOR_UNEXPECTED_TYPE),
    ]
    for members, status in cases:
        assert send(key, **members) == status, members
    # A non-first fragment must not repeat the length.
    assert send(key, set=b"x" * 10, offset=0, length=40) == 0
    assert send(key, set=b"x" * 10, offset=10, length=40) == ERR.INVALID_PARAMETER
    assert lb.read_array(key.auth) == lb.INITIAL_ARRAY


def test_get_returns_the_requested_window() -> None:
    key = new_key()
    data = serialized(b"\x81\x58\x40" + os.urandom(64))
    assert send(key, set=data, offset=0, length=len(data)) == 0
    response = raw(key.auth, Cmd.LARGE_BLOBS, {1: 10, 3: 5})
    assert response[0] == 0
    ctap = key.ctap
    assert ctap.large_blobs(5, get=10)[1] == data[5:15]
    assert ctap.large_blobs(len(data), get=10)[1] == b""  # offset == length: empty


def lbw_param(token: bytes, version: int, offset: int, fragment: bytes) -> bytes:
    message = b"\xff" * 32 + b"\x0c\x00" + struct.pack("<I", offset)
    return PROTOCOLS[version]().authenticate(token, message + hashlib.sha256(fragment).digest())


@pytest.mark.parametrize("version", [1, 2])
def test_writes_need_an_lbw_token_once_a_pin_is_set(version: int) -> None:
    key = with_pin()
    data = serialized(b"\x81\x41z")
    n = len(data)
    assert send(key, set=data, offset=0, length=n) == ERR.PUAT_REQUIRED
    no_lbw = key.client_pin(version).get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    param = lbw_param(no_lbw, version, 0, data)
    assert send(key, set=data, offset=0, length=n, param=param, protocol=version) == (
        ERR.PIN_AUTH_INVALID
    )
    token = key.client_pin(version).get_pin_token("1234", PERM.LARGE_BLOB_WRITE)
    wrong = lbw_param(token, version, 1, data)  # signed for another offset
    assert send(key, set=data, offset=0, length=n, param=wrong, protocol=version) == (
        ERR.PIN_AUTH_INVALID
    )
    assert send(key, set=data, offset=0, length=n, param=lbw_param(token, version, 0, data)) == (
        ERR.MISSING_PARAMETER
    )
    good = lbw_param(token, version, 0, data)
    assert send(key, set=data, offset=0, length=n, param=good, protocol=version) == 0
    assert lb.read_array(key.auth) == data
    # Reading never needs a token; python-fido2 with an lbw token writes too.
    assert LargeBlobs(key.ctap).read_blob_array() == [b"z"]
    pin_protocol = PROTOCOLS[version]()
    token = key.client_pin(version).get_pin_token("1234", PERM.LARGE_BLOB_WRITE)
    LargeBlobs(key.ctap, pin_protocol, token).write_blob_array([])
    assert LargeBlobs(key.ctap).read_blob_array() == []


def test_python_fido2_write_without_token_on_a_pin_key_is_refused() -> None:
    key = with_pin()
    assert status_of(LargeBlobs(key.ctap).write_blob_array, []) == ERR.PUAT_REQUIRED


def test_always_uv_without_a_pin_still_needs_a_token_to_write() -> None:
    # §6.10.2: "protected by some form of user verification, or alwaysUv is true" -> a write
    # needs pinUvAuthParam. A key with alwaysUv on and no PIN cannot give one: no write at all.
    from fido2.ctap2.config import Config

    key = new_key("ctap2.1")
    Config(key.ctap).toggle_always_uv()  # allowed without a PIN (§6.11)
    assert key.ctap.get_info().options["alwaysUv"] is True
    before = lb.read_array(key.auth)
    data = serialized(b"\x81\x41z")
    assert send(key, set=data, offset=0, length=len(data)) == ERR.PUAT_REQUIRED
    assert status_of(LargeBlobs(key.ctap).write_blob_array, []) == ERR.PUAT_REQUIRED
    assert lb.read_array(key.auth) == before
