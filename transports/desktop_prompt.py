"""``--presence desktop``: ask for the touch in a desktop notification with Approve / Deny.

A person at a desktop should not need a terminal to approve a sign-in. The question goes to
the freedesktop notification server (GNOME Shell, KDE Plasma, dunst, mako, ...) over the
session D-Bus, with two actions (Desktop Notifications Specification 1.2, ``Notify`` with
``actions``; the answer comes back as the ``ActionInvoked`` signal). When no notification
server can show actions (``GetCapabilities`` lacks "actions", or no server runs at all), it
falls back to pinentry's CONFIRM dialog, as tpm-fido does. When neither can be shown the key
still works: `softkey touch` / `softkey deny` answer through the control socket, as they do
alongside a shown prompt (whichever answers first wins, transports/presence.py).

D-Bus is spoken with jeepney, a small pure-Python implementation of the protocol (no compiled
parts, maintained, used by SecretStorage/keyring): the prompt needs one long-lived
connection per question, because servers send ``ActionInvoked`` to the connection that sent
``Notify``; a ``gdbus call`` subprocess would be gone by then.

What is shown comes from the request (rp.id, user.name): attacker-controlled text. It passes
through ``printable()`` (transports/display.py) like every other place that shows it, and, for
servers that interpret a markup subset in the body ("body-markup"), ``&``, ``<`` and ``>`` are
escaped so a crafted name cannot restyle or hide the question. Request text never goes into
the summary line, which servers treat differently (plain text by the spec, markup in some).

Lifetime: ``ask`` starts a thread that shows the question; ``poll`` returns the answer once
given; ``done`` (the request was answered, timed out, was cancelled by CTAPHID CANCEL, or the
control socket answered) withdraws it: ``CloseNotification``, or pinentry is ended.
"""

from __future__ import annotations

import errno
import math
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from softkey.authenticator.environment import PresenceRequest, Verdict
from softkey.transports.display import printable
from softkey.transports.presence import USER_NAME_LIMIT, Announcer, describe

PINENTRY_ENV = "SOFTKEY_PINENTRY"  # which pinentry program (default: `pinentry`)

APPROVE = "approve"  # action keys sent with Notify; "default" (a click on the body) is not one
DENY = "deny"
ACTIONS = ((APPROVE, "Approve"), (DENY, "Deny"))

# What a graphical helper needs from the desktop session. A user service may have started
# before the session told the user manager about them (`systemctl --user import-environment`,
# `dbus-update-activation-environment --systemd`); see session_environment().
SESSION_VARIABLES = ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")

# Seconds a D-Bus call or a pinentry set-up step may take before the prompt gives up on it.
CALL_TIMEOUT = 5.0
POLL = 0.1

_TITLES = {
    "makeCredential": "Security key: register a credential?",
    "register (U2F)": "Security key: register a credential?",
    "getAssertion": "Security key: sign in?",
    "authenticate (U2F)": "Security key: sign in?",
    "reset": "Security key: erase every credential on it?",
}


class PromptUnavailable(Exception):
    """This way of asking cannot be used here (the message says why); try the next one."""


# -- what is shown ------------------------------------------------------------------------------


def escape_markup(text: str) -> str:
    """``text`` for a notification body a server may read as markup (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Question:
    """The text of one presence question: a fixed summary and escaped body lines."""

    summary: str
    lines: tuple[str, ...]
    timeout: float

    def body(self, markup: bool) -> str:
        """The body as sent: markup-escaped when the server interprets markup."""
        return "\n".join(escape_markup(line) if markup else line for line in self.lines)


def question_for(request: PresenceRequest, timeout: float) -> Question:
    """What the person is asked about ``request``; only the body holds request text."""
    lines = []
    if request.rp_id:
        lines.append(f"Site: {printable(request.rp_id)}")  # never shortened (presence.py)
    if request.user_name:
        lines.append(f"User: {printable(request.user_name, USER_NAME_LIMIT)}")
    lines.append(f"Request: {printable(request.purpose, 64)}")
    lines.append(f"Approve within {timeout:g} s, or deny.")
    title = _TITLES.get(request.purpose, "Security key: approve this request?")
    return Question(title, tuple(lines), timeout)


# -- the environment of the desktop session ----------------------------------------------------


def _manager_environment() -> dict[str, str]:
    """The systemd user manager's environment (what the session imported into it), or {}."""
    if shutil.which("systemctl") is None:
        return {}
    try:
        res = subprocess.run(
            ["systemctl", "--user", "show-environment"],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0:
        return {}
    found = {}
    for line in res.stdout.splitlines():
        name, sep, value = line.partition("=")
        # Values with special characters come C-quoted ($'...'); the ones wanted here never do.
        if sep and name in SESSION_VARIABLES and not value.startswith("$'"):
            found[name] = value
    return found


def session_environment(
    base: Mapping[str, str] | None = None,
    manager: Callable[[], Mapping[str, str]] = _manager_environment,
) -> dict[str, str]:
    """The environment for reaching the desktop: ours, plus session variables the user
    manager learned after this service started (only when running under systemd, which sets
    INVOCATION_ID for each service it starts)."""
    env = dict(os.environ if base is None else base)
    if env.get("INVOCATION_ID") and any(not env.get(v) for v in SESSION_VARIABLES):
        for name, value in manager().items():
            if name in SESSION_VARIABLES and not env.get(name):
                env[name] = value
    return env


def session_bus_address(env: Mapping[str, str]) -> str | None:
    """DBUS_SESSION_BUS_ADDRESS, else the per-user bus systemd/dbus-user-session provides."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and Path(runtime, "bus").is_socket():
        return f"unix:path={Path(runtime, 'bus')}"
    return None


# -- ways of asking -----------------------------------------------------------------------------


Answer = Callable[[Verdict], None]


class Notifier(Protocol):
    """One way to put a question in front of a person."""

    name: str

    def run(self, question: Question, answer: Answer, ended: threading.Event) -> None:
        """Show ``question`` and call ``answer`` with the person's choice; return once the
        question is gone. When ``ended`` is set, withdraw the question and return. Raise
        PromptUnavailable (before showing anything) if it cannot be shown here."""
        ...


NOTIFICATIONS = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
CLOSED_BY_USER = 2  # NotificationClosed reason: dismissed by the user (spec, "Signals")


class DbusNotifier:
    """Desktop notifications over the session bus (jeepney)."""

    name = "desktop notification"

    def __init__(
        self,
        environ: Callable[[], Mapping[str, str]] = session_environment,
        *,
        app_name: str = "softkey",
        icon: str = "security-high",
    ) -> None:
        self._environ = environ
        self.app_name = app_name
        self.icon = icon

    def run(self, question: Question, answer: Answer, ended: threading.Event) -> None:
        try:
            from jeepney import (
                DBusAddress,
                HeaderFields,
                MatchRule,
                MessageType,
                message_bus,
                new_method_call,
            )
            from jeepney.io.blocking import open_dbus_connection
        except ImportError:
            raise PromptUnavailable(
                "the jeepney package is missing (pip install jeepney)"
            ) from None
        address = session_bus_address(self._environ())
        if address is None:
            raise PromptUnavailable(
                "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset and there is no "
                "$XDG_RUNTIME_DIR/bus)"
            )
        try:
            conn = open_dbus_connection(address, auth_timeout=CALL_TIMEOUT)
        except Exception as exc:  # OSError, TimeoutError, jeepney's AuthenticationError ...
            raise PromptUnavailable(f"cannot connect to the session bus: {exc}") from None
        server = DBusAddress(NOTIFICATIONS_PATH, bus_name=NOTIFICATIONS, interface=NOTIFICATIONS)

        def call(method: str, signature: str | None = None, body: tuple[Any, ...] = ()) -> Any:
            msg = new_method_call(server, method, signature, body)
            reply = conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT)
            if reply.header.message_type == MessageType.error:
                raise _DbusError(
                    str(reply.header.fields.get(HeaderFields.error_name, "")), reply.body
                )
            return reply

        try:
            try:
                capabilities = set(call("GetCapabilities").body[0])
            except _DbusError as exc:
                if exc.name.endswith((".ServiceUnknown", ".NameHasNoOwner")):
                    raise PromptUnavailable("no notification server is running") from None
                raise PromptUnavailable(f"the notification server failed: {exc}") from None
            if "actions" not in capabilities:
                raise PromptUnavailable(
                    "the notification server cannot show Approve/Deny buttons (no 'actions')"
                )
            # Servers broadcast the signals (or send them to us alone, as dunst does): ask
            # the bus for the broadcast ones of the notification service only.
            rule = MatchRule(
                type="signal", sender=NOTIFICATIONS, interface=NOTIFICATIONS,
                path=NOTIFICATIONS_PATH,
            )  # fmt: skip
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=CALL_TIMEOUT)
            hints = {"urgency": ("y", 2)}  # critical: servers keep it up until answered
            actions = [part for pair in ACTIONS for part in pair]
            reply = call(
                "Notify",
                "susssasa{sv}i",
                (
                    self.app_name,
                    0,
                    self.icon,
                    question.summary,
                    question.body("body-markup" in capabilities),
                    actions,
                    hints,
                    max(1, int(question.timeout * 1000)),
                ),
            )
            notification = reply.body[0]
            # Only the server that showed it may answer (it sent the reply): another client
            # on the session bus could emit a look-alike ActionInvoked.
            owner = reply.header.fields.get(HeaderFields.sender)
            self._wait(conn, notification, owner, answer, ended)
            if ended.is_set():
                try:
                    call("CloseNotification", "u", (notification,))
                except (_DbusError, OSError, TimeoutError):
                    pass  # already closed by the server or the person
        except _DbusError as exc:
            raise PromptUnavailable(f"the notification server failed: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise PromptUnavailable(f"lost the session bus: {exc}") from None
        finally:
            conn.close()

    @staticmethod
    def _wait(
        conn: Any, notification: int, owner: Any, answer: Answer, ended: threading.Event
    ) -> None:
        """Until ``ended``: map ActionInvoked / NotificationClosed of our notification."""
        from jeepney import HeaderFields, MessageType

        while not ended.is_set():
            try:
                msg = conn.receive(timeout=POLL)
            except TimeoutError:
                continue
            head = msg.header
            if head.message_type != MessageType.signal:
                continue
            fields = head.fields
            if (
                fields.get(HeaderFields.sender) != owner
                or fields.get(HeaderFields.interface) != NOTIFICATIONS
            ):
                continue
            member = fields.get(HeaderFields.member)
            body = msg.body
            if not body or body[0] != notification:
                continue
            if member == "ActionInvoked" and len(body) >= 2:
                verdict = {APPROVE: Verdict.APPROVED, DENY: Verdict.DENIED}.get(body[1])
                if verdict is not None:
                    answer(verdict)
            elif member == "NotificationClosed":
                # Dismissed by the person: a "no". Expired (1) or closed otherwise: the
                # request goes on waiting for `softkey touch`/`deny` or its timeout.
                if len(body) >= 2 and body[1] == CLOSED_BY_USER:
                    answer(Verdict.DENIED)
                return


class _DbusError(Exception):
    def __init__(self, name: str, data: Any) -> None:
        super().__init__(f"{name} {data!r}".strip())
        self.name = name


# -- pinentry (Assuan) ----------------------------------------------------------------------------

# libgpg-error codes (the low 16 bits of an Assuan ERR code; the high bits name the source).
GPG_ERR_TIMEOUT = 62
GPG_ERR_CANCELED = 99  # Escape, or the window closed
GPG_ERR_NOT_CONFIRMED = 114  # the cancel button (here: "Deny")
ASSUAN_LINE_MAX = 1000  # bytes, including the newline (Assuan's line length limit)


def assuan_escape(text: str) -> str:
    """``text`` as one Assuan argument: %, CR and LF percent-encoded."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class PinentryNotifier:
    """pinentry's CONFIRM dialog (``SETOK Approve``, ``SETCANCEL Deny``), over Assuan."""

    name = "pinentry"

    def __init__(
        self,
        program: str | None = None,
        environ: Callable[[], Mapping[str, str]] = session_environment,
    ) -> None:
        self.program = program or os.environ.get(PINENTRY_ENV) or "pinentry"
        self._environ = environ

    def run(self, question: Question, answer: Answer, ended: threading.Event) -> None:
        env = dict(self._environ())
        path = shutil.which(self.program, path=env.get("PATH") or os.defpath)
        if path is None:
            raise PromptUnavailable(f"{self.program} is not installed")
        commands = [
            "SETTITLE softkey",
            "SETDESC " + assuan_escape(question.summary + "\n\n" + question.body(markup=False)),
            "SETOK Approve",
            "SETCANCEL Deny",
            # A safety net: pinentry goes away by itself if softkey dies without ending it.
            f"SETTIMEOUT {math.ceil(question.timeout) + 1}",
        ]
        if any(len(c.encode()) + 1 > ASSUAN_LINE_MAX for c in commands):
            raise PromptUnavailable("the request's text is too long for a pinentry line")
        try:
            proc = subprocess.Popen(
                [path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # no terminal signals from ours
            )
        except OSError as exc:
            raise PromptUnavailable(f"cannot start {path}: {exc.strerror or exc}") from None
        session = _Assuan(proc)
        try:
            session.expect_ok(ended)
            for command in commands:
                if ended.is_set():
                    return
                session.send(command)
                session.expect_ok(ended)
            session.send("CONFIRM")
            reply = session.reply(ended, deadline=None)
            if reply is None:  # ended: the request is over
                return
            if reply.startswith("OK"):
                answer(Verdict.APPROVED)
                return
            code = _assuan_code(reply)
            if code in (GPG_ERR_CANCELED, GPG_ERR_NOT_CONFIRMED):
                answer(Verdict.DENIED)
            elif code != GPG_ERR_TIMEOUT:
                raise PromptUnavailable(f"{self.program} failed: {_assuan_text(reply)}")
        finally:
            session.close()


def _assuan_code(line: str) -> int | None:
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "ERR" and parts[1].isdigit():
        return int(parts[1]) & 0xFFFF
    return None


def _assuan_text(line: str) -> str:
    """The description of an ``ERR code description`` line."""
    parts = line.split(None, 2)
    return parts[2] if len(parts) == 3 else line


class _Assuan:
    """The client side of one Assuan session with a child process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._in = proc.stdin
        self._fd = proc.stdout.fileno()
        self._buffer = b""

    def send(self, line: str) -> None:
        try:
            self._in.write(line.encode() + b"\n")
            self._in.flush()
        except OSError as exc:
            raise PromptUnavailable(f"pinentry went away ({exc.strerror or exc})") from None

    def _line(self, ended: threading.Event, deadline: float | None) -> str | None:
        while b"\n" not in self._buffer:
            if ended.is_set():
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise PromptUnavailable("pinentry did not answer")
            readable, _, _ = select.select([self._fd], [], [], POLL)
            if not readable:
                continue
            try:
                chunk = os.read(self._fd, 4096)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                chunk = b""
            if not chunk:
                raise PromptUnavailable("pinentry exited without answering")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def reply(self, ended: threading.Event, deadline: float | None) -> str | None:
        """The next OK/ERR line (status and comment lines skipped); None once ``ended``."""
        while True:
            line = self._line(ended, deadline)
            if line is None or line.startswith(("OK", "ERR")):
                return line

    def expect_ok(self, ended: threading.Event) -> None:
        reply = self.reply(ended, time.monotonic() + CALL_TIMEOUT)
        if reply is not None and not reply.startswith("OK"):
            raise PromptUnavailable(f"pinentry refused: {_assuan_text(reply)}")

    def close(self) -> None:
        try:
            self._in.close()  # EOF: pinentry ends its session
        except OSError:
            pass
        try:
            self.proc.wait(0.5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the prompt ---------------------------------------------------------------------------------


class DesktopPrompt:
    """A ``Prompt`` (transports/presence.py) that asks through the first notifier that works."""

    def __init__(
        self, notifiers: Sequence[Notifier], log: TextIO, *, close_wait: float = 1.0
    ) -> None:
        self.notifiers = tuple(notifiers)
        self._log = log
        self._outcome = Announcer(log)  # "softkey: approved" / "timed out" / ... lines
        self.close_wait = close_wait
        self._lock = threading.Lock()
        self._answer: Verdict | None = None
        self._ended = threading.Event()
        self._ended.set()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None
        self.shown_by: str | None = None  # which notifier showed the current question

    @classmethod
    def default(cls, log: TextIO) -> DesktopPrompt:
        return cls([DbusNotifier(), PinentryNotifier()], log)

    def _say(self, text: str) -> None:
        try:
            self._log.write(f"softkey: {text}\n")
            self._log.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not fail the request

    def ask(self, request: PresenceRequest, timeout: float) -> None:
        ended = threading.Event()
        with self._lock:
            self._ended.set()  # anything still shown from before goes
            self._ended = ended
            self._answer = None
            self.shown_by = None
        self._say(
            f"asking on the desktop ({timeout:g} s; or `softkey touch` / `softkey deny`): "
            f"{describe(request)}"
        )
        question = question_for(request, timeout)

        def answer(verdict: Verdict) -> None:
            with self._lock:
                if self._ended is ended and not ended.is_set() and self._answer is None:
                    self._answer = verdict

        thread = threading.Thread(
            target=self._show, args=(question, answer, ended), name="softkey-prompt", daemon=True
        )
        with self._lock:  # _show takes the lock first: _thread is set when it runs
            self._thread = thread
            thread.start()

    def _show(self, question: Question, answer: Answer, ended: threading.Event) -> None:
        problems = []
        for notifier in self.notifiers:
            if ended.is_set():
                return
            try:
                with self._lock:
                    if self._ended is ended:
                        self.shown_by = notifier.name
                notifier.run(question, answer, ended)
                return
            except PromptUnavailable as exc:
                problems.append(f"{notifier.name}: {exc}")
            except Exception as exc:  # a broken helper must not take the key down with it
                problems.append(f"{notifier.name}: failed ({type(exc).__name__}: {exc})")
            with self._lock:
                if self._ended is ended:
                    self.shown_by = None
        problem = "; ".join(problems) or "no way of asking is configured"
        if problem != self._last_problem:  # once, not on every request
            self._last_problem = problem
            self._say(
                f"no desktop prompt could be shown ({problem}); approve with `softkey touch` "
                "or decline with `softkey deny`"
            )

    def poll(self) -> Verdict | None:
        with self._lock:
            return self._answer

    def done(self, verdict: Verdict) -> None:
        with self._lock:
            self._ended.set()
            thread = self._thread
        if thread is not None:
            # Withdraw the notification before the reply goes out, so it never lingers
            # over a request that is over (bounded: a hung helper does not hold the key).
            thread.join(self.close_wait)
        self._outcome.done(verdict)

    def wait_idle(self, timeout: float) -> bool:
        """True once the last question's thread has finished (tests, clean shutdown)."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
