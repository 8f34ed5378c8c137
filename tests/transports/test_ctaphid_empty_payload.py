"""Empty CTAPHID_CBOR / CTAPHID_MSG requests are a framing error (CTAP 2.1 §11.2.9.1).

The request formats give BCNT 1..(n+1) for both: CTAPHID_MSG carries at least the U2F
command byte (§11.2.9.1.1), CTAPHID_CBOR at least the CTAP command byte (§11.2.9.1.2). A
request with BCNT = 0 is therefore answered by the transport with CTAPHID_ERROR
ERR_INVALID_LEN (§11.2.9.1.6) and never reaches the authenticator, which would answer a CTAP2
status 0x03 (CTAP1_ERR_INVALID_LENGTH) or an APDU status word 0x6700 inside a normal reply.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from softkey.authenticator import Authenticator
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    INIT_HEADER,
    REPORT_SIZE,
    TYPE_INIT,
    Capability,
    Command,
    CtapHidEngine,
    HidError,
    Message,
    MessageReader,
    fragment,
)

NONCE = bytes(range(1, 9))


def _engine(**kw: object) -> tuple[CtapHidEngine, int]:
    engine = CtapHidEngine(**kw)  # type: ignore[arg-type]
    (answer,) = MessageReader().feed_all(
        engine.receive(fragment(BROADCAST_CID, Command.INIT, NONCE)[0], 0.0).reports
    )
    return engine, struct.unpack_from(">I", answer.data, 8)[0]


def _empty(cid: int, command: Command, junk: bytes = b"") -> bytes:
    """An initialization packet with BCNT = 0; ``junk`` fills the unused data bytes (they
    are not part of the message)."""
    header = struct.pack(">IBH", cid, TYPE_INIT | command, 0)
    return (header + junk[: REPORT_SIZE - INIT_HEADER]).ljust(REPORT_SIZE, b"\0")


@pytest.mark.parametrize("command", [Command.CBOR, Command.MSG], ids=["CBOR", "MSG"])
@pytest.mark.parametrize("junk", [b"", b"\x04" * 57], ids=["zeros", "padding-bytes"])
def test_bcnt_zero_is_err_invalid_len_at_the_transport(command: Command, junk: bytes) -> None:
    engine, cid = _engine()
    out = engine.receive(_empty(cid, command, junk), 1.0)
    assert out.request is None  # the authenticator is never asked
    assert MessageReader().feed_all(out.reports) == [
        Message(cid, Command.ERROR, bytes([HidError.INVALID_LEN]))
    ]
    assert not engine.busy
    # The channel is usable at once: one command byte is a request (BCNT 1).
    out = engine.receive(fragment(cid, command, b"\x04")[0], 1.1)
    assert out.reports == [] and out.request is not None
    assert (out.request.command, out.request.payload) == (command, b"\x04")


def test_an_unsupported_command_is_invalid_cmd_even_when_empty() -> None:
    """Without the CBOR capability (a U2F-only key), CTAPHID_CBOR does not exist at all:
    ERR_INVALID_CMD comes first, whatever its length."""
    engine, cid = _engine(capabilities=Capability.WINK)
    out = engine.receive(_empty(cid, Command.CBOR), 1.0)
    assert MessageReader().feed_all(out.reports) == [
        Message(cid, Command.ERROR, bytes([HidError.INVALID_CMD]))
    ]


def test_ping_and_wink_may_still_be_empty() -> None:
    engine, cid = _engine()
    (echo,) = MessageReader().feed_all(engine.receive(_empty(cid, Command.PING), 1.0).reports)
    assert (echo.cmd, echo.data) == (Command.PING, b"")
    out = engine.receive(_empty(cid, Command.WINK), 1.1)
    assert out.reports == [] and out.request is not None


@pytest.mark.parametrize("kind", ["inprocess", "udp"])
@pytest.mark.parametrize("command", [Command.CBOR, Command.MSG], ids=["CBOR", "MSG"])
def test_a_real_device_answers_ctaphid_error_not_a_ctap_status(
    kind: str, command: Command, make_port: Callable
) -> None:
    auth = Authenticator("ctap2.1")
    port = make_port(kind, auth)
    host = port.raw()
    cid = host.init()
    host.write([_empty(cid, command)])
    answer = host.read()
    # Not (CBOR, b"\x03") nor (MSG, b"\x67\x00"): a CTAPHID error on the same channel.
    assert (answer.cid, answer.cmd, answer.data) == (
        cid,
        Command.ERROR,
        bytes([HidError.INVALID_LEN]),
    )
    assert auth.last_outcome is None  # handle_cbor never ran
    # The device carries on: getInfo over CBOR, VERSION over MSG.
    host.send(cid, Command.CBOR, b"\x04")
    assert host.read().data[:1] == b"\x00"
    host.send(cid, Command.MSG, bytes.fromhex("0003000000"))
    assert host.read().data == b"U2F_V2\x90\x00"
