"""``printable``: request-supplied text made safe to show a person.

rp.id, rp.name, user.name and user.displayName arrive in CTAP requests from whatever client
reaches the key, so they are attacker-controlled. A terminal obeys the control characters in
what it prints: a crafted rp.id holding CR, ESC[2K and ESC[1A once erased the real presence
prompt and drew "getAssertion for github.com (alice)" in its place. Unicode can do the same
without a single control byte: bidi overrides reorder what is shown, zero-width characters
hide text, line separators start new lines. Every place that shows such text to a person (the
presence prompt, `softkey status`, `--trace` lines, `softkey credentials list`) passes it
through this one function, so they all neutralise the same set of characters.

The offending characters are not dropped but shown as Python-style escapes (``\\x1b``,
``\\u202e``), so the person sees that the text holds something odd instead of a cleaned-up
name that looks trustworthy. Ordinary printable text, any script ("Bücher", "日本"), stays
exactly as it is. Backslashes are kept as they are: the output then never contains anything
the function would change, so applying it twice (once by a running key, once by the CLI that
prints its reply) shows the same text.

It lives in the transports package, which imports nothing from tools/, so the presence prompt
(transports/presence.py) and every tool can import it.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"

# Unicode general categories shown as escapes, and why each one:
#   Cc  C0 controls (CR, LF, TAB, ESC ...), DEL and the C1 controls (CSI 0x9b, ...): the
#       terminal acts on them (moves the cursor, erases lines, changes colours).
#   Cf  format characters: bidi embeddings, overrides and isolates (U+202A-U+202E,
#       U+2066-U+2069), zero-width space/joiners, the word joiner, tag characters: they
#       reorder or hide text while being invisible themselves.
#   Zl, Zp  U+2028 / U+2029: some terminals and log viewers start a new line at them.
#   Cs  lone surrogates: not text at all; they cannot even be encoded to UTF-8 for output.
#   Cn  unassigned code points: a newer terminal may already know them as format characters.
_SHOWN_AS_ESCAPES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})

# The three everyone recognises keep their short names.
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        # Undecodable bytes become \xNN text, the same look as an escaped control character.
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


def printable(text: object, limit: int | None = None) -> str:
    """``text`` for a terminal or a log line: control, format and separator characters escaped.

    ``limit``: at most this many characters come back; longer text is cut (never in the
    middle of an escape) and ends in "…". None (the default) keeps it whole. ``None`` gives
    "", bytes are decoded as UTF-8 (invalid bytes shown as ``\\xNN``), anything else is
    ``str()``-ed first.
    """
    if limit is not None and limit < len(ELLIPSIS):
        raise ValueError(f"limit must be at least {len(ELLIPSIS)}, room for the ellipsis")
    text = _as_text(text)
    # str.isprintable() is False for every category escaped here (and for a few harmless
    # ones such as no-break spaces), so it is a fast path for the usual, clean name.
    if text.isprintable():
        pieces: list[str] | str = text
    else:
        pieces = [
            _escape(char) if unicodedata.category(char) in _SHOWN_AS_ESCAPES else char
            for char in text
        ]
    whole = "".join(pieces)
    if limit is None or len(whole) <= limit:
        return whole
    room = limit - len(ELLIPSIS)
    kept: list[str] = []
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + ELLIPSIS
