"""Strict CTAP2 canonical CBOR (CTAP 2.1 §8 "Message Encoding").

Requests are decoded strictly: only definite lengths, shortest-form integers and lengths,
map keys in CTAP2 canonical order without duplicates, no tags, no floats, no `undefined`,
valid UTF-8, a bounded nesting depth and no trailing bytes. Every violation raises
``CtapError(INVALID_CBOR)``; callers turn wrong *types* of well-formed values into
CBOR_UNEXPECTED_TYPE themselves.

Map keys must be integers (major types 0 and 1) or text strings (major type 3): every map
CTAP 2.1 defines is keyed so — command parameters and COSE_Keys by integers (§8 "Message
Encoding", RFC 8152 §7), WebAuthn entities, options and extension maps by text. Any other
key (``true``/``false``/``null``, byte strings, floats, arrays, maps) is INVALID_CBOR.
This is a security check, not pedantry: in Python ``True == 1`` and ``hash(True) ==
hash(1)``, so a map ``{1: a, true: b}`` — distinct, canonically ordered CBOR keys — would
otherwise decode to ``{1: b}`` and a handler reading member 1 would see the attacker's
second value. With keys limited to ``int`` and ``str`` (which never compare equal to each
other), distinct encodings are distinct Python keys, so the strictly increasing encoded
order checked below also rules out duplicates in the decoded dict.

Responses are encoded in CTAP2 canonical form: map keys sorted by major type, then by
encoded length, then bytewise (§8 "CTAP2 canonical CBOR encoding form"). This is not the
same order as RFC 7049's length-first rule for mixed-type maps, which is why we do not use
``cbor2.dumps(canonical=True)``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .ctap import CtapError, Status

MAX_DEPTH = 8
# Major types allowed for map keys: unsigned integer, negative integer, text string.
_KEY_MAJORS = frozenset((0, 1, 3))
_TINY = tuple(tuple(bytes([(major << 5) | v]) for v in range(24)) for major in range(8))
_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return _TINY[major][value]
    if value < 0x100:
        return bytes([(major << 5) | 24, value])
    if value < 0x10000:
        return bytes([(major << 5) | 25]) + _U16.pack(value)
    if value < 0x100000000:
        return bytes([(major << 5) | 26]) + _U32.pack(value)
    if value < 0x10000000000000000:
        return bytes([(major << 5) | 27]) + _U64.pack(value)
    raise ValueError("integer out of CBOR range")


class Encoded(bytes):
    """One CBOR item already encoded in CTAP2 canonical form, spliced into a response as is:
    for parts that are stored encoded (a COSE_Key) or encoded once and sent many times."""

    __slots__ = ()


def encode(value: Any) -> bytes:
    """Encode a response value in CTAP2 canonical form."""
    # Exact-type checks first: responses are mostly plain bytes/str/int/dict/list, and
    # isinstance against the Mapping/Sequence ABCs is slow. Subclasses (IntEnum keys, bool)
    # and other mappings/sequences take the general path below.
    kind = type(value)
    if kind is bytes:
        return _head(2, len(value)) + value
    if kind is str:
        data = value.encode("utf-8")
        return _head(3, len(data)) + data
    if kind is int:
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if kind is dict:
        return _encode_map(value)
    if kind is list:
        return _head(4, len(value)) + b"".join([encode(v) for v in value])
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if value is None:
        return b"\xf6"
    if kind is Encoded:
        return bytes(value)
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return _head(2, len(data)) + data
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _head(3, len(data)) + data
    if isinstance(value, Mapping):
        return _encode_map(value)
    if isinstance(value, Sequence):
        return _head(4, len(value)) + b"".join([encode(v) for v in value])
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


def _encode_map(value: Mapping[Any, Any]) -> bytes:
    # Plain bytewise order of the encoded keys is the canonical order (major type, then
    # length, then bytes) for integer, text and byte-string keys (every CTAP map has integer
    # or text keys): the major type is the first byte's high bits, and within one major type
    # a longer encoding has a larger head, so a larger first differing byte. Distinct keys
    # have distinct encodings, so the values never decide.
    items = sorted([(encode(k), encode(v)) for k, v in value.items()])
    return _head(5, len(items)) + b"".join([k + v for k, v in items])


class _Decoder:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def _fail(self, why: str) -> CtapError:
        return CtapError(Status.INVALID_CBOR, why)

    def _take(self, n: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            raise self._fail("truncated CBOR item")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def _argument(self, info: int) -> int:
        if info == 24:
            value = self._take(1)[0]
            minimum = 24
        elif info == 25:
            value = _U16.unpack(self._take(2))[0]
            minimum = 0x100
        elif info == 26:
            value = _U32.unpack(self._take(4))[0]
            minimum = 0x10000
        elif info == 27:
            value = _U64.unpack(self._take(8))[0]
            minimum = 0x100000000
        else:
            # 28-30 are reserved; 31 is indefinite length, which CTAP2 forbids.
            raise self._fail("indefinite length or reserved additional info")
        if value < minimum:
            raise self._fail("integer or length not in shortest form")
        return value

    def item(self, depth: int) -> Any:
        # Hot path (every request): the head and strings are read with locals, not _take.
        if depth > MAX_DEPTH:
            raise self._fail("nesting too deep")
        data, pos, end = self.data, self.pos, self.end
        if pos >= end:
            raise self._fail("truncated CBOR item")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            self.pos = pos + 1
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            raise self._fail("unsupported simple value or float")
        if info < 24:
            arg = info
            pos += 1
            self.pos = pos
        else:
            self.pos = pos + 1
            arg = self._argument(info)
            pos = self.pos
        if major == 0:
            return arg
        if major == 2 or major == 3:
            stop = pos + arg
            if stop > end:
                raise self._fail("truncated CBOR item")
            self.pos = stop
            if major == 2:
                return data[pos:stop]
            try:
                return data[pos:stop].decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail("text string is not valid UTF-8") from None
        if major == 5:
            if arg * 2 > end - pos:
                raise self._fail("map longer than message")
            result: dict[Any, Any] = {}
            previous: bytes | None = None
            for _ in range(arg):
                start = self.pos
                # Integer or text keys only (see the module docstring): anything else could
                # alias an integer key in the decoded dict (True == 1, 1.0 == 1). Checked on
                # the initial byte, before decoding, so no other key is ever built.
                if start < end and data[start] >> 5 not in _KEY_MAJORS:
                    raise self._fail("map key must be an integer or a text string")
                key = self.item(depth + 1)
                # For shortest-form integer and text keys, bytewise order of the encodings is
                # exactly the canonical order (major type, then length, then bytes): the major
                # type is the high bits of the first byte, and a longer head or string always
                # has a larger first differing byte. See _encode_map.
                encoded = data[start : self.pos]
                if previous is not None and encoded <= previous:
                    raise self._fail("map keys not in canonical order or duplicated")
                previous = encoded
                result[key] = self.item(depth + 1)
            return result
        if major == 1:
            return -1 - arg
        if major == 4:
            if arg > end - pos:
                raise self._fail("array longer than message")
            return [self.item(depth + 1) for _ in range(arg)]
        raise self._fail("tags are not allowed")  # major 6


def decode(data: bytes) -> Any:
    """Decode exactly one CTAP2 canonical CBOR item from ``data``."""
    decoder = _Decoder(bytes(data))
    value = decoder.item(1)
    if decoder.pos != decoder.end:
        raise CtapError(Status.INVALID_CBOR, "trailing bytes after CBOR item")
    return value
