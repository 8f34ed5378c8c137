"""Pulling the plug during a PIN check must not give a free guess.

CTAP 2.1 §6.5.5.5 (getPinToken) and §6.5.5.6 ff.: the authenticator decrements pinRetries
*before* it compares the PIN hash. A real process (file-backed state) is SIGKILLed at the moment
it compares: its retry must already be spent on disk, as python-fido2 then reads it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from fido2.ctap2 import ClientPin, Ctap2

from softkey.authenticator import Authenticator
from softkey.transports.inprocess import VirtualCtapDevice

REPO = Path(__file__).resolve().parents[2]

# The child asks for a PIN token with a wrong PIN and dies (SIGKILL, no cleanup) the instant
# the PIN hash is compared: pin.py's comparison goes through its module's `hmac`.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, types
    from fido2.ctap2 import ClientPin, Ctap2
    from softkey.authenticator import Authenticator
    from softkey.authenticator import pin as pin_module
    from softkey.transports.inprocess import VirtualCtapDevice

    def die(*_args):
        os.kill(os.getpid(), signal.SIGKILL)

    pin_module.hmac = types.SimpleNamespace(compare_digest=die)
    auth = Authenticator(None, sys.argv[1])
    ClientPin(Ctap2(VirtualCtapDevice(auth))).get_pin_token("wrong-pin")
    print("the PIN was never compared")
    """
)


def _retries_over_ctap(state: Path) -> int:
    with Authenticator(None, state) as auth:
        retries, _ = ClientPin(Ctap2(VirtualCtapDevice(auth))).get_pin_retries()
        return retries


def test_sigkill_during_the_pin_comparison_still_costs_the_retry(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state) as auth:
        ClientPin(Ctap2(VirtualCtapDevice(auth))).set_pin("1234")
    assert _retries_over_ctap(state) == 8

    for expected in (7, 6):
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(state)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        assert _retries_over_ctap(state) == expected

    # The right PIN still works afterwards, and restores the counter (§6.5.5.5).
    with Authenticator(None, state) as auth:
        ClientPin(Ctap2(VirtualCtapDevice(auth))).get_pin_token("1234")
    assert _retries_over_ctap(state) == 8
