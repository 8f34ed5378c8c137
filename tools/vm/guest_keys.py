"""Rows device.two_keys and device.replug_held: two softkeys at once, and a replug under a client.

Two `softkey run --transport uhid` processes, each on its own state file, must appear as two
FIDO hidraw nodes that python-fido2 lists and uses independently (a credential of one is
unknown to the other). Then `softkey replug` of the first while a client holds its node open:
the node goes away (the open handle fails), a new one appears, the other key's node is
untouched, and a credential made before the replug still logs in.

Run by tools/vm/guest_main.py, which passes its Device class instance and its
register-and-login helper in (this module never imports guest_main, the script itself).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from rows import RowFailed as Fail

RP_ID = "e2e.softkey.example"


def _open(node: str) -> Any:
    """A python-fido2 handle on exactly ``node`` (the others are closed at once)."""
    from fido2.hid import CtapHidDevice

    found = None
    for dev in CtapHidDevice.list_devices():
        if dev.descriptor.path == node and found is None:
            found = dev
        else:
            dev.close()
    if found is None:
        raise Fail(f"python-fido2 does not list {node}")
    return found


def _listed_nodes() -> list[str]:
    from fido2.hid import CtapHidDevice

    devices = list(CtapHidDevice.list_devices())
    nodes = sorted(d.descriptor.path for d in devices)
    for dev in devices:
        dev.close()
    return nodes


def _answers(node: str, cred_id: bytes) -> bool:
    """A silent getAssertion (up=false): does the key on ``node`` know this credential?"""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    dev = _open(node)
    try:
        allow = [{"type": "public-key", "id": cred_id}]  # the CTAP map (bytes id)
        Ctap2(dev).get_assertion(RP_ID, os.urandom(32), allow, options={"up": False})
        return True
    except CtapError as exc:
        if exc.code != CtapError.ERR.NO_CREDENTIALS:
            raise Fail(f"getAssertion(up=false) on {node} gave {exc.code.name}") from exc
        return False
    finally:
        dev.close()


def _fails_within(func: Callable[[], Any], seconds: float) -> str | None:
    """Run ``func`` in a thread; the exception it raised, None if it returned, or a timeout."""
    outcome: list[str | None] = []

    def target() -> None:
        try:
            func()
            outcome.append(None)
        except Exception as exc:  # what the stale handle does is the observation
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else f"no answer within {seconds:.0f} s"


def plan(
    register_login: Callable[..., Any], client: Callable[[Any, Any], Any]
) -> list[tuple[str, Callable[[Any], str], tuple[str, ...]]]:
    """The rows; ``register_login(s, dev, ...)`` and ``client(s, dev)`` are guest_main's."""
    state: dict[str, Any] = {}

    def two_keys(s: Any) -> str:
        first = s.device
        second = type(first)(s)
        second.log_path = first.log_path
        second.others = {first.sysdev}
        second.start("second")
        s.cleanups.append(second.stop)
        state["second"] = second
        node_b = second.wait_node(90)
        first.others = {second.sysdev}
        s.log(f"first key {first.node} ({first.sysdev}); second key {node_b} ({second.sysdev})")
        listed = _listed_nodes()
        if first.node not in listed or node_b not in listed:
            raise Fail(f"python-fido2 lists {listed}, not both {first.node} and {node_b}")
        made = {}
        for name, node in (("first", first.node), ("second", node_b)):
            dev = _open(node)
            try:
                auth_data, _ = register_login(s, dev, resident=False, uv="discouraged", pin=None)
            finally:
                dev.close()
            made[name] = bytes(auth_data.credential_data.credential_id)
            if name == "first":
                state["first_cred"] = auth_data.credential_data
        state["made"] = made
        if _answers(node_b, made["first"]) or _answers(first.node, made["second"]):
            raise Fail("one key answers for the other's credential: they are not separate keys")
        if not (_answers(first.node, made["first"]) and _answers(node_b, made["second"])):
            raise Fail("a key does not answer for its own credential")
        return (
            f"two softkeys on {first.node} and {node_b}, both listed by python-fido2; each "
            "registered and logged in (Fido2Server verified); each answers only for its own "
            "credential"
        )

    def replug_held(s: Any) -> str:
        first, second = s.device, state["second"]
        held = _open(first.node)
        old_node, old_sysdev, second_sysdev = first.node, first.sysdev, second.sysdev
        try:
            from fido2.ctap2 import Ctap2

            Ctap2(held).get_info()  # the client really holds a working handle
            node, took = first.replug(s)
            gone = not Path(old_sysdev).exists()
            stale = _fails_within(lambda: Ctap2(held).get_info(), 10)
        finally:
            with suppress(Exception):
                held.close()
        s.log(f"replug {old_node} -> {node} in {took:.1f} s; old sysfs gone: {gone}; "
              f"stale handle: {stale}")  # fmt: skip
        if not gone:
            raise Fail(f"{old_sysdev} still exists after the replug")
        if stale is None:
            raise Fail("the handle opened before the replug still works: the node never went away")
        if second.sysdev != second_sysdev or not Path(second_sysdev).exists():
            raise Fail("the second key's node changed although only the first was replugged")
        from fido2.server import Fido2Server
        from fido2.webauthn import PublicKeyCredentialRpEntity

        # The credential from before the replug logs in, verified with its stored public key.
        cred = state["first_cred"]
        server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="softkey e2e"))
        request, login = server.authenticate_begin([cred], user_verification="discouraged")
        dev = _open(node)
        try:
            response = client(s, dev).get_assertion(request.public_key).get_response(0)
        finally:
            dev.close()
        server.authenticate_complete(login, [cred], response)
        second.stop()
        return (
            f"replug of the first key while python-fido2 held {old_node} open: the node went "
            f"away (the held handle failed: {stale[:60]}), {node} appeared in {took:.1f} s, the "
            "second key's node was untouched; the credential made before logs in "
            "(Fido2Server verified the assertion)"
        )

    return [
        ("device.two_keys", two_keys, ("device.hidraw",)),
        ("device.replug_held", replug_held, ("device.two_keys",)),
    ]
