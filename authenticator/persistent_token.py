"""The persistent pinUvAuthToken (CTAP 2.2: permission pcmr) and the getInfo encIdentifier.

CTAP 2.2 adds the permission pcmr, persistentCredentialManagementReadOnly (0x40, getInfo option
``perCredMgmtRO``), so a platform can list the key's discoverable credentials again later
without asking for the PIN each time (§6.5.5.7 "pcmr", §6.8). What this key does:

- getPinUvAuthTokenUsingPinWithPermissions (clientPIN 0x09) with exactly the permission pcmr
  answers, after the usual PIN check, with the *persistent* pinUvAuthToken instead of a new
  per-boot one (pin.py calls :func:`issue`). pcmr together with other permissions is refused
  with INVALID_PARAMETER (:func:`check_permissions`); an rpId sent with it is ignored.
- The token is 32 random bytes in the store's meta table: it survives power cycles (a replug,
  ``Authenticator.power_cycle``, re-opening the state file) and is replaced whenever a PIN is
  set or changed (:func:`renew`, from pin.py); authenticatorReset wipes it with the rest of
  the meta table. It has no usage timers, no RP binding and no UP/UV flags.
- In authenticatorCredentialManagement it authorises the read-only subcommands only
  (getCredsMetadata, enumerateRPsBegin, enumerateCredentialsBegin; the getNext* ones need
  no pinUvAuthParam). deleteCredential and updateUserInformation with it are refused with
  PIN_AUTH_INVALID, the answer §6.8 gives for a token without the cm permission.
- getInfo's encIdentifier (0x19) is ``iv || AES-128-CBC(key, iv, identifier)`` with
  ``key = HKDF-SHA-256(salt = 32 zero bytes, IKM = persistent token, info = "encIdentifier",
  L = 16)`` and a fresh random IV per getInfo, so the value itself cannot track the key; only
  a holder of the persistent token learns the identifier (python-fido2's
  ``Info.get_identifier`` decrypts it). The identifier is 16 bytes derived from the master
  key: stable for the life of the key, new after authenticatorReset (which makes a new master
  key). encIdentifier is present once a persistent token exists (a PIN has been set).

Unsure (CTAP 2.2 text not at hand): the status for pcmr mixed with other permissions
(INVALID_PARAMETER here; UNAUTHORIZED_PERMISSION would be the other reading).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# pin.py imports this module, so its names are looked up at call time (import cycle).
from . import pin
from .ctap import CtapError, InfoKey, Status

if TYPE_CHECKING:
    from .device import Authenticator

META_PERSISTENT_TOKEN = "persistent_token"
TOKEN_LEN = 32
IDENTIFIER_LEN = 16


def supported(auth: Authenticator) -> bool:
    return auth.profile.per_cred_mgmt_ro


def current(auth: Authenticator) -> bytes | None:
    """The persistent pinUvAuthToken, or None before the first PIN (or on other profiles)."""
    if not supported(auth):
        return None
    return auth.store.get_meta(META_PERSISTENT_TOKEN)


def renew(auth: Authenticator) -> None:
    """A new persistent token (PIN set or changed): every earlier one stops working."""
    if supported(auth):
        auth.store.set_meta(META_PERSISTENT_TOKEN, auth.random(TOKEN_LEN))


# -- clientPIN ----------------------------------------------------------------------------


def check_permissions(requested: pin.Permission) -> None:
    """pcmr is asked for alone: the persistent token carries no other permission."""
    if requested & pin.Permission.PCMR and requested != pin.Permission.PCMR:
        raise CtapError(
            Status.INVALID_PARAMETER,
            "the pcmr permission must be requested alone (it selects the persistent token)",
        )


def issue(auth: Authenticator, protocol: pin.PinProtocol, shared_secret: bytes) -> dict[int, Any]:
    """The clientPIN response handing out the persistent token (after the PIN check)."""
    token = current(auth)
    if token is None:
        # A PIN set before this key knew persistent tokens (older state): make one now.
        renew(auth)
        token = current(auth)
    assert token is not None
    return {pin.ClientPinResponseKey.PIN_UV_AUTH_TOKEN: protocol.encrypt(shared_secret, token)}


# -- credential management ---------------------------------------------------------------


def authorize_credential_management(
    auth: Authenticator,
    pin_uv_auth_protocol: int | None,
    pin_uv_auth_param: bytes | None,
    message: bytes,
    *,
    read_only: bool,
) -> pin.TokenState | None:
    """The persistent token if ``pin_uv_auth_param`` verifies with it, else None.

    None lets the caller check the per-boot token as usual (and answer its errors). A
    persistent token on a subcommand that changes the table is PIN_AUTH_INVALID (§6.8).
    """
    token = current(auth)
    if token is None or pin_uv_auth_param is None or pin_uv_auth_protocol is None:
        return None
    if pin_uv_auth_protocol not in auth.pin_uv.protocols():
        return None
    protocol = auth.pin_uv.protocol(pin_uv_auth_protocol)
    if not protocol.verify(token, message, pin_uv_auth_param):
        return None
    if not read_only:
        raise CtapError(
            Status.PIN_AUTH_INVALID,
            "a persistent (pcmr) token only reads: deleting or updating needs the cm permission",
        )
    # RP-unbound, so it may enumerate every RP (§6.8.2, §6.8.3).
    return pin.TokenState(
        token=token, protocol=pin_uv_auth_protocol, permissions=pin.Permission.PCMR, in_use=True
    )


# -- getInfo ------------------------------------------------------------------------------


def info_options(auth: Authenticator) -> dict[str, bool]:
    return {"perCredMgmtRO": True} if supported(auth) else {}


def identifier(auth: Authenticator) -> bytes:
    """This key's 16-byte device identifier (new after every authenticatorReset)."""
    master = auth.store.get_meta("master_key") or b""
    return HKDF(
        algorithm=hashes.SHA256(), length=IDENTIFIER_LEN, salt=None, info=b"softkey/v1/identifier"
    ).derive(master)


def _encrypt(token: bytes, label: bytes, plaintext: bytes, iv: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=16, salt=b"\x00" * 32, info=label).derive(token)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(plaintext) + encryptor.finalize()


def info_members(auth: Authenticator) -> dict[int, Any]:
    token = current(auth)
    if token is None:
        return {}
    return {
        InfoKey.ENC_IDENTIFIER: _encrypt(token, b"encIdentifier", identifier(auth), auth.random(16))
    }
