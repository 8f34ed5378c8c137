"""The key's event stream (authenticator/events.py): what happened, in order, never a secret."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime

import pytest
from fido2.client import ClientError
from fido2.ctap2 import ClientPin, CredentialManagement
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import Authenticator
from softkey.authenticator.events import EVENT_TYPES, EventBus
from softkey.tools.admin import dispatch

RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
PIN, NEW_PIN = "k7#Qz9!w", "Xv3$pL8@"
COMMON = {"type", "seq", "timestamp", "rp_id", "credential_id", "sign_count"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forms(secret: bytes) -> list[str]:
    """How a byte string could show up in JSON text."""
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        b64url(secret),
        secret.decode("latin-1"),
    ]


@pytest.mark.softkey(pin=PIN)
def test_a_lifetime_in_events_in_order_without_secrets(softkey) -> None:
    auth = softkey.authenticator
    master_key = auth.store.get_meta("master_key")
    softkey.clear_events()  # from here: the story below (the PIN was set at setup)

    server = Fido2Server(RP)
    options, state = server.register_begin(
        ALICE,
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    credential = server.register_complete(state, softkey.create(options)).credential_data
    cred_id = credential.credential_id
    secrets = auth.wrapper.unwrap(cred_id, hashlib.sha256(b"example.com").digest())
    assert secrets is not None

    request, state = server.authenticate_begin(
        [credential], user_verification=UserVerificationRequirement.REQUIRED
    )
    server.authenticate_complete(state, [credential], softkey.get(request))

    client_pin = ClientPin(softkey.ctap2)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    credman = CredentialManagement(softkey.ctap2, client_pin.protocol, token)
    descriptor = {"type": "public-key", "id": cred_id}
    credman.update_user_info(descriptor, {"id": b"alice-id", "name": "alice@new"})
    credman.delete_cred(descriptor)

    client_pin.change_pin(PIN, NEW_PIN)
    softkey.ctap2.reset()

    events = softkey.events
    story = [e["type"] for e in events if not e["type"].startswith("presence")]
    assert story == [
        "credentialAdded",
        "credentialAsserted",  # the client's silent pre-flight (allowList)
        "credentialAsserted",  # the login
        "credentialUpdated",
        "credentialDeleted",
        "pinChanged",
        "reset",
    ]
    by_type = {e["type"]: e for e in events}
    added = by_type["credentialAdded"]
    assert added["rp_id"] == "example.com" and added["credential_id"] == b64url(cred_id)
    assert added["sign_count"] == 0 and added["resident"] and added["uv"]
    asserted = [e for e in events if e["type"] == "credentialAsserted"]
    assert [e["up"] for e in asserted] == [False, True]
    assert [e["sign_count"] for e in asserted] == [1, 2]
    assert all(e["credential_id"] == b64url(cred_id) for e in asserted)
    for kind in ("credentialUpdated", "credentialDeleted"):
        assert by_type[kind]["rp_id"] == "example.com"
        assert by_type[kind]["credential_id"] == b64url(cred_id)
    assert by_type["pinChanged"]["change"] == "changed"
    presence = [(e["type"], e["purpose"]) for e in events if e["type"].startswith("presence")]
    assert presence == [
        ("presenceRequested", "makeCredential"),
        ("presenceApproved", "makeCredential"),
        ("presenceRequested", "getAssertion"),
        ("presenceApproved", "getAssertion"),
        ("presenceRequested", "reset"),
        ("presenceApproved", "reset"),
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for event in events:
        assert COMMON <= set(event) and event["type"] in EVENT_TYPES
        datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))

    text = json.dumps(events)
    for secret in (master_key, secrets.private_key, secrets.cred_random):
        assert secret is not None
        for form in _forms(secret):
            assert form not in text
    for pin in (PIN, NEW_PIN):
        assert pin not in text
        for form in _forms(hashlib.sha256(pin.encode()).digest()[:16]):
            assert form not in text
    assert "alice" not in text  # user names are not events' business


def test_a_declined_touch_and_the_first_pin(softkey) -> None:
    server = Fido2Server(RP)
    options, state = server.register_begin(
        ALICE, user_verification=UserVerificationRequirement.DISCOURAGED
    )
    with softkey.denying(), pytest.raises(ClientError):
        softkey.create(options)
    softkey.timeout()
    with pytest.raises(ClientError):
        softkey.create(options)
    softkey.set_pin(PIN)
    kinds = [(e["type"], e.get("verdict")) for e in softkey.events]
    assert kinds == [
        ("presenceRequested", None),
        ("presenceDenied", "denied"),
        ("presenceRequested", None),
        ("presenceDenied", "timeout"),
        ("pinChanged", None),
    ]
    assert softkey.events[-1]["change"] == "set"
    assert not [e for e in softkey.events if e["type"] == "credentialAdded"]


def test_operator_actions_are_events_too() -> None:
    auth = Authenticator("ctap2.1")
    seen: list[dict] = []
    auth.events.subscribe(seen.append)
    filled = dispatch(auth, "fill", {"count": 2, "rp": "fill.example"})
    assert filled["ok"]
    ids = [c.credential_id for c in auth.credentials()]
    auth.delete_credential(ids[0])
    dispatch(auth, "pin_set", {"pin": PIN})
    dispatch(auth, "reset", {})
    story = [e["type"] for e in seen if not e["type"].startswith("presence")]
    assert story == [
        "credentialAdded",
        "credentialAdded",
        "credentialDeleted",
        "pinChanged",
        "reset",
    ]
    assert seen[-1]["rp_id"] is None and seen[-1]["credential_id"] is None


def test_get_next_assertion_is_an_assertion_with_its_rp(softkey) -> None:
    server = Fido2Server(RP)
    for name in ("a", "b"):
        user = PublicKeyCredentialUserEntity(id=name.encode(), name=name)
        options, state = server.register_begin(
            user,
            resident_key_requirement=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.DISCOURAGED,
        )
        server.register_complete(state, softkey.create(options))
    softkey.clear_events()
    ctap = softkey.ctap2
    ctap.get_assertion("example.com", b"\x00" * 32)
    ctap.get_next_assertion()
    asserted = [e for e in softkey.events if e["type"] == "credentialAsserted"]
    assert len(asserted) == 2
    assert {e["rp_id"] for e in asserted} == {"example.com"}
    assert asserted[0]["credential_id"] != asserted[1]["credential_id"]


def test_the_bus_keeps_a_bounded_history_and_survives_a_bad_subscriber() -> None:
    bus = EventBus(history=3, wall=lambda: 0.0)

    def broken(event: dict) -> None:
        raise RuntimeError("a listener bug")

    got: list[dict] = []
    bus.subscribe(broken)
    unsubscribe = bus.subscribe(got.append)
    for _ in range(5):
        bus.emit("reset")
    assert [e["seq"] for e in bus.history] == [3, 4, 5]
    assert len(got) == 5 and bus.last_seq == 5
    assert bus.history[0]["timestamp"] == "1970-01-01T00:00:00.000Z"
    unsubscribe()
    bus.emit("reset")
    assert len(got) == 5
    with pytest.raises(ValueError):
        bus.emit("somethingElse")
    # What a subscriber or a reader of history gets is a copy: it cannot change the record.
    bus.history[-1]["type"] = "changed"
    assert bus.history[-1]["type"] == "reset"
