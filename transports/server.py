"""The CTAPHID driver shared by every transport (UHID, UDP, in-process).

The transport's I/O loop calls ``feed(report, peer)`` for each report from a host; the
driver runs the sans-IO engine (transports/ctaphid.py) and sends its answers through the
``send(report, peer)`` callable the transport gave it. ``peer`` is the transport's notion of
who sent a report (a UDP address, a connection object, None for UHID).

Where a command runs:

- **Inline**, in the thread that called ``feed`` (the transport's I/O loop), when the server
  was made with ``inline=True`` and the command cannot wait for a person: the presence policy
  and fingerprint verifier decide at once (``AutoPresence``, ``FixedPresence``,
  ``ScriptedPresence``; a ``ScriptedVerifier``), or the command is getInfo. Nothing can
  arrive for such a command while it runs (no CANCEL to notice, no touch to wait for), so
  handing it to another thread would only add two thread switches per request.
- **In the worker thread** otherwise (a presence policy that may wait, such as
  ``WaitingPresence``, or one the driver does not know), so the I/O loop keeps reading while
  the command waits: a CANCEL reaches the waiting command, other channels get
  ERR_CHANNEL_BUSY, INIT is answered. Also when an admin call holds ``auth_lock``: the I/O
  loop never blocks on it. The worker thread starts with the first such command.

Nothing polls. Timeouts (a stalled message, KEEPALIVE every 100 ms while a request runs, an
injected delay) are deadlines: ``timeout()`` says how long until ``tick()`` has work. A
transport with its own I/O loop (``driven=True``: UDP, UHID) blocks on its file descriptors
for that long and calls ``tick()``; otherwise (in-process) a ticker thread sleeps until the
next deadline and is woken when one comes nearer. An idle key sleeps until a report arrives.
With a clock that is not the system's (a ``FakeClock`` in tests) real and clock time are
unrelated, so the ticker falls back to looking every ``tick_interval`` seconds.

An injected fault's hold (authenticator/faults.py, ``Outcome.hold``) is carried out here too,
as a deadline: a delayed answer is sent that many seconds later (by ``clock``) while
KEEPALIVE(PROCESSING) goes out every 100 ms, as a slow key does; a CANCEL meanwhile answers
CTAP2_ERR_KEEPALIVE_CANCEL at once. "No answer" marks the request silent (no KEEPALIVE) and
drops its response, so the client's read times out; the device is free for the next request.

Where each report goes is decided by the engine, not here: every report it returns carries its
``peer`` (answers to a packet go to its sender; a transaction's response, keepalives and
timeout go to the peer that sent the transaction's initialization packet). The server keeps no
channel -> address table: a packet bearing someone else's channel id, a continuation, or a
rejected packet cannot redirect anybody's replies.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from softkey.authenticator import Authenticator
from softkey.authenticator.builtin_uv import ScriptedVerifier
from softkey.authenticator.ctap import Cmd, Status
from softkey.authenticator.environment import (
    AutoPresence,
    Clock,
    FixedPresence,
    ScriptedPresence,
    SystemClock,
)
from softkey.authenticator.faults import Hold

from .ctaphid import Command, CtapHidEngine, Report, Request, capabilities_for

log = logging.getLogger("softkey.transport")

Send = Callable[[bytes, "Hashable | None"], None]

# With a clock other than the system's: how often the ticker looks for due keepalives and
# timeouts (a test's FakeClock moves when the test says, so no deadline can be slept to).
TICK_INTERVAL = 0.02
# Sleep this much past a deadline, so the wake-up finds it due (the engine's timeouts are
# strict inequalities) instead of spinning on a deadline a few nanoseconds away.
DEADLINE_SLACK = 0.001
_SW_UNKNOWN = b"\x6f\x00"  # ISO 7816 "no precise diagnosis" for a failed U2F command
# Presence policies (and fingerprint verifiers) that answer without waiting for anybody.
_INSTANT_PRESENCE = (AutoPresence, FixedPresence, ScriptedPresence)
# CTAP commands that never ask for presence or a finger, whatever the policy.
_NEVER_WAIT = frozenset({Cmd.GET_INFO})


class _RequestInteraction:
    """The ``Interaction`` a command gets: keepalives out, CANCEL in."""

    def __init__(self, server: HidServer, request: Request) -> None:
        self._server = server
        self._request = request

    def keepalive(self, status: int) -> None:
        self._server._keepalive(self._request, status)

    def cancelled(self) -> bool:
        return self._request.cancelled


@dataclass
class _Held:
    """A response an injected delay holds back until ``due``."""

    request: Request
    response: bytes
    due: float


def never_waits(authenticator: Authenticator, request: Request) -> bool:
    """True if executing ``request`` cannot wait for a person (see the module docstring)."""
    if request.command == Command.WINK:
        return True
    if request.command == Command.CBOR and request.payload and request.payload[0] in _NEVER_WAIT:
        return True
    if type(authenticator.presence) not in _INSTANT_PRESENCE:
        return False
    verifier = getattr(authenticator, "verifier", None)
    return verifier is None or type(verifier) is ScriptedVerifier


class HidServer:
    """One virtual device's CTAPHID endpoint: engine, where commands run, and deadlines.

    ``inline``: run commands that cannot wait for a person in the thread calling ``feed``.
    ``driven``: the transport's I/O loop calls ``tick()`` after ``timeout()`` seconds (and
    no ticker thread runs). ``after_request`` runs after each command, still holding
    ``auth_lock`` (the run command uses it to refresh the slot counts ``softkey status``
    shows).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        send: Send,
        *,
        engine: CtapHidEngine | None = None,
        clock: Clock | None = None,
        after_request: Callable[[], None] | None = None,
        tick_interval: float = TICK_INTERVAL,
        inline: bool = False,
        driven: bool = False,
    ) -> None:
        self.authenticator = authenticator
        # INIT advertises what this authenticator speaks (a U2F-only key: no CBOR).
        self.engine = engine or CtapHidEngine(capabilities=capabilities_for(authenticator.profile))
        self.clock: Clock = clock or SystemClock()
        self.after_request = after_request
        self.tick_interval = tick_interval
        self.inline = inline
        self.driven = driven
        self._send = send
        # Deadlines mean something only on the system clock (see the module docstring).
        self._real_clock = type(self.clock) is SystemClock
        self._now = time.monotonic if self._real_clock else self.clock.monotonic
        # Guards the engine and ``_held``; never held while a command runs.
        self._lock = threading.RLock()
        # Serialises every use of the authenticator (commands, power cycle, admin reads).
        self.auth_lock = threading.RLock()
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        # The ticker sleeps on this until the next deadline; woken when a nearer one appears.
        self._wake = threading.Condition(self._lock)
        self._ticker_due: float | None = None  # the deadline the ticker sleeps until
        # When ``tick()`` next has work (clock time; None: nothing scheduled), kept current by
        # every call that changes it. A driven transport's loop may read it without the lock:
        # a stale value costs one early or late look, the next one is right.
        self.due: float | None = None
        self._started = False
        self._held: _Held | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> HidServer:
        if not self._started:
            self._started = True
            if not self.driven:
                self._ticker = threading.Thread(
                    target=self._tick_loop, name="softkey-tick", daemon=True
                )
                self._ticker.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Abandon the running command (a presence wait ends) and stop the threads."""
        with self._lock:
            self.engine.abort()
            self._held = None
            self._stop.set()
            self._wake.notify_all()
        self._queue.put(None)
        for thread in (self._worker, self._ticker):
            if thread is not None:
                thread.join(timeout)

    def __enter__(self) -> HidServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the transport calls --------------------------------------------------------

    def feed(self, report: bytes, peer: Hashable | None = None) -> None:
        """One report from ``peer``; what it causes goes out through ``send`` before this
        returns (an inline command's response too), each report to the peer the engine
        addressed it to (not necessarily ``peer``: a stalled message's ERR_MSG_TIMEOUT goes
        to that message's owner)."""
        with self._lock:
            now = self._now()
            out = self.engine.receive(report, now, peer)
            self._emit_all(out.reports)
            request = out.request
            if self._held is not None:
                self._settle_held(now)  # a CANCEL (or INIT) during an injected delay
            if request is None:
                self._update_due()
                return
            if not (self.inline and never_waits(self.authenticator, request)):
                self._to_worker(request)
                return
        # Inline: the I/O loop runs the command. If an admin call holds the authenticator,
        # the worker waits for it instead, so the loop keeps answering INIT and CANCEL.
        if not self.auth_lock.acquire(blocking=False):
            with self._lock:
                self._to_worker(request)
            return
        try:
            response, hold = self._execute(request)
        finally:
            self.auth_lock.release()
        self._finish(request, response, hold)

    def timeout(self) -> float | None:
        """Seconds until ``tick()`` has something to do; None: nothing is scheduled (an idle
        key sleeps until the next report)."""
        due = self.due
        if due is None:
            return None
        if not self._real_clock:
            return self.tick_interval
        return max(0.0, due - self._now()) + DEADLINE_SLACK

    def overdue(self) -> bool:
        """``tick()`` has work now (a driven loop checks this between reports, so a stream
        of reports cannot hold back a KEEPALIVE or a delayed answer)."""
        due = self.due
        return due is not None and self._real_clock and self._now() >= due

    def tick(self) -> None:
        with self._lock:
            now = self._now()
            self._emit_all(self.engine.tick(now))
            if self._held is not None:
                self._settle_held(now)
            self._update_due()

    def power_cycle(
        self, *, forget_channels: bool, between: Callable[[], None] | None = None
    ) -> None:
        """Cut the power: abandon the running command, then ``authenticator.power_cycle()``.

        ``forget_channels``: a USB replug is a new device, so every channel is gone; a UDP
        simulator's power cycle keeps them. ``between`` runs while the power is off (UHID
        destroys and recreates the device there).
        """
        with self._lock:
            self.engine.abort()
            if self._held is not None:
                self._settle_held(self._now())
            if forget_channels:
                self.engine.forget_channels()
            self._update_due()
        # A command holds auth_lock while it runs; the abort above makes a presence wait
        # return at once, so this waits at most for one command to finish.
        with self.auth_lock:
            if between is not None:
                between()
            self.authenticator.power_cycle()
            if self.after_request is not None:
                self.after_request()

    # -- internals -----------------------------------------------------------------------

    def _emit(self, report: Report) -> None:
        try:
            self._send(report, report.peer)
        except OSError as exc:  # the host went away; the device must not
            log.debug("could not send a report: %s", exc)

    def _emit_all(self, reports: Iterable[Report]) -> None:
        for report in reports:
            self._emit(report)

    def _next_due(self) -> float | None:
        due = self.engine.next_deadline()
        held = self._held
        if held is not None and (due is None or held.due < due):
            due = held.due
        return due

    def _update_due(self) -> None:
        """(Under ``_lock``.) Recompute ``due``; wake the ticker if it sleeps past it."""
        self.due = due = self._next_due()
        if self._ticker is not None and due is not None:
            if self._ticker_due is None or due < self._ticker_due:
                self._wake.notify()

    def _to_worker(self, request: Request) -> None:
        """(Under ``_lock``.) Run ``request`` in the worker thread."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="softkey-ctaphid", daemon=True)
            self._worker.start()
        self._queue.put(request)
        self._update_due()

    def _keepalive(self, request: Request, status: int) -> None:
        with self._lock:
            self._emit_all(self.engine.keepalive(request, status, self._now()))
            self._update_due()

    def _tick_loop(self) -> None:
        with self._lock:
            while not self._stop.is_set():
                self._ticker_due = self.due
                self._wake.wait(self.timeout())
                self._ticker_due = None
                if self._stop.is_set():
                    return
                try:
                    self.tick()
                except Exception:  # pragma: no cover - a bug must not stop keepalives
                    log.exception("CTAPHID tick failed")

    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            with self.auth_lock:
                response, hold = self._execute(request)
            self._finish(request, response, hold)

    def _finish(self, request: Request, response: bytes, hold: Hold | None) -> None:
        """Send ``request``'s response, or hold it back as an injected fault says."""
        with self._lock:
            if hold is not None and hold.no_answer:
                request.silent = True
                request.abandoned = True  # complete() then sends nothing at all
            elif hold is not None and not request.abandoned:
                if request.cancelled:
                    response = bytes([Status.KEEPALIVE_CANCEL])
                else:
                    due = self._now() + hold.delay
                    self._held = _Held(request, response, due)
                    self._update_due()
                    return
            self._emit_all(self.engine.complete(request, response, self._now()))
            self._update_due()

    def _settle_held(self, now: float) -> None:
        """(Under ``_lock``.) Send a held response once it is due, cancelled or abandoned."""
        held = self._held
        assert held is not None
        request = held.request
        if request.cancelled and not request.abandoned:
            response = bytes([Status.KEEPALIVE_CANCEL])
        elif request.abandoned or now >= held.due:
            response = held.response
        else:
            return
        self._held = None
        self._emit_all(self.engine.complete(request, response, now))

    def _execute(self, request: Request) -> tuple[bytes, Hold | None]:
        """Run ``request`` (the caller holds ``auth_lock``): its response, and the hold an
        injected fault puts on it."""
        if request.abandoned:
            return b"", None
        interaction = _RequestInteraction(self, request)
        try:
            if request.command == Command.CBOR:
                response = self.authenticator.handle_cbor(request.payload, interaction)
                return response, getattr(self.authenticator.last_outcome, "hold", None)
            if request.command == Command.MSG:
                return self.authenticator.handle_u2f(request.payload, interaction), None
            self.authenticator.wink()
            return b"", None
        except Exception:  # the authenticator promises not to raise; belt and braces
            log.exception("command 0x%02x failed", request.command)
            return (_SW_UNKNOWN if request.command == Command.MSG else bytes([Status.OTHER])), None
        finally:
            if self.after_request is not None:
                try:
                    self.after_request()
                except Exception:  # pragma: no cover
                    log.exception("after_request hook failed")
