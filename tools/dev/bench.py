"""`make bench`: how fast softkey is, side by side with what it is compared to, in one run.

Every timed row is the median of repeated samples, and every comparison pairs its samples
with the other side's, taken in alternation, so a machine that speeds up or slows down
mid-run moves both alike. Nothing is compared with a figure from elsewhere:

- in-process handling against crypto floors (``cryptography`` doing the unavoidable work);
- a `softkey run --transport udp` process against a minimal reference server around the same
  ``handle_cbor`` (tools/dev/bench_udp.py), both driven by a lean raw-CTAPHID client, with a
  PING round trip and in-process handling beside them;
- python-fido2 as a client, against the key and against a canned-reply stub (the client's
  own cost);
- scale rows (usernameless getAssertion, credential management, `softkey fill`, memory) on a
  key with N resident credentials, start-up CPU and idle wake-ups of a real process.

Every target is printed as met or MISSED with its measured value (a target that could not be
measured is MISSED, never left out). Results go to stdout and, with --write, to
docs/benchmarks.md, with the machine, versions and load average of the run. Speed is
measured here, never asserted in tests.
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
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from softkey.authenticator import Authenticator
from softkey.authenticator.cbor import decode, encode
from softkey.tools.dev.bench_udp import (
    CMD_CBOR,
    CMD_PING,
    LeanClient,
    wait_for_init,
)

ROOT = Path(__file__).resolve().parents[2]
ES256: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
BENCH_RP = "bench.example"
FILL_RP = "fill.softkey.test"  # `softkey fill`'s default RP
BENCH_PIN = "12345678"
INIT_POLL = 0.002  # seconds between broadcast INITs while waiting for a key to start
PING_BYTES = 16
MB = 1_000_000

# Ratios of per-credential cost that count as "linear in N" (issue 8).
MAX_LINEARITY_DRIFT = 1.5
MAX_FLOOR_RATIO = 3.0


@dataclass
class Row:
    name: str
    seconds: float | None = None  # per operation (or per credential); None: not a timing
    result: str | None = None  # shown instead of the timing (e.g. memory)
    ratio: float | None = None
    ratio_to: str = ""  # what the ratio compares with ("mc floor", "reference server")
    note: str = ""
    per_op: bool = True  # show ops/s next to the time
    samples: int | None = None

    def shown(self) -> str:
        if self.result is not None:
            return self.result
        if self.seconds is None:
            return "n/a"
        return _duration(self.seconds) + (f" ({1 / self.seconds:,.0f}/s)" if self.per_op else "")


def _duration(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 1:
        return f"{ms * 1000:,.1f} µs"
    return f"{ms:,.3f} ms" if ms < 10 else f"{ms:,.1f} ms"


@dataclass
class Target:
    """One target of the issues, with the value this run measured (None: not measured)."""

    issue: int
    label: str  # "UDP getAssertion round trip ≤ {limit} × the reference server"
    limit: float
    unit: str  # how value and limit are shown: "×", "ms", "/s", "MB", "s"
    value: float | None = None
    detail: str = ""
    why_not: str = "not measured"

    def met(self) -> bool:
        return self.value is not None and self.value <= self.limit

    def line(self) -> str:
        label = self.label.format(limit=_amount(self.limit, self.unit))
        if self.value is None:
            return f"- issue {self.issue}: {label}: {self.why_not} — MISSED"
        detail = f" ({self.detail})" if self.detail else ""
        verdict = "met" if self.met() else "MISSED"
        return (
            f"- issue {self.issue}: {label}: {_amount(self.value, self.unit)}{detail} — {verdict}"
        )


def _amount(value: float, unit: str) -> str:
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.2f}{unit}"


def make_targets(n: int) -> dict[str, Target]:
    """Every target, in the order they are printed; measurements fill in the values."""
    big = f"{n:,}"
    return {
        "udp_ga": Target(
            15, "UDP getAssertion round trip ≤ {limit} that of the reference server", 1.25, "×"
        ),
        "udp_mc": Target(
            15,
            "UDP makeCredential (non-resident) round trip ≤ {limit} that of the reference server",
            1.25,
            "×",
        ),
        "usernameless": Target(
            15, f"usernameless getAssertion at N={big} ≤ {{limit}} an allowList one", 2.0, "×"
        ),
        "next": Target(
            15, f"getNextAssertion at N={big} ≤ {{limit}} an allowList getAssertion", 2.0, "×"
        ),
        "enumerate": Target(
            15, f"enumerating {big} credentials ≤ {{limit}} CPU on the device side", 0.5, "s"
        ),
        "fill": Target(
            15,
            f"fill per-credential cost with {big} existing ≤ {{limit}} that of an empty key",
            1.2,
            "×",
        ),
        "cold": Target(15, "cold start to the first INIT reply ≤ {limit} CPU", 100.0, "ms"),
        "idle": Target(15, "idle key ≤ {limit} wake-ups", 1.0, "/s"),
        "rss": Target(
            15, f"peak RSS after a usernameless walk over {big} credentials ≤ {{limit}}", 80.0, "MB"
        ),
        "floor": Target(8, "in-process handling ≤ {limit} the crypto floor (worst row)", 3.0, "×"),
        "fill_linear": Target(
            8,
            "`softkey fill` linear in N: per-credential cost at the largest N ≤ {limit} that "
            "at the smallest",
            MAX_LINEARITY_DRIFT,
            "×",
        ),
        "enum_linear": Target(
            8,
            f"enumeration linear in N: per-credential cost at N={big} ≤ {{limit}} that at the "
            "smallest N",
            MAX_LINEARITY_DRIFT,
            "×",
        ),
    }


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


GET_NEXT_ASSERTION = b"\x08"


def _ok(response: bytes, what: str) -> Any:
    if response[:1] != b"\0":
        raise RuntimeError(f"{what} failed with status {response[0]:#04x}")
    return decode(response[1:]) if len(response) > 1 else None


def _cred_id(response: bytes) -> bytes:
    from fido2.ctap2 import AttestationResponse

    att = AttestationResponse.from_dict(_ok(response, "makeCredential"))
    assert att.auth_data.credential_data is not None
    return att.auth_data.credential_data.credential_id


def _fresh_requests(rk: bool, count: int, tag: bytes) -> Iterator[bytes]:
    """Prebuilt makeCredential requests (building them is not the device's work)."""
    return iter([mc_request(tag + b"%d" % i, rk) for i in range(count)])


def _ratio_row(name: str, floor: float, subject: float, which: str, note: str = "") -> Row:
    return Row(name, subject, ratio=subject / floor, ratio_to=which, note=note)


@dataclass
class Run:
    """What one bench run measured: rows by section, targets, and figures shared by rows."""

    n: int
    repeat: int
    inner: int
    quick: bool
    sections: dict[str, list[Row]] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, section: str, rows: Sequence[Row]) -> None:
        for row in rows:
            if row.samples is None:
                row.samples = self.repeat
        self.sections.setdefault(section, []).extend(rows)

    def measured(self, key: str, value: float, detail: str = "") -> None:
        target = self.targets[key]
        target.value, target.detail = value, detail

    def failed(self, key: str, why: str) -> None:
        target = self.targets[key]
        target.value, target.why_not = None, why


# -- in-process ------------------------------------------------------------------------------


def bench_in_process(run: Run) -> None:
    repeat, inner = run.repeat, run.inner
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
    handling = [_ratio_row("handle_cbor makeCredential, non-resident", f, s, "mc floor")]
    run.figures["in-process mc"] = s
    rk = _fresh_requests(True, total, b"r")
    f, s = paired(floor_make_credential, lambda: auth.handle_cbor(next(rk)), repeat, inner)
    handling.append(
        _ratio_row("handle_cbor makeCredential, resident (in-memory state)", f, s, "mc floor")
    )
    req = ga_request(_cred_id(auth.handle_cbor(mc_request(b"ga", False))))
    f, s = paired(floor_get_assertion, lambda: auth.handle_cbor(req), repeat, inner)
    handling.append(
        _ratio_row("handle_cbor getAssertion, allowList (in-memory state)", f, s, "ga floor")
    )
    run.figures["in-process ga"] = s
    rows += handling
    worst = max(handling, key=lambda r: r.ratio or 0.0)
    assert worst.ratio is not None
    run.measured("floor", worst.ratio, worst.name)

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
                "mc floor",
                "one durable SQLite commit per credential",
            )
        )
        req_file = ga_request(_cred_id(durable.handle_cbor(mc_request(b"ga", False))))
        f, s = paired(floor_get_assertion, lambda: durable.handle_cbor(req_file), repeat, inner)
        from softkey.authenticator import counters

        block = getattr(counters, "RESERVE_BLOCK", None)
        rows.append(
            _ratio_row(
                "handle_cbor getAssertion (file state)",
                f,
                s,
                "ga floor",
                f"signature counter reserved on disk in blocks of {block}" if block else "",
            )
        )
        durable.close()

    from fido2.ctap2 import Ctap2

    from softkey.transports.inprocess import VirtualCtapDevice

    ctap = Ctap2(VirtualCtapDevice(auth))
    users = iter([{"id": b"c%d" % i} for i in range(total + 1)])
    f, s = paired(
        floor_make_credential,
        lambda: ctap.make_credential(b"\0" * 32, {"id": BENCH_RP}, next(users), ES256),
        repeat,
        inner,
    )
    rows.append(
        _ratio_row(
            "python-fido2 Ctap2.make_credential, in-process",
            f,
            s,
            "mc floor",
            "with python-fido2's request encoding and response parsing",
        )
    )
    allow = [{"type": "public-key", "id": _cred_id(auth.handle_cbor(mc_request(b"pf", False)))}]
    f, s = paired(
        floor_get_assertion,
        lambda: ctap.get_assertion(BENCH_RP, b"\0" * 32, allow),
        repeat,
        inner,
    )
    rows.append(_ratio_row("python-fido2 Ctap2.get_assertion, in-process", f, s, "ga floor"))
    auth.close()
    run.add("in-process", rows)


# -- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _softkey() -> list[str]:
    exe = shutil.which("softkey", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "softkey.tools.cli"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SOFTKEY_PIN", "SOFTKEY_STATE", "SOFTKEY_KEY"):
        env.pop(name, None)
    return env


def precompile() -> None:
    """Byte-compile softkey's own modules, as `pip install` does for an installed package,
    so start-up rows measure a normal start and not a one-off compilation (an environment
    with PYTHONDONTWRITEBYTECODE would otherwise recompile every module at every start)."""
    for package in ("authenticator", "transports", "tools"):
        compileall.compile_dir(str(ROOT / package), quiet=1, maxlevels=0)


def start_udp_key(
    state: Path, port: int, profile: str | None = "ctap2.1", presence: str = "auto"
) -> subprocess.Popen[bytes]:
    args = [*_softkey(), "run", "--transport", "udp", "--port", str(port), "--state", str(state)]
    if profile is not None:
        args += ["--profile", profile]
    return subprocess.Popen(
        [*args, "--presence", presence],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
    )


def start_bench_server(mode: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.dev.bench_udp", mode, "--port", str(port), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
        cwd=ROOT,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _kill_for_cpu(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL ``proc`` (no shutdown work is counted) and return the CPU seconds it used."""
    os.kill(proc.pid, signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -signal.SIGKILL
    return usage.ru_utime + usage.ru_stime


def _children_cpu(fn: Callable[[], object]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _proc_status(pid: int, *fields: str) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            found[name] = int(value.split()[0])
    return found


def _context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` (each is one
    wake-up of a sleeping thread, or a preemption of a running one)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            counts = _proc_status(
                int(task.name), "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"
            )
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        total += sum(counts.values())
    return total


# -- over UDP ----------------------------------------------------------------------------------


def bench_udp(run: Run) -> None:
    """Reference server, softkey run and a canned-reply stub, each a process of its own."""
    repeat, inner = run.repeat, max(10, run.inner * 2)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ref_port, key_port, stub_port = _free_port(), _free_port(), _free_port()
            servers = {
                "ref": start_bench_server("reference", ref_port),
                "key": start_udp_key(Path(tmp) / "udp.sqlite3", key_port),
            }
            procs += servers.values()
            if not (wait_for_init(ref_port, 30) and wait_for_init(key_port, 30)):
                raise RuntimeError("the reference server or the key did not start")
            ports = {"ref": ref_port, "key": key_port}
            replies = _lean_rows(run, servers, ports, repeat, inner)
            (Path(tmp) / "replies.json").write_text(
                json.dumps({str(k): v.hex() for k, v in replies.items()})
            )
            procs.append(
                start_bench_server(
                    "canned", stub_port, "--replies", str(Path(tmp) / "replies.json")
                )
            )
            if not wait_for_init(stub_port, 30):
                raise RuntimeError("the canned-reply stub did not start")
            _fido2_rows(run, key_port, stub_port, repeat, max(5, inner // 2))
        finally:
            for proc in procs:
                _stop(proc)


def _lean_rows(
    run: Run,
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    repeat: int,
    inner: int,
) -> dict[int, bytes]:
    """Lean-client rows (reference server vs softkey run); returns a real reply per CTAP
    command, for the canned stub."""
    clients = {name: LeanClient(ports[name]) for name in ("ref", "key")}
    replies: dict[int, bytes] = {}
    prepared: dict[str, dict[str, list[bytes]]] = {}
    for name, client in clients.items():
        mc = client.request(CMD_CBOR, mc_request(b"lean", False))
        made = client.transact(mc)
        ga = client.request(CMD_CBOR, ga_request(_cred_id(made)))
        prepared[name] = {
            "mc": mc,
            "ga": ga,
            "ping": client.request(CMD_PING, os.urandom(PING_BYTES)),
        }
        if name == "key":
            replies = {
                0x01: made,
                0x02: client.transact(ga),
                0x04: client.transact(client.request(CMD_CBOR, b"\x04")),
            }
        for kind in ("mc", "ga"):  # warm-up (first-call costs), and both must succeed
            for _ in range(inner):
                _ok(client.transact(prepared[name][kind]), f"{kind} over UDP")

    def measure(kind: str) -> tuple[float, float]:
        ref, key = clients["ref"], clients["key"]
        ref_request, key_request = prepared["ref"][kind], prepared["key"][kind]
        return paired(
            lambda: ref.transact(ref_request),
            lambda: key.transact(key_request),
            repeat,
            inner,
        )

    free = {kind: measure(kind) for kind in ("ping", "ga", "mc")}
    # The same on one CPU (client and both servers): what each server's code costs, without
    # the scheduler's cross-CPU wake-ups, which vary from run to run on a loaded machine.
    with _one_cpu([os.getpid(), procs["ref"].pid, procs["key"].pid]) as cpu:
        pinned = {kind: measure(kind) for kind in ("ping", "ga", "mc")} if cpu is not None else {}
    for client in clients.values():
        client.close()

    ping_ref, ping_key = free["ping"]
    rows = [
        Row(f"PING round trip, {PING_BYTES} bytes — reference server", ping_ref),
        _ratio_row(
            f"PING round trip, {PING_BYTES} bytes — softkey run",
            ping_ref,
            ping_key,
            "reference",
            _pinned_note(pinned.get("ping")),
        ),
    ]
    for kind, label, target, in_process in (
        ("ga", "getAssertion (allowList)", "udp_ga", "in-process ga"),
        ("mc", "makeCredential (non-resident)", "udp_mc", "in-process mc"),
    ):
        t_ref, t_key = free[kind]
        handling = run.figures.get(in_process)
        note = "single-threaded loop, blocking reads, in-memory key"
        if handling is not None:
            note += (
                f"; {t_ref / (ping_ref + handling):.2f}× (PING + in-process handling "
                f"{_duration(handling)})"
            )
        rows.append(Row(f"{label} round trip, lean client — reference server", t_ref, note=note))
        rows.append(
            _ratio_row(
                f"{label} round trip, lean client — softkey run",
                t_ref,
                t_key,
                "reference",
                "`softkey run --transport udp --presence auto`, file state; "
                + _pinned_note(pinned.get(kind)),
            )
        )
        detail = f"softkey {_duration(t_key)}, reference {_duration(t_ref)}"
        if kind in pinned:
            detail += f"; on one CPU {pinned[kind][1] / pinned[kind][0]:.2f}×"
        detail += f"; PING {_duration(ping_key)} vs {_duration(ping_ref)}"
        if handling is not None:
            detail += f"; in-process handling {_duration(handling)}"
        run.measured(target, t_key / t_ref, detail)
    run.add("udp", rows)
    return replies


def _pinned_note(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "(not measured on one CPU: affinity not available)"
    ref, key = pair
    return f"on one CPU: {_duration(key)} vs {_duration(ref)}, {key / ref:.2f}×"


class _one_cpu:  # noqa: N801 - used as a context manager
    """Run ``pids`` on one CPU (the last this process may use) until exit; restores their
    affinity. ``as`` gives the CPU, or None where affinity cannot be set."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.saved: dict[int, set[int]] = {}

    def __enter__(self) -> int | None:
        try:
            cpu = max(os.sched_getaffinity(0))
            for pid in self.pids:
                self.saved[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, {cpu})
        except (AttributeError, OSError):
            self.__exit__()
            return None
        return cpu

    def __exit__(self, *exc: object) -> None:
        for pid, cpus in self.saved.items():
            try:
                os.sched_setaffinity(pid, cpus)
            except OSError:
                pass


def _fido2_rows(run: Run, key_port: int, stub_port: int, repeat: int, inner: int) -> None:
    from fido2.ctap2 import Ctap2

    from softkey.transports.udp import open_udp_device

    key = Ctap2(open_udp_device("127.0.0.1", key_port, timeout=30))
    stub = Ctap2(open_udp_device("127.0.0.1", stub_port, timeout=30))
    rp = {"id": BENCH_RP}
    users = iter([{"id": b"f%d" % i} for i in range(repeat * inner * 2 + 2)])
    rows = []
    client, total = paired(
        lambda: stub.make_credential(b"\0" * 32, rp, {"id": b"stub"}, ES256),
        lambda: key.make_credential(b"\0" * 32, rp, next(users), ES256),
        repeat,
        inner,
    )
    rows += _fido2_pair("makeCredential (non-resident)", client, total)
    made = key.make_credential(b"\0" * 32, rp, {"id": b"g"}, ES256)
    assert made.auth_data.credential_data is not None
    allow: list[Mapping[str, Any]] = [
        {"type": "public-key", "id": made.auth_data.credential_data.credential_id}
    ]
    client, total = paired(
        lambda: stub.get_assertion(BENCH_RP, b"\0" * 32, allow),
        lambda: key.get_assertion(BENCH_RP, b"\0" * 32, allow),
        repeat,
        inner,
    )
    rows += _fido2_pair("getAssertion (allowList)", client, total)
    for ctap in (key, stub):
        ctap.device.close()
    run.add("udp", rows)


def _fido2_pair(label: str, client: float, total: float) -> list[Row]:
    return [
        Row(
            f"{label} — python-fido2 against a canned-reply stub",
            client,
            note="the client's own cost: the stub answers at once with a recorded reply",
        ),
        Row(
            f"{label} — python-fido2 against softkey run",
            total,
            note=f"{client / total:.0%} of it is the client's own cost",
        ),
    ]


# -- start-up and idle ------------------------------------------------------------------------


# What any Python CLI on these libraries pays before its own code runs: the interpreter (with
# site and this install's .pth files), click, and the cryptography primitives a key uses.
_THIRD_PARTY = (
    "import click, sqlite3, json, logging, socket, threading, dataclasses\n"
    "from cryptography.hazmat.primitives.asymmetric import ec\n"
    "from cryptography.hazmat.primitives.ciphers import Cipher\n"
    "from cryptography.hazmat.primitives import hashes\n"
)


def bench_cold_start(run: Run, samples: int) -> None:
    cpu, wall, interpreter, third_party = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(samples):
            for code, into in (("pass", interpreter), (_THIRD_PARTY, third_party)):
                into.append(
                    _children_cpu(
                        lambda code=code: subprocess.run(
                            [sys.executable, "-c", code], env=_child_env(), check=True
                        )
                    )
                )
            port = _free_port()
            start = time.perf_counter()
            proc = start_udp_key(Path(tmp) / f"cold{i}.sqlite3", port)
            try:
                answered = wait_for_init(port, 30, INIT_POLL)
                elapsed = time.perf_counter() - start
            finally:
                used = _kill_for_cpu(proc)
            if not answered:
                run.failed("cold", "the key did not answer INIT within 30 s")
                return
            cpu.append(used)
            wall.append(elapsed)
    cpu_ms, wall_ms = statistics.median(cpu) * 1000, statistics.median(wall) * 1000
    floor_ms = statistics.median(interpreter) * 1000
    libs_ms = statistics.median(third_party) * 1000
    run.add(
        "start",
        [
            Row(
                "cold start: `softkey run --transport udp` to the first INIT reply, CPU",
                statistics.median(cpu),
                per_op=False,
                samples=samples,
                note=f"new state file each time; wall time {wall_ms:.1f} ms",
            ),
            Row(
                "beside it: the interpreter alone (`python -c pass`), CPU",
                statistics.median(interpreter),
                per_op=False,
                samples=samples,
            ),
            Row(
                "beside it: the interpreter importing click, sqlite3 and the cryptography "
                "primitives softkey uses, CPU",
                statistics.median(third_party),
                per_op=False,
                samples=samples,
                note=f"softkey's own share of the cold start: {cpu_ms - libs_ms:.1f} ms",
            ),
        ],
    )
    run.measured(
        "cold",
        cpu_ms,
        f"wall {wall_ms:.1f} ms; interpreter alone {floor_ms:.1f} ms, with click and "
        f"cryptography {libs_ms:.1f} ms, so softkey's own share {cpu_ms - libs_ms:.1f} ms",
    )


def bench_idle(run: Run, window: float) -> None:
    """Context switches of every thread of an idle `softkey run` over ``window`` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = start_udp_key(Path(tmp) / "idle.sqlite3", port, presence="wait")
        try:
            if not wait_for_init(port, 30):
                run.failed("idle", "the key did not start")
                return
            client = LeanClient(port)
            _ok(client.transact(client.request(CMD_CBOR, b"\x04")), "getInfo")  # used once
            client.close()
            time.sleep(0.5)  # let start-up work (and the request) settle
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
            before = _context_switches(proc.pid)
            time.sleep(window)
            rate = (_context_switches(proc.pid) - before) / window
        finally:
            _stop(proc)
    run.add(
        "start",
        [
            Row(
                "idle `softkey run --transport udp --presence wait`: wake-ups per second",
                result=f"{rate:.2f}/s",
                samples=1,
                note=f"context switches of its {threads} threads over {window:g} s "
                "(/proc/PID/task/*/status)",
            )
        ],
    )
    run.measured("idle", rate, f"{threads} threads, {window:g} s window")


# -- `softkey fill` ------------------------------------------------------------------------------


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
    """`softkey fill --count N` into a durable state file (new or not), timed."""
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


def copy_state(source: Path, target: Path) -> Path:
    """A copy of a closed state file (its WAL, if any, with it), mode kept."""
    for suffix in ("", "-wal"):
        if Path(str(source) + suffix).exists():
            shutil.copy2(str(source) + suffix, str(target) + suffix)
    return target


def bench_fill(run: Run, sizes: tuple[int, ...], repeat: int, keep: Path) -> None:
    """`softkey fill` per-credential cost at each N: (verb(N) - verb(1)) / (N - 1), where
    verb is the command's time after the imports, so neither the process start nor opening
    the state flatters large N or punishes small N. Runs of --count 1 and --count N alternate
    and the median of the paired differences is used. The largest state is kept at ``keep``
    (for the scale rows)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = iter(Path(tmp) / f"fill{i}.sqlite3" for i in range(10**6))
        ones: list[FillRun] = []
        per_n: dict[int, tuple[float, float, int]] = {}
        for n in sizes:
            runs = repeat
            diffs, walls = [], []
            for i in range(runs):
                one = run_fill(next(scratch), 1)
                filled = run_fill(keep if n == sizes[-1] and i == 0 else next(scratch), n)
                ones.append(one)
                walls.append(filled.wall)
                diffs.append((filled.verb - one.verb) / (n - 1))
            per_n[n] = statistics.median(diffs), statistics.median(walls), runs
        verb_ms = statistics.median(r.verb for r in ones) * 1000
        rows.append(
            Row(
                "`softkey fill --count 1`, whole process",
                statistics.median(r.wall for r in ones),
                per_op=False,
                samples=len(ones),
                note=f"of which the command itself {verb_ms:.1f} ms; the rest is the "
                "interpreter start and imports",
            )
        )
        base = per_n[sizes[0]][0]
        for n in sizes:
            per, wall, runs = per_n[n]
            row = Row(
                f"`softkey fill --count {n:,}` into a new key, per credential",
                per,
                note=f"whole process {wall:.2f} s; (t(N) - t(1)) / (N - 1)",
                samples=runs,
            )
            if n != sizes[0]:
                row.ratio, row.ratio_to = per / base, f"N={sizes[0]:,}"
            rows.append(row)
    largest = sizes[-1]
    ratio = per_n[largest][0] / base
    run.measured(
        "fill_linear",
        ratio,
        f"N={largest:,} {_duration(per_n[largest][0])} vs N={sizes[0]:,} {_duration(base)}",
    )
    run.add("fill", rows)


def bench_fill_existing(run: Run, big_state: Path, count: int, samples: int) -> None:
    """`softkey fill --count M` into an empty key and into a copy of the key holding N
    credentials, alternating; per credential = the command's own time / M (what was spent
    before the first credential, e.g. looking at the existing ones, counts)."""
    empty, existing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(samples):
            empty.append(run_fill(Path(tmp) / f"empty{i}.sqlite3", count).verb / count)
            copy = copy_state(big_state, Path(tmp) / f"big{i}.sqlite3")
            existing.append(run_fill(copy, count).verb / count)
    e, x = statistics.median(empty), statistics.median(existing)
    rows = [
        Row(
            f"`softkey fill --count {count:,}` into an empty key, per credential",
            e,
            samples=samples,
        ),
        Row(
            f"`softkey fill --count {count:,}` into a key with {run.n:,}, per credential",
            x,
            ratio=x / e,
            ratio_to="empty key",
            samples=samples,
            note="the command's own time / count (start-up work included)",
        ),
    ]
    run.add("fill", rows)
    run.measured("fill", x / e, f"{_duration(x)} vs {_duration(e)} per credential")


# -- scale: usernameless getAssertion, memory, enumeration -------------------------------------


def _fill_rp_hash() -> bytes:
    return hashlib.sha256(FILL_RP.encode()).digest()


def bench_usernameless(run: Run, state: Path, samples: int) -> None:
    """handle_cbor on the key with N credentials of one RP: an allowList getAssertion, a
    usernameless one (empty allowList: every credential of the RP), getNextAssertion."""
    n = run.n
    auth = Authenticator(state=state)
    try:
        cred_id = auth.store.list_resident(_fill_rp_hash())[0].credential_id
        allow, empty = ga_request(cred_id, FILL_RP), ga_request(None, FILL_RP)
        first = _ok(auth.handle_cbor(empty), "usernameless getAssertion")
        if first.get(5) != n:
            raise RuntimeError(f"usernameless getAssertion found {first.get(5)}, not {n}")
        inner = 5 if n >= 10_000 else 10
        t_allow, t_empty = paired(
            lambda: auth.handle_cbor(allow), lambda: auth.handle_cbor(empty), samples, inner
        )
        walk = min(20, n - 1)
        allows, nexts = [], []
        for _ in range(samples):
            allows.append(_batch(lambda: auth.handle_cbor(allow), inner))
            _ok(auth.handle_cbor(empty), "usernameless getAssertion")
            start = time.perf_counter()
            for _ in range(walk):
                auth.handle_cbor(GET_NEXT_ASSERTION)
            nexts.append((time.perf_counter() - start) / walk)
        _ok(auth.handle_cbor(GET_NEXT_ASSERTION), "getNextAssertion")
        t_allow2, t_next = statistics.median(allows), statistics.median(nexts)
    finally:
        auth.close()
    rows = [
        Row(f"handle_cbor getAssertion, allowList, key with {n:,} (file state)", t_allow),
        _ratio_row(
            f"handle_cbor usernameless getAssertion over {n:,} credentials",
            t_allow,
            t_empty,
            "allowList",
        ),
        _ratio_row(
            f"handle_cbor getNextAssertion after it (each of {walk})",
            t_allow2,
            t_next,
            "allowList",
            "the first credentials of the walk, used in earlier samples too (their counters "
            "hold a reserved block); a first walk is in the UDP row below",
        ),
    ]
    for row in rows:
        row.samples = samples
    run.add("scale", rows)
    run.measured("usernameless", t_empty / t_allow, f"{_duration(t_empty)} vs {_duration(t_allow)}")
    run.measured("next", t_next / t_allow2, f"{_duration(t_next)} vs {_duration(t_allow2)}")


def _walk_over_udp(port: int, expected: int) -> float:
    """A usernameless getAssertion and getNextAssertion through every credential, from a
    lean client; returns the seconds the walk took."""
    client = LeanClient(port)
    start = time.perf_counter()
    first = _ok(client.transact(client.request(CMD_CBOR, ga_request(None, FILL_RP))), "walk")
    count = first.get(5, 1)
    if count != expected:
        raise RuntimeError(f"{count} credentials, expected {expected}")
    nxt = client.request(CMD_CBOR, GET_NEXT_ASSERTION)
    for _ in range(count - 1):
        if client.transact(nxt)[:1] != b"\0":
            raise RuntimeError("getNextAssertion failed during the walk")
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def running_key_memory(state: Path, expected: int) -> tuple[int, int, float]:
    """(VmHWM KiB, VmRSS KiB, walk seconds) of `softkey run` after a full usernameless walk."""
    port = _free_port()
    proc = start_udp_key(state, port, profile=None)
    try:
        if not wait_for_init(port, 60):
            raise RuntimeError("the key did not start")
        elapsed = _walk_over_udp(port, expected)
        status = _proc_status(proc.pid, "VmHWM", "VmRSS")
        return status["VmHWM"], status["VmRSS"], elapsed
    finally:
        _stop(proc)


def bench_rss(run: Run, big_state: Path, samples: int) -> None:
    n = run.n
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "one.sqlite3"
        run_fill(small, 1)
        base_hwm, _, _ = running_key_memory(small, 1)
        results = [
            running_key_memory(copy_state(big_state, Path(tmp) / f"big{i}.sqlite3"), n)
            for i in range(samples)
        ]
    hwm = max(r[0] for r in results)
    rss = statistics.median(r[1] for r in results)
    walk = statistics.median(r[2] for r in results)
    rows = [
        Row(
            f"getNextAssertion over UDP, walking all {n:,} credentials",
            walk / n,
            samples=samples,
            note="lean client; the first use of each credential reserves a block of its "
            "signature counter (one durable commit), unlike the rows above, which reuse "
            "the same few credentials",
        ),
        Row(
            "peak RSS of a running key, 1 resident credential",
            result=f"{base_hwm * 1024 / MB:.1f} MB",
            samples=1,
            note="VmHWM after a getAssertion",
        ),
        Row(
            f"peak RSS of a running key after a usernameless walk over {n:,}",
            result=f"{hwm * 1024 / MB:.1f} MB",
            samples=samples,
            note=f"highest VmHWM of the samples; VmRSS after the walk {rss * 1024 / MB:.1f} MB; "
            f"the walk (getAssertion + {n - 1:,} getNextAssertion over UDP) {walk:.2f} s",
        ),
    ]
    run.add("scale", rows)
    run.measured(
        "rss",
        hwm * 1024 / MB,
        f"VmRSS {rss * 1024 / MB:.1f} MB; one credential {base_hwm * 1024 / MB:.1f} MB",
    )


def _credman(auth: Authenticator) -> Callable[[], Sequence[Any]]:
    """python-fido2's enumerate_creds for the fill RP, with a fresh token per call."""
    from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2

    from softkey.transports.inprocess import VirtualCtapDevice

    ctap = Ctap2(VirtualCtapDevice(auth))
    client_pin = ClientPin(ctap)
    if not auth.pin_status()["set"]:
        client_pin.set_pin(BENCH_PIN)

    def enumerate_all() -> Sequence[Any]:
        token = client_pin.get_pin_token(BENCH_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
        credman = CredentialManagement(ctap, client_pin.protocol, token)
        return credman.enumerate_creds(_fill_rp_hash())

    return enumerate_all


def bench_enumerate(run: Run, states: dict[int, Path], samples: int) -> None:
    """Enumerate every credential through authenticatorCredentialManagement (python-fido2's
    CredentialManagement.enumerate_creds: Begin + N-1 GetNextCredential), in-process. The
    device side is the CPU time spent inside handle_cbor; python-fido2's own (encoding the
    requests, decoding each entry) is the rest. Sizes alternate, after an untimed warm-up."""
    opened = {n: Authenticator(state=state) for n, state in states.items()}
    device_cpu = {n: 0.0 for n in states}

    def timed(auth: Authenticator, n: int) -> None:
        original = auth.handle_cbor

        def handle_cbor(*args: Any, **kwargs: Any) -> bytes:
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                device_cpu[n] += time.thread_time() - start

        auth.handle_cbor = handle_cbor  # type: ignore[method-assign]

    enumerators = {}
    for n, auth in opened.items():
        enumerators[n] = _credman(auth)
        timed(auth, n)
    for n, enumerate_all in enumerators.items():
        if n < 10_000:
            enumerate_all()  # warm-up: first-call costs in python-fido2 and softkey
    device: dict[int, list[float]] = {n: [] for n in states}
    client: dict[int, list[float]] = {n: [] for n in states}
    for _ in range(samples):
        for n, enumerate_all in enumerators.items():
            device_cpu[n] = 0.0
            start = time.thread_time()
            creds = enumerate_all()
            total = time.thread_time() - start
            if len(creds) != n:
                raise RuntimeError(f"enumerated {len(creds)} credentials, expected {n}")
            device[n].append(device_cpu[n])
            client[n].append(total - device_cpu[n])
    for auth in opened.values():
        auth.close()
    smallest, largest = min(states), max(states)
    base = statistics.median(device[smallest]) / smallest
    rows = []
    for n in states:
        dev, fido2_side = statistics.median(device[n]), statistics.median(client[n])
        row = Row(
            f"enumerate {n:,} resident credentials (credMgmt), device CPU per credential",
            dev / n,
            note=f"whole enumeration: device {dev:.3f} s CPU, python-fido2's own "
            f"{fido2_side:.3f} s CPU (not counted)",
            samples=samples,
        )
        if n != smallest:
            row.ratio, row.ratio_to = (dev / n) / base, f"N={smallest:,}"
        rows.append(row)
    run.add("scale", rows)
    dev_big = statistics.median(device[largest])
    run.measured(
        "enumerate",
        dev_big,
        f"python-fido2's own decoding beside it: {statistics.median(client[largest]):.3f} s CPU",
    )
    run.measured(
        "enum_linear",
        (dev_big / largest) / base,
        f"{_duration(dev_big / largest)} vs {_duration(base)} per credential",
    )


# -- output ---------------------------------------------------------------------------------

SECTIONS = {
    "in-process": "In-process handling",
    "udp": "Over UDP, side by side",
    "start": "Start-up and idle",
    "fill": "`softkey fill`",
    "scale": "A key with many resident credentials",
}


def render(run: Run) -> str:
    parts = []
    for key, title in SECTIONS.items():
        rows = run.sections.get(key)
        if not rows:
            continue
        lines = [f"### {title}", "", "| benchmark | median | ratio | samples | note |"]
        lines.append("|---|---|---|---|---|")
        for r in rows:
            ratio = f"{r.ratio:.2f}× {r.ratio_to}" if r.ratio is not None else ""
            lines.append(f"| {r.name} | {r.shown()} | {ratio} | {r.samples} | {r.note} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def target_lines(run: Run) -> list[str]:
    return [target.line() for target in run.targets.values()]


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


def _revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
        f"{name} {importlib.metadata.version(name)}" for name in ("cryptography", "fido2", "click")
    )
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs{mem}; "
        f"Python {platform.python_version()}, {versions}, SQLite {sqlite3.sqlite_version}, "
        f"{ssl.OPENSSL_VERSION}; softkey {_revision()}; temporary state files on "
        f"{_filesystem(Path(tempfile.gettempdir()))}"
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9, help="samples per row (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--write", action="store_true", help="write docs/benchmarks.md (not with --quick)"
    )
    parser.add_argument(
        "--write-to", type=Path, metavar="FILE", help="write the document to FILE instead"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    n = 300 if quick else 10_000
    run = Run(
        n=n,
        repeat=3 if quick else max(3, args.repeat),
        inner=5 if quick else 40,
        quick=quick,
        targets=make_targets(n),
    )
    scale_samples = 3  # at least three samples for every row at N
    load_before = _load()
    started = time.monotonic()
    precompile()

    steps: list[tuple[str, Callable[[], None]]] = [
        ("in-process", lambda: bench_in_process(run)),
        ("udp", lambda: bench_udp(run)),
        ("cold start", lambda: bench_cold_start(run, 5 if quick else 9)),
        ("idle", lambda: bench_idle(run, 1.0 if quick else 5.0)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.sqlite3"
        small = Path(tmp) / "small.sqlite3"
        sizes = (30, n) if quick else (100, 1_000, n)
        steps += [
            ("fill", lambda: bench_fill(run, sizes, 2 if quick else 3, big)),
            ("fill existing", lambda: bench_fill_existing(run, big, 50 if quick else 1_000, 3)),
            ("usernameless", lambda: bench_usernameless(run, big, scale_samples)),
            ("memory", lambda: bench_rss(run, big, scale_samples)),
            ("small state", lambda: run_fill(small, sizes[0])),
            # last: it sets a PIN on the states
            ("enumerate", lambda: bench_enumerate(run, {sizes[0]: small, n: big}, scale_samples)),
        ]
        failures = []
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # a failed step is reported, its targets stay MISSED
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                for target in run.targets.values():
                    if target.value is None and target.why_not == "not measured":
                        target.why_not = f"not measured ({name} failed: {exc})"
    elapsed = time.monotonic() - started
    load_after = _load()

    table = render(run)
    lines = target_lines(run)
    met = sum(t.met() for t in run.targets.values())
    summary = "\n".join(lines)
    context = (
        f"Machine: {machine()}.\nLoad average (1/5/15 min): {load_before} before, "
        f"{load_after} after; the run took {elapsed:.0f} s"
        + (" (--quick: small sizes, few samples)" if quick else "")
        + "."
    )
    print(f"softkey benchmarks\n\n{context}\n\n{table}\n")
    print(f"Targets ({met} of {len(lines)} met):\n{summary}")
    for failure in failures:
        print(f"step failed: {failure}", file=sys.stderr)
    if args.write_to or (args.write and not quick):
        doc = args.write_to or ROOT / "docs" / "benchmarks.md"
        doc.write_text(document(run, table, summary, context, met))
        print(f"\nwrote {doc}")
    elif args.write:
        print("\n--quick: docs/benchmarks.md left as it is (a smoke run never replaces a full one)")
    return 1 if failures else 0


def document(run: Run, table: str, summary: str, context: str, met: int) -> str:
    return PROSE.format(
        context=context,
        date=time.strftime("%Y-%m-%d"),
        table=table,
        summary=summary,
        met=met,
        total=len(run.targets),
        n=f"{run.n:,}",
        ping=PING_BYTES,
        poll=f"{INIT_POLL * 1000:g}",
    )


# The document around the generated tables. It holds no figure of its own: every number in
# docs/benchmarks.md comes from the run (tests/tools/test_bench.py checks this text for digits).
PROSE = """\
# Benchmarks

Produced by `make bench` (tools/dev/bench.py) on {date}; `make bench BENCH_ARGS=--quick` is a
smoke run with small sizes and few samples. Every timed row is the median of its samples;
every ratio compares two things measured in alternation in the same run. Nothing here is
asserted by the test suite.

{context}

## Targets ({met} of {total} met)

{summary}

## Results

{table}

## How the rows are measured

- **In-process handling** calls `Authenticator.handle_cbor` with requests built beforehand.
  The crypto floors do the unavoidable work with `cryptography` directly: key generation,
  wrapping and one signature for makeCredential; unwrapping, loading the key and one signature
  for getAssertion. With a state file, a resident makeCredential is one durable SQLite commit;
  signature counters are reserved in blocks on disk (authenticator/counters.py), so most
  getAssertions commit nothing.
- **Over UDP, side by side.** Three processes serve CTAPHID over UDP on loopback: the
  reference server (tools/dev/bench_udp.py: one thread, blocking reads, the same
  `handle_cbor` on an in-memory key, no timeouts or keepalives), `softkey run --transport udp
  --presence auto` on a file state, and a stub that answers every CTAP command at once with a
  reply recorded from the key. The lean client sends pre-encoded reports and reads the answer
  without decoding it; its samples alternate between the reference server and softkey. The
  PING rows carry {ping} bytes each way; the reference row also says how its round trip
  compares with a PING plus the in-process handling of the same request (a request and its
  answer span several reports each). The python-fido2 rows drive `Ctap2` against the key and
  against the stub: the stub's figure is what the client itself costs.
- **Cold start** spawns `softkey run --transport udp` on a new state file and sends broadcast
  CTAPHID_INIT datagrams every {poll} ms until one is answered; the key is then killed with
  SIGKILL (no shutdown work) and its CPU time read from `wait4`. softkey's modules are
  byte-compiled first, as `pip install` does. Beside it: the wall time, and the CPU time of
  an interpreter that does nothing and of one that only imports click, sqlite3 and the
  cryptography primitives softkey uses, so softkey's own share can be read off.
- **Idle** counts the context switches of every thread of a running key that has answered a
  request and then waits, from /proc/PID/task/*/status.
- **`softkey fill`** runs the real command in a fresh interpreter; the time is the command's
  own (after the imports, reported by the child). Into a new key, the per-credential cost is
  `(t(N) - t(1)) / (N - 1)`; into a key that already holds {n} credentials, it is the whole
  command's time divided by the count, so work done before the first credential counts.
- **A key with many resident credentials** is the state the largest fill made ({n}
  credentials of one relying party). Usernameless getAssertion (an empty allowList) and
  getNextAssertion are timed in-process against an allowList getAssertion on the same state.
  Memory is the peak RSS (VmHWM) of `softkey run` after a usernameless getAssertion and a
  getNextAssertion for every other credential, from the lean client over UDP. Enumeration is
  python-fido2's `CredentialManagement.enumerate_creds` in-process; the device side is the CPU
  time spent inside `handle_cbor`, the rest is python-fido2's own.

## Fuzzing and crash safety

`make fuzz` (tools/dev/fuzz.py; `FUZZ_MINUTES` sets how long) fuzzes CTAP2 messages (raw, and
with a valid pinUvAuthParam computed by the harness so credential management, config and
largeBlobs are reached), U2F APDUs, CTAPHID report streams and /dev/uhid events with atheris
(coverage-guided libFuzzer) or, where atheris does not install, hypothesis. After every case it
checks that no exception escaped and nothing was logged at ERROR, that the reply is a spec
status or a response python-fido2 parses, that a fresh CTAPHID INIT is answered, and that
credentials made beforehand still sign. A failing input is saved to build/fuzz/crashes/ and
replayed with `python -m softkey.tools.dev.fuzz --replay FILE`. tests/fuzz/ runs the same
harness, bounded, in the default suite. tests/tools/test_crash_safety.py kills a running
`softkey fill` at random points and checks that every credential its progress bar reported is
there, whole and usable.
"""


if __name__ == "__main__":
    sys.exit(main())
