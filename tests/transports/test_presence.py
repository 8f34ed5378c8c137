"""WaitingPresence: touch / deny / timeout / cancel, keepalives while waiting, the terminal."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest

from softkey.authenticator import FakeClock, PresenceRequest, Verdict
from softkey.authenticator.environment import KEEPALIVE_UPNEEDED
from softkey.transports.presence import Announcer, TerminalPrompt, WaitingPresence, describe

REQUEST = PresenceRequest("getAssertion", "example.com", "alice")


class RecordingInteraction:
    def __init__(self) -> None:
        self.keepalives: list[int] = []
        self.cancel = threading.Event()

    def keepalive(self, status: int) -> None:
        self.keepalives.append(status)

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class Confirm:
    """``presence.confirm`` running in a thread, as in the transport's worker."""

    def __init__(self, presence: WaitingPresence, request: PresenceRequest = REQUEST) -> None:
        self.interaction = RecordingInteraction()
        self.verdict: Verdict | None = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "verdict", presence.confirm(request, self.interaction))
        )
        self.thread.start()
        assert presence.wait_for_request(10) == request

    def result(self) -> Verdict | None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.verdict


@pytest.fixture
def presence() -> WaitingPresence:
    return WaitingPresence(timeout=30, clock=FakeClock(), poll_interval=0.01)


def test_touch_approves_the_pending_request(presence: WaitingPresence) -> None:
    confirm = Confirm(presence)
    assert presence.pending == REQUEST
    assert presence.touch() == REQUEST
    assert confirm.result() is Verdict.APPROVED
    assert presence.pending is None
    assert KEEPALIVE_UPNEEDED in confirm.interaction.keepalives
    assert set(confirm.interaction.keepalives) == {KEEPALIVE_UPNEEDED}


def test_deny_declines(presence: WaitingPresence) -> None:
    confirm = Confirm(presence)
    assert presence.deny() == REQUEST
    assert confirm.result() is Verdict.DENIED


def test_timeout_after_30_seconds_of_the_clock(presence: WaitingPresence) -> None:
    confirm = Confirm(presence)
    presence.clock.advance(30.1)  # type: ignore[attr-defined]
    assert confirm.result() is Verdict.TIMEOUT


def test_cancel_from_the_host(presence: WaitingPresence) -> None:
    confirm = Confirm(presence)
    confirm.interaction.cancel.set()
    assert confirm.result() is Verdict.CANCELLED
    assert presence.pending is None


def test_nothing_to_touch_without_a_request(presence: WaitingPresence) -> None:
    assert presence.touch() is None
    assert presence.deny() is None
    assert presence.wait_for_request(0.01) is None


def test_touch_can_wait_for_the_request(presence: WaitingPresence) -> None:
    touched: list[PresenceRequest | None] = []
    toucher = threading.Thread(target=lambda: touched.append(presence.touch(wait=10)))
    toucher.start()
    verdict = presence.confirm(REQUEST, RecordingInteraction())
    toucher.join(10)
    assert verdict is Verdict.APPROVED and touched == [REQUEST]


def test_a_decision_does_not_carry_over_to_the_next_request(presence: WaitingPresence) -> None:
    confirm = Confirm(presence)
    presence.touch()
    assert confirm.result() is Verdict.APPROVED
    second = Confirm(presence)
    presence.clock.advance(31)  # type: ignore[attr-defined]
    assert second.result() is Verdict.TIMEOUT


def test_describe() -> None:
    assert describe(REQUEST) == "getAssertion for example.com (alice)"
    assert describe(PresenceRequest("reset")) == "reset"


# -- terminal ----------------------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r")
    yield reader, write_fd
    reader.close()
    try:
        os.close(write_fd)
    except OSError:
        pass


@pytest.mark.parametrize(
    ("typed", "verdict"),
    [
        (b"y\n", Verdict.APPROVED),
        (b"YES\n", Verdict.APPROVED),
        (b"n\n", Verdict.DENIED),
        (b"\n", Verdict.DENIED),
    ],
)
def test_terminal_answer(pipe, typed: bytes, verdict: Verdict) -> None:
    reader, write_fd = pipe
    out = io.StringIO()
    presence = WaitingPresence(
        timeout=30, clock=FakeClock(), poll_interval=0.01, prompt=TerminalPrompt(reader, out)
    )
    confirm = Confirm(presence)
    os.write(write_fd, typed)
    assert confirm.result() is verdict
    assert "getAssertion for example.com (alice)" in out.getvalue()
    assert "Approve? [y/N]" in out.getvalue()


def test_terminal_eof_falls_back_to_softkey_touch(pipe) -> None:
    reader, write_fd = pipe
    prompt = TerminalPrompt(reader, io.StringIO())
    presence = WaitingPresence(timeout=30, clock=FakeClock(), poll_interval=0.01, prompt=prompt)
    confirm = Confirm(presence)
    os.close(write_fd)  # stdin closed: nobody will type
    pause = threading.Event()
    while not prompt.closed:  # the waiting loop notices EOF on its next poll
        pause.wait(0.01)
    assert confirm.thread.is_alive()
    presence.touch()
    assert confirm.result() is Verdict.APPROVED


def test_announcer_tells_the_operator() -> None:
    out = io.StringIO()
    presence = WaitingPresence(
        timeout=30, clock=FakeClock(), poll_interval=0.01, prompt=Announcer(out)
    )
    confirm = Confirm(presence)
    presence.deny()
    assert confirm.result() is Verdict.DENIED
    assert out.getvalue().splitlines() == [
        "softkey: waiting 30 s for `softkey touch` or `softkey deny`: "
        "getAssertion for example.com (alice)",
        "softkey: denied",
    ]
