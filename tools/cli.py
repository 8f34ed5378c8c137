"""`softkey`: the command-line interface (click).

One click group; each area registers its commands here. Errors a person sees are one
sentence saying what happened and what to do, printed by ``main``; exit codes: 0 ok,
1 operation refused, 2 usage error.

Every verb picks its key with ``--key NAME`` or ``--state PATH`` (tools/paths.py, the same
rule `softkey run` uses). When the key is running and its control socket answers admin
calls, verbs go through it (the running key stays the single writer); otherwise they open
the state file directly. Reads of a running key's file are safe (SQLite WAL), writes are
refused so the running key's view cannot be pulled from under it.

Secrets (master key, PIN, passphrase) are never printed; PINs and passphrases are read from
a hidden prompt or from SOFTKEY_PIN / SOFTKEY_NEW_PIN / SOFTKEY_PASSPHRASE, never from argv.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from softkey.tools import paths
from softkey.transports.display import printable

F = TypeVar("F", bound=Callable[..., Any])

PIN_ENV = "SOFTKEY_PIN"
NEW_PIN_ENV = "SOFTKEY_NEW_PIN"
PASSPHRASE_ENV = "SOFTKEY_PASSPHRASE"
FILL_CHUNK = 25  # credentials per admin call: keeps the progress bar moving


class CliError(click.ClickException):
    """An operation was refused or failed; exit status 1."""

    exit_code = 1


class CliUsageError(click.ClickException):
    """The command cannot be carried out as given; exit status 2 (without the usage dump)."""

    exit_code = 2


class SoftkeyGroup(click.Group):
    """click's group, with errors as one line on stderr.

    click prints a usage error as the usage synopsis, a hint and the message: three lines a
    script cannot grep and a person has to read around. Here every error is one line ending
    in what to do, and an unexpected exception (a bug) still gives one line, not a traceback
    (SOFTKEY_DEBUG=1 shows it)."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        if extra.pop("standalone_mode", True) is False:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "softkey"
            click.echo(f"Error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            if os.environ.get("SOFTKEY_DEBUG"):
                raise
            click.echo(
                f"Error: softkey failed unexpectedly ({type(exc).__name__}: {exc}); this is a "
                "bug: please report it with the output of the same command run with "
                "SOFTKEY_DEBUG=1",
                err=True,
            )
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=SoftkeyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="softkey")
def cli() -> None:
    """softkey: a software FIDO2/CTAP2 security key for Linux."""


PROFILE_CHOICE = paths.profile_choice()


@cli.command()
@click.option(
    "--profile",
    type=PROFILE_CHOICE,
    default="nitrokey-fido2",
    show_default=True,
    help="Profile or preset to show it with.",
)
def demo(profile: str) -> None:
    """A two-minute walk-through: resident slots fill up, reset kills non-resident keys."""
    from softkey.authenticator.profiles import get_profile
    from softkey.tools.demo import run_demo

    if not get_profile(profile).ctap2:
        raise CliUsageError(
            f"the demo shows resident slots and reset, which the U2F-only {profile} profile "
            "does not have; pick a CTAP2 profile"
        )
    run_demo(profile)


# -- picking a key ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRef:
    state: Path

    @property
    def name(self) -> str | None:
        return paths.key_name(self.state)

    @property
    def label(self) -> str:
        """How messages name the key: "key 'work'" or "key at /tmp/x.sqlite3"."""
        name = self.name
        return f"key {name!r}" if name is not None else f"key at {self.state}"

    @property
    def key_option(self) -> str:
        """The option that selects this key again, for hints in messages."""
        name = self.name
        if name is None:
            return f" --state {self.state}"
        return "" if name == paths.DEFAULT_KEY else f" --key {name}"

    def exists(self) -> bool:
        # lexists: a directory, FIFO or dangling link there is "something", which the state
        # checks then name; never a missing key to create over it.
        return os.path.lexists(self.state)

    def socket(self) -> Path | None:
        try:
            return paths.control_socket_path(self.state)
        except paths.KeyPathError:
            return None


def resolve_key(key_name: str | None, state_path: Path | None) -> KeyRef:
    ctx = click.get_current_context()
    if key_name is not None and state_path is not None:
        key_src = ctx.get_parameter_source("key_name")
        state_src = ctx.get_parameter_source("state_path")
        if key_src == ParameterSource.ENVIRONMENT and state_src != ParameterSource.ENVIRONMENT:
            key_name = None
        elif state_src == ParameterSource.ENVIRONMENT and key_src != ParameterSource.ENVIRONMENT:
            state_path = None
    try:
        return KeyRef(paths.resolve_state(key_name, state_path))
    except paths.KeyPathError as exc:
        raise CliUsageError(str(exc)) from None


# -- talking to a key: offline or through a running key's control socket ------------------------


class Backend:
    """Runs tools.admin operations on one key; raises CliError/CliUsageError on refusal."""

    running = False

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply["result"]
    message = str(reply.get("error") or "the key refused the operation")
    if reply.get("code") == "usage":
        raise CliUsageError(message)
    raise CliError(message)


# How long an offline verb waits for another softkey process changing the same key.
LOCK_WAIT_SECONDS = 120.0


class OfflineBackend(Backend):
    def __init__(self, ref: KeyRef, profile: str | None = None, *, write: bool = True) -> None:
        from softkey.authenticator import Authenticator, StateError
        from softkey.authenticator.store import StateLock

        self.ref = ref
        # A writer holds the state's lock for the whole verb, taken before the master key is
        # read (store.StateLock): a reset or import by another process cannot slip in between.
        self.lock = StateLock(ref.state)
        self.created = False
        try:
            if write and not self.lock.acquire(blocking=False):
                click.echo(
                    f"softkey: waiting for another softkey process changing {ref.label}...",
                    err=True,
                )
                if not self.lock.acquire(timeout=LOCK_WAIT_SECONDS):
                    raise CliError(
                        f"another softkey process has been changing {ref.label} for "
                        f"{LOCK_WAIT_SECONDS:.0f} s; wait for it to finish and retry"
                    )
            self.created = not ref.exists()
            self.auth = Authenticator(profile, ref.state)
        except StateError as exc:
            self._abandon()
            raise CliError(str(exc)) from None
        except ValueError as exc:  # unknown profile
            self._abandon()
            raise CliUsageError(str(exc)) from None
        except BaseException:
            self._abandon()
            raise

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        from softkey.tools.admin import dispatch

        return _raise_for(dispatch(self.auth, op, args))

    def close(self) -> None:
        self.auth.close()
        self.lock.release()

    def discard(self) -> None:
        """Close, and remove the key if this command created it: a failed command leaves
        nothing behind."""
        self.auth.close()
        self._abandon()

    def _abandon(self) -> None:
        if self.created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(self.ref.state) + suffix).unlink(missing_ok=True)
        self.lock.release()


class RemoteBackend(Backend):
    """Admin operations executed by the running key itself (its control socket)."""

    running = True

    def __init__(self, ref: KeyRef, call: Callable[[str, dict[str, Any]], dict[str, Any]]):
        self.ref = ref
        self._call = call

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return _raise_for(self._call(op, args))


AdminCall = Callable[[str, dict[str, Any]], dict[str, Any]]


def running_admin(ref: KeyRef) -> tuple[bool, AdminCall | None]:
    """(is the key running?, a function making admin calls through its socket, or None when
    the running key does not offer them)."""
    from softkey.transports import control

    sock = ref.socket()
    if sock is None or not sock.exists():
        return False, None

    def admin_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            # The reply line is tools.admin.dispatch's own {"ok", "result"|"error", "code"}.
            return control.call(sock, "admin", timeout=120.0, name=name, args=args)
        except control.ControlError as exc:
            raise CliError(f"{exc}; is {ref.label} still running?") from None

    try:
        response = control.call(sock, "admin", timeout=10.0, name="ping", args={})
    except control.NotRunning:
        return False, None
    except control.ControlError:
        return True, None  # something listens there but does not answer us
    # A key without admin support answers {"ok": false, "error": "unknown operation"}.
    if response.get("ok") or "code" in response:
        return True, admin_call
    return True, None


@contextmanager
def open_key(
    ref: KeyRef,
    *,
    write: bool,
    create: bool = False,
    profile: str | None = None,
    announce: bool = True,
) -> Iterator[Backend]:
    """The backend for ``ref``: the running key's control socket if it answers admin calls,
    else the state file (writes to a running key's file are refused).

    Only ``create`` verbs make a new key (saying so on stderr unless ``announce`` is off); if
    such a verb then fails, the new key is removed again."""
    running, admin_call = running_admin(ref)
    backend: Backend
    if running and admin_call is not None:
        if profile is not None:
            _check_profile(RemoteBackend(ref, admin_call), profile)
        backend = RemoteBackend(ref, admin_call)
    elif running and write:
        raise CliError(
            f"{ref.label} is running; stop it (Ctrl-C where `softkey run{ref.key_option}` "
            "runs) and retry: that running key does not accept changes over its control socket"
        )
    else:
        if not ref.exists():
            if not create:
                raise CliError(
                    f"there is no {ref.label} ({ref.state} does not exist); create it with "
                    f"`softkey init{ref.key_option}` (or check --key/--state)"
                )
            try:
                paths.prepare_state_dir(ref.state)
            except paths.KeyPathError as exc:
                raise CliError(str(exc)) from None
        backend = OfflineBackend(ref, profile, write=write)
        backend.running = running
    offline = backend if isinstance(backend, OfflineBackend) else None
    try:
        if offline is not None and offline.created and announce:
            click.echo(
                f"softkey: created a new {offline.auth.profile.name} key"
                f"{'' if ref.name is None else ' ' + repr(ref.name)} at {ref.state}",
                err=True,
            )
        yield backend
    except BaseException:
        if offline is not None and offline.created:
            offline.discard()
            offline = None
        raise
    finally:
        if offline is not None or not isinstance(backend, OfflineBackend):
            backend.close()


def _check_profile(backend: Backend, profile: str) -> None:
    current = backend.call("info")["profile"]
    if current != profile:
        raise CliError(
            f"this key is a {current!r} key, not {profile!r}; omit --profile or pick another --key"
        )


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _key_header(ref: KeyRef, backend: Backend) -> dict[str, Any]:
    return {"key": ref.name, "state": str(ref.state), "running": backend.running}


def interactive() -> bool:
    """Is a person at a terminal to answer a question or type a PIN? (Never guess from a pipe:
    Python's getpass would then read a PIN from stdin with a warning.)"""
    return sys.stdin.isatty()


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not interactive():
        raise CliError("nothing changed: no terminal to ask for confirmation on; add --yes")
    try:
        confirmed = click.confirm(question, default=False, err=True)
    except click.Abort:  # stdin closed (CI, /dev/null): nobody can answer
        raise CliError("nothing changed: no answer to the question; add --yes") from None
    if not confirmed:
        raise CliError("nothing changed (not confirmed); add --yes to skip the question")


def _secret(
    env: str, prompt: str, *, confirm: bool = False, fallback_env: str | None = None
) -> str:
    """A secret from ``env`` (then ``fallback_env``), else a hidden prompt on a terminal."""
    for name in (env, fallback_env):
        value = os.environ.get(name) if name else None
        if value:
            return value
    if not interactive():
        also = f" (or {fallback_env})" if fallback_env else ""
        raise CliError(
            f"no {prompt.lower()} given and no terminal to ask on; set {env}{also} in the "
            "environment"
        )
    try:
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))
    except click.Abort:
        raise CliError(f"no {prompt.lower()} given; type it when asked or set {env}") from None


# -- init, info, keys, profiles ------------------------------------------------------------------


@cli.command()
@paths.key_options
@click.option(
    "--profile",
    type=PROFILE_CHOICE,
    default=None,
    help="What kind of key (see `softkey profiles`); default ctap2.1.",
)
@click.option(
    "--enrolled",
    is_flag=True,
    help="A key with a fingerprint sensor (--profile yubikey-bio) set up for use: the PIN "
    f"(${PIN_ENV}, else 123456) and one enrolled finger, so UV-required sign-ins need no PIN.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def init(
    key_name: str | None,
    state_path: Path | None,
    profile: str | None,
    enrolled: bool,
    as_json: bool,
) -> None:
    """Create a new key: a state file with a fresh master key, not plugged in yet."""
    from softkey.authenticator.profiles import DEFAULT_PROFILE, get_profile
    from softkey.transports.bio_enroll import DEFAULT_PIN

    ref = resolve_key(key_name, state_path)
    chosen = profile or DEFAULT_PROFILE
    if enrolled and get_profile(chosen).bio is None:
        raise CliUsageError(
            f"--enrolled needs a profile with a fingerprint sensor, not {chosen}; add "
            "--profile yubikey-bio"
        )
    if ref.exists():
        raise CliError(
            f"{ref.label} already exists{'' if ref.name is None else f' ({ref.state})'}; use "
            "it as it is, `softkey reset` it, or pick another --key"
        )
    pin = os.environ.get(PIN_ENV) or DEFAULT_PIN
    with open_key(ref, write=True, create=True, profile=profile, announce=False) as backend:
        if enrolled:
            backend.call("pin_set", pin=pin)
            backend.call("bio_enroll", pin=pin)
        data = backend.call("info")
    if as_json:
        emit_json(
            {
                **_key_header(ref, backend),
                "created": True,
                "profile": data["profile"],
                "aaguid": data["aaguid"],
                "resident_credentials": data["resident_credentials"],
                "bio": data.get("bio"),
            }
        )
        return
    slots = data["resident_credentials"]
    cap = "unlimited" if slots["capacity"] is None else str(slots["capacity"])
    click.echo(
        f"created {ref.label}: {data['profile']} ({data['description']}), {cap} slots, "
        f"AAGUID {data['aaguid']}"
    )
    if enrolled:
        which = f"from ${PIN_ENV}" if os.environ.get(PIN_ENV) else f"{DEFAULT_PIN}, the default"
        names = ", ".join(repr(t["name"]) for t in data["bio"]["templates"])
        click.echo(f"PIN set ({which}); finger {names} enrolled")
    click.echo(f"plug it in with `softkey run{ref.key_option}`")


@cli.command()
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Profile, AAGUID, versions, slots, PIN and counters of a key."""
    from softkey.authenticator.profiles import U2F

    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=False) as backend:
        data = {**_key_header(ref, backend), **backend.call("info")}
    if as_json:
        emit_json(data)
        return
    slots = data["resident_credentials"]
    pin = data["pin"]
    if slots["capacity"] is None:
        slot_text = f"{slots['used']} used (unlimited)"
    else:
        slot_text = f"{slots['used']} used, {slots['free']} free (of {slots['capacity']})"
    if pin["set"]:
        pin_text = "set" + (
            f", {pin['retries']} retries left" if pin["retries"] is not None else ""
        )
    else:
        pin_text = "not set"
    credman = {
        "none": "none (CTAP 2.0: only reset frees slots)",
        "preview": "preview (0x41)",
        "full": "yes (0x0A)",
    }[data["credential_management"]]
    config_text = _config_text(data.get("config") or {}, pin)
    if data["ctap"] == U2F:  # no CTAP2: no slots, PIN, credential management or config
        slot_text = "none (U2F key handles are kept by the relying party)"
        pin_text = "none (U2F has no PIN)"
        credman = "none"
        config_text = "none (no authenticatorConfig)"
    rows = [
        ("key", f"{ref.label} ({'running' if data['running'] else 'not running'})"),
        ("state", data["state"]),
        ("profile", f"{data['profile']}: {data['description']}"),
        ("AAGUID", data["aaguid"]),
        ("versions", ", ".join(data["versions"])),
        ("slots", slot_text),
        ("PIN", pin_text),
        *_bio_rows(data.get("bio")),
        ("cred mgmt", credman),
        ("config", config_text),
        (
            "counters",
            f"{data['counters']['signatures']} signatures by "
            f"{data['counters']['credentials']} credentials",
        ),
    ]
    for label, value in rows:
        click.echo(f"{label:<10} {value}")


def _bio_rows(bio: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The fingerprint sensor, on keys that have one."""
    if bio is None:
        return []
    templates = bio["templates"]
    if templates:
        # Names come from setFriendlyName requests: escaped for the terminal.
        names = ", ".join(printable(t["name"]) or t["template_id"] for t in templates)
        text = f"{len(templates)} of {bio['max_templates']} fingers enrolled ({names})"
    else:
        text = f"no finger enrolled (of {bio['max_templates']}; `softkey init --enrolled`)"
    return [("sensor", f"fingerprint: {text}, {bio['uv_retries']} UV retries left")]


def _config_text(config: dict[str, Any], pin: dict[str, Any]) -> str:
    """alwaysUv, ep, minimum PIN length, forcePINChange: what `softkey config` changes."""

    def onoff(value: Any) -> str:
        return "n/a" if value is None else ("on" if value else "off")

    min_length = config.get("min_pin_length", pin.get("min_length"))
    force = config.get("force_pin_change", pin.get("force_change"))
    parts = [
        f"alwaysUv {onoff(config.get('always_uv'))}",
        f"ep {onoff(config.get('enterprise_attestation'))}",
        f"min PIN length {min_length}",
        f"forcePINChange {onoff(force)}",
    ]
    return ", ".join(parts)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys(as_json: bool) -> None:
    """List the named keys under $XDG_DATA_HOME/softkey."""
    from softkey.authenticator.profiles import PROFILES
    from softkey.tools.state_export import ExportError, peek

    rows = []
    for state in paths.list_key_states():
        ref = KeyRef(state)
        running, _ = running_admin(ref)
        try:
            seen = peek(state)
        except ExportError:
            seen = {"profile": None, "used": None}
        profile = PROFILES.get(seen["profile"] or "")
        rows.append(
            {
                "key": ref.name,
                "state": str(state),
                "profile": seen["profile"],
                "used": seen["used"],
                "capacity": profile.rk_capacity if profile else None,
                "free": (
                    profile.rk_capacity - seen["used"]
                    if profile and profile.rk_capacity is not None and seen["used"] is not None
                    else None
                ),
                "running": running,
            }
        )
    if as_json:
        emit_json({"data_dir": str(paths.data_dir()), "keys": rows})
        return
    if not rows:
        click.echo(f"no keys under {paths.data_dir()}; start one with `softkey run`")
        return
    click.echo(f"{'KEY':<16} {'PROFILE':<15} {'SLOTS':<13} STATUS")
    for row in rows:
        cap = "unlimited" if row["capacity"] is None else row["capacity"]
        used = "?" if row["used"] is None else row["used"]
        status = "running" if row["running"] else "stopped"
        click.echo(f"{row['key']:<16} {row['profile'] or '?':<15} {f'{used}/{cap}':<13} {status}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def profiles(as_json: bool) -> None:
    """List profiles and presets with what their getInfo says."""
    from softkey.authenticator import Authenticator
    from softkey.authenticator.profiles import DEFAULT_PROFILE, PROFILES
    from softkey.tools import admin

    rows = []
    for name in PROFILES:
        with Authenticator(name) as auth:
            data = admin.info(auth)
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_PROFILE,
                "description": data["description"],
                "ctap": data["ctap"],
                "aaguid": data["aaguid"],
                "versions": data["versions"],
                "capacity": data["resident_credentials"]["capacity"],
                "credential_management": data["credential_management"],
                "pin_uv_auth_protocols": data["pin_uv_auth_protocols"],
                "algorithms": data["algorithms"],
                "options": data["options"],
                "extensions": data["extensions"],
            }
        )
    if as_json:
        emit_json({"profiles": rows})
        return
    click.echo(f"{'PROFILE':<15} {'CTAP':<8} {'SLOTS':<6} {'CREDMGMT':<9} {'PIN':<5} VERSIONS")
    for row in rows:
        cap = "unlim." if row["capacity"] is None else str(row["capacity"])
        pin = ",".join(str(p) for p in row["pin_uv_auth_protocols"]) or "-"
        star = "*" if row["default"] else ""
        click.echo(
            f"{row['name'] + star:<15} {row['ctap']:<8} {cap:<6} "
            f"{row['credential_management']:<9} {pin:<5} {' '.join(row['versions'])}"
        )
    click.echo("* default for new keys; PIN = PIN/UV auth protocols offered")


# -- credentials ----------------------------------------------------------------------------------


@cli.group()
def credentials() -> None:
    """List, delete or set properties of the credentials stored on a key: resident
    (discoverable) ones, and imported ones (`softkey add-credential --credential-id`)."""


ID_FORMAT = click.option(
    "--id-format",
    type=click.Choice(["b64url", "hex"]),
    default="b64url",
    show_default=True,
    help="How credential IDs and user handles are shown (JSON always carries both).",
)


def _id(record: dict[str, Any], field: str, id_format: str) -> str:
    value = record.get(field if id_format == "hex" else f"{field}_b64url")
    return "" if value is None else str(value)


@credentials.command("list")
@paths.key_options
@click.option("--rp", metavar="RP_ID", help="Only credentials of this relying party.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every stored credential: imported non-resident ones too (WebDriver getCredentials).",
)
@click.option(
    "--private-keys",
    is_flag=True,
    help="Include each private key (PKCS#8 PEM). Whoever reads the output can sign as them.",
)
@ID_FORMAT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def credentials_list(
    key_name: str | None,
    state_path: Path | None,
    rp: str | None,
    show_all: bool,
    private_keys: bool,
    id_format: str,
    as_json: bool,
) -> None:
    """List resident credentials, most recent first (--all: imported non-resident ones too)."""
    from softkey.tools.webdriver_cli import print_private_keys, private_key_warning

    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=False) as backend:
        result = backend.call(
            "get_credentials",
            rp=rp,
            include_private_keys=private_keys,
            resident_only=not show_all,
        )
        data = {**_key_header(ref, backend), **result}
    if private_keys:
        private_key_warning()
    if as_json:
        emit_json(data)
        return
    creds = data["credentials"]
    cap = "unlimited" if data["capacity"] is None else f"of {data['capacity']}"
    if not creds:
        what = "stored" if show_all else "resident"
        click.echo(
            f"no {what} credentials{' for ' + rp if rp else ''} ({data['used']} slots used {cap})"
        )
        return
    header = f"{'ID (prefix)':<18} {'RP':<24} {'USER':<28} {'COUNTER':>7}  CREATED"
    click.echo(header + (" " * 14 + "KIND" if show_all else ""))
    for cred in creds:
        # rp.id and the user's names were stored from a makeCredential request: escaped (and
        # cut to the column, with "…") so a crafted name cannot rewrite the listing.
        rp_id = printable(cred["rp_id"], 24)
        name, display = cred["user_name"], cred["user_display_name"]
        shown = name or ""
        if display and display != name:
            shown = f"{name} ({display})" if name else display
        handle = _id(cred, "user_handle", id_format)[:12]
        user = printable(shown, 28) or (f"(handle {handle})" if handle else "-")
        ident = _id(cred, "credential_id", id_format)
        ident = ident[:15] + "…" if len(ident) > 16 else ident
        created = (cred.get("created") or "-")[:19].replace("T", " ")
        kind = f"  {_kind(cred)}" if show_all else ""
        click.echo(f"{ident:<18} {rp_id:<24} {user:<28} {cred['counter']:>7}  {created}{kind}")
    click.echo(f"{len(creds)} shown; {data['used']} slots used {cap}")
    if private_keys:
        print_private_keys(creds, id_format)


def _kind(cred: dict[str, Any]) -> str:
    """resident / non-resident, imported, and backup flags, for `credentials list --all`."""
    parts = ["resident" if cred["resident"] else "non-resident"]
    if cred["imported"]:
        parts.append("imported")
    if cred["backup_eligible"]:
        parts.append("BE+BS" if cred["backup_state"] else "BE")
    return ",".join(parts)


@credentials.command("delete")
@paths.key_options
@click.argument("prefixes", nargs=-1, metavar="[ID-PREFIX]...")
@click.option("--rp", metavar="RP_ID", help="Delete every credential of this relying party.")
@click.option(
    "--all", "delete_all", is_flag=True, help="Delete every stored credential (imported too)."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def credentials_delete(
    key_name: str | None,
    state_path: Path | None,
    prefixes: tuple[str, ...],
    rp: str | None,
    delete_all: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete stored credentials by unique ID prefix (base64url or hex), by --rp, or --all.

    Stored: resident credentials and imported ones (`add-credential --credential-id`).
    Non-resident credentials the key made itself are not stored on it; only `softkey reset`
    revokes them.
    """
    if sum(bool(x) for x in (prefixes, rp, delete_all)) != 1:
        raise click.UsageError("give ID prefixes, --rp RP_ID or --all (exactly one of them)")
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        listing = backend.call("get_credentials", rp=rp)
        if prefixes:
            what = f"{len(prefixes)} credential(s) ({', '.join(prefixes)})"
        elif rp:
            what = f"all {len(listing['credentials'])} credentials of {rp}"
        else:
            what = f"all {len(listing['credentials'])} stored credentials"
        if not (rp and not listing["credentials"]):
            _confirm(yes, f"Delete {what} from {ref.label}?")
        result = backend.call("delete", ids=list(prefixes) or None, rp=rp, all=delete_all)
    if as_json:
        emit_json({**_key_header(ref, backend), **result})
        return
    for cred in result["deleted"]:
        click.echo(
            f"deleted {cred['credential_id_b64url'][:16]} {printable(cred['rp_id'])} "
            f"{printable(cred['user_name']) or cred['user_handle'] or ''}".rstrip()
        )
    cap = "" if result["capacity"] is None else f" of {result['capacity']}"
    click.echo(f"{len(result['deleted'])} deleted; {result['used']} slots used{cap}")
    if result.get("device_note"):
        click.echo(f"note: {result['device_note']}", err=True)


# -- fill, add-credential -------------------------------------------------------------------------


def _progress(total: int | None, label: str) -> Any:
    """A click progress bar on a terminal; a no-op elsewhere (CI logs stay clean)."""
    if total is None or not sys.stderr.isatty():
        return None
    # show_pos: "250/1000", counted only after each chunk is committed (crash-safe).
    return click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)


def check_rp_id(rp: str, option: str = "--rp") -> str:
    """An RP ID is a domain ("example.com"), not an origin or URL; say which one was meant."""
    from urllib.parse import urlsplit

    if "://" in rp:
        host = urlsplit(rp).hostname
        hint = f"; did you mean {option} {host}?" if host else ""
        raise CliUsageError(f"{option} takes an RP ID (a domain), not an origin or URL{hint}")
    if "/" in rp or ":" in rp or " " in rp:
        host = urlsplit("//" + rp).hostname
        hint = f"; did you mean {option} {host}?" if host and host != rp else ""
        raise CliUsageError(f"{option} {rp!r} is not an RP ID (a domain such as example.com){hint}")
    return rp


def _needs_pin(backend: Backend) -> str | None:
    status = backend.call("pin_status")
    if not status["set"]:
        return None
    return _secret(PIN_ENV, "PIN")


@cli.command()
@paths.key_options
@click.option(
    "--profile", type=PROFILE_CHOICE, help="Profile for a new key (see `softkey profiles`)."
)
@click.option(
    "--rp",
    default="fill.softkey.test",
    show_default=True,
    metavar="RP_ID",
    help="Relying party the credentials are made for.",
)
@click.option("--count", "-n", type=click.IntRange(min=1), help="How many credentials to make.")
@click.option("--until-full", is_flag=True, help="Make credentials until every slot is used.")
@click.option(
    "--user-prefix",
    default="user",
    show_default=True,
    help="User names are PREFIX-0001, PREFIX-0002, ...",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def fill(
    key_name: str | None,
    state_path: Path | None,
    profile: str | None,
    rp: str,
    count: int | None,
    until_full: bool,
    user_prefix: str,
    as_json: bool,
) -> None:
    """Make resident credentials through the key's own makeCredential (same slot rule).

    Ends with exit status 1 when the key runs out of slots before --count is reached.
    """
    if (count is None) == (not until_full):
        raise click.UsageError("give either --count N or --until-full")
    check_rp_id(rp)
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True, create=True, profile=profile) as backend:
        # Only the slot counts: listing would unwrap every credential (fill stays flat).
        before = backend.call("slots")
        if before["capacity"] == 0:  # only a U2F-only key has no slot at all
            from softkey.tools.admin import U2F_NO_SLOTS

            raise CliError(U2F_NO_SLOTS)
        pin = _needs_pin(backend)
        if until_full and before["capacity"] is None:
            profile_name = backend.call("info")["profile"]
            raise CliUsageError(
                f"the {profile_name} profile has no slot limit, so it is never full; "
                "use --count N instead of --until-full"
            )
        total = count if count is not None else before["free"]
        bar = _progress(total, f"filling {ref.label}")
        created: list[str] = []
        last: dict[str, Any] = {}
        try:
            if bar is not None:
                bar.__enter__()
            while count is None or len(created) < count:
                chunk = FILL_CHUNK if count is None else min(FILL_CHUNK, count - len(created))
                last = backend.call(
                    "fill",
                    count=chunk,
                    rp=rp,
                    user_prefix=user_prefix,
                    pin=pin,
                    start=last.get("next_number"),
                )
                created += last["users"]
                if bar is not None:
                    bar.update(last["created"])
                if last["stopped"] is not None:
                    break
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    stopped = last.get("stopped")
    full_status = stopped is not None and stopped["status"] == "CTAP2_ERR_KEY_STORE_FULL"
    result = {
        **_key_header(ref, backend),
        "rp_id": rp,
        "created": len(created),
        "users": created,
        "used": last.get("used"),
        "capacity": last.get("capacity"),
        "free": last.get("free"),
        "full": bool(last.get("full")),
        "stopped": stopped,
    }
    if as_json:
        emit_json(result)
    else:
        cap = (
            "unlimited" if result["capacity"] is None else f"{result['used']}/{result['capacity']}"
        )
        click.echo(f"created {len(created)} resident credentials for {rp}; slots {cap}")
    if stopped is None or (full_status and until_full):
        return
    if full_status:
        from softkey.tools.admin import slots_full_message

        raise CliError(slots_full_message(result["used"], result["capacity"]))
    # The device's reason may quote the rp.id it was sent.
    reason = f" ({printable(stopped['reason'])})" if stopped["reason"] else ""
    raise CliError(f"the key refused makeCredential: {stopped['status']}{reason}")


@cli.command("add-credential")
@paths.key_options
@click.option("--profile", type=PROFILE_CHOICE, help="Profile for a new key.")
@click.option("--rp", required=True, metavar="RP_ID", help="Relying party ID.")
@click.option(
    "--private-key",
    "private_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PKCS#8 file (PEM or DER) of a P-256, P-384, Ed25519 or ML-DSA (2.1+ profiles) key.",
)
@click.option(
    "--credential-id",
    metavar="ID",
    help="Use this credential ID (hex or base64url, 1-1023 bytes): any ID, stored on the key "
    "as an imported credential (an ID this key made for the same RP and key stays its own).",
)
@click.option(
    "--user-handle",
    metavar="ID",
    help="user.id (hex or base64url): needed by a resident credential; an imported "
    "non-resident one keeps it for listing.",
)
@click.option("--user-name", help="user.name for a resident credential.")
@click.option("--display-name", help="user.displayName for a resident credential.")
@click.option(
    "--resident/--non-resident",
    default=False,
    show_default=True,
    help="Store it in a slot (discoverable) or only in the credential ID.",
)
@click.option(
    "--counter",
    type=click.IntRange(0, 0xFFFFFFFF),
    default=0,
    show_default=True,
    help="Signature counter; the next assertion reports COUNTER+1.",
)
@click.option(
    "--cred-protect",
    type=click.IntRange(1, 3),
    default=1,
    show_default=True,
    help="credProtect level (1 optional, 2 optional with ID list, 3 UV required).",
)
@click.option(
    "--large-blob",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="FILE's bytes become the credential's large blob (resident, CTAP 2.1 profiles).",
)
@click.option(
    "--backup-eligible/--no-backup-eligible",
    default=None,
    help="authenticatorData flag BE (a testing aid; default: the profile's, off).",
)
@click.option(
    "--backup-state/--no-backup-state",
    default=None,
    help="authenticatorData flag BS (needs BE; default: the profile's, off).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def add_credential(
    key_name: str | None,
    state_path: Path | None,
    profile: str | None,
    rp: str,
    private_key: Path,
    credential_id: str | None,
    user_handle: str | None,
    user_name: str | None,
    display_name: str | None,
    resident: bool,
    counter: int,
    cred_protect: int,
    large_blob: Path | None,
    backup_eligible: bool | None,
    backup_state: bool | None,
    as_json: bool,
) -> None:
    """Seed a credential with a given private key, for relying-party test fixtures
    (WebDriver's addCredential).

    Without --credential-id the key makes the ID (it wraps the private key into it) and
    prints it, to register with the RP. With --credential-id any ID is used as given: the
    key stores the private key, encrypted under its master key, as an imported credential.
    """
    from softkey.tools.webdriver_cli import pem_text

    check_rp_id(rp)
    pem = pem_text(private_key.read_bytes())
    blob = None if large_blob is None else large_blob.read_bytes().hex()
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True, create=True, profile=profile) as backend:
        result = backend.call(
            "add_credential",
            rp=rp,
            private_key_pem=pem,
            credential_id=credential_id,
            user_handle=user_handle,
            user_name=user_name,
            user_display_name=display_name,
            resident=resident,
            counter=counter,
            cred_protect=cred_protect,
            large_blob=blob,
            backup_eligible=backup_eligible,
            backup_state=backup_state,
        )
    if as_json:
        emit_json({**_key_header(ref, backend), **result})
        return
    kind = "a resident" if resident else "a non-resident"
    if result.get("imported"):
        kind = "an imported " + kind[2:]
    click.echo(f"added {kind} credential for {rp}")
    click.echo(f"credential ID: {result['credential_id_b64url']} (base64url)")
    click.echo(f"               {result['credential_id']} (hex)")


# -- reset, PIN -----------------------------------------------------------------------------------


@cli.command()
@paths.key_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def reset(key_name: str | None, state_path: Path | None, yes: bool, as_json: bool) -> None:
    """Factory-reset a key: new master key, no resident credentials, no PIN."""
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        used = backend.call("credentials")["used"]
        _confirm(
            yes,
            f"Reset {ref.label}? Its {used} resident credentials and any PIN are deleted and every "
            "credential it ever made stops working.",
        )
        result = backend.call("reset")
    if as_json:
        emit_json(
            {
                **_key_header(ref, backend),
                "reset": True,
                "deleted_resident": result["deleted_resident"],
                "new_master_key": True,
            }
        )
        return
    click.echo(
        f"reset {ref.label}: {result['deleted_resident']} resident credentials deleted, "
        "new master key (old credential IDs no longer work)"
    )
    click.echo(
        "note: an operator reset skips the device's rule that reset needs a touch within "
        "10 s of plugging in",
        err=True,
    )


@cli.group()
def pin() -> None:
    """Set, change or inspect the PIN (read from a prompt or SOFTKEY_PIN/SOFTKEY_NEW_PIN)."""


@pin.command("status")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pin_status(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Is a PIN set, and how many retries are left?"""
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=False) as backend:
        data = {**_key_header(ref, backend), **backend.call("pin_status")}
    if as_json:
        emit_json(data)
    elif data["set"]:
        retries = "" if data["retries"] is None else f", {data['retries']} retries left"
        click.echo(f"PIN set{retries}")
    else:
        click.echo(f"no PIN set (minimum length {data['min_length']})")


@pin.command("set")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def pin_set(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Set the first PIN of a key ($SOFTKEY_NEW_PIN, else $SOFTKEY_PIN, else a prompt)."""
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        if backend.call("pin_status")["set"]:
            raise CliError("a PIN is already set; use `softkey pin change`")
        new = _secret(NEW_PIN_ENV, "New PIN", confirm=True, fallback_env=PIN_ENV)
        backend.call("pin_set", pin=new)
        status = backend.call("pin_status")
    if as_json:
        emit_json({**_key_header(ref, backend), "pin_set": True, "retries": status["retries"]})
        return
    click.echo(f"PIN set on {ref.label}")


@pin.command("change")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def pin_change(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Change the PIN: the current one from $SOFTKEY_PIN, the new from $SOFTKEY_NEW_PIN (or
    prompts)."""
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        if not backend.call("pin_status")["set"]:
            raise CliError("no PIN is set; use `softkey pin set`")
        old = _secret(PIN_ENV, "Current PIN")
        new = _secret(NEW_PIN_ENV, "New PIN", confirm=True)
        backend.call("pin_change", old=old, new=new)
        status = backend.call("pin_status")
    if as_json:
        emit_json({**_key_header(ref, backend), "pin_changed": True, "retries": status["retries"]})
        return
    click.echo(f"PIN changed on {ref.label}")


# -- export / import ------------------------------------------------------------------------------


@cli.command("export")
@paths.key_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--passphrase",
    "encrypt",
    is_flag=True,
    help=f"Encrypt with a passphrase (prompted, or ${PASSPHRASE_ENV}).",
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def export_cmd(
    key_name: str | None,
    state_path: Path | None,
    file: Path,
    encrypt: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write the whole key state (master key included) to FILE, mode 0600."""
    from softkey.tools.state_export import ExportError, export_state

    ref = resolve_key(key_name, state_path)
    if not ref.exists():
        raise CliError(f"there is no {ref.label} to export ({ref.state} does not exist)")
    passphrase = _secret(PASSPHRASE_ENV, "Passphrase", confirm=True) if encrypt else None
    try:
        # A running key's file is read in one snapshot; WAL makes that safe while it writes.
        result = export_state(ref.state, file, passphrase=passphrase, force=force)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        running, _ = running_admin(ref)
        emit_json({"key": ref.name, "state": str(ref.state), "running": running, **result})
        return
    used = result["resident_credentials"]["used"]
    click.echo(
        f"exported {ref.label} ({result['profile']}, {used} resident credentials) to {file}"
        + (" encrypted" if encrypt else "")
    )
    if not encrypt:
        click.echo(
            "note: the file holds the master key in the clear: whoever reads it can use every "
            "credential of this key; keep it secret or use --passphrase",
            err=True,
        )


@cli.command("import")
@paths.key_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--passphrase",
    "ask",
    is_flag=True,
    help=f"Ask for the passphrase even if FILE looks unencrypted (${PASSPHRASE_ENV}).",
)
@click.option("--force", is_flag=True, help="Replace an existing key (its credentials are lost).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def import_cmd(
    key_name: str | None,
    state_path: Path | None,
    file: Path,
    ask: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Create a key from an export FILE (refuses to overwrite an existing key without --force)."""
    from softkey.tools.state_export import ExportError, import_state, is_encrypted, read_export

    ref = resolve_key(key_name, state_path)
    running, _ = running_admin(ref)
    if running:
        raise CliError(f"{ref.label} is running; stop it, then import")
    try:
        encrypted = is_encrypted(read_export(file))
        passphrase = _secret(PASSPHRASE_ENV, "Passphrase") if encrypted or ask else None
        result = import_state(file, ref.state, passphrase=passphrase, force=force)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        emit_json({"key": ref.name, "running": False, **result})
        return
    click.echo(
        f"imported {file} into {ref.label} ({result['profile']}, "
        f"{result['resident_credentials']['used']} resident credentials)"
    )


@cli.group()
def attestation() -> None:
    """The key's attestation root CA, for relying parties that verify attestation."""


@attestation.command("export-ca")
@paths.key_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the PEM to FILE instead of printing it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def attestation_export_ca(
    key_name: str | None, state_path: Path | None, output: Path | None, as_json: bool
) -> None:
    """Export the root CA (PEM) this key's attestation certificates chain to.

    Give it to an RP (python-fido2 AttestationVerifier, py_webauthn pem_root_certs_bytes_by_fmt)
    as its trust anchor. It survives `softkey reset`; a new state file gets a new one."""
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=False) as backend:
        data = backend.call("attestation_ca")
    if output is not None:
        from softkey.authenticator.private_files import PrivateFileError, write_private_file

        # A public certificate, but the path is still never followed through a planted link.
        try:
            write_private_file(output, data["pem"].encode(), what="certificate file")
        except PrivateFileError as exc:
            raise CliError(str(exc)) from None
    if as_json:
        emit_json(
            {**_key_header(ref, backend), **data, **({"output": str(output)} if output else {})}
        )
    elif output is not None:
        click.echo(
            f"wrote the attestation root CA of {ref.label} to {output} (SHA-256 {data['sha256']})"
        )
    else:
        click.echo(data["pem"], nl=False)


# -- registration of the commands other modules own ------------------------------------------------
# Imported when a command line names them (or `--help` lists them), not at every start: a
# `softkey run` must not pay for `softkey udev` (see `LazyCommands`). Name -> "module:attribute";
# tests/tools/test_cli_lazy.py checks these names against the modules' own commands.
LAZY_COMMANDS: dict[str, dict[str, str]] = {
    "": {
        # `softkey run` and the control verbs (tools/run.py)
        "run": "softkey.tools.run:run",
        "status": "softkey.tools.run:status",
        "touch": "softkey.tools.run:touch",
        "deny": "softkey.tools.run:deny",
        "replug": "softkey.tools.run:replug",
        "set-user-verified": "softkey.tools.run:set_user_verified",
        "udev": "softkey.tools.udev_setup:udev",
        "config": "softkey.tools.config_cli:config",
        "events": "softkey.tools.events_cli:events",
        "fault": "softkey.tools.faults_cli:fault",
        # `softkey service install|status|uninstall`: the key as a systemd user service.
        "service": "softkey.tools.service_cli:service",
    },
    "pin": {"verify": "softkey.tools.config_cli:pin_verify"},
    # `softkey credentials set-properties` (WebDriver's setCredentialProperties).
    "credentials": {"set-properties": "softkey.tools.webdriver_cli:set_properties"},
}


class LazyCommands(dict):  # type: ignore[type-arg]
    """A click group's ``commands`` where some commands are imported on first use: looking
    one up (``get_command``, ``commands[name]``) imports only its module; listing them all
    (``--help``, iteration) imports every one."""

    def __init__(self, commands: dict[str, click.Command], lazy: dict[str, str]) -> None:
        super().__init__(commands)
        self.lazy = dict(lazy)

    def _load(self, name: str) -> click.Command:
        import importlib

        module, _, attribute = self.lazy.pop(name).partition(":")
        command = getattr(importlib.import_module(module), attribute)
        self[name] = command
        return command

    def _load_all(self) -> None:
        for name in list(self.lazy):
            self._load(name)

    def __missing__(self, name: str) -> click.Command:
        if name in self.lazy:
            return self._load(name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self.lazy

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return super().__iter__()

    def __len__(self) -> int:
        return super().__len__() + len(self.lazy)

    def keys(self) -> Any:
        self._load_all()
        return super().keys()

    def values(self) -> Any:
        self._load_all()
        return super().values()

    def items(self) -> Any:
        self._load_all()
        return super().items()


for _path, _lazy in LAZY_COMMANDS.items():
    _group: click.Group = cli if not _path else cli.commands[_path]  # type: ignore[assignment]
    _group.commands = LazyCommands(_group.commands, _lazy)


def main() -> None:
    try:
        cli(prog_name="softkey", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":
    main()
