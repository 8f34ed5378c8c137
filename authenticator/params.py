"""Typed access to decoded CBOR request maps, mapping wrong shapes to the spec's codes.

A missing required member is CTAP2_ERR_MISSING_PARAMETER; a member of the wrong CBOR type is
CTAP2_ERR_CBOR_UNEXPECTED_TYPE (CTAP 2.1 §8.1 "Message encoding", §6 parameter tables).
Unknown members are ignored, as the spec requires for forward compatibility.

Types are exact: CBOR ``true``/``false`` is never an integer and an integer is never a bool,
although Python's ``bool`` is a subclass of ``int`` (``True == 1``).

Field sizes live here too, so that every path that writes a credential — makeCredential,
credentialManagement updateUserInformation, and the admin path (tools/admin.py
add-credential) — applies the same limits (see "Field sizes" below).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar, overload

from .ctap import CtapError, Status

T = TypeVar("T")


def request_map(payload: bytes) -> dict[Any, Any]:
    """The CBOR map following the command byte (an empty payload is an empty map)."""
    from . import cbor

    if not payload:
        return {}
    value = cbor.decode(payload)
    if not isinstance(value, dict):
        raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "request parameters must be a CBOR map")
    return value


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@overload
def get(
    params: Mapping[Any, Any], key: Any, kind: type[T], *, required: Literal[True] = True
) -> T: ...


@overload
def get(
    params: Mapping[Any, Any], key: Any, kind: type[T], *, required: Literal[False]
) -> T | None: ...


def get(params: Mapping[Any, Any], key: Any, kind: type[T], *, required: bool = True) -> T | None:
    if key not in params:
        if required:
            raise CtapError(Status.MISSING_PARAMETER, f"missing member {key!r}")
        return None
    value = params[key]
    if not _is(value, kind):
        raise CtapError(
            Status.CBOR_UNEXPECTED_TYPE,
            f"member {key!r} must be {kind.__name__}, got {type(value).__name__}",
        )
    return value


def opt(params: Mapping[Any, Any], key: Any, kind: type[T]) -> T | None:
    return get(params, key, kind, required=False)


def descriptor_list(params: Mapping[Any, Any], key: Any) -> list[bytes]:
    """A list of PublicKeyCredentialDescriptor: the IDs of entries of type "public-key"."""
    items = opt(params, key, list)
    if items is None:
        return []
    ids = []
    for item in items:
        if not isinstance(item, dict):
            raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "credential descriptor must be a map")
        cred_type = get(item, "type", str)
        cred_id = get(item, "id", bytes)
        # Descriptors of unknown types are skipped, not errors (WebAuthn §5.8.3).
        if cred_type == "public-key":
            ids.append(cred_id)
    return ids


def options_map(params: Mapping[Any, Any], key: Any) -> dict[str, bool]:
    options = opt(params, key, dict)
    if options is None:
        return {}
    for name, value in options.items():
        if not isinstance(name, str) or not isinstance(value, bool):
            raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "options must map text to bool")
    return options


# -- Field sizes -------------------------------------------------------------------------------
#
# A wrong item length is CTAP1_ERR_INVALID_LENGTH, "Invalid message or item length" (CTAP 2.1
# §8.2 "Status codes"); it is what other authenticators answer for these too. Nothing is
# stored before these checks pass, so an oversized value never reaches a resident slot.

# clientDataHash is a SHA-256 hash (CTAP 2.1 §6.1 and §6.2 parameter tables: "Hash of the
# ClientData contextual binding specified by host"), and WebAuthn §5.8.1 defines the hash
# of the serialized client data as SHA-256: exactly 32 bytes.
CLIENT_DATA_HASH_LEN = 32

# user.id, the user handle: "an opaque byte sequence with a maximum size of 64 bytes"
# (WebAuthn §5.4.3 "PublicKeyCredentialUserEntity"); clients reject a user.id that is "not
# between 1 and 64 bytes (inclusive)" (WebAuthn §5.1.3 "Create a New Credential", step 5).
MIN_USER_HANDLE_LEN = 1
MAX_USER_HANDLE_LEN = 64

# rp.id: a valid domain string (WebAuthn §4 "RP ID"), so at most 253 bytes, the longest
# domain name in text form (RFC 1035 §2.3.4: 255 octets on the wire). CTAP 2.1 sets no bound
# of its own; this one also covers the non-domain IDs platforms use ("ssh:...",
# "android:apk-key-hash:..." and AppID URLs), which are far shorter in practice.
MAX_RP_ID_LEN = 253

# user.name, user.displayName and rp.name: CTAP 2.1 §6.1 (makeCredential, rp and user
# parameters) lets the authenticator truncate them, and WebAuthn §6.4.1 "String Truncation"
# says not to fewer than 64 bytes, at a character boundary. We store at most 64 bytes of
# UTF-8, cut before an incomplete code point.
MAX_NAME_LEN = 64


def user_handle_problem(user_id: bytes) -> str | None:
    """Why ``user_id`` is not an acceptable user handle, or None if it is (1 to 64 bytes)."""
    if not MIN_USER_HANDLE_LEN <= len(user_id) <= MAX_USER_HANDLE_LEN:
        return (
            f"user.id must be {MIN_USER_HANDLE_LEN} to {MAX_USER_HANDLE_LEN} bytes, "
            f"got {len(user_id)}"
        )
    return None


def rp_id_problem(rp_id: str) -> str | None:
    """Why ``rp_id`` is not an acceptable RP ID, or None if it is (1 to 253 UTF-8 bytes)."""
    size = len(rp_id.encode("utf-8"))
    if size == 0:
        return "rp.id must not be empty"
    if size > MAX_RP_ID_LEN:
        return f"rp.id must be at most {MAX_RP_ID_LEN} bytes, got {size}"
    return None


def truncate_name(name: str | None) -> str | None:
    """``name`` cut to at most MAX_NAME_LEN bytes of UTF-8, never inside a code point."""
    if name is None:
        return None
    data = name.encode("utf-8")
    if len(data) <= MAX_NAME_LEN:
        return name
    # A prefix of valid UTF-8 is valid except for a possibly cut last code point, which
    # "ignore" drops.
    return data[:MAX_NAME_LEN].decode("utf-8", "ignore")


def get_client_data_hash(params: Mapping[Any, Any], key: Any) -> bytes:
    """The required clientDataHash member: a byte string of exactly 32 bytes."""
    value = get(params, key, bytes)
    if len(value) != CLIENT_DATA_HASH_LEN:
        raise CtapError(
            Status.INVALID_LENGTH,
            f"clientDataHash must be {CLIENT_DATA_HASH_LEN} bytes, got {len(value)}",
        )
    return value


def get_rp_id(params: Mapping[Any, Any], key: Any) -> str:
    """A required RP ID member (rp.id, or getAssertion's rpId): non-empty and bounded."""
    value = get(params, key, str)
    problem = rp_id_problem(value)
    if problem is not None:
        raise CtapError(Status.INVALID_LENGTH, problem)
    return value


def get_user_handle(user: Mapping[Any, Any]) -> bytes:
    """The required user.id of a PublicKeyCredentialUserEntity: 1 to 64 bytes."""
    value = get(user, "id", bytes)
    problem = user_handle_problem(value)
    if problem is not None:
        raise CtapError(Status.INVALID_LENGTH, problem)
    return value


def get_name(entity: Mapping[Any, Any], key: str) -> str | None:
    """An optional name member (name, displayName) of an entity, truncated to be stored."""
    return truncate_name(opt(entity, key, str))


# rp.icon / user.icon: "a URL of type text string" (CTAP 2.0 §5.1, rp and user parameters).
# WebAuthn L1 §5.4.1 (PublicKeyCredentialEntity.icon) lets an authenticator ignore an icon
# longer than 128 bytes. A longer one is dropped, never cut: a truncated URL is another URL.
MAX_ICON_LEN = 128


def get_icon(entity: Mapping[Any, Any]) -> str | None:
    """The optional icon member of an entity: a text string (else CBOR_UNEXPECTED_TYPE);
    None if absent or longer than MAX_ICON_LEN bytes of UTF-8."""
    icon = opt(entity, "icon", str)
    if icon is None or len(icon.encode("utf-8")) > MAX_ICON_LEN:
        return None
    return icon
