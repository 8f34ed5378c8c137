"""`make bench`: how fast softkey is, as ratios to floors measured in the same run.

Each row is the median of repeated runs. Floors use `cryptography` directly, so a ratio says
how much softkey's own work (CBOR, SQLite, framing, python-fido2 on the client side) adds to
the unavoidable cryptography. Results go to stdout and, with --write, to docs/benchmarks.md.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from authenticator import Authenticator
from authenticator.cbor import encode

ROOT = Path(__file__).resolve().parents[1]
ES256 = [{"type": "public-key", "alg": -7}]


@dataclass
class Row:
    name: str
    median_s: float | None
    unit: str = "op"
    floor: str | None = None
    ratio: float | None = None
    note: str = ""

    def rate(self) -> str:
        if self.median_s is None:
            return "n/a"
        if self.unit == "op":
            return f"{1 / self.median_s:,.0f} ops/s"
        return f"{self.median_s * 1000:,.1f} ms"


def median_time(fn: Callable[[], object], repeat: int, inner: int = 1) -> float:
    """Median seconds per call over `repeat` samples of `inner` calls each."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


# -- floors ---------------------------------------------------------------------------------


def floor_make_credential() -> None:
    """P-256 keygen + ECDSA sign + AES-CTR/HMAC wrap: what any makeCredential must do."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    enc = Cipher(algorithms.AES(b"k" * 16), modes.CTR(os.urandom(16))).encryptor()
    ct = enc.update(raw + b"\0" * 38) + enc.finalize()
    hmac.new(b"m" * 32, ct, hashlib.sha256).digest()
    key.sign(b"a" * 37 + b"c" * 32, ec.ECDSA(hashes.SHA256()))


_FLOOR_CT = os.urandom(70)


def floor_get_assertion() -> None:
    """HMAC check + AES-CTR unwrap + load key + ECDSA sign: what any getAssertion must do."""
    hmac.compare_digest(hmac.new(b"m" * 32, _FLOOR_CT, hashlib.sha256).digest()[:16], b"x" * 16)
    dec = Cipher(algorithms.AES(b"k" * 16), modes.CTR(b"\0" * 16)).decryptor()
    dec.update(_FLOOR_CT) + dec.finalize()
    key = ec.derive_private_key(12345678901234567890, ec.SECP256R1())
    key.sign(b"a" * 37 + b"c" * 32, ec.ECDSA(hashes.SHA256()))


# -- requests -------------------------------------------------------------------------------


def mc_request(user: bytes, rk: bool) -> bytes:
    body: dict = {1: b"\0" * 32, 2: {"id": "bench.example"}, 3: {"id": user}, 4: ES256}
    if rk:
        body[7] = {"rk": True}
    return b"\x01" + encode(body)


def ga_request(cred_id: bytes) -> bytes:
    return b"\x02" + encode(
        {1: "bench.example", 2: b"\0" * 32, 3: [{"type": "public-key", "id": cred_id}]}
    )


def _cred_id(response: bytes) -> bytes:
    from fido2 import cbor as fcbor
    from fido2.ctap2 import AttestationResponse

    att = AttestationResponse.from_dict(fcbor.decode(response[1:]))
    assert att.auth_data.credential_data is not None
    return att.auth_data.credential_data.credential_id


def bench_in_process(repeat: int) -> list[Row]:
    rows = []
    floor_mc = median_time(floor_make_credential, repeat, 20)
    floor_ga = median_time(floor_get_assertion, repeat, 20)
    rows.append(Row("crypto floor: makeCredential primitives", floor_mc, note="keygen+sign+wrap"))
    rows.append(Row("crypto floor: getAssertion primitives", floor_ga, note="unwrap+sign"))

    auth = Authenticator("unlimited-rk")
    counter = iter(range(10**9))
    mc_nr = median_time(
        lambda: auth.handle_cbor(mc_request(b"u%d" % next(counter), False)), repeat, 20
    )
    rows.append(
        Row("handle_cbor makeCredential (non-resident)", mc_nr, floor="mc", ratio=mc_nr / floor_mc)
    )
    mc_rk = median_time(
        lambda: auth.handle_cbor(mc_request(b"r%d" % next(counter), True)), repeat, 20
    )
    rows.append(
        Row(
            "handle_cbor makeCredential (resident, in-memory)",
            mc_rk,
            floor="mc",
            ratio=mc_rk / floor_mc,
        )
    )
    cred = _cred_id(auth.handle_cbor(mc_request(b"ga", False)))
    req = ga_request(cred)
    ga = median_time(lambda: auth.handle_cbor(req), repeat, 20)
    rows.append(Row("handle_cbor getAssertion", ga, floor="ga", ratio=ga / floor_ga))

    with tempfile.TemporaryDirectory() as tmp:
        durable = Authenticator("unlimited-rk", Path(tmp) / "bench.sqlite3")
        mc_file = median_time(
            lambda: durable.handle_cbor(mc_request(b"f%d" % next(counter), True)), repeat, 10
        )
        rows.append(
            Row(
                "handle_cbor makeCredential (resident, file, fsync)",
                mc_file,
                floor="mc",
                ratio=mc_file / floor_mc,
            )
        )
        durable.close()

    from fido2.ctap2 import Ctap2

    from transports.inprocess import VirtualCtapDevice

    ctap = Ctap2(VirtualCtapDevice(auth))
    mc_f2 = median_time(
        lambda: ctap.make_credential(
            b"\0" * 32, {"id": "bench.example"}, {"id": b"c%d" % next(counter)}, ES256
        ),
        repeat,
        20,
    )
    rows.append(
        Row(
            "python-fido2 Ctap2.make_credential (in-process)",
            mc_f2,
            floor="mc",
            ratio=mc_f2 / floor_mc,
        )
    )
    allow = [{"type": "public-key", "id": cred}]
    ga_f2 = median_time(lambda: ctap.get_assertion("bench.example", b"\0" * 32, allow), repeat, 20)
    rows.append(
        Row(
            "python-fido2 Ctap2.get_assertion (in-process)",
            ga_f2,
            floor="ga",
            ratio=ga_f2 / floor_ga,
        )
    )
    return rows


# -- over UDP ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _softkey() -> list[str]:
    exe = shutil.which("softkey", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "tools.cli"]


def _init_reply(port: int, timeout: float) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.02)
        nonce = os.urandom(8)
        packet = b"\xff\xff\xff\xff\x86\x00\x08" + nonce
        packet += b"\0" * (64 - len(packet))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(packet, ("127.0.0.1", port))
            try:
                data = s.recv(64)
            except (TimeoutError, ConnectionRefusedError, OSError):
                continue
            if data[7:15] == nonce:
                return True
    return False


def start_udp_key(state: Path, profile: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *_softkey(),
            "run",
            "--transport",
            "udp",
            "--port",
            str(port),
            "--state",
            str(state),
            "--profile",
            profile,
            "--presence",
            "auto",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_cold_start(repeat: int) -> Row:
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            port = _free_port()
            start = time.perf_counter()
            proc = start_udp_key(Path(tmp) / f"cold{i}.sqlite3", "ctap2.1", port)
            try:
                if not _init_reply(port, 20):
                    return Row(
                        "cold start: softkey run --transport udp -> INIT reply",
                        None,
                        note="no INIT reply within 20 s",
                    )
                samples.append(time.perf_counter() - start)
            finally:
                proc.terminate()
                proc.wait(10)
    return Row(
        "cold start: softkey run --transport udp -> INIT reply",
        statistics.median(samples),
        unit="ms",
        note="target <= 250 ms",
    )


def bench_udp(repeat: int, floor_mc: float, floor_ga: float) -> list[Row]:
    try:
        from transports.udp import UdpCtapHidConnection  # type: ignore[attr-defined]
    except ImportError:
        UdpCtapHidConnection = None  # noqa: N806
    if UdpCtapHidConnection is None:
        return [
            Row(
                "CTAPHID over UDP (python-fido2)",
                None,
                note="transports.udp.UdpCtapHidConnection missing",
            )
        ]
    from fido2.ctap2 import Ctap2
    from fido2.hid import CtapHidDevice

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = start_udp_key(Path(tmp) / "udp.sqlite3", "ctap2.1", port)
        try:
            if not _init_reply(port, 20):
                return [Row("CTAPHID over UDP (python-fido2)", None, note="key did not start")]
            dev = CtapHidDevice.__new__(CtapHidDevice)
            conn = UdpCtapHidConnection(("127.0.0.1", port))
            dev = CtapHidDevice(conn.descriptor, conn)
            ctap = Ctap2(dev)
            counter = iter(range(10**9))
            mc = median_time(
                lambda: ctap.make_credential(
                    b"\0" * 32, {"id": "bench.example"}, {"id": b"u%d" % next(counter)}, ES256
                ),
                repeat,
                10,
            )
            rows.append(
                Row(
                    "UDP makeCredential round trip (python-fido2)",
                    mc,
                    floor="mc",
                    ratio=mc / floor_mc,
                )
            )
            att = ctap.make_credential(b"\0" * 32, {"id": "bench.example"}, {"id": b"g"}, ES256)
            assert att.auth_data.credential_data is not None
            allow = [{"type": "public-key", "id": att.auth_data.credential_data.credential_id}]
            ga = median_time(
                lambda: ctap.get_assertion("bench.example", b"\0" * 32, allow), repeat, 10
            )
            rows.append(
                Row(
                    "UDP getAssertion round trip (python-fido2)",
                    ga,
                    floor="ga",
                    ratio=ga / floor_ga,
                )
            )
            ping = median_time(lambda: dev.ping(b"x" * 1024), repeat, 20)
            rows.append(Row("UDP CTAPHID PING 1024 bytes", ping))
            dev.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


# -- scale ------------------------------------------------------------------------------------


def bench_fill(counts: tuple[int, ...]) -> list[Row]:
    """Resident credentials into a durable file through the same makeCredential logic."""
    rows = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            auth = Authenticator("unlimited-rk", Path(tmp) / "fill.sqlite3")
            start = time.perf_counter()
            for i in range(n):
                response = auth.handle_cbor(mc_request(b"user%d" % i, True))
                assert response[0] == 0, response
            per = (time.perf_counter() - start) / n
            auth.close()
        rows.append(
            Row(f"fill {n:,} resident credentials (file, durable): per credential", per, unit="ms")
        )
    return rows


def bench_enumerate(counts: tuple[int, ...]) -> list[Row]:
    """Enumerate resident credentials through credential management (python-fido2)."""
    rows = []
    try:
        from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2

        from transports.inprocess import VirtualCtapDevice
    except ImportError as exc:  # pragma: no cover
        return [Row("enumerate via credential management", None, note=str(exc))]
    for n in counts:
        auth = Authenticator("unlimited-rk")
        for i in range(n):
            auth.handle_cbor(mc_request(b"user%d" % i, True))
        ctap = Ctap2(VirtualCtapDevice(auth))
        if not ctap.info.options.get("credMgmt"):
            return [
                Row("enumerate via credential management", None, note="profile has no credMgmt yet")
            ]
        try:
            pin = ClientPin(ctap)
            pin.set_pin("12345678")
            token = pin.get_pin_token("12345678", ClientPin.PERMISSION.CREDENTIAL_MGMT)
            credman = CredentialManagement(ctap, pin.protocol, token)
            start = time.perf_counter()
            creds = credman.enumerate_creds(hashlib.sha256(b"bench.example").digest())
            per = (time.perf_counter() - start) / n
        except Exception as exc:  # noqa: BLE001 - a bench row reports, it does not crash
            return [Row("enumerate via credential management", None, note=repr(exc))]
        assert len(creds) == n
        rows.append(
            Row(f"enumerate {n:,} resident credentials (credMgmt): per credential", per, unit="ms")
        )
    return rows


def bench_rss(n: int) -> Row:
    """Peak RSS of a process holding a key with `n` resident credentials, serving a request."""
    code = (
        "import resource, sys\n"
        "from authenticator import Authenticator\n"
        "from tools.bench import mc_request\n"
        f"auth = Authenticator('unlimited-rk', sys.argv[1])\n"
        f"for i in range({n}):\n"
        "    assert auth.handle_cbor(mc_request(b'user%d' % i, True))[0] == 0\n"
        "auth.handle_cbor(b'\\x02' + __import__('authenticator.cbor').cbor.encode("
        "{1: 'bench.example', 2: b'\\0' * 32}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, str(Path(tmp) / "rss.sqlite3")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    if out.returncode != 0:
        return Row(f"peak RSS with {n:,} resident credentials", None, note=out.stderr[-200:])
    kib = int(out.stdout.strip().splitlines()[-1])
    row = Row(f"peak RSS with {n:,} resident credentials", None, note=f"{kib / 1024:.1f} MiB")
    return row


def render(rows: list[Row]) -> str:
    lines = [
        "| benchmark | median | rate | ratio to floor | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        median = "–" if r.median_s is None else f"{r.median_s * 1000:.3f} ms"
        ratio = f"{r.ratio:.2f}× {r.floor} floor" if r.ratio is not None else ""
        rate = r.rate() if r.median_s is not None else ""
        lines.append(f"| {r.name} | {median} | {rate} | {ratio} | {r.note} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="samples per row (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    big = 1_000 if args.quick else 10_000

    rows = bench_in_process(args.repeat)
    floor_mc, floor_ga = rows[0].median_s or 1.0, rows[1].median_s or 1.0
    rows += bench_udp(args.repeat, floor_mc, floor_ga)
    rows.append(bench_cold_start(max(3, args.repeat // 2)))
    rows += bench_fill((100, 1_000))
    rows += bench_enumerate((100, big))
    rows.append(bench_rss(big))

    table = render(rows)
    print(f"softkey benchmarks — {machine()}\n")
    print(table)
    if args.write:
        doc = ROOT / "docs" / "benchmarks.md"
        doc.write_text(
            "# Benchmarks\n\n"
            "Produced by `make bench` (tools/bench.py). Each row is the median of repeated runs;\n"
            "ratios compare with floors measured in the same run using `cryptography`\n"
            "directly (P-256 keygen + sign + wrap for makeCredential, unwrap + sign for\n"
            "getAssertion). Targets: in-process handling ≤ 3× the floor; fill and enumeration\n"
            "linear in N (compare the per-credential cost at the two sizes); cold start\n"
            "≤ 250 ms.\n\n"
            f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.\n\n"
            f"{table}\n"
        )
        print(f"\nwrote {doc.relative_to(ROOT)}")
    _ = resource  # resource is used by the RSS child; keep the import visible here
    return 0


if __name__ == "__main__":
    sys.exit(main())
