"""The threaded CTAPHID driver shared by every transport (UHID, UDP, in-process).

The transport's I/O loop calls ``feed(report, peer)`` for each report from a host; the
driver runs the sans-IO engine (transports/ctaphid.py) and sends its answers through the
``send(report, peer)`` callable the transport gave it. Authenticator commands run in one worker
thread, so the I/O loop keeps reading while a command waits for a person: a CANCEL reaches the
waiting command, other channels get ERR_CHANNEL_BUSY, and a ticker thread sends KEEPALIVE every
100 ms. ``peer`` is the transport's notion of who sent a report (a UDP address, a connection
object, None for UHID).

An injected fault's hold (authenticator/faults.py, ``Outcome.hold``) is carried out here, in the
worker: a delayed answer is sent that many seconds later (by ``clock``) while the ticker keeps
sending KEEPALIVE(PROCESSING), as a slow key does; a CANCEL meanwhile answers
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
from collections.abc import Callable, Hashable

from softkey.authenticator import Authenticator
from softkey.authenticator.ctap import Status
from softkey.authenticator.environment import Clock, SystemClock
from softkey.authenticator.faults import Hold

from .ctaphid import Command, CtapHidEngine, Report, Request, capabilities_for

log = logging.getLogger("softkey.transport")

Send = Callable[[bytes, "Hashable | None"], None]

TICK_INTERVAL = 0.02  # how often the ticker looks for due keepalives and timeouts
_SW_UNKNOWN = b"\x6f\x00"  # ISO 7816 "no precise diagnosis" for a failed U2F command


class _RequestInteraction:
    """The ``Interaction`` a command gets: keepalives out, CANCEL in."""

    def __init__(self, server: HidServer, request: Request) -> None:
        self._server = server
        self._request = request

    def keepalive(self, status: int) -> None:
        self._server._keepalive(self._request, status)

    def cancelled(self) -> bool:
        return self._request.cancelled


class HidServer:
    """One virtual device's CTAPHID endpoint: engine + worker thread + keepalive ticker.

    ``after_request`` runs in the worker after each command, still holding ``auth_lock``
    (the run command uses it to refresh the slot counts ``softkey status`` shows).
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
    ) -> None:
        self.authenticator = authenticator
        # INIT advertises what this authenticator speaks (a U2F-only key: no CBOR).
        self.engine = engine or CtapHidEngine(capabilities=capabilities_for(authenticator.profile))
        self.clock: Clock = clock or SystemClock()
        self.after_request = after_request
        self.tick_interval = tick_interval
        self._send = send
        # Guards the engine; never held while a command runs.
        self._lock = threading.RLock()
        # Serialises every use of the authenticator (worker, power cycle, admin reads).
        self.auth_lock = threading.RLock()
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="softkey-ctaphid", daemon=True)
        self._ticker = threading.Thread(target=self._tick_loop, name="softkey-tick", daemon=True)
        self._started = False
        self._hold: Hold | None = None  # the running command's, set and read by the worker

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> HidServer:
        if not self._started:
            self._started = True
            self._worker.start()
            self._ticker.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Abandon the running command (a presence wait ends) and stop the threads."""
        with self._lock:
            self.engine.abort()
        self._stop.set()
        self._queue.put(None)
        if self._started:
            self._worker.join(timeout)
            self._ticker.join(timeout)

    def __enter__(self) -> HidServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the transport calls --------------------------------------------------------

    def feed(self, report: bytes, peer: Hashable | None = None) -> None:
        """One report from ``peer``; what it causes goes out through ``send`` before this
        returns, each report to the peer the engine addressed it to (not necessarily
        ``peer``: a stalled message's ERR_MSG_TIMEOUT goes to that message's owner)."""
        with self._lock:
            out = self.engine.receive(report, self.clock.monotonic(), peer)
            for answer in out.reports:
                self._emit(answer)
            if out.request is not None:
                self._queue.put(out.request)

    def tick(self) -> None:
        with self._lock:
            for report in self.engine.tick(self.clock.monotonic()):
                self._emit(report)

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
            if forget_channels:
                self.engine.forget_channels()
        # The worker holds auth_lock while a command runs; the abort above makes a presence
        # wait return at once, so this waits at most for one command to finish.
        with self.auth_lock:
            if between is not None:
                between()
            self.authenticator.power_cycle()
            if self.after_request is not None:
                self.after_request()

    # -- internals -----------------------------------------------------------------------

    def _emit(self, report: Report) -> None:
        try:
            self._send(bytes(report), report.peer)
        except OSError as exc:  # the host went away; the device must not
            log.debug("could not send a report: %s", exc)

    def _keepalive(self, request: Request, status: int) -> None:
        with self._lock:
            for report in self.engine.keepalive(request, status, self.clock.monotonic()):
                self._emit(report)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_interval):
            try:
                self.tick()
            except Exception:  # pragma: no cover - a bug must not stop keepalives
                log.exception("CTAPHID tick failed")

    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            response = self._execute(request)
            response = self._honour_hold(request, response)
            with self._lock:
                for report in self.engine.complete(request, response, self.clock.monotonic()):
                    self._emit(report)

    def _honour_hold(self, request: Request, response: bytes) -> bytes:
        """An injected delay or no-answer (faults.py): wait, or drop the response."""
        hold, self._hold = self._hold, None
        if hold is None:
            return response
        if hold.no_answer:
            with self._lock:
                request.silent = True
                request.abandoned = True  # complete() then sends nothing at all
            return b""
        deadline = self.clock.monotonic() + hold.delay
        while not request.abandoned:
            if request.cancelled:
                return bytes([Status.KEEPALIVE_CANCEL])
            left = deadline - self.clock.monotonic()
            if left <= 0 or self._stop.wait(min(self.tick_interval, left)):
                break
        return response

    def _execute(self, request: Request) -> bytes:
        if request.abandoned:
            return b""
        interaction = _RequestInteraction(self, request)
        with self.auth_lock:
            try:
                if request.command == Command.CBOR:
                    response = self.authenticator.handle_cbor(request.payload, interaction)
                    self._hold = getattr(self.authenticator.last_outcome, "hold", None)
                    return response
                if request.command == Command.MSG:
                    return self.authenticator.handle_u2f(request.payload, interaction)
                self.authenticator.wink()
                return b""
            except Exception:  # the authenticator promises not to raise; belt and braces
                log.exception("command 0x%02x failed", request.command)
                return _SW_UNKNOWN if request.command == Command.MSG else bytes([Status.OTHER])
            finally:
                if self.after_request is not None:
                    try:
                        self.after_request()
                    except Exception:  # pragma: no cover
                        log.exception("after_request hook failed")
