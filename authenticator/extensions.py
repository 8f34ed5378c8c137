"""Authenticator extensions (CTAP 2.1 §12, 2.2 §12): credProtect, credBlob, hmac-secret,
largeBlobKey, minPinLength (CTAP 2.1); hmac-secret-mc and thirdPartyPayment (CTAP 2.2 only).

Which ones a profile has (``supported``) is what getInfo lists, exactly. Requests are parsed
once per command into small dataclasses (``parse_make_credential``/``parse_get_assertion``,
before user presence, so bad input fails without a touch); outputs are computed per
credential (``MakeCredentialExtensions.outputs``, ``assertion_outputs``), which is what
getNextAssertion needs. Extensions a profile does not support, and unknown names, are
ignored as the spec requires (§12: "authenticators MUST ignore unsupported extensions").

Where the per-credential data lives:
- hmac-secret: the 32-byte ``cred_random`` inside every credential ID (keywrap.py), flagged
  when the credential was made with hmac-secret. CredRandomWithUV and CredRandomWithoutUV
  are HMAC-SHA-256 derivations of it, so UV and non-UV assertions give unrelated outputs.
- credBlob: inside the credential ID (resident and non-resident alike).
- largeBlobKey: the resident slot's ``large_blob_key`` column (resident credentials only).
- thirdPartyPayment: a flag inside the credential ID (resident and non-resident alike), set
  when makeCredential asked for it (no makeCredential output); getAssertion answers
  thirdPartyPayment: true or false when asked, and credential management lists it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ctap import CtapError, InfoKey, Status
from .keywrap import MAX_CRED_BLOB, CredentialSecrets
from .profiles import CTAP2_1, CTAP2_2, Profile

if TYPE_CHECKING:
    from .ctap2 import Candidate
    from .device import Authenticator
    from .pin import PinProtocol

CRED_PROTECT = "credProtect"
CRED_BLOB = "credBlob"
HMAC_SECRET = "hmac-secret"
HMAC_SECRET_MC = "hmac-secret-mc"
LARGE_BLOB_KEY = "largeBlobKey"
MIN_PIN_LENGTH = "minPinLength"
THIRD_PARTY_PAYMENT = "thirdPartyPayment"

CRED_PROTECT_LEVELS = (1, 2, 3)
SALT_LEN = 32
LARGE_BLOB_KEY_LEN = 32
MAX_CRED_BLOB_LENGTH = MAX_CRED_BLOB  # getInfo maxCredBlobLength (spec minimum: 32)

# hmac-secret input map keys (§12.5).
KEY_AGREEMENT = 0x01
SALT_ENC = 0x02
SALT_AUTH = 0x03
PIN_UV_AUTH_PROTOCOL = 0x04


def supported(profile: Profile) -> tuple[str, ...]:
    """The extensions this profile implements, in getInfo order.

    A profile may name its own list (``Profile.extensions``); otherwise CTAP 2.0 and 2.1-pre
    keys have credProtect and hmac-secret, and CTAP 2.1 keys add the 2.1 extensions.
    """
    if profile.extensions:
        return profile.extensions
    names = [CRED_PROTECT, HMAC_SECRET]
    if profile.at_least(CTAP2_2):
        names.append(HMAC_SECRET_MC)  # defined by CTAP 2.2, not 2.1
    if profile.at_least(CTAP2_1):
        names += [CRED_BLOB, LARGE_BLOB_KEY, MIN_PIN_LENGTH]
    if profile.at_least(CTAP2_2):
        names.append(THIRD_PARTY_PAYMENT)
    return tuple(names)


def info_members(auth: Authenticator) -> dict[int, Any]:
    """getInfo members that exist because of an extension."""
    members: dict[int, Any] = {}
    names = auth.extensions
    if CRED_BLOB in names:
        members[InfoKey.MAX_CRED_BLOB_LENGTH] = MAX_CRED_BLOB_LENGTH
    if LARGE_BLOB_KEY in names:
        members[InfoKey.MAX_SERIALIZED_LARGE_BLOB_ARRAY] = (
            auth.profile.max_serialized_large_blob_array
        )
    return members


def info_options(auth: Authenticator) -> dict[str, bool]:
    # largeBlobKey is useless without authenticatorLargeBlobs: they come together.
    return {"largeBlobs": True} if LARGE_BLOB_KEY in auth.extensions else {}


def _typed(value: Any, kind: type, name: str) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise CtapError(
            Status.CBOR_UNEXPECTED_TYPE, f"extension {name} input must be {kind.__name__}"
        )
    return value


# -- hmac-secret --------------------------------------------------------------------------------


def cred_random(secrets: CredentialSecrets, uv: bool) -> bytes:
    """CredRandomWithUV / CredRandomWithoutUV (§12.5), derived from the ID's seed."""
    label = b"softkey/v1/CredRandomWithUV" if uv else b"softkey/v1/CredRandomWithoutUV"
    return hmac.new(secrets.cred_random, label, hashlib.sha256).digest()


@dataclass
class HmacSecretInput:
    """A verified, decrypted hmac-secret(-mc) input: the salts and how to answer."""

    protocol: PinProtocol
    shared_secret: bytes = field(repr=False)
    salts: bytes = field(repr=False)  # salt1, or salt1 || salt2

    def output(self, secrets: CredentialSecrets, uv: bool) -> bytes:
        key = cred_random(secrets, uv)
        outputs = b"".join(
            hmac.new(key, self.salts[i : i + SALT_LEN], hashlib.sha256).digest()
            for i in range(0, len(self.salts), SALT_LEN)
        )
        return self.protocol.encrypt(self.shared_secret, outputs)


def parse_hmac_secret_input(auth: Authenticator, value: Any, name: str) -> HmacSecretInput:
    """Decapsulate, verify saltAuth and decrypt the salts (§12.5 getAssertion steps)."""
    value = _typed(value, dict, name)
    for key in (KEY_AGREEMENT, SALT_ENC, SALT_AUTH):
        if key not in value:
            raise CtapError(Status.MISSING_PARAMETER, f"{name} input lacks member {key}")
    key_agreement = _typed(value[KEY_AGREEMENT], dict, name)
    salt_enc = _typed(value[SALT_ENC], bytes, name)
    salt_auth = _typed(value[SALT_AUTH], bytes, name)
    # pinUvAuthProtocol is optional and defaults to 1 (the 2.0 wire format has no member 4).
    version = _typed(value.get(PIN_UV_AUTH_PROTOCOL, 1), int, name)
    # pin.py owns the key-agreement keys the platform fetched with getKeyAgreement.
    protocol = auth.pin_uv.protocol(version)
    shared_secret = protocol.decapsulate(key_agreement)
    if not protocol.verify(shared_secret, salt_enc, salt_auth):
        raise CtapError(Status.PIN_AUTH_INVALID, f"{name} saltAuth does not verify")
    salts = protocol.decrypt(shared_secret, salt_enc)
    if salts is None or len(salts) not in (SALT_LEN, 2 * SALT_LEN):
        raise CtapError(Status.INVALID_PARAMETER, f"{name} salts must be 32 or 64 bytes")
    return HmacSecretInput(protocol, shared_secret, salts)


# -- makeCredential -------------------------------------------------------------------------------


@dataclass
class MakeCredentialExtensions:
    """What a makeCredential asked for, validated."""

    cred_protect: int = 1
    cred_protect_requested: bool = False
    cred_blob: bytes | None = None  # requested blob (stored only if short enough)
    hmac_secret: bool = False
    hmac_secret_mc: HmacSecretInput | None = None
    large_blob_key: bool = False
    min_pin_length: bool = False
    third_party_payment: bool = False

    @property
    def stored_cred_blob(self) -> bytes:
        if self.cred_blob is None or len(self.cred_blob) > MAX_CRED_BLOB_LENGTH:
            return b""
        return self.cred_blob

    def outputs(
        self, auth: Authenticator, secrets: CredentialSecrets, uv: bool, rp_id: str
    ) -> dict[str, Any]:
        """The authenticatorData extension outputs for the new credential."""
        out: dict[str, Any] = {}
        if self.cred_protect_requested:
            out[CRED_PROTECT] = self.cred_protect
        if self.cred_blob is not None:
            # true: stored; false: too long, not stored (§12.2).
            out[CRED_BLOB] = len(self.cred_blob) <= MAX_CRED_BLOB_LENGTH
        if self.hmac_secret:
            out[HMAC_SECRET] = True
        if self.hmac_secret_mc is not None:
            out[HMAC_SECRET_MC] = self.hmac_secret_mc.output(secrets, uv)
        if self.min_pin_length:
            # Only RP IDs the owner allowed (setMinPINLength minPinLengthRPIDs, §6.11.4).
            from .config import min_pin_length_rp_ids

            if rp_id in min_pin_length_rp_ids(auth):
                out[MIN_PIN_LENGTH] = auth.pin_uv.min_length
        return out


def parse_make_credential(
    auth: Authenticator, extensions: dict[Any, Any], *, rk: bool
) -> MakeCredentialExtensions:
    names = auth.extensions
    req = MakeCredentialExtensions()

    level = extensions.get(CRED_PROTECT)
    # An unknown level or a non-integer is ignored, as an unsupported input would be.
    if CRED_PROTECT in names and type(level) is int and level in CRED_PROTECT_LEVELS:
        req.cred_protect = level
        req.cred_protect_requested = True

    if CRED_BLOB in names and CRED_BLOB in extensions:
        req.cred_blob = _typed(extensions[CRED_BLOB], bytes, CRED_BLOB)

    if HMAC_SECRET in names and HMAC_SECRET in extensions:
        req.hmac_secret = _typed(extensions[HMAC_SECRET], bool, HMAC_SECRET)

    if HMAC_SECRET_MC in names and HMAC_SECRET_MC in extensions:
        if not req.hmac_secret:
            # hmac-secret-mc evaluates the PRF of the credential hmac-secret creates.
            raise CtapError(Status.MISSING_PARAMETER, "hmac-secret-mc needs hmac-secret: true")
        req.hmac_secret_mc = parse_hmac_secret_input(
            auth, extensions[HMAC_SECRET_MC], HMAC_SECRET_MC
        )

    if LARGE_BLOB_KEY in names and LARGE_BLOB_KEY in extensions:
        wanted = _typed(extensions[LARGE_BLOB_KEY], bool, LARGE_BLOB_KEY)
        # §12.3: the input must be true, and only discoverable credentials get a key.
        if not wanted:
            raise CtapError(Status.INVALID_OPTION, "largeBlobKey input must be true")
        if not rk:
            raise CtapError(
                Status.INVALID_OPTION, "largeBlobKey needs a discoverable credential (rk)"
            )
        req.large_blob_key = True

    if MIN_PIN_LENGTH in names and MIN_PIN_LENGTH in extensions:
        req.min_pin_length = _typed(extensions[MIN_PIN_LENGTH], bool, MIN_PIN_LENGTH)

    if THIRD_PARTY_PAYMENT in names and THIRD_PARTY_PAYMENT in extensions:
        # Stored with the credential (true) or not (false); makeCredential has no output.
        req.third_party_payment = _typed(extensions[THIRD_PARTY_PAYMENT], bool, THIRD_PARTY_PAYMENT)
    return req


# -- getAssertion ---------------------------------------------------------------------------------


@dataclass
class GetAssertionExtensions:
    """What a getAssertion asked for, validated; kept for getNextAssertion."""

    cred_blob: bool = False
    hmac_secret: HmacSecretInput | None = None
    large_blob_key: bool = False
    third_party_payment: bool = False


def parse_get_assertion(auth: Authenticator, extensions: dict[Any, Any]) -> GetAssertionExtensions:
    names = auth.extensions
    req = GetAssertionExtensions()
    if CRED_BLOB in names and CRED_BLOB in extensions:
        req.cred_blob = _typed(extensions[CRED_BLOB], bool, CRED_BLOB)
    if HMAC_SECRET in names and HMAC_SECRET in extensions:
        req.hmac_secret = parse_hmac_secret_input(auth, extensions[HMAC_SECRET], HMAC_SECRET)
    if LARGE_BLOB_KEY in names and LARGE_BLOB_KEY in extensions:
        if not _typed(extensions[LARGE_BLOB_KEY], bool, LARGE_BLOB_KEY):
            raise CtapError(Status.INVALID_OPTION, "largeBlobKey input must be true")
        req.large_blob_key = True
    if THIRD_PARTY_PAYMENT in names and THIRD_PARTY_PAYMENT in extensions:
        req.third_party_payment = _typed(extensions[THIRD_PARTY_PAYMENT], bool, THIRD_PARTY_PAYMENT)
    return req


def assertion_outputs(
    req: GetAssertionExtensions | None, cand: Candidate, uv: bool
) -> tuple[dict[str, Any], bytes | None]:
    """(authenticatorData extension outputs, largeBlobKey response member) for one credential."""
    if req is None:
        return {}, None
    out: dict[str, Any] = {}
    if req.cred_blob:
        out[CRED_BLOB] = cand.secrets.cred_blob  # empty if none was stored (§12.2)
    if req.hmac_secret is not None and cand.secrets.hmac_secret:
        # Credentials made without hmac-secret have no CredRandom: no output.
        out[HMAC_SECRET] = req.hmac_secret.output(cand.secrets, uv)
    if req.third_party_payment:
        # Whether this credential was made for third-party payment (CTAP 2.2 §12).
        out[THIRD_PARTY_PAYMENT] = cand.secrets.third_party_payment
    large_blob_key = None
    if req.large_blob_key and cand.resident is not None:
        large_blob_key = cand.resident.large_blob_key
    return out, large_blob_key
