"""`softkey config ...` and `softkey pin verify`: authenticatorConfig (CTAP 2.1 §6.11) as ykman
offers it (`ykman fido config`, `ykman fido access verify-pin`).

Each verb runs a tools.admin operation that sends the real authenticatorConfig / clientPIN
requests through the device's own ``handle_cbor`` (with a pinUvAuthToken carrying the acfg
permission when the key has a PIN), on a running key through its control socket or offline on
its state file. The PIN comes from SOFTKEY_PIN or a hidden prompt, never from argv.

tools/cli.py registers ``config`` on its group and ``pin_verify`` on its ``pin`` group; this
module imports cli.py only inside functions, so neither import needs the other first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from softkey.tools import paths
from softkey.transports.display import printable

_JSON_HELP = "Machine-readable result (one JSON object)."


def _run_config(
    key_name: str | None, state_path: Path | None, op: str, *, ep: bool = False, **args: Any
) -> tuple[Any, dict[str, Any]]:
    """(KeyRef, result with the key header) of one authenticatorConfig operation."""
    from softkey.tools import admin
    from softkey.tools.cli import PIN_ENV, CliError, _secret, open_key, resolve_key

    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        info = backend.call("info")
        # Refuse before asking for a PIN that could not be used anyway.
        config = info.get("config")
        if config is not None and not config["authenticator_config"]:
            raise CliError(admin.config_unsupported_message(info["profile"]))
        if ep and config is not None and config["enterprise_attestation"] is None:
            raise CliError(admin.ep_unsupported_message(info["profile"]))
        pin = _secret(PIN_ENV, "PIN") if info["pin"]["set"] else None
        result = backend.call(op, pin=pin, **args)
    header = {"key": ref.name, "state": str(ref.state), "running": backend.running}
    return ref, {**header, **result}


def _emit(as_json: bool, data: dict[str, Any], *lines: str) -> None:
    from softkey.tools.cli import emit_json

    if as_json:
        emit_json(data)
        return
    for line in lines:
        click.echo(line)


@click.group("config")
def config() -> None:
    """authenticatorConfig (CTAP 2.1 keys): alwaysUv, minimum PIN length, forced PIN change,
    enterprise attestation. Needs the PIN when one is set ($SOFTKEY_PIN or a prompt)."""


@config.command("toggle-always-uv")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def toggle_always_uv(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Turn alwaysUv on or off: with it on, every makeCredential and getAssertion needs the PIN."""
    ref, data = _run_config(key_name, state_path, "config_toggle_always_uv")
    if data["always_uv"]:
        text = (
            f"alwaysUv is now on for {ref.label}: every makeCredential and getAssertion "
            "needs the PIN (run this again to turn it off)"
        )
    else:
        text = f"alwaysUv is now off for {ref.label}"
    _emit(as_json, data, text)


@config.command("set-min-pin-length")
@paths.key_options
@click.argument("length", type=click.IntRange(min=1), metavar="N")
@click.option(
    "--rp-id",
    "rp_ids",
    multiple=True,
    metavar="RP_ID",
    help="An RP allowed to read the minimum length (minPinLength extension); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def set_min_pin_length(
    key_name: str | None,
    state_path: Path | None,
    length: int,
    rp_ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Raise the minimum PIN length to N (it can never decrease; only a reset lowers it).

    A current PIN shorter than N must be changed before its next use."""
    ref, data = _run_config(
        key_name, state_path, "config_set_min_pin_length", length=length, rp_ids=list(rp_ids)
    )
    lines = [f"minimum PIN length of {ref.label} is now {data['min_pin_length']}"]
    if rp_ids:
        # Echoed back from the key: escaped like any stored RP ID before a terminal.
        readers = ", ".join(printable(rp) for rp in data["min_pin_length_rp_ids"])
        lines.append(f"RPs that may read it: {readers}")
    if data["force_pin_change"]:
        lines.append("the PIN must be changed before its next use: run `softkey pin change`")
    _emit(as_json, data, *lines)


@config.command("force-pin-change")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def force_pin_change(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Require a new PIN: the current one is refused until `softkey pin change`."""
    ref, data = _run_config(key_name, state_path, "config_force_pin_change")
    _emit(
        as_json,
        data,
        f"{ref.label} now refuses its PIN until it is changed: run `softkey pin change`",
    )


@config.command("enable-ep")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def enable_ep(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Enable enterprise attestation (profiles with "ep" in getInfo; `softkey profiles`)."""
    ref, data = _run_config(key_name, state_path, "config_enable_ep", ep=True)
    _emit(
        as_json,
        data,
        f"enterprise attestation is enabled on {ref.label} (getInfo ep: true); "
        "only `softkey reset` disables it",
    )


@click.command("verify")
@paths.key_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def pin_verify(key_name: str | None, state_path: Path | None, as_json: bool) -> None:
    """Check a PIN ($SOFTKEY_PIN or a prompt); a wrong one spends a retry, as on a real key.

    Exit status 0 if it is right, 1 if it is wrong, blocked or no PIN is set."""
    from softkey.tools.cli import PIN_ENV, CliError, _secret, open_key, resolve_key

    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        status = backend.call("pin_status")
        # No PIN, or a blocked one: the key can check nothing, so nobody is asked for one.
        usable = status["set"] and status["retries"] != 0
        pin = _secret(PIN_ENV, "PIN") if usable else None
        result = backend.call("pin_verify", pin=pin)
    data = {"key": ref.name, "state": str(ref.state), "running": backend.running, **result}
    if as_json:
        from softkey.tools.cli import emit_json

        emit_json(data)
    if not result["verified"]:
        raise CliError(result["error"])
    if not as_json:
        left = f" ({result['retries']} retries left)" if result["retries"] is not None else ""
        click.echo(f"PIN verified on {ref.label}{left}")
    if result["error"]:  # right PIN, but forcePINChange is set
        click.echo(f"note: {result['error']}", err=True)
