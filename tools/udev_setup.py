"""`softkey udev`: put the udev rule and the modules-load file where they belong.

Both files ship inside the package (softkey/tools/udev/, package data), so a wheel or pipx
install needs no checkout: `softkey udev --print` shows the rule, `sudo softkey udev --install`
writes it to /etc/udev/rules.d/ and the modules-load file to /etc/modules-load.d/, loads uhid
and asks udev to re-read its rules and re-apply them to /dev/uhid.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click


@dataclass(frozen=True)
class UdevFile:
    name: str  # file name in the package's udev/ folder and at the destination
    directory: str  # absolute destination directory on a live system
    purpose: str

    def text(self) -> str:
        return (resources.files("softkey.tools") / "udev" / self.name).read_text()

    def destination(self, root: Path) -> Path:
        return root / self.directory.lstrip("/") / self.name


RULES = UdevFile(
    "70-softkey-uhid.rules",
    "/etc/udev/rules.d",
    "lets the logged-in user (and group softkey) open /dev/uhid and the key's hidraw node",
)
MODULES_LOAD = UdevFile(
    "softkey-uhid.conf", "/etc/modules-load.d", "loads the uhid kernel module at every boot"
)
FILES = (RULES, MODULES_LOAD)


class UdevError(click.ClickException):
    exit_code = 1


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (temp file in the same directory, then rename).

    The temp file is created O_EXCL by mkstemp, so a planted name cannot redirect the write;
    rename replaces a symlink at ``path`` rather than writing through it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o644)  # udev and systemd read these as any user
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run(argv: list[str]) -> str | None:
    """Run a system command; None when it worked, else why it did not."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed"
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return (res.stderr or res.stdout).strip() or f"exit status {res.returncode}"
    return None


def _activate() -> list[str]:
    """Load uhid now and make udev apply the new rule; returns what could not be done."""
    problems = []
    for argv in (
        ["modprobe", "uhid"],
        ["udevadm", "control", "--reload"],
        # Re-apply the rules to an existing /dev/uhid (its mode and group change now, not at
        # the next boot); a hidraw node of the key gets them when it is created.
        ["udevadm", "trigger", "--subsystem-match=misc", "--sysname-match=uhid"],
    ):
        why = _run(argv)
        if why is not None:
            problems.append(f"`{' '.join(argv)}` did not work: {why}")
    return problems


def sudo_hint(verb: str = "--install") -> str:
    """The command to run as root; with the full path, as sudo's PATH may not reach a venv."""
    running = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if running is not None and running.name == "softkey" and running.is_file():
        exe: str | None = str(running.resolve())
    else:
        exe = shutil.which("softkey")
    return f"sudo {shlex.quote(exe) if exe else 'softkey'} udev {verb}"


@click.command("udev")
@click.option("--print", "show", is_flag=True, help="Print the udev rule (the default action).")
@click.option(
    "--print-modules-load", "show_modules", is_flag=True, help="Print the modules-load file."
)
@click.option("--install", is_flag=True, help="Write both files, load uhid, reload udev (root).")
@click.option("--uninstall", is_flag=True, help="Remove both files (root).")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Install under this directory instead of / (an image being built); nothing is "
    "loaded or reloaded then.",
)
def udev(show: bool, show_modules: bool, install: bool, uninstall: bool, root: Path) -> None:
    """The udev rule and modules-load file that let you plug the key in without root.

    \b
      softkey udev --print                 the rule (for review, or your config management)
      sudo softkey udev --install          write /etc/udev/rules.d/70-softkey-uhid.rules and
                                           /etc/modules-load.d/softkey-uhid.conf, modprobe uhid,
                                           udevadm control --reload, re-apply to /dev/uhid
      sudo softkey udev --uninstall        remove both files

    Then (for the group route on a headless machine) `sudo groupadd --system softkey &&
    sudo usermod -aG softkey "$USER"` and log in again; a desktop user gets access through
    the uaccess tag without that.
    """
    if sum((show, show_modules, install, uninstall)) > 1:
        raise click.UsageError("give one of --print, --print-modules-load, --install, --uninstall")
    if show_modules:
        click.echo(MODULES_LOAD.text(), nl=False)
        return
    if not (install or uninstall):
        click.echo(RULES.text(), nl=False)
        return
    live = root.resolve() == Path("/")
    if live and os.geteuid() != 0:
        verb = "--install" if install else "--uninstall"
        raise UdevError(f"changing {RULES.directory} needs root: run {sudo_hint(verb)}")
    for item in FILES:
        path = item.destination(root)
        try:
            if install:
                _write(path, item.text())
                click.echo(f"wrote {path} ({item.purpose})")
            elif path.exists() or path.is_symlink():
                path.unlink()
                click.echo(f"removed {path}")
        except OSError as exc:
            raise UdevError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not live:
        return
    if install:
        problems = _activate()
    else:
        why = _run(["udevadm", "control", "--reload"])
        problems = [f"`udevadm control --reload` did not work: {why}"] if why else []
    for problem in problems:
        click.echo(f"softkey: {problem}", err=True)
    if install and not problems:
        click.echo("uhid is loaded and udev applies the rule; `softkey run` can now plug in")
    elif install:
        click.echo(
            "the files are in place; they take effect once the steps above work (or after a "
            "reboot)",
            err=True,
        )
