"""`softkey run --transport uhid` end to end, with a socketpair standing in for /dev/uhid.

The real kernel path is proven in a VM (tools/vm); here the command's own wiring is checked:
UHID_CREATE2 with the key's identity, CTAPHID through the event loop, the control socket's
view of the device, replug as DESTROY + CREATE2, and a clean exit.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from softkey.tools import paths
from softkey.tools.cli import cli
from softkey.tools.run import uhid_uniq
from softkey.transports import control, uhid


class Kernel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(20)

    def read_event(self) -> tuple[uhid.UhidEvent, bytes]:
        raw = self.sock.recv(8192)
        assert len(raw) == uhid.EVENT_SIZE
        return uhid.decode_event(raw), raw


class HostConnection(CtapHidConnection):
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def write_packet(self, data: bytes) -> None:
        self.kernel.sock.send(uhid.encode_output(b"\0" + bytes(data)))

    def read_packet(self) -> bytes:
        while True:
            event, _ = self.kernel.read_event()
            if event.type == uhid.EventType.INPUT2:
                return event.data

    def close(self) -> None:
        return None


def test_softkey_run_uhid_through_a_fake_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = ours.detach()  # `softkey run` owns and closes it, as it would /dev/uhid
    monkeypatch.setattr(uhid, "open_uhid", lambda path: fd)
    state = tmp_path / "k.sqlite3"
    result: dict[str, Any] = {}

    def run() -> None:
        result["cli"] = CliRunner().invoke(
            cli,
            [
                "run",
                "--state",
                str(state),
                "--presence",
                "auto",
                "--profile",
                "nitrokey-3",
                "--vendor-id",
                "1209",
                "--product-id",
                "beef",
            ],
            catch_exceptions=False,
        )

    runner = threading.Thread(target=run)
    runner.start()
    kernel = Kernel(theirs)
    try:
        created, raw = kernel.read_event()
        assert created.type == uhid.EventType.CREATE2
        assert raw[4 : 4 + 19] == b"softkey nitrokey-3\0"
        uniq = uhid_uniq(state)
        assert raw[196 : 196 + len(uniq) + 1] == uniq.encode() + b"\0"
        assert struct.unpack_from("=HHII", raw, 260) == (34, 0x03, 0x1209, 0xBEEF)
        theirs.send(uhid.encode_start())
        theirs.send(uhid.encode_simple(uhid.EventType.OPEN))

        sock = paths.control_socket_path(state)
        pause = threading.Event()
        status = None
        for _ in range(400):
            try:
                status = control.call(sock, "status")
                break
            except control.ControlError:
                pause.wait(0.05)
        assert status is not None and status["transport"] == "uhid"
        assert status["uhid"]["vendor_id"] == "1209" and status["uhid"]["product_id"] == "beef"
        assert status["uhid"]["uniq"] == uniq
        assert status["profile"] == "nitrokey-3"

        descriptor = HidDescriptor("/dev/hidraw-fake", 0x1209, 0xBEEF, 64, 64, "softkey", None)
        ctap = Ctap2(CtapHidDevice(descriptor, HostConnection(kernel)))
        assert ctap.get_info().versions[-1] == "FIDO_2_1"
        ctap.make_credential(
            os.urandom(32),
            {"id": "example.com"},
            {"id": b"u", "name": "u"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
        assert control.call(sock, "status")["slots"]["used"] == 1

        assert control.call(sock, "replug")["ok"]
        assert kernel.read_event()[0].type == uhid.EventType.DESTROY
        assert kernel.read_event()[0].type == uhid.EventType.CREATE2
    finally:
        theirs.close()  # the "kernel" goes away: serve() sees EOF and `softkey run` returns
        runner.join(20)
    assert not runner.is_alive()
    outcome = result["cli"]
    assert outcome.exit_code == 0, outcome.output
    assert "plugged in via UHID as 'softkey nitrokey-3' (1209:beef)" in outcome.output
    assert "unplugged" in outcome.output
    assert not paths.control_socket_path(state).exists()
