"""Maintained slot and per-RP counts (store.py "cached values"): always what COUNT(*) says,
after this Store's own writes, a rolled-back transaction, a reset, and another connection's
commits (PRAGMA data_version); and no COUNT(*) per request once known."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from softkey.authenticator import Authenticator, cbor
from softkey.authenticator.store import ResidentCredential, Store


def _hash(rp: str) -> bytes:
    return hashlib.sha256(rp.encode()).digest()


def _cred(rp: str, user: bytes, level: int = 1) -> ResidentCredential:
    return ResidentCredential(
        credential_id=os.urandom(40),
        rp_id=rp,
        rp_id_hash=_hash(rp),
        user_id=user,
        cred_protect=level,
    )


def _truth(path: Path) -> tuple[int, dict[bytes, tuple[int, int]]]:
    """The counts as a fresh connection computes them."""
    with closing(sqlite3.connect(path)) as db:
        total = db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0]
        per_rp = {
            bytes(h): (n, low)
            for h, n, low in db.execute(
                "SELECT rp_id_hash, COUNT(*), SUM(cred_protect < 2) FROM credentials "
                "GROUP BY rp_id_hash"
            )
        }
    return total, per_rp


def _check(store: Store, path: Path, rps: tuple[str, ...] = ("a.example", "b.example")) -> None:
    total, per_rp = _truth(path)
    assert store.resident_count() == total
    for rp in rps:
        assert store.rp_counts(_hash(rp)) == per_rp.get(_hash(rp), (0, 0)), rp


def test_counts_follow_every_kind_of_change(tmp_path: Path) -> None:
    path = tmp_path / "key.sqlite3"
    store = Store(path)
    _check(store, path)  # both cached from here on
    creds = [_cred("a.example", b"u%d" % i, 1 + i % 3) for i in range(6)]
    creds.append(_cred("b.example", b"u0", 2))
    for cred in creds:
        assert store.put_resident(cred)
        _check(store, path)
    # Same RP and user: replaces the slot (level 3 -> 1), the count stays.
    assert store.put_resident(_cred("a.example", b"u2", 1))
    _check(store, path)
    assert store.delete_resident(creds[0].credential_id)
    assert not store.delete_resident(creds[0].credential_id)
    _check(store, path)
    # A full key refuses and changes nothing.
    assert not store.put_resident(_cred("a.example", b"new"), capacity=store.resident_count())
    _check(store, path)
    # A transaction that fails takes its changes to the counts with it.
    with pytest.raises(RuntimeError), store.transaction():
        store.put_resident(_cred("a.example", b"rolled-back"))
        store.delete_resident(creds[1].credential_id)
        raise RuntimeError
    _check(store, path)
    # Another connection's inserts and deletes (another process, an offline tool).
    other = Store(path)
    other.put_resident(_cred("b.example", b"theirs", 1))
    other.delete_resident(creds[3].credential_id)
    other.close()
    _check(store, path)
    with closing(sqlite3.connect(path)) as db:  # even a plain SQLite client
        db.execute("DELETE FROM credentials WHERE rp_id_hash = ?", (_hash("b.example"),))
        db.commit()
    _check(store, path)
    store.wipe()
    _check(store, path)
    assert store.resident_count() == 0
    store.close()


def _make_request(user: bytes) -> bytes:
    return b"\x01" + cbor.encode(
        {
            1: os.urandom(32),
            2: {"id": "a.example"},
            3: {"id": user},
            4: [{"type": "public-key", "alg": -7}],
            7: {"rk": True},
        }
    )


def test_no_count_query_per_request(tmp_path: Path) -> None:
    """What `softkey run` does after every request (tools/run.py refresh_slots) must not scan
    the slot table each time."""
    auth = Authenticator("unlimited-rk", tmp_path / "key.sqlite3")
    assert auth.handle_cbor(_make_request(b"first"))[0] == 0
    auth.store.resident_count()
    statements: list[str] = []
    auth.store._db.set_trace_callback(statements.append)
    for i in range(5):
        assert auth.handle_cbor(_make_request(b"u%d" % i))[0] == 0
        assert auth.store.resident_count() == 2 + i
        assert auth.remaining_discoverable() is None
    assert statements  # the trace sees the requests' own statements ...
    assert not [s for s in statements if "COUNT(" in s.upper()]  # ... and no count
    auth.close()
