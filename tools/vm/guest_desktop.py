"""The desktop row of the e2e VM run: the user service's command, answered in a notification.

Issue 18's acceptance: `softkey service install` is asked for the key's service; the VM has
no systemd user manager (the guest is a chroot run by busybox init), so it answers with the
command the unit would run, and that exact command is started, under an Xvfb display with a
private session bus and Debian's dunst as the notification server. Then libfido2 registers
(`fido2-cred -M -r`): the row waits for the prompt to appear and picks "Approve" from dunst's
own action menu (`dunstctl context`, answered by a scripted dmenu), and the credential must
verify; a second registration is denied the same way and must leave no credential behind
(the key's resident count, read through its control socket). SIGTERM, the unit's stop
signal, must then unplug the key (its hidraw node goes away).

`DesktopSession` (Xvfb + bus + dunst) is stdlib-only and also drives the host-side test of
this row's logic (tests/tools/test_desktop_row.py), with the key over UDP instead of UHID.

Called from guest_main.py as a row function: ``run_desktop_row(s)`` with the Suite.
Logs (in /e2e-out/logs/): desktop.log (the row's commands), desktop-softkey.log,
desktop-dunst.log, desktop-xvfb.log, desktop-bus.log.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from rows import RowFailed

KEY = "desktop-e2e"
RP_ID = "desktop.e2e.example"
PROMPT_TIMEOUT = 90.0  # Python under TCG on a busy host starts slowly; the key asks for 30 s

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

# dunst's context menu runs this "dmenu": the menu's lines come on stdin ("#Approve (summary)
# [ID,approve]"); it prints the line whose action key is in the `choice` file, as a person
# picking that entry would.
DMENU = """#!/bin/sh
cat > "{work}/menu.txt"
want=$(cat "{work}/choice")
grep -F ",$want]" "{work}/menu.txt" | head -n 1
"""

DUNSTRC = """[global]
    dmenu = {dmenu}
    markup = full
    font = DejaVu Sans 10
"""


class DesktopUnavailable(Exception):
    """A tool the desktop session needs is missing or did not start."""


class DesktopSession:
    """Xvfb, a private session bus (no service activation) and dunst, for one row or test."""

    def __init__(self, work: Path, logs: Path) -> None:
        self.work = work
        self.logs = logs
        self.procs: list[subprocess.Popen[Any]] = []
        self.env: dict[str, str] = {}

    def _spawn(self, argv: list[str], log: str, **kw: Any) -> subprocess.Popen[Any]:
        out = open(self.logs / log, "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **kw,
        )  # fmt: skip
        out.close()
        self.procs.append(proc)
        return proc

    def start(self) -> dict[str, str]:
        """Start all three; returns the variables a client of this desktop needs."""
        for tool in ("Xvfb", "dbus-daemon", "dunst", "dunstctl", "dbus-send"):
            if shutil.which(tool) is None:
                raise DesktopUnavailable(f"{tool} is not installed")
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        # Xvfb picks a free display itself and writes its number to the pipe.
        read_fd, write_fd = os.pipe()
        self._spawn(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24",
             "-nolisten", "tcp"],
            "desktop-xvfb.log", pass_fds=[write_fd],
        )  # fmt: skip
        os.close(write_fd)
        number = _read_line(read_fd, 60)
        os.close(read_fd)
        if not number.strip().isdigit():
            raise DesktopUnavailable("Xvfb did not start (see desktop-xvfb.log)")
        display = f":{number.strip()}"
        config = self.work / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.work / "bus"))
        read_fd, write_fd = os.pipe()
        self._spawn(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile",
             f"--print-address={write_fd}"],
            "desktop-bus.log", pass_fds=[write_fd],
        )  # fmt: skip
        os.close(write_fd)
        address = _read_line(read_fd, 30).strip()
        os.close(read_fd)
        if not address.startswith("unix:"):
            raise DesktopUnavailable("dbus-daemon did not start (see desktop-bus.log)")
        self.env = {"DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": address}
        dmenu = self.work / "dmenu.sh"
        dmenu.write_text(DMENU.format(work=self.work))
        dmenu.chmod(0o755)
        rc = self.work / "dunstrc"
        rc.write_text(DUNSTRC.format(dmenu=dmenu))
        dunst = self._spawn(
            ["dunst", "-config", str(rc)], "desktop-dunst.log", env={**os.environ, **self.env}
        )
        deadline = time.monotonic() + 60
        while self.count("displayed") is None:
            if dunst.poll() is not None or time.monotonic() > deadline:
                raise DesktopUnavailable("dunst did not start (see desktop-dunst.log)")
            time.sleep(0.2)
        return dict(self.env)

    def dunstctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dunstctl", *args], env={**os.environ, **self.env}, capture_output=True,
            text=True, timeout=30, check=False,
        )  # fmt: skip

    def count(self, which: str) -> int | None:
        res = self.dunstctl("count", which)
        text = res.stdout.strip()
        return int(text) if res.returncode == 0 and text.isdigit() else None

    def wait_for_prompt(self, timeout: float, still: Any = None) -> bool:
        """True once a notification is on the screen; False after ``timeout`` s or as soon as
        ``still()`` (the client waiting for the prompt) says it has given up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.count("displayed") or 0) > 0:
                return True
            if still is not None and not still():
                return False
            time.sleep(0.2)
        return False

    def choose(self, action: str) -> list[str]:
        """Pick ``action`` (approve / deny) in dunst's menu; returns the menu's lines."""
        menu = self.work / "menu.txt"
        menu.unlink(missing_ok=True)
        (self.work / "choice").write_text(action)
        res = self.dunstctl("context")
        if res.returncode != 0:
            raise DesktopUnavailable(f"dunstctl context failed: {res.stderr.strip()}")
        deadline = time.monotonic() + 30
        while not menu.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # dmenu.sh writes the file, then prints its choice
        return menu.read_text().splitlines() if menu.exists() else []

    def history(self) -> list[dict[str, Any]]:
        """Closed notifications, newest first: {"appname", "summary", "body"}."""
        res = self.dunstctl("history")
        if res.returncode != 0:
            return []
        data = json.loads(res.stdout).get("data") or [[]]
        return [{k: v.get("data") for k, v in n.items()} for n in data[0]]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs = []


def _read_line(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


# -- the row --------------------------------------------------------------------------------------


def _run(s: Any, argv: list[str], env: dict[str, str], timeout: float = 120) -> Any:
    """Like Suite.run, with an environment of our own (the session's variables)."""
    s.log(f"$ {shlex.join(argv)}")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RowFailed(f"{argv[0]} timed out after {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise RowFailed(f"{argv[0]} is not installed") from exc
    s.log(f"{proc.stdout}{proc.stderr}".rstrip() + f"\n(exit {proc.returncode}, "
          f"{time.monotonic() - started:.1f} s)")  # fmt: skip
    return proc


def _used(s: Any, softkey: str, env: dict[str, str]) -> int:
    res = _run(s, [softkey, "info", "--key", KEY, "--json"], env)
    if res.returncode != 0:
        raise RowFailed(f"softkey info failed: {res.stderr.strip()[:160]}")
    return int(json.loads(res.stdout)["resident_credentials"]["used"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _register(s: Any, session: DesktopSession, node: str, name: str, action: str) -> Any:
    """fido2-cred -M -r, answered with ``action`` in the notification; returns its result."""
    work = session.work
    param = work / f"{name}.param"
    param.write_text("\n".join([_b64(os.urandom(32)), RP_ID, name, _b64(os.urandom(16))]) + "\n")
    made = work / f"{name}.cred"
    argv = ["fido2-cred", "-M", "-r", "-i", str(param), "-o", str(made), node, "es256"]
    s.log(f"$ {shlex.join(argv)}   (in the background; answered with {action!r})")
    out = open(work / f"{name}.out", "w+")  # noqa: SIM115 - closed below
    client = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        if not session.wait_for_prompt(PROMPT_TIMEOUT, lambda: client.poll() is None):
            raise RowFailed(
                f"the desktop prompt never appeared for {name!r} within {PROMPT_TIMEOUT:.0f} s"
                + (f" (fido2-cred exited {client.returncode})" if client.poll() is not None
                   else "")
            )  # fmt: skip
        lines = session.choose(action)
        s.log("dunst's menu: " + " | ".join(lines))
        if not any(line.endswith(f",{action}]") for line in lines):
            raise RowFailed(f"dunst's action menu had no {action!r} entry: {lines}")
        try:
            client.wait(60)
        except subprocess.TimeoutExpired:
            raise RowFailed(f"fido2-cred did not finish within 60 s of {action!r}") from None
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        out.seek(0)
        s.log(out.read().rstrip() + f"\n(fido2-cred exit {client.returncode})")
        out.close()
    return client.returncode, made


def _wait_ready(
    s: Any, softkey: str, env: dict[str, str], key_proc: Any, log: Path, timeout: float = 90
) -> dict[str, Any]:
    """`softkey status --json` once the key is up with a hidraw node; fails at once if the
    key's process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if key_proc is not None and key_proc.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or [""]
            why = next((ln for ln in reversed(lines) if ln.startswith("Error")), lines[-1])
            raise RowFailed(f"softkey exited {key_proc.returncode}: {why[:200]}")
        res = _run(s, [softkey, "status", "--key", KEY, "--wait", "2", "--json"], env, 60)
        with suppress(json.JSONDecodeError):
            status = json.loads(res.stdout)
            if res.returncode == 0 and (status.get("uhid") or {}).get("hidraw"):
                return status
        if time.monotonic() > deadline:
            raise RowFailed(f"the key did not come up with a hidraw node within {timeout:.0f} s")
        time.sleep(0.5)


def run_desktop_row(s: Any) -> str:
    """The row: service command, desktop prompt, Approve registers, Deny does not."""
    work = Path("/tmp/e2e/desktop")
    logs = s.out / "logs"
    softkey = str(Path(s.config["repo"]) / ".venv" / "bin" / "softkey")
    shutil.rmtree(work, ignore_errors=True)  # a fresh key and desktop every run
    session = DesktopSession(work, logs)
    s.cleanups.append(session.stop)
    try:
        desktop = session.start()
    except DesktopUnavailable as exc:
        raise RowFailed(f"the desktop session did not start: {exc}") from exc
    version = session.dunstctl("debug").stdout.strip().splitlines()[:1]
    s.log(f"desktop {desktop}; dunst {version}")
    env = {
        **os.environ, **desktop,
        "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config"),
    }  # fmt: skip
    env.pop("SOFTKEY_KEY", None)
    env.pop("SOFTKEY_STATE", None)

    # 1. The service: installed where a user manager runs, else the command it would run.
    installed = _run(s, [softkey, "service", "install", "--key", KEY, "--profile",
                         s.config["profile"], "--json", "--wait", "90"], env)  # fmt: skip
    try:
        answer = json.loads(installed.stdout)
    except json.JSONDecodeError:
        detail = installed.stderr.strip()[:160]
        raise RowFailed(f"softkey service install printed no JSON: {detail}") from None
    key_proc: subprocess.Popen[Any] | None = None
    if answer.get("installed"):
        how = f"{answer['unit']} under the user manager"
        s.cleanups.append(lambda: _run(s, [softkey, "service", "uninstall", "--key", KEY], env))
    elif answer.get("systemd") is False:
        command = answer["command"]
        at = command.index("run") if "run" in command else -1
        if at < 0 or command[at + 1 : at + 3] != ["--key", KEY] or "desktop" not in command:
            raise RowFailed(f"the service's command is not a desktop `softkey run`: {command}")
        s.log(f"no systemd user manager ({answer['reason']}): running the unit's command")
        log = open(logs / "desktop-softkey.log", "ab")  # noqa: SIM115 - owned by the process
        key_proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        log.close()
        how = "the unit's command (no systemd user manager in the VM)"

        def stop_key() -> None:
            if key_proc is not None and key_proc.poll() is None:
                os.killpg(key_proc.pid, signal.SIGKILL)

        s.cleanups.append(stop_key)
    else:
        raise RowFailed(f"softkey service install failed: {answer.get('error') or answer}")
    status = _wait_ready(s, softkey, env, key_proc, logs / "desktop-softkey.log")
    node = status["uhid"]["hidraw"]
    if status["presence_mode"] != "desktop":
        raise RowFailed("the service's key does not ask on the desktop")

    # 2. Approve: the credential is made and verifies; the prompt named the site.
    before = _used(s, softkey, env)
    rc, made = _register(s, session, node, "alice", "approve")
    if rc != 0:
        raise RowFailed(f"fido2-cred -M exited {rc} after Approve (see the row log)")
    verified = _run(s, ["fido2-cred", "-V", "-i", str(made), "es256"], env)
    if verified.returncode != 0:
        raise RowFailed("fido2-cred -V does not verify the approved credential")
    shown = next((n for n in session.history() if n.get("appname") == "softkey"), None)
    if shown is None or f"Site: {RP_ID}" not in str(shown.get("body")):
        raise RowFailed(f"the notification did not name the site {RP_ID}: {shown}")
    after_approve = _used(s, softkey, env)
    if after_approve != before + 1:
        raise RowFailed(f"resident credentials {before} -> {after_approve} after Approve")

    # 3. Deny: the client is refused and no credential is stored.
    rc, _ = _register(s, session, node, "mallory", "deny")
    if rc == 0:
        raise RowFailed("fido2-cred -M succeeded although Deny was chosen")
    after_deny = _used(s, softkey, env)
    if after_deny != after_approve:
        raise RowFailed(f"Deny still created a credential ({after_approve} -> {after_deny})")

    # 4. Stop as systemd does (SIGTERM): the key unplugs, its hidraw node goes.
    if key_proc is not None:
        key_proc.send_signal(signal.SIGTERM)
        try:
            code = key_proc.wait(30)
        except subprocess.TimeoutExpired:
            raise RowFailed("softkey did not exit within 30 s of SIGTERM") from None
        deadline = time.monotonic() + 10
        while Path(node).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if code != 0 or Path(node).exists():
            raise RowFailed(f"SIGTERM: exit {code}, {node} still there: {Path(node).exists()}")
        stopped = f"SIGTERM unplugged {node}"
    else:
        res = _run(s, [softkey, "service", "uninstall", "--key", KEY], env)
        stopped = f"uninstall exit {res.returncode}"
    return (
        f"{how}; Approve in dunst's menu registered a resident credential (verified, "
        f"prompt named {RP_ID}); Deny refused it (count stayed {after_deny}); {stopped}"
    )
