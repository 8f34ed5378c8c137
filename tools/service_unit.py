"""The systemd user unit of `softkey service install`: rendered here, nothing else.

One template, ``softkey@.service``; the instance is the key's name, so ``softkey@work.service``
serves the key ``work`` (``%i`` in the unit). It runs the same `softkey run` a person would
type, and relies on what that command already does on SIGTERM: unplug the UHID device
(UHID_DESTROY) and exit 0 (tools/run.py). Pure functions: tools/service_cli.py writes the file
and talks to systemctl.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

TEMPLATE = "softkey@.service"
SERVICE_PRESENCE = ("desktop", "wait")  # no terminal for `prompt`; `auto`/`deny` don't ask
DEFAULT_PRESENCE = "desktop"
STOP_TIMEOUT = 15  # seconds for a clean unplug before systemd sends SIGKILL

# systemd's own rules for a word of ExecStart= that needs no quoting.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def unit_name(key: str) -> str:
    """``softkey@KEY.service``; key names (tools/paths.py) are valid instance names as is."""
    return f"softkey@{key}.service"


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the user manager looks for a user's own units: $XDG_CONFIG_HOME/systemd/user."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # relative values are invalid (XDG spec)
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def _literal(text: str) -> str:
    """``text`` with the characters systemd would expand doubled: specifiers and $VARS."""
    return text.replace("%", "%%").replace("$", "$$")


def _one_line(text: str) -> str:
    # A newline would end the directive and start another one of the text's choosing.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{text!r} holds control characters; a unit file line cannot")
    return text


def exec_word(word: str, *, specifiers: bool = False) -> str:
    """One argument of ExecStart=: specifiers (``%i``) kept only when ``specifiers``."""
    _one_line(word)
    text = word if specifiers else _literal(word)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def environment_word(name: str, value: str) -> str:
    """``NAME=VALUE`` for Environment=: specifiers doubled (``$`` is not expanded there)."""
    text = _one_line(f"{name}={value}").replace("%", "%%")
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_argv(softkey: Sequence[str], presence: str) -> list[str]:
    """The `softkey run` of the unit, with ``%i`` where the key's name goes."""
    if presence not in SERVICE_PRESENCE:
        raise ValueError(f"presence {presence!r} is not one of {SERVICE_PRESENCE}")
    return [*softkey, "run", "--key", "%i", "--transport", "uhid", "--presence", presence]


def manual_argv(
    softkey: Sequence[str], key: str, presence: str, profile: str | None = None
) -> list[str]:
    """The same command for a person to run by hand (no systemd): the key's name filled in."""
    argv = [key if word == "%i" else word for word in service_argv(softkey, presence)]
    if profile is not None:
        argv += ["--profile", profile]
    return argv


def render_unit(
    softkey: Sequence[str],
    *,
    presence: str = DEFAULT_PRESENCE,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The text of ``softkey@.service``.

    ``softkey``: the absolute command that starts softkey (its entry point, or the Python
    interpreter with ``-m softkey.tools.cli``). ``environment``: extra variables the key
    needs to find its state as the installing shell does (XDG_DATA_HOME when set there).
    """
    argv = service_argv(softkey, presence)
    # Our own words are literal; only the "%i" this module put there stays a specifier.
    exec_start = " ".join(exec_word(w, specifiers=(w == "%i")) for w in argv)
    env_lines = [
        f"Environment={environment_word(k, v)}" for k, v in sorted((environment or {}).items())
    ]
    lines = [
        "# softkey: a software FIDO2 security key as a systemd user service. One instance per",
        "# key: softkey@NAME.service plugs in the key NAME over UHID while you are logged in.",
        "# Written by `softkey service install`; `softkey service uninstall` removes it.",
        "# Needs the udev rule that lets you open /dev/uhid: sudo softkey udev --install.",
        "[Unit]",
        "Description=softkey security key %i",
        "# Three failed starts in a minute (/dev/uhid not accessible, say): stop trying.",
        "StartLimitIntervalSec=60",
        "StartLimitBurst=3",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "# On SIGTERM softkey unplugs the key (UHID_DESTROY) and exits 0.",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "Restart=on-failure",
        "RestartSec=5",
        "# Exit status 2 is a usage error (a bad key name): a restart cannot fix it.",
        "RestartPreventExitStatus=2",
        "# Progress lines, never a secret: journalctl --user -u softkey@NAME",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=softkey-%i",
        "Environment=PYTHONUNBUFFERED=1",
        *env_lines,
        "UMask=0077",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"
