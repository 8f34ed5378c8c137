"""Helpers for the PIN / credential-management / config / reset tests.

The platform side is python-fido2's own code (ClientPin, PinProtocolV1/V2, Ctap2), so a
test passing means an independent client agrees with the device, not that our code agrees
with itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocol, PinProtocolV1, PinProtocolV2

from softkey.authenticator import Authenticator, FakeClock
from softkey.authenticator.cbor import encode
from softkey.authenticator.profiles import Profile
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]
ERR = CtapError.ERR
PERM = ClientPin.PERMISSION
RP_ID = "example.com"
PROTOCOLS: dict[int, type[PinProtocol]] = {1: PinProtocolV1, 2: PinProtocolV2}


@dataclass
class Key:
    """One virtual key and a python-fido2 platform talking to it."""

    auth: Authenticator
    clock: FakeClock
    commands: list[int] = field(default_factory=list)

    @property
    def ctap(self) -> Ctap2:
        # A fresh Ctap2 re-reads getInfo, as a platform does after plugging in.
        return Ctap2(_RecordingDevice(self))

    def client_pin(self, version: int | None = None) -> ClientPin:
        protocol = PROTOCOLS[version]() if version is not None else None
        return ClientPin(self.ctap, protocol)

    def power_cycle(self) -> None:
        self.auth.power_cycle()


class _RecordingDevice(VirtualCtapDevice):
    """Remembers each CTAP2 command byte, to see which command a client picked."""

    def __init__(self, key: Key) -> None:
        super().__init__(key.auth)
        self._key = key

    def call(self, cmd, data=b"", event=None, on_keepalive=None):  # type: ignore[override]
        if data:
            self._key.commands.append(data[0])
        return super().call(cmd, data, event, on_keepalive)


def new_key(profile: str | Profile = "ctap2.1", **kw) -> Key:
    clock = kw.pop("clock", None) or FakeClock()
    return Key(Authenticator(profile, clock=clock, **kw), clock)


def with_pin(profile: str | Profile = "ctap2.1", pin: str = "1234", **kw) -> Key:
    key = new_key(profile, **kw)
    key.client_pin().set_pin(pin)
    return key


def status_of(fn, *args, **kwargs) -> int:
    """The CTAP status a python-fido2 call fails with (fails the test if it succeeds)."""
    try:
        fn(*args, **kwargs)
    except CtapError as exc:
        return exc.code
    raise AssertionError("expected a CTAP error, the call succeeded")


def raw(auth: Authenticator, command: int, params: dict | None = None) -> bytes:
    """Send a hand-built request (for inputs a well-behaved client never produces)."""
    return auth.handle_cbor(bytes([command]) + (encode(params) if params is not None else b""))


def make(
    key: Key,
    token: bytes | None = None,
    version: int = 2,
    *,
    rp: str = RP_ID,
    user: bytes = b"user",
    rk: bool = False,
    cdh: bytes | None = None,
    **kw,
):
    """makeCredential through Ctap2, with a pinUvAuthParam if a token is given."""
    cdh = cdh or os.urandom(32)
    if token is not None:
        kw["pin_uv_param"] = PROTOCOLS[version]().authenticate(token, cdh)
        kw["pin_uv_protocol"] = version
    return key.ctap.make_credential(
        cdh,
        {"id": rp, "name": rp.upper()},
        {"id": user, "name": user.decode(), "displayName": user.decode().title()},
        ES256,
        options={"rk": True} if rk else kw.pop("options", None),
        **kw,
    )


def assertion(
    key: Key,
    token: bytes | None = None,
    version: int = 2,
    *,
    rp: str = RP_ID,
    allow: list[bytes] | None = None,
    cdh: bytes | None = None,
    **kw,
):
    cdh = cdh or os.urandom(32)
    if token is not None:
        kw["pin_uv_param"] = PROTOCOLS[version]().authenticate(token, cdh)
        kw["pin_uv_protocol"] = version
    allow_list = [{"type": "public-key", "id": i} for i in allow] if allow else None
    return key.ctap.get_assertion(rp, cdh, allow_list, **kw)


def cred_id(attestation) -> bytes:
    return attestation.auth_data.credential_data.credential_id
