"""CTAP1/U2F raw messages (FIDO U2F Raw Message Formats v1.2; CTAP 2.1 §11.2.9.1.1, §10).

An APDU in (short or extended ISO 7816-4 encoding), response data + status word out:

- VERSION (0x03): ``U2F_V2``.
- REGISTER (0x01): challenge(32) | application(32) -> 0x05 | P-256 public key(65) | L |
  key handle(L) | attestation certificate | ECDSA signature over
  0x00 | application | challenge | key handle | public key (fido-u2f attestation).
- AUTHENTICATE (0x02): challenge(32) | application(32) | L | key handle(L); P1 is
  0x07 check-only, 0x03 enforce-user-presence-and-sign, 0x08 dont-enforce-user-presence.
  Response: user-presence byte | counter(4) | signature over
  application | user-presence byte | counter | challenge.

Key handles *are* credential IDs (keywrap.py) with rpIdHash = application parameter and alg
ES256, so a U2F registration works over CTAP2 getAssertion with the appid extension (the
platform sends rpId = appid, whose SHA-256 is the application parameter), and a CTAP2
non-resident ES256 credential works over AUTHENTICATE when application = SHA-256(rpId).
Counters are the CTAP2 ones (counters.py).

U2F has no keepalive: when presence is not given (denied, timed out, cancelled) the device
answers SW_CONDITIONS_NOT_SATISFIED at once and the client polls, as with a real key's
button.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import cose
from .ctap import CoseAlg
from .environment import Interaction, PresenceRequest, Verdict
from .keywrap import CredentialSecrets

if TYPE_CHECKING:
    from .device import Authenticator

VERSION = b"U2F_V2"
CHALLENGE_LEN = 32
APPLICATION_LEN = 32
REGISTER_RESERVED = 0x05
U2F_USER_PRESENT = 0x01


@unique
class Ins(IntEnum):
    REGISTER = 0x01
    AUTHENTICATE = 0x02
    VERSION = 0x03


@unique
class Control(IntEnum):
    """AUTHENTICATE P1 (U2F raw messages §5.1; 0x08 from CTAP 2.1 §11.2.9.1.1)."""

    CHECK_ONLY = 0x07
    ENFORCE_USER_PRESENCE = 0x03
    DONT_ENFORCE_USER_PRESENCE = 0x08


@unique
class SW(IntEnum):
    """ISO 7816 status words used by U2F (U2F raw messages §3.3)."""

    NO_ERROR = 0x9000
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    WRONG_LENGTH = 0x6700
    CLA_NOT_SUPPORTED = 0x6E00
    INS_NOT_SUPPORTED = 0x6D00
    # ISO 7816-4 "no precise diagnosis": an internal failure, never a traceback.
    UNKNOWN = 0x6F00


class U2fError(Exception):
    def __init__(self, sw: SW, reason: str = "") -> None:
        super().__init__(f"{sw.name}{': ' + reason if reason else ''}")
        self.sw = sw
        self.reason = reason


@dataclass(frozen=True)
class Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes


def parse_apdu(apdu: bytes) -> Apdu:
    """Decode a command APDU in short or extended length encoding (ISO 7816-4 §5.1).

    Le is accepted and ignored: over CTAPHID the whole response fits one message. An
    extended Lc of 0 followed by Le (``00 00 00 | 00 00``) is accepted because python-fido2
    and browsers send VERSION that way.
    """
    if len(apdu) < 4:
        raise U2fError(SW.WRONG_LENGTH, "APDU shorter than its 4-byte header")
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:  # case 1
        data = b""
    elif len(body) == 1:  # case 2S: Le only
        data = b""
    elif body[0] != 0:  # short Lc
        lc = body[0]
        rest = body[1:]
        if len(rest) not in (lc, lc + 1):
            raise U2fError(SW.WRONG_LENGTH, f"short Lc {lc} but {len(rest)} bytes follow")
        data = rest[:lc]
    else:  # extended: 00 | Lc(2) | data | [Le(2)], or 00 | Le(2)
        if len(body) < 3:
            raise U2fError(SW.WRONG_LENGTH, "truncated extended length")
        if len(body) == 3:  # case 2E
            data = b""
        else:
            lc = struct.unpack(">H", body[1:3])[0]
            rest = body[3:]
            if len(rest) not in (lc, lc + 2):
                raise U2fError(SW.WRONG_LENGTH, f"extended Lc {lc} but {len(rest)} bytes follow")
            data = rest[:lc]
    return Apdu(cla, ins, p1, p2, bytes(data))


def _public_point(private_key: bytes) -> bytes:
    key = cose.load_private(CoseAlg.ES256, private_key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _presence(auth: Authenticator, purpose: str, interaction: Interaction) -> None:
    verdict = auth.presence.confirm(PresenceRequest(purpose), interaction)
    if verdict is not Verdict.APPROVED:
        # No keepalive in U2F: say "not yet" and let the client poll (U2F raw messages §4.3).
        raise U2fError(SW.CONDITIONS_NOT_SATISFIED, f"user presence not given ({verdict.value})")


def register(auth: Authenticator, apdu: Apdu, interaction: Interaction) -> bytes:
    if len(apdu.data) != CHALLENGE_LEN + APPLICATION_LEN:
        raise U2fError(SW.WRONG_LENGTH, f"REGISTER takes 64 bytes, got {len(apdu.data)}")
    challenge = apdu.data[:CHALLENGE_LEN]
    application = apdu.data[CHALLENGE_LEN:]
    _presence(auth, "register (U2F)", interaction)

    private_key = cose.generate(CoseAlg.ES256)
    secrets = CredentialSecrets(
        alg=CoseAlg.ES256,
        private_key=private_key,
        discoverable=False,
        cred_protect=1,
        cred_random=auth.random(32),
    )
    key_handle = auth.wrapper.wrap(secrets, application)
    public_key = _public_point(private_key)
    certificate, sign = auth.attestation.u2f(CoseAlg.ES256, private_key)
    signature = sign(b"\x00" + application + challenge + key_handle + public_key)
    return (
        bytes([REGISTER_RESERVED])
        + public_key
        + bytes([len(key_handle)])
        + key_handle
        + certificate
        + signature
    )


def authenticate(auth: Authenticator, apdu: Apdu, interaction: Interaction) -> bytes:
    fixed = CHALLENGE_LEN + APPLICATION_LEN + 1
    if len(apdu.data) < fixed or len(apdu.data) != fixed + apdu.data[fixed - 1]:
        raise U2fError(SW.WRONG_LENGTH, "AUTHENTICATE data length does not match its key handle")
    try:
        control = Control(apdu.p1)
    except ValueError:
        raise U2fError(
            SW.WRONG_DATA, f"unknown AUTHENTICATE control byte 0x{apdu.p1:02x}"
        ) from None
    challenge = apdu.data[:CHALLENGE_LEN]
    application = apdu.data[CHALLENGE_LEN : CHALLENGE_LEN + APPLICATION_LEN]
    key_handle = apdu.data[fixed:]

    found = auth.locate(key_handle, application)
    # U2F can only do P-256; and a credProtect userVerificationRequired credential must not
    # be usable without UV, which U2F cannot give (CTAP 2.1 §12.1): both are "not ours".
    if found is None or found.secrets.alg != CoseAlg.ES256 or found.secrets.cred_protect == 3:
        raise U2fError(SW.WRONG_DATA, "key handle was not made by this key for this application")

    if control is Control.CHECK_ONLY:
        # "Ours" is reported as CONDITIONS_NOT_SATISFIED (U2F raw messages §5.1).
        raise U2fError(SW.CONDITIONS_NOT_SATISFIED, "check-only: the key handle is ours")
    presence = 0
    if control is Control.ENFORCE_USER_PRESENCE:
        _presence(auth, "authenticate (U2F)", interaction)
        presence = U2F_USER_PRESENT

    counter = auth.next_counter(key_handle)
    signed_part = bytes([presence]) + struct.pack(">I", counter)
    signature = cose.sign(
        CoseAlg.ES256, found.secrets.private_key, application + signed_part + challenge
    )
    return signed_part + signature


def enabled(auth: Authenticator) -> bool:
    """U2F is off while alwaysUv is on: U2F has no way to verify the user (CTAP 2.1 §7.2.3
    alwaysUv; getInfo then stops listing U2F_V2)."""
    return not auth.pin_uv.always_uv


def handle(auth: Authenticator, raw: bytes, interaction: Interaction) -> tuple[bytes, SW, str]:
    """(response data, status word, reason for traces). Raises nothing."""
    try:
        if not enabled(auth):
            raise U2fError(
                SW.COMMAND_NOT_ALLOWED, "alwaysUv is on: U2F is disabled until it is turned off"
            )
        apdu = parse_apdu(raw)
        if apdu.cla != 0:
            raise U2fError(SW.CLA_NOT_SUPPORTED, f"CLA 0x{apdu.cla:02x}")
        if apdu.ins == Ins.VERSION:
            if apdu.data:
                raise U2fError(SW.WRONG_LENGTH, "VERSION takes no data")
            return VERSION, SW.NO_ERROR, ""
        if apdu.ins == Ins.REGISTER:
            return register(auth, apdu, interaction), SW.NO_ERROR, ""
        if apdu.ins == Ins.AUTHENTICATE:
            return authenticate(auth, apdu, interaction), SW.NO_ERROR, ""
        raise U2fError(SW.INS_NOT_SUPPORTED, f"INS 0x{apdu.ins:02x}")
    except U2fError as exc:
        return b"", exc.sw, exc.reason
