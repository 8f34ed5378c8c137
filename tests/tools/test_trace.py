"""Decoded traces: one line per request, the device's reason on failure, never a secret.

Requests are produced by python-fido2 (an independent client) through a recording device, so
the decoder is judged on the bytes real platforms send.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from fido2.ctap import CtapError as Fido2CtapError
from fido2.ctap2 import Ctap2
from fido2.hid import CTAPHID
from hypothesis import given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, FakeClock, cbor
from softkey.authenticator.ctap import Status
from softkey.authenticator.device import Outcome
from softkey.tools.trace import format_trace, format_u2f_trace, status_name
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]


class RecordingDevice(VirtualCtapDevice):
    """Keeps (request, response, outcome) of every CBOR exchange, as `softkey run` sees it."""

    def __init__(self, auth: Authenticator) -> None:
        super().__init__(auth)
        self.log: list[tuple[bytes, bytes, Any]] = []

    def call(self, cmd: int, data: bytes = b"", event=None, on_keepalive=None) -> bytes:
        response = super().call(cmd, data, event, on_keepalive)
        if cmd == CTAPHID.CBOR:
            self.log.append((bytes(data), response, self.authenticator.last_outcome))
        return response

    def lines(self) -> list[str]:
        return [format_trace(*entry) for entry in self.log]


@pytest.fixture
def recorded() -> tuple[Ctap2, RecordingDevice]:
    device = RecordingDevice(Authenticator("ctap2.1", clock=FakeClock()))
    return Ctap2(device), device


def _make(ctap: Ctap2, rk: bool = False, rp: str = "example.com") -> bytes:
    att = ctap.make_credential(
        os.urandom(32),
        {"id": rp, "name": "Example"},
        {"id": b"uid-1", "name": "alice", "displayName": "Alice"},
        ES256,
        options={"rk": True} if rk else None,
    )
    return att.auth_data.credential_data.credential_id


def test_make_credential_and_assertion_lines(recorded) -> None:
    ctap, device = recorded
    cred_id = _make(ctap, rk=True)
    ctap.get_assertion("example.com", os.urandom(32), [{"type": "public-key", "id": cred_id}])
    make_line, get_line = device.lines()[-2:]
    assert make_line.startswith("makeCredential rp=example.com user=alice algs=[-7]")
    assert "options={rk}" in make_line
    assert make_line.endswith(
        f"-> CTAP2_OK credential={cred_id[:4].hex()}…({len(cred_id)}B) fmt=packed"
    )
    assert get_line.startswith("getAssertion rp=example.com allowList=1")
    assert "-> CTAP2_OK" in get_line and "counter=1" in get_line


def test_failure_carries_the_devices_reason(recorded) -> None:
    ctap, device = recorded
    _make(ctap, rk=False)
    with pytest.raises(Fido2CtapError):
        ctap.get_assertion("example.com", os.urandom(32))
    line = device.lines()[-1]
    assert line.startswith("getAssertion rp=example.com allowList=0 -> ")
    assert (
        "-> CTAP2_ERR_NO_CREDENTIALS: empty allowList and no discoverable credential for "
        "example.com" in line
    )
    assert "send their IDs in allowCredentials" in line


def test_foreign_allow_list_is_counted_and_explained(recorded) -> None:
    ctap, device = recorded
    foreign = [{"type": "public-key", "id": os.urandom(60)} for _ in range(3)]
    with pytest.raises(Fido2CtapError):
        ctap.get_assertion("example.com", os.urandom(32), foreign, options={"up": False})
    line = device.lines()[-1]
    assert "allowList=3" in line and "options={up=false}" in line
    assert "none of the 3 credential IDs in allowList" in line


def test_get_info_line(recorded) -> None:
    _, device = recorded  # Ctap2() itself sends getInfo
    assert device.lines()[0].startswith("getInfo -> CTAP2_OK versions=U2F_V2,FIDO_2_0,")


def test_pin_material_never_appears() -> None:
    # Hand-built clientPIN/makeCredential requests carrying recognisable secret bytes.
    secret = bytes(range(0xA0, 0xC0))
    key_agreement = {1: 2, 3: -25, -1: 1, -2: secret, -3: secret}
    requests = [
        b"\x06" + cbor.encode({1: 2, 2: 3, 3: key_agreement, 4: secret[:16], 5: secret * 2}),
        b"\x06"
        + cbor.encode(
            {1: 2, 2: 4, 3: key_agreement, 4: secret[:16], 5: secret * 2, 6: secret[:16]}
        ),
        b"\x06"
        + cbor.encode({1: 2, 2: 9, 3: key_agreement, 6: secret[:16], 9: 3, 10: "example.com"}),
        b"\x01"
        + cbor.encode(
            {1: secret, 2: {"id": "example.com"}, 3: {"id": b"u"}, 4: ES256, 8: secret[:16], 9: 2}
        ),
        b"\x02"
        + cbor.encode(
            {
                1: "example.com",
                2: secret,
                6: secret[:16],
                7: 2,
                4: {"hmac-secret": {1: key_agreement, 2: secret, 3: secret}},
            }
        ),
    ]
    responses = [b"\x00", b"\x00", b"\x00" + cbor.encode({2: secret}), b"\x33", b"\x33"]
    for request, response in zip(requests, responses, strict=True):
        line = format_trace(request, response, None)
        for needle in (secret.hex(), secret[:16].hex(), secret[:4].hex(), repr(secret[:4])):
            assert needle not in line, line
    lines = [format_trace(r, s, None) for r, s in zip(requests, responses, strict=True)]
    assert lines[0] == "clientPIN setPIN protocol=2 -> CTAP2_OK"
    assert lines[1] == "clientPIN changePIN protocol=2 -> CTAP2_OK"
    assert lines[2] == (
        "clientPIN getPinUvAuthTokenUsingPinWithPermissions protocol=2 "
        "permissions=mc+ga rp=example.com -> CTAP2_OK token=issued"
    )
    assert "pinUvAuthParam=present(protocol 2)" in lines[3]
    assert lines[4].endswith(
        "ext=[hmac-secret] pinUvAuthParam=present(protocol 2) -> CTAP2_ERR_PIN_AUTH_INVALID"
    )


def test_hostile_text_stays_on_one_line() -> None:
    request = b"\x02" + cbor.encode(
        {1: "evil.com\nmakeCredential rp=bank.com -> CTAP2_OK", 2: b"\x00" * 32}
    )
    line = format_trace(request, b"\x2e", Outcome(2, Status.NO_CREDENTIALS, "bad\nreason"))
    assert "\n" not in line
    assert line.startswith("getAssertion rp='evil.com\\nmakeCredential")


def test_garbage_and_unknown_commands() -> None:
    assert format_trace(b"", b"\x03", None) == "<empty request> -> CTAP1_ERR_INVALID_LENGTH"
    assert format_trace(b"\x01\xff\x00", b"\x12", None) == (
        "makeCredential <2 bytes, not CBOR> -> CTAP2_ERR_INVALID_CBOR"
    )
    assert format_trace(b"\x01\x01", b"\x11", None).startswith(
        "makeCredential <parameters are not a CBOR map>"
    )
    assert format_trace(b"\x55", b"\x01", None) == "command 0x55 -> CTAP1_ERR_INVALID_COMMAND"
    assert format_trace(b"\x04", b"", None) == "getInfo -> <no response>"


def test_stale_outcome_reason_is_not_attached() -> None:
    stale = Outcome(0x01, Status.KEY_STORE_FULL, "all 25 slots are in use")
    line = format_trace(b"\x02" + cbor.encode({1: "a.com", 2: b"\0" * 32}), b"\x2e", stale)
    assert line.endswith("-> CTAP2_ERR_NO_CREDENTIALS")


def test_status_names_match_python_fido2() -> None:
    for err in Fido2CtapError.ERR:
        if err in (Fido2CtapError.ERR.SUCCESS,) or int(err) not in Status._value2member_map_:
            continue
        name = status_name(int(err))
        assert name.split("_ERR_", 1)[1] == err.name, (name, err.name)
    assert status_name(0x01) == "CTAP1_ERR_INVALID_COMMAND"
    assert status_name(0x7F) == "CTAP1_ERR_OTHER"
    assert status_name(0x28) == "CTAP2_ERR_KEY_STORE_FULL"
    assert status_name(0xEE) == "0xee"


def test_u2f_lines() -> None:
    apdu = bytes([0x00, 0x02, 0x07, 0x00, 0x00, 0x00, 0x00])
    assert format_u2f_trace(apdu, b"\x69\x85") == (
        "U2F_AUTHENTICATE p1=0x07 -> SW_CONDITIONS_NOT_SATISFIED"
    )
    assert format_u2f_trace(b"\x00", b"") == "<1-byte APDU> -> <no status word>"


@settings(max_examples=300, deadline=None)
@given(request=st.binary(max_size=300), response=st.binary(max_size=300))
def test_any_bytes_give_one_line_and_never_raise(request: bytes, response: bytes) -> None:
    line = format_trace(request, response, None)
    assert isinstance(line, str) and "\n" not in line and "->" in line


@settings(max_examples=100, deadline=None)
@given(rp=st.text(max_size=200), n=st.integers(min_value=0, max_value=20))
def test_well_formed_requests_with_any_rp_id(rp: str, n: int) -> None:
    allow = [{"type": "public-key", "id": bytes([i]) * 16} for i in range(n)]
    request = b"\x02" + cbor.encode({1: rp, 2: b"\0" * 32, 3: allow})
    line = format_trace(request, b"\x2e", None)
    assert "\n" not in line and f"allowList={n}" in line
