"""Signature counters reserved in blocks (counters.py): across kill -9, power loss and reopen a
counter jumps forward, never repeats and never goes back; a clean close continues exactly.

The kill test runs a real process holding a file-backed key, signing as fast as it can and
printing each counter value once the response is built (so every printed value has left the
device), and kills it with SIGKILL at a random point: often mid-block, sometimes mid-commit.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator
from softkey.authenticator.counters import RESERVE_BLOCK
from softkey.authenticator.store import Store, counter_key
from softkey.transports.inprocess import VirtualCtapDevice

REPO = Path(__file__).resolve().parents[2]
RP = "example.com"
ES256 = [{"type": "public-key", "alg": -7}]

# Signs with one credential forever, printing each counter value (argv: state, credential ID
# in hex, "ctap2" or "u2f").
_SIGNER = """
import hashlib, os, struct, sys
from fido2.ctap1 import Ctap1
from softkey.authenticator import Authenticator, cbor
from softkey.transports.inprocess import VirtualCtapDevice
auth = Authenticator(state=sys.argv[1])
cred = bytes.fromhex(sys.argv[2])
u2f = Ctap1(VirtualCtapDevice(auth))
app = hashlib.sha256(b"example.com").digest()
request = b"\\x02" + cbor.encode(
    {1: "example.com", 2: os.urandom(32), 3: [{"id": cred, "type": "public-key"}]}
)
while True:
    if sys.argv[3] == "u2f":
        counter = u2f.authenticate(os.urandom(32), app, cred).counter
    else:
        response = auth.handle_cbor(request)
        assert response[0] == 0, response.hex()
        counter = struct.unpack(">I", cbor.decode(response[1:])[2][33:37])[0]
    sys.stdout.write(f"{counter}\\n")
    sys.stdout.flush()
"""


def _make(auth: Authenticator, user: bytes = b"u", rk: bool = False) -> bytes:
    ctap = Ctap2(VirtualCtapDevice(auth))
    options = {"rk": True} if rk else None
    att = ctap.make_credential(os.urandom(32), {"id": RP}, {"id": user}, ES256, options=options)
    return att.auth_data.credential_data.credential_id


def _sign(auth: Authenticator, cred: bytes) -> int:
    got = Ctap2(VirtualCtapDevice(auth)).get_assertion(
        RP, os.urandom(32), [{"type": "public-key", "id": cred}]
    )
    return got.auth_data.counter


def _run_and_kill(state: Path, cred: bytes, how: str, stop_after: int) -> list[int]:
    """Start the signer, read ``stop_after`` values, SIGKILL it; every value it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGNER, str(state), cred.hex(), how],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[int] = []
    try:
        while len(seen) < stop_after:
            line = proc.stdout.readline()
            if not line:
                _, err = proc.communicate(timeout=30)
                raise AssertionError(f"the signer stopped: {err.decode(errors='replace')}")
            seen.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        seen += [int(line) for line in proc.stdout.read().split()]  # printed before it died
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.parametrize(
    ("mode", "how"), [("per-credential", "ctap2"), ("global", "ctap2"), ("per-credential", "u2f")]
)
def test_sigkill_never_repeats_a_counter(tmp_path: Path, mode: str, how: str) -> None:
    state = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state, counter_mode=mode) as auth:
        if how == "u2f":
            app = hashlib.sha256(RP.encode()).digest()
            cred = Ctap1(VirtualCtapDevice(auth)).register(os.urandom(32), app).key_handle
        else:
            cred = _make(auth)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    before: list[int] = []
    for round_ in range(4):
        # Often inside the first block, sometimes across one or two block boundaries.
        stop_after = rng.choice([1, rng.randrange(2, RESERVE_BLOCK), rng.randrange(1, 700)])
        seen = _run_and_kill(state, cred, how, stop_after)
        context = f"seed {seed}, round {round_}, killed after {stop_after}"
        assert seen == sorted(set(seen)), f"{context}: not strictly increasing in one run"
        if before:
            assert min(seen) > max(before), f"{context}: {min(seen)} <= {max(before)}"
        before += seen
    # The state is intact, and a clean process continues above everything seen.
    with closing(sqlite3.connect(state)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Authenticator(state=state) as auth:
        if how == "u2f":
            app = hashlib.sha256(RP.encode()).digest()
            after = Ctap1(VirtualCtapDevice(auth)).authenticate(os.urandom(32), app, cred).counter
        else:
            after = _sign(auth, cred)
    assert after > max(before), f"seed {seed}"


@pytest.mark.parametrize("mode", ["per-credential", "global"])
def test_power_loss_jumps_forward_and_a_clean_close_continues(tmp_path: Path, mode: str) -> None:
    state = tmp_path / "key.sqlite3"
    first = Authenticator("ctap2.1", state, counter_mode=mode)
    cred = _make(first)
    seen = [_sign(first, cred) for _ in range(5)]
    first.power_cycle()  # unplug and replug: the same process, so it simply goes on
    seen += [_sign(first, cred) for _ in range(3)]
    assert seen == list(range(1, 9))
    # Power loss: the memory of `first` is gone; the file is all a new process has.
    lost = Authenticator(state=state)
    after_loss = [_sign(lost, cred) for _ in range(3)]
    assert min(after_loss) > max(seen)
    assert after_loss == list(range(after_loss[0], after_loss[0] + 3))
    lost.close()  # a clean close writes back the last value handed out ...
    with Authenticator(state=state) as again:
        assert again.counter(cred) == after_loss[-1]
        assert _sign(again, cred) == after_loss[-1] + 1  # ... so the next follows it exactly
    first.close()  # the lost instance's late close must not take the counter back
    with Authenticator(state=state) as last:
        assert _sign(last, cred) > after_loss[-1] + 1


def test_one_durable_write_per_block(tmp_path: Path) -> None:
    """The point of reserving: signing within a block commits nothing."""
    state = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state) as auth:
        cred = _make(auth)
        _sign(auth, cred)  # the first signature reserves 1 .. RESERVE_BLOCK
        statements: list[str] = []
        auth.store._db.set_trace_callback(statements.append)
        for _ in range(RESERVE_BLOCK - 1):
            _sign(auth, cred)
        assert not [s for s in statements if s.startswith(("COMMIT", "INSERT", "UPDATE"))]
        assert auth.counter(cred) == RESERVE_BLOCK
        _sign(auth, cred)  # the next block
        assert sum(s.startswith("COMMIT") for s in statements) == 1
        with closing(sqlite3.connect(state)) as db:
            (on_disk,) = db.execute(
                "SELECT value FROM counters WHERE credential_hash = ?", (counter_key(cred),)
            ).fetchone()
        assert on_disk == 2 * RESERVE_BLOCK  # the reservation, ahead of the last value
        assert auth.counter(cred) == RESERVE_BLOCK + 1


def test_another_connection_s_change_is_seen(tmp_path: Path) -> None:
    """A counter set through another Store (another process, or an offline tool) wins over
    the values cached here (PRAGMA data_version)."""
    state = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state) as auth:
        cred = _make(auth)
        assert [_sign(auth, cred) for _ in range(2)] == [1, 2]
        other = Store(state)
        other.set_counter(cred, 1000)
        other.close()
        assert auth.counter(cred) == 1000
        assert _sign(auth, cred) == 1001


def test_a_rolled_back_set_counter_is_forgotten(tmp_path: Path) -> None:
    with Authenticator("ctap2.1", tmp_path / "key.sqlite3") as auth:
        cred = _make(auth)
        assert _sign(auth, cred) == 1
        with pytest.raises(RuntimeError), auth.store.transaction():
            auth.set_counter(cred, 500)
            raise RuntimeError
        # The 500 never happened; what was handed out before stays behind the next value
        # (the cache went with the rollback, so it resumes above the reservation).
        assert 1 <= auth.counter(cred) <= RESERVE_BLOCK
        assert 1 < _sign(auth, cred) <= RESERVE_BLOCK + 1


def test_deleting_a_credential_forgets_its_counter(tmp_path: Path) -> None:
    with Authenticator("ctap2.1", tmp_path / "key.sqlite3") as auth:
        cred = _make(auth, rk=True)
        _sign(auth, cred)
        assert auth.delete_credential(cred)
        assert auth.counter(cred) == 0
        info = auth.store.counter_totals()
        assert info == (0, 0)


def test_info_reports_signatures_not_reservations(tmp_path: Path) -> None:
    from softkey.tools.admin import info

    with Authenticator("ctap2.1", tmp_path / "key.sqlite3") as auth:
        a, b = _make(auth, b"a"), _make(auth, b"b")
        for _ in range(3):
            _sign(auth, a)
        _sign(auth, b)
        assert info(auth)["counters"] == {"credentials": 2, "signatures": 4}
