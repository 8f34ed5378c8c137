"""authenticatorClientPIN, PIN/UV auth protocols 1 and 2, and the pinUvAuthToken gatekeeper.

CTAP 2.1 §6.5. "UV" means a pinUvAuthToken obtained with the PIN, or, on profiles with a
fingerprint sensor, built-in UV (builtin_uv.py: the uv option, clientPIN 0x06/0x07).
``PinUv`` is the one object that knows the PIN state and the token:

- the clientPIN command (getRetries, getKeyAgreement, setPIN, changePIN, getPinToken,
  getPinUvAuthTokenUsingPinWithPermissions on 2.1 profiles);
- ``check_request``: the PIN/UV part of makeCredential/getAssertion, with each CTAP
  version's error codes (PIN_REQUIRED in 2.0 is the same byte 0x36 as PUAT_REQUIRED in 2.1);
- ``authorize``: pinUvAuthParam checks for credential management and authenticatorConfig;
- the admin helpers behind ``Authenticator.set_pin/change_pin/pin_status``.

Persistent state lives in the store's meta table: LEFT(SHA-256(PIN), 16) (never the PIN),
its length in code points (for setMinPINLength's forcePINChange), the retry counter, the
forcePINChange flag, the minimum length and the alwaysUv flag. Per-boot state (consecutive
mismatches, key-agreement keys, the token) lives here and is renewed by ``power_cycle``.
Nothing in this module logs; CtapError reasons never contain a PIN or key material.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from enum import IntEnum, IntFlag, unique
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import persistent_token, pin_complexity
from .builtin_uv import BuiltinUv
from .ctap import CtapError, InfoKey, Status
from .environment import Interaction, RandomSource
from .params import get, opt
from .profiles import CTAP2_1, PIN_RETRIES_WITHOUT_PIN

if TYPE_CHECKING:
    from .device import Authenticator


@unique
class ClientPinCmd(IntEnum):
    """authenticatorClientPIN subCommand values (CTAP 2.1 §6.5.5)."""

    GET_PIN_RETRIES = 0x01
    GET_KEY_AGREEMENT = 0x02
    SET_PIN = 0x03
    CHANGE_PIN = 0x04
    GET_PIN_TOKEN = 0x05
    GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS = 0x06
    GET_UV_RETRIES = 0x07
    GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS = 0x09


@unique
class ClientPinKey(IntEnum):
    PIN_UV_AUTH_PROTOCOL = 0x01
    SUB_COMMAND = 0x02
    KEY_AGREEMENT = 0x03
    PIN_UV_AUTH_PARAM = 0x04
    NEW_PIN_ENC = 0x05
    PIN_HASH_ENC = 0x06
    PERMISSIONS = 0x09
    RP_ID = 0x0A


@unique
class ClientPinResponseKey(IntEnum):
    KEY_AGREEMENT = 0x01
    PIN_UV_AUTH_TOKEN = 0x02
    PIN_RETRIES = 0x03
    POWER_CYCLE_STATE = 0x04
    UV_RETRIES = 0x05


class Permission(IntFlag):
    """pinUvAuthToken permissions (CTAP 2.1 §6.5.5.7)."""

    MC = 0x01  # makeCredential
    GA = 0x02  # getAssertion
    CM = 0x04  # credential management
    BE = 0x08  # bio enrollment
    LBW = 0x10  # large blob write
    ACFG = 0x20  # authenticatorConfig
    PCMR = 0x40  # persistent read-only credential management (CTAP 2.2; persistent_token.py)


# The string names ctap2.py passes to check_request.
_PERMISSION_NAMES = {"mc": Permission.MC, "ga": Permission.GA}

PIN_HASH_LEN = 16
PADDED_PIN_LEN = 64  # newPinEnc plaintext: the PIN padded with zeros to 64 bytes
MAX_PIN_BYTES = PADDED_PIN_LEN - 1
TOKEN_LEN = 32
MAX_CONSECUTIVE_MISMATCHES = 3  # then PIN_AUTH_BLOCKED until the next power cycle

# pinUvAuthToken timers on 2.1 profiles (§6.5.2.1 "pinUvAuthToken state"): a token not used
# within the initial usage time limit expires; a used one lives at most the max usage time
# period; a cached user presence lasts the user present time limit.
INITIAL_USAGE_TIME_LIMIT = 30.0
MAX_USAGE_TIME_PERIOD = 600.0
USER_PRESENT_TIME_LIMIT = 30.0

# Store meta names (persistent; authenticatorReset wipes them all).
META_PIN_HASH = "pin_hash"
META_PIN_CODE_POINTS = "pin_code_points"
META_PIN_RETRIES = "pin_retries"
META_FORCE_PIN_CHANGE = "force_pin_change"
META_MIN_PIN_LENGTH = "min_pin_length"
META_ALWAYS_UV = "always_uv"


# -- PIN/UV auth protocols ---------------------------------------------------------------


class PinProtocol:
    """One PIN/UV auth protocol's key agreement and primitives (CTAP 2.1 §6.5.6, §6.5.7)."""

    version = 0

    def __init__(self, random: RandomSource) -> None:
        self._random = random
        self._key = ec.generate_private_key(ec.SECP256R1())

    def regenerate(self) -> None:
        """A new key-agreement key: platforms must fetch getKeyAgreement again."""
        self._key = ec.generate_private_key(ec.SECP256R1())

    def public_cose(self) -> dict[int, Any]:
        numbers = self._key.public_key().public_numbers()
        # alg -25 (ECDH-ES+HKDF-256) is what the spec says to send, though not what is used.
        return {
            1: 2,
            3: -25,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }

    def decapsulate(self, peer: Any) -> bytes:
        """The shared secret with the platform's COSE_Key, or INVALID_PARAMETER."""
        if not isinstance(peer, dict):
            raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "keyAgreement must be a COSE_Key map")
        x, y = peer.get(-2), peer.get(-3)
        # crv 1 (P-256, RFC 8152 §13.1) is a CBOR integer: `true` is not 1, though True == 1.
        crv = peer.get(-1)
        if (
            peer.get(1) != 2
            or type(crv) is not int
            or crv != 1
            or not isinstance(x, bytes)
            or not isinstance(y, bytes)
            or len(x) != 32
            or len(y) != 32
        ):
            raise CtapError(Status.INVALID_PARAMETER, "keyAgreement is not a P-256 COSE_Key")
        try:
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError:
            raise CtapError(Status.INVALID_PARAMETER, "keyAgreement is not on P-256") from None
        return self.kdf(self._key.exchange(ec.ECDH(), public))

    def kdf(self, z: bytes) -> bytes:
        raise NotImplementedError

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        raise NotImplementedError

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None if the ciphertext cannot be one of ours (bad length)."""
        raise NotImplementedError

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, key: bytes, message: bytes, signature: bytes) -> bool:
        expected = self.authenticate(key, message)
        return len(signature) == len(expected) and hmac.compare_digest(expected, signature)

    @staticmethod
    def _cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
        cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        return ctx.update(data) + ctx.finalize()


class PinProtocolOne(PinProtocol):
    """Protocol 1: SHA-256(Z), AES-256-CBC with a zero IV, HMAC-SHA-256 truncated to 16."""

    version = 1

    def kdf(self, z: bytes) -> bytes:
        return hashlib.sha256(z).digest()

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        return self._cbc(key, b"\x00" * 16, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        if not ciphertext or len(ciphertext) % 16:
            return None
        return self._cbc(key, b"\x00" * 16, ciphertext, encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()[:16]


class PinProtocolTwo(PinProtocol):
    """Protocol 2: HKDF-SHA-256 into an HMAC key and an AES key, random IVs, full HMAC."""

    version = 2

    def kdf(self, z: bytes) -> bytes:
        def hkdf(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\x00" * 32, info=info).derive(
                z
            )

        return hkdf(b"CTAP2 HMAC key") + hkdf(b"CTAP2 AES key")

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        iv = self._random(16)
        return iv + self._cbc(key[32:], iv, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        if len(ciphertext) < 16 or len(ciphertext) % 16:
            return None
        iv, body = ciphertext[:16], ciphertext[16:]
        return self._cbc(key[32:], iv, body, encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        # A shared secret is HMAC key || AES key; a pinUvAuthToken is used whole (§6.5.7).
        return hmac.new(key[:32], message, hashlib.sha256).digest()


_PROTOCOLS: dict[int, type[PinProtocol]] = {1: PinProtocolOne, 2: PinProtocolTwo}


# -- the pinUvAuthToken -------------------------------------------------------------------


@dataclass
class TokenState:
    """The pinUvAuthToken and its state (CTAP 2.1 §6.5.2.1), one per power-up."""

    token: bytes
    protocol: int = 0  # the protocol it was handed out through (0: not issued)
    permissions: Permission = Permission(0)
    rp_id: str | None = None
    legacy: bool = False  # 2.0 / 2.1-pre pinToken: no permissions, no usage rules
    # 2.1: handed out by the superseded getPinToken (0x05), so mc and ga only; the
    # credential-management preview may still take it (Profile.preview_accepts_pin_token).
    from_get_pin_token: bool = False
    in_use: bool = False
    issued_at: float = 0.0
    used: bool = False
    user_present: bool = False
    user_verified: bool = False

    def stop(self) -> None:
        """stopUsingPinUvAuthToken()."""
        self.in_use = False
        self.permissions = Permission(0)
        self.rp_id = None
        self.user_present = False
        self.user_verified = False


def pin_hash(pin: bytes) -> bytes:
    return hashlib.sha256(pin).digest()[:PIN_HASH_LEN]


class PinUv:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self._protocols: dict[int, PinProtocol] = {
            v: _PROTOCOLS[v](auth.random) for v in auth.profile.pin_protocols
        }
        self._mismatches = 0
        self._token = TokenState(token=auth.random(TOKEN_LEN))
        self._request_used_token = False
        self._request_used_builtin_uv = False
        self.builtin = BuiltinUv(auth)  # the fingerprint sensor, if the profile has one

    # -- persistent state ------------------------------------------------------------------

    @property
    def is_set(self) -> bool:
        return self.auth.store.get_meta(META_PIN_HASH) is not None

    @property
    def retries(self) -> int:
        return self.auth.store.get_int(META_PIN_RETRIES, self.auth.profile.pin_retries)

    @property
    def force_change(self) -> bool:
        return bool(self.auth.store.get_int(META_FORCE_PIN_CHANGE))

    @property
    def min_length(self) -> int:
        return self.auth.store.get_int(META_MIN_PIN_LENGTH, self.auth.profile.min_pin_length)

    @property
    def pin_code_points(self) -> int | None:
        value = self.auth.store.get_meta(META_PIN_CODE_POINTS)
        return int(value) if value is not None else None

    @property
    def always_uv(self) -> bool:
        return bool(self.auth.store.get_int(META_ALWAYS_UV))

    @property
    def power_cycle_required(self) -> bool:
        return self._mismatches >= MAX_CONSECUTIVE_MISMATCHES

    # -- getInfo hooks ------------------------------------------------------------------------

    def protocols(self) -> tuple[int, ...]:
        return self.auth.profile.pin_protocols

    def info_options(self) -> dict[str, bool]:
        profile = self.auth.profile
        options = {"clientPin": self.is_set}
        if profile.pin_uv_auth_token:
            options["pinUvAuthToken"] = True
        if profile.make_cred_uv_not_rqd:
            # With alwaysUv on, every makeCredential needs UV, so this must read false.
            options["makeCredUvNotRqd"] = not self.always_uv
        options.update(self.builtin.info_options())  # uv, bioEnroll...: builtin_uv.py
        return options

    def info_members(self) -> dict[int, Any]:
        profile = self.auth.profile
        if not profile.at_least(CTAP2_1):
            return {}
        members: dict[int, Any] = {
            InfoKey.FORCE_PIN_CHANGE: self.force_change,
            InfoKey.MIN_PIN_LENGTH: self.min_length,
        }
        if profile.authnr_cfg and profile.max_rpids_for_set_min_pin_length:
            members[InfoKey.MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH] = (
                profile.max_rpids_for_set_min_pin_length
            )
        members.update(self.builtin.info_members())  # uvModality...: builtin_uv.py
        return members

    # -- power --------------------------------------------------------------------------------

    def power_cycle(self) -> None:
        """Power-up: new key-agreement keys, a new token, the per-boot lockout lifted."""
        for protocol in self._protocols.values():
            protocol.regenerate()
        self._mismatches = 0
        self._reset_token()

    def _reset_token(self) -> None:
        """resetPinUvAuthToken() for every protocol: earlier tokens stop working."""
        self._token = TokenState(token=self.auth.random(TOKEN_LEN))

    def _now(self) -> float:
        return self.auth.clock.monotonic()

    def _observe_timers(self) -> None:
        """pinUvAuthTokenUsageTimerObserver (2.1 tokens only)."""
        token = self._token
        if not token.in_use or token.legacy:
            return
        age = self._now() - token.issued_at
        if age > MAX_USAGE_TIME_PERIOD or (not token.used and age > INITIAL_USAGE_TIME_LIMIT):
            token.stop()
        elif age > USER_PRESENT_TIME_LIMIT:
            token.user_present = False

    # -- authenticatorClientPIN ---------------------------------------------------------------

    def protocol(self, version: int | None) -> PinProtocol:
        """The PIN/UV auth protocol object for ``version`` (MISSING_/INVALID_PARAMETER).

        For extensions that need a shared secret (hmac-secret).
        """
        return self._protocol(version)

    def _protocol(self, version: int | None) -> PinProtocol:
        if version is None:
            raise CtapError(Status.MISSING_PARAMETER, "pinUvAuthProtocol missing")
        protocol = self._protocols.get(version)
        if protocol is None:
            raise CtapError(
                Status.INVALID_PARAMETER,
                f"PIN/UV auth protocol {version} is not supported by this key "
                f"(it offers {list(self.protocols())})",
            )
        return protocol

    def handle(self, params: dict, interaction: Interaction) -> dict | None:
        K = ClientPinKey
        sub = get(params, K.SUB_COMMAND, int)
        version = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)
        if version is not None:
            self._protocol(version)  # unsupported protocol: INVALID_PARAMETER first
        C = ClientPinCmd
        if sub == C.GET_PIN_RETRIES:
            return self._get_retries()
        if sub == C.GET_KEY_AGREEMENT:
            protocol = self._protocol(version)
            return {ClientPinResponseKey.KEY_AGREEMENT: protocol.public_cose()}
        if sub == C.SET_PIN:
            self._set_pin(params, self._protocol(version))
            return None
        if sub == C.CHANGE_PIN:
            self._change_pin(params, self._protocol(version))
            return None
        if sub == C.GET_PIN_TOKEN:
            return self._get_token(params, self._protocol(version), with_permissions=False)
        if sub == C.GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS and (
            self.auth.profile.pin_uv_auth_token
        ):
            return self._get_token(params, self._protocol(version), with_permissions=True)
        # 0x06/0x07 need a built-in UV method: a fingerprint sensor (builtin_uv.py).
        if sub == C.GET_UV_RETRIES and self.builtin.sensor is not None:
            return self.builtin.get_retries()
        if sub == C.GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS and (
            self.builtin.sensor is not None and self.auth.profile.pin_uv_auth_token
        ):
            return self.builtin.get_token(self, params, self._protocol(version), interaction)
        raise CtapError(Status.INVALID_SUBCOMMAND, f"clientPIN subcommand 0x{sub:02x} unsupported")

    def _get_retries(self) -> dict:
        if not self.is_set and self.auth.profile.has_quirk(PIN_RETRIES_WITHOUT_PIN):
            # A vendor quirk (profiles.py lists the evidence): the spec defines no error here
            # and returns the retry count (CTAP 2.0 §5.5.3, CTAP 2.1 §6.5.5.2).
            raise CtapError(Status.PIN_NOT_SET, "no PIN is set on this key")
        R = ClientPinResponseKey
        response: dict[int, Any] = {R.PIN_RETRIES: self.retries}
        if self.auth.profile.at_least(CTAP2_1):
            response[R.POWER_CYCLE_STATE] = self.power_cycle_required
        return response

    def _set_pin(self, params: dict, protocol: PinProtocol) -> None:
        K = ClientPinKey
        key_agreement = get(params, K.KEY_AGREEMENT, dict)
        new_pin_enc = get(params, K.NEW_PIN_ENC, bytes)
        auth_param = get(params, K.PIN_UV_AUTH_PARAM, bytes)
        if self.is_set:
            raise CtapError(Status.PIN_AUTH_INVALID, "a PIN is already set; use changePIN")
        shared = protocol.decapsulate(key_agreement)
        if not protocol.verify(shared, new_pin_enc, auth_param):
            raise CtapError(Status.PIN_AUTH_INVALID, "pinUvAuthParam does not match newPinEnc")
        new_pin = self._decrypt_new_pin(protocol, shared, new_pin_enc)
        self._store_pin(new_pin)

    def _change_pin(self, params: dict, protocol: PinProtocol) -> None:
        K = ClientPinKey
        key_agreement = get(params, K.KEY_AGREEMENT, dict)
        pin_hash_enc = get(params, K.PIN_HASH_ENC, bytes)
        new_pin_enc = get(params, K.NEW_PIN_ENC, bytes)
        auth_param = get(params, K.PIN_UV_AUTH_PARAM, bytes)
        self._check_can_try()
        shared = protocol.decapsulate(key_agreement)
        if not protocol.verify(shared, new_pin_enc + pin_hash_enc, auth_param):
            raise CtapError(Status.PIN_AUTH_INVALID, "pinUvAuthParam does not match the request")
        self._check_pin_hash(protocol.decrypt(shared, pin_hash_enc))
        new_pin = self._decrypt_new_pin(protocol, shared, new_pin_enc)
        self._replace_pin(new_pin)

    def _get_token(self, params: dict, protocol: PinProtocol, *, with_permissions: bool) -> dict:
        K = ClientPinKey
        key_agreement = get(params, K.KEY_AGREEMENT, dict)
        pin_hash_enc = get(params, K.PIN_HASH_ENC, bytes)
        profile = self.auth.profile
        permissions = Permission(0)
        rp_id = None
        if with_permissions:
            requested = get(params, K.PERMISSIONS, int)
            rp_id = opt(params, K.RP_ID, str)
            permissions = self._check_permissions(requested, rp_id)
        elif profile.pin_uv_auth_token and (K.PERMISSIONS in params or K.RP_ID in params):
            # getPinToken is the superseded form: permissions belong to subcommand 0x09.
            raise CtapError(Status.INVALID_PARAMETER, "getPinToken takes no permissions")
        self._check_can_try()
        shared = protocol.decapsulate(key_agreement)
        self._check_pin_hash(protocol.decrypt(shared, pin_hash_enc))
        if profile.at_least(CTAP2_1) and self.force_change:
            raise CtapError(Status.PIN_INVALID, "the PIN must be changed before it can be used")
        if permissions == Permission.PCMR:  # CTAP 2.2: the persistent token, no new one
            return persistent_token.issue(self.auth, protocol, shared)
        self._reset_token()
        token = self._token
        token.protocol = protocol.version
        token.in_use = True
        token.issued_at = self._now()
        token.user_verified = True
        token.user_present = False  # a PIN proves UV, not presence (beginUsing...(false))
        if profile.pin_uv_auth_token:
            # 2.1: the superseded getPinToken grants the default permissions mc and ga.
            token.permissions = permissions if with_permissions else Permission.MC | Permission.GA
            token.rp_id = rp_id
            token.from_get_pin_token = not with_permissions
        else:
            token.legacy = True
        return {ClientPinResponseKey.PIN_UV_AUTH_TOKEN: protocol.encrypt(shared, token.token)}

    def _supported_permissions(self) -> Permission:
        from . import ctap2  # getInfo is the single source of what this key offers

        options = ctap2.get_info(self.auth)[InfoKey.OPTIONS]
        supported = Permission.MC | Permission.GA
        if options.get("credMgmt"):
            supported |= Permission.CM
        if options.get("bioEnroll") is not None:
            supported |= Permission.BE
        if options.get("largeBlobs"):
            supported |= Permission.LBW
        if options.get("authnrCfg"):
            supported |= Permission.ACFG
        if options.get("perCredMgmtRO"):
            supported |= Permission.PCMR
        return supported

    def _check_permissions(self, requested: int, rp_id: str | None) -> Permission:
        if requested == 0:
            raise CtapError(Status.INVALID_PARAMETER, "permissions must not be empty")
        supported = self._supported_permissions()
        if requested & ~int(supported):
            raise CtapError(
                Status.UNAUTHORIZED_PERMISSION,
                f"permissions 0x{requested:02x} include some this key does not offer "
                f"(it offers 0x{int(supported):02x})",
            )
        permissions = Permission(requested)
        persistent_token.check_permissions(permissions)
        if permissions & (Permission.MC | Permission.GA) and rp_id is None:
            raise CtapError(Status.MISSING_PARAMETER, "mc and ga permissions need an rpId")
        return permissions

    # -- PIN checks shared by the protocol and the admin API ----------------------------------

    def _check_can_try(self) -> None:
        if not self.is_set:
            raise CtapError(Status.PIN_NOT_SET, "no PIN is set on this key")
        if self.retries <= 0:
            raise CtapError(
                Status.PIN_BLOCKED, "the PIN is blocked (no retries left); only a reset helps"
            )
        if self.power_cycle_required:
            raise CtapError(
                Status.PIN_AUTH_BLOCKED,
                "3 wrong PINs in a row: unplug and replug the key to try again",
            )

    def _check_pin_hash(self, presented: bytes | None) -> None:
        """Compare a presented LEFT(SHA-256(PIN),16) with the stored one (§6.5.5.5 ff.)."""
        store = self.auth.store
        # The retry is spent before comparing, and persisted, so pulling the plug mid-check
        # cannot give free guesses.
        retries = self.retries - 1
        store.set_int(META_PIN_RETRIES, retries)
        stored = store.get_meta(META_PIN_HASH) or b""
        if (
            presented is None
            or len(presented) != PIN_HASH_LEN
            or not hmac.compare_digest(presented, stored)
        ):
            for protocol in self._protocols.values():
                protocol.regenerate()
            self._mismatches += 1
            if retries <= 0:
                raise CtapError(
                    Status.PIN_BLOCKED, "wrong PIN; the PIN is now blocked, only a reset helps"
                )
            if self.power_cycle_required:
                raise CtapError(
                    Status.PIN_AUTH_BLOCKED,
                    f"wrong PIN 3 times in a row ({retries} retries left): "
                    "unplug and replug the key to try again",
                )
            raise CtapError(Status.PIN_INVALID, f"wrong PIN ({retries} retries left)")
        store.set_int(META_PIN_RETRIES, self.auth.profile.pin_retries)
        self._mismatches = 0
        self.builtin.pin_verified()  # a right PIN unblocks the fingerprint sensor

    def _decrypt_new_pin(self, protocol: PinProtocol, shared: bytes, new_pin_enc: bytes) -> bytes:
        padded = protocol.decrypt(shared, new_pin_enc)
        if padded is None or len(padded) != PADDED_PIN_LEN:
            raise CtapError(Status.INVALID_PARAMETER, "newPinEnc must hold a 64-byte padded PIN")
        pin = padded.split(b"\x00", 1)[0]
        self._check_policy(pin)
        return pin

    def _check_policy(self, pin: bytes) -> None:
        if len(pin) > MAX_PIN_BYTES:
            raise CtapError(
                Status.PIN_POLICY_VIOLATION, f"the PIN is longer than {MAX_PIN_BYTES} bytes"
            )
        try:
            code_points = len(pin.decode("utf-8"))
        except UnicodeDecodeError:
            raise CtapError(Status.PIN_POLICY_VIOLATION, "the PIN is not valid UTF-8") from None
        if code_points < self.min_length:
            raise CtapError(
                Status.PIN_POLICY_VIOLATION,
                f"the PIN must be at least {self.min_length} characters long",
            )
        pin_complexity.check(self.auth, pin.decode("utf-8"))

    def _store_pin(self, pin: bytes) -> None:
        store = self.auth.store
        change = "changed" if self.is_set else "set"
        with store.transaction():
            store.set_meta(META_PIN_HASH, pin_hash(pin))
            store.set_int(META_PIN_CODE_POINTS, len(pin.decode("utf-8")))
            store.set_int(META_PIN_RETRIES, self.auth.profile.pin_retries)
            store.delete_meta(META_FORCE_PIN_CHANGE)
            persistent_token.renew(self.auth)  # CTAP 2.2: a new PIN, a new persistent token
        self.auth.events.emit("pinChanged", change=change)  # never the PIN or its hash

    def _replace_pin(self, new_pin: bytes) -> None:
        if self.force_change and hmac.compare_digest(
            pin_hash(new_pin), self.auth.store.get_meta(META_PIN_HASH) or b""
        ):
            raise CtapError(
                Status.PIN_POLICY_VIOLATION, "a PIN change is required: choose a different PIN"
            )
        self._store_pin(new_pin)
        # Tokens handed out under the old PIN die with it.
        self._reset_token()

    # -- makeCredential / getAssertion --------------------------------------------------------

    def check_request(
        self,
        permission: str,
        rp_id: str,
        client_data_hash: bytes,
        pin_uv_auth_param: bytes | None,
        pin_uv_auth_protocol: int | None,
        options: dict[str, bool],
        interaction: Interaction,
        rk: bool = False,
    ) -> bool:
        """Validate the PIN/UV parts of a makeCredential/getAssertion; True if UV happened.

        CTAP 2.1 §6.1.2 steps 1-2, 5-11 and §6.2.2 steps 1-6; CTAP 2.0 §5.1/§5.2 for the
        2.0 and 2.1-pre profiles (which differ only in error codes here).
        """
        self._request_used_token = False
        self._request_used_builtin_uv = False
        profile = self.auth.profile
        v21 = profile.at_least(CTAP2_1)
        if pin_uv_auth_param is not None and len(pin_uv_auth_param) == 0:
            # Touch probe used by platforms to pick a key (§6.1.2 step 1, §6.2.2 step 1):
            # declined or timed out, it is OPERATION_DENIED either way.
            try:
                self.auth.confirm_presence("select this key", rp_id, interaction)
            except CtapError as exc:
                if exc.status == Status.USER_ACTION_TIMEOUT:
                    raise CtapError(Status.OPERATION_DENIED, exc.reason) from None
                raise
            if self.is_set:
                raise CtapError(Status.PIN_INVALID, "touch probe: this key has a PIN")
            raise CtapError(Status.PIN_NOT_SET, "touch probe: this key has no PIN")
        if pin_uv_auth_param is not None:
            if pin_uv_auth_protocol is None:
                raise CtapError(Status.MISSING_PARAMETER, "pinUvAuthProtocol missing")
            if pin_uv_auth_protocol not in self._protocols:
                # CTAP 2.0 answered an unknown pinProtocol with PIN_AUTH_INVALID.
                status = Status.INVALID_PARAMETER if v21 else Status.PIN_AUTH_INVALID
                raise CtapError(status, f"unsupported pinUvAuthProtocol {pin_uv_auth_protocol}")
            if not self.is_set:
                raise CtapError(Status.PIN_NOT_SET, "pinUvAuthParam sent but no PIN is set")
            self._verify_token(
                pin_uv_auth_protocol,
                client_data_hash,
                pin_uv_auth_param,
                _PERMISSION_NAMES[permission],
                rp_id,
            )
            self._request_used_token = True
            return True
        always_uv = self.always_uv
        if options.get("uv") or self.builtin.implied_by_always_uv(always_uv, permission, options):
            # Built-in UV (builtin_uv.py; refused on keys without a fingerprint sensor). The
            # finger on the sensor is the user's presence too (§6.1.2 step 14).
            self._request_used_builtin_uv = self.builtin.uv_option(permission, rp_id, interaction)
            return True
        if always_uv and (permission == "mc" or options.get("up", True)):
            if self.is_set:
                raise CtapError(Status.PUAT_REQUIRED, "alwaysUv is on: a PIN token is required")
            raise CtapError(Status.PIN_NOT_SET, "alwaysUv is on: set a PIN first")
        if permission == "mc" and self.is_set and (rk or not profile.make_cred_uv_not_rqd):
            # CTAP 2.0 calls 0x36 PIN_REQUIRED; 2.1 renamed it PUAT_REQUIRED.
            raise CtapError(
                Status.PUAT_REQUIRED,
                "this key has a PIN: makeCredential needs a pinUvAuthParam"
                + (" for a discoverable credential" if profile.make_cred_uv_not_rqd else ""),
            )
        return False

    def _verify_token(
        self,
        version: int,
        message: bytes,
        signature: bytes,
        permission: Permission,
        rp_id: str | None,
        *,
        bind_rp: bool = True,
        accept_pin_token: bool = False,
    ) -> TokenState:
        self._observe_timers()
        token = self._token
        protocol = self._protocols[version]
        if (
            not token.in_use
            or token.protocol != version
            or not protocol.verify(token.token, message, signature)
        ):
            raise CtapError(
                Status.PIN_AUTH_INVALID,
                "pinUvAuthParam does not verify with the current token (expired, replaced "
                "by a newer one, or from before a power cycle); get a new token",
            )
        if not token.legacy:
            if not token.permissions & permission and not (
                accept_pin_token and token.from_get_pin_token
            ):
                raise CtapError(
                    Status.PIN_AUTH_INVALID,
                    f"the token lacks the {permission.name} permission (or it was used up)",
                )
            if token.rp_id is not None and rp_id is not None and token.rp_id != rp_id:
                raise CtapError(Status.PIN_AUTH_INVALID, "the token is bound to another RP ID")
            # The userVerified flag gates only makeCredential/getAssertion (§6.1.2 step 11,
            # §6.2.2 step 6). cm/acfg/lbw rely on their permission alone: lbw outlives the
            # getAssertion that used the token, so the platform can then write the
            # credential's large blob (§6.2.2 step 9; §6.10 checks only lbw).
            if permission & (Permission.MC | Permission.GA) and not token.user_verified:
                raise CtapError(Status.PIN_AUTH_INVALID, "the token's user verification was used")
            if bind_rp and token.rp_id is None and rp_id is not None:
                token.rp_id = rp_id
            token.used = True
        return token

    def collect_presence(
        self, purpose: str, rp_id: str | None, interaction: Interaction, **kw: Any
    ) -> None:
        """User presence for a makeCredential/getAssertion that wants it.

        On 2.1, a token's cached userPresent flag stands in for a touch, and using the token
        for presence consumes it: the flags and all permissions but lbw are cleared
        (§6.1.2 step 14, §6.2.2 step 9).
        """
        token = self._token
        if self._request_used_builtin_uv:
            return  # the finger on the sensor (built-in UV) was the touch
        used = self._request_used_token and not token.legacy
        if not (used and token.in_use and token.user_present):
            self.auth.confirm_presence(purpose, rp_id, interaction, **kw)
        if used:
            token.user_present = False
            token.user_verified = False
            token.permissions &= Permission.LBW

    # -- credential management / authenticatorConfig -----------------------------------------

    def authorize(
        self,
        pin_uv_auth_protocol: int | None,
        pin_uv_auth_param: bytes | None,
        message: bytes,
        permission: Permission,
        *,
        accept_pin_token: bool = False,
    ) -> TokenState:
        """Check a pinUvAuthParam over ``message`` for a token with ``permission``.

        Returns the token so callers can apply its permissions RP ID (credential
        management restricts what an RP-bound token may see). ``accept_pin_token``: a token
        from getPinToken will do without ``permission`` (the credential-management preview).
        """
        if pin_uv_auth_param is None:
            raise CtapError(Status.PUAT_REQUIRED, "this command needs a pinUvAuthParam")
        self._protocol(pin_uv_auth_protocol)
        assert pin_uv_auth_protocol is not None
        if not self.is_set:
            raise CtapError(Status.PIN_NOT_SET, "set a PIN first")
        return self._verify_token(
            pin_uv_auth_protocol,
            message,
            pin_uv_auth_param,
            permission,
            None,
            bind_rp=False,
            accept_pin_token=accept_pin_token,
        )

    # -- admin API (offline operator helpers; same rules as the protocol) ---------------------

    @staticmethod
    def _admin_pin_bytes(pin: str) -> bytes:
        if "\x00" in pin:
            raise CtapError(Status.PIN_POLICY_VIOLATION, "the PIN must not contain NUL")
        # The platform's job per §6.5.1: PINs are NFC-normalized UTF-8.
        return unicodedata.normalize("NFC", pin).encode("utf-8")

    def admin_set_pin(self, pin: str) -> None:
        if self.is_set:
            raise CtapError(Status.NOT_ALLOWED, "a PIN is already set; change it instead")
        new_pin = self._admin_pin_bytes(pin)
        self._check_policy(new_pin)
        self._store_pin(new_pin)

    def admin_change_pin(self, old: str, new: str) -> None:
        self._check_can_try()
        self._check_pin_hash(pin_hash(self._admin_pin_bytes(old)))
        new_pin = self._admin_pin_bytes(new)
        self._check_policy(new_pin)
        self._replace_pin(new_pin)

    def status(self) -> dict[str, Any]:
        return {
            "set": self.is_set,
            "retries": self.retries,
            "force_change": self.force_change,
            "min_length": self.min_length,
            **self.builtin.status(),  # uv_retries
        }


def client_pin(auth: Authenticator, params: dict, interaction: Interaction) -> dict | None:
    """authenticatorClientPIN (0x06)."""
    return auth.pin_uv.handle(params, interaction)
