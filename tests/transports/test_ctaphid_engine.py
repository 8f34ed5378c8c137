"""The sans-IO CTAPHID engine, packet by packet (CTAP 2.1 §11.2), with explicit times."""

from __future__ import annotations

import struct

import pytest

from softkey.authenticator.environment import KEEPALIVE_PROCESSING, KEEPALIVE_UPNEEDED
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    CONT_DATA,
    INIT_DATA,
    MAX_MESSAGE_SIZE,
    REPORT_SIZE,
    Capability,
    Command,
    CtapHidEngine,
    HidError,
    Message,
    MessageReader,
    Request,
    error_report,
    fragment,
)

NONCE = bytes(range(1, 9))


class Host:
    """Drives an engine with an explicit clock; collects reports and requests."""

    def __init__(self, engine: CtapHidEngine | None = None) -> None:
        self.engine = engine or CtapHidEngine(random=_counter_random())
        self.now = 100.0
        self.requests: list[Request] = []

    def feed(self, reports: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for report in reports:
            result = self.engine.receive(report, self.now)
            out += result.reports
            if result.request is not None:
                self.requests.append(result.request)
        return out

    def messages(self, reports: list[bytes]) -> list[Message]:
        return MessageReader().feed_all(self.feed(reports))

    def one(self, reports: list[bytes]) -> Message:
        messages = self.messages(reports)
        assert len(messages) == 1, messages
        return messages[0]

    def init(self) -> int:
        message = self.one(fragment(BROADCAST_CID, Command.INIT, NONCE))
        return struct.unpack_from(">I", message.data, 8)[0]


def _counter_random() -> object:
    state = {"n": 0x11223300}

    def random(n: int) -> bytes:
        state["n"] += 1
        return struct.pack(">I", state["n"])[:n]

    return random


def error(cid: int, code: HidError) -> Message:
    return Message(cid, Command.ERROR, bytes([code]))


# -- INIT -------------------------------------------------------------------------------------


def test_broadcast_init_allocates_a_channel_with_the_spec_response() -> None:
    host = Host(CtapHidEngine(random=_counter_random(), device_version=(1, 2, 3)))
    message = host.one(fragment(BROADCAST_CID, Command.INIT, NONCE))
    assert message.cid == BROADCAST_CID and message.cmd == Command.INIT
    assert len(message.data) == 17
    nonce, cid, proto, major, minor, build, caps = struct.unpack(">8sIBBBBB", message.data)
    assert nonce == NONCE
    assert cid not in (0, BROADCAST_CID)
    assert (proto, major, minor, build) == (2, 1, 2, 3)
    assert caps == Capability.WINK | Capability.CBOR  # NMSG clear: MSG is implemented
    assert cid in host.engine.channels


def test_each_broadcast_init_gets_a_fresh_channel() -> None:
    host = Host()
    assert len({host.init() for _ in range(5)}) == 5


def test_channel_allocation_skips_reserved_and_taken_ids() -> None:
    values = iter([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\0\0\0\x07", b"\0\0\0\x07", b"\0\0\0\x08"])
    host = Host(CtapHidEngine(random=lambda n: next(values)))
    assert host.init() == 7
    assert host.init() == 8


def test_init_on_allocated_channel_resyncs_and_drops_the_partial_message() -> None:
    host = Host()
    cid = host.init()
    reports = fragment(cid, Command.PING, bytes(range(100)))
    assert host.feed(reports[:1]) == []  # message started
    message = host.one(fragment(cid, Command.INIT, NONCE))
    assert message.cid == cid and message.cmd == Command.INIT
    assert struct.unpack_from(">I", message.data, 8)[0] == cid  # same channel
    assert host.feed(reports[1:]) == []  # the old continuation is now spurious
    assert host.one(fragment(cid, Command.PING, b"hi")) == Message(cid, Command.PING, b"hi")


def test_init_on_unallocated_channel_is_invalid() -> None:
    host = Host()
    assert host.one(fragment(0x01020304, Command.INIT, NONCE)) == error(
        0x01020304, HidError.INVALID_CHANNEL
    )


@pytest.mark.parametrize("length", [0, 7, 9, 17])
def test_init_nonce_must_be_8_bytes(length: int) -> None:
    host = Host()
    assert host.one(fragment(BROADCAST_CID, Command.INIT, bytes(length))) == error(
        BROADCAST_CID, HidError.INVALID_LEN
    )


# -- channels -------------------------------------------------------------------------------


def test_commands_on_broadcast_reserved_or_unknown_channels_are_invalid() -> None:
    host = Host()
    host.init()
    for cid in (BROADCAST_CID, 0, 0xCAFEBABE):
        assert host.one(fragment(cid, Command.PING, b"x")) == error(cid, HidError.INVALID_CHANNEL)
    assert host.one(fragment(0, Command.INIT, NONCE)) == error(0, HidError.INVALID_CHANNEL)


def test_accept_any_channel_option_for_simulator_clients() -> None:
    host = Host(CtapHidEngine(accept_any_channel=True))
    assert host.one(fragment(0xCAFEBABE, Command.PING, b"x")) == Message(
        0xCAFEBABE, Command.PING, b"x"
    )
    message = host.one(fragment(0x0BADF00D, Command.INIT, NONCE))  # resync, not an error
    assert message.cmd == Command.INIT
    for cid in (0, BROADCAST_CID):
        assert host.one(fragment(cid, Command.PING, b"x")) == error(cid, HidError.INVALID_CHANNEL)


def test_forgotten_channels_after_replug() -> None:
    host = Host()
    cid = host.init()
    host.engine.forget_channels()
    assert host.one(fragment(cid, Command.PING, b"x")) == error(cid, HidError.INVALID_CHANNEL)


# -- PING and fragmentation ----------------------------------------------------------------


def test_ping_of_maximum_size_round_trips_in_129_packets() -> None:
    host = Host()
    cid = host.init()
    data = bytes(i * 7 % 256 for i in range(MAX_MESSAGE_SIZE))
    request = fragment(cid, Command.PING, data)
    assert len(request) == 129 and MAX_MESSAGE_SIZE == 7609
    replies = host.feed(request)
    assert len(replies) == 129
    assert all(len(r) == REPORT_SIZE for r in replies)
    assert replies[1][4] == 0 and replies[-1][4] == 127  # continuation sequence numbers
    assert MessageReader().feed_all(replies) == [Message(cid, Command.PING, data)]


def test_message_longer_than_7609_bytes_is_refused() -> None:
    host = Host()
    cid = host.init()
    header = struct.pack(">IBH", cid, 0x80 | Command.PING, MAX_MESSAGE_SIZE + 1)
    assert host.one([header.ljust(64, b"\0")]) == error(cid, HidError.INVALID_LEN)


def test_empty_ping_and_short_reports_are_padded() -> None:
    host = Host()
    cid = host.init()
    assert host.one(fragment(cid, Command.PING)) == Message(cid, Command.PING, b"")
    short = struct.pack(">IBH", cid, 0x80 | Command.PING, 2) + b"ab"  # 9 bytes, no padding
    assert host.one([short]) == Message(cid, Command.PING, b"ab")
    assert host.feed([b""]) == []


def test_wrong_sequence_number_aborts_the_message() -> None:
    host = Host()
    cid = host.init()
    reports = fragment(cid, Command.PING, bytes(200))
    bad = bytearray(reports[2])
    bad[4] = 5
    assert host.messages([reports[0], reports[1], bytes(bad)]) == [error(cid, HidError.INVALID_SEQ)]
    assert host.feed(reports[3:]) == []  # rest of the aborted message: spurious, ignored
    assert host.one(fragment(cid, Command.PING, b"ok")) == Message(cid, Command.PING, b"ok")


def test_spurious_continuation_is_ignored() -> None:
    host = Host()
    cid = host.init()
    assert host.feed([struct.pack(">IB", cid, 0).ljust(64, b"\0")]) == []


def test_new_request_on_same_channel_before_message_complete_is_invalid_seq() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.PING, bytes(100))[:1])
    assert host.one(fragment(cid, Command.PING, b"x")) == error(cid, HidError.INVALID_SEQ)
    assert not host.engine.busy


@pytest.mark.parametrize("cmd", [0x02, 0x05, 0x3B, 0x3F, 0x40, 0x7F])
def test_unknown_and_device_only_commands_are_invalid(cmd: int) -> None:
    host = Host()
    cid = host.init()
    assert host.one(fragment(cid, cmd, b"")) == error(cid, HidError.INVALID_CMD)


# -- busy, timeouts ------------------------------------------------------------------------


def test_other_channel_gets_busy_while_a_message_is_being_received() -> None:
    host = Host()
    a, b = host.init(), host.init()
    reports = fragment(a, Command.PING, bytes(range(150)))
    host.feed(reports[:2])
    assert host.one(fragment(b, Command.PING, b"x")) == error(b, HidError.CHANNEL_BUSY)
    assert host.feed(fragment(b, Command.PING, bytes(100))[1:]) == []  # its continuation: ignored
    assert host.one(reports[2:]) == Message(a, Command.PING, bytes(range(150)))
    assert host.one(fragment(b, Command.PING, b"x")) == Message(b, Command.PING, b"x")


def test_other_channel_gets_busy_while_a_command_runs_but_init_is_answered() -> None:
    host = Host()
    a, b = host.init(), host.init()
    assert host.feed(fragment(a, Command.CBOR, b"\x04")) == []
    (request,) = host.requests
    assert host.one(fragment(b, Command.CBOR, b"\x04")) == error(b, HidError.CHANNEL_BUSY)
    assert host.one(fragment(a, Command.PING, b"x")) == error(a, HidError.CHANNEL_BUSY)
    assert host.one(fragment(BROADCAST_CID, Command.INIT, NONCE)).cmd == Command.INIT
    reply = host.engine.complete(request, b"\x00\xa0", host.now)
    assert MessageReader().feed_all(reply) == [Message(a, Command.CBOR, b"\x00\xa0")]
    assert host.one(fragment(b, Command.PING, b"x")) == Message(b, Command.PING, b"x")


def test_stalled_continuation_times_out() -> None:
    host = Host()
    cid = host.init()
    reports = fragment(cid, Command.PING, bytes(200))
    host.feed(reports[:2])
    host.now += 0.4
    assert host.engine.tick(host.now) == []  # within the timeout (measured per packet)
    host.feed(reports[2:3])
    host.now += 0.4
    assert host.engine.tick(host.now) == []
    host.now += 0.2
    assert host.engine.tick(host.now) == [error_report(cid, HidError.MSG_TIMEOUT)]
    assert not host.engine.busy
    assert host.feed(reports[3:]) == []
    assert host.one(fragment(cid, Command.PING, b"x")) == Message(cid, Command.PING, b"x")


def test_timeout_is_also_noticed_on_the_next_report() -> None:
    host = Host()
    a, b = host.init(), host.init()
    host.feed(fragment(a, Command.PING, bytes(100))[:1])
    host.now += 1
    messages = host.messages(fragment(b, Command.PING, b"y"))
    assert messages == [error(a, HidError.MSG_TIMEOUT), Message(b, Command.PING, b"y")]


# -- CBOR / MSG / WINK requests, keepalive, cancel -----------------------------------------


def test_cbor_request_is_handed_to_the_driver_and_the_answer_framed() -> None:
    host = Host()
    cid = host.init()
    payload = b"\x01" + bytes(range(200))
    assert host.feed(fragment(cid, Command.CBOR, payload)) == []
    (request,) = host.requests
    assert (request.cid, request.command, request.payload) == (cid, Command.CBOR, payload)
    answer = b"\x00" + bytes(300)
    reply = host.engine.complete(request, answer, host.now)
    assert MessageReader().feed_all(reply) == [Message(cid, Command.CBOR, answer)]
    assert not host.engine.busy


def test_msg_is_executed_unless_nmsg_capability() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.MSG, b"\x00\x03\x00\x00"))
    assert host.requests[-1].command == Command.MSG
    nmsg = Host(CtapHidEngine(capabilities=Capability.CBOR | Capability.NMSG))
    cid = nmsg.init()
    assert nmsg.one(fragment(cid, Command.MSG, b"\x00")) == error(cid, HidError.INVALID_CMD)
    assert nmsg.one(fragment(cid, Command.WINK)) == error(cid, HidError.INVALID_CMD)


def test_wink_takes_no_data() -> None:
    host = Host()
    cid = host.init()
    assert host.one(fragment(cid, Command.WINK, b"x")) == error(cid, HidError.INVALID_LEN)
    assert host.feed(fragment(cid, Command.WINK)) == []
    assert host.requests[-1].command == Command.WINK


def test_keepalive_every_100ms_and_at_once_when_status_changes() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.CBOR, b"\x02"))
    (request,) = host.requests
    engine, start = host.engine, host.now

    def keepalive(status: int) -> Message:
        return Message(cid, Command.KEEPALIVE, bytes([status]))

    assert engine.tick(start + 0.05) == []
    processing = MessageReader().feed_all(engine.tick(start + 0.1))
    assert processing == [keepalive(KEEPALIVE_PROCESSING)]
    assert engine.tick(start + 0.15) == []
    upneeded = MessageReader().feed_all(engine.keepalive(request, KEEPALIVE_UPNEEDED, start + 0.16))
    assert upneeded == [keepalive(KEEPALIVE_UPNEEDED)]
    assert engine.keepalive(request, KEEPALIVE_UPNEEDED, start + 0.2) == []  # rate limited
    assert MessageReader().feed_all(engine.tick(start + 0.27)) == [keepalive(KEEPALIVE_UPNEEDED)]
    assert engine.keepalive(request, 0x55, start + 1) == []  # not a CTAPHID status
    engine.complete(request, b"\x00", start + 1)
    assert engine.tick(start + 2) == []


def test_cancel_marks_the_running_request_and_gets_no_reply() -> None:
    host = Host()
    a, b = host.init(), host.init()
    host.feed(fragment(a, Command.CBOR, b"\x02"))
    (request,) = host.requests
    assert host.feed(fragment(b, Command.CANCEL)) == []  # another channel's cancel: no effect
    assert not request.cancelled
    assert host.feed(fragment(a, Command.CANCEL)) == []
    assert request.cancelled and not request.abandoned
    # The command still answers (with CTAP2_ERR_KEEPALIVE_CANCEL from the authenticator).
    reply = host.engine.complete(request, b"\x2d", host.now)
    assert MessageReader().feed_all(reply) == [Message(a, Command.CBOR, b"\x2d")]


def test_cancel_drops_a_partial_message_and_ignores_idle_channels() -> None:
    host = Host()
    cid = host.init()
    assert host.feed(fragment(cid, Command.CANCEL)) == []
    host.feed(fragment(cid, Command.PING, bytes(100))[:1])
    assert host.feed(fragment(cid, Command.CANCEL)) == []
    assert not host.engine.busy
    assert host.feed(fragment(0, Command.CANCEL)) == []  # never a reply, whatever the channel


def test_resync_abandons_the_running_request() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.CBOR, b"\x02"))
    (request,) = host.requests
    assert host.one(fragment(cid, Command.INIT, NONCE)).cmd == Command.INIT
    assert request.cancelled and request.abandoned
    assert host.engine.tick(host.now + 1) == []  # no keepalives for an abandoned request
    # Still busy until the authenticator returns: the device runs one command at a time.
    assert host.one(fragment(cid, Command.PING, b"x")) == error(cid, HidError.CHANNEL_BUSY)
    assert host.engine.complete(request, b"\x00", host.now) == []  # answer dropped
    assert host.one(fragment(cid, Command.PING, b"x")) == Message(cid, Command.PING, b"x")


def test_abort_for_power_cycle() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.CBOR, b"\x02"))
    (request,) = host.requests
    assert host.engine.abort() is request
    assert request.abandoned and request.cancelled
    assert host.engine.complete(request, b"\x00", host.now) == []


def test_oversized_response_becomes_err_other() -> None:
    host = Host()
    cid = host.init()
    host.feed(fragment(cid, Command.CBOR, b"\x04"))
    reply = host.engine.complete(host.requests[0], bytes(MAX_MESSAGE_SIZE + 1), host.now)
    assert MessageReader().feed_all(reply) == [error(cid, HidError.OTHER)]


# -- LOCK -------------------------------------------------------------------------------------


def test_lock_is_refused_and_excludes_no_one() -> None:
    # CTAPHID_LOCK is optional (§11.2.9.2.2) and not implemented: a renewable lock would let
    # any local process keep every other client at ERR_CHANNEL_BUSY.
    host = Host()
    a, b = host.init(), host.init()
    for data in (b"\x0a", b"\x01", b"\x00", b"", b"\x0b"):
        assert host.one(fragment(a, Command.LOCK, data)) == error(a, HidError.INVALID_CMD)
        assert host.one(fragment(b, Command.PING, b"x")) == Message(b, Command.PING, b"x")
    long_lock = fragment(a, Command.LOCK, bytes(100))  # refused at its init packet
    assert host.one(long_lock[:1]) == error(a, HidError.INVALID_CMD)
    assert not host.engine.busy


def test_lock_capability_is_never_advertised() -> None:
    asked = Capability.WINK | Capability.CBOR | Capability.LOCK
    host = Host(CtapHidEngine(random=_counter_random(), capabilities=asked))
    message = host.one(fragment(BROADCAST_CID, Command.INIT, NONCE))
    assert message.data[16] == Capability.WINK | Capability.CBOR


# -- helpers -----------------------------------------------------------------------------------


def test_fragment_layout() -> None:
    reports = fragment(0x01020304, Command.CBOR, bytes(range(INIT_DATA + CONT_DATA + 1)))
    assert [len(r) for r in reports] == [64, 64, 64]
    assert reports[0][:7] == bytes.fromhex("0102030490") + struct.pack(">H", 117)
    assert reports[1][:5] == bytes.fromhex("0102030400")
    assert reports[2][:6] == bytes.fromhex("0102030401") + bytes([116])
    with pytest.raises(ValueError):
        fragment(1, Command.PING, bytes(MAX_MESSAGE_SIZE + 1))


def test_codes_match_python_fido2() -> None:
    from fido2.ctap import CtapError
    from fido2.hid import CAPABILITY, CTAPHID

    for name in ("PING", "MSG", "LOCK", "INIT", "WINK", "CBOR", "CANCEL", "KEEPALIVE", "ERROR"):
        assert Command[name] == CTAPHID[name]
    for name in ("WINK", "LOCK", "CBOR", "NMSG"):
        assert Capability[name] == CAPABILITY[name]
    ours_to_theirs = {
        "INVALID_CMD": "INVALID_COMMAND",
        "INVALID_PAR": "INVALID_PARAMETER",
        "INVALID_LEN": "INVALID_LENGTH",
        "INVALID_SEQ": "INVALID_SEQ",
        "MSG_TIMEOUT": "TIMEOUT",
        "CHANNEL_BUSY": "CHANNEL_BUSY",
        "LOCK_REQUIRED": "LOCK_REQUIRED",
        "INVALID_CHANNEL": "INVALID_CHANNEL",
        "OTHER": "OTHER",
    }
    for ours, theirs in ours_to_theirs.items():
        assert HidError[ours] == CtapError.ERR[theirs]
