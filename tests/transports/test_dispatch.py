"""Where the CTAPHID driver runs a command, and that nothing polls (transports/server.py).

A command that cannot wait for a person runs inline in the transport's I/O loop; one that may
wait runs in the worker thread, so the loop still answers INIT and CANCEL meanwhile. Timeouts
are deadlines: with nothing scheduled, the key sleeps until the next report. Real sockets and
threads, short waits, nothing timed.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, AutoPresence, FakeClock, cbor
from softkey.transports.ctaphid import (
    DEFAULT_MSG_TIMEOUT,
    KEEPALIVE_INTERVAL,
    Command,
    CtapHidEngine,
    Message,
    Request,
    fragment,
)
from softkey.transports.presence import WaitingPresence
from softkey.transports.server import HidServer, never_waits
from softkey.transports.udp import UdpTransport

RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice"}
ES256 = [{"type": "public-key", "alg": -7}]


def _record_threads(auth: Authenticator) -> list[str]:
    """The name of the thread each handle_cbor call runs in."""
    seen: list[str] = []
    original = auth.handle_cbor

    def handle_cbor(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)

    auth.handle_cbor = handle_cbor  # type: ignore[method-assign]
    return seen


def _login(ctap: Ctap2, cred_id: bytes, **kwargs):  # type: ignore[no-untyped-def]
    return ctap.get_assertion(
        "example.com", os.urandom(32), [{"type": "public-key", "id": cred_id}], **kwargs
    )


def test_commands_that_cannot_wait_run_inline_in_the_io_loop(make_port) -> None:
    auth = Authenticator("ctap2.1")  # AutoPresence: decides at once
    threads = _record_threads(auth)
    port = make_port("udp", auth)
    ctap = Ctap2(port.open_device())
    made = ctap.make_credential(os.urandom(32), RP, USER, ES256)
    assert made.auth_data.credential_data is not None
    _login(ctap, made.auth_data.credential_data.credential_id)
    assert threads and set(threads) == {"softkey-udp"}  # serve_in_thread's thread
    assert port.server._worker is None  # never needed: no thread hand-off at all


def test_commands_that_may_wait_run_in_the_worker(make_port) -> None:
    presence = WaitingPresence(timeout=30)
    auth = Authenticator("ctap2.1", presence=presence)
    threads = _record_threads(auth)
    port = make_port("udp", auth)
    ctap = Ctap2(port.open_device())
    ctap.get_info()  # getInfo never waits: inline, even with this policy
    assert threads and set(threads) == {"softkey-udp"}
    threads.clear()
    toucher = threading.Thread(target=lambda: presence.touch(wait=10))
    toucher.start()
    ctap.make_credential(os.urandom(32), RP, USER, ES256)
    toucher.join(10)
    assert threads == ["softkey-ctaphid"]


def test_the_io_loop_never_waits_for_an_admin_call(make_port) -> None:
    """A request that would run inline while another thread holds the authenticator goes to
    the worker: INIT and PING are still answered, and the request completes later."""
    auth = Authenticator("ctap2.1")
    port = make_port("udp", auth)
    busy, other = port.raw(), port.raw()
    cid, other_cid = busy.init(), other.init()
    held = threading.Event()
    release = threading.Event()

    def admin() -> None:
        with port.server.auth_lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=admin)
    holder.start()
    assert held.wait(10)
    try:
        busy.send(cid, Command.CBOR, b"\x04")  # getInfo: would run inline
        assert other.init() != other_cid  # the loop still answers
        other.send(other_cid, Command.PING, b"still here")
        answer = other.read()
        assert answer.cmd == Command.ERROR or answer.data == b"still here"
    finally:
        release.set()
        holder.join(10)
    reply = busy.read()
    assert reply.cid == cid and reply.cmd == Command.CBOR and reply.data[:1] == b"\x00"


def test_a_cancel_reaches_a_request_waiting_in_the_worker(make_port) -> None:
    presence = WaitingPresence(timeout=30)
    port = make_port("udp", Authenticator("ctap2.1", presence=presence))
    ctap = Ctap2(port.open_device())
    cancel = threading.Event()

    def on_keepalive(status: STATUS) -> None:
        if status == STATUS.UPNEEDED:
            cancel.set()

    with pytest.raises(CtapError) as raised:
        ctap.make_credential(
            os.urandom(32), RP, USER, ES256, event=cancel, on_keepalive=on_keepalive
        )
    assert raised.value.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert presence.pending is None


# -- injected holds, carried out as deadlines by an inline (UDP) driver ----------------------


def test_a_delay_over_udp_answers_late_with_keepalives(make_port) -> None:
    auth = Authenticator("ctap2.1")
    port = make_port("udp", auth)
    ctap = Ctap2(port.open_device())
    made = ctap.make_credential(os.urandom(32), RP, USER, ES256)
    cred_id = made.auth_data.credential_data.credential_id
    auth.faults.add("delay", value=0.4)
    keepalives: list[STATUS] = []
    started = time.monotonic()
    _login(ctap, cred_id, on_keepalive=keepalives.append)
    assert time.monotonic() - started >= 0.4
    assert STATUS.PROCESSING in keepalives
    port.raw().sync()  # the loop has finished with the delayed answer
    assert port.server.due is None  # nothing left scheduled


def test_a_cancel_during_a_delay_over_udp_is_answered_at_once(make_port) -> None:
    auth = Authenticator("ctap2.1")
    port = make_port("udp", auth)
    ctap = Ctap2(port.open_device())
    made = ctap.make_credential(os.urandom(32), RP, USER, ES256)
    cred_id = made.auth_data.credential_data.credential_id
    auth.faults.add("delay", value=30)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(CtapError) as raised:
        _login(ctap, cred_id, event=cancel)
    assert raised.value.code == CtapError.ERR.KEEPALIVE_CANCEL
    assert _login(ctap, cred_id).credential["id"] == cred_id  # free again


def test_no_answer_over_udp_sends_nothing(make_port) -> None:
    auth = Authenticator("ctap2.1")
    port = make_port("udp", auth)
    host = port.raw()
    cid = host.init()
    make = b"\x01" + cbor.encode({1: bytes(32), 2: RP, 3: USER, 4: ES256, 7: {"rk": True}})
    auth.faults.add("no_answer")
    host.send(cid, Command.CBOR, make)
    host.sync()  # the INIT answer comes back; the makeCredential one never does
    assert auth.credentials() == []
    host.send(cid, Command.CBOR, make)
    answer = host.read(skip_keepalive=False)
    assert answer.cid == cid and answer.cmd == Command.CBOR and answer.data[:1] == b"\x00"


# -- nothing polls ---------------------------------------------------------------------------


def test_engine_deadlines() -> None:
    engine = CtapHidEngine(accept_any_channel=True)
    assert engine.next_deadline() is None
    engine.receive(fragment(7, Command.PING, bytes(200))[0], 10.0, "host")
    assert engine.next_deadline() == 10.0 + DEFAULT_MSG_TIMEOUT
    engine = CtapHidEngine(accept_any_channel=True)
    out = engine.receive(fragment(7, Command.CBOR, b"\x04")[0], 20.0, "host")
    assert out.request is not None
    assert engine.next_deadline() == 20.0 + KEEPALIVE_INTERVAL
    out.request.silent = True  # an injected no-answer: no keepalives to send
    assert engine.next_deadline() is None
    engine.complete(out.request, b"", 21.0)
    assert engine.next_deadline() is None


def test_an_idle_driver_has_nothing_scheduled(make_port) -> None:
    """timeout() None: the UDP loop sleeps in recvfrom(), the in-process ticker on its
    condition, until a report comes (no periodic wake-ups)."""
    for kind in ("udp", "inprocess"):
        port = make_port(kind, Authenticator("ctap2.1"))
        assert port.server.timeout() is None
        ctap = Ctap2(port.open_device())
        ctap.get_info()
        host = port.raw()
        cid = host.init()
        host.write(fragment(cid, Command.PING, bytes(200))[:1])  # half a message
        host.sync()
        assert port.server.timeout() is not None  # its timeout is scheduled
        assert port.server.timeout() <= DEFAULT_MSG_TIMEOUT + 0.01
        assert host.read() == Message(cid, Command.ERROR, b"\x05")  # ERR_MSG_TIMEOUT
        host.sync()  # the driver has finished the tick that sent it
        assert port.server.timeout() is None


def test_a_stalled_message_times_out_with_a_fake_clock_in_the_ticker() -> None:
    """With a clock that is not the system's, the ticker looks every tick_interval while
    something is scheduled (a test's clock jumps without telling anybody)."""
    clock = FakeClock()
    sent: list[tuple[bytes, object]] = []
    server = HidServer(
        Authenticator("ctap2.1"),
        lambda report, peer: sent.append((report, peer)),
        engine=CtapHidEngine(accept_any_channel=True),
        clock=clock,
        tick_interval=0.01,
    ).start()
    try:
        server.feed(fragment(7, Command.PING, bytes(200))[0], "host")
        clock.advance(DEFAULT_MSG_TIMEOUT + 0.1)
        for _ in range(500):
            if sent:
                break
            threading.Event().wait(0.01)
        assert [report[4:8] for report, _ in sent] == [bytes([0xBF, 0, 1, 0x05])]
        assert sent[0][1] == "host"
    finally:
        server.close()


def test_stop_wakes_a_loop_that_sleeps_without_timeout() -> None:
    auth = Authenticator("ctap2.1")
    transport = UdpTransport(auth, "127.0.0.1", 0)
    thread = transport.serve_in_thread()
    try:
        assert transport._serving.wait(10)
        # What a signal's C handler writes (signal.set_wakeup_fd): a wake-up, not a report.
        os.write(transport.wake_fd, b"\x0f")
        client = Ctap2(transport_device(transport))
        assert client.get_info().versions  # still serving, nothing answered to the waker
        transport.stop()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        transport.close()


def transport_device(transport: UdpTransport):  # type: ignore[no-untyped-def]
    from softkey.transports.udp import open_udp_device

    return open_udp_device(*transport.address, timeout=10)


def test_never_waits_knows_the_instant_policies() -> None:
    ga = Request(1, Command.CBOR, b"\x02\xa0", 0.0)
    info = Request(1, Command.CBOR, b"\x04", 0.0)
    assert never_waits(Authenticator("ctap2.1", presence=AutoPresence()), ga)
    waiting = Authenticator("ctap2.1", presence=WaitingPresence(timeout=1))
    assert not never_waits(waiting, ga)
    assert never_waits(waiting, info)  # getInfo asks nobody
    assert never_waits(waiting, Request(1, Command.WINK, b"", 0.0))
