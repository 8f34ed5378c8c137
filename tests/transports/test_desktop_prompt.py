"""``--presence desktop``: what the notification says, and its lifetime (a fake notifier).

The prompt is driven by the real WaitingPresence (transports/presence.py) with a FakeClock:
an answer from the notification, a timeout, a CTAPHID CANCEL and `softkey touch` each end
the request, and every ending withdraws the question.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import pytest

from softkey.authenticator import FakeClock, PresenceRequest, Verdict
from softkey.transports.desktop_prompt import (
    DesktopPrompt,
    PromptUnavailable,
    Question,
    escape_markup,
    question_for,
    session_environment,
)
from softkey.transports.presence import WaitingPresence

REQUEST = PresenceRequest("makeCredential", "example.com", "alice")
HOSTILE = PresenceRequest(
    "getAssertion",
    # Markup that would restyle the body, an entity, a terminal escape, a bidi override and
    # a newline that would start a line of its own.
    "<b>evil</b>&amp;.example\x1b[2K\u202e\nmoc.knab",
    "<a href='x'>admin</a>\r\n",
)


class FakeNotifier:
    """Implements the Notifier interface; a test clicks its buttons."""

    def __init__(self, name: str = "fake", unavailable: str | None = None) -> None:
        self.name = name
        self.unavailable = unavailable
        self.questions: list[Question] = []
        self.showing = threading.Event()
        self.withdrawn = threading.Event()
        self.answer: Callable[[Verdict], None] | None = None
        self.tried = threading.Event()

    def run(self, question: Question, answer: Callable[[Verdict], None], ended: threading.Event):  # type: ignore[no-untyped-def]
        self.tried.set()
        if self.unavailable is not None:
            raise PromptUnavailable(self.unavailable)
        self.questions.append(question)
        self.answer = answer
        self.withdrawn.clear()
        self.showing.set()
        assert ended.wait(30), "the prompt was never withdrawn"
        self.showing.clear()
        self.withdrawn.set()

    def click(self, verdict: Verdict) -> None:
        assert self.showing.wait(10), "nothing was shown"
        assert self.answer is not None
        self.answer(verdict)


class Interaction:
    def __init__(self) -> None:
        self.cancel = threading.Event()

    def keepalive(self, status: int) -> None:
        return None

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class Confirm:
    """``presence.confirm`` in a thread, as the transport's worker runs it."""

    def __init__(self, presence: WaitingPresence, request: PresenceRequest = REQUEST) -> None:
        self.interaction = Interaction()
        self.verdict: Verdict | None = None

        def target() -> None:
            self.verdict = presence.confirm(request, self.interaction)

        self.thread = threading.Thread(target=target)
        self.thread.start()
        assert presence.wait_for_request(10) == request

    def time_out(self, presence: WaitingPresence) -> Verdict | None:
        """Let the clock run past the timeout (again, should the wait only start now)."""
        for _ in range(300):
            presence.clock.advance(31)  # type: ignore[attr-defined]
            self.thread.join(0.05)
            if not self.thread.is_alive():
                break
        return self.result()

    def result(self) -> Verdict | None:
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.verdict


def _setup(*notifiers: FakeNotifier) -> tuple[WaitingPresence, DesktopPrompt, io.StringIO]:
    log = io.StringIO()
    prompt = DesktopPrompt(notifiers, log, close_wait=10)
    presence = WaitingPresence(timeout=30, clock=FakeClock(), poll_interval=0.01, prompt=prompt)
    return presence, prompt, log


# -- what is shown -------------------------------------------------------------------------------


def test_question_names_operation_site_and_user() -> None:
    question = question_for(REQUEST, 30)
    assert question.summary == "Security key: register a credential?"
    assert question.lines == (
        "Site: example.com",
        "User: alice",
        "Request: makeCredential",
        "Approve within 30 s, or deny.",
    )
    assert question_for(PresenceRequest("getAssertion", "a.example"), 5).summary == (
        "Security key: sign in?"
    )
    reset = question_for(PresenceRequest("reset"), 10)
    assert reset.summary == "Security key: erase every credential on it?"
    assert reset.lines == ("Request: reset", "Approve within 10 s, or deny.")


def test_hostile_names_are_escaped_for_markup_and_control_characters() -> None:
    question = question_for(HOSTILE, 30)
    # Request text never reaches the summary line.
    assert question.summary == "Security key: sign in?"
    markup = question.body(markup=True)
    assert "<" not in markup and ">" not in markup
    assert "&lt;b&gt;evil&lt;/b&gt;&amp;amp;.example" in markup
    assert "&lt;a href='x'&gt;admin&lt;/a&gt;\\r\\n" in markup
    for raw in ("\x1b", "\u202e", "\r"):
        assert raw not in markup
    assert "\\x1b[2K\\u202e\\nmoc.knab" in markup
    # Each request field stays on its own line: the embedded newline is shown, not obeyed.
    assert markup.count("\n") == len(question.lines) - 1
    plain = question.body(markup=False)
    assert "Site: <b>evil</b>&amp;.example\\x1b[2K\\u202e\\nmoc.knab" in plain
    assert escape_markup("a&b<c>d") == "a&amp;b&lt;c&gt;d"


def test_a_long_user_name_is_cut_the_site_never() -> None:
    site = "a" * 200 + ".example"
    question = question_for(PresenceRequest("getAssertion", site, "u" * 500), 30)
    assert question.lines[0] == f"Site: {site}"
    assert question.lines[1] == "User: " + "u" * 63 + "…"


# -- answers, timeout, cancel ----------------------------------------------------------------------


@pytest.mark.parametrize("verdict", [Verdict.APPROVED, Verdict.DENIED])
def test_the_persons_answer_decides_and_the_notification_goes(verdict: Verdict) -> None:
    notifier = FakeNotifier()
    presence, prompt, log = _setup(notifier)
    confirm = Confirm(presence)
    notifier.click(verdict)
    assert confirm.result() is verdict
    assert notifier.withdrawn.is_set()
    assert len(notifier.questions) == 1
    assert "asking on the desktop (30 s; or `softkey touch` / `softkey deny`): " in log.getvalue()
    assert f"softkey: {verdict.value}" in log.getvalue()


def test_timeout_withdraws_the_notification() -> None:
    notifier = FakeNotifier()
    presence, prompt, log = _setup(notifier)
    confirm = Confirm(presence)
    assert notifier.showing.wait(10)
    assert confirm.time_out(presence) is Verdict.TIMEOUT
    assert notifier.withdrawn.is_set()
    assert "timed out" in log.getvalue()


def test_ctaphid_cancel_withdraws_the_notification() -> None:
    notifier = FakeNotifier()
    presence, prompt, _ = _setup(notifier)
    confirm = Confirm(presence)
    assert notifier.showing.wait(10)
    confirm.interaction.cancel.set()
    assert confirm.result() is Verdict.CANCELLED
    assert notifier.withdrawn.is_set()


@pytest.mark.parametrize("approve", [True, False])
def test_softkey_touch_or_deny_answers_while_the_notification_shows(approve: bool) -> None:
    notifier = FakeNotifier()
    presence, prompt, _ = _setup(notifier)
    confirm = Confirm(presence)
    assert notifier.showing.wait(10)
    (presence.touch if approve else presence.deny)()
    assert confirm.result() is (Verdict.APPROVED if approve else Verdict.DENIED)
    assert notifier.withdrawn.is_set()


def test_a_click_after_the_request_ended_does_not_answer_the_next_one() -> None:
    notifier = FakeNotifier()
    presence, prompt, _ = _setup(notifier)
    first = Confirm(presence)
    assert notifier.showing.wait(10)
    stale = notifier.answer
    presence.touch()
    assert first.result() is Verdict.APPROVED
    second = Confirm(presence)
    assert notifier.showing.wait(10)
    assert stale is not None
    stale(Verdict.APPROVED)  # the first notification's button, clicked late
    assert prompt.poll() is None
    assert second.time_out(presence) is Verdict.TIMEOUT


def test_the_first_answer_wins() -> None:
    notifier = FakeNotifier()
    presence, prompt, _ = _setup(notifier)
    confirm = Confirm(presence)
    notifier.click(Verdict.DENIED)
    notifier.click(Verdict.APPROVED)
    assert confirm.result() is Verdict.DENIED


# -- falling back ---------------------------------------------------------------------------------


def test_falls_back_to_the_next_way_of_asking() -> None:
    dbus = FakeNotifier("desktop notification", unavailable="no 'actions'")
    pinentry = FakeNotifier("pinentry")
    presence, prompt, _ = _setup(dbus, pinentry)
    confirm = Confirm(presence)
    pinentry.click(Verdict.APPROVED)
    assert confirm.result() is Verdict.APPROVED
    assert dbus.questions == [] and len(pinentry.questions) == 1


def test_without_any_prompt_touch_still_works_and_the_reason_is_logged_once() -> None:
    dbus = FakeNotifier("desktop notification", unavailable="no notification server is running")
    pinentry = FakeNotifier("pinentry", unavailable="pinentry is not installed")
    presence, prompt, log = _setup(dbus, pinentry)
    for _ in range(2):
        pinentry.tried.clear()
        confirm = Confirm(presence)
        assert pinentry.tried.wait(10) and prompt.wait_idle(10)
        presence.touch()
        assert confirm.result() is Verdict.APPROVED
    text = log.getvalue()
    expected = (
        "softkey: no desktop prompt could be shown (desktop notification: no notification "
        "server is running; pinentry: pinentry is not installed); approve with `softkey "
        "touch` or decline with `softkey deny`"
    )
    assert text.count(expected) == 1


def test_a_notifier_that_breaks_is_a_reason_not_a_crash() -> None:
    class Broken(FakeNotifier):
        def run(self, question, answer, ended):  # type: ignore[no-untyped-def]
            self.tried.set()
            raise KeyError("surprise")

    broken = Broken("desktop notification")
    presence, prompt, log = _setup(broken)
    confirm = Confirm(presence)
    assert broken.tried.wait(10) and prompt.wait_idle(10)
    presence.deny()
    assert confirm.result() is Verdict.DENIED
    assert "desktop notification: failed (KeyError: 'surprise')" in log.getvalue()


# -- the desktop session's environment ------------------------------------------------------------


def test_session_variables_come_from_the_user_manager_under_systemd() -> None:
    manager = {"DISPLAY": ":1", "WAYLAND_DISPLAY": "wayland-0", "PATH": "/manager/bin"}
    base = {"INVOCATION_ID": "abc", "PATH": "/usr/bin", "DISPLAY": ""}
    env = session_environment(base, lambda: manager)
    assert env["DISPLAY"] == ":1" and env["WAYLAND_DISPLAY"] == "wayland-0"
    assert env["PATH"] == "/usr/bin"  # only the session variables are taken
    # Outside systemd (no INVOCATION_ID) our own environment is the session's.
    assert "WAYLAND_DISPLAY" not in session_environment({"PATH": "/x"}, lambda: manager)
    # What we have already wins.
    kept = session_environment({"INVOCATION_ID": "a", "DISPLAY": ":7"}, lambda: manager)
    assert kept["DISPLAY"] == ":7"
