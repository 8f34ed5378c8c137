"""Injected delay and no-answer over CTAPHID (transports/server.py carries them out).

Real CTAPHID reports through the threaded driver (``InProcessHid``, the same code UHID and UDP
run), a real clock and short waits: a delayed answer arrives late with KEEPALIVE(PROCESSING)
meanwhile; an unanswered request gets nothing at all, not even a keepalive, so the client's
read times out; the device is ready for the next request at once.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice
from fido2.hid.base import HidDescriptor

from softkey.authenticator import Authenticator
from softkey.transports.ctaphid import Command, CtapHidEngine, Request
from softkey.transports.inprocess import InProcessHid

RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice"}
ES256 = [{"type": "public-key", "alg": -7}]


@pytest.fixture
def port():
    hid = InProcessHid(Authenticator("ctap2.1"))
    yield hid
    hid.close()


def _credential(ctap: Ctap2) -> bytes:
    made = ctap.make_credential(os.urandom(32), RP, USER, ES256)
    assert made.auth_data.credential_data is not None
    return made.auth_data.credential_data.credential_id


def _login(ctap: Ctap2, cred_id: bytes, **kwargs):
    return ctap.get_assertion(
        "example.com", os.urandom(32), [{"type": "public-key", "id": cred_id}], **kwargs
    )


def test_no_answer_sends_nothing_and_the_device_is_free_again(port: InProcessHid) -> None:
    auth = port.server.authenticator
    ctap = Ctap2(port.open_device())
    cred_id = _credential(ctap)
    auth.faults.add("no_answer")
    connection = port.connect(timeout=0.6)
    descriptor = HidDescriptor("t", 0x1209, 0x5A5A, 64, 64, "t", None)
    silent = Ctap2(CtapHidDevice(descriptor, connection))
    keepalives: list[STATUS] = []
    before = auth.counter(cred_id)
    started = time.monotonic()
    with pytest.raises(OSError, match="no report"):
        _login(silent, cred_id, on_keepalive=keepalives.append)
    assert time.monotonic() - started >= 0.5
    assert keepalives == []  # not even KEEPALIVE: a keepalive would keep a client waiting
    assert connection.inbox.empty()
    assert auth.counter(cred_id) == before  # never processed
    assert auth.faults.records() == []
    # The next request, on any channel, is answered at once.
    assert _login(ctap, cred_id).credential["id"] == cred_id
    assert auth.counter(cred_id) == before + 1


def test_a_delay_answers_late_with_keepalives_meanwhile(port: InProcessHid) -> None:
    auth = port.server.authenticator
    ctap = Ctap2(port.open_device())
    cred_id = _credential(ctap)
    auth.faults.add("delay", value=0.4)
    keepalives: list[STATUS] = []
    started = time.monotonic()
    _login(ctap, cred_id, on_keepalive=keepalives.append)
    assert time.monotonic() - started >= 0.4
    assert STATUS.PROCESSING in keepalives
    started = time.monotonic()
    _login(ctap, cred_id)
    assert time.monotonic() - started < 0.4


def test_a_cancel_during_a_delay_is_answered_at_once(port: InProcessHid) -> None:
    auth = port.server.authenticator
    ctap = Ctap2(port.open_device())
    cred_id = _credential(ctap)
    auth.faults.add("delay", value=30)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CtapError) as raised:
        _login(ctap, cred_id, event=cancel)
    assert raised.value.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert time.monotonic() - started < 10


def test_the_engine_sends_no_keepalive_for_a_silent_request() -> None:
    engine = CtapHidEngine()
    request = Request(0x01020304, Command.CBOR, b"\x04", started=0.0)
    engine.request = request
    assert engine.tick(1.0)  # a running request gets its KEEPALIVE
    request.silent = True
    assert engine.tick(2.0) == []
