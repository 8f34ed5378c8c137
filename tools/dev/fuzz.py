"""`make fuzz`: fuzz softkey's inputs for a fixed time and report cases tried and failures.

Every input any host can send is a target: CTAP2 messages (``Authenticator.handle_cbor``,
raw, or with a valid pinUvAuthParam the harness computes so that fuzzed credential
management, config, largeBlobs and PIN-protected requests get past authentication), U2F
APDUs (``handle_u2f``), CTAPHID report streams (the sans-IO engine with the authenticator
behind it) and /dev/uhid events (the struct uhid_event codec and the UHID device's event
handling). The first byte of a fuzz input picks the target and the simulated key (profile,
PIN or not, a person who touches or declines); the rest is the target's input.

After every case the harness checks the invariants of issue 8:

- no exception escapes, nothing is logged at ERROR (an internal error the device swallowed
  is a failure too: it would answer CTAP1_ERR_OTHER or SW 6F00);
- every CTAP2 reply is a spec status byte alone, or CTAP2_OK with canonical CBOR that
  python-fido2 parses (AttestationResponse, AssertionResponse, Info where they apply);
  every U2F reply ends in a U2F status word; every CTAPHID/UHID report has its exact size;
- the device still works: a fresh CTAPHID INIT is answered (CTAPHID and UHID targets);
- previously created credentials still assert: each simulated key holds a non-resident, a
  resident and a U2F credential made before fuzzing, and all three must still sign.

Engines: atheris (coverage-guided libFuzzer, if it is installed) or hypothesis (random
structure-aware mutations of the seed corpus, with shrinking); both use the same harness
and the same CBOR-aware mutator. The seed corpus holds valid requests of every kind.

    python -m softkey.tools.dev.fuzz --minutes 5            # what `make fuzz` runs
    python -m softkey.tools.dev.fuzz --seconds 30 --engine hypothesis
    python -m softkey.tools.dev.fuzz --replay FILE...       # re-run saved inputs (e.g. a crash)

A failure writes the input to build/fuzz/crashes/ and exits 1. tests/fuzz replays the seed
corpus and every file in tests/fuzz/regressions/ in the default test suite.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

from softkey.authenticator import (
    Authenticator,
    AutoPresence,
    FakeClock,
    FixedPresence,
    Status,
    Verdict,
)
from softkey.authenticator import cbor as ccbor
from softkey.authenticator.ctap import CtapError
from softkey.authenticator.environment import KEEPALIVE_UPNEEDED

ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = ROOT / "build" / "fuzz"
REGRESSIONS = ROOT / "tests" / "fuzz" / "regressions"

PRECIOUS_RP = "precious.example"
PRECIOUS_APP = hashlib.sha256(b"https://precious-u2f.example").digest()
PIN = "fuzz-pin-1234"
MAX_RESPONSE = 7609  # the largest CTAPHID message (CTAP 2.1 §11.2.4)
MAX_RESIDENT = 300  # rebuild a key that fuzzing filled beyond this (keeps cases fast)

# Placeholders the harness swaps for real values of the simulated key before a CTAP2
# request is sent, so fuzzed requests can name its credentials (which are random).
MARK_NR = b"\xf0\x0d" * 8  # -> the non-resident credential's ID
MARK_RK = b"\xfe\xed" * 8  # -> the resident credential's ID
MARK_RP_HASH = b"\xda\x7a" * 16  # -> SHA-256 of the precious RP ID
MARKS = (MARK_NR, MARK_RK, MARK_RP_HASH)


@unique
class Target(IntEnum):
    """Low 3 bits of a fuzz input's first byte."""

    CTAP2 = 0
    CTAP2_AUTHED = 1  # the harness adds a valid pinUvAuthParam where the command has one
    U2F = 2
    CTAPHID = 3
    UHID = 4


PROFILES = ("ctap2.1", "ctap2.1-pre", "ctap2.0", "yubikey-5")


@dataclass(frozen=True)
class WorldKind:
    profile: str
    pin: bool
    deny: bool  # the person declines every presence request

    @classmethod
    def from_byte(cls, selector: int) -> WorldKind:
        return cls(PROFILES[(selector >> 4) & 3], not selector & 0x08, bool(selector & 0x40))

    def byte(self, target: Target) -> int:
        return (
            int(target)
            | (0 if self.pin else 0x08)
            | (PROFILES.index(self.profile) << 4)
            | (0x40 if self.deny else 0)
        )


class FuzzFailure(AssertionError):
    """An invariant broke; ``data`` is the input that broke it."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


def _check(condition: object, message: str) -> None:
    if not condition:
        raise FuzzFailure(message)


# -- a simulated key with credentials that must survive ---------------------------------------


def _es256() -> list[dict[str, Any]]:
    return [{"type": "public-key", "alg": -7}]


class World:
    """One simulated key: an in-memory Authenticator, maybe with a PIN, and three
    credentials made before any fuzzing (non-resident, resident, U2F)."""

    def __init__(self, kind: WorldKind) -> None:
        self.kind = kind
        self.clock = FakeClock()
        self.auth = Authenticator(kind.profile, clock=self.clock, presence=AutoPresence())
        self.rk_user = os.urandom(16)
        self.nr_id = self._make(b"\x01", rk=False)
        self.rk_id = self._make(self.rk_user, rk=True)
        register = self.auth.handle_u2f(
            b"\x00\x01\x00\x00\x40" + os.urandom(32) + PRECIOUS_APP + b"\x00"
        )
        if register[-2:] != b"\x90\x00":
            raise RuntimeError(f"U2F register failed: {register[-2:].hex()}")
        handle_len = register[66]
        self.u2f_handle = register[67 : 67 + handle_len]
        if kind.pin:
            self.auth.set_pin(PIN)
        if kind.deny:
            self.auth.presence = FixedPresence(Verdict.DENIED)
        # Past the 10 s reset window: authenticatorReset is refused unless a fuzzed power
        # cycle reopens it (the harness notices a reset that succeeds).
        self.clock.advance(60)
        self._ctap: Any = None

    def _make(self, user: bytes, rk: bool) -> bytes:
        body: dict[int, Any] = {
            1: os.urandom(32),
            2: {"id": PRECIOUS_RP, "name": "Precious"},
            3: {"id": user, "name": "keeper", "displayName": "Keeper"},
            4: _es256(),
        }
        if rk:
            body[7] = {"rk": True}
        response = self.auth.handle_cbor(b"\x01" + ccbor.encode(body))
        if response[:1] != b"\x00":
            raise RuntimeError(f"could not make the precious credential: {response[0]:#x}")
        auth_data = ccbor.decode(response[1:])[2]
        (length,) = struct.unpack_from(">H", auth_data, 53)
        return bytes(auth_data[55 : 55 + length])

    # -- python-fido2 as the platform, for tokens ------------------------------------------

    def _client_pin(self, version: int | None) -> Any:
        from fido2.ctap2 import ClientPin, Ctap2
        from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2

        from softkey.transports.inprocess import VirtualCtapDevice

        if self._ctap is None:
            self._ctap = Ctap2(VirtualCtapDevice(self.auth))
        protocols = {1: PinProtocolV1, 2: PinProtocolV2}
        supported = self.auth.pin_uv.protocols()
        if version not in supported:
            version = max(supported)
        return ClientPin(self._ctap, protocols[version]())

    def token(self, permissions: int, rp_id: str | None, version: int | None) -> tuple[Any, bytes]:
        """(pin protocol, pinUvAuthToken) with ``permissions`` (python-fido2 ClientPin)."""
        from fido2.ctap2 import ClientPin

        client_pin = self._client_pin(version)
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION(permissions), rp_id)
        return client_pin.protocol, token

    # -- state the fuzzer may legitimately change -------------------------------------------

    def pin_healthy(self) -> bool:
        status = self.auth.pin_status()
        return (
            status["retries"] == self.auth.profile.pin_retries
            and not status["force_change"]
            and status["min_length"] <= len(PIN)
            and not self.auth.pin_uv.power_cycle_required
        )

    def needs_rebuild(self) -> bool:
        if self.auth.store.resident_count() > MAX_RESIDENT:
            return True
        # Each check walks the precious RP's discoverable credentials; keep that short.
        if len(self.auth.credentials(PRECIOUS_RP)) > 10:
            return True
        return self.kind.pin and not self.pin_healthy()

    def restore_always_uv(self) -> None:
        """alwaysUv (authenticatorConfig) legitimately hides credentials from requests
        without UV and switches U2F off: turn it back off before checking them."""
        if not self.auth.pin_uv.always_uv:
            return
        body: dict[int, Any] = {1: 0x02}
        if self.kind.pin:
            protocol, token = self.token(0x20, None, None)
            message = b"\xff" * 32 + b"\x0d\x02"
            body.update({3: protocol.VERSION, 4: protocol.authenticate(token, message)})
        response = self.auth.handle_cbor(b"\x0d" + ccbor.encode(body))
        _check(response == b"\x00", f"could not turn alwaysUv off again: {response.hex()}")
        _check(not self.auth.pin_uv.always_uv, "toggleAlwaysUv did not toggle")

    # -- the invariant: what was made before still works ------------------------------------

    def check_credentials(self) -> None:
        # up=false: a silent assertion needs no touch, so a declining person changes nothing.
        for allow, expected in ((self.nr_id, self.nr_id), (self.rk_id, self.rk_id)):
            response = self.auth.handle_cbor(
                b"\x02"
                + ccbor.encode(
                    {
                        1: PRECIOUS_RP,
                        2: os.urandom(32),
                        3: [{"type": "public-key", "id": allow}],
                        5: {"up": False},
                    }
                )
            )
            _check(
                response[:1] == b"\x00",
                f"a credential made before fuzzing no longer asserts: status {response[0]:#04x}",
            )
            _check(ccbor.decode(response[1:])[1]["id"] == expected, "wrong credential asserted")
        # The resident one is still discoverable (usernameless), among any others a fuzzed
        # makeCredential may have added for the same RP.
        response = self.auth.handle_cbor(
            b"\x02" + ccbor.encode({1: PRECIOUS_RP, 2: os.urandom(32), 5: {"up": False}})
        )
        _check(response[:1] == b"\x00", f"the resident credential is gone: {response[0]:#04x}")
        body = ccbor.decode(response[1:])
        found = {body[1]["id"]: body[4]["id"]}
        for _ in range(body.get(5, 1) - 1):
            response = self.auth.handle_cbor(b"\x08")
            _check(response[:1] == b"\x00", f"getNextAssertion failed: {response[0]:#04x}")
            body = ccbor.decode(response[1:])
            found[body[1]["id"]] = body[4]["id"]
        _check(self.rk_id in found, "usernameless login no longer finds the resident credential")
        _check(found[self.rk_id] == self.rk_user, "the resident credential lost its user handle")
        # The U2F registration still authenticates (dont-enforce-user-presence-and-sign).
        data = os.urandom(32) + PRECIOUS_APP + bytes([len(self.u2f_handle)]) + self.u2f_handle
        response = self.auth.handle_u2f(b"\x00\x02\x08\x00" + bytes([len(data)]) + data)
        _check(response[-2:] == b"\x90\x00", f"U2F authenticate failed: {response[-2:].hex()}")


# -- checks on replies ----------------------------------------------------------------------

SPEC_STATUSES = frozenset(s.value for s in Status) - {Status.OTHER}
U2F_STATUS_WORDS = frozenset({0x9000, 0x6985, 0x6986, 0x6A80, 0x6700, 0x6E00, 0x6D00})


def check_ctap2_reply(request: bytes, response: bytes) -> None:
    """A spec status alone, or success with canonical CBOR python-fido2 can parse."""
    from fido2 import cbor as fcbor
    from fido2.ctap2 import AssertionResponse, AttestationResponse, Info

    _check(response, "empty CTAP2 response")
    _check(len(response) <= MAX_RESPONSE, f"response of {len(response)} bytes exceeds CTAPHID")
    status = response[0]
    if status != 0:
        _check(status in SPEC_STATUSES, f"status {status:#04x} is not a CTAP status (or OTHER)")
        _check(len(response) == 1, f"error status {status:#04x} with a body")
        return
    if len(response) == 1:
        return
    body = response[1:]
    try:
        ours = ccbor.decode(body)
    except CtapError:
        raise FuzzFailure("success response is not canonical CTAP2 CBOR") from None
    _check(isinstance(ours, dict), "success response body is not a CBOR map")
    decoded: Any = fcbor.decode(body)
    _check(fcbor.encode(decoded) == body, "success response is not canonically encoded")
    command = request[0] if request else -1
    try:
        if command == 0x01:
            AttestationResponse.from_dict(decoded)
        elif command in (0x02, 0x08):
            AssertionResponse.from_dict(decoded)
        elif command == 0x04:
            Info.from_dict(decoded)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
        raise FuzzFailure(f"python-fido2 cannot parse the response: {exc!r}") from None


def check_u2f_reply(response: bytes) -> None:
    _check(len(response) >= 2, "U2F response without a status word")
    sw = int.from_bytes(response[-2:], "big")
    _check(sw in U2F_STATUS_WORDS, f"U2F status word {sw:#06x} (6F00 is an internal error)")
    if sw != 0x9000:
        _check(len(response) == 2, f"U2F error {sw:#06x} with data")


class _ErrorLog(logging.Handler):
    """Collects ERROR records from softkey's loggers (swallowed internal errors)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_ERRORS = _ErrorLog()


# -- the harness -------------------------------------------------------------------------------


def _substitute(value: Any, world: World) -> Any:
    if isinstance(value, bytes):
        return {MARK_NR: world.nr_id, MARK_RK: world.rk_id}.get(
            value, hashlib.sha256(PRECIOUS_RP.encode()).digest() if value == MARK_RP_HASH else value
        )
    if isinstance(value, dict):
        return {k: _substitute(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, world) for v in value]
    return value


def _int(params: dict, key: int) -> int | None:
    value = params.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hmac_secret_inputs(world: World, command: int, params: dict) -> dict:
    """Make hmac-secret(-mc) inputs decryptable: a real keyAgreement with the key, the
    fuzzed saltEnc bytes encrypted as the salts, and a valid saltAuth (CTAP 2.1 §12.5), so
    the fuzzer reaches the salt checks and outputs instead of stopping at saltAuth."""
    extensions_key = {0x01: 6, 0x02: 4}.get(command)
    extensions = params.get(extensions_key) if extensions_key else None
    name = "hmac-secret-mc" if command == 0x01 else "hmac-secret"
    if not isinstance(extensions, dict) or not isinstance(extensions.get(name), dict):
        return params
    given = extensions[name]
    salts = given.get(2)
    if not isinstance(salts, bytes):
        return params
    client_pin = world._client_pin(_int(given, 4))
    key_agreement, shared = client_pin._get_shared_secret()
    protocol = client_pin.protocol
    salts = salts[:64].ljust(-(-len(salts[:64]) // 16) * 16 or 16, b"\0")
    salt_enc = protocol.encrypt(shared, salts)
    value = {
        **given,
        1: key_agreement,
        2: salt_enc,
        3: protocol.authenticate(shared, salt_enc),
        4: protocol.VERSION,
    }
    return {**params, extensions_key: {**extensions, name: value}}


def _authenticate(world: World, command: int, params: dict) -> dict:
    """Add a valid pinUvAuthParam for this command, if it has one and the key a PIN."""
    if not world.kind.pin:
        return params
    mc_ga = {0x01: (2, 1, 8, 9), 0x02: (1, 2, 6, 7)}
    if command in mc_ga:
        rp_key, cdh_key, param_key, protocol_key = mc_ga[command]
        rp = params.get(rp_key)
        rp_id = rp.get("id") if isinstance(rp, dict) else rp
        cdh = params.get(cdh_key)
        if not isinstance(rp_id, str) or not isinstance(cdh, bytes):
            return params
        protocol, token = world.token(0x03, rp_id, _int(params, protocol_key))
        return {
            **params,
            param_key: protocol.authenticate(token, cdh),
            protocol_key: protocol.VERSION,
        }
    if command in (0x0A, 0x41, 0x0D):
        sub = _int(params, 1)
        if sub is None or not 0 <= sub <= 0xFF:
            return params
        sub_params = params.get(2)
        try:
            encoded = ccbor.encode(sub_params) if sub_params is not None else b""
        except (TypeError, ValueError):
            return params
        if command == 0x0D:
            message = b"\xff" * 32 + bytes([0x0D, sub]) + encoded
        else:
            message = bytes([sub]) + encoded
        protocol, token = world.token(0x04 | 0x10 | 0x20, None, _int(params, 3))
        return {**params, 3: protocol.VERSION, 4: protocol.authenticate(token, message)}
    if command == 0x0C:
        fragment, offset = params.get(2), _int(params, 3)
        if not isinstance(fragment, bytes) or offset is None or not 0 <= offset < 2**32:
            return params
        message = (
            b"\xff" * 32
            + b"\x0c\x00"
            + struct.pack("<I", offset)
            + hashlib.sha256(fragment).digest()
        )
        protocol, token = world.token(0x10, None, _int(params, 6))
        return {**params, 5: protocol.authenticate(token, message), 6: protocol.VERSION}
    return params


@dataclass
class CaseResult:
    target: Target
    kind: WorldKind
    detail: str = ""
    status: int | None = None


@dataclass
class Harness:
    """Runs fuzz inputs against simulated keys and checks the invariants after each."""

    worlds: dict[WorldKind, World] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    rebuilds: int = 0
    last_status: int | None = None  # of the last CTAP2 request or U2F APDU (diagnostics)

    def __post_init__(self) -> None:
        # One collector on softkey's logger for all harnesses (cases run one at a time);
        # records still propagate, so pytest's caplog and a configured root logger see them.
        self._errors = _ERRORS
        logger = logging.getLogger("softkey")
        if _ERRORS not in logger.handlers:
            logger.addHandler(_ERRORS)

    def world(self, kind: WorldKind) -> World:
        world = self.worlds.get(kind)
        if world is None:
            world = self.worlds[kind] = World(kind)
        return world

    def run(self, data: bytes) -> CaseResult:
        """One fuzz case; raises FuzzFailure (with ``data``) when an invariant breaks."""
        if not data:
            return CaseResult(Target.CTAP2, WorldKind(PROFILES[0], True, False), "empty")
        selector, body = data[0], data[1:]
        target = Target(selector & 0x07) if selector & 0x07 <= max(Target) else Target.CTAP2
        kind = WorldKind.from_byte(selector)
        world = self.world(kind)
        self._errors.records.clear()
        self.last_status = None
        result = CaseResult(target, kind)
        try:
            legit_loss = self._dispatch(target, world, body)
            self._raise_logged_errors()
            if legit_loss:
                result.detail = legit_loss
            else:
                world.restore_always_uv()
                world.check_credentials()
            self._raise_logged_errors()
        except FuzzFailure as exc:
            self.worlds.pop(kind, None)
            message = str(exc)
            if self._errors.records and "internal error logged" not in message:
                message = f"{self._logged()}\n(then: {message})"
            raise FuzzFailure(f"[{target.name} on {kind}] {message}", data) from None
        except Exception as exc:
            self.worlds.pop(kind, None)
            raise FuzzFailure(
                f"[{target.name} on {kind}] exception escaped: {exc!r}\n{traceback.format_exc()}",
                data,
            ) from None
        self.counts[target.name] += 1
        result.status = self.last_status
        if legit_loss or world.needs_rebuild():
            self.worlds.pop(kind, None)
            self.rebuilds += 1
        return result

    def _logged(self) -> str:
        record = self._errors.records[0]
        text = f"internal error logged: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        return text

    def _raise_logged_errors(self) -> None:
        if self._errors.records:
            raise FuzzFailure(self._logged())

    def _dispatch(self, target: Target, world: World, body: bytes) -> str:
        """Run the target; returns a reason if the case legitimately destroyed the
        credentials (a successful reset or credential deletion), else ''."""
        if target in (Target.CTAP2, Target.CTAP2_AUTHED):
            return self._ctap2(world, body, authed=target == Target.CTAP2_AUTHED)
        if target == Target.U2F:
            self._u2f(world, body)
            return ""
        if target == Target.CTAPHID:
            return self._ctaphid(world, body)
        self._uhid(world, body)
        return ""

    # -- CTAP2 ------------------------------------------------------------------------------

    def _ctap2(self, world: World, body: bytes, authed: bool) -> str:
        request = body
        if len(body) > 1:
            try:
                params = ccbor.decode(body[1:])
            except CtapError:
                params = None
            if isinstance(params, dict):
                params = _substitute(params, world)
                if authed:
                    params = _hmac_secret_inputs(world, body[0], params)
                    params = _authenticate(world, body[0], params)
                request = body[:1] + ccbor.encode(params)
        response = world.auth.handle_cbor(request)
        self.last_status = response[0]
        check_ctap2_reply(request, response)
        return _legit_loss(world, request, response)

    # -- U2F --------------------------------------------------------------------------------

    def _u2f(self, world: World, body: bytes) -> None:
        apdu = body[1:]
        if body[:1] and body[0] & 1:
            apdu = _structured_apdu(world, body[1:])
        response = world.auth.handle_u2f(apdu)
        self.last_status = int.from_bytes(response[-2:], "big")
        check_u2f_reply(response)
        if response[-2:] == b"\x90\x00" and apdu[1:2] == b"\x03":
            _check(response[:-2] == b"U2F_V2", "U2F VERSION is not U2F_V2")

    # -- CTAPHID ----------------------------------------------------------------------------

    def _ctaphid(self, world: World, body: bytes) -> str:
        driver = _HidDriver(world)
        driver.play(body)
        return driver.finish()

    # -- UHID -------------------------------------------------------------------------------

    def _uhid(self, world: World, body: bytes) -> None:
        _uhid_case(world, body)


def _legit_loss(world: World, request: bytes, response: bytes) -> str:
    """Why the precious credentials may be gone after this exchange ('' if they may not)."""
    if response[:1] != b"\x00" or not request:
        return ""
    if request[0] == 0x07:
        return "authenticatorReset succeeded"
    if request[0] in (0x0A, 0x41) and (world.auth.store.get_resident(world.rk_id) is None):
        return "the resident credential was deleted through credential management"
    return ""


def _structured_apdu(world: World, raw: bytes) -> bytes:
    """A well-formed APDU from fuzz bytes: cla ins p1 p2 flags, then data material.

    flags bit 0: extended length encoding; bit 1: use the key's U2F application and key
    handle; bit 2: append Le."""
    raw = raw.ljust(5, b"\0")
    cla, ins, p1, p2, flags = raw[:5]
    material = raw[5:]
    if flags & 2:
        challenge = material[:32].ljust(32, b"\0")
        data = challenge + PRECIOUS_APP + bytes([len(world.u2f_handle)]) + world.u2f_handle
    else:
        data = material
    header = bytes([cla, ins, p1, p2])
    if flags & 1:
        apdu = header + b"\x00" + struct.pack(">H", len(data) & 0xFFFF) + data
        if flags & 4:
            apdu += b"\x00\x00"
    else:
        data = data[:255]
        apdu = header + (bytes([len(data)]) + data if data else b"")
        if flags & 4:
            apdu += b"\x00"
    return apdu


class _Interaction:
    def __init__(self, request: Any) -> None:
        self.request = request

    def keepalive(self, status: int) -> None:
        return None

    def cancelled(self) -> bool:
        return bool(self.request.cancelled)


class _HidDriver:
    """Runs the CTAPHID engine synchronously over a byte program (see ``play``)."""

    KNOWN = (0x01020304, 0x0A0B0C0D)

    def __init__(self, world: World) -> None:
        from softkey.transports.ctaphid import BROADCAST_CID, Command, CtapHidEngine, fragment

        self.world = world
        self.now = 0.0
        self.pending: Any = None
        self.out: list[bytes] = []
        self.loss = ""
        queue = [struct.pack(">I", cid) for cid in self.KNOWN]

        def channel_ids(n: int) -> bytes:
            return queue.pop(0) if queue else os.urandom(n)

        self.engine = CtapHidEngine(random=channel_ids)
        for _ in self.KNOWN:
            self.receive(fragment(BROADCAST_CID, Command.INIT, os.urandom(8))[0])
        self.out.clear()

    def receive(self, report: bytes) -> None:
        result = self.engine.receive(report, self.now)
        self.out += result.reports
        if result.request is not None:
            _check(self.pending is None, "the engine started a second request at once")
            self.pending = result.request

    def complete(self) -> None:
        from softkey.transports.ctaphid import Command

        request, self.pending = self.pending, None
        if request is None:
            return
        auth = self.world.auth
        if request.abandoned:  # as transports/server.py: never run, the answer is dropped
            response = b""
        elif request.command == Command.CBOR:
            response = auth.handle_cbor(request.payload, _Interaction(request))
            check_ctap2_reply(request.payload, response)
            self.loss = self.loss or _legit_loss(self.world, request.payload, response)
        elif request.command == Command.MSG:
            response = auth.handle_u2f(request.payload, _Interaction(request))
            check_u2f_reply(response)
        else:
            response = b""
        self.out += self.engine.complete(request, response, self.now)

    def play(self, program: bytes) -> None:
        """Opcodes (low 3 bits of each byte), each followed by its operands:
        0 raw report (64 bytes) · 1 whole message (channel, command, 2-byte length, data)
        · 2 execute the pending request · 3 INIT (channel) · 4 time passes (1/100 s units)
        · 5 KEEPALIVE(UPNEEDED) · 6 power cycle · 7 continuation (channel, seq, 59 bytes)."""
        from softkey.transports.ctaphid import BROADCAST_CID, INIT_DATA, MAX_MESSAGE_SIZE, fragment

        channels = (*self.KNOWN, BROADCAST_CID, 0)
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            chunk = program[pos : pos + n]
            pos += n
            return chunk

        while pos < len(program):
            op = program[pos] & 7
            pos += 1
            if op == 0:
                self.receive(take(64))
            elif op == 1:
                head = take(4).ljust(4, b"\0")
                cid = channels[head[0] % len(channels)]
                length = min(struct.unpack(">H", head[2:4])[0], MAX_MESSAGE_SIZE, 2048)
                for report in fragment(cid, head[1] & 0x7F, take(length)):
                    self.receive(report)
            elif op == 2:
                self.complete()
            elif op == 3:
                cid = channels[take(1).ljust(1, b"\0")[0] % len(channels)]
                self.receive(fragment(cid, 0x06, os.urandom(8))[0])
            elif op == 4:
                self.now += take(1).ljust(1, b"\0")[0] / 100
                self.out += self.engine.tick(self.now)
            elif op == 5 and self.pending is not None:
                self.out += self.engine.keepalive(self.pending, KEEPALIVE_UPNEEDED, self.now)
            elif op == 6:  # the engine abandons the pending request; it still completes
                self.engine.abort()
                self.world.auth.power_cycle()
            elif op == 7:
                head = take(2).ljust(2, b"\0")
                cid = channels[head[0] % len(channels)]
                payload = take(64 - 5)
                self.receive((struct.pack(">IB", cid, head[1] & 0x7F) + payload).ljust(64, b"\0"))
            _ = INIT_DATA

    def finish(self) -> str:
        from softkey.transports.ctaphid import (
            BROADCAST_CID,
            REPORT_SIZE,
            Command,
            MessageReader,
            fragment,
        )

        _check(all(len(r) == REPORT_SIZE for r in self.out), "a report is not 64 bytes")
        self.complete()
        # Past any message timeout and CTAPHID_LOCK (at most 10 s, §11.2.9.2.2).
        self.now += 11
        self.engine.tick(self.now)
        self.out.clear()
        nonce = os.urandom(8)
        for report in fragment(BROADCAST_CID, Command.INIT, nonce):
            self.receive(report)
        init = [m for m in MessageReader().feed_all(self.out) if m.cid == BROADCAST_CID]
        _check(
            len(init) == 1 and init[0].cmd == Command.INIT and init[0].data[:8] == nonce,
            "a fresh INIT is not answered",
        )
        (cid,) = struct.unpack_from(">I", init[0].data, 8)
        self.out.clear()
        for report in fragment(cid, Command.PING, b"still alive"):
            self.receive(report)
        replies = MessageReader().feed_all(self.out)
        _check(
            [(m.cid, m.cmd, m.data) for m in replies] == [(cid, Command.PING, b"still alive")],
            "the new channel does not answer PING",
        )
        return self.loss


def _uhid_case(world: World, body: bytes) -> None:
    """Feed /dev/uhid events to a UhidDevice on a socketpair (the kernel's end); afterwards
    an INIT must still be answered with an INPUT2 event."""
    from softkey.transports import uhid
    from softkey.transports.ctaphid import BROADCAST_CID, Command, MessageReader, fragment

    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    kernel.setblocking(False)
    device = uhid.UhidDevice(ours.fileno(), world.auth)
    # Plugged but with the driver threads stopped: events are handled here, synchronously;
    # CBOR/MSG requests are queued and never run (the CTAPHID target executes requests).
    device.plugged = True
    try:
        pos = 0
        while pos < len(body):
            (length,) = struct.unpack(">H", body[pos : pos + 2].ljust(2, b"\0"))
            raw = body[pos + 2 : pos + 2 + min(length, uhid.EVENT_SIZE + 16)]
            pos += 2 + len(raw)
            try:
                event = uhid.decode_event(raw)
            except ValueError:
                _check(len(raw) < 4, f"decode_event refused a {len(raw)}-byte event")
                continue
            _check(isinstance(event, uhid.UhidEvent), "decode_event returned no event")
            device.handle_event(event)
        _drain(kernel)
        nonce = os.urandom(8)
        device.handle_event(
            uhid.decode_event(
                uhid.encode_output(b"\0" + fragment(BROADCAST_CID, Command.INIT, nonce)[0])
            )
        )
        events = [uhid.decode_event(raw) for raw in _drain(kernel)]
        inputs = [e.data for e in events if e.type == uhid.EventType.INPUT2]
        init = MessageReader().feed_all(inputs)
        _check(
            len(init) == 1 and init[0].cmd == Command.INIT and init[0].data[:8] == nonce,
            "the UHID device does not answer INIT",
        )
    finally:
        device.plugged = False  # no DESTROY event: the kernel end closes below
        device.server.close()
        for fd in (device._wake_r, device._wake_w):
            os.close(fd)
        ours.close()
        kernel.close()


def _drain(kernel: socket.socket) -> list[bytes]:
    from softkey.transports import uhid

    events: list[bytes] = []
    while True:
        try:
            raw = kernel.recv(8192)
        except BlockingIOError:
            return events
        _check(len(raw) == uhid.EVENT_SIZE, f"the device wrote a {len(raw)}-byte UHID event")
        events.append(raw)


# -- seeds ------------------------------------------------------------------------------------


def _pin_key_agreement() -> dict[int, Any]:
    """A valid platform COSE key (P-256) for clientPIN seeds."""
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {
        1: 2,
        3: -25,
        -1: 1,
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def seed_corpus() -> dict[str, bytes]:
    """Valid requests of every kind, each prefixed with its target/world byte."""
    cdh = bytes(range(32))
    rp = {"id": "example.com", "name": "Example"}
    user = {"id": b"user-1", "name": "alice", "displayName": "Alice"}
    params = [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}]
    ka = _pin_key_agreement()
    ctap2: dict[str, tuple[int, dict | None]] = {
        "getInfo": (0x04, None),
        "mc": (0x01, {1: cdh, 2: rp, 3: user, 4: params}),
        "mc-rk": (0x01, {1: cdh, 2: rp, 3: user, 4: params, 7: {"rk": True}}),
        "mc-exclude": (
            0x01,
            {
                1: cdh,
                2: {"id": PRECIOUS_RP},
                3: user,
                4: params,
                5: [{"type": "public-key", "id": MARK_NR}],
            },
        ),
        "mc-extensions": (
            0x01,
            {
                1: cdh,
                2: rp,
                3: user,
                4: params,
                6: {
                    "credProtect": 2,
                    "hmac-secret": True,
                    "credBlob": b"blob",
                    "largeBlobKey": True,
                    "minPinLength": True,
                },
                7: {"rk": True},
            },
        ),
        "mc-hmac-secret-mc": (
            0x01,
            {
                1: cdh,
                2: rp,
                3: user,
                4: params,
                6: {"hmac-secret": True, "hmac-secret-mc": {1: ka, 2: bytes(32), 3: bytes(32)}},
            },
        ),
        "mc-enterprise": (0x01, {1: cdh, 2: rp, 3: user, 4: params, 0x0A: 1, 0x0B: ["none"]}),
        "ga": (0x02, {1: "example.com", 2: cdh}),
        "ga-allow": (0x02, {1: PRECIOUS_RP, 2: cdh, 3: [{"type": "public-key", "id": MARK_NR}]}),
        "ga-rk": (0x02, {1: PRECIOUS_RP, 2: cdh, 3: [{"type": "public-key", "id": MARK_RK}]}),
        "ga-silent": (0x02, {1: PRECIOUS_RP, 2: cdh, 5: {"up": False}}),
        "ga-extensions": (
            0x02,
            {
                1: PRECIOUS_RP,
                2: cdh,
                4: {
                    "hmac-secret": {1: ka, 2: bytes(32), 3: bytes(16), 4: 2},
                    "credBlob": True,
                    "largeBlobKey": True,
                },
            },
        ),
        "getNextAssertion": (0x08, None),
        "pin-retries": (0x06, {1: 2, 2: 1}),
        "pin-key-agreement": (0x06, {1: 2, 2: 2}),
        "pin-set": (0x06, {1: 2, 2: 3, 3: ka, 4: bytes(32), 5: bytes(80)}),
        "pin-change": (0x06, {1: 1, 2: 4, 3: ka, 4: bytes(16), 5: bytes(64), 6: bytes(16)}),
        "pin-token": (0x06, {1: 2, 2: 5, 3: ka, 6: bytes(32)}),
        "pin-token-perms": (
            0x06,
            {1: 2, 2: 9, 3: ka, 6: bytes(32), 9: 0x07, 10: "example.com"},
        ),
        "uv-retries": (0x06, {1: 2, 2: 7}),
        "credman-metadata": (0x0A, {1: 1}),
        "credman-rps": (0x0A, {1: 2}),
        "credman-next-rp": (0x0A, {1: 3}),
        "credman-creds": (0x0A, {1: 4, 2: {1: MARK_RP_HASH}}),
        "credman-next-cred": (0x0A, {1: 5}),
        "credman-delete": (0x0A, {1: 6, 2: {2: {"type": "public-key", "id": MARK_NR}}}),
        "credman-delete-rk": (0x0A, {1: 6, 2: {2: {"type": "public-key", "id": MARK_RK}}}),
        "credman-update": (
            0x0A,
            {1: 7, 2: {2: {"type": "public-key", "id": MARK_RK}, 3: {"id": b"x", "name": "n"}}},
        ),
        "credman-preview": (0x41, {1: 1}),
        "config-always-uv": (0x0D, {1: 2}),
        "config-min-pin": (0x0D, {1: 3, 2: {1: 4, 2: ["example.com"], 3: False}}),
        "config-enterprise": (0x0D, {1: 1}),
        "config-vendor": (0x0D, {1: 0xFF}),
        "large-blobs-get": (0x0C, {1: 64, 3: 0}),
        "large-blobs-set": (
            0x0C,
            {2: bytes(17) + hashlib.sha256(bytes(17)).digest()[:16], 3: 0, 4: 33},
        ),
        "selection": (0x0B, None),
        "reset": (0x07, None),
    }
    seeds: dict[str, bytes] = {}
    pin_world = WorldKind("ctap2.1", True, False)
    for name, (command, body) in ctap2.items():
        request = bytes([command]) + (ccbor.encode(body) if body is not None else b"")
        seeds[f"ctap2-{name}"] = bytes([pin_world.byte(Target.CTAP2)]) + request
        seeds[f"authed-{name}"] = bytes([pin_world.byte(Target.CTAP2_AUTHED)]) + request
    for i, profile in enumerate(PROFILES[1:]):
        kind = WorldKind(profile, bool(i % 2), False)
        seeds[f"ctap2-mc-{profile}"] = (
            bytes([kind.byte(Target.CTAP2)]) + b"\x01" + ccbor.encode(ctap2["mc-rk"][1])
        )
    nopin = WorldKind("ctap2.1", False, False)
    seeds["ctap2-nopin-config"] = bytes([nopin.byte(Target.CTAP2)]) + b"\x0d" + ccbor.encode({1: 2})
    deny = WorldKind("ctap2.1", True, True)
    seeds["ctap2-deny-mc"] = (
        bytes([deny.byte(Target.CTAP2)]) + b"\x01" + ccbor.encode(ctap2["mc"][1])
    )

    u2f = bytes([pin_world.byte(Target.U2F)])
    register = b"\x00\x01\x03\x00\x40" + bytes(32) + PRECIOUS_APP
    seeds["u2f-version"] = u2f + b"\x00" + b"\x00\x03\x00\x00"
    seeds["u2f-version-extended"] = u2f + b"\x00" + b"\x00\x03\x00\x00\x00\x00\x00"
    seeds["u2f-register"] = u2f + b"\x00" + register + b"\x00"
    seeds["u2f-register-extended"] = (
        u2f + b"\x00" + b"\x00\x01\x03\x00\x00\x00\x40" + bytes(32) + PRECIOUS_APP + b"\x00\x00"
    )
    for p1 in (0x03, 0x07, 0x08):
        seeds[f"u2f-authenticate-{p1:02x}"] = (
            u2f + b"\x01" + bytes([0, 2, p1, 0, 2 | 4]) + bytes(32)
        )
    seeds["u2f-authenticate-extended"] = u2f + b"\x01" + bytes([0, 2, 3, 0, 1 | 2 | 4])

    from softkey.transports.ctaphid import Command

    hid = bytes([pin_world.byte(Target.CTAPHID)])

    def message(channel: int, command: int, data: bytes) -> bytes:
        return bytes([1, channel, command]) + struct.pack(">H", len(data)) + data

    getinfo = message(0, Command.CBOR, b"\x04")
    ga = b"\x02" + ccbor.encode({1: "example.com", 2: cdh})
    seeds["hid-init-ping"] = hid + bytes([3, 0]) + message(0, Command.PING, b"hello" * 30)
    seeds["hid-getinfo"] = hid + getinfo + b"\x02"
    seeds["hid-ga-keepalive-cancel"] = (
        hid
        + message(1, Command.CBOR, ga)
        + b"\x05\x04\x20"
        + message(1, Command.CANCEL, b"")
        + b"\x02"
    )
    seeds["hid-u2f-version"] = hid + message(0, Command.MSG, b"\x00\x03\x00\x00") + b"\x02"
    seeds["hid-wink-lock"] = (
        hid + message(0, Command.WINK, b"") + b"\x02" + message(0, Command.LOCK, b"\x05")
    )
    seeds["hid-fragmented"] = (
        hid + message(0, Command.PING, bytes(200)) + b"\x07\x00\x05" + bytes(59) + b"\x04\x60"
    )
    seeds["hid-power-cycle-reset"] = hid + b"\x06" + message(0, Command.CBOR, b"\x07") + b"\x02"

    from softkey.transports import uhid

    def event(raw: bytes) -> bytes:
        return struct.pack(">H", len(raw)) + raw

    uhid_byte = bytes([pin_world.byte(Target.UHID)])
    init_report = b"\xff\xff\xff\xff\x86\x00\x08" + bytes(8)
    seeds["uhid-start-open-output"] = (
        uhid_byte
        + event(uhid.encode_start(0))
        + event(uhid.encode_simple(uhid.EventType.OPEN))
        + event(uhid.encode_output(b"\0" + init_report.ljust(64, b"\0")))
    )
    seeds["uhid-reports"] = (
        uhid_byte
        + event(uhid.encode_get_report(7, 0, uhid.ReportType.FEATURE))
        + event(uhid.encode_set_report(8, 0, uhid.ReportType.FEATURE, b"abc"))
        + event(uhid.encode_simple(uhid.EventType.CLOSE))
        + event(uhid.encode_output(b"\0" * 65, rtype=uhid.ReportType.FEATURE))
    )
    seeds["uhid-short"] = uhid_byte + event(b"\x06\x00") + event(uhid.encode_output(b"")[:4104])
    return seeds


def write_corpus(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seed_corpus().items():
        (directory / f"seed-{name}").write_bytes(data)
    return len(seed_corpus())


def regression_inputs() -> dict[str, bytes]:
    if not REGRESSIONS.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(REGRESSIONS.iterdir()) if p.is_file()}


# -- the structure-aware mutator ------------------------------------------------------------------

_INTERESTING: list[Any] = [
    0, 1, -1, 2, 3, 7, 8, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, -(2**63),
    True, False, None, b"", bytes(16), bytes(32), bytes(64), b"\xff" * 300, "", "public-key",
    "example.com", "rk", "up", "uv", "credProtect", "hmac-secret", "hmac-secret-mc", "credBlob",
    "largeBlobKey", "minPinLength", "none", "packed", "id", "name", "displayName", "type",
    "alg", [], {}, MARK_NR, MARK_RK, MARK_RP_HASH, -7, -8, -35, -25, "x" * 300,
]  # fmt: skip


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.45:
        # A copy: mutations edit containers in place, and [] or {} from the shared list
        # would otherwise grow (even into themselves) across cases.
        return copy.deepcopy(rng.choice(_INTERESTING))
    if roll < 0.6:
        return rng.randint(-(2**64) + 1, 2**64 - 1) if rng.random() < 0.2 else rng.randint(-30, 300)
    if roll < 0.75:
        return rng.randbytes(rng.choice((0, 1, 16, 32, 33, 64, 65, 100)))
    if roll < 0.85:
        return "".join(rng.choice("abcé.-\u2603\x00") for _ in range(rng.randint(0, 12)))
    if depth > 3:
        return rng.randint(0, 10)
    if roll < 0.93:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_random_key(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _random_key(rng: random.Random) -> Any:
    """A map key: mostly the small integers and names CTAP2 maps use."""
    roll = rng.random()
    if roll < 0.7:
        return rng.randint(-3, 16)
    if roll < 0.9:
        return rng.choice(["id", "rk", "up", "uv", "type", "alg", "name", "credProtect", "x"])
    return rng.choice([v for v in _INTERESTING if not isinstance(v, (list, dict))])


def _nodes(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key in value:
            yield from _nodes(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def _mutate_tree(tree: Any, rng: random.Random) -> Any:
    paths = list(_nodes(tree))
    path = rng.choice(paths)
    if not path:
        return _random_value(rng) if rng.random() < 0.1 else tree
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    roll = rng.random()
    if roll < 0.55:
        parent[last] = _random_value(rng)
    elif roll < 0.7:
        del parent[last]
    elif roll < 0.85 and isinstance(parent, dict):
        parent[_random_key(rng)] = _random_value(rng)
    elif isinstance(parent, list):
        parent.insert(rng.randint(0, len(parent)), _random_value(rng))
    else:
        target = parent[last]
        if isinstance(target, dict):
            target[_random_key(rng)] = _random_value(rng)
        elif isinstance(target, list):
            target.append(_random_value(rng))
        else:
            parent[last] = _random_value(rng)
    return tree


def _mutate_bytes(data: bytearray, rng: random.Random, max_size: int) -> bytearray:
    roll = rng.random()
    if roll < 0.4 and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif roll < 0.6 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif roll < 0.75:
        at = rng.randint(0, len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif roll < 0.9 and data:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 8)]
    else:
        at = rng.randint(0, len(data))
        data[at:at] = bytes(rng.randint(1, 64))
    return data[:max_size]


def mutate(data: bytes, rng: random.Random, max_size: int = 8192) -> bytes:
    """One mutation of a fuzz input: structural (decode the CBOR body, change a node,
    re-encode canonically) when the input is a CTAP2 request, else byte-level; sometimes
    the selector byte (target, profile, PIN, presence) changes instead."""
    if not data:
        return bytes([rng.randrange(256)])
    if rng.random() < 0.05:
        return bytes([rng.randrange(256)]) + data[1:]
    target = data[0] & 7
    if target in (Target.CTAP2, Target.CTAP2_AUTHED) and len(data) > 2 and rng.random() < 0.7:
        try:
            tree = ccbor.decode(data[2:])
        except CtapError:
            tree = None
        if tree is not None:
            for _ in range(rng.randint(1, 3)):
                tree = _mutate_tree(tree, rng)
            try:
                command = (
                    data[1]
                    if rng.random() < 0.95
                    else rng.choice(
                        [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41, 0x42]
                    )
                )
                return (data[:1] + bytes([command]) + ccbor.encode(tree))[:max_size]
            except (TypeError, ValueError):
                pass
    body = bytearray(data[1:])
    for _ in range(rng.randint(1, 4)):
        body = _mutate_bytes(body, rng, max_size - 1)
    return data[:1] + bytes(body)


# -- engines ----------------------------------------------------------------------------------


@dataclass
class Report:
    engine: str
    seconds: float
    cases: int
    counts: Counter[str]
    failures: list[str]
    crash_files: list[Path]
    corpus: int

    def render(self) -> str:
        per_target = ", ".join(f"{name} {n:,}" for name, n in sorted(self.counts.items()))
        lines = [
            f"engine: {self.engine}",
            f"time: {self.seconds:.0f} s",
            f"cases tried: {self.cases:,} ({per_target})"
            if per_target
            else f"cases: {self.cases:,}",
            f"corpus: {self.corpus:,} inputs",
            f"failures: {len(self.failures)}",
        ]
        for failure, path in zip(self.failures, self.crash_files, strict=False):
            lines.append(f"  {path}: {failure.splitlines()[0]}")
        return "\n".join(lines)


def _save_crash(data: bytes, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def run_hypothesis(seconds: float, corpus: Path, crashes: Path) -> Report:
    """Random structure-aware mutations of the corpus for ``seconds``, with shrinking."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    seeds = sorted(p.read_bytes() for p in corpus.iterdir() if p.is_file())
    seeds += list(regression_inputs().values())
    harness = Harness()
    deadline = time.monotonic() + seconds
    cases = 0
    failures: list[str] = []
    crash_files: list[Path] = []

    @st.composite
    def inputs(draw: st.DrawFn) -> bytes:
        data = draw(st.sampled_from(seeds))
        rng = random.Random(draw(st.integers(0, 2**32 - 1)))
        for _ in range(draw(st.integers(0, 8))):
            data = mutate(data, rng)
        return data

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs())
    def one(data: bytes) -> None:
        nonlocal cases
        cases += 1
        harness.run(data)

    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            one()
        except FuzzFailure as exc:
            failures.append(str(exc))
            crash_files.append(_save_crash(exc.data, crashes))
            break
    return Report(
        "hypothesis",
        time.monotonic() - started,
        cases,
        harness.counts,
        failures,
        crash_files,
        len(seeds),
    )


# The libFuzzer child: softkey's packages are imported under atheris' instrumentation (for
# coverage feedback) before anything else imports them, then the harness runs each input.
_ATHERIS_CHILD = """
import sys
import atheris
with atheris.instrument_imports(include=["softkey.authenticator", "softkey.transports"]):
    import softkey.authenticator, softkey.authenticator.device, softkey.transports.ctaphid
    import softkey.transports.uhid, softkey.transports.server, softkey.transports.inprocess
from softkey.tools.dev.fuzz import _atheris_worker
_atheris_worker(sys.argv[1:])
"""


def _atheris_worker(args: list[str]) -> None:  # pragma: no cover - runs under libFuzzer
    """Called in the libFuzzer child (_ATHERIS_CHILD) with libFuzzer's arguments."""
    import atheris

    stats = Path(os.environ["SOFTKEY_FUZZ_STATS"])
    harness = Harness()
    last_write = [0.0]

    def test_one_input(data: bytes) -> None:
        harness.run(data)
        now = time.monotonic()
        if now - last_write[0] > 1:
            last_write[0] = now
            stats.write_text(repr(dict(harness.counts)))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutate(data, rng, max_size)

    atheris.Setup([sys.argv[0], *args], test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def run_atheris(seconds: float, corpus: Path, crashes: Path) -> Report:
    """libFuzzer (atheris) in a child process; its "Done N runs" line gives the count."""
    crashes.mkdir(parents=True, exist_ok=True)
    stats = WORK_DIR / "atheris-stats"
    stats.unlink(missing_ok=True)
    regressions = WORK_DIR / "regression-seeds"
    regressions.mkdir(parents=True, exist_ok=True)
    for name, data in regression_inputs().items():
        (regressions / name).write_bytes(data)
    env = {**os.environ, "SOFTKEY_FUZZ_STATS": str(stats)}
    command = [
        sys.executable,
        "-c",
        _ATHERIS_CHILD,
        str(corpus),
        str(regressions),
        f"-max_total_time={max(1, int(seconds))}",
        "-timeout=20",  # a case running 20 s is a hang: reported as a failure
        "-rss_limit_mb=4096",
        "-max_len=8192",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (WORK_DIR / "atheris.log").write_text(log)
    runs = 0
    for line in log.splitlines():
        if line.startswith("Done ") and " runs in " in line:
            runs = int(line.split()[1])
        elif line.startswith("stat::number_of_executed_units:"):
            runs = int(line.split(":")[-1])
    counts: Counter[str] = Counter()
    if stats.exists():
        counts.update(ast.literal_eval(stats.read_text()))  # the worker's own dict repr
    runs = runs or sum(counts.values())  # libFuzzer died before its summary
    failures: list[str] = []
    crash_files: list[Path] = []
    if proc.returncode != 0:
        found = sorted(crashes.glob("crash-*"), key=lambda p: p.stat().st_mtime)
        found += sorted(crashes.glob("timeout-*"), key=lambda p: p.stat().st_mtime)
        tail = "\n".join(log.splitlines()[-40:])
        failures.append(f"libFuzzer exited {proc.returncode}:\n{tail}")
        crash_files.append(found[-1] if found else WORK_DIR / "atheris.log")
    corpus_size = sum(1 for p in corpus.iterdir() if p.is_file())
    return Report("atheris (libFuzzer)", elapsed, runs, counts, failures, crash_files, corpus_size)


def replay(paths: list[Path]) -> int:
    harness = Harness()
    failed = 0
    for path in paths:
        try:
            result = harness.run(path.read_bytes())
            print(f"ok    {path} ({result.target.name} on {result.kind})")
        except FuzzFailure as exc:
            failed += 1
            print(f"FAIL  {path}: {exc}")
    return 1 if failed else 0


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    budget.add_argument("--seconds", type=float, help="how long, in seconds")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "hypothesis"),
        default="auto",
        help="auto: atheris when installed, else hypothesis",
    )
    parser.add_argument("--corpus", type=Path, default=WORK_DIR / "corpus")
    parser.add_argument("--crashes", type=Path, default=WORK_DIR / "crashes")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="re-run inputs")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    seeded = write_corpus(args.corpus)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_available() else "hypothesis"
    elif engine == "atheris" and not _atheris_available():
        print("atheris is not installed (pip install atheris); use --engine hypothesis")
        return 2
    print(f"fuzzing for {seconds:.0f} s with {engine}; {seeded} seeds in {args.corpus}")
    runner: Callable[[float, Path, Path], Report] = (
        run_atheris if engine == "atheris" else run_hypothesis
    )
    report = runner(seconds, args.corpus, args.crashes)
    print(report.render())
    if report.failures:
        print(
            "\nre-run a failure with: python -m softkey.tools.dev.fuzz --replay "
            + str(report.crash_files[0])
        )
        for failure in report.failures:
            print("\n" + failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
