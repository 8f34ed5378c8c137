"""`softkey service install|status|uninstall` and the unit it writes.

systemctl is a real executable here: a small script put first on PATH that records each
call and keeps a little state (enabled / active), as the user manager would; what softkey
asked systemd to do is read back from its record. The unit text itself is checked line by
line, and `softkey run` is shown to unplug on SIGTERM (the unit's KillSignal).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from softkey.tools import paths, service_unit
from softkey.tools.cli import cli
from softkey.tools.service_cli import softkey_command
from softkey.transports import control, uhid

REPO = Path(__file__).resolve().parents[2]

FAKE_SYSTEMCTL = """\
#!{python}
# A stand-in for `systemctl --user`: records argv, keeps enabled/active in a JSON file.
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_SYSTEMCTL_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_SYSTEMCTL_MODE", "running")
state_file = Path(os.environ["FAKE_SYSTEMCTL_LOG"] + ".state")
state = json.loads(state_file.read_text()) if state_file.exists() else {{}}
units = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
if args[:1] != ["--user"]:
    sys.exit("only --user here")
verb, rest = args[1], args[2:]
if verb == "is-system-running":
    print("offline" if mode == "offline" else "degraded")
    sys.exit(1)  # degraded exits 1 too: the state, not the status, says a manager runs
if mode == "offline":
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit(1)
unit = rest[-1] if rest else ""
wants = units / "default.target.wants" / unit
if verb == "enable":
    if mode == "fail-enable":
        print("Failed to enable unit: Access denied", file=sys.stderr)
        sys.exit(1)
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to(units / "softkey@.service")
    state[unit] = {{**state.get(unit, {{}}), "enabled": "enabled"}}
elif verb == "restart":
    state[unit] = {{**state.get(unit, {{}}), "active": mode == "failed" and "failed" or "active"}}
elif verb == "disable":
    wants.unlink(missing_ok=True)
    state[unit] = {{"enabled": "disabled", "active": "inactive"}}
elif verb == "show":
    unit = rest[0]
    s = state.get(unit, {{}})
    loaded = "loaded" if (units / "softkey@.service").exists() else "not-found"
    active = s.get("active", "inactive")
    sub = {{"active": "running", "failed": "failed"}}.get(active, "dead")
    print(f"LoadState={{loaded}}")
    print(f"ActiveState={{active}}")
    print(f"SubState={{sub}}")
    print(f"UnitFileState={{s.get('enabled', 'disabled')}}")
    print("Result=" + ("exit-code" if active == "failed" else "success"))
    print("MainPID=" + ("4242" if active == "active" else "0"))
state_file.write_text(json.dumps(state))
"""


class World:
    def __init__(self, tmp_path: Path, systemctl: bool = True) -> None:
        self.root = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "systemctl.log"
        if systemctl:
            fake = self.bin / "systemctl"
            fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
            fake.chmod(0o755)
        self.env = {
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"),
            # Only our systemctl (or none at all) and what python needs.
            "PATH": f"{self.bin}:{Path(sys.executable).parent}",
            "FAKE_SYSTEMCTL_LOG": str(self.log),
            "SOFTKEY_KEY": "",
        }
        (tmp_path / "run").mkdir(mode=0o700)

    @property
    def unit_file(self) -> Path:
        return self.root / "config" / "systemd" / "user" / "softkey@.service"

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def changes(self) -> list[list[str]]:
        """The calls that change something (not the is-system-running / show queries)."""
        return [c[1:] for c in self.calls() if c[1] not in ("is-system-running", "show")]

    def softkey(self, *args: str, mode: str = "running") -> Result:
        env = {**self.env, "FAKE_SYSTEMCTL_MODE": mode}
        env = {k: v for k, v in env.items() if v != ""}
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("SOFTKEY_KEY", raising=False)
            mp.delenv("SOFTKEY_STATE", raising=False)
            mp.delenv("INVOCATION_ID", raising=False)
            return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# -- the unit -------------------------------------------------------------------------------------


def _directives(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_unit_file_directives() -> None:
    text = service_unit.render_unit(["/opt/softkey/bin/softkey"])
    assert _directives(text) == [
        "[Unit]",
        "Description=softkey security key %i",
        "StartLimitIntervalSec=60",
        "StartLimitBurst=3",
        "[Service]",
        "Type=simple",
        "ExecStart=/opt/softkey/bin/softkey run --key %i --transport uhid --presence desktop",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=15",
        "Restart=on-failure",
        "RestartSec=5",
        "RestartPreventExitStatus=2",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=softkey-%i",
        "Environment=PYTHONUNBUFFERED=1",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "[Install]",
        "WantedBy=default.target",
    ]
    assert "sudo softkey udev --install" in text  # the prerequisite, in the file itself


def test_unit_quoting_keeps_our_words_literal() -> None:
    text = service_unit.render_unit(
        ["/home/a b/50%$HOME/python", "-m", "softkey.tools.cli"],
        presence="wait",
        environment={"XDG_DATA_HOME": '/data/"x" 100%'},
    )
    lines = _directives(text)
    assert (
        'ExecStart="/home/a b/50%%$$HOME/python" -m softkey.tools.cli run --key %i '
        "--transport uhid --presence wait"
    ) in lines
    assert 'Environment="XDG_DATA_HOME=/data/\\"x\\" 100%%"' in lines
    with pytest.raises(ValueError, match="control characters"):
        service_unit.render_unit(["/x/softkey\nExecStartPre=/bin/evil"])
    with pytest.raises(ValueError):
        service_unit.render_unit(["/x/softkey"], presence="auto")


def test_the_manual_command_is_the_units_with_the_key_filled_in() -> None:
    assert service_unit.manual_argv(["/s"], "work", "desktop", "yubikey-5") == [
        "/s", "run", "--key", "work", "--transport", "uhid", "--presence", "desktop",
        "--profile", "yubikey-5",
    ]  # fmt: skip


# -- install / status / uninstall -----------------------------------------------------------------


def test_install_writes_the_unit_creates_the_key_and_starts_it(world: World) -> None:
    result = world.softkey(
        "service", "install", "--key", "work", "--profile", "yubikey-5", "--wait", "0"
    )
    assert result.exit_code == 0, result.output
    unit = world.unit_file
    assert stat.S_IMODE(unit.stat().st_mode) == 0o600
    expected = service_unit.render_unit(
        softkey_command(), environment={"XDG_DATA_HOME": world.env["XDG_DATA_HOME"]}
    )
    assert unit.read_text() == expected
    assert f"Environment=XDG_DATA_HOME={world.env['XDG_DATA_HOME']}" in expected
    assert world.changes() == [
        ["daemon-reload"],
        ["enable", "softkey@work.service"],
        ["restart", "softkey@work.service"],
    ]
    # The key exists now, with the profile asked for (the unit itself names none).
    state = Path(world.env["XDG_DATA_HOME"]) / "softkey" / "work.sqlite3"
    assert state.exists() and stat.S_IMODE(state.stat().st_mode) == 0o600
    info = world.softkey("info", "--key", "work", "--json")
    assert json.loads(info.output)["profile"] == "yubikey-5"
    assert f"installed {unit} and started softkey@work.service" in result.output
    assert "loginctl enable-linger" in result.output

    status = world.softkey("service", "status", "--key", "work")
    assert status.exit_code == 0
    assert status.output.splitlines() == [
        "softkey@work.service active (running), enabled",
        "logs: journalctl --user -u softkey@work.service",
    ]
    as_json = json.loads(world.softkey("service", "status", "--key", "work", "--json").output)
    assert as_json["installed"] is True and as_json["active"] == "active"
    assert as_json["pid"] == 4242 and as_json["unit_file"] == str(unit)


def test_install_json_and_a_profile_that_does_not_match(world: World) -> None:
    assert world.softkey("init", "--key", "k", "--profile", "u2f").exit_code == 0
    refused = world.softkey(
        "service", "install", "--key", "k", "--profile", "yubikey-5", "--wait", "0"
    )
    assert refused.exit_code == 1
    assert "'u2f' key, not 'yubikey-5'" in refused.output
    assert not world.unit_file.exists() and world.changes() == []
    done = world.softkey("service", "install", "--key", "k", "--wait", "0", "--json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["installed"] is True and data["systemd"] is True
    assert data["unit"] == "softkey@k.service" and data["unit_file"] == str(world.unit_file)
    assert data["command"][-6:] == ["--key", "k", "--transport", "uhid", "--presence", "desktop"]


def test_uninstall_stops_disables_and_removes_the_unit_last(world: World) -> None:
    for key in ("a", "b"):
        assert world.softkey("service", "install", "--key", key, "--wait", "0").exit_code == 0
    first = world.softkey("service", "uninstall", "--key", "a")
    assert first.exit_code == 0, first.output
    assert world.unit_file.exists()  # b still uses it
    assert "softkey@b.service still use it" in first.output
    second = world.softkey("service", "uninstall", "--key", "b", "--json")
    assert json.loads(second.output)["removed"] is True
    assert not world.unit_file.exists()
    assert [c for c in world.changes() if c[0] in ("disable", "daemon-reload")][-4:] == [
        ["disable", "--now", "softkey@a.service"],
        ["daemon-reload"],
        ["disable", "--now", "softkey@b.service"],
        ["daemon-reload"],
    ]
    again = world.softkey("service", "uninstall", "--key", "b")
    assert again.exit_code == 0 and "not installed; nothing to do" in again.output
    status = world.softkey("service", "status", "--key", "b")
    assert status.exit_code == 0  # the key exists (install made it), its service does not
    assert status.output.strip() == (
        "softkey@b.service not installed (`softkey service install` adds it)"
    )


def test_a_failing_systemctl_is_one_line_with_its_reason(world: World) -> None:
    result = world.softkey("service", "install", "--key", "w", "--wait", "0", mode="fail-enable")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: `systemctl --user enable softkey@w.service` failed: Failed to enable unit: "
        "Access denied; see `systemctl --user status softkey@w.service`"
    )


def test_a_key_that_does_not_come_up_is_reported(world: World) -> None:
    result = world.softkey("service", "install", "--key", "w", "--wait", "0.2")
    assert result.exit_code == 1
    assert "is installed and enabled, but the key did not come up within 0.2 s" in result.output
    assert "journalctl --user -u softkey@w.service" in result.output


def test_a_key_already_running_by_hand_is_not_installed_over(world: World) -> None:
    env = {k: v for k, v in world.env.items() if v}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        state = paths.key_state_path("busy")
        paths.prepare_state_dir(state)
        sock = paths.control_socket_path(state)
    with control.ControlServer(sock, {"status": lambda r: {"pid": 777}}):
        result = world.softkey("service", "install", "--key", "busy", "--wait", "0")
    assert result.exit_code == 1
    assert "key 'busy' is already running (pid 777, not as softkey@busy.service)" in result.output
    assert not world.unit_file.exists()


@pytest.mark.parametrize("mode", ["missing", "offline"])
def test_without_systemd_it_says_so_and_prints_the_command(tmp_path: Path, mode: str) -> None:
    world = World(tmp_path, systemctl=mode != "missing")
    result = world.softkey("service", "install", "--key", "w", "--profile", "u2f", mode=mode)
    assert result.exit_code == 1
    why = (
        "systemctl is not installed"
        if mode == "missing"
        else "`systemctl --user is-system-running` says offline"
    )
    command = " ".join(softkey_command())
    # The command on stdout, the reason as the one error line on stderr.
    assert result.stdout == (
        f"{command} run --key w --transport uhid --presence desktop --profile u2f\n"
    )
    assert result.stderr == (
        f"Error: no systemd user manager here ({why}), so no service was installed; run the "
        "command above by hand instead (from your session's autostart, say)\n"
    )
    assert not world.unit_file.exists()
    assert not (tmp_path / "data" / "softkey" / "w.sqlite3").exists()  # nothing created
    data = json.loads(world.softkey("service", "install", "--key", "w", "--json", mode=mode).output)
    assert data["systemd"] is False and data["reason"] == why and "error" in data
    assert data["command"][-2:] == ["--presence", "desktop"]
    status = world.softkey("service", "status", "--key", "w", mode=mode)
    assert status.exit_code == 1  # no such key either: a typo, most likely
    assert "there is no key 'w'" in status.output
    assert world.softkey("init", "--key", "w").exit_code == 0
    status = world.softkey("service", "status", "--key", "w", mode=mode)
    assert status.exit_code == 0
    assert status.output.strip() == f"no systemd user manager ({why})"
    gone = world.softkey("service", "uninstall", "--key", "w", mode=mode)
    assert gone.exit_code == 1 and "nothing to uninstall" in gone.output


def test_bad_key_names_are_usage_errors(world: World) -> None:
    result = world.softkey("service", "install", "--key", "../x")
    assert result.exit_code == 2 and "invalid key name" in result.output
    assert world.calls() == []


def test_print_shows_the_unit_and_changes_nothing(world: World) -> None:
    result = world.softkey("service", "install", "--key", "p", "--print")
    assert result.exit_code == 0
    assert f"# {world.unit_file}" in result.output
    assert "ExecStart=" in result.output
    assert "# then: systemctl --user restart softkey@p.service" in result.output
    assert not world.unit_file.exists() and world.calls() == []


# -- `softkey status` ---------------------------------------------------------------------------


def _process_env(world: World, mode: str = "running") -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in world.env.items() if v}}
    env["FAKE_SYSTEMCTL_MODE"] = mode
    env.pop("SOFTKEY_KEY", None)
    env.pop("SOFTKEY_STATE", None)
    return env


def test_softkey_status_shows_the_service(world: World) -> None:
    assert world.softkey("service", "install", "--key", "s", "--wait", "0").exit_code == 0
    env = _process_env(world)
    proc = subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "run", "--key", "s", "--transport", "udp",
         "--port", "0", "--presence", "wait", "--ready-json"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["ready"] is True
        shown = world.softkey("status", "--key", "s")
        assert shown.exit_code == 0, shown.output
        assert "service    softkey@s.service active (running), enabled" in shown.output
        data = json.loads(world.softkey("status", "--key", "s", "--json").output)
        assert data["service"]["active"] == "active" and data["service"]["systemd"] is True
    finally:
        proc.terminate()
        proc.wait(20)
    # Not running, its service failed: status says so before the usual error.
    failed = world.softkey("status", "--key", "s", mode="failed")
    assert failed.exit_code == 1
    assert "service    softkey@s.service" in failed.output
    again = world.softkey("service", "install", "--key", "s", "--wait", "0", mode="failed")
    assert again.exit_code == 0, again.output
    failed = world.softkey("status", "--key", "s", mode="failed")
    assert (
        "service    softkey@s.service failed (failed), enabled: exit-code; see journalctl "
        "--user -u softkey@s.service"
    ) in failed.output
    assert "is not running" in failed.output
    data = json.loads(world.softkey("status", "--key", "s", "--json", mode="failed").output)
    assert data["running"] is False and data["service"]["active"] == "failed"


def test_softkey_status_without_systemd(tmp_path: Path) -> None:
    world = World(tmp_path, systemctl=False)
    data = json.loads(world.softkey("status", "--key", "n", "--json").output)
    assert data["service"] == {
        "systemd": False,
        "unit": "softkey@n.service",
        "reason": "systemctl is not installed",
    }
    # Not installed, nothing to add to "is not running".
    assert "service" not in world.softkey("status", "--key", "n").output


# -- SIGTERM unplugs (the unit's KillSignal) ----------------------------------------------------

RUN_ON_FD = """
import os, sys
from softkey.transports import uhid
fd = int(os.environ["FAKE_UHID_FD"])
uhid.open_uhid = lambda path: fd  # the socketpair end stands in for /dev/uhid
from softkey.tools.cli import main
sys.argv = ["softkey", *sys.argv[1:]]
main()
"""


def test_sigterm_destroys_the_uhid_device_and_exits_0(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), FAKE_UHID_FD=str(ours.fileno()))
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_ON_FD, "run", "--key", "t", "--presence", "desktop"],
        cwd=REPO, env=env, pass_fds=[ours.fileno()], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ours.close()
    try:
        created = uhid.decode_event(theirs.recv(8192))
        assert created.type == uhid.EventType.CREATE2
        # No UHID_START back: an event still unread when the key exits would reset this end.
        # "plugged in" is printed after the signal handlers are installed (tools/run.py).
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "plugged in via UHID" in line:
                break
        assert seen and "plugged in via UHID" in seen[-1], seen
        proc.terminate()  # SIGTERM, what systemd sends on stop
        events = []
        while True:
            raw = theirs.recv(8192)
            if not raw:
                break
            events.append(uhid.decode_event(raw).type)
        out, err = proc.communicate(timeout=30)
        out = "".join(seen) + out
    finally:
        if proc.poll() is None:
            proc.kill()
        theirs.close()
    assert proc.returncode == 0, err
    assert events == [uhid.EventType.DESTROY]
    assert "unplugged" in out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_reads_the_unit_without_a_complaint(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    program = tmp_path / "soft key 100%" / "softkey"  # quoting and % are read back right
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    text = service_unit.render_unit([str(program)], environment={"XDG_DATA_HOME": "/d/100%"})
    (units / "softkey@.service").write_text(text)
    (units / "softkey@work.service").write_text(text)  # verify wants an instance
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    res = subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no", str(units / "softkey@work.service")],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_UNIT_PATH": f"{units}:"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Every unknown directive or bad value would be a line here (systemd ignores and warns).
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
