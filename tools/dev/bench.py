"""`make bench`: how fast softkey is, as ratios to floors measured in the same run.

Each timed row is the median of repeated samples. Floors use `cryptography` directly, so a
ratio says how much softkey's own work (CBOR, SQLite, framing, python-fido2 on the client
side) adds to the unavoidable cryptography; each ratio pairs its samples with floor samples
taken in alternation, so a CPU that speeds up or slows down mid-run moves both alike.
Scale rows run the real `softkey` executable (fill, cold start, a running key's memory).
Results go to stdout and, with --write, to docs/benchmarks.md. Speed is measured here,
never asserted in tests.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import hmac
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from softkey.authenticator import Authenticator
from softkey.authenticator.cbor import encode

if TYPE_CHECKING:
    from fido2.ctap2 import Ctap2

ROOT = Path(__file__).resolve().parents[2]
ES256: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
BENCH_RP = "bench.example"
FILL_RP = "fill.softkey.test"  # `softkey fill`'s default RP
BENCH_PIN = "12345678"

# Targets from the issue (ratios and limits, reported, never asserted).
MAX_FLOOR_RATIO = 3.0
MAX_COLD_START_S = 0.250
MAX_LINEARITY_DRIFT = 1.5  # per-credential cost at N=10,000 within 1.5x of N=100


@dataclass
class Row:
    name: str
    seconds: float | None = None  # per operation (or per credential); None: not a timing
    result: str | None = None  # shown instead of the timing (e.g. memory)
    ratio: float | None = None
    ratio_to: str = ""  # what the ratio compares with ("mc floor", "N=100")
    note: str = ""
    per_op: bool = True  # show ops/s next to the time
    size: int | None = None  # N, for the scale rows

    def shown(self) -> str:
        if self.result is not None:
            return self.result
        if self.seconds is None:
            return "n/a"
        ms = self.seconds * 1000
        text = f"{ms:,.3f} ms" if ms < 10 else f"{ms:,.1f} ms"
        if self.per_op:
            text += f" ({1 / self.seconds:,.0f}/s)"
        return text


def _batch(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def median_time(fn: Callable[[], object], repeat: int, inner: int = 1) -> float:
    """Median seconds per call over ``repeat`` samples of ``inner`` calls each."""
    return statistics.median(_batch(fn, inner) for _ in range(repeat))


def paired(
    floor: Callable[[], object], fn: Callable[[], object], repeat: int, inner: int
) -> tuple[float, float]:
    """(floor, subject) medians from alternating samples."""
    floors, subjects = [], []
    for _ in range(repeat):
        floors.append(_batch(floor, inner))
        subjects.append(_batch(fn, inner))
    return statistics.median(floors), statistics.median(subjects)


# -- floors ---------------------------------------------------------------------------------

_MASTER = os.urandom(32)


def floor_make_credential() -> None:
    """P-256 keygen + key export + AES-CTR/HMAC wrap + one ECDSA signature (attestation):
    what any makeCredential must do."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    enc = Cipher(algorithms.AES(_MASTER[:16]), modes.CTR(os.urandom(16))).encryptor()
    ct = enc.update(raw + b"\0" * 38) + enc.finalize()
    hmac.new(_MASTER, ct, hashlib.sha256).digest()
    key.sign(b"a" * 37 + b"c" * 32, ec.ECDSA(hashes.SHA256()))


_FLOOR_CT = os.urandom(70)


def floor_get_assertion() -> None:
    """HMAC check + AES-CTR unwrap + load the key + ECDSA sign: what any getAssertion must do."""
    hmac.compare_digest(hmac.new(_MASTER, _FLOOR_CT, hashlib.sha256).digest()[:16], b"x" * 16)
    dec = Cipher(algorithms.AES(_MASTER[:16]), modes.CTR(b"\0" * 16)).decryptor()
    dec.update(_FLOOR_CT) + dec.finalize()
    key = ec.derive_private_key(12345678901234567890, ec.SECP256R1())
    key.sign(b"a" * 37 + b"c" * 32, ec.ECDSA(hashes.SHA256()))


# -- requests -------------------------------------------------------------------------------


def mc_request(user: bytes, rk: bool, rp: str = BENCH_RP) -> bytes:
    body: dict = {1: b"\0" * 32, 2: {"id": rp}, 3: {"id": user}, 4: ES256}
    if rk:
        body[7] = {"rk": True}
    return b"\x01" + encode(body)


def ga_request(cred_id: bytes | None, rp: str = BENCH_RP) -> bytes:
    body: dict = {1: rp, 2: b"\0" * 32}
    if cred_id is not None:
        body[3] = [{"type": "public-key", "id": cred_id}]
    return b"\x02" + encode(body)


def _cred_id(response: bytes) -> bytes:
    from fido2 import cbor as fcbor
    from fido2.ctap2 import AttestationResponse

    assert response[:1] == b"\0", f"makeCredential failed with status {response[0]:#04x}"
    decoded: Any = fcbor.decode(response[1:])
    att = AttestationResponse.from_dict(decoded)
    assert att.auth_data.credential_data is not None
    return att.auth_data.credential_data.credential_id


def _fresh_requests(rk: bool, count: int, tag: bytes) -> Iterator[bytes]:
    """Prebuilt makeCredential requests (building them is not the device's work)."""
    return iter([mc_request(tag + b"%d" % i, rk) for i in range(count)])


def _ratio_row(name: str, floor: float, subject: float, which: str, note: str = "") -> Row:
    return Row(name, subject, ratio=subject / floor, ratio_to=f"{which} floor", note=note)


def ctap2_rows(
    ctap: Ctap2, mc_label: tuple[str, str], ga_label: tuple[str, str], repeat: int, inner: int
) -> list[Row]:
    """makeCredential and getAssertion through a python-fido2 client, against the floors."""
    users = iter([{"id": b"c%d" % i} for i in range(repeat * inner * 2 + 2)])
    rp = {"id": BENCH_RP}
    f, s = paired(
        floor_make_credential,
        lambda: ctap.make_credential(b"\0" * 32, rp, next(users), ES256),
        repeat,
        inner,
    )
    rows = [_ratio_row(mc_label[0], f, s, "mc", mc_label[1])]
    cred = ctap.make_credential(b"\0" * 32, rp, {"id": b"g"}, ES256)
    assert cred.auth_data.credential_data is not None
    allow: list[Mapping[str, Any]] = [
        {"type": "public-key", "id": cred.auth_data.credential_data.credential_id}
    ]
    f, s = paired(
        floor_get_assertion,
        lambda: ctap.get_assertion(BENCH_RP, b"\0" * 32, allow),
        repeat,
        inner,
    )
    rows.append(_ratio_row(ga_label[0], f, s, "ga", ga_label[1]))
    return rows


def bench_in_process(repeat: int, inner: int) -> list[Row]:
    floor_mc = median_time(floor_make_credential, repeat, inner)
    floor_ga = median_time(floor_get_assertion, repeat, inner)
    rows = [
        Row("crypto floor: makeCredential primitives", floor_mc, note="keygen+wrap+sign"),
        Row("crypto floor: getAssertion primitives", floor_ga, note="unwrap+load+sign"),
    ]
    total = repeat * inner
    auth = Authenticator("unlimited-rk")

    nr = _fresh_requests(False, total, b"n")
    f, s = paired(floor_make_credential, lambda: auth.handle_cbor(next(nr)), repeat, inner)
    rows.append(_ratio_row("handle_cbor makeCredential, non-resident", f, s, "mc"))
    rk = _fresh_requests(True, total, b"r")
    f, s = paired(floor_make_credential, lambda: auth.handle_cbor(next(rk)), repeat, inner)
    rows.append(_ratio_row("handle_cbor makeCredential, resident (in-memory state)", f, s, "mc"))
    req = ga_request(_cred_id(auth.handle_cbor(mc_request(b"ga", False))))
    f, s = paired(floor_get_assertion, lambda: auth.handle_cbor(req), repeat, inner)
    rows.append(_ratio_row("handle_cbor getAssertion, allowList (in-memory state)", f, s, "ga"))

    with tempfile.TemporaryDirectory() as tmp:
        durable = Authenticator("unlimited-rk", Path(tmp) / "bench.sqlite3")
        rk_file = _fresh_requests(True, total, b"f")
        f, s = paired(
            floor_make_credential, lambda: durable.handle_cbor(next(rk_file)), repeat, inner
        )
        rows.append(
            _ratio_row(
                "handle_cbor makeCredential, resident (file state)",
                f,
                s,
                "mc",
                "one fsync'd SQLite commit per credential",
            )
        )
        req_file = ga_request(_cred_id(durable.handle_cbor(mc_request(b"ga", False))))
        f, s = paired(floor_get_assertion, lambda: durable.handle_cbor(req_file), repeat, inner)
        rows.append(
            _ratio_row(
                "handle_cbor getAssertion (file state)",
                f,
                s,
                "ga",
                "the signature counter is committed (fsync) before the signature leaves",
            )
        )
        durable.close()

    from fido2.ctap2 import Ctap2

    from softkey.transports.inprocess import VirtualCtapDevice

    rows += ctap2_rows(
        Ctap2(VirtualCtapDevice(auth)),
        (
            "python-fido2 Ctap2.make_credential, in-process",
            "includes python-fido2's request encoding and response parsing",
        ),
        ("python-fido2 Ctap2.get_assertion, in-process", ""),
        repeat,
        inner,
    )
    auth.close()
    return rows


# -- real processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _softkey() -> list[str]:
    exe = shutil.which("softkey", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "softkey.tools.cli"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SOFTKEY_PIN", None)
    env.pop("SOFTKEY_STATE", None)
    env.pop("SOFTKEY_KEY", None)
    return env


def precompile() -> None:
    """Byte-compile softkey's own modules, as `pip install` does for an installed package,
    so start-up rows measure a normal start and not a one-off compilation (an environment
    with PYTHONDONTWRITEBYTECODE would otherwise recompile every module at every start)."""
    for package in ("authenticator", "transports", "tools"):
        compileall.compile_dir(str(ROOT / package), quiet=1, maxlevels=0)


def _init_reply(port: int, timeout: float, poll: float = 0.002) -> bool:
    """Send broadcast INITs until the key at ``port`` answers one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(poll)
        nonce = os.urandom(8)
        packet = (b"\xff\xff\xff\xff\x86\x00\x08" + nonce).ljust(64, b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(packet, ("127.0.0.1", port))
            try:
                data = s.recv(64)
            except OSError:  # timeout, or ICMP port unreachable before the key binds
                continue
            if data[7:15] == nonce:
                return True
    return False


def start_udp_key(state: Path, profile: str | None, port: int) -> subprocess.Popen[bytes]:
    args = [*_softkey(), "run", "--transport", "udp", "--port", str(port), "--state", str(state)]
    if profile is not None:
        args += ["--profile", profile]
    return subprocess.Popen(
        [*args, "--presence", "auto"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def bench_cold_start(repeat: int) -> Row:
    name = "cold start: `softkey run --transport udp` to the first INIT reply"
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            port = _free_port()
            start = time.perf_counter()
            proc = start_udp_key(Path(tmp) / f"cold{i}.sqlite3", "ctap2.1", port)
            try:
                if not _init_reply(port, 20):
                    return Row(name, note="no INIT reply within 20 s")
                samples.append(time.perf_counter() - start)
            finally:
                _stop(proc)
    return Row(
        name,
        statistics.median(samples),
        per_op=False,
        note=f"new state file each time; target <= {MAX_COLD_START_S * 1000:.0f} ms",
    )


def bench_udp(repeat: int, inner: int) -> list[Row]:
    from fido2.ctap2 import Ctap2

    from softkey.transports.udp import open_udp_device

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = start_udp_key(Path(tmp) / "udp.sqlite3", "ctap2.1", port)
        try:
            if not _init_reply(port, 20):
                return [Row("CTAPHID over UDP", note="the key did not start")]
            device = open_udp_device("127.0.0.1", port, timeout=30)
            rows += ctap2_rows(
                Ctap2(device),
                (
                    "UDP makeCredential round trip (python-fido2 client)",
                    "softkey run process, file state",
                ),
                (
                    "UDP getAssertion round trip (python-fido2 client)",
                    "counter committed per signature",
                ),
                repeat,
                inner,
            )
            payload = os.urandom(1024)
            ping = median_time(lambda: device.ping(payload), repeat, inner)
            rows.append(Row("UDP CTAPHID PING, 1 KiB each way (18 reports)", ping))
            device.close()
        finally:
            _stop(proc)
    return rows


# -- scale: the softkey CLI and a running key ---------------------------------------------------


# Runs `softkey fill` (tools.cli) in a fresh interpreter and reports, besides the output, the
# seconds from after the imports to the command's end: the verb's own work, without the
# interpreter start and module imports that every softkey command pays (the cold-start row).
_TIMED_CLI = """
import sys, time
from softkey.tools.cli import cli
start = time.perf_counter()
try:
    cli.main(sys.argv[1:], prog_name="softkey")
except SystemExit as exc:
    if exc.code:
        raise
finally:
    sys.stderr.write("\\nbench-verb-seconds %r\\n" % (time.perf_counter() - start))
"""


@dataclass
class FillRun:
    wall: float  # the whole `softkey fill` process
    verb: float  # the fill command itself (after imports)


def run_fill(state: Path, count: int) -> FillRun:
    """`softkey fill --count N` into a new, durable state file, timed."""
    args = ["fill", "--state", str(state), "--profile", "unlimited-rk", "--count", str(count)]
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _TIMED_CLI, *args, "--json"],
        capture_output=True,
        text=True,
        env=_child_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"softkey fill failed: {out.stderr.strip()}")
    created = json.loads(out.stdout)["created"]
    if created != count:
        raise RuntimeError(f"softkey fill made {created} credentials, not {count}")
    verb = float(out.stderr.rsplit("bench-verb-seconds", 1)[1])
    return FillRun(wall, verb)


def bench_fill(sizes: tuple[int, ...], repeat: int, keep: Path) -> list[Row]:
    """`softkey fill` per-credential cost at each N: (verb(N) - verb(1)) / (N - 1), where
    verb is the command's time after the imports, so neither the process start nor opening
    the state flatters large N or punishes small N. Runs of --count 1 and --count N alternate
    and the median of the paired differences is used. The largest state is kept at ``keep``
    (for the enumeration and memory rows)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = iter(Path(tmp) / f"fill{i}.sqlite3" for i in range(10**6))
        ones: list[FillRun] = []
        per_n: dict[int, tuple[float, float]] = {}
        for n in sizes:
            runs = 1 if n >= 10_000 else repeat
            diffs, walls = [], []
            for i in range(runs):
                one = run_fill(next(scratch), 1)
                run = run_fill(keep if n == sizes[-1] and i == 0 else next(scratch), n)
                ones.append(one)
                walls.append(run.wall)
                diffs.append((run.verb - one.verb) / (n - 1))
            per_n[n] = statistics.median(diffs), statistics.median(walls)
        verb_ms = statistics.median(r.verb for r in ones) * 1000
        rows.append(
            Row(
                "`softkey fill --count 1`, whole process",
                statistics.median(r.wall for r in ones),
                per_op=False,
                note=f"of which the command itself {verb_ms:.1f} ms; the rest is the "
                "interpreter start and imports",
            )
        )
        base = per_n[sizes[0]][0]
        for n in sizes:
            per, wall = per_n[n]
            row = Row(
                f"`softkey fill --count {n:,}` per credential (file state, durable)",
                per,
                note=f"whole process {wall:.2f} s",
                size=n,
            )
            if n != sizes[0]:
                row.ratio, row.ratio_to = per / base, f"N={sizes[0]:,}"
            rows.append(row)
    return rows


def _credman(auth: Authenticator) -> tuple[Any, Callable[[], Sequence[Any]]]:
    from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2

    from softkey.transports.inprocess import VirtualCtapDevice

    ctap = Ctap2(VirtualCtapDevice(auth))
    client_pin = ClientPin(ctap)
    if not auth.pin_status()["set"]:
        client_pin.set_pin(BENCH_PIN)
    token = client_pin.get_pin_token(BENCH_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    credman = CredentialManagement(ctap, client_pin.protocol, token)
    rp_hash = hashlib.sha256(FILL_RP.encode()).digest()
    return credman, lambda: credman.enumerate_creds(rp_hash)


def bench_enumerate(states: dict[int, Path], repeat: int) -> list[Row]:
    """Enumerate every credential through authenticatorCredentialManagement (python-fido2's
    CredentialManagement.enumerate_creds: Begin + N-1 GetNextCredential), in-process.

    Samples of the sizes alternate (the large one once per round, 10,000 only once) after
    an untimed warm-up, so a slow moment of the machine is not charged to one size."""
    opened = {n: Authenticator(state=state) for n, state in states.items()}
    enumerators = {n: _credman(auth)[1] for n, auth in opened.items()}
    samples: dict[int, list[float]] = {n: [] for n in states}
    for n, enumerate_all in enumerators.items():
        if n < 10_000:
            enumerate_all()  # warm-up: first-call costs in python-fido2 and softkey
    for round_ in range(repeat):
        for n, enumerate_all in enumerators.items():
            if n >= 10_000 and round_ != repeat // 2:
                continue
            start = time.perf_counter()
            creds = enumerate_all()
            samples[n].append((time.perf_counter() - start) / n)
            if len(creds) != n:
                raise RuntimeError(f"enumerated {len(creds)} credentials, expected {n}")
    for auth in opened.values():
        auth.close()
    rows: list[Row] = []
    base = statistics.median(samples[min(states)])
    for n in states:
        per = statistics.median(samples[n])
        row = Row(
            f"enumerate {n:,} resident credentials (credMgmt) per credential",
            per,
            note=f"whole enumeration {per * n:.2f} s",
            size=n,
        )
        if n != min(states):
            row.ratio, row.ratio_to = per / base, f"N={min(states):,}"
        rows.append(row)
    return rows


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/PID/status (not Linux?)")


def running_key_rss(state: Path, expected: int, next_assertions: int = 5) -> tuple[int, float]:
    """(peak RSS in KiB, usernameless getAssertion seconds) of `softkey run` serving a
    usernameless getAssertion over all its credentials plus a few getNextAssertion."""
    from fido2.ctap2 import Ctap2

    from softkey.transports.udp import open_udp_device

    port = _free_port()
    proc = start_udp_key(state, None, port)
    try:
        if not _init_reply(port, 30):
            raise RuntimeError("the key did not start")
        device = open_udp_device("127.0.0.1", port, timeout=120)
        ctap = Ctap2(device)
        start = time.perf_counter()
        first = ctap.get_assertion(FILL_RP, os.urandom(32))
        elapsed = time.perf_counter() - start
        if (first.number_of_credentials or 1) != expected:
            raise RuntimeError(f"{first.number_of_credentials} credentials, expected {expected}")
        for _ in range(min(next_assertions, expected - 1)):
            ctap.get_next_assertion()
        device.close()
        return _vm_hwm_kib(proc.pid), elapsed
    finally:
        _stop(proc)


def bench_rss(big_state: Path, big: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "one.sqlite3"
        run_fill(small, 1)
        base_kib, _ = running_key_rss(small, 1)
    rows.append(
        Row(
            "peak RSS of a running key, 1 resident credential",
            result=f"{base_kib / 1024:.1f} MiB",
            note="VmHWM of `softkey run --transport udp` after a getAssertion",
        )
    )
    kib, elapsed = running_key_rss(big_state, big)
    rows.append(
        Row(
            f"peak RSS of a running key, {big:,} resident credentials",
            result=f"{kib / 1024:.1f} MiB",
            note=(
                f"+{(kib - base_kib) / 1024:.1f} MiB; after a usernameless getAssertion over "
                f"all {big:,} ({elapsed:.2f} s) and 5 getNextAssertion"
            ),
        )
    )
    return rows


# -- output ---------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    lines = ["| benchmark | median | ratio | note |", "|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}× {r.ratio_to}" if r.ratio is not None else ""
        lines.append(f"| {r.name} | {r.shown()} | {ratio} | {r.note} |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """One line per target of the issue: measured value and met/missed."""
    lines = []
    in_process = [r for r in rows if r.name.startswith("handle_cbor") and r.ratio is not None]
    # The file-state rows are bound by fsync, not by softkey's code; the target is about
    # the request handling itself (in-memory state).
    handling = [r for r in in_process if "file state" not in r.name]
    if handling:
        worst = max(handling, key=lambda r: r.ratio or 0)
        ok = all((r.ratio or 0) <= MAX_FLOOR_RATIO for r in handling)
        lines.append(
            f"- in-process handling ≤ {MAX_FLOOR_RATIO:g}× the crypto floor: worst "
            f"{worst.ratio:.2f}× ({worst.name}) — {'met' if ok else 'MISSED'}"
        )
    for prefix, label in (("`softkey fill", "fill"), ("enumerate", "enumeration")):
        scaled = [r for r in rows if r.name.startswith(prefix) and r.ratio is not None]
        for r in scaled:
            ok = (r.ratio or 0) <= MAX_LINEARITY_DRIFT
            lines.append(
                f"- {label} linear in N: per-credential cost at N={r.size:,} is {r.ratio:.2f}× "
                f"the {r.ratio_to} cost — {'met' if ok else 'MISSED'}"
            )
    cold = next((r for r in rows if r.name.startswith("cold start")), None)
    if cold is not None and cold.seconds is not None:
        ok = cold.seconds <= MAX_COLD_START_S
        lines.append(
            f"- cold start ≤ {MAX_COLD_START_S * 1000:.0f} ms: {cold.seconds * 1000:.0f} ms — "
            f"{'met' if ok else 'MISSED'}"
        )
    return lines


def _filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    try:
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount, fstype = parts[1], parts[2]
            if resolved.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    mem = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("cryptography", "fido2")
    )
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs{mem}; "
        f"Python {platform.python_version()}, {versions}, SQLite {sqlite3.sqlite_version}, "
        f"{ssl.OPENSSL_VERSION}; temporary state files on "
        f"{_filesystem(Path(tempfile.gettempdir()))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9, help="samples per row (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    inner = 10 if args.quick else 40
    big = 1_000 if args.quick else 10_000
    precompile()

    rows = bench_in_process(repeat, inner)
    rows += bench_udp(repeat, max(5, inner // 4))
    rows.append(bench_cold_start(max(5, repeat)))
    with tempfile.TemporaryDirectory() as tmp:
        big_state = Path(tmp) / "big.sqlite3"
        sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
        rows += bench_fill(sizes, max(3, repeat // 2), big_state)
        rows += bench_rss(big_state, big)  # before enumeration, which sets a PIN
        small_state = Path(tmp) / "small.sqlite3"
        run_fill(small_state, 100)
        rows += bench_enumerate({100: small_state, big: big_state}, max(5, repeat))

    table = render(rows)
    summary = "\n".join(targets(rows))
    print(f"softkey benchmarks — {machine()}\n")
    print(table)
    print(f"\nTargets:\n{summary}")
    if args.write:
        doc = ROOT / "docs" / "benchmarks.md"
        doc.write_text(_document(table, summary))
        print(f"\nwrote {doc.relative_to(ROOT)}")
    return 0


def _document(table: str, summary: str) -> str:
    return (
        "# Benchmarks\n\n"
        "Produced by `make bench` (tools/dev/bench.py); `make bench BENCH_ARGS=--quick` is a\n"
        "smoke run with small sizes. Every timed row is the median of repeated samples. Ratios\n"
        "compare with floors measured in the same run using `cryptography` directly —\n"
        "P-256 keygen + key export + AES-CTR/HMAC wrap + one ECDSA signature for\n"
        "makeCredential, HMAC check + AES-CTR unwrap + key load + one ECDSA signature for\n"
        "getAssertion — with floor and subject sampled in alternation. Nothing here is\n"
        "asserted by the test suite.\n\n"
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.\n\n"
        f"{table}\n\n"
        "## Targets\n\n"
        "From issue 8: in-process handling ≤ 3× the crypto floor (in-memory state); fill and\n"
        "enumeration linear in N, read here as a per-credential cost at N=1,000 and 10,000\n"
        "within 1.5× of the cost at N=100; cold start ≤ 250 ms.\n\n"
        f"{summary}\n\n"
        f"{_NOTES}"
    )


_NOTES = """\
## How to read the rows

- **in-memory vs file state.** The in-memory rows measure softkey's request handling. With
  a state file every state change is one SQLite transaction with `synchronous=FULL`, so a
  resident makeCredential and every getAssertion (its signature counter is committed
  before the signature leaves the device) wait for an fsync; those rows measure the disk,
  and the ≤ 3× target is read on the in-memory rows.
- **python-fido2 and UDP rows** include the client: python-fido2 encodes the request,
  parses and checks the response, and over UDP the CTAPHID framing runs on both sides
  with a worker thread in the key process (and a file state, so fsync again). Profiling
  the in-process row shows python-fido2's response parsing (`from_dict`, which calls
  `typing.get_type_hints` each time) costing about twice what softkey's handling does.
- **fill** runs the real `softkey fill --count N` into a new state file. The per-credential
  cost is `(t(N) - t(1)) / (N - 1)` where `t` is the command's own time after the imports
  (reported by the child process), from alternating runs of `--count 1` and `--count N`,
  so neither the interpreter start nor opening the state flatters large N or punishes
  small N. `fill` commits once per chunk of 25 credentials (one fsync per chunk); a chunk
  is reported (progress bar, final count) only after its commit.
- **enumeration** is python-fido2's `CredentialManagement.enumerate_creds` (Begin, then
  GetNextCredential N-1 times), in-process, against the states the fill rows made; each
  entry carries the public key, recomputed from the private key inside the credential ID.
- **peak RSS** is `VmHWM` from `/proc/PID/status` of `softkey run --transport udp`, on the
  state `softkey fill` made, after a usernameless getAssertion (which unwraps every
  resident credential of the RP and keeps them for getNextAssertion) and five
  getNextAssertion calls, all from python-fido2 over UDP.
- **cold start** spawns `softkey run --transport udp` on a new state file and sends
  broadcast CTAPHID_INIT datagrams every 2 ms until one is answered. softkey's modules are
  byte-compiled first (as `pip install` does), so the row measures a normal start, not a
  one-off compilation: with `PYTHONDONTWRITEBYTECODE=1` and no `__pycache__`, every start
  recompiles ~30 modules and takes about 50 ms longer. Most of the rest is the interpreter
  and imports: `cryptography` (its x509 module alone is ~20 ms, needed for attestation),
  click, and softkey itself.

## What profiling changed

Profiled with cProfile and per-step timers (tools/dev/bench.py rows before and after):

- getAssertion loaded the credential's private key twice: once to check that the
  unwrapped P-256 scalar is a valid key, then again to sign. Loading a key from its scalar
  is a scalar multiplication (~30 µs here). The check is now a range check, 0 < d < n
  (authenticator/cose.py, tested against `cryptography` at the boundaries): getAssertion
  went from about 2.8× to about 2.4× its floor, and credential enumeration got cheaper too.
- CBOR: the encoder checked every value against the `Mapping`/`Sequence` ABCs, which is
  slow; exact-type fast paths for bytes, str, int, dict and list (subclasses such as
  IntEnum keys still take the general path) halved encoding a makeCredential response
  (10.4 → 5.7 µs) and the decoder's bookkeeping was trimmed (a makeCredential request
  13.3 → 9.6 µs). tests/authenticator/test_cbor.py compares the encoder with
  python-fido2's and cbor2 on random values.
- The first version of this harness built each CBOR request inside the timed loop and
  charged the ~15 µs to the device; requests are built before timing now.
- Not changed: makeCredential's remaining overhead over its floor is spread thinly over
  parameter checks, PIN/UV and extension handling, the attestation statement and, for a
  resident key, one SQLite transaction (~28 µs in memory). Cold start is within target;
  deferring the x509 import would move ~20 ms to the first makeCredential instead.

## Fuzzing and crash safety

`make fuzz` (tools/dev/fuzz.py; `FUZZ_MINUTES=N`, default 5) fuzzes CTAP2 messages (raw, and
with a valid pinUvAuthParam computed by the harness so credential management, config and
largeBlobs are reached), U2F APDUs, CTAPHID report streams and /dev/uhid events with
atheris (coverage-guided libFuzzer) or, where atheris does not install, hypothesis. After
every case it checks that no exception escaped and nothing was logged at ERROR, that the
reply is a spec status or a response python-fido2 parses, that a fresh CTAPHID INIT is
answered, and that a non-resident, a resident and a U2F credential made beforehand still
sign. It prints the cases tried per target and the failures; a failing input is saved to
build/fuzz/crashes/ and replayed with `python -m softkey.tools.dev.fuzz --replay FILE`.
tests/fuzz/ runs the same harness, bounded, in the default suite (seed corpus, saved
regressions, a few hundred mutations), plus structured fuzzing of every command's CBOR
request, U2F APDUs and the UHID codec. tests/tools/test_crash_safety.py SIGKILLs
`softkey fill --count 1000` at random points and checks that every credential its
progress bar reported is there, whole and usable.
"""


if __name__ == "__main__":
    sys.exit(main())
