"""Where a key lives: one rule shared by `softkey run` and every offline CLI verb.

A key is named (``--key NAME``, default ``default``) or given by path (``--state PATH``).
A named key's state is ``$XDG_DATA_HOME/softkey/NAME.sqlite3`` (``~/.local/share`` when the
variable is unset, as the XDG base-directory spec says). The control socket of a running key
sits next to its state file with the suffix ``.sock`` when that directory is private, else in
the user's runtime directory; two keys never share either.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from softkey.authenticator.private_files import PrivateFileError, is_private_dir, make_private_dir

DEFAULT_KEY = "default"
STATE_SUFFIX = ".sqlite3"
SOCKET_SUFFIX = ".sock"
KEY_ENV = "SOFTKEY_KEY"
STATE_ENV = "SOFTKEY_STATE"

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyPathError(ValueError):
    """A key name or state path that cannot be used; the message says what to do."""


def data_dir() -> Path:
    """``$XDG_DATA_HOME/softkey`` (default ``~/.local/share/softkey``)."""
    base = os.environ.get("XDG_DATA_HOME")
    # The spec says relative values are invalid and must be ignored.
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "softkey"


def validate_key_name(name: str) -> str:
    if not _KEY_NAME.fullmatch(name) or name.endswith(STATE_SUFFIX):
        raise KeyPathError(
            f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 64, not starting with '.' or '-')"
        )
    return name


def key_state_path(name: str) -> Path:
    return data_dir() / (validate_key_name(name) + STATE_SUFFIX)


def resolve_state(key: str | None = None, state: str | os.PathLike[str] | None = None) -> Path:
    """The state file for ``--key``/``--state`` (at most one of them; neither: the default key).

    Both the command-line options and the ``SOFTKEY_KEY`` / ``SOFTKEY_STATE`` environment
    variables are honoured by callers through click's ``envvar``; this function only sees the
    final values.
    """
    if key is not None and state is not None:
        raise KeyPathError("give either --key or --state, not both")
    if state is not None:
        return Path(state).expanduser().absolute()
    return key_state_path(key if key is not None else DEFAULT_KEY)


def key_name(state: Path) -> str | None:
    """The key name if ``state`` is a named key under the data directory, else None."""
    state = Path(state).absolute()
    if state.parent == data_dir().absolute() and state.name.endswith(STATE_SUFFIX):
        name = state.name[: -len(STATE_SUFFIX)]
        if _KEY_NAME.fullmatch(name):
            return name
    return None


def display_name(state: Path) -> str:
    """How messages name a key: ``'work'`` for named keys, the path otherwise."""
    name = key_name(state)
    return repr(name) if name is not None else str(state)


def runtime_dir() -> Path:
    """Where sockets go when the state's own directory is not private: ``$XDG_RUNTIME_DIR/
    softkey`` (systemd makes that directory 0700 per user), else ``/tmp/softkey-UID``, which
    the key creates 0700 and refuses if someone else made it first."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "softkey"
    return Path("/tmp") / f"softkey-{os.geteuid()}"


def control_socket_path(state: str | os.PathLike[str]) -> Path:
    """The control socket of the key whose state is ``state`` (``NAME.sqlite3`` -> ``NAME.sock``).

    The socket must live in a directory only its owner can write: otherwise another user
    could plant a socket there for the CLI to send PINs to, or hold the name so the key cannot
    start. So it sits next to the state only when that directory is private (the data
    directory is); otherwise, and when the path would exceed the 107 bytes a Unix socket path
    may have, it moves to :func:`runtime_dir` under a name derived from the state path (still
    one socket per key). Both sides also check each other's uid (SO_PEERCRED, control.py).
    """
    state = Path(state).absolute()
    if state.suffix == SOCKET_SUFFIX:
        sock = state.with_name(state.name + SOCKET_SUFFIX)
    else:
        sock = state.with_suffix(SOCKET_SUFFIX)
    if len(os.fsencode(sock)) <= _MAX_SOCKET_PATH and is_private_dir(state.parent):
        return sock
    digest = hashlib.sha256(os.fsencode(state)).hexdigest()[:24]
    fallback = runtime_dir() / (digest + SOCKET_SUFFIX)
    if len(os.fsencode(fallback)) <= _MAX_SOCKET_PATH:
        return fallback
    raise KeyPathError(
        f"the runtime directory {runtime_dir()} is too deep for a control socket; "
        "set XDG_RUNTIME_DIR to a shorter directory of your own"
    )


def prepare_state_dir(state: Path) -> None:
    """Before a key is created at ``state``: a named key's data directory is made (0700, with
    any missing parents 0700). A ``--state`` path's directory must already exist: softkey never
    creates directories outside its own data directory."""
    if key_name(state) is not None:
        try:
            make_private_dir(data_dir(), parents=True)
        except PrivateFileError as exc:
            raise KeyPathError(str(exc)) from None


def list_key_states() -> list[Path]:
    """State files of the named keys under the data directory, sorted by name."""
    directory = data_dir()
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith(STATE_SUFFIX) and key_name(p) is not None
    )


F = TypeVar("F", bound=Callable[..., Any])


def profile_choice() -> click.Choice:
    """--profile on every verb: click lists the profiles in --help and names them in errors."""
    from softkey.authenticator.profiles import PROFILES

    return click.Choice(list(PROFILES))


def key_options(f: F) -> F:
    """--key/--state, also from SOFTKEY_KEY / SOFTKEY_STATE (an explicit option wins)."""
    f = click.option(
        "--state",
        "state_path",
        # No checks by click: softkey's own (private_files.py) say more, and in one line.
        type=click.Path(path_type=Path, readable=False),
        envvar=STATE_ENV,
        help="State file of the key (instead of --key).",
    )(f)
    f = click.option(
        "--key",
        "key_name",
        metavar="NAME",
        envvar=KEY_ENV,
        help=f"Which key: $XDG_DATA_HOME/softkey/NAME.sqlite3 (default {DEFAULT_KEY!r}).",
    )(f)
    return f
