"""One writer at a time per state (issue: local trust boundary, item 3).

Without the lock, `softkey fill` running while `softkey reset` ran in another process reported
success but left thousands of rows wrapped under the pre-reset master key: unusable, yet taking
slots. Here fill, reset, delete and import race in real processes, round after round, and then
every stored row must unwrap under the key's current master key.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from softkey.authenticator import Authenticator
from softkey.authenticator.store import StateLock, lock_path

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 4


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env={**_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _last_seq(state: Path) -> int:
    """The newest credential's insertion number, read as a bystander (read-only, no lock)."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT coalesce(max(seq), 0) FROM credentials").fetchone()[0]
    finally:
        db.close()


def _unusable_rows(state: Path) -> tuple[int, int]:
    """(rows, rows that do not unwrap under the current master key)."""
    with Authenticator(state=state) as auth:
        rows = auth.store.list_resident()
        bad = [r for r in rows if auth.wrapper.unwrap(r.credential_id, r.rp_id_hash) is None]
        return len(rows), len(bad)


def test_racing_writers_never_leave_a_row_that_cannot_be_unwrapped(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    export = tmp_path / "export.json"
    seed = _spawn("fill", "--state", str(state), "--profile", "unlimited-rk", "--count", "5")
    assert seed.wait(60) == 0
    # With a PIN, fill commits every credential on its own (tools/admin.py): a reset, delete or
    # import from another process could land between two of them if nothing serialised them.
    pin = _spawn("pin", "set", "--state", str(state), env={"SOFTKEY_NEW_PIN": "123456"})
    assert pin.wait(60) == 0
    assert _spawn("export", "--state", str(state), str(export)).wait(60) == 0
    for _ in range(ROUNDS):
        filler = _spawn(
            "fill", "--state", str(state), "--count", "150", env={"SOFTKEY_PIN": "123456"}
        )
        # Start the others once fill has written its first credential of this round.
        start = _last_seq(state)
        deadline = time.monotonic() + 30
        while _last_seq(state) == start and filler.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        others = [
            _spawn("reset", "--state", str(state), "--yes"),
            _spawn("credentials", "delete", "--state", str(state), "--all", "--yes"),
            _spawn("import", "--state", str(state), str(export), "--force"),
        ]
        outputs = {}
        for proc in (filler, *others):
            out, err = proc.communicate(timeout=120)
            outputs[proc.args[3]] = out + err
            assert "Traceback" not in err, err
            assert "database is locked" not in err, err
            assert proc.returncode in (0, 1), (proc.args, err)
        # fill ran from its first credential to its last with nothing in between: all made.
        assert filler.returncode == 0, outputs
        assert "created 150 resident credentials" in outputs["fill"], outputs
        rows, bad = _unusable_rows(state)
        assert bad == 0, f"{bad} of {rows} rows were wrapped under a master key that is gone"
        # Put the PIN back for the next round's fill if the reset went last.
        with Authenticator(state=state) as auth:
            pin_is_set = auth.pin_uv.is_set
        if not pin_is_set:
            again = _spawn("pin", "set", "--state", str(state), env={"SOFTKEY_NEW_PIN": "123456"})
            assert again.wait(60) == 0
    assert not lock_path(state).exists()  # nothing left behind once every writer is done


def test_a_running_key_does_not_start_while_an_offline_writer_holds_the_state(
    tmp_path: Path,
) -> None:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    lock = StateLock(state)
    assert lock.acquire(blocking=False)
    try:
        run = _spawn(
            "run", "--transport", "udp", "--port", "0", "--presence", "auto", "--state", str(state)
        )
        out, err = run.communicate(timeout=60)
    finally:
        lock.release()
    assert run.returncode == 1, err
    assert "another softkey process is changing this key" in err and "Traceback" not in err


def test_an_offline_verb_waits_for_the_writer_then_proceeds(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    lock = StateLock(state)
    assert lock.acquire(blocking=False)
    try:
        filler = _spawn("fill", "--state", str(state), "--count", "3")
        deadline = time.monotonic() + 30
        while True:  # it says it waits, and does not write meanwhile
            assert filler.poll() is None, filler.communicate()
            with Authenticator(state=state) as auth:
                assert auth.store.resident_count() == 0
            if time.monotonic() > deadline:
                raise AssertionError("fill never said it was waiting")
            if filler.stderr is not None:
                line = filler.stderr.readline()
                if "waiting for another softkey process" in line:
                    break
    finally:
        lock.release()
    out, err = filler.communicate(timeout=60)
    assert filler.returncode == 0, err
    with Authenticator(state=state) as auth:
        assert auth.store.resident_count() == 3


def test_a_second_lock_on_the_same_state_is_refused_until_released(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    first = StateLock(state)
    assert first.acquire(blocking=False)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from softkey.authenticator.store import StateLock as L; "
            "sys.exit(0 if L(sys.argv[1]).acquire(blocking=False) else 3)",
            str(state),
        ],
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert probe.returncode == 3
    first.release()
    assert not lock_path(state).exists()
    second = StateLock(state)
    assert second.acquire(blocking=False)
    second.release()
