"""``--presence desktop`` over a real D-Bus: a private dbus-daemon, a notification service.

The service is a small fake written with the same library the prompt uses (jeepney), on a
bus of its own (no service activation, so nothing on this machine answers in its place): it
records Notify / CloseNotification and emits ActionInvoked / NotificationClosed as a server
would. The pinentry fallback talks to a real child process speaking Assuan.
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    MessageType,
    message_bus,
    new_method_return,
    new_signal,
)
from jeepney.io.blocking import open_dbus_connection

from softkey.authenticator import PresenceRequest, Verdict
from softkey.transports.desktop_prompt import (
    NOTIFICATIONS,
    NOTIFICATIONS_PATH,
    DbusNotifier,
    DesktopPrompt,
    PinentryNotifier,
    PromptUnavailable,
    question_for,
)
from softkey.transports.presence import WaitingPresence

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed (apt install dbus)"
)

HOSTILE = PresenceRequest("makeCredential", "<i>evil</i>&.example\x1b[1A", "bob<br/>")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A private session bus; yields its address."""
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=tmp_path / "bus"))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), proc.stderr.read() if proc.stderr else ""
    yield address
    proc.terminate()
    proc.wait(10)


class FakeNotificationServer:
    """org.freedesktop.Notifications on ``address``, in a thread of its own."""

    def __init__(self, address: str, capabilities: list[str]) -> None:
        self.capabilities = capabilities
        self.conn = open_dbus_connection(address)
        reply = self.conn.send_and_get_reply(message_bus.RequestName(NOTIFICATIONS, 4))
        assert reply.body == (1,), reply.body  # primary owner
        self.notified: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.closed: queue.Queue[int] = queue.Queue()
        self.clients: queue.Queue[str] = queue.Queue()  # who sent each Notify
        self._todo: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._next_id = 41
        self.emitter = DBusAddress(NOTIFICATIONS_PATH, interface=NOTIFICATIONS)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            while not self._todo.empty():
                self.conn.send(self._todo.get())
            try:
                msg = self.conn.receive(timeout=0.05)
            except TimeoutError:
                continue
            head = msg.header
            if head.message_type != MessageType.method_call:
                continue
            member = head.fields.get(HeaderFields.member)
            if member == "GetCapabilities":
                self.conn.send(new_method_return(msg, "as", (self.capabilities,)))
            elif member == "Notify":
                self._next_id += 1
                self.clients.put(head.fields.get(HeaderFields.sender))
                self.notified.put((self._next_id, *msg.body))
                self.conn.send(new_method_return(msg, "u", (self._next_id,)))
            elif member == "CloseNotification":
                (notification,) = msg.body
                self.closed.put(notification)
                self.conn.send(new_method_return(msg))
                self.conn.send(self._signal("NotificationClosed", notification, 3))

    def _signal(self, member: str, notification: int, arg: Any) -> Any:
        signature = "us" if isinstance(arg, str) else "uu"
        return new_signal(self.emitter, member, signature, (notification, arg))

    def invoke(self, notification: int, action: str) -> None:
        self._todo.put(self._signal("ActionInvoked", notification, action))

    def dismiss(self, notification: int) -> None:
        self._todo.put(self._signal("NotificationClosed", notification, 2))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.conn.close()


@pytest.fixture
def server(bus: str) -> Iterator[FakeNotificationServer]:
    fake = FakeNotificationServer(bus, ["actions", "body", "body-markup"])
    yield fake
    fake.close()


class Interaction:
    def __init__(self) -> None:
        self.cancel = threading.Event()

    def keepalive(self, status: int) -> None:
        return None

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class Asking:
    """A presence request waiting in a thread, asked through ``notifiers``."""

    def __init__(self, notifiers: list[Any], request: PresenceRequest = HOSTILE) -> None:
        self.log = io.StringIO()
        self.prompt = DesktopPrompt(notifiers, self.log, close_wait=10)
        self.presence = WaitingPresence(timeout=30, poll_interval=0.01, prompt=self.prompt)
        self.interaction = Interaction()
        self.verdict: Verdict | None = None

        def target() -> None:
            self.verdict = self.presence.confirm(request, self.interaction)

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def result(self) -> Verdict | None:
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.verdict


def _notifier(address: str) -> DbusNotifier:
    return DbusNotifier(lambda: {"DBUS_SESSION_BUS_ADDRESS": address})


def test_notify_carries_actions_and_escaped_text_and_approve_approves(
    bus: str, server: FakeNotificationServer
) -> None:
    asking = Asking([_notifier(bus)])
    notification, app, replaces, icon, summary, body, actions, hints, expire = server.notified.get(
        timeout=10
    )
    assert (app, replaces, icon) == ("softkey", 0, "security-high")
    assert summary == "Security key: register a credential?"
    assert actions == ["approve", "Approve", "deny", "Deny"]
    assert hints == {"urgency": ("y", 2)}
    assert expire == 30000
    # The server interprets markup ("body-markup"): the request's text is escaped for it.
    assert body == question_for(HOSTILE, 30).body(markup=True)
    assert "&lt;i&gt;evil&lt;/i&gt;&amp;.example\\x1b[1A" in body and "<" not in body
    server.invoke(notification, "approve")
    assert asking.result() is Verdict.APPROVED
    assert server.closed.get(timeout=10) == notification  # withdrawn once answered


def test_deny_denies_and_dismissing_is_a_no(bus: str, server: FakeNotificationServer) -> None:
    asking = Asking([_notifier(bus)])
    notification = server.notified.get(timeout=10)[0]
    server.invoke(notification, "deny")
    assert asking.result() is Verdict.DENIED
    dismissed = Asking([_notifier(bus)])
    notification = server.notified.get(timeout=10)[0]
    server.dismiss(notification)
    assert dismissed.result() is Verdict.DENIED


def test_a_look_alike_signal_from_another_client_is_ignored(
    bus: str, server: FakeNotificationServer
) -> None:
    asking = Asking([_notifier(bus)])
    notification = server.notified.get(timeout=10)[0]
    with open_dbus_connection(bus) as impostor:
        spoof = new_signal(
            DBusAddress(NOTIFICATIONS_PATH, interface=NOTIFICATIONS),
            "ActionInvoked",
            "us",
            (notification, "deny"),
        )
        # Sent to the prompt's connection itself, as dunst sends its signals: no match rule
        # of the bus stands in the way, only the prompt's own check of the sender.
        spoof.header.fields[HeaderFields.destination] = server.clients.get(timeout=10)
        impostor.send(spoof)
        # A round trip through the bus: the spoof is delivered before anything sent later.
        impostor.send_and_get_reply(message_bus.GetId())
    server.invoke(notification, "approve")
    assert asking.result() is Verdict.APPROVED


def test_cancel_closes_the_notification(bus: str, server: FakeNotificationServer) -> None:
    asking = Asking([_notifier(bus)])
    notification = server.notified.get(timeout=10)[0]
    asking.interaction.cancel.set()  # CTAPHID CANCEL
    assert asking.result() is Verdict.CANCELLED
    assert server.closed.get(timeout=10) == notification


def test_touch_answers_while_the_notification_shows(
    bus: str, server: FakeNotificationServer
) -> None:
    asking = Asking([_notifier(bus)])
    notification = server.notified.get(timeout=10)[0]
    assert asking.presence.touch() == HOSTILE
    assert asking.result() is Verdict.APPROVED
    assert server.closed.get(timeout=10) == notification


def test_plain_text_for_a_server_without_markup(bus: str) -> None:
    fake = FakeNotificationServer(bus, ["actions", "body"])
    try:
        asking = Asking([_notifier(bus)])
        notification, *_, body, _actions, _hints, _expire = fake.notified.get(timeout=10)
        assert body == question_for(HOSTILE, 30).body(markup=False)
        assert "<i>evil</i>&.example\\x1b[1A" in body
        fake.invoke(notification, "approve")
        assert asking.result() is Verdict.APPROVED
    finally:
        fake.close()


def _reason(notifier: Any) -> str:
    question = question_for(HOSTILE, 30)
    with pytest.raises(PromptUnavailable) as caught:
        notifier.run(question, lambda verdict: None, threading.Event())
    return str(caught.value)


def test_why_no_notification_can_be_shown(bus: str, tmp_path: Path) -> None:
    assert _reason(_notifier(bus)) == "no notification server is running"
    # Without DBUS_SESSION_BUS_ADDRESS: the per-user bus, $XDG_RUNTIME_DIR/bus (the bus
    # fixture listens at tmp_path/bus), else no bus at all.
    runtime_bus = DbusNotifier(lambda: {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert _reason(runtime_bus) == "no notification server is running"
    (tmp_path / "empty").mkdir()
    no_bus = DbusNotifier(lambda: {"XDG_RUNTIME_DIR": str(tmp_path / "empty")})
    assert _reason(no_bus).startswith("no D-Bus session bus")
    gone = DbusNotifier(lambda: {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/nobus"})
    assert _reason(gone).startswith("cannot connect to the session bus")
    fake = FakeNotificationServer(bus, ["body", "body-markup"])
    try:
        assert "cannot show Approve/Deny buttons" in _reason(_notifier(bus))
        assert fake.notified.empty()
    finally:
        fake.close()


# -- pinentry -------------------------------------------------------------------------------------

FAKE_PINENTRY = """\
#!{python}
# A pinentry stand-in speaking Assuan: records each line, answers CONFIRM as told.
import os, sys, time
record = open(os.environ["FAKE_PINENTRY_LOG"], "a")
record.write("pid %d\\n" % os.getpid()); record.flush()
print("OK Pleased to meet you", flush=True)
for line in sys.stdin:
    record.write(line); record.flush()
    if line.startswith("CONFIRM"):
        answer = os.environ["FAKE_PINENTRY_ANSWER"]
        if answer == "hang":
            time.sleep(60)
        print({{"ok": "OK", "deny": "ERR 83886194 Not confirmed <Pinentry>",
               "escape": "ERR 83886179 Operation cancelled <Pinentry>",
               "broken": "ERR 83918950 Inappropriate ioctl for device <Pinentry>"}}[answer],
              flush=True)
    elif line.startswith("BYE"):
        break
    else:
        print("OK", flush=True)
"""


@pytest.fixture
def pinentry(tmp_path: Path) -> Path:
    program = tmp_path / "pinentry-fake"
    program.write_text(FAKE_PINENTRY.format(python=sys.executable))
    program.chmod(0o755)
    return program


def _pinentry(program: Path, log: Path, answer: str) -> PinentryNotifier:
    env = dict(os.environ, FAKE_PINENTRY_LOG=str(log), FAKE_PINENTRY_ANSWER=answer)
    return PinentryNotifier(str(program), lambda: env)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("ok", Verdict.APPROVED), ("deny", Verdict.DENIED), ("escape", Verdict.DENIED)],
)
def test_pinentry_confirm(pinentry: Path, tmp_path: Path, answer: str, verdict: Verdict) -> None:
    log = tmp_path / "assuan.log"
    asking = Asking([_pinentry(pinentry, log, answer)])
    assert asking.result() is verdict
    lines = log.read_text().splitlines()
    question = question_for(HOSTILE, 30)
    desc = (question.summary + "\n\n" + question.body(markup=False)).replace("\n", "%0A")
    assert lines[1:7] == [
        "SETTITLE softkey",
        f"SETDESC {desc}",
        "SETOK Approve",
        "SETCANCEL Deny",
        "SETTIMEOUT 31",
        "CONFIRM",
    ]
    assert "\x1b" not in log.read_text()


def test_no_notification_server_with_actions_falls_back_to_pinentry(
    bus: str, pinentry: Path, tmp_path: Path
) -> None:
    fake = FakeNotificationServer(bus, ["body"])  # no "actions": buttons cannot be shown
    try:
        asking = Asking([_notifier(bus), _pinentry(pinentry, tmp_path / "a.log", "ok")])
        assert asking.result() is Verdict.APPROVED
        assert "CONFIRM" in (tmp_path / "a.log").read_text()
        assert fake.notified.empty()
    finally:
        fake.close()


def test_cancel_ends_pinentry(pinentry: Path, tmp_path: Path) -> None:
    log = tmp_path / "hang.log"
    asking = Asking([_pinentry(pinentry, log, "hang")])
    pause = threading.Event()
    for _ in range(400):  # until the dialog is up (CONFIRM sent)
        if log.exists() and "CONFIRM" in log.read_text():
            break
        pause.wait(0.05)
    pid = int(log.read_text().split()[1])
    asking.interaction.cancel.set()
    assert asking.result() is Verdict.CANCELLED
    assert asking.prompt.wait_idle(10)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped


def test_pinentry_that_cannot_show_a_dialog_is_a_reason(pinentry: Path, tmp_path: Path) -> None:
    reason = _reason(_pinentry(pinentry, tmp_path / "b.log", "broken"))
    assert reason.endswith("failed: Inappropriate ioctl for device <Pinentry>")
    missing = PinentryNotifier("no-such-pinentry-here", lambda: {"PATH": str(tmp_path)})
    assert _reason(missing) == "no-such-pinentry-here is not installed"


@pytest.mark.skipif(shutil.which("pinentry") is None, reason="pinentry is not installed")
def test_the_real_pinentry_without_a_display_or_terminal_is_a_reason() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # No terminal either: pinentry-curses (or a graphical one without a display) refuses.
    script = textwrap.dedent(
        """
        import threading, sys
        from softkey.transports.desktop_prompt import PinentryNotifier, PromptUnavailable
        from softkey.transports.desktop_prompt import question_for
        from softkey.authenticator import PresenceRequest
        q = question_for(PresenceRequest("getAssertion", "example.com"), 5)
        try:
            PinentryNotifier("pinentry").run(q, print, threading.Event())
        except PromptUnavailable as exc:
            print("unavailable:", exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # no controlling terminal for pinentry to fall back on
        stdin=subprocess.DEVNULL,
    )
    assert res.stdout.startswith("unavailable: pinentry "), res.stdout + res.stderr
