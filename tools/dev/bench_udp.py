"""The UDP side of `make bench`: a lean CTAPHID client and the two servers softkey is compared
with (tools/dev/bench.py runs each server in a process of its own).

- ``LeanClient``: raw CTAPHID over UDP with pre-encoded requests; it reads the reports of the
  answer and checks the status byte, nothing else (no CBOR decoding, no python-fido2), so a
  round trip costs the client as little as Python allows.
- ``serve_reference``: the practical limit for a Python device, a single-threaded loop with
  blocking reads that reassembles a request, calls the same ``Authenticator.handle_cbor`` on an
  in-memory key and sends the answer. No worker thread, no timeouts, no keepalives, no
  presence policy, no state file: what softkey adds on top of this is what the ratio shows.
- ``serve_canned``: answers every CTAP2 command with a reply recorded beforehand, whatever
  the request says, so python-fido2 driven against it measures the client's own cost.

    python -m softkey.tools.dev.bench_udp reference --port PORT
    python -m softkey.tools.dev.bench_udp canned --port PORT --replies FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

REPORT = 64
INIT_DATA = REPORT - 7
CONT_DATA = REPORT - 5
BROADCAST = 0xFFFFFFFF
CMD_PING = 0x01
CMD_INIT = 0x06
CMD_CBOR = 0x10
CMD_KEEPALIVE = 0x3B
CMD_ERROR = 0x3F


def frame(cid: int, cmd: int, data: bytes) -> list[bytes]:
    """One CTAPHID message as 64-byte reports (init packet, then continuations)."""
    reports = [
        (struct.pack(">IBH", cid, 0x80 | cmd, len(data)) + data[:INIT_DATA]).ljust(REPORT, b"\0")
    ]
    seq, rest = 0, data[INIT_DATA:]
    while rest:
        reports.append((struct.pack(">IB", cid, seq) + rest[:CONT_DATA]).ljust(REPORT, b"\0"))
        seq, rest = seq + 1, rest[CONT_DATA:]
    return reports


class LeanClient:
    """A raw CTAPHID client on one channel (UDP keys accept any channel id without INIT)."""

    def __init__(self, port: int, host: str = "127.0.0.1", cid: int = 0x0B0E0C01) -> None:
        self.cid = cid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(30)
        self.sock.connect((host, port))

    def request(self, cmd: int, data: bytes) -> list[bytes]:
        """The reports of a request, encoded once and sent as often as wanted."""
        return frame(self.cid, cmd, data)

    def transact(self, reports: list[bytes]) -> bytes:
        """Send a request's reports; return the answer's payload (KEEPALIVEs skipped)."""
        send, recv = self.sock.send, self.sock.recv
        for report in reports:
            send(report)
        while True:
            first = recv(REPORT)
            if first[4] != 0x80 | CMD_KEEPALIVE:
                break
        length = (first[5] << 8) | first[6]
        data = first[7 : 7 + length]
        while len(data) < length:
            data += recv(REPORT)[5 : 5 + length - len(data)]
        if first[4] == 0x80 | CMD_ERROR:
            raise RuntimeError(f"CTAPHID error {data.hex()}")
        return data

    def cbor(self, reports: list[bytes]) -> bytes:
        """A CTAP2 exchange that must succeed: the response after its status byte."""
        answer = self.transact(reports)
        if answer[:1] != b"\0":
            raise RuntimeError(f"CTAP2 status {answer[:1].hex()}")
        return answer[1:]

    def close(self) -> None:
        self.sock.close()


def wait_for_init(port: int, timeout: float, poll: float = 0.002) -> bool:
    """Send broadcast INITs to ``port`` every ``poll`` s until one is answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(poll)
        nonce = os.urandom(8)
        packet = frame(BROADCAST, CMD_INIT, nonce)[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s.sendto(packet, ("127.0.0.1", port))
                data = s.recv(REPORT)
            except OSError:  # timeout, or ICMP port unreachable before the key binds
                continue
            if data[7:15] == nonce:
                return True
    return False


# -- servers -------------------------------------------------------------------------------


def _serve(port: int, answer: Callable[[int, bytes], bytes | None]) -> None:
    """A single-threaded CTAPHID loop with blocking reads: INIT and PING, and ``answer(cmd,
    payload)`` for the rest (None: CTAPHID_ERROR invalid command)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    partial: dict[object, tuple[int, int, int, bytearray]] = {}  # peer -> cid, cmd, len, data
    next_cid = 1
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        packet, peer = recvfrom(2048)
        if len(packet) < 7:
            continue
        cid = int.from_bytes(packet[:4], "big")
        if packet[4] & 0x80:
            cmd, length = packet[4] & 0x7F, (packet[5] << 8) | packet[6]
            data = bytearray(packet[7 : 7 + min(length, INIT_DATA)])
        elif peer in partial and partial[peer][0] == cid:
            _, cmd, length, data = partial[peer]
            data += packet[5 : 5 + min(CONT_DATA, length - len(data))]
        else:
            continue
        if len(data) < length:
            partial[peer] = (cid, cmd, length, data)
            continue
        partial.pop(peer, None)
        if cmd == CMD_INIT:
            new = cid
            if cid == BROADCAST:
                new, next_cid = next_cid, next_cid + 1
            reply: bytes | None = bytes(data[:8]) + struct.pack(">IBBBBB", new, 2, 0, 1, 0, 0x05)
        elif cmd == CMD_PING:
            reply = bytes(data)
        else:
            reply = answer(cmd, bytes(data))
        if reply is None:
            cmd, reply = CMD_ERROR, b"\x01"
        for report in frame(cid, cmd, reply):
            sendto(report, peer)


def serve_reference(port: int) -> None:
    from softkey.authenticator import Authenticator

    auth = Authenticator("ctap2.1")  # in memory; presence approves at once
    handle = auth.handle_cbor
    _serve(port, lambda cmd, data: handle(data) if cmd == CMD_CBOR else None)


def serve_canned(port: int, replies: dict[int, bytes]) -> None:
    def answer(cmd: int, data: bytes) -> bytes | None:
        if cmd != CMD_CBOR or not data:
            return None
        return replies.get(data[0], b"\x01")  # CTAP1_ERR_INVALID_COMMAND for the rest

    _serve(port, answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["reference", "canned"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replies", help="canned: JSON {command byte: reply hex}")
    args = parser.parse_args(argv)
    try:
        if args.mode == "reference":
            serve_reference(args.port)
        else:
            with open(args.replies) as f:
                replies = {int(k): bytes.fromhex(v) for k, v in json.load(f).items()}
            serve_canned(args.port, replies)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
