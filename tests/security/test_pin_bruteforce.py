"""A PIN brute force against a running key (`softkey run`, python-fido2 over UDP) hits the
lockout exactly: 8 wrong guesses and the PIN is blocked for good, even for the right PIN,
even after the key restarts; 3 wrong guesses in a row need a power cycle first, and those
refusals cost no retry (CTAP 2.1 §6.5.5.5: pinRetries 8, 3 consecutive mismatches)."""

from __future__ import annotations

from pathlib import Path

from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2

from softkey.transports.udp import open_udp_device

PIN = "7391"
ERR = CtapError.ERR


def _guess(client_pin: ClientPin, pin: str) -> int:
    try:
        client_pin.get_pin_token(pin)
    except CtapError as exc:
        return int(exc.code)
    return 0


def test_brute_force_hits_the_lockout_exactly(key_process, tmp_path: Path) -> None:
    key = key_process(tmp_path, "--presence", "auto", "--profile", "ctap2.1")
    assert key.cli("pin", "set", env={"SOFTKEY_NEW_PIN": PIN}).returncode == 0
    device = open_udp_device("127.0.0.1", key.port, timeout=30)
    client_pin = ClientPin(Ctap2(device))
    assert client_pin.get_pin_retries()[0] == 8

    # The attacker tries every 4-digit PIN in order (7391 comes much later), power cycling
    # the key (the UDP magic datagram) whenever it demands it.
    outcomes: list[int] = []
    for candidate in (f"{n:04d}" for n in range(10_000)):
        status = _guess(client_pin, candidate)
        assert status != 0, f"the brute force found the PIN after {len(outcomes)} guesses"
        outcomes.append(status)
        assert client_pin.get_pin_retries()[0] == 8 - len(outcomes)  # every guess counted
        if status == ERR.PIN_BLOCKED:
            break
        if status == ERR.PIN_AUTH_BLOCKED:
            # Until a power cycle nothing is checked, not even the right PIN, and no retry
            # is spent.
            assert _guess(client_pin, PIN) == ERR.PIN_AUTH_BLOCKED
            assert client_pin.get_pin_retries()[0] == 8 - len(outcomes)
            device._connection.power_cycle()  # type: ignore[attr-defined]
            client_pin = ClientPin(Ctap2(device))
    # Exactly 8 wrong guesses; every 3rd in a row says "power cycle me".
    assert outcomes == [
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_BLOCKED,
    ]  # fmt: skip
    assert client_pin.get_pin_retries()[0] == 0

    # Blocked means blocked: the right PIN too, before and after a restart of the key.
    assert _guess(client_pin, PIN) == ERR.PIN_BLOCKED
    device.close()
    key.stop()
    again = key_process(tmp_path, "--presence", "auto")
    device = open_udp_device("127.0.0.1", again.port, timeout=30)
    client_pin = ClientPin(Ctap2(device))
    assert client_pin.get_pin_retries()[0] == 0
    assert _guess(client_pin, PIN) == ERR.PIN_BLOCKED
    status = again.cli("pin", "status", "--json")
    assert status.returncode == 0 and b'"retries": 0' in status.stdout
    device.close()
