"""python-fido2's own HID client (``CtapHidDevice``) against our CTAPHID stack.

Every test runs twice: through the in-process connection (transports/inprocess.py) and over
real UDP sockets on 127.0.0.1 to a server thread (transports/udp.py). Both go through the
same engine (transports/ctaphid.py) and threaded driver (transports/server.py).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    MAX_MESSAGE_SIZE,
    Command,
    HidError,
    Message,
    fragment,
)
from softkey.transports.presence import WaitingPresence

ORIGIN = "https://example.com"
RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice", "displayName": "Alice"}
ES256 = [{"type": "public-key", "alg": -7}]

pytestmark = pytest.mark.parametrize("kind", ["inprocess", "udp"])


def _make(ctap: Ctap2, **kw: object) -> object:
    return ctap.make_credential(os.urandom(32), RP, USER, ES256, **kw)  # type: ignore[arg-type]


def test_ctap2_make_and_get_over_hid(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator("ctap2.1"))
    device = port.open_device()
    assert device.version == 2
    assert device.capabilities == 0x05  # WINK | CBOR
    ctap = Ctap2(device)
    assert "FIDO_2_1" in ctap.get_info().versions

    made = _make(ctap, options={"rk": True})
    credential = made.auth_data.credential_data
    client_data_hash = hashlib.sha256(b"login").digest()
    assertion = ctap.get_assertion(
        "example.com", client_data_hash, [{"type": "public-key", "id": credential.credential_id}]
    )
    assertion.verify(client_data_hash, credential.public_key)
    assert assertion.auth_data.is_user_present()
    assert [c.rp_id for c in port.auth.credentials()] == ["example.com"]
    device.wink()


def test_fido2_client_register_and_login(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator("yubikey-5"))
    client = Fido2Client(port.open_device(), DefaultClientDataCollector(ORIGIN))
    server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
    user = PublicKeyCredentialUserEntity(id=b"user-1", name="alice", display_name="Alice")

    options, state = server.register_begin(
        user,
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, registration)
    assert auth_data.credential_data is not None

    request, state = server.authenticate_begin(
        None, user_verification=UserVerificationRequirement.DISCOURAGED
    )
    selection = client.get_assertion(request.public_key)
    result = server.authenticate_complete(
        state, [auth_data.credential_data], selection.get_response(0)
    )
    assert result.credential_id == auth_data.credential_data.credential_id


def test_ping_of_7609_bytes_round_trips(kind: str, make_port: Callable) -> None:
    device = make_port(kind, Authenticator()).open_device()
    data = os.urandom(MAX_MESSAGE_SIZE)
    assert device.ping(data) == data
    assert device.ping(b"") == b""


def test_interleaved_channels_get_channel_busy(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator())
    a, b = port.raw(), port.raw()
    cid_a, cid_b = a.init(), b.init()
    data = os.urandom(300)
    long_ping = fragment(cid_a, Command.PING, data)
    a.write(long_ping[:2])  # A's transaction is open...
    a.sync()
    b.send(cid_b, Command.PING, b"hello")  # ...so B is told the device is busy
    assert b.read() == Message(cid_b, Command.ERROR, bytes([HidError.CHANNEL_BUSY]))
    a.write(long_ping[2:])
    assert a.read() == Message(cid_a, Command.PING, data)
    b.send(cid_b, Command.PING, b"hello")
    assert b.read() == Message(cid_b, Command.PING, b"hello")


def test_busy_while_another_channel_waits_for_a_touch(kind: str, make_port: Callable) -> None:
    presence = WaitingPresence(timeout=30)
    port = make_port(kind, Authenticator(presence=presence))
    ctap = Ctap2(port.open_device())
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(made=_make(ctap)))
    worker.start()
    assert presence.wait_for_request(10) is not None
    other = port.raw()
    cid = other.init()  # INIT is answered even while busy
    other.send(cid, Command.CBOR, b"\x04")
    assert other.read() == Message(cid, Command.ERROR, bytes([HidError.CHANNEL_BUSY]))
    assert presence.touch() is not None
    worker.join(10)
    assert result["made"].auth_data.is_user_present()  # type: ignore[attr-defined]
    other.send(cid, Command.CBOR, b"\x04")
    assert other.read().data[:1] == b"\x00"  # getInfo answers once the device is free


def test_stalled_continuation_times_out(kind: str, make_port: Callable) -> None:
    clock = FakeClock()
    port = make_port(kind, Authenticator(), clock=clock)
    host = port.raw()
    cid = host.init()
    reports = fragment(cid, Command.PING, os.urandom(200))
    host.write(reports[:2])
    host.sync()  # the packets were received at the fake clock's current time
    clock.advance(0.6)  # the driver's ticker notices on its next round
    assert host.read() == Message(cid, Command.ERROR, bytes([HidError.MSG_TIMEOUT]))
    host.write(reports[2:])  # too late: ignored
    host.send(cid, Command.PING, b"again")
    assert host.read() == Message(cid, Command.PING, b"again")


def test_cancel_during_presence_wait(kind: str, make_port: Callable) -> None:
    presence = WaitingPresence(timeout=30)
    port = make_port(kind, Authenticator(presence=presence))
    ctap = Ctap2(port.open_device())
    cancel = threading.Event()
    seen: list[STATUS] = []

    def on_keepalive(status: STATUS) -> None:
        seen.append(status)
        if status == STATUS.UPNEEDED:
            cancel.set()  # python-fido2 then sends CTAPHID_CANCEL

    with pytest.raises(CtapError) as excinfo:
        _make(ctap, event=cancel, on_keepalive=on_keepalive)
    assert excinfo.value.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert STATUS.UPNEEDED in seen
    assert presence.pending is None
    assert port.auth.credentials() == []
    # Not wedged: the next request works (and is approved this time).
    worker = threading.Thread(target=lambda: presence.touch(wait=10))
    worker.start()
    made = _make(ctap)
    worker.join(10)
    assert made.auth_data.is_user_present()


def test_keepalive_upneeded_then_touch(kind: str, make_port: Callable) -> None:
    presence = WaitingPresence(timeout=30)
    port = make_port(kind, Authenticator(presence=presence))
    ctap = Ctap2(port.open_device())
    seen: list[STATUS] = []

    def on_keepalive(status: STATUS) -> None:
        seen.append(status)
        if status == STATUS.UPNEEDED:
            threading.Thread(target=presence.touch).start()

    made = _make(ctap, on_keepalive=on_keepalive)
    assert STATUS.UPNEEDED in seen
    assert made.auth_data.is_user_present()


def test_denied_touch_is_operation_denied(kind: str, make_port: Callable) -> None:
    presence = WaitingPresence(timeout=30)
    port = make_port(kind, Authenticator(presence=presence))
    ctap = Ctap2(port.open_device())
    threading.Thread(target=lambda: presence.deny(wait=10)).start()
    with pytest.raises(CtapError) as excinfo:
        _make(ctap)
    assert excinfo.value.code == CtapError.ERR.OPERATION_DENIED


def test_power_cycle_keeps_credentials(kind: str, make_port: Callable) -> None:
    port = make_port(kind, Authenticator())
    ctap = Ctap2(port.open_device())
    made = _make(ctap, options={"rk": True})
    port.server.power_cycle(forget_channels=False)
    assertion = ctap.get_assertion("example.com", os.urandom(32))
    assert assertion.credential["id"] == made.auth_data.credential_data.credential_id


def test_broadcast_channel_only_takes_init(kind: str, make_port: Callable) -> None:
    host = make_port(kind, Authenticator()).raw()
    host.send(BROADCAST_CID, Command.PING, b"x")
    assert host.read() == Message(BROADCAST_CID, Command.ERROR, bytes([HidError.INVALID_CHANNEL]))
