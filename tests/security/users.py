"""Acting as other local users, for real: a forked child drops to another uid and gid.

The suite runs as root in CI. Python itself may live where other users cannot read it (under
/root), so the child is a fork of this test process (everything it needs is already imported)
rather than a new interpreter. ``shared_base`` is a directory every uid can reach, standing in
for /tmp; ``ATTACKER`` and ``VICTIM`` are uids with no account, as an intruder's would be.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ATTACKER = 40001
VICTIM = 40002


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def as_uid(uid: int, fn: Callable[[], int | None], home: Path | None = None) -> Outcome:
    """Run ``fn`` in a child process with real, effective and saved uid/gid = ``uid``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 99
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
                sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.environ["HOME"] = str(home or "/nonexistent")
                for name in ("XDG_DATA_HOME", "XDG_RUNTIME_DIR", "SOFTKEY_KEY", "SOFTKEY_STATE"):
                    os.environ.pop(name, None)
                result = fn()
                code = 0 if result is None else int(result)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 98
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return Outcome(
            os.waitstatus_to_exitcode(status),
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


# What the CLI imports lazily, imported here so a forked child never needs to read a module
# file (other uids may not be able to).
_PRELOAD = (
    "secrets",
    "getpass",
    "softkey.tools.cli",
    "softkey.tools.admin",
    "softkey.tools.run",
    "softkey.tools.state_export",
    "softkey.tools.trace",
    "softkey.transports.control",
    "softkey.transports.udp",
)


def softkey_as(uid: int, *args: str, home: Path | None = None) -> Outcome:
    """The `softkey` CLI, as ``uid`` (click's standalone mode: errors print, then exit)."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    from softkey.tools.cli import cli

    def main() -> int:
        cli.main(list(args), prog_name="softkey", standalone_mode=True)
        return 0

    return as_uid(uid, main, home)


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A directory all uids can traverse (0755, root's), with ``shared`` inside: 1777 like
    /tmp, where everyone may create names but only the owner may remove them."""
    if os.geteuid() != 0:
        pytest.skip("acting as other users needs root (CI runs the suite as root)")
    base = Path(tempfile.mkdtemp(prefix="softkey-users-", dir="/tmp"))
    base.chmod(0o755)
    (base / "shared").mkdir(mode=0o777)
    (base / "shared").chmod(0o1777)
    for uid in (ATTACKER, VICTIM):
        home = base / f"home-{uid}"
        home.mkdir(mode=0o700)
        os.chown(home, uid, uid)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def home_of(base: Path, uid: int) -> Path:
    return base / f"home-{uid}"
