"""User presence that waits for a person: `softkey touch` / `softkey deny`, or the terminal.

``WaitingPresence.confirm`` blocks the command (in the transport's worker thread) until the
request is approved, denied, times out (30 s, like a real key's touch timeout) or the host
cancels it; meanwhile it calls ``interaction.keepalive(UPNEEDED)`` every 100 ms so CTAPHID
sends KEEPALIVE(UPNEEDED) and the platform knows to ask for a touch (CTAP 2.1 §11.2.9.2.1).
It uses threads, so it lives here and not in the pure authenticator package.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Protocol, TextIO

from softkey.authenticator.environment import (
    KEEPALIVE_UPNEEDED,
    Clock,
    Interaction,
    PresenceRequest,
    SystemClock,
    Verdict,
)
from softkey.transports.display import printable

DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.1

_YES = {"y", "yes"}


# WebAuthn lets an authenticator cut user.name to 64 bytes; beyond that it only floods the prompt.
USER_NAME_LIMIT = 64


def describe(request: PresenceRequest) -> str:
    """``getAssertion for example.com (alice)``: what a person is asked to approve.

    rp.id and user.name come from the request, so they are escaped (transports/display.py): a
    crafted rp.id must not be able to redraw this line into one naming another site. The
    rp.id is never shortened: its end (the registrable domain) is the part that matters.
    """
    text = request.purpose
    if request.rp_id:
        text += f" for {printable(request.rp_id)}"
    if request.user_name:
        text += f" ({printable(request.user_name, USER_NAME_LIMIT)})"
    return text


_OUTCOMES = {
    Verdict.APPROVED: "approved",
    Verdict.DENIED: "denied",
    Verdict.TIMEOUT: "timed out (nobody answered)",
    Verdict.CANCELLED: "cancelled by the client",
}


class Prompt(Protocol):
    """How a waiting request is shown to a person (and, maybe, answered)."""

    def ask(self, request: PresenceRequest, timeout: float) -> None: ...

    def poll(self) -> Verdict | None: ...

    def done(self, verdict: Verdict) -> None: ...


class Announcer:
    """Only tells the operator a request waits for `softkey touch` / `softkey deny`."""

    def __init__(self, stdout: TextIO) -> None:
        self._out = stdout

    def ask(self, request: PresenceRequest, timeout: float) -> None:
        self._out.write(
            f"softkey: waiting {timeout:g} s for `softkey touch` or `softkey deny`: "
            f"{describe(request)}\n"
        )
        self._out.flush()

    def poll(self) -> Verdict | None:
        return None

    def done(self, verdict: Verdict) -> None:
        self._out.write(f"softkey: {_OUTCOMES[verdict]}\n")
        self._out.flush()


class TerminalPrompt:
    """Asks ``approve? [y/N]`` on a terminal; the answer is polled, never blocked on."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self._fd = stdin.fileno()
        self._out = stdout
        self._buffer = b""
        self.closed = False

    def ask(self, request: PresenceRequest, timeout: float) -> None:
        if self.closed:
            return
        self._discard_typeahead()
        self._out.write(
            f"\nsoftkey: touch requested: {describe(request)}.\n"
            f"  Approve? [y/N] (or run `softkey touch` / `softkey deny`; {timeout:g} s): "
        )
        self._out.flush()

    def poll(self) -> Verdict | None:
        """The person's answer if they have typed a line, else None."""
        if self.closed:
            return None
        try:
            readable, _, _ = select.select([self._fd], [], [], 0)
            if not readable:
                return None
            chunk = os.read(self._fd, 1024)
        except OSError:
            chunk = b""
        if not chunk:  # EOF: no terminal after all; the control socket still works
            self.closed = True
            return None
        self._buffer += chunk
        if b"\n" not in self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = line.decode(errors="replace").strip().lower()
        return Verdict.APPROVED if answer in _YES else Verdict.DENIED

    def done(self, verdict: Verdict) -> None:
        if self.closed:
            return
        self._out.write(f"\nsoftkey: {_OUTCOMES[verdict]}.\n")
        self._out.flush()

    def _discard_typeahead(self) -> None:
        # A stray "y" typed earlier must not approve a request nobody has seen yet.
        self._buffer = b""
        try:
            import termios

            if os.isatty(self._fd):
                termios.tcflush(self._fd, termios.TCIFLUSH)
        except (ImportError, OSError):  # pragma: no cover - not a tty / not POSIX
            pass


class WaitingPresence:
    """A ``Presence`` that waits for ``touch()`` / ``deny()`` (or a terminal answer)."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        clock: Clock | None = None,
        poll_interval: float = POLL_INTERVAL,
        prompt: Prompt | None = None,
    ) -> None:
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.prompt = prompt
        self._cond = threading.Condition()
        self._pending: PresenceRequest | None = None
        self._decision: Verdict | None = None

    @property
    def pending(self) -> PresenceRequest | None:
        """The request a person is being asked about right now, if any."""
        with self._cond:
            return self._pending

    def confirm(self, request: PresenceRequest, interaction: Interaction) -> Verdict:
        with self._cond:
            self._pending = request
            self._decision = None
            self._cond.notify_all()
        if self.prompt is not None:
            self.prompt.ask(request, self.timeout)
        verdict = Verdict.TIMEOUT
        try:
            verdict = self._wait(interaction)
            return verdict
        finally:
            with self._cond:
                self._pending = None
                self._decision = None
                self._cond.notify_all()
            if self.prompt is not None:
                self.prompt.done(verdict)

    def _wait(self, interaction: Interaction) -> Verdict:
        deadline = self.clock.monotonic() + self.timeout
        while True:
            interaction.keepalive(KEEPALIVE_UPNEEDED)
            if interaction.cancelled():
                return Verdict.CANCELLED
            if self.prompt is not None:
                answer = self.prompt.poll()
                if answer is not None:
                    return answer
            with self._cond:
                if self._decision is not None:
                    return self._decision
                if self.clock.monotonic() >= deadline:
                    return Verdict.TIMEOUT
                self._cond.wait(self.poll_interval)
                if self._decision is not None:
                    return self._decision

    def wait_for_request(self, timeout: float) -> PresenceRequest | None:
        """Block until a request waits for a person (or ``timeout`` s pass); return it."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None, timeout=timeout)
            return self._pending

    def _decide(self, verdict: Verdict, wait: float) -> PresenceRequest | None:
        with self._cond:
            if self._pending is None and wait > 0:
                self._cond.wait_for(lambda: self._pending is not None, timeout=wait)
            request = self._pending
            if request is None:
                return None
            self._decision = verdict
            self._cond.notify_all()
            return request

    def touch(self, wait: float = 0.0) -> PresenceRequest | None:
        """Approve the pending request (waiting up to ``wait`` s for one); returns it."""
        return self._decide(Verdict.APPROVED, wait)

    def deny(self, wait: float = 0.0) -> PresenceRequest | None:
        """Decline the pending request (waiting up to ``wait`` s for one); returns it."""
        return self._decide(Verdict.DENIED, wait)
