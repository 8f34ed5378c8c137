"""`softkey service install|status|uninstall`: a key that is there after login.

`install` writes the user unit ``softkey@.service`` (tools/service_unit.py) to
``~/.config/systemd/user/``, then ``systemctl --user daemon-reload`` and ``enable --now
softkey@KEY.service``: the user manager starts the key at every login, restarts it if it
fails, stops it (a clean unplug) at logout, and keeps its lines in the journal. It asks
with ``--presence desktop`` (transports/desktop_prompt.py), which falls back to
`softkey touch` / `softkey deny` when there is no desktop to ask on.

Without a systemd user manager nothing is written: the verb says so and prints the command
that does the same by hand.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from softkey.authenticator.private_files import PrivateFileError, write_private_file
from softkey.tools import paths
from softkey.tools import service_unit as su

SYSTEMCTL_TIMEOUT = 60.0
# `systemctl --user is-system-running` answers these when a user manager runs; its exit
# status is not enough ("degraded", one failed unit anywhere, exits 1).
_MANAGER_UP = {"running", "degraded", "starting", "initializing", "maintenance", "stopping"}


class ServiceError(click.ClickException):
    """The service verb could not do what was asked; exit status 1."""

    exit_code = 1


class ServiceUsageError(click.ClickException):
    """Bad options; exit status 2."""

    exit_code = 2


def _systemctl(*args: str, timeout: float = SYSTEMCTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["systemctl", "--user", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"no answer within {timeout:g} s")
    except OSError as exc:
        return subprocess.CompletedProcess(args, 127, "", exc.strerror or str(exc))


def _last_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {res.returncode}"


def systemd_problem() -> str | None:
    """None when a systemd user manager answers, else why not (one phrase)."""
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    res = _systemctl("is-system-running", timeout=10.0)
    state = res.stdout.strip()
    if state in _MANAGER_UP:
        return None
    why = state if state and state != "unknown" else _last_line(res)
    return f"`systemctl --user is-system-running` says {why}"


def softkey_command() -> list[str]:
    """The absolute command that starts this softkey: its entry point, or ``python -m``.

    The one running now (argv[0] when it is the `softkey` script), else the script beside
    this interpreter (a venv or pipx install), else the interpreter with ``-m``.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "softkey" and argv0.is_file():
        return [str(argv0.absolute())]
    beside = Path(sys.executable).parent / "softkey"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [str(Path(sys.executable).absolute()), "-m", "softkey.tools.cli"]


def _unit_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What the unit must set so the service finds the key where this shell does."""
    extra = {}
    data_home = env.get("XDG_DATA_HOME")
    if data_home and os.path.isabs(data_home):
        extra["XDG_DATA_HOME"] = data_home
    return extra


def _key(name: str) -> str:
    try:
        return paths.validate_key_name(name)
    except paths.KeyPathError as exc:
        raise ServiceUsageError(str(exc)) from None


def _emit_json(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _state(key: str) -> Path:
    return paths.key_state_path(key)


def key_option(f: Any) -> Any:
    return click.option(
        "--key",
        "key",
        metavar="NAME",
        envvar=paths.KEY_ENV,
        default=paths.DEFAULT_KEY,
        show_default=True,
        help="Which key the service serves (a named key; one service per key).",
    )(f)


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


# -- what `softkey status` and `softkey service status` show ------------------------------------

_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "MainPID")


def service_state(key: str) -> dict[str, Any]:
    """The service of ``key`` as systemd sees it: {"systemd": false, "reason"} without a user
    manager, else {"systemd": true, "unit", "unit_file", "installed", "active", "sub",
    "enabled", "result", "pid"}."""
    unit = su.unit_name(key)
    problem = systemd_problem()
    if problem is not None:
        return {"systemd": False, "unit": unit, "reason": problem}
    template = su.unit_dir() / su.TEMPLATE
    res = _systemctl("show", unit, "--property=" + ",".join(_PROPERTIES), timeout=10.0)
    props = dict(line.partition("=")[::2] for line in res.stdout.splitlines() if "=" in line)
    loaded = props.get("LoadState", "")
    pid = props.get("MainPID", "0")
    return {
        "systemd": True,
        "unit": unit,
        "unit_file": str(template),
        "installed": template.is_file() and loaded not in ("not-found", ""),
        "active": props.get("ActiveState") or "unknown",
        "sub": props.get("SubState") or "unknown",
        "enabled": props.get("UnitFileState") or "unknown",
        "result": props.get("Result") or "unknown",
        "pid": int(pid) if pid.isdigit() and pid != "0" else None,
    }


def service_text(info: Mapping[str, Any]) -> str:
    """One line: ``softkey@work.service active (running), enabled``."""
    unit = info["unit"]
    if not info["systemd"]:
        return f"no systemd user manager ({info['reason']})"
    if not info["installed"]:
        return f"{unit} not installed (`softkey service install` adds it)"
    text = f"{unit} {info['active']} ({info['sub']}), {info['enabled']}"
    if info["active"] == "failed":
        text += f": {info['result']}; see journalctl --user -u {unit}"
    return text


def service_summary(state: Path) -> tuple[str, dict[str, Any]] | None:
    """For `softkey status`: the line and the JSON of a named key's service (None for a key
    given by --state, which no service serves)."""
    key = paths.key_name(state)
    if key is None:
        return None
    info = service_state(key)
    return service_text(info), info


# -- the verbs ------------------------------------------------------------------------------------


@click.group("service")
def service() -> None:
    """Run a key as a systemd user service: plugged in at login, asking on the desktop.

    \b
      softkey service install [--key NAME]   write softkey@.service, enable and start it
      softkey service status [--key NAME]    is it running? (logs: journalctl --user -u ...)
      softkey service uninstall [--key NAME] stop and disable it, remove the unit file

    Needs the udev rule (`sudo softkey udev --install`). The user manager stops the key at
    logout unless lingering is on (`loginctl enable-linger`).
    """


def _ensure_key(key: str, profile: str | None) -> None:
    """Create the key now (with ``profile``) if it does not exist, or check its profile."""
    from softkey.tools.cli import open_key, resolve_key

    ref = resolve_key(key, None)
    if ref.exists() and profile is None:
        return
    with open_key(ref, write=not ref.exists(), create=True, profile=profile) as backend:
        backend.call("info")


def _refuse_if_running_by_hand(key: str) -> None:
    """A key already plugged in by `softkey run` holds its state: the service would fail."""
    from softkey.tools.run import RunError, call_running

    try:
        pid = call_running(_state(key), "status").get("pid")
    except RunError:
        return  # not running
    info = service_state(key)
    if info.get("pid") is not None and info["pid"] == pid:
        return  # the service's own instance: restarted below
    raise ServiceError(
        f"key {key!r} is already running (pid {pid}, not as {su.unit_name(key)}); stop it "
        "first (Ctrl-C where `softkey run` runs), then install the service"
    )


def _write_unit(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        # Atomic (a half-written unit is never loaded) and never by following a link; 0600
        # like every file softkey writes: the user's own manager reads it, nobody else needs to.
        write_private_file(path, text.encode(), what="unit file")
    except (PrivateFileError, OSError) as exc:
        raise ServiceError(f"cannot write {path}: {exc}") from None


def _run_steps(steps: Sequence[Sequence[str]]) -> None:
    for args in steps:
        res = _systemctl(*args)
        if res.returncode != 0:
            raise ServiceError(
                f"`systemctl --user {shlex.join(args)}` failed: {_last_line(res)}; see "
                f"`systemctl --user status {args[-1]}`"
                if args[-1].endswith(".service")
                else f"`systemctl --user {shlex.join(args)}` failed: {_last_line(res)}"
            )


@service.command("install")
@key_option
@click.option(
    "--profile",
    type=paths.profile_choice(),
    help="Profile of the key, created now if it does not exist (see `softkey profiles`).",
)
@click.option(
    "--presence",
    type=click.Choice(su.SERVICE_PRESENCE),
    default=su.DEFAULT_PRESENCE,
    show_default=True,
    help="desktop: a notification with Approve/Deny (pinentry without one; `softkey touch` "
    "works too); wait: only `softkey touch` / `softkey deny`.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the started key to come up (0: don't check).",
)
@click.option("--print", "show", is_flag=True, help="Print the unit and the steps; change nothing.")
@json_option
def install(
    key: str, profile: str | None, presence: str, wait: float, show: bool, as_json: bool
) -> None:
    """Install softkey@KEY.service as a user service, enable it and start it now."""
    key = _key(key)
    unit = su.unit_name(key)
    command = softkey_command()
    env_extra = _unit_environment(os.environ)
    try:
        text = su.render_unit(command, presence=presence, environment=env_extra)
    except ValueError as exc:
        raise ServiceError(f"cannot write a unit for this installation: {exc}") from None
    path = su.unit_dir() / su.TEMPLATE
    # restart, not start: a reinstall replaces a running instance with the new unit.
    steps = [["daemon-reload"], ["enable", unit], ["restart", unit]]
    manual = su.manual_argv(command, key, presence, profile)
    if show:
        click.echo(f"# {path}\n{text}")
        for args in steps:
            click.echo(f"# then: systemctl --user {shlex.join(args)}")
        return
    problem = systemd_problem()
    if problem is not None:
        error = (
            f"no systemd user manager here ({problem}), so no service was installed; run the "
            "command above by hand instead (from your session's autostart, say)"
        )
        if as_json:
            _emit_json(
                {"key": key, "unit": unit, "installed": False, "systemd": False,
                 "reason": problem, "command": manual,
                 "error": error.replace("the command above", "`command`")}
            )  # fmt: skip
            click.get_current_context().exit(1)
            return
        click.echo(shlex.join(manual))
        raise ServiceError(error)
    _refuse_if_running_by_hand(key)
    _ensure_key(key, profile)
    _write_unit(path, text)
    _run_steps(steps)
    ready: dict[str, Any] | None = None
    if wait:
        from softkey.tools.run import RunError, wait_until_ready

        try:
            ready = wait_until_ready(_state(key), wait)
        except RunError:
            info = service_state(key)
            raise ServiceError(
                f"{unit} is installed and enabled, but the key did not come up within "
                f"{wait:g} s ({service_text(info)}); see `journalctl --user -u {unit}` "
                "(is the udev rule installed? sudo softkey udev --install)"
            ) from None
    hidraw = (ready or {}).get("uhid", {}).get("hidraw")
    if as_json:
        _emit_json(
            {"key": key, "unit": unit, "unit_file": str(path), "installed": True,
             "systemd": True, "command": manual, "ready": ready is not None, "hidraw": hidraw}
        )  # fmt: skip
        return
    click.echo(
        f"installed {path} and started {unit}" + (f": the key is {hidraw}" if hidraw else "")
    )
    click.echo(
        f"it starts at every login and stops at logout (`loginctl enable-linger` keeps it "
        f"running); logs: journalctl --user -u {unit}"
    )


@service.command("status")
@key_option
@json_option
def status(key: str, as_json: bool) -> None:
    """Is softkey@KEY.service installed, enabled, running?"""
    key = _key(key)
    info = service_state(key)
    if not info.get("installed") and not _state(key).exists():
        # Most likely a typo in --key: say so rather than "not installed".
        error = (
            f"there is no key {key!r} ({_state(key)} does not exist) and no service for it; "
            f"`softkey service install --key {key}` creates both"
        )
        if not as_json:
            raise ServiceError(error)
        _emit_json({"key": key, **info, "error": error})
        click.get_current_context().exit(1)
        return
    if as_json:
        _emit_json({"key": key, **info})
        return
    click.echo(service_text(info))
    if info["systemd"] and info["installed"]:
        click.echo(f"logs: journalctl --user -u {info['unit']}")


@service.command("uninstall")
@key_option
@json_option
def uninstall(key: str, as_json: bool) -> None:
    """Stop softkey@KEY.service (a clean unplug), disable it; remove the unit file once no
    other key uses it. The key itself (its credentials) stays."""
    key = _key(key)
    unit = su.unit_name(key)
    problem = systemd_problem()
    if problem is not None:
        raise ServiceError(f"no systemd user manager here ({problem}); nothing to uninstall")
    directory = su.unit_dir()
    template = directory / su.TEMPLATE
    wanted = list(directory.glob(f"*.wants/{unit}"))
    if not template.exists() and not wanted:
        if as_json:
            _emit_json({"key": key, "unit": unit, "removed": False, "installed": False})
        else:
            click.echo(f"{unit} is not installed; nothing to do")
        return
    _run_steps([["disable", "--now", unit]])
    others = sorted(p.name for p in directory.glob(f"*.wants/{su.TEMPLATE.replace('@', '@*')}"))
    removed = False
    if not others and template.exists():
        template.unlink()
        removed = True
    _run_steps([["daemon-reload"]])
    if as_json:
        _emit_json(
            {"key": key, "unit": unit, "removed": removed, "installed": False,
             "still_used_by": others}
        )  # fmt: skip
        return
    click.echo(f"stopped and disabled {unit}" + (f"; removed {template}" if removed else ""))
    if others:
        click.echo(f"{template} stays: {', '.join(others)} still use it")
