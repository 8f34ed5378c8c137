"""Presence prompt spoofing: request-supplied text is escaped wherever a person reads it.

rp.id, rp.name, user.name and user.displayName come from whoever talks to the key. A crafted
rp.id holding CR, ESC[2K (erase line) and ESC[1A (cursor up) once redrew the presence prompt
as "getAssertion for github.com (alice)". These tests judge ``printable`` itself
(transports/display.py), then the text each surface really produces for that rp.id: the
presence prompt, a --trace line, `softkey credentials list` / `delete`, `softkey status` and
`softkey touch`. Every surface test fails if its call to ``printable`` is taken out.
"""

from __future__ import annotations

import io
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fido2.ctap2 import Ctap2
from hypothesis import given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, FakeClock, PresenceRequest, cbor
from softkey.tools import admin
from softkey.tools import run as run_module
from softkey.tools.cli import cli
from softkey.tools.trace import install_trace
from softkey.transports.display import printable
from softkey.transports.inprocess import VirtualCtapDevice
from softkey.transports.presence import USER_NAME_LIMIT, Announcer, TerminalPrompt, describe

ESC = "\x1b"
# The reported attack: return to column 0, erase the line, go up one, draw a fake prompt.
SPOOFED_RP = "evil.example\r\x1b[2K\x1b[1AgetAssertion for github.com (alice)"
SPOOFED_RP_SHOWN = "evil.example\\r\\x1b[2K\\x1b[1AgetAssertion for github.com (alice)"
# A right-to-left override makes "alice" + U+202E + "moc.buhtig" read as "alicegithub.com".
BIDI_USER = "alice\u202emoc.buhtig"
BIDI_USER_SHOWN = "alice\\u202emoc.buhtig"
ES256 = [{"type": "public-key", "alg": -7}]

# What a terminal or log viewer may act on, hide behind, or fail to encode.
DANGEROUS_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _assert_inert(text: str) -> None:
    """No character of ``text`` can steer a terminal or hide itself."""
    bad = [c for c in text if unicodedata.category(c) in DANGEROUS_CATEGORIES and c != "\n"]
    assert not bad, (bad, text)


# -- printable itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2K", "\\x1b[2K"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("\x00\x07\x08\x7f", "\\x00\\x07\\x08\\x7f"),
        ("\x85\x9b2K", "\\x85\\x9b2K"),  # C1: NEL and the one-byte CSI
        ("\u200b\u200c\u200d\u2060\ufeff", "\\u200b\\u200c\\u200d\\u2060\\ufeff"),
        ("\u00ad", "\\xad"),  # soft hyphen, invisible (Cf)
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("\ud800x\udfff", "\\ud800x\\udfff"),  # lone surrogates
        ("\U000e0041\U000e007f", "\\U000e0041\\U000e007f"),  # invisible tag characters
        ("\U000e01f0", "\\U000e01f0"),  # unassigned (Cn): maybe a format char tomorrow
    ],
)
def test_controls_and_invisible_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown


@pytest.mark.parametrize("code", [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
def test_every_bidi_override_and_isolate_is_escaped(code: int) -> None:
    assert printable(f"a{chr(code)}b") == f"a\\u{code:04x}b"


@pytest.mark.parametrize(
    "text",
    [
        "example.com",
        "Bücher",
        "日本",
        "Zoë O'Brien-Łukasz",
        "Ελληνικά",
        "עברית",
        "🙂 ok",
        "C:\\x",
        "",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


def test_the_reported_rp_id() -> None:
    assert printable(SPOOFED_RP) == SPOOFED_RP_SHOWN


def test_limit_cuts_with_an_ellipsis_and_never_inside_an_escape() -> None:
    assert printable("abcdef", 6) == "abcdef"
    assert printable("abcdefg", 6) == "abcde…"
    assert printable("ab\x1bcd", 5) == "ab…"  # "\x1b" is 4 wide: it does not fit, whole
    assert printable("ab\x1bcd", 7) == "ab\\x1b…"
    assert printable("日本語", 1) == "…"
    with pytest.raises(ValueError):
        printable("abc", 0)


def test_non_text_input() -> None:
    assert printable(None) == ""
    assert printable(b"bank\x1b[1A\xff") == "bank\\x1b[1A\\xff"  # invalid UTF-8 as \xNN
    assert printable(bytearray("Bücher".encode())) == "Bücher"
    assert printable(42) == "42"


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(st.characters(exclude_categories=())),  # every category, surrogates too
    limit=st.none() | st.integers(min_value=1, max_value=80),
)
def test_output_is_always_inert(text: str, limit: int | None) -> None:
    shown = printable(text, limit)
    assert ESC not in shown and "\r" not in shown and "\n" not in shown
    assert not [c for c in shown if unicodedata.category(c) in DANGEROUS_CATEGORIES]
    shown.encode("utf-8")  # no lone surrogate left to break the output stream
    if limit is not None:
        assert len(shown) <= limit
    whole = printable(text)
    assert shown == whole or (shown.endswith("…") and whole.startswith(shown[:-1]))
    assert printable(whole) == whole  # idempotent: safe to apply at both ends of a socket


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Zl", "Zp", "Cs", "Cn"))))
def test_printable_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


# -- the presence prompt (transports/presence.py) -------------------------------------------------

SPOOF = PresenceRequest("getAssertion", SPOOFED_RP, BIDI_USER)


def test_describe_escapes_rp_id_and_user_name() -> None:
    text = describe(SPOOF)
    _assert_inert(text)
    assert text == f"getAssertion for {SPOOFED_RP_SHOWN} ({BIDI_USER_SHOWN})"


def test_describe_cuts_a_long_user_name_but_never_the_rp_id() -> None:
    rp = "accounts.example.com." + "a" * 200 + ".evil.example"
    text = describe(PresenceRequest("makeCredential", rp, "x" * 500 + ESC))
    assert f" for {rp} (" in text  # the registrable domain at the end stays visible
    assert text.endswith("(" + "x" * (USER_NAME_LIMIT - 1) + "…)")


def test_announcer_line_shows_the_escapes() -> None:
    out = io.StringIO()
    Announcer(out).ask(SPOOF, 30)
    written = out.getvalue()
    _assert_inert(written)
    assert written == (
        "softkey: waiting 30 s for `softkey touch` or `softkey deny`: "
        f"getAssertion for {SPOOFED_RP_SHOWN} ({BIDI_USER_SHOWN})\n"
    )


def test_terminal_prompt_shows_the_escapes() -> None:
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(read_fd, "r") as stdin:
            out = io.StringIO()
            TerminalPrompt(stdin, out).ask(SPOOF, 30)
    finally:
        os.close(write_fd)
    written = out.getvalue()
    _assert_inert(written)
    # Exactly the prompt's own line breaks: none came from the request.
    assert written.splitlines() == [
        "",
        f"softkey: touch requested: getAssertion for {SPOOFED_RP_SHOWN} ({BIDI_USER_SHOWN}).",
        "  Approve? [y/N] (or run `softkey touch` / `softkey deny`; 30 s): ",
    ]


# -- the trace (tools/trace.py, `softkey run --trace`) ----------------------------------------


def test_trace_lines_escape_the_rp_id_user_name_and_reason() -> None:
    auth = Authenticator("ctap2.1", clock=FakeClock())
    lines: list[str] = []
    install_trace(auth, lines.append)
    make = b"\x01" + cbor.encode(
        {
            1: b"\x00" * 32,
            2: {"id": SPOOFED_RP, "name": "x"},
            3: {"id": b"u1", "name": BIDI_USER},
            4: ES256,
        }
    )
    auth.handle_cbor(make)
    # Nothing resident: NO_CREDENTIALS, and the device's reason quotes the rp.id.
    auth.handle_cbor(b"\x02" + cbor.encode({1: SPOOFED_RP, 2: b"\x00" * 32}))
    assert len(lines) == 2
    for line in lines:
        _assert_inert(line)
        assert "\n" not in line
    made, failed = lines
    assert made.startswith(
        "makeCredential rp='evil.example\\r\\x1b[2K\\x1b[1AgetAssertion for github.com (alic…'"
        f" user='{BIDI_USER_SHOWN}' algs=[-7] -> CTAP2_OK"
    )
    assert failed.startswith("getAssertion rp='evil.example\\r\\x1b[2K")
    assert "-> CTAP2_ERR_NO_CREDENTIALS: empty allowList and no discoverable credential for " in (
        failed
    )
    assert f"credential for {SPOOFED_RP_SHOWN}" in failed


def test_trace_quotes_cannot_be_closed_by_the_value() -> None:
    auth = Authenticator("ctap2.1", clock=FakeClock())
    lines: list[str] = []
    install_trace(auth, lines.append)
    hostile = "a.com' allowList=9 x='\\\r"  # ends in a backslash and a CR
    auth.handle_cbor(b"\x02" + cbor.encode({1: hostile, 2: b"\x00" * 32}))
    _assert_inert(lines[0])
    assert lines[0].startswith("getAssertion rp='a.com\\' allowList=9 x=\\'\\\\\\r' allowList=0 ")


# -- CLI listings (tools/cli.py) and `softkey status` / `touch` (tools/run.py) -------------------


@pytest.fixture
def spoofed_key(tmp_path: Path) -> Path:
    """A key holding one resident credential made by a hostile RP."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    state = directory / "key.sqlite3"
    with Authenticator(state=state) as auth:
        Ctap2(VirtualCtapDevice(auth)).make_credential(
            os.urandom(32),
            {"id": SPOOFED_RP, "name": "Evil"},
            {"id": b"user-1", "name": BIDI_USER, "displayName": "Alice"},
            ES256,
            options={"rk": True},
        )
    return state


def _softkey(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_credentials_list_text_is_escaped_and_cut_to_its_column(spoofed_key: Path) -> None:
    output = _softkey("credentials", "list", "--state", str(spoofed_key)).stdout
    _assert_inert(output)
    row = output.splitlines()[1]
    # The rp.id is longer than its column (24) once escaped: cut, with "…"; the user name
    # fits its 28 but shows the bidi override as an escape.
    assert row.split()[1:3] == ["evil.example\\r\\x1b[2K…", "alice\\u202emoc.buhtig"]


def test_credentials_list_json_keeps_the_real_values_yet_is_inert(spoofed_key: Path) -> None:
    output = _softkey("credentials", "list", "--state", str(spoofed_key), "--json").stdout
    # json.dumps with its default ensure_ascii escapes every control and non-ASCII character.
    assert all(" " <= c <= "~" for c in output.replace("\n", "")), output
    [cred] = json.loads(output)["credentials"]
    assert (cred["rp_id"], cred["user_name"]) == (SPOOFED_RP, BIDI_USER)


def test_credentials_delete_text_is_escaped(spoofed_key: Path) -> None:
    output = _softkey("credentials", "delete", "--all", "--yes", "--state", str(spoofed_key))
    _assert_inert(output.stdout)
    assert f" {SPOOFED_RP_SHOWN} {BIDI_USER_SHOWN}" in output.stdout


def test_fill_error_escapes_the_devices_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing_fill(
        auth: Authenticator,
        count: int | None = None,
        rp: str = "",
        user_prefix: str = "",
        pin: str | None = None,
        on_created: Any = None,
        start: int | None = None,
    ) -> dict[str, Any]:
        stopped = {"status": "CTAP2_ERR_INVALID_OPTION", "reason": f"no for {SPOOFED_RP}"}
        return {"created": 0, "users": [], "next_number": 1, "full": False, "stopped": stopped}

    monkeypatch.setitem(admin.OPERATIONS, "fill", refusing_fill)
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    state = str(directory / "key.sqlite3")
    result = CliRunner().invoke(cli, ["fill", "--count", "1", "--state", state])
    assert result.exit_code == 1, result.output
    _assert_inert(result.output)
    assert f"(no for {SPOOFED_RP_SHOWN})" in result.output


def test_status_text_escapes_the_pending_rp_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply = {
        "ok": True,
        "key": None,
        "state": str(tmp_path / "key.sqlite3"),
        "pid": 1,
        "transport": "udp",
        "address": "127.0.0.1:8111",
        "profile": "ctap2.1",
        "ctap": "2.1",
        "presence_mode": "wait",
        "pending_presence": {"purpose": "getAssertion", "rp_id": SPOOFED_RP},
        "slots": {"used": 0, "capacity": None, "free": None},
    }
    monkeypatch.setattr(run_module, "call_running", lambda state, op, **params: dict(reply))
    output = _softkey("status", "--state", str(tmp_path / "key.sqlite3")).stdout
    _assert_inert(output)
    assert f"wait: waiting for a touch: getAssertion for {SPOOFED_RP_SHOWN}\n" in output


def test_touch_escapes_a_description_even_from_an_older_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {"ok": True, "description": f"getAssertion for {SPOOFED_RP}"}  # not escaped by the key
    monkeypatch.setattr(run_module, "call_running", lambda state, op, **params: dict(raw))
    output = _softkey("touch", "--state", str(tmp_path / "key.sqlite3")).stdout
    _assert_inert(output)
    assert output == f"approved: getAssertion for {SPOOFED_RP_SHOWN}\n"
