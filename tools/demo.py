"""`softkey demo`: a walk-through in the terminal, against an in-memory key.

1. Non-resident credentials are unlimited: the private key lives in the credential ID.
2. Resident (discoverable) credentials fill a small slot table until KEY_STORE_FULL.
3. An empty allowList finds only resident credentials.
4. Reset regenerates the master key: every old non-resident credential ID stops working.

It talks to the key through python-fido2's Ctap2, as a browser's platform layer would.
"""

from __future__ import annotations

import os

import click
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]


def _make(ctap: Ctap2, rp: str, user: str, rk: bool) -> bytes:
    att = ctap.make_credential(
        os.urandom(32),
        {"id": rp, "name": rp},
        {"id": user.encode(), "name": user, "displayName": user},
        ES256,
        options={"rk": True} if rk else None,
    )
    assert att.auth_data.credential_data is not None
    return att.auth_data.credential_data.credential_id


def _short(cred_id: bytes) -> str:
    return f"{cred_id[:6].hex()}… ({len(cred_id)} bytes)"


def run_demo(profile: str = "nitrokey-fido2") -> None:
    auth = Authenticator(profile)
    ctap = Ctap2(VirtualCtapDevice(auth))
    capacity = auth.profile.rk_capacity
    head = click.style
    click.echo(head(f"softkey demo — a {auth.profile.description} key (in memory)", bold=True))

    click.echo(
        head("\n1. Non-resident credentials: unlimited, the key is inside the ID", bold=True)
    )
    non_resident = {}
    for rp in ("github.example", "bank.example", "mail.example"):
        non_resident[rp] = _make(ctap, rp, "alice", rk=False)
        click.echo(f"   registered at {rp:<16} credential ID {_short(non_resident[rp])}")
    click.echo(f"   slots used: {len(auth.credentials())} — nothing was stored on the key")

    click.echo(head("\n2. Resident credentials: each one takes a slot", bold=True))
    made = 0
    while True:
        try:
            _make(ctap, "passkeys.example", f"user{made}", rk=True)
        except CtapError as exc:
            click.echo(
                f"   slot {made + 1}: {head(exc.code.name, fg='red')} "
                f"after {made} resident credentials (capacity {capacity})"
            )
            break
        made += 1
        if capacity is None and made >= 50:
            click.echo("   50 made: this profile has unlimited slots")
            break
    if auth.profile.credman == "none":
        click.echo("   this CTAP 2.0 key has no credential management: the only way to free a")
        click.echo("   slot is a full reset")

    click.echo(
        head("\n3. Usernameless login (empty allowList) finds only resident keys", bold=True)
    )
    found = ctap.get_assertion("passkeys.example", os.urandom(32))
    click.echo(f"   passkeys.example: {found.number_of_credentials} accounts offered")
    try:
        ctap.get_assertion("github.example", os.urandom(32))
    except CtapError as exc:
        click.echo(f"   github.example:   {head(exc.code.name, fg='red')} — the key cannot know")
        click.echo("   a non-resident credential unless the site sends its ID in allowCredentials")
    with_id = ctap.get_assertion(
        "github.example",
        os.urandom(32),
        [{"type": "public-key", "id": non_resident["github.example"]}],
    )
    click.echo(
        f"   github.example with its ID in allowList: signed (counter {with_id.auth_data.counter})"
    )

    click.echo(head("\n4. Reset: a new master key, and every old credential dies", bold=True))
    ctap.reset()
    click.echo(f"   reset done (within 10 s of power-up); slots used: {len(auth.credentials())}")
    for rp, cred_id in non_resident.items():
        try:
            ctap.get_assertion(rp, os.urandom(32), [{"type": "public-key", "id": cred_id}])
            click.echo(f"   {rp}: still works?!")
        except CtapError as exc:
            click.echo(f"   {rp:<16} old ID {_short(cred_id)}: {head(exc.code.name, fg='red')}")
    click.echo("\n   The sites still hold those credential IDs, but no key can use them any more:")
    click.echo(
        "   the user must re-register everywhere. That is why reset on a CTAP 2.0 key hurts."
    )
