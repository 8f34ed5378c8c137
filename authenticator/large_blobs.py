"""authenticatorLargeBlobs (0x0C, CTAP 2.1 §6.10): the serialized large-blob array.

The array is opaque to the device: a CBOR array of encrypted blobs (platforms encrypt each
with a credential's largeBlobKey) followed by LEFT(SHA-256(array), 16). It is read in
fragments (``get`` + ``offset``) and replaced as a whole by a run of ``set`` fragments; the
new array takes effect only once all ``length`` bytes arrived and the checksum matched, so a
torn or corrupt write never replaces the stored array. Writes need a pinUvAuthToken with the
lbw permission once the key has a PIN (or alwaysUv).

The array lives in the store's meta table (one atomic write); authenticatorReset empties it.
The write in progress is multi-call state (``Authenticator.pending``): any other command
abandons it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum, unique
from typing import TYPE_CHECKING

from .ctap import MAX_MSG_SIZE, Cmd, CtapError, Status
from .environment import Interaction
from .extensions import LARGE_BLOB_KEY, supported
from .params import opt
from .pin import Permission
from .profiles import Profile

if TYPE_CHECKING:
    from .device import Authenticator, Handler

META_ARRAY = "large_blob_array"
CHECKSUM_LEN = 16
# An empty CBOR array (0x80) and its truncated SHA-256: the array of a new or reset key.
INITIAL_ARRAY = b"\x80" + hashlib.sha256(b"\x80").digest()[:CHECKSUM_LEN]
# maxFragmentLength = maxMsgSize - 64 (§6.10.1): room for the CBOR around a fragment.
MAX_FRAGMENT_LENGTH = MAX_MSG_SIZE - 64
MIN_SERIALIZED_LARGE_BLOB_ARRAY = 1024  # the spec's floor for maxSerializedLargeBlobArray


@unique
class LargeBlobsKey(IntEnum):
    GET = 0x01
    SET = 0x02
    OFFSET = 0x03
    LENGTH = 0x04
    PIN_UV_AUTH_PARAM = 0x05
    PIN_UV_AUTH_PROTOCOL = 0x06


@unique
class LargeBlobsResponseKey(IntEnum):
    CONFIG = 0x01


@dataclass
class PendingLargeBlobWrite:
    """A serialized array being written fragment by fragment."""

    expected_length: int
    buffer: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def expected_next_offset(self) -> int:
        return len(self.buffer)


def is_supported(profile: Profile) -> bool:
    return LARGE_BLOB_KEY in supported(profile)


def handlers(profile: Profile) -> dict[int, Handler]:
    return {Cmd.LARGE_BLOBS: large_blobs} if is_supported(profile) else {}


def checksum_ok(serialized: bytes) -> bool:
    if len(serialized) < CHECKSUM_LEN + 1:
        return False
    body, tag = serialized[:-CHECKSUM_LEN], serialized[-CHECKSUM_LEN:]
    return hmac.compare_digest(hashlib.sha256(body).digest()[:CHECKSUM_LEN], tag)


def read_array(auth: Authenticator) -> bytes:
    """The current serialized large-blob array (admin API and ``get``)."""
    return auth.store.get_meta(META_ARRAY) or INITIAL_ARRAY


def large_blobs(auth: Authenticator, params: dict, interaction: Interaction) -> dict | None:
    K = LargeBlobsKey
    get_length = opt(params, K.GET, int)
    fragment = opt(params, K.SET, bytes)
    offset = opt(params, K.OFFSET, int)
    length = opt(params, K.LENGTH, int)
    pin_uv_auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    pin_uv_auth_protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)

    pending = auth.pending
    if not isinstance(pending, PendingLargeBlobWrite):
        # Other multi-call state (getNextAssertion, credMgmt cursors) ends here.
        auth.pending = pending = None

    if offset is None:
        raise CtapError(Status.INVALID_PARAMETER, "largeBlobs needs an offset")
    if (get_length is None) == (fragment is None):
        raise CtapError(Status.INVALID_PARAMETER, "largeBlobs takes exactly one of get, set")
    if offset < 0 or (get_length is not None and get_length < 0) or (length or 0) < 0:
        raise CtapError(Status.INVALID_PARAMETER, "offsets and lengths are unsigned")

    if get_length is not None:
        if length is not None:
            raise CtapError(Status.INVALID_PARAMETER, "length is only for set")
        if get_length > MAX_FRAGMENT_LENGTH:
            raise CtapError(
                Status.INVALID_LENGTH, f"get at most {MAX_FRAGMENT_LENGTH} bytes at a time"
            )
        serialized = read_array(auth)
        if offset > len(serialized):
            raise CtapError(
                Status.INVALID_PARAMETER,
                f"offset {offset} is past the end of the {len(serialized)}-byte array",
            )
        return {LargeBlobsResponseKey.CONFIG: serialized[offset : offset + get_length]}

    assert fragment is not None
    if len(fragment) > MAX_FRAGMENT_LENGTH:
        raise CtapError(Status.INVALID_LENGTH, f"set at most {MAX_FRAGMENT_LENGTH} bytes at a time")
    limit = auth.profile.max_serialized_large_blob_array
    if offset == 0:
        if length is None:
            raise CtapError(Status.INVALID_PARAMETER, "the first set fragment needs the length")
        if length > limit:
            raise CtapError(
                Status.LARGE_BLOB_STORAGE_FULL,
                f"a {length}-byte array does not fit: this key stores at most {limit} bytes",
            )
        if length < CHECKSUM_LEN + 1:
            raise CtapError(Status.INVALID_PARAMETER, "an array is at least 17 bytes")
        expected_length = length
        expected_next_offset = 0
    else:
        if length is not None:
            raise CtapError(Status.INVALID_PARAMETER, "length is only for the first fragment")
        if pending is None:
            raise CtapError(Status.INVALID_SEQ, "no large-blob write in progress; start at 0")
        expected_length = pending.expected_length
        expected_next_offset = pending.expected_next_offset
    if offset != expected_next_offset:
        raise CtapError(
            Status.INVALID_SEQ, f"expected the fragment at offset {expected_next_offset}"
        )

    pin_uv = auth.pin_uv
    if pin_uv.is_set or pin_uv.always_uv:
        # §6.10.2: 32 × 0xff || h'0c00' || uint32LittleEndian(offset) || SHA-256(fragment).
        message = (
            b"\xff" * 32
            + bytes([Cmd.LARGE_BLOBS, 0x00])
            + struct.pack("<I", offset)
            + hashlib.sha256(fragment).digest()
        )
        pin_uv.authorize(pin_uv_auth_protocol, pin_uv_auth_param, message, Permission.LBW)

    if offset + len(fragment) > expected_length:
        raise CtapError(
            Status.INVALID_PARAMETER, "the fragments are longer than the announced length"
        )
    if offset == 0:
        pending = PendingLargeBlobWrite(expected_length)
    assert pending is not None
    pending.buffer += fragment
    auth.pending = pending
    if pending.expected_next_offset < expected_length:
        return None

    auth.pending = None
    serialized = bytes(pending.buffer)
    if not checksum_ok(serialized):
        # Nothing is replaced: the stored array stays as it was.
        raise CtapError(
            Status.INTEGRITY_FAILURE, "the array's trailing SHA-256 checksum does not match"
        )
    auth.store.set_meta(META_ARRAY, serialized)
    return None
