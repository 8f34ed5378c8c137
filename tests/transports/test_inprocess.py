"""VirtualCtapDevice's keepalive and cancel path, as python-fido2 uses it: ``Ctap2`` calls with
``event`` (set to cancel) and ``on_keepalive`` (hears UPNEEDED once per run of equal statuses)
while the key waits for a touch."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.inprocess import VirtualCtapDevice
from softkey.transports.presence import WaitingPresence

RP = {"id": "example.com"}
USER = {"id": b"alice"}
ES256 = [{"type": "public-key", "alg": -7}]


class Registration:
    """``Ctap2.make_credential`` in a thread (as a client would block on the touch)."""

    def __init__(self, ctap: Ctap2, event: threading.Event) -> None:
        self.statuses: list[STATUS] = []
        self.heard = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

        def on_keepalive(status: STATUS) -> None:
            self.statuses.append(status)
            self.heard.set()

        def run() -> None:
            try:
                self.result = ctap.make_credential(
                    os.urandom(32), RP, USER, ES256, event=event, on_keepalive=on_keepalive
                )
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def waiting() -> tuple[Ctap2, WaitingPresence]:
    presence = WaitingPresence(timeout=30, clock=FakeClock(), poll_interval=0.01)
    auth = Authenticator("ctap2.1", presence=presence)
    return Ctap2(VirtualCtapDevice(auth)), presence


def test_keepalive_reaches_the_client_once_then_a_touch_completes(waiting) -> None:
    ctap, presence = waiting
    call = Registration(ctap, threading.Event())
    assert call.heard.wait(10)
    assert presence.wait_for_request(10).purpose == "makeCredential"
    threading.Event().wait(0.1)  # let the key poll (and send UPNEEDED) a few more times
    assert presence.touch() is not None
    call.join()
    assert call.error is None
    assert call.result.auth_data.is_user_present()
    # The key repeats UPNEEDED every poll; python-fido2's contract is one report per run.
    assert call.statuses == [STATUS.UPNEEDED]


def test_setting_the_event_cancels_the_wait(waiting) -> None:
    ctap, presence = waiting
    cancel = threading.Event()
    call = Registration(ctap, cancel)
    assert call.heard.wait(10)
    cancel.set()
    call.join()
    assert isinstance(call.error, CtapError)
    assert call.error.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert presence.pending is None


def test_without_callbacks_the_call_still_waits_and_completes(waiting) -> None:
    ctap, presence = waiting
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(ctap.make_credential(os.urandom(32), RP, USER, ES256))
    )
    thread.start()
    assert presence.wait_for_request(10) is not None
    presence.touch()
    thread.join(10)
    assert result and result[0].auth_data.is_user_present()
