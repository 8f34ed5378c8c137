"""SIGKILL `softkey fill --count 1000` (a real process, a file-backed state) at random points.

What the command reports as created is what its progress bar shows on a terminal ("250/1000",
updated after each committed chunk), so the test runs it with stderr on a pseudo-terminal,
reads the bar, and kills the process without warning: before it has reported anything, or a
random moment after a random amount of progress. After every kill the state must open and
pass SQLite's integrity check, every reported credential must be there, the credentials must
be exactly user-0001..user-N (fill commits whole chunks, so no gap and no half-written slot),
every credential ID must unwrap under the key's master key, and all of them must assert.
Finally an uninterrupted fill continues the numbering, and every credential's assertion
verifies against the public key credential management reports for it (python-fido2).
"""

from __future__ import annotations

import hashlib
import os
import pty
import random
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from fido2.cose import CoseKey
from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2

from softkey.authenticator import Authenticator
from softkey.authenticator.store import Store
from softkey.transports.inprocess import VirtualCtapDevice

REPO = Path(__file__).resolve().parents[2]
RP = "fill.softkey.test"  # `softkey fill`'s default RP
COUNT = 1000
PROFILE = "unlimited-rk"
PROGRESS = re.compile(rb"(\d+)/1000")


def _fill(state: Path, *extra: str, stderr: int | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "fill", "--state", str(state), *extra],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
    )


def _fill_and_kill(state: Path, rng: random.Random, after_progress: bool) -> tuple[int, str]:
    """Start a fill of 1000, kill it with SIGKILL; (credentials it reported, how killed)."""
    master, slave = pty.openpty()
    proc = _fill(state, "--profile", PROFILE, "--count", str(COUNT), stderr=slave)
    os.close(slave)
    # Kill at a random time (often before the first report), or once the bar shows a random
    # amount of progress plus a random few milliseconds (mid-chunk, mid-commit...).
    if not after_progress and rng.random() < 0.5:
        how, threshold, delay = "by time", None, rng.uniform(0.0, 0.6)
    else:
        how, threshold, delay = "after progress", rng.randrange(1, COUNT - 50), rng.uniform(0, 0.03)
    started = time.monotonic()
    output = b""
    reported = 0
    kill_at = started + delay if threshold is None else None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                break
            assert now - started < 60, "softkey fill neither progressed nor ended"
            timeout = 0.05 if kill_at is None else max(0.0, min(0.05, kill_at - now))
            readable, _, _ = select.select([master], [], [], timeout)
            if readable:
                try:
                    output += os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                shown = PROGRESS.findall(output)
                if shown:
                    reported = int(shown[-1])
                if threshold is not None and kill_at is None and reported >= threshold:
                    kill_at = time.monotonic() + delay
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # Whatever the bar printed before the kill landed counts as reported.
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        shown = PROGRESS.findall(output)
        reported = int(shown[-1]) if shown else 0
    finally:
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()
    return reported, f"{how} (delay {delay:.3f} s, threshold {threshold})"


def _check_state(state: Path, at_least: int, at_most: int, context: str) -> int:
    """The state opens, is intact and holds user-0001..user-N, all usable; returns N."""
    if not state.exists():
        assert at_least == 0, f"{context}: {at_least} reported, but no state file"
        return 0
    with closing(sqlite3.connect(state)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), context
    # The fills' profile: a kill before the first commit can leave a state without one.
    with Authenticator(PROFILE, state=state) as auth:
        creds = auth.credentials(RP)
        count = len(creds)
        assert at_least <= count <= at_most, f"{context}: {count} not in [{at_least}, {at_most}]"
        names = sorted(c.user_name or "" for c in creds)
        assert names == [f"user-{i:04d}" for i in range(1, count + 1)], context
        rp_hash = hashlib.sha256(RP.encode()).digest()
        for cred in creds:
            assert cred.user_id == (cred.user_name or "").encode(), context
            secrets = auth.wrapper.unwrap(cred.credential_id, rp_hash)
            assert secrets is not None and secrets.discoverable, context
        if count:
            got = Ctap2(VirtualCtapDevice(auth)).get_assertion(RP, os.urandom(32))
            assert (got.number_of_credentials or 1) == count, context
    return count


def test_sigkill_never_loses_a_reported_credential(tmp_path: Path) -> None:
    state = tmp_path / "crash.sqlite3"
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    count = 0
    any_reported = False
    for round_ in range(4):
        # Rounds 1 and 3 always wait for some progress, so some kills follow reports.
        reported, how = _fill_and_kill(state, rng, after_progress=round_ in (1, 3))
        any_reported |= reported > 0
        context = f"seed {seed}, round {round_}, killed {how}, {reported} reported"
        count = _check_state(state, count + reported, count + COUNT, context)
    assert any_reported, f"seed {seed}: no kill came after a report; the test proved little"

    # An uninterrupted fill continues where the killed ones stopped.
    proc = _fill(state, "--count", "25", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b'"created": 25' in out
    final = _check_state(state, count + 25, count + 25, f"seed {seed}, final fill")

    # Every credential works: its assertion verifies with the public key credential
    # management reports for it.
    with Authenticator(PROFILE, state=state) as auth:
        ctap = Ctap2(VirtualCtapDevice(auth))
        client_pin = ClientPin(ctap)
        client_pin.set_pin("crash-test-pin")
        token = client_pin.get_pin_token("crash-test-pin", ClientPin.PERMISSION.CREDENTIAL_MGMT)
        credman = CredentialManagement(ctap, client_pin.protocol, token)
        result = CredentialManagement.RESULT
        keys = {
            c[result.CREDENTIAL_ID]["id"]: CoseKey.parse(c[result.PUBLIC_KEY])
            for c in credman.enumerate_creds(hashlib.sha256(RP.encode()).digest())
        }
        assert len(keys) == final
        client_data_hash = os.urandom(32)
        first = ctap.get_assertion(RP, client_data_hash)
        assertions = [first] + [ctap.get_next_assertion() for _ in range(final - 1)]
        assert {a.credential["id"] for a in assertions} == set(keys)
        for assertion in assertions:
            assertion.verify(client_data_hash, keys[assertion.credential["id"]])


_WRITER = """
import sys
from softkey.authenticator.store import Store
store = Store(sys.argv[1])
for i in range(100):
    store.set_meta(f"{sys.argv[2]}{i}", b"x" * 2000)
store.close()
"""


def test_a_second_store_in_one_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Regression: Store used to open and close the database file before connecting. Closing
    any descriptor of a file drops all of the process's POSIX locks on it, so the first
    connection looked gone; another process then checkpointed and deleted the WAL under it,
    and transactions that process had committed were lost."""
    path = tmp_path / "two.sqlite3"

    def writer(tag: str) -> None:
        subprocess.run([sys.executable, "-c", _WRITER, str(path), tag], cwd=REPO, check=True)

    first = Store(path)
    first.set_meta("first", b"1")
    Store(path).close()  # e.g. a reader opening the same state in this process
    writer("b")
    for i in range(100):
        first.set_meta(f"p{i}", b"y" * 2000)
    writer("c")  # committed by another process while `first` is still open
    for i in range(100):
        first.set_meta(f"q{i}", b"z" * 2000)
    first.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counts = [
            db.execute("SELECT COUNT(*) FROM meta WHERE name LIKE ?", (f"{tag}%",)).fetchone()[0]
            for tag in "bcpq"
        ]
    assert counts == [100, 100, 100, 100]
