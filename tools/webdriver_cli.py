"""`softkey credentials set-properties` and the helpers the WebDriver-style verbs share.

The CLI names of WebDriver's credential commands (README "CLI reference"):

- Add Credential: `softkey add-credential --credential-id ID` (any ID; without it the key
  makes the ID, as before);
- Get Credentials: `softkey credentials list --all [--private-keys]`;
- Remove Credential / Remove All Credentials: `softkey credentials delete ID | --all`;
- Set Credential Properties: `softkey credentials set-properties ID --backup-eligible ...`.

tools/cli.py registers ``set_properties`` on its ``credentials`` group; this module imports
cli.py only inside functions, so neither import needs the other first.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from softkey.tools import paths

PRIVATE_KEY_WARNING = (
    "warning: the output holds private keys in the clear: whoever reads it can sign in as "
    "these credentials; keep it secret"
)


def pem_text(data: bytes) -> str:
    """A private key file's content as PEM text: PEM as it is, DER (binary PKCS#8) armored
    as "PRIVATE KEY" (the key itself is read and checked by the operation)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.decode("utf-8", errors="replace")
    body = base64.encodebytes(data).decode("ascii")
    return f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"


def private_key_warning() -> None:
    click.echo(PRIVATE_KEY_WARNING, err=True)


def print_private_keys(creds: list[dict[str, Any]], id_format: str) -> None:
    """Each credential's private key (PKCS#8 PEM) after its ID, for `credentials list`."""
    for cred in creds:
        ident = cred["credential_id" if id_format == "hex" else "credential_id_b64url"]
        click.echo(f"\n{ident}:")
        click.echo(
            cred.get("private_key") or "(no private key: the ID no longer opens)\n", nl=False
        )


@click.command("set-properties")
@paths.key_options
@click.argument("credential_id", metavar="ID-PREFIX")
@click.option(
    "--backup-eligible/--no-backup-eligible",
    default=None,
    help="authenticatorData flag BE (backup eligibility) for this credential.",
)
@click.option(
    "--backup-state/--no-backup-state",
    default=None,
    help="authenticatorData flag BS (backed up now); BS needs BE.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def set_properties(
    key_name: str | None,
    state_path: Path | None,
    credential_id: str,
    backup_eligible: bool | None,
    backup_state: bool | None,
    as_json: bool,
) -> None:
    """Set the backup flags (BE, BS) makeCredential/getAssertion report for one stored
    credential (WebDriver's setCredentialProperties; a testing aid: real security keys never
    set them). ID-PREFIX: its ID or a unique prefix (hex or base64url); a flag left out
    stays as it is."""
    from softkey.tools.cli import _key_header, emit_json, open_key, resolve_key

    if backup_eligible is None and backup_state is None:
        raise click.UsageError(
            "give --backup-eligible/--no-backup-eligible and/or --backup-state/--no-backup-state"
        )
    ref = resolve_key(key_name, state_path)
    with open_key(ref, write=True) as backend:
        result = backend.call(
            "set_credential_properties",
            credential_id=credential_id,
            backup_eligible=backup_eligible,
            backup_state=backup_state,
        )
    if as_json:
        emit_json({**_key_header(ref, backend), **result})
        return
    cred = result["credential"]
    flags = {True: "on", False: "off"}
    click.echo(
        f"credential {cred['credential_id_b64url'][:16]}: backup eligible (BE) "
        f"{flags[cred['backup_eligible']]}, backup state (BS) {flags[cred['backup_state']]}"
    )
