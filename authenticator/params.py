"""Typed access to decoded CBOR request maps, mapping wrong shapes to the spec's codes.

A missing required member is CTAP2_ERR_MISSING_PARAMETER; a member of the wrong CBOR type is
CTAP2_ERR_CBOR_UNEXPECTED_TYPE (CTAP 2.1 §8.1 "Message encoding", §6 parameter tables).
Unknown members are ignored, as the spec requires for forward compatibility.
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
