"""authenticatorCredentialManagement: 0x0A (CTAP 2.1 §6.8) and the 0x41 preview.

Which command a profile answers is data (``Profile.credman``):

- ``none`` (CTAP 2.0): neither command exists (INVALID_COMMAND). A resident credential can
  only be removed by authenticatorReset, which also kills every non-resident credential —
  the user pain of seed 003.
- ``preview`` (CTAP 2.1-pre, e.g. YubiKey 5 before 5.5): 0x41 with getCredsMetadata,
  enumerateRPs*, enumerateCredentials*, deleteCredential; option credentialMgmtPreview.
- ``full`` (CTAP 2.1): 0x0A adds updateUserInformation and permission-scoped tokens (cm);
  0x41 still answers with the preview subset and credentialMgmtPreview is still advertised,
  as shipping 2.1 keys do, for platforms that only know the preview.

Every subcommand except the two getNext* ones needs a pinUvAuthParam over
``subCommand || CBOR(subCommandParams)`` from a token with the cm permission (any token on
the preview: 2.1-pre tokens have no permissions; and on a 2.1 key's 0x41 a token from
getPinToken too, ``Profile.preview_accepts_pin_token``). Enumeration cursors live in
``auth.pending`` and any other command — including any other credential-management
subcommand — ends them. On CTAP 2.2 keys a persistent token (permission pcmr,
persistent_token.py) also authorises the read-only subcommands, and credentials carry
thirdPartyPayment (0x0C).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum, unique
from typing import TYPE_CHECKING, Any

from . import cbor, cose, persistent_token
from .ctap import Cmd, CtapError, Status
from .environment import Interaction
from .extensions import THIRD_PARTY_PAYMENT
from .params import get, get_name, get_user_handle, opt
from .pin import Permission, TokenState
from .profiles import Profile
from .store import ResidentCredential

if TYPE_CHECKING:
    from .device import Authenticator, Handler

# getCredsMetadata must give a number even when only storage limits the slot table
# (the unlimited-rk profile): report the largest two-byte value.
UNLIMITED_REMAINING = 0xFFFF


@unique
class CredMgmtCmd(IntEnum):
    GET_CREDS_METADATA = 0x01
    ENUMERATE_RPS_BEGIN = 0x02
    ENUMERATE_RPS_GET_NEXT_RP = 0x03
    ENUMERATE_CREDENTIALS_BEGIN = 0x04
    ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL = 0x05
    DELETE_CREDENTIAL = 0x06
    UPDATE_USER_INFORMATION = 0x07


@unique
class CredMgmtKey(IntEnum):
    SUB_COMMAND = 0x01
    SUB_COMMAND_PARAMS = 0x02
    PIN_UV_AUTH_PROTOCOL = 0x03
    PIN_UV_AUTH_PARAM = 0x04


@unique
class CredMgmtParamKey(IntEnum):
    RP_ID_HASH = 0x01
    CREDENTIAL_ID = 0x02
    USER = 0x03


@unique
class CredMgmtResponseKey(IntEnum):
    EXISTING_RESIDENT_CREDENTIALS_COUNT = 0x01
    MAX_POSSIBLE_REMAINING_RESIDENT_CREDENTIALS_COUNT = 0x02
    RP = 0x03
    RP_ID_HASH = 0x04
    TOTAL_RPS = 0x05
    USER = 0x06
    CREDENTIAL_ID = 0x07
    PUBLIC_KEY = 0x08
    TOTAL_CREDENTIALS = 0x09
    CRED_PROTECT = 0x0A
    LARGE_BLOB_KEY = 0x0B
    THIRD_PARTY_PAYMENT = 0x0C  # CTAP 2.2


C = CredMgmtCmd
R = CredMgmtResponseKey
PREVIEW_SUBCOMMANDS = frozenset(
    {
        C.GET_CREDS_METADATA,
        C.ENUMERATE_RPS_BEGIN,
        C.ENUMERATE_RPS_GET_NEXT_RP,
        C.ENUMERATE_CREDENTIALS_BEGIN,
        C.ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL,
        C.DELETE_CREDENTIAL,
    }
)
FULL_SUBCOMMANDS = PREVIEW_SUBCOMMANDS | {C.UPDATE_USER_INFORMATION}
# What a persistent (pcmr) token may do (CTAP 2.2 §6.8); the getNext* need no token at all.
READ_ONLY_SUBCOMMANDS = frozenset(
    {C.GET_CREDS_METADATA, C.ENUMERATE_RPS_BEGIN, C.ENUMERATE_CREDENTIALS_BEGIN}
)


@dataclass
class RpCursor:
    """enumerateRPsBegin snapshot: the RPs still to hand out (id, name, hash)."""

    remaining: list[tuple[str, str | None, bytes]]


@dataclass
class CredentialCursor:
    """enumerateCredentialsBegin snapshot: the RP's credentials still to hand out, read once
    by Begin, in reverse (the next one is last, so taking it is O(1))."""

    remaining: list[ResidentCredential]


# -- registration with the device ------------------------------------------------------------


def handlers(profile: Profile) -> dict[int, Handler]:
    if profile.credman == "none":
        return {}
    table: dict[int, Handler] = {Cmd.CREDENTIAL_MANAGEMENT_PRE: credential_management_preview}
    if profile.credman == "full":
        table[Cmd.CREDENTIAL_MANAGEMENT] = credential_management
    return table


def info_options(auth: Authenticator) -> dict[str, bool]:
    kind = auth.profile.credman
    if kind == "none":
        return {}
    options = {"credentialMgmtPreview": True}
    if kind == "full":
        options["credMgmt"] = True
    return options


def credential_management(
    auth: Authenticator, params: dict, interaction: Interaction
) -> dict | None:
    """authenticatorCredentialManagement (0x0A)."""
    return _handle(auth, params, FULL_SUBCOMMANDS, accept_pin_token=False)


def credential_management_preview(
    auth: Authenticator, params: dict, interaction: Interaction
) -> dict | None:
    """The FIDO_2_1_PRE prototype command (0x41): the same, without updateUserInformation.

    A platform that knows only the preview gets its token with getPinToken, having no way to
    ask for cm (CTAP 2.1 §6.5.5.7 gives such a token mc and ga; §6.8 wants cm): accepted here
    unless the profile says otherwise. 0x0A keeps the §6.8 rule.
    """
    accept = auth.profile.preview_accepts_pin_token
    return _handle(auth, params, PREVIEW_SUBCOMMANDS, accept_pin_token=accept)


# -- the command ------------------------------------------------------------------------------


def _handle(
    auth: Authenticator, params: dict, allowed: frozenset[int], *, accept_pin_token: bool
) -> dict | None:
    K = CredMgmtKey
    # Take the cursor, then end every multi-call state: only the matching getNext* may
    # continue it, and it puts it back itself.
    cursor, auth.pending = auth.pending, None
    sub = get(params, K.SUB_COMMAND, int)
    sub_params = opt(params, K.SUB_COMMAND_PARAMS, dict)
    protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)
    auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    if sub not in allowed:
        raise CtapError(
            Status.INVALID_SUBCOMMAND, f"credential management subcommand 0x{sub:02x} unsupported"
        )
    if sub == C.ENUMERATE_RPS_GET_NEXT_RP:
        return _next_rp(auth, cursor)
    if sub == C.ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL:
        return _next_credential(auth, cursor)

    # The bytes the platform MACed: our strict decoder only accepts canonical CBOR, so
    # re-encoding the decoded map reproduces them exactly.
    message = bytes([sub]) + (cbor.encode(sub_params) if sub_params is not None else b"")
    # CTAP 2.2: a persistent (pcmr) token may read; anything else needs a per-boot token.
    token = persistent_token.authorize_credential_management(
        auth, protocol, auth_param, message, read_only=sub in READ_ONLY_SUBCOMMANDS
    )
    if token is None:
        token = auth.pin_uv.authorize(
            protocol, auth_param, message, Permission.CM, accept_pin_token=accept_pin_token
        )
    sub_params = sub_params or {}

    if sub == C.GET_CREDS_METADATA:
        _require_unbound(token)
        remaining = auth.remaining_discoverable()
        return {
            R.EXISTING_RESIDENT_CREDENTIALS_COUNT: auth.store.resident_count(),
            R.MAX_POSSIBLE_REMAINING_RESIDENT_CREDENTIALS_COUNT: (
                UNLIMITED_REMAINING if remaining is None else remaining
            ),
        }
    if sub == C.ENUMERATE_RPS_BEGIN:
        _require_unbound(token)
        return _begin_rps(auth)
    if sub == C.ENUMERATE_CREDENTIALS_BEGIN:
        rp_hash = get(sub_params, CredMgmtParamKey.RP_ID_HASH, bytes)
        _require_rp(token, rp_hash)
        return _begin_credentials(auth, rp_hash)
    if sub == C.DELETE_CREDENTIAL:
        cred = _find(auth, sub_params)
        _require_rp(token, cred.rp_id_hash)
        auth.delete_credential(cred.credential_id)
        return None
    # updateUserInformation (§6.8.6)
    cred = _find(auth, sub_params)
    user = get(sub_params, CredMgmtParamKey.USER, dict)
    _require_rp(token, cred.rp_id_hash)
    user_id = get_user_handle(user)  # 1-64 bytes, else INVALID_LENGTH (params.py)
    if user_id != cred.user_id:
        raise CtapError(Status.INVALID_PARAMETER, "user.id differs from the credential's")
    # Members left out are removed (the platform sends the whole new entity).
    auth.store.update_user(
        cred.credential_id, get_name(user, "name"), get_name(user, "displayName")
    )
    auth.events.emit("credentialUpdated", rp_id=cred.rp_id, credential_id=cred.credential_id)
    return None


def _require_unbound(token: TokenState) -> None:
    # A token bound to one RP may not look at the whole table (§6.8.2, §6.8.3).
    if token.rp_id is not None:
        raise CtapError(Status.PIN_AUTH_INVALID, f"the token is bound to {token.rp_id}")


def _require_rp(token: TokenState, rp_hash: bytes) -> None:
    from .ctap2 import rp_id_hash

    if token.rp_id is not None and rp_id_hash(token.rp_id) != rp_hash:
        raise CtapError(Status.PIN_AUTH_INVALID, f"the token is bound to {token.rp_id}")


def _find(auth: Authenticator, sub_params: dict) -> ResidentCredential:
    descriptor = get(sub_params, CredMgmtParamKey.CREDENTIAL_ID, dict)
    credential_id = get(descriptor, "id", bytes)
    cred = auth.store.get_resident(credential_id)
    if cred is None:
        raise CtapError(Status.NO_CREDENTIALS, "no discoverable credential with that ID")
    return cred


def _rp_entity(rp_id: str, rp_name: str | None) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": rp_id}
    if rp_name is not None:
        entity["name"] = rp_name
    return entity


def _begin_rps(auth: Authenticator) -> dict:
    seen: dict[bytes, tuple[str, str | None, bytes]] = {}
    for cred in auth.store.list_resident():
        seen.setdefault(cred.rp_id_hash, (cred.rp_id, cred.rp_name, cred.rp_id_hash))
    if not seen:
        raise CtapError(Status.NO_CREDENTIALS, "no discoverable credentials on this key")
    rps = list(seen.values())
    first, rest = rps[0], rps[1:]
    if rest:
        auth.pending = RpCursor(rest)
    return {
        R.RP: _rp_entity(first[0], first[1]),
        R.RP_ID_HASH: first[2],
        R.TOTAL_RPS: len(rps),
    }


def _next_rp(auth: Authenticator, cursor: object) -> dict:
    if not isinstance(cursor, RpCursor) or not cursor.remaining:
        raise CtapError(Status.NOT_ALLOWED, "no enumerateRPsBegin in progress")
    rp_id, rp_name, rp_hash = cursor.remaining.pop(0)
    if cursor.remaining:
        auth.pending = cursor
    return {R.RP: _rp_entity(rp_id, rp_name), R.RP_ID_HASH: rp_hash}


# Encoded once: the fixed parts of every entry (CTAP2 canonical order: text keys by length,
# then bytewise, so "id" < "icon" < "name" < "displayName"; "id" < "type").
_ID = cbor.encode("id")
_ICON = cbor.encode("icon")
_NAME = cbor.encode("name")
_DISPLAY_NAME = cbor.encode("displayName")
_PUBLIC_KEY_TYPE = cbor.encode("type") + cbor.encode("public-key")
_DESCRIPTOR_HEAD = bytes([0xA2]) + _ID  # a map of two: id, type
_USER_HEADS = tuple(bytes([0xA0 + n]) for n in range(5))  # a map of n members


def _credential_entry(
    cred: ResidentCredential, third_party_payment: bool | None, total: int | None = None
) -> dict:
    """One credential's response (§6.8.4), from the stored row alone: its COSE_Key and
    thirdPartyPayment are columns (store.py schema 5), so no unwrapping and no query."""
    user = [_ID, cbor.encode(cred.user_id)]
    if cred.user_icon is not None:  # kept by 2.0-style profiles (Profile.icons)
        user += (_ICON, cbor.encode(cred.user_icon))
    if cred.user_name is not None:
        user += (_NAME, cbor.encode(cred.user_name))
    if cred.user_display_name is not None:
        user += (_DISPLAY_NAME, cbor.encode(cred.user_display_name))
    user[0] = _USER_HEADS[len(user) // 2] + _ID
    # Plain int keys (R's values) take the encoder's fast path and encode the same.
    entry: dict[int, Any] = {
        6: cbor.Encoded(b"".join(user)),  # R.USER
        7: cbor.Encoded(  # R.CREDENTIAL_ID
            _DESCRIPTOR_HEAD + cbor.encode(cred.credential_id) + _PUBLIC_KEY_TYPE
        ),
        10: cred.cred_protect,  # R.CRED_PROTECT
    }
    if cred.public_key is not None:
        entry[8] = cbor.Encoded(cred.public_key)  # R.PUBLIC_KEY, stored encoded
    if total is not None:
        entry[9] = total  # R.TOTAL_CREDENTIALS
    if cred.large_blob_key is not None:
        entry[11] = cred.large_blob_key  # R.LARGE_BLOB_KEY
    if third_party_payment is not None:
        entry[12] = third_party_payment  # R.THIRD_PARTY_PAYMENT
    return entry


def stored_public_keys(
    auth: Authenticator, creds: list[ResidentCredential]
) -> list[ResidentCredential]:
    """``creds`` with public_key and third_party_payment filled in where a row written before
    schema 5 lacks them: derived once from the wrapped private key and saved in the row."""
    missing = [c for c in creds if c.public_key is None or c.third_party_payment is None]
    if not missing:
        return creds
    filled: dict[bytes, ResidentCredential] = {}
    updates: list[tuple[bytes, bytes | None, bool]] = []
    for cred in missing:
        secrets = auth.secrets_of(cred.credential_id, cred.rp_id_hash)  # imported ones too
        if secrets is None:  # nothing to derive it from: listed without a key, as before
            filled[cred.credential_id] = replace(cred, third_party_payment=False)
            continue
        key = cbor.encode(cose.public_cose(secrets.alg, secrets.private_key))
        tpp = secrets.third_party_payment
        filled[cred.credential_id] = replace(cred, public_key=key, third_party_payment=tpp)
        updates.append((cred.credential_id, key, tpp))
    if updates:
        auth.store.set_public_keys(updates)
    return [filled.get(c.credential_id, c) for c in creds]


def _begin_credentials(auth: Authenticator, rp_hash: bytes) -> dict:
    creds = auth.store.list_resident(rp_hash)  # one query for the whole enumeration
    if not creds:
        raise CtapError(Status.NO_CREDENTIALS, "no discoverable credentials for that RP")
    creds = stored_public_keys(auth, creds)
    first = creds[0]
    if len(creds) > 1:
        rest = creds[1:]
        rest.reverse()
        auth.pending = CredentialCursor(rest)
    return _credential_entry(first, _third_party_payment(auth, first), len(creds))


def _third_party_payment(auth: Authenticator, cred: ResidentCredential) -> bool | None:
    if THIRD_PARTY_PAYMENT not in auth.extensions:  # a CTAP 2.2 member (§6.8.4)
        return None
    return bool(cred.third_party_payment)


def _next_credential(auth: Authenticator, cursor: object) -> dict:
    if not isinstance(cursor, CredentialCursor) or not cursor.remaining:
        raise CtapError(Status.NOT_ALLOWED, "no enumerateCredentialsBegin in progress")
    # Deleting or updating a credential is another subcommand, which ends the enumeration:
    # the snapshot cannot go stale while the cursor lives.
    cred = cursor.remaining.pop()
    if cursor.remaining:
        auth.pending = cursor
    return _credential_entry(cred, _third_party_payment(auth, cred))
