"""Strict CTAP2 canonical CBOR (CTAP 2.1 §8 "Message Encoding").

Requests are decoded strictly: only definite lengths, shortest-form integers and lengths,
map keys in CTAP2 canonical order without duplicates, no tags, no floats, no `undefined`,
valid UTF-8, a bounded nesting depth and no trailing bytes. Every violation raises
``CtapError(INVALID_CBOR)``; callers turn wrong *types* of well-formed values into
CBOR_UNEXPECTED_TYPE themselves.

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


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([(major << 5) | value])
    if value < 0x100:
        return bytes([(major << 5) | 24, value])
    if value < 0x10000:
        return bytes([(major << 5) | 25]) + struct.pack(">H", value)
    if value < 0x100000000:
        return bytes([(major << 5) | 26]) + struct.pack(">I", value)
    if value < 0x10000000000000000:
        return bytes([(major << 5) | 27]) + struct.pack(">Q", value)
    raise ValueError("integer out of CBOR range")


def _sort_key(encoded_key: bytes) -> tuple[int, int, bytes]:
    return (encoded_key[0] >> 5, len(encoded_key), encoded_key)


def encode(value: Any) -> bytes:
    """Encode a response value in CTAP2 canonical form."""
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return _head(2, len(data)) + data
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _head(3, len(data)) + data
    if isinstance(value, Mapping):
        items = sorted(
            ((encode(k), encode(v)) for k, v in value.items()), key=lambda kv: _sort_key(kv[0])
        )
        return _head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(value, Sequence):
        return _head(4, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _fail(self, why: str) -> CtapError:
        return CtapError(Status.INVALID_CBOR, why)

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self._fail("truncated CBOR item")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            value = self._take(1)[0]
            minimum = 24
        elif info == 25:
            value = struct.unpack(">H", self._take(2))[0]
            minimum = 0x100
        elif info == 26:
            value = struct.unpack(">I", self._take(4))[0]
            minimum = 0x10000
        elif info == 27:
            value = struct.unpack(">Q", self._take(8))[0]
            minimum = 0x100000000
        else:
            # 28-30 are reserved; 31 is indefinite length, which CTAP2 forbids.
            raise self._fail("indefinite length or reserved additional info")
        if value < minimum:
            raise self._fail("integer or length not in shortest form")
        return value

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self._fail("nesting too deep")
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            raise self._fail("unsupported simple value or float")
        arg = self._argument(info)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self._take(arg)
        if major == 3:
            try:
                return self._take(arg).decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail("text string is not valid UTF-8") from None
        if major == 4:
            if arg > len(self.data) - self.pos:
                raise self._fail("array longer than message")
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            if arg * 2 > len(self.data) - self.pos:
                raise self._fail("map longer than message")
            result: dict[Any, Any] = {}
            previous: tuple[int, int, bytes] | None = None
            for _ in range(arg):
                start = self.pos
                key = self.item(depth + 1)
                if isinstance(key, (list, dict)):
                    raise self._fail("map key must be a scalar")
                sort_key = _sort_key(self.data[start : self.pos])
                if previous is not None and sort_key <= previous:
                    raise self._fail("map keys not in canonical order or duplicated")
                previous = sort_key
                result[key] = self.item(depth + 1)
            return result
        raise self._fail("tags are not allowed")  # major 6


def decode(data: bytes) -> Any:
    """Decode exactly one CTAP2 canonical CBOR item from ``data``."""
    decoder = _Decoder(bytes(data))
    value = decoder.item(1)
    if decoder.pos != len(decoder.data):
        raise CtapError(Status.INVALID_CBOR, "trailing bytes after CBOR item")
    return value
