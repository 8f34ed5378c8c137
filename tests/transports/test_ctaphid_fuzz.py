"""Random report streams against the CTAPHID engine (with the real authenticator behind it).

Invariants, whatever arrives: no exception escapes, every answer is a 64-byte report, the
device never wedges (after the stream, a fresh broadcast INIT works and the device serves a
request on the new channel), and no stored credential is lost (one made before the stream
still asserts).
"""

from __future__ import annotations

import hashlib
import os
import struct

from fido2 import cbor
from fido2.ctap2 import Ctap2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, FakeClock
from softkey.authenticator.environment import KEEPALIVE_UPNEEDED
from softkey.transports.ctaphid import (
    BROADCAST_CID,
    DEFAULT_MSG_TOTAL_TIMEOUT,
    MAX_MESSAGE_SIZE,
    REPORT_SIZE,
    Command,
    CtapHidEngine,
    Message,
    MessageReader,
    Request,
    fragment,
)
from softkey.transports.inprocess import VirtualCtapDevice

KNOWN = [0x01020304, 0x0A0B0C0D]  # the first channels the engine allocates (see _channel_ids)
CIDS = st.sampled_from([BROADCAST_CID, 0, *KNOWN]) | st.integers(0, 0xFFFFFFFF)
LENGTHS = st.sampled_from(
    [0, 1, 8, 57, 58, 116, 117, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1, 0xFFFF]
) | st.integers(0, 0xFFFF)
COMMANDS = st.sampled_from(list(Command)) | st.integers(0, 0x7F)


@st.composite
def init_packets(draw: st.DrawFn) -> bytes:
    header = struct.pack(">IBH", draw(CIDS), 0x80 | draw(COMMANDS), draw(LENGTHS))
    return header + draw(st.binary(max_size=REPORT_SIZE - 7))


@st.composite
def continuation_packets(draw: st.DrawFn) -> bytes:
    header = struct.pack(">IB", draw(CIDS), draw(st.integers(0, 0x7F)))
    return header + draw(st.binary(max_size=REPORT_SIZE - 5))


@st.composite
def whole_messages(draw: st.DrawFn) -> list[bytes]:
    """Well-formed messages with random commands and payloads (CBOR garbage included)."""
    payload = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        payload = (
            bytes([draw(st.sampled_from([0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x41]))])
            + payload
        )
    command = draw(st.sampled_from([Command.CBOR, Command.MSG, Command.PING]) | COMMANDS)
    return fragment(draw(st.sampled_from(KNOWN)), command, payload)


ACTIONS = st.one_of(
    # Well-formed messages first: hypothesis favours early branches when it shrinks and
    # generates, and complete requests are what reach the authenticator.
    whole_messages().map(lambda rs: ("reports", rs)),
    st.just(("complete", None)),
    init_packets().map(lambda r: ("report", r)),
    continuation_packets().map(lambda r: ("report", r)),
    st.binary(max_size=80).map(lambda r: ("report", r)),
    st.sampled_from([BROADCAST_CID, *KNOWN]).map(lambda cid: ("init", cid)),
    st.floats(0, 1.5).map(lambda dt: ("time", dt)),
    st.just(("keepalive", None)),
    st.just(("abort", None)),
)


class Interaction:
    def __init__(self, request: Request) -> None:
        self.request = request

    def keepalive(self, status: int) -> None:
        return None

    def cancelled(self) -> bool:
        return self.request.cancelled


def _prepared() -> tuple[Authenticator, bytes]:
    clock = FakeClock()
    auth = Authenticator("ctap2.1", clock=clock)
    made = Ctap2(VirtualCtapDevice(auth)).make_credential(
        os.urandom(32),
        {"id": "example.com", "name": "Ex"},
        {"id": b"u1", "name": "alice"},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )
    clock.advance(60)  # past the reset window: a random authenticatorReset is refused
    return auth, made.auth_data.credential_data.credential_id


def _channel_ids() -> object:
    """Channel-ID randomness that hands out the KNOWN channels first, so the stream can use
    them (random IDs afterwards)."""
    queue = [struct.pack(">I", cid) for cid in KNOWN]

    def random(n: int) -> bytes:
        return queue.pop(0) if queue else os.urandom(n)

    return random


class Driver:
    """Runs the engine synchronously: requests execute when the stream says 'complete'."""

    def __init__(self, auth: Authenticator, accept_any_channel: bool) -> None:
        self.auth = auth
        self.now = 0.0
        self.pending: Request | None = None
        self.out: list[bytes] = []
        self.engine = CtapHidEngine(
            random=_channel_ids(),  # type: ignore[arg-type]
            accept_any_channel=accept_any_channel,
        )
        self.executed = 0
        for _ in KNOWN:  # the stream starts with both KNOWN channels allocated
            self.receive(fragment(BROADCAST_CID, Command.INIT, os.urandom(8))[0])
        assert set(self.engine.channels) == set(KNOWN)
        self.out.clear()

    def receive(self, report: bytes) -> None:
        result = self.engine.receive(report, self.now)
        self.out += result.reports
        if result.request is not None:
            assert self.pending is None  # one command at a time
            self.pending = result.request

    def complete(self) -> None:
        request, self.pending = self.pending, None
        if request is None:
            return
        self.executed += 1
        if request.command == Command.CBOR:
            response = self.auth.handle_cbor(request.payload, Interaction(request))
        elif request.command == Command.MSG:
            response = self.auth.handle_u2f(request.payload, Interaction(request))
        else:
            response = b""
        self.out += self.engine.complete(request, response, self.now)

    def step(self, action: tuple[str, object]) -> None:
        kind, value = action
        if kind == "report":
            self.receive(value)  # type: ignore[arg-type]
        elif kind == "reports":
            for report in value:  # type: ignore[union-attr]
                self.receive(report)
        elif kind == "init":
            self.receive(fragment(value, Command.INIT, os.urandom(8))[0])  # type: ignore[arg-type]
        elif kind == "time":
            self.now += value  # type: ignore[operator]
            self.out += self.engine.tick(self.now)
        elif kind == "complete":
            self.complete()
        elif kind == "keepalive" and self.pending is not None:
            self.out += self.engine.keepalive(self.pending, KEEPALIVE_UPNEEDED, self.now)
        elif kind == "abort":
            self.engine.abort()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=3, max_size=60), st.booleans())
def test_random_report_streams_never_wedge_or_lose_credentials(actions, any_channel) -> None:
    auth, credential_id = _prepared()
    driver = Driver(auth, any_channel)
    for action in actions:
        driver.step(action)
    assert all(len(report) == REPORT_SIZE for report in driver.out)

    # Whatever happened, the authenticator eventually answers and timeouts expire: past the
    # longest of them, a message's total timeout (CTAPHID_LOCK is refused, so no lock)...
    driver.complete()
    driver.now += DEFAULT_MSG_TOTAL_TIMEOUT + 1
    driver.engine.tick(driver.now)
    driver.out.clear()

    # ...then a fresh INIT allocates a channel...
    nonce = os.urandom(8)
    for report in fragment(BROADCAST_CID, Command.INIT, nonce):
        driver.receive(report)
    (init,) = MessageReader().feed_all(driver.out)
    assert init.cmd == Command.INIT and init.data[:8] == nonce
    (cid,) = struct.unpack_from(">I", init.data, 8)

    # ...on which the credential made before the storm still signs.
    client_data_hash = hashlib.sha256(b"after the storm").digest()
    request = b"\x02" + cbor.encode(
        {
            1: "example.com",
            2: client_data_hash,
            3: [{"type": "public-key", "id": credential_id}],
        }
    )
    driver.out.clear()
    for report in fragment(cid, Command.CBOR, request):
        driver.receive(report)
    driver.complete()
    messages = [m for m in MessageReader().feed_all(driver.out) if m.cmd != Command.KEEPALIVE]
    assert len(messages) == 1
    answer: Message = messages[0]
    assert answer.cid == cid and answer.cmd == Command.CBOR
    assert answer.data[0] == 0, f"getAssertion failed with status {answer.data[0]:#x}"
    assertion = cbor.decode(answer.data[1:])
    assert assertion[1]["id"] == credential_id
    assert [c.credential_id for c in auth.credentials()] == [credential_id]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=64 * 6))
def test_same_bytes_whole_or_in_reports_never_raise(data: bytes) -> None:
    engine = CtapHidEngine()
    for offset in range(0, len(data), REPORT_SIZE):
        out = engine.receive(data[offset : offset + REPORT_SIZE], offset / 1000)
        assert all(len(report) == REPORT_SIZE for report in out.reports)
