"""authenticatorReset (CTAP 2.1 §6.6) and the seed-003 story on a CTAP 2.0 key.

A CTAP 2.0 key has no credential management: once its slots are full the only way to free
one is a reset, which also makes a new master key — so every non-resident credential made
before it silently stops working. Time is a FakeClock: no sleeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fido2.ctap2.credman import CredentialManagement

from softkey.authenticator import Authenticator, FakeClock, FixedPresence, ScriptedPresence, Verdict

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    RP_ID,
    Key,
    assertion,
    cred_id,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)


def test_seed_003_scenario_on_a_ctap_2_0_key() -> None:
    key = new_key("nitrokey-fido2")  # CTAP 2.0, 8 slots
    assert key.ctap.info.versions == ["U2F_V2", "FIDO_2_0"]

    # A non-resident credential, as most RPs make with security keys.
    non_resident = cred_id(make(key, rp="bank.example", user=b"me"))

    # Fill every slot, then one more.
    for i in range(8):
        make(key, rp=f"site{i}.example", user=b"me", rk=True)
    assert status_of(make, key, rp="one-more.example", user=b"me", rk=True) == (ERR.KEY_STORE_FULL)

    # No way to delete one slot: no credential management on 2.0, by any command.
    assert not CredentialManagement.is_supported(key.ctap.info)
    for command in (0x0A, 0x41):
        assert raw(key.auth, command, {1: 6, 2: {2: {"id": b"x", "type": "public-key"}}}) == (
            bytes([ERR.INVALID_COMMAND])
        )
    assert len(key.auth.credentials()) == 8

    # Reset, within 10 s of power-up (the key was plugged in moments ago).
    key.clock.advance(9)
    key.ctap.reset()

    # Every slot is free again...
    assert key.auth.credentials() == []
    for i in range(8):
        make(key, rp=f"new{i}.example", user=b"me", rk=True)
    # ...but the bank login made before the reset is dead: new master key.
    status = status_of(assertion, key, rp="bank.example", allow=[non_resident])
    assert status == ERR.NO_CREDENTIALS


def test_reset_only_within_10_seconds_of_power_up() -> None:
    key = new_key("ctap2.0")
    make(key, rk=True)
    key.clock.advance(10.5)
    assert status_of(key.ctap.reset) == ERR.NOT_ALLOWED
    assert len(key.auth.credentials()) == 1
    # Power-up reopens the window: replug...
    key.power_cycle()
    key.clock.advance(5)
    key.ctap.reset()
    assert key.auth.credentials() == []


def test_constructing_the_authenticator_is_a_power_up(tmp_path) -> None:
    state = tmp_path / "key.db"
    clock = FakeClock()
    first = Key(Authenticator("ctap2.1", state=state, clock=clock), clock)
    make(first, rk=True)
    clock.advance(60)
    assert status_of(first.ctap.reset) == ERR.NOT_ALLOWED
    first.auth.close()
    # A new process on the same state: the window is open again.
    second = Key(Authenticator(state=state, clock=clock), clock)
    assert len(second.auth.credentials()) == 1
    second.ctap.reset()
    assert second.auth.credentials() == []


@pytest.mark.parametrize(
    ("verdict", "status"),
    [(Verdict.DENIED, ERR.OPERATION_DENIED), (Verdict.TIMEOUT, ERR.USER_ACTION_TIMEOUT)],
)
def test_reset_needs_user_presence(verdict: Verdict, status: int) -> None:
    presence = ScriptedPresence()
    key = new_key("ctap2.1", presence=presence)
    non_resident = cred_id(make(key))
    presence.verdicts.append(verdict)
    assert status_of(key.ctap.reset) == status
    assert [r.purpose for r in presence.requests][-1] == "reset"
    # Nothing was wiped.
    assertion(key, allow=[non_resident])


def test_reset_wipes_pin_lockout_counters_and_slots() -> None:
    key = with_pin("ctap2.1")
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    resident = cred_id(make(key, token, rk=True))
    for _ in range(3):
        status_of(cp.get_pin_token, "0000")
    assert cp.get_pin_retries() == (5, True)

    key.ctap.reset()

    info = key.ctap.info
    assert info.options["clientPin"] is False
    assert info.remaining_disc_creds == 25
    assert key.client_pin().get_pin_retries() == (8, False)
    assert status_of(assertion, key, allow=[resident]) == ERR.NO_CREDENTIALS
    # A fresh PIN can be set at once; the old token is gone with the old state.
    key.client_pin().set_pin("5678")
    assert status_of(make, key, token) == ERR.PIN_AUTH_INVALID
    # Signature counters start again from zero for new credentials.
    cid = cred_id(make(key))
    assert assertion(key, allow=[cid]).auth_data.counter == 1


def test_reset_is_refused_on_a_denying_key_and_state_survives() -> None:
    key = new_key("ctap2.0", presence=FixedPresence(Verdict.DENIED))
    key.auth.presence = FixedPresence(Verdict.APPROVED)
    cid = cred_id(make(key))
    key.auth.presence = FixedPresence(Verdict.DENIED)
    for _ in range(3):
        assert status_of(key.ctap.reset) == ERR.OPERATION_DENIED
    key.auth.presence = FixedPresence(Verdict.APPROVED)
    assertion(key, allow=[cid])


@pytest.mark.parametrize(("seconds", "allowed"), [(9.999, True), (10.0, True), (10.001, False)])
def test_reset_window_boundary(seconds: float, allowed: bool) -> None:
    # §6.6: reset only "within 10 seconds" of power-up, 10.0 s itself included.
    key = new_key("ctap2.1")
    make(key, rk=True)
    key.clock.advance(seconds)
    if allowed:
        key.ctap.reset()
        assert key.auth.credentials() == []
    else:
        assert status_of(key.ctap.reset) == ERR.NOT_ALLOWED
        assert len(key.auth.credentials()) == 1
