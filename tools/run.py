"""`softkey run` (plug the key in) and the verbs that talk to a running key.

`softkey run` serves one key until Ctrl-C / SIGTERM: over Linux UHID (a USB security key every
FIDO client sees) or over UDP (simulator-style clients, CI). Next to its state file it opens a
control socket (0600) that `softkey status`, `touch`, `deny` and `replug` use, and through
which the other CLI verbs reach a running key (op "admin", tools/admin.py operations).

Control protocol (one JSON object per line, see transports/control.py):

    {"op": "status"}                              key, transport, profile, pending presence, slots
    {"op": "touch", "wait": 5}                    approve the pending presence request
    {"op": "deny", "wait": 5}                     decline it
    {"op": "replug"}                              unplug and plug back (power cycle)
    {"op": "user_verified", "value": true, "once": false}
                                                  fingerprint checks (bio profiles): true match,
                                                  false fail, null asked like a touch; "once":
                                                  only the next check
    {"op": "admin", "name": "info", "args": {}}   tools.admin.dispatch on the running key
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol, TextIO

import click

from softkey.authenticator import Authenticator, AutoPresence, FixedPresence, StateError, Verdict
from softkey.authenticator.builtin_uv import ScriptedVerifier
from softkey.authenticator.environment import Presence
from softkey.authenticator.private_files import PrivateFileError, write_private_file
from softkey.authenticator.store import StateLock
from softkey.tools import paths
from softkey.transports import control
from softkey.transports.display import printable
from softkey.transports.presence import (
    DEFAULT_TIMEOUT,
    Announcer,
    Prompt,
    TerminalPrompt,
    WaitingPresence,
    describe,
)
from softkey.transports.server import HidServer

PRESENCE_MODES = ("prompt", "desktop", "wait", "auto", "deny")
ADMIN_LOCK_TIMEOUT = 5.0


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RunError(click.ClickException):
    """`softkey run` or a control verb cannot do what was asked; exit status 1."""

    exit_code = 1


class NotRunningError(RunError):
    """Nothing listens on the key's control socket."""


class RefusedError(RunError):
    """The running key answered, and refused (e.g. nothing to touch)."""


class NotReadyError(RunError):
    """`status --wait` gave up; ``reply`` is the key's last status, if it answered at all."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class RunUsageError(click.UsageError):
    """A usage error shown as one line, without the usage dump; exit status 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class Transport(Protocol):
    server: HidServer

    @property
    def wake_fd(self) -> int: ...

    def serve(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def _presence_label(mode: str) -> str:
    return {
        "prompt": "ask on this terminal (or `softkey touch` / `softkey deny`)",
        "desktop": "ask in a desktop notification (or `softkey touch` / `softkey deny`)",
        "wait": "wait for `softkey touch` / `softkey deny`",
        "auto": "approve everything (unsafe for daily use)",
        "deny": "decline everything",
    }[mode]


# -- the running key --------------------------------------------------------------------------


class RunningKey:
    """What the control socket operates on: one authenticator behind one transport."""

    def __init__(
        self, authenticator: Authenticator, presence: Presence, state: Path, presence_mode: str
    ) -> None:
        self.authenticator = authenticator
        self.presence = presence
        self.state = state
        self.presence_mode = presence_mode
        self.transport = ""
        self.details: dict[str, Any] = {}
        self.server: HidServer | None = None
        self._replug: Callable[[], None] | None = None
        self.power_cycles = 0
        self._slots_lock = threading.Lock()
        self._slots: dict[str, int | None] = {}
        self.refresh_slots()

    def attach(
        self, transport: str, server: HidServer, replug: Callable[[], None], details: dict[str, Any]
    ) -> None:
        self.transport = transport
        self.server = server
        self._replug = replug
        self.details = details

    # Called with the authenticator lock held (after each command, power cycle and admin
    # call), so `status` can answer from this copy while a command waits for a touch.
    def refresh_slots(self) -> None:
        # The same names as `softkey info --json` (tools/admin.py slot_usage): used/capacity/free.
        used = self.authenticator.store.resident_count()
        capacity = self.authenticator.profile.rk_capacity
        with self._slots_lock:
            self._slots = {
                "used": used,
                "capacity": capacity,
                "free": None if capacity is None else max(0, capacity - used),
            }

    def handlers(self) -> dict[str, control.Handler]:
        return {
            "status": self.status,
            "touch": self.touch,
            "deny": self.deny,
            "replug": self.replug,
            "admin": self.admin,
            "user_verified": self.user_verified,
        }

    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        pending = None
        if isinstance(self.presence, WaitingPresence):
            waiting = self.presence.pending
            if waiting is not None:
                pending = {"purpose": waiting.purpose, "rp_id": waiting.rp_id}
        with self._slots_lock:
            slots = dict(self._slots)
        profile = self.authenticator.profile
        return {
            "key": paths.key_name(self.state),
            "state": str(self.state),
            "pid": os.getpid(),
            "transport": self.transport,
            **self.details,
            "profile": profile.name,
            "ctap": profile.ctap,
            "presence_mode": self.presence_mode,
            "pending_presence": pending,
            "slots": slots,
            "power_cycles": self.power_cycles,
            # Injected faults in force (`softkey fault add`, authenticator/faults.py).
            "faults": self.authenticator.faults.records(),
            # Fingerprint checks (bio profiles): true / false, or null: asked like a touch.
            "user_verified": self._user_verified_setting(),
        }

    def _verifier(self) -> ScriptedVerifier | None:
        verifier = self.authenticator.verifier
        if self.authenticator.profile.bio is None or not isinstance(verifier, ScriptedVerifier):
            return None
        return verifier

    def _user_verified_setting(self) -> bool | None:
        verifier = self._verifier()
        if verifier is None or verifier.default is None:
            return None
        return verifier.default is Verdict.APPROVED

    def user_verified(self, request: dict[str, Any]) -> dict[str, Any]:
        """WebDriver's setUserVerified for the fingerprint sensor of a running bio key."""
        verifier = self._verifier()
        if verifier is None:
            raise control.OperationError(
                f"this key ({self.authenticator.profile.name}) has no fingerprint sensor: its "
                "user verification is the PIN; run a profile with one (yubikey-bio)"
            )
        value = request.get("value")
        once = request.get("once", False)
        if value not in (True, False, None) or not isinstance(once, bool):
            raise control.OperationError(
                '"value" must be true, false or null and "once" true or false'
            )
        if once and value is None:
            raise control.OperationError('"once" needs a "value" of true or false')
        verdict = None if value is None else (Verdict.APPROVED if value else Verdict.DENIED)
        if once:
            assert verdict is not None
            verifier.verdicts.append(verdict)
        else:
            verifier.default = verdict
        return {
            "user_verified": self._user_verified_setting(),
            "next": [v is Verdict.APPROVED for v in verifier.verdicts],
        }

    def _decide(self, request: dict[str, Any], approve: bool) -> dict[str, Any]:
        if not isinstance(self.presence, WaitingPresence):
            raise control.OperationError(
                f"this key runs with --presence {self.presence_mode}, which decides by "
                "itself; restart it with --presence wait (or prompt) to approve requests by hand"
            )
        wait = request.get("wait", 0)
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 300:
            raise control.OperationError('"wait" must be a number of seconds from 0 to 300')
        decided = self.presence.touch(wait) if approve else self.presence.deny(wait)
        if decided is None:
            raise control.OperationError(
                "nothing to "
                + ("touch" if approve else "deny")
                + ": the key is not waiting for a person"
                + (
                    f" (none asked within {wait:g} s)"
                    if wait
                    else "; use --wait SECONDS to wait for a request"
                )
            )
        return {
            "request": {
                "purpose": decided.purpose,
                "rp_id": decided.rp_id,
                "user_name": decided.user_name,
            },
            "description": describe(decided),
        }

    def touch(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._decide(request, approve=True)

    def deny(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._decide(request, approve=False)

    def replug(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._replug is None:
            raise control.OperationError("the key is not plugged in yet")
        self._replug()
        self.power_cycles += 1
        return {"power_cycles": self.power_cycles}

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        from softkey.tools.admin import dispatch

        name = request.get("name")
        args = request.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            return {
                "ok": False,
                "code": "usage",
                "error": 'admin needs "name" (a string) and "args" (an object)',
            }
        if self.server is None:
            return {"ok": False, "code": "busy", "error": "the key is not plugged in yet"}
        lock = self.server.auth_lock
        if not lock.acquire(timeout=ADMIN_LOCK_TIMEOUT):
            return {
                "ok": False,
                "code": "busy",
                "error": "the key is busy with a request (probably waiting for a touch); "
                "touch or deny it, then retry",
            }
        try:
            # dispatch's own {"ok", "result" | "error", "code"} becomes the reply line.
            return dispatch(self.authenticator, name, args)
        finally:
            self.refresh_slots()
            lock.release()


# -- building and serving ---------------------------------------------------------------------


def make_presence(
    mode: str, timeout: float, stdin: TextIO, stderr: TextIO, notes: list[str] | None = None
) -> Presence:
    """The presence policy of ``--presence mode``; a note for the operator goes to ``notes``
    (shown once the key is up) if given, else straight to ``stderr``."""
    if mode == "auto":
        return AutoPresence()
    if mode == "deny":
        return FixedPresence(Verdict.DENIED)
    if mode == "desktop":  # notification with Approve/Deny, else pinentry (desktop_prompt.py)
        from softkey.transports.desktop_prompt import DesktopPrompt

        return WaitingPresence(timeout, prompt=DesktopPrompt.default(stderr))
    prompt: Prompt = Announcer(stderr)
    if mode == "prompt":
        if _isatty(stdin):
            prompt = TerminalPrompt(stdin, stderr)
        else:
            note = (
                "softkey: stdin is not a terminal; approve requests with "
                "`softkey touch` (or deny with `softkey deny`)"
            )
            if notes is None:
                click.echo(note, err=True)
            else:
                notes.append(note)
    return WaitingPresence(timeout, prompt=prompt)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):
        return False


def uhid_guidance(exc: Exception) -> str:
    """Why the key cannot be plugged in over UHID, and the ways out."""
    from softkey.tools.udev_setup import sudo_hint

    problem = getattr(exc, "problem", "other")
    lines = [f"cannot plug the key in over UHID: {exc}.", "What to do:"]
    if problem == "missing":
        lines.append(
            "  - load the module: sudo modprobe uhid   (if modprobe says the module is "
            "not found, this kernel has no UHID: use UDP, below)"
        )
    lines.append(
        f"  - let your user open /dev/uhid (and load uhid at every boot): {sudo_hint()}   "
        "(`softkey udev --print` shows the rule first)"
    )
    lines.append(
        "  - or serve the key over UDP instead (simulator-style clients, CI): "
        "softkey run --transport udp"
    )
    return "\n".join(lines)


def uhid_uniq(state: Path) -> str:
    """A stable serial per key, so two keys are two distinct USB devices."""
    return "softkey-" + hashlib.sha256(os.fsencode(state)).hexdigest()[:12]


def _parse_usb_id(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        number = int(value, 16)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a hexadecimal number") from None
    if not 0 <= number <= 0xFFFF:
        raise click.BadParameter("USB IDs are 4 hex digits (0000-ffff)")
    return number


def _key_label(state: Path) -> str:
    name = paths.key_name(state)
    return f"key {name!r}" if name is not None else f"the key at {state}"


def _key_hint(state: Path) -> str:
    name = paths.key_name(state)
    if name is None:
        return f" --state {state}"
    return "" if name == paths.DEFAULT_KEY else f" --key {name}"


def _resolve(key_name: str | None, state_path: Path | None) -> Path:
    if key_name is not None and state_path is not None:
        # One from the environment, one on the command line: the command line wins (the
        # same rule as the other verbs in tools/cli.py).
        ctx = click.get_current_context()
        from_env = click.core.ParameterSource.ENVIRONMENT
        key_env = ctx.get_parameter_source("key_name") == from_env
        state_env = ctx.get_parameter_source("state_path") == from_env
        if key_env and not state_env:
            key_name = None
        elif state_env and not key_env:
            state_path = None
    try:
        return paths.resolve_state(key_name, state_path)
    except paths.KeyPathError as exc:
        raise click.UsageError(str(exc)) from None


# -- starting up: the ready line, and nothing left behind on failure ----------------------------

_OUT_LOCK = threading.Lock()  # stdout lines come from the main thread and the hidraw thread


class Readiness:
    """The one machine-readable ready line of `softkey run` (``--ready-json``, ``--ready-file``).

    Announced once, when the key is fully up: plugged in (over UHID: the kernel made its hidraw
    node, or gave up looking) and its control socket answers. The file is written atomically
    (a 0600 temporary file in the same directory, renamed over PATH) and removed again when
    `softkey run` exits, so a waiter never reads a stale one.
    """

    def __init__(self, to_stdout: bool, path: Path | None) -> None:
        self.to_stdout = to_stdout
        self.path = path
        self.error: str | None = None
        self._lock = threading.Lock()
        self._done = False
        self._written: tuple[int, int] | None = None

    @property
    def wanted(self) -> bool:
        return self.to_stdout or self.path is not None

    def clear_stale(self) -> None:
        """Remove a ready file left by an earlier run (one killed before it could)."""
        if self.path is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RunError(
                f"cannot replace the --ready-file {self.path}: {exc.strerror or exc}; pick "
                "another path"
            ) from None

    def announce(self, info: dict[str, Any]) -> None:
        """Write the file, then the stdout line; raises RunError if the file cannot be written."""
        line = json.dumps(info, sort_keys=True)
        with self._lock:
            if self._done:
                return
            self._done = True
            if self.path is not None:
                try:
                    self._written = _write_atomically(self.path, line + "\n")
                except PrivateFileError as exc:
                    self.error = f"cannot write the --ready-file: {exc}"
                    raise RunError(self.error) from None
            if self.to_stdout:
                with _OUT_LOCK:
                    click.echo(line)
                    sys.stdout.flush()

    def withdraw(self) -> None:
        """The key is going away: remove the ready file if it is still the one we wrote."""
        with self._lock:
            self._done = True  # no announcement after this
            if self.path is None or self._written is None:
                return
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._written:
                    self.path.unlink()
            except OSError:
                pass
            self._written = None


def _write_atomically(path: Path, text: str) -> tuple[int, int]:
    """``text`` to ``path`` (0600, temporary file and rename: private_files.write_private_file);
    returns the new file's (device, inode)."""
    st = write_private_file(path, text.encode(), what="ready file")
    return st.st_dev, st.st_ino


class NewState:
    """A state file this `softkey run` creates: removed again if the key never comes up.

    Checked under the state's writer lock, so a file another process created in the meantime
    is never taken for ours; SQLite sidecars that were already there are left alone too. (The
    lock file removes itself when the lock is released.)
    """

    SIDECARS = ("-wal", "-shm", "-journal")

    def __init__(self, state: Path) -> None:
        self.state = state
        self.created = False
        self.up = False
        self._had: set[str] = set()
        self._made_dirs: list[Path] = []

    def note_dirs(self) -> None:
        """Before paths.prepare_state_dir: which directories it is about to make (a named
        key's data directory and its missing parents), to remove them again on failure."""
        if paths.key_name(self.state) is None:
            return
        directory = paths.data_dir()
        self._made_dirs = [d for d in (directory, *directory.parents) if not d.exists()]

    def note(self) -> None:
        """Call with the writer lock held, before the state is opened."""
        self.created = not os.path.lexists(self.state)
        self._had = {s for s in self.SIDECARS if os.path.lexists(f"{self.state}{s}")}

    def discard_if_not_up(self) -> None:
        if not self.created or self.up:
            return
        for suffix in ("", *self.SIDECARS):
            if suffix in self._had:
                continue
            try:
                os.unlink(f"{self.state}{suffix}")
            except FileNotFoundError:
                pass

    def remove_made_dirs(self) -> None:
        """The directories note_dirs saw missing, deepest first, as long as they are empty
        (one that is not, e.g. holding another key, stays, and so do its parents)."""
        if self.up:
            return
        for directory in self._made_dirs:
            try:
                os.rmdir(directory)
            except OSError:
                break
        self._made_dirs = []


@dataclass
class Startup:
    """What `softkey run` carries from parsing its options to serving."""

    readiness: Readiness
    new_state: NewState
    notes: list[str] = field(default_factory=list)  # for stderr, once the key is up


def _given(ctx: click.Context, name: str) -> bool:
    """True if the option was set by the user (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


def _ready_file_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    path = value.expanduser().absolute()
    if not path.parent.is_dir():
        raise RunUsageError(
            f"--ready-file {value}: the directory {path.parent} does not exist; create it "
            "first or pick a path in an existing directory"
        )
    if path.is_dir():
        raise RunUsageError(f"--ready-file {value} is a directory; give the path of a file")
    return path


@click.command("run")
@click.option(
    "--transport",
    type=click.Choice(["uhid", "udp"]),
    default="uhid",
    show_default=True,
    help="uhid: a USB security key every FIDO client sees; udp: simulator-style.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8111,
    show_default=True,
    help="UDP port, with --transport udp (0: any free port; the ready line and "
    "`softkey status` show it).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="UDP address to listen on, with --transport udp (keep it local: anyone who reaches "
    "it can use the key).",
)
@paths.key_options
@click.option(
    "--profile",
    type=paths.profile_choice(),
    help="Profile for a new key (see `softkey profiles`); default: the key's own, "
    "or ctap2.1 for a new key.",
)
@click.option(
    "--presence",
    "presence_mode",
    type=click.Choice(PRESENCE_MODES),
    default="prompt",
    show_default=True,
    help="Who approves requests: prompt on this terminal, a desktop notification with "
    "Approve/Deny (pinentry without one), wait for `softkey "
    "touch`/`deny`, auto-approve (unsafe), or deny.",
)
@click.option(
    "--presence-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a touch before USER_ACTION_TIMEOUT.",
)
@click.option(
    "--user-verified",
    type=click.Choice(["default", "true", "false"]),
    default="default",
    show_default=True,
    help="Fingerprint checks of a key with a sensor (yubikey-bio): true match, false fail "
    "(UV_INVALID), default asks like a touch (--presence). `softkey set-user-verified` "
    "changes it while the key runs.",
)
@click.option(
    "--vendor-id",
    default="1209",
    show_default=True,
    callback=_parse_usb_id,
    help="USB vendor ID (hex) of the UHID device.",
)
@click.option(
    "--product-id",
    default="5a5a",
    show_default=True,
    callback=_parse_usb_id,
    help="USB product ID (hex) of the UHID device.",
)
@click.option(
    "--trace",
    is_flag=True,
    help="Print each CTAP request and response decoded, one line each (never "
    "secrets), with the reason for every failure.",
)
@click.option(
    "--ready-json",
    is_flag=True,
    help="Once the key is up and its control socket answers, print one JSON line on stdout: "
    '{"ready": true, "transport", "address" ({"host", "port"} over UDP, else null), '
    '"hidraw" (/dev/hidrawN over UHID, else null), "profile", "state", "key" (name or '
    'null), "control_socket", "pid"}.',
)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    callback=_ready_file_path,
    metavar="PATH",
    help="Write the same JSON to PATH (mode 0600, atomically: waiters never see half a "
    "file) once the key is up; removed when the key stops. PATH's directory must exist.",
)
@click.option("--uhid-device", default="/dev/uhid", hidden=True)
def run(
    transport: str,
    port: int,
    host: str,
    key_name: str | None,
    state_path: Path | None,
    profile: str | None,
    presence_mode: str,
    presence_timeout: float,
    user_verified: str,
    vendor_id: int,
    product_id: int,
    uhid_device: str,
    trace: bool,
    ready_json: bool,
    ready_file: Path | None,
) -> None:
    """Plug the key in and serve it until Ctrl-C (or SIGTERM) unplugs it.

    For scripts and CI: --ready-json (a JSON line on stdout) or --ready-file PATH says when
    the key is up, and where (UDP port, hidraw node, control socket); no polling needed. A run
    that fails to come up exits 1, says why, and leaves no new state file behind.
    """
    ctx = click.get_current_context()
    if transport != "udp":
        udp_only = [f"--{name}" for name in ("port", "host") if _given(ctx, name)]
        if udp_only:
            verb = "only applies" if len(udp_only) == 1 else "only apply"
            raise RunUsageError(
                f"{' and '.join(udp_only)} {verb} to --transport udp; add --transport udp"
            )
    global _SAY_TO_STDERR
    _SAY_TO_STDERR = ready_json
    state = _resolve(key_name, state_path)
    readiness = Readiness(ready_json, ready_file)
    readiness.clear_stale()
    if transport == "udp" and presence_mode == "auto" and not is_loopback(host):
        click.echo(
            f"softkey: WARNING: listening on {host} with --presence auto: anyone who can reach "
            "this address over the network can register and sign in with this key, no touch "
            "needed; use --host 127.0.0.1 unless that is really what you want",
            err=True,
        )
    startup = Startup(readiness, NewState(state))
    new_state = startup.new_state
    try:
        if not state.exists():
            # First, so the socket path below sees the (private) directory it will live in.
            new_state.note_dirs()
            try:
                paths.prepare_state_dir(state)
            except paths.KeyPathError as exc:
                raise RunError(str(exc)) from None
        try:
            sock_path = paths.control_socket_path(state)
        except paths.KeyPathError as exc:
            raise click.UsageError(str(exc)) from None

        uhid_fd: int | None = None
        if transport == "uhid":
            from softkey.transports.uhid import UhidUnavailable, open_uhid

            try:
                uhid_fd = open_uhid(uhid_device)
            except UhidUnavailable as exc:
                raise RunError(uhid_guidance(exc)) from None

        resources: list[Callable[[], None]] = []
        try:
            if uhid_fd is not None:
                fd = uhid_fd
                resources.append(lambda: os.close(fd))
            ctl = control.ControlServer(sock_path, {})
            try:
                ctl.check_available()
            except control.ControlError as exc:
                raise RunError(str(exc)) from None
            presence = make_presence(
                presence_mode, presence_timeout, sys.stdin, sys.stderr, startup.notes
            )
            try:
                # The running key is this state's one writer for its whole life (store.StateLock).
                lock = StateLock(state)
                if not lock.acquire(blocking=False):
                    raise RunError(
                        f"another softkey process is changing this key ({state}); wait for it to "
                        "finish (or stop it) and start again"
                    )
                resources.append(lock.release)
                # Under the lock: is the state file ours to create (and to remove if we fail)?
                # Released after the authenticator closes, before the lock goes.
                new_state.note()
                resources.append(new_state.discard_if_not_up)
                standing = {"true": Verdict.APPROVED, "false": Verdict.DENIED}.get(user_verified)
                verifier = ScriptedVerifier(default=standing)
                auth = Authenticator(profile, state, presence=presence, verifier=verifier)
            except paths.KeyPathError as exc:
                raise RunError(str(exc)) from None
            except StateError as exc:
                raise RunError(str(exc)) from None
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--profile") from None
            resources.append(auth.close)
            if user_verified != "default" and auth.profile.bio is None:
                raise RunUsageError(
                    f"--user-verified needs a key with a fingerprint sensor; this is a "
                    f"{auth.profile.name} key (--profile yubikey-bio has one)"
                )
            if trace:
                from softkey.tools.trace import install_trace

                install_trace(auth, lambda line: click.echo(f"softkey: trace: {line}", err=True))
            _serve(
                auth,
                presence,
                ctl,
                state,
                transport,
                host,
                port,
                presence_mode,
                vendor_id,
                product_id,
                uhid_fd,
                resources,
                startup,
            )
        finally:
            for release in reversed(resources):
                try:
                    release()
                except OSError:
                    pass
    finally:
        new_state.remove_made_dirs()  # after the socket and lock in them are gone


def _udp_advice(exc: OSError) -> str:
    """What to do when the UDP socket cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        return "another key may be running there: pick another --port (0 picks a free one)"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need root: pick a --port above 1023 (0 picks a free one)"
    return "give --host an address of this machine (127.0.0.1 keeps the key local)"


def _ready_info(key: RunningKey, ctl: control.ControlServer) -> dict[str, Any]:
    udp = key.details.get("udp")
    uhid = key.details.get("uhid")
    return {
        "ready": True,
        "transport": key.transport,
        "address": {"host": udp["host"], "port": udp["port"]} if udp else None,
        "hidraw": uhid.get("hidraw") if uhid else None,
        "profile": key.authenticator.profile.name,
        "state": str(key.state),
        "key": paths.key_name(key.state),
        "control_socket": str(ctl.path),
        "pid": os.getpid(),
    }


def _serve(
    auth: Authenticator,
    presence: Presence,
    ctl: control.ControlServer,
    state: Path,
    transport_name: str,
    host: str,
    port: int,
    presence_mode: str,
    vendor_id: int,
    product_id: int,
    uhid_fd: int | None,
    resources: list[Callable[[], None]],
    startup: Startup,
) -> None:
    readiness, new_state = startup.readiness, startup.new_state
    label = _key_label(state)
    key = RunningKey(auth, presence, state, presence_mode)
    transport: Transport
    plug: Callable[[], None] | None = None
    on_hidraw: Callable[[], None] | None = None
    if transport_name == "udp":
        from softkey.transports.udp import UdpTransport

        try:
            udp = UdpTransport(auth, host, port, after_request=key.refresh_slots)
        except OSError as exc:
            raise RunError(
                f"cannot listen on UDP {host}:{port}: {exc.strerror or exc}; {_udp_advice(exc)}"
            ) from None
        bound_host, bound_port = udp.address
        where = f"UDP {bound_host}:{bound_port}"
        key.attach(
            "udp",
            udp.server,
            udp.power_cycle,
            {
                "address": f"{bound_host}:{bound_port}",
                "udp": {"host": bound_host, "port": bound_port},
            },
        )
        transport = udp
    else:
        from softkey.transports.uhid import DeviceInfo, UhidDevice, find_hidraw

        assert uhid_fd is not None
        device_info = DeviceInfo(
            name=f"softkey {auth.profile.name}",
            uniq=uhid_uniq(state),
            vendor=vendor_id,
            product=product_id,
        )
        uhid_details: dict[str, Any] = {
            "name": device_info.name,
            "vendor_id": f"{vendor_id:04x}",
            "product_id": f"{product_id:04x}",
            "uniq": device_info.uniq,
            "hidraw": None,
        }

        def look_for_hidraw() -> None:
            # UHID_START comes just before the kernel connects hidraw: look for a moment.
            pause = threading.Event()
            for _ in range(30):
                node = find_hidraw(device_info.uniq)
                if node is not None:
                    if node != uhid_details["hidraw"]:
                        _say(f"hidraw node {node}")
                    uhid_details["hidraw"] = node
                    break
                pause.wait(0.1)
            else:
                uhid_details["hidraw"] = None
            if on_hidraw is not None:
                on_hidraw()

        def on_start() -> None:
            threading.Thread(target=look_for_hidraw, name="softkey-hidraw", daemon=True).start()

        device = UhidDevice(
            uhid_fd, auth, device_info, after_request=key.refresh_slots, on_start=on_start
        )
        where = f"UHID as {device_info.name!r} ({vendor_id:04x}:{product_id:04x})"
        key.attach("uhid", device.server, device.replug, {"uhid": uhid_details})
        transport = device
        plug = device.plug

    ctl.handlers.update(key.handlers())

    def subscribe(request: dict[str, Any], out: control.Stream) -> None:
        # `softkey events`; its module is imported when someone subscribes, not at start-up.
        from softkey.tools.events_cli import event_stream

        event_stream(auth.events)(request, out)

    ctl.streams["subscribe"] = subscribe
    try:
        ctl.start()
    except control.ControlError as exc:
        transport.close()
        raise RunError(str(exc)) from None
    resources.append(ctl.close)
    resources.append(transport.close)  # released first: unplug (UHID_DESTROY) before the rest
    previous = _install_signal_handlers(transport.stop, transport.wake_fd)
    resources.append(lambda: _restore_signal_handlers(previous))
    resources.append(readiness.withdraw)  # first of all: the key is no longer ready

    if readiness.wanted:
        # The ready line promises a control socket that answers: ask it once.
        try:
            control.call(ctl.path, "status", timeout=10.0)
        except control.ControlError as exc:
            raise RunError(
                f"the control socket {ctl.path} does not answer ({exc}); see docs/security.md "
                "for where it lives, and start the key again"
            ) from None
    if plug is not None:
        try:
            plug()
        except OSError as exc:
            raise RunError(
                f"the kernel refused to create the UHID device: {exc.strerror or exc}; check "
                "`dmesg`, or serve the key over UDP instead: softkey run --transport udp"
            ) from None
    if new_state.created:
        click.echo(
            f"softkey: created a new {auth.profile.name} key "
            + (repr(paths.key_name(state)) if paths.key_name(state) else f"at {state}"),
            err=True,
        )
    _say(f"{label} plugged in via {where}; profile {auth.profile.name}; state {state}")
    _say(f"presence: {_presence_label(presence_mode)}; control socket {ctl.path}; Ctrl-C unplugs")
    if auth.profile.bio is not None:
        setting = key.status({})["user_verified"]
        _say(
            "fingerprint: "
            + (
                "checks follow --presence, like a touch (approved: a matching finger; "
                "declined: one that does not match)"
                if setting is None
                else ("every check matches" if setting else "every check fails (UV_INVALID)")
            )
            + "; `softkey set-user-verified true|false|default` changes it"
        )
    for note in startup.notes:
        click.echo(note, err=True)
    if presence_mode == "auto":
        click.echo(
            "softkey: warning: --presence auto approves every request without asking: any "
            "local process can use this key silently. Use it for tests, not daily use.",
            err=True,
        )
    if readiness.wanted:
        if transport_name == "udp":
            readiness.announce(_ready_info(key, ctl))  # a RunError here: not up, cleaned up
        else:
            # Over UHID the key is up once the kernel made its hidraw node, after UHID_START,
            # which serve() reads: announce from the thread that looks for the node.
            def announce_uhid() -> None:
                info = _ready_info(key, ctl)
                if info["hidraw"] is None:
                    click.echo(
                        "softkey: warning: the kernel made no hidraw node for the key within "
                        "3 s; clients may not see it: check `dmesg` and the udev rule "
                        "(`softkey udev --print`)",
                        err=True,
                    )
                try:
                    readiness.announce(info)
                except (RunError, OSError) as exc:  # OSError: stdout closed under us
                    if readiness.error is None:
                        readiness.error = f"cannot print the ready line: {exc}"
                    click.echo(f"softkey: error: {readiness.error}; unplugging", err=True)
                    transport.stop()

            on_hidraw = announce_uhid
    new_state.up = True  # from here on the key may hold credentials: it is never removed
    transport.serve()
    _say(f"{label} unplugged")
    if readiness.error is not None:
        raise RunError(readiness.error)


# With --ready-json, stdout carries nothing but the ready line (a script reads its first
# line); the human progress lines then go to stderr.
_SAY_TO_STDERR = False


def _say(text: str) -> None:
    with _OUT_LOCK:
        click.echo(f"softkey: {text}", err=_SAY_TO_STDERR)
        (sys.stderr if _SAY_TO_STDERR else sys.stdout).flush()


# Where ``_install_signal_handlers`` keeps the previous wakeup fd among the previous handlers.
_WAKEUP_FD = -1


def _install_signal_handlers(stop: Callable[[], None], wake_fd: int) -> dict[int, Any]:
    """SIGINT/SIGTERM/SIGHUP call ``stop``. The kernel may deliver a signal to any thread,
    and Python runs handlers only in the main thread, which may sleep in the transport's loop
    with no timeout: ``wake_fd`` (what wakes that loop) becomes the signal wakeup fd, so
    every signal wakes it."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    signals_seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        signals_seen.append(signum)
        if len(signals_seen) > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for a clean unplug
        stop()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, handler)
    previous[_WAKEUP_FD] = signal.set_wakeup_fd(wake_fd)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        if signum == _WAKEUP_FD:
            signal.set_wakeup_fd(handler)
        else:
            signal.signal(signum, handler)


# -- verbs for a running key --------------------------------------------------------------------


def call_running(state: Path, op: str, **params: Any) -> dict[str, Any]:
    """One control request to the key whose state is ``state``; NotRunningError if it is not
    running, RefusedError if it refuses, RunError if it cannot be reached."""
    try:
        sock = paths.control_socket_path(state)
    except paths.KeyPathError as exc:
        raise click.UsageError(str(exc)) from None
    wait = params.get("wait") or 0
    try:
        reply = control.call(sock, op, timeout=10.0 + float(wait), **params)
    except control.NotRunning:
        raise NotRunningError(
            f"{_key_label(state)} is not running (nothing listens on {sock}); start it with "
            f"`softkey run{_key_hint(state)}`"
        ) from None
    except control.ControlError as exc:
        raise RunError(str(exc)) from None
    if not reply.get("ok"):
        raise RefusedError(str(reply.get("error") or "the key refused"))
    return reply


def _ready(reply: dict[str, Any]) -> bool:
    """Plugged in and reachable: over UHID that means the kernel made the hidraw node."""
    return reply["transport"] != "uhid" or bool(reply["uhid"].get("hidraw"))


def wait_until_ready(state: Path, timeout: float) -> dict[str, Any]:
    """Poll the control socket until the key is ready (the readiness signal for scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = call_running(state, "status")
        except RunError:
            reply = None
        if reply is not None and _ready(reply):
            return reply
        if time.monotonic() >= deadline:
            if reply is None:
                raise NotReadyError(
                    f"{_key_label(state)} did not start within {timeout:g} s; see the "
                    "output of `softkey run`"
                )
            raise NotReadyError(
                f"{_key_label(state)} runs but the kernel made no hidraw node for it within "
                f"{timeout:g} s; check `dmesg` and the udev rule (`softkey udev --print`)",
                reply,
            )
        time.sleep(0.1)


def _emit_json(data: dict[str, Any]) -> None:
    # Indented and sorted, as every other --json of the CLI (tools/cli.py emit_json).
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _header(state: Path, running: bool) -> dict[str, Any]:
    """The fields every --json result starts with (README, "JSON")."""
    return {"key": paths.key_name(state), "state": str(state), "running": running}


def _fail_json(state: Path, exc: RunError, **fields: Any) -> None:
    """A failed verb under --json: the error as JSON on stdout, exit status 1."""
    running = isinstance(exc, RefusedError)  # it answered, so it runs
    _emit_json({**fields, **_header(state, running), "error": exc.message})
    click.get_current_context().exit(1)


def _faults_text(faults: list[dict[str, Any]] | None) -> str:
    if not faults:
        return "none" if faults is not None else "unknown (the key runs an older softkey)"
    return ", ".join(f"{f['label']} ({f['left']} left)" for f in faults)


def _slots_text(slots: dict[str, Any]) -> str:
    if slots.get("capacity") is None:
        return f"{slots['used']} used (unlimited)"
    # "remaining": what a key started by an older softkey still calls "free".
    free = slots["free"] if "free" in slots else slots.get("remaining")
    return f"{slots['used']} used, {free} free (of {slots['capacity']})"


@click.command("status")
@paths.key_options
@click.option(
    "--wait",
    type=click.FloatRange(0, 300),
    default=0.0,
    help="Wait up to this many seconds for the key to be ready (running and, over UHID, its "
    "hidraw node present); exit 1 if it is not. The readiness signal for CI scripts.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Machine-readable output; without a running key: {"running": false, "key", '
    '"state", "error"} and exit status 1.',
)
def status(key_name: str | None, state_path: Path | None, wait: float, as_json: bool) -> None:
    """Is the key running? Transport, profile, pending touch request, slots."""
    state = _resolve(key_name, state_path)
    try:
        reply = wait_until_ready(state, wait) if wait else call_running(state, "status")
    except RunError as exc:
        service = _service_state(state)
        if not as_json:
            if service is not None and service[1].get("installed"):  # failed, say
                click.echo(f"{'service':<10} {service[0]}")
            raise
        seen = exc.reply if isinstance(exc, NotReadyError) else None
        if seen is None:
            _fail_json(state, exc, **({"service": service[1]} if service else {}))
            return
        # Running, but not ready in time (no hidraw node): its status, and why it failed.
        seen.pop("ok", None)
        _emit_json({**seen, **_header(state, True), "ready": False, "error": exc.message})
        click.get_current_context().exit(1)
        return
    reply.pop("ok", None)
    service = _service_state(state)
    if as_json:
        extra = {"service": service[1]} if service else {}
        _emit_json({**reply, **_header(state, True), "ready": _ready(reply), **extra})
        return
    if reply["transport"] == "udp":
        where = f"UDP {reply['address']}"
    else:
        uhid = reply["uhid"]
        where = f"UHID {uhid['name']!r} {uhid['vendor_id']}:{uhid['product_id']}"
        if uhid.get("hidraw"):
            where += f" at {uhid['hidraw']}"
    pending = reply["pending_presence"]
    if pending is None:
        waiting = "nothing pending"
    else:
        waiting = f"waiting for a touch: {pending['purpose']}"
        if pending["rp_id"]:
            # The rp.id is the request's own text: escaped so it cannot rewrite the terminal.
            waiting += f" for {printable(pending['rp_id'])}"
    rows = [
        ("key", f"{_key_label(state)} running (pid {reply['pid']})"),
        ("transport", where),
        ("profile", f"{reply['profile']} (CTAP {reply['ctap']})"),
        ("state", reply["state"]),
        ("presence", f"{reply['presence_mode']}: {waiting}"),
        ("slots", _slots_text(reply["slots"])),
        ("faults", _faults_text(reply.get("faults"))),
    ]
    if service is not None:
        rows.append(("service", service[0]))
    for label, value in rows:
        click.echo(f"{label:<10} {value}")


def _service_state(state: Path) -> tuple[str, dict[str, Any]] | None:
    """A named key's systemd user service, as a line and as JSON (tools/service_cli.py)."""
    from softkey.tools.service_cli import service_summary

    return service_summary(state)


def _decision_command(name: str, approve: bool) -> click.Command:
    verb = "approved" if approve else "denied"

    @click.command(name)
    @paths.key_options
    @click.option(
        "--wait",
        type=click.FloatRange(0, 300),
        default=0.0,
        show_default=True,
        help="Wait up to this many seconds for a request to appear.",
    )
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help=f'Machine-readable result: {{"{verb}": true, "request": {{"purpose", "rp_id", '
        f'"user_name"}}, ...}}; on failure {{"{verb}": false, "error", ...}} and exit status 1.',
    )
    def command(key_name: str | None, state_path: Path | None, wait: float, as_json: bool) -> None:
        state = _resolve(key_name, state_path)
        try:
            reply = call_running(state, name, wait=wait)
        except RunError as exc:
            if not as_json:
                raise
            _fail_json(state, exc, **{verb: False})
            return
        if as_json:
            _emit_json(
                {
                    verb: True,
                    **_header(state, True),
                    "request": reply.get("request"),
                    "description": reply.get("description"),
                }
            )
            return
        # The key escapes it already (describe()); again here, as printable() is idempotent, so
        # a key still running an older softkey cannot pass raw request text to this terminal.
        click.echo(f"{verb}: {printable(reply['description'])}")

    command.help = (
        "Approve the request the running key is waiting on (as a finger on the key would)."
        if approve
        else "Decline the request the running key is waiting on."
    )
    return command


touch = _decision_command("touch", approve=True)
deny = _decision_command("deny", approve=False)


@click.command("replug")
@paths.key_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Machine-readable result: {"replugged": true, "power_cycles", ...}; on failure '
    '{"replugged": false, "error", ...} and exit status 1.',
)
def replug(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Unplug the running key and plug it back in (a power cycle)."""
    state = _resolve(key_name, state_path)
    try:
        reply = call_running(state, "replug")
    except RunError as exc:
        if not as_json:
            raise
        _fail_json(state, exc, replugged=False)
        return
    if as_json:
        _emit_json(
            {"replugged": True, **_header(state, True), "power_cycles": reply.get("power_cycles")}
        )
        return
    click.echo(
        f"replugged {_key_label(state)}: power cycled (PIN tokens and pending "
        "requests are gone; credentials are kept)"
    )


def _setting_text(value: bool | None) -> str:
    if value is None:
        return "like a touch, per --presence (approved: a matching finger; declined: a failing one)"
    return "match" if value else "fail (CTAP2_ERR_UV_INVALID, a UV retry spent)"


@click.command("set-user-verified")
@paths.key_options
@click.argument(
    "value",
    type=click.Choice(["true", "false", "default"], case_sensitive=False),
    metavar="true|false|default",
)
@click.option(
    "--once",
    is_flag=True,
    help="Only the next fingerprint check; then the standing setting applies again.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Machine-readable result: {"user_verified": true|false|null, "next": [...], ...}; '
    'on failure {"error", ...} and exit status 1.',
)
def set_user_verified(
    key_name: str | None, state_path: Path | None, value: str, once: bool, as_json: bool
) -> None:
    """Decide the running key's fingerprint checks (WebDriver's setUserVerified).

    For a key with a fingerprint sensor (yubikey-bio): true, every check matches (UV and
    presence in one touch); false, every check fails (UV_INVALID; after 3 the sensor is
    blocked until the PIN is used); default, checks are asked like a touch (--presence).
    The setting lasts while the key runs (`softkey run --user-verified` sets the first one).
    """
    setting = {"true": True, "false": False, "default": None}[value.lower()]
    if once and setting is None:
        raise RunUsageError("--once needs true or false: it decides one fingerprint check")
    state = _resolve(key_name, state_path)
    try:
        reply = call_running(state, "user_verified", value=setting, once=once)
    except RunError as exc:
        if not as_json:
            raise
        _fail_json(state, exc)
        return
    if as_json:
        _emit_json(
            {
                **_header(state, True),
                "user_verified": reply.get("user_verified"),
                "next": reply.get("next", []),
            }
        )
        return
    text = f"fingerprint checks on {_key_label(state)}: "
    queued = reply.get("next") or []
    if queued:
        text += ", ".join(_setting_text(v) for v in queued) + " next, then "
    click.echo(text + _setting_text(reply.get("user_verified")))


COMMANDS: tuple[click.Command, ...] = (run, status, touch, deny, replug, set_user_verified)
