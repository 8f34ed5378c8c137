"""`softkey fault add|list|clear`: make a running key misbehave on purpose (faults.py).

Faults are runtime state of a running key: the verbs go through its control socket (op
"admin", the operations in ``OPERATIONS`` below, which tools/admin.py adds to its own), and a
key that is not running is refused in one line (an offline key has no "next request").

tools/cli.py registers ``fault`` on its group; this module imports cli.py and admin.py only
inside functions, so neither import needs the other first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from softkey.authenticator.faults import KINDS, MAX_COUNT, ON_CHOICES, FaultError
from softkey.tools import paths

_JSON_HELP = "Machine-readable result (one JSON object)."


# -- admin operations (run inside the running key, under its lock) --------------------------------


def _usage(exc: FaultError) -> Exception:
    from softkey.tools.admin import AdminError

    return AdminError(str(exc), code="usage")


def fault_add(
    auth: Any, kind: str, count: int = 1, value: Any = None, on: str = "any"
) -> dict[str, Any]:
    try:
        fault = auth.faults.add(kind, count, value, on)
    except FaultError as exc:
        raise _usage(exc) from None
    return {"added": fault.record(), "faults": auth.faults.records()}


def fault_list(auth: Any) -> dict[str, Any]:
    return {"faults": auth.faults.records()}


def fault_clear(auth: Any, kind: str | None = None) -> dict[str, Any]:
    try:
        cleared = auth.faults.clear(kind)
    except FaultError as exc:
        raise _usage(exc) from None
    return {"cleared": cleared, "faults": auth.faults.records()}


OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "fault_add": fault_add,
    "fault_list": fault_list,
    "fault_clear": fault_clear,
}


# -- the verbs -------------------------------------------------------------------------------------


def _call(key_name: str | None, state_path: Path | None, op: str, **args: Any) -> dict[str, Any]:
    """``op`` on the running key, with the key header (README, "JSON")."""
    from softkey.tools.cli import CliError, RemoteBackend, resolve_key, running_admin
    from softkey.tools.events_cli import not_running_message

    ref = resolve_key(key_name, state_path)
    running, admin_call = running_admin(ref)
    if not running:
        raise CliError(not_running_message(ref, "faults are overrides of a running key"))
    if admin_call is None:
        raise CliError(f"{ref.label} runs but does not answer admin calls; restart it")
    result = RemoteBackend(ref, admin_call).call(op, **args)
    return {"key": ref.name, "state": str(ref.state), "running": True, "label": ref.label, **result}


def _emit(as_json: bool, data: dict[str, Any], *lines: str) -> None:
    from softkey.tools.cli import emit_json

    if as_json:
        emit_json({k: v for k, v in data.items() if k != "label"})
        return
    for line in lines:
        click.echo(line)


def _requests(n: int) -> str:
    return "the next request" if n == 1 else f"the next {n} requests"


def _row(record: dict[str, Any]) -> str:
    where = "" if record["on"] == "any" else f" (only {record['on']})"
    return (
        f"{record['id']:>3}  {record['label']}: {record['left']} of {record['count']} left{where}"
    )


@click.group("fault")
def fault() -> None:
    """Make the running key misbehave on purpose, for relying-party negative tests.

    A fault applies to the next N requests that reach the user (makeCredential, getAssertion
    with up=true); a client's silent up=false pre-flight does not use it up. Stored
    credentials and counters are never changed, and nothing is kept when the key stops."""


@fault.command("add")
@paths.key_options
@click.argument("kind", type=click.Choice(list(KINDS)), metavar="KIND")
@click.option(
    "--count",
    "-n",
    type=click.IntRange(1, MAX_COUNT),
    default=1,
    show_default=True,
    help="For how many requests that reach the user.",
)
@click.option(
    "--value",
    metavar="V",
    help="up_flag/uv_flag: on|off; counter: N; counter_regression: N (default 1); "
    "rp_id_hash: an RP ID; aaguid: a UUID; error: a CTAP status (0x27, OPERATION_DENIED); "
    "delay: seconds.",
)
@click.option(
    "--on",
    "on",
    type=click.Choice(ON_CHOICES),
    default="any",
    show_default=True,
    help="Only makeCredential, or only getAssertion.",
)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def add(
    key_name: str | None,
    state_path: Path | None,
    kind: str,
    count: int,
    value: str | None,
    on: str,
    as_json: bool,
) -> None:
    """Set a fault: KIND is one of bad_signature, up_flag, uv_flag, counter,
    counter_regression, rp_id_hash, aaguid, attestation_cert, error, delay, no_answer."""
    data = _call(key_name, state_path, "fault_add", kind=kind, count=count, value=value, on=on)
    added = data["added"]
    where = "" if added["on"] == "any" else f" ({added['on']} only)"
    _emit(
        as_json,
        data,
        f"fault {added['id']} set on {data['label']}: {added['label']} for "
        f"{_requests(added['count'])} that reach the user{where}",
    )


@fault.command("list")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def list_(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """The faults set on the running key, with how many requests each has left."""
    data = _call(key_name, state_path, "fault_list")
    rows = [_row(record) for record in data["faults"]]
    _emit(as_json, data, *(rows or [f"no faults set on {data['label']}"]))


@fault.command("clear")
@paths.key_options
@click.argument("kind", type=click.Choice(list(KINDS)), metavar="[KIND]", required=False)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def clear(key_name: str | None, state_path: Path | None, kind: str | None, as_json: bool) -> None:
    """Remove every fault (or every fault of KIND): the key answers normally again."""
    data = _call(key_name, state_path, "fault_clear", kind=kind)
    n = data["cleared"]
    _emit(as_json, data, f"cleared {n} fault{'' if n == 1 else 's'} on {data['label']}")
