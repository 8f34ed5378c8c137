"""Cached meta values and the "any credential properties" flag (store.py "cached values"):
a request sees another connection's commit (PRAGMA data_version), a rolled-back transaction
forgets what it wrote, and a request reads no meta row once the values are known."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from softkey.authenticator import Authenticator, cbor
from softkey.authenticator.ctap import FLAG_BE, FLAG_BS, Status
from softkey.authenticator.store import Store

RP = "cache.example"


def _make_credential(auth: Authenticator, user: bytes) -> bytes:
    body = {1: b"\0" * 32, 2: {"id": RP}, 3: {"id": user}, 4: [{"alg": -7, "type": "public-key"}]}
    return auth.handle_cbor(b"\x01" + cbor.encode(body))


def _credential_id(response: bytes) -> bytes:
    auth_data = cbor.decode(response[1:])[2]
    length = int.from_bytes(auth_data[53:55], "big")
    return bytes(auth_data[55 : 55 + length])


def _assertion_flags(auth: Authenticator, credential_id: bytes) -> int:
    body = {1: RP, 2: b"\0" * 32, 3: [{"type": "public-key", "id": credential_id}]}
    response = auth.handle_cbor(b"\x02" + cbor.encode(body))
    assert response[0] == 0, response
    return cbor.decode(response[1:])[2][32]


def _other_connection(path: Path, sql: str, args: tuple) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql, args)
        db.commit()


def test_another_connections_always_uv_toggle_is_seen_by_the_next_request(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state=path) as auth:
        assert _make_credential(auth, b"before")[0] == 0  # always_uv read (off) and cached
        _other_connection(path, "INSERT INTO meta (name, value) VALUES ('always_uv', ?)", (b"1",))
        # alwaysUv on, no PIN: makeCredential now needs one (CTAP 2.1 §6.1.2 step 5).
        assert _make_credential(auth, b"after")[0] == Status.PIN_NOT_SET
        _other_connection(path, "DELETE FROM meta WHERE name = 'always_uv'", ())
        assert _make_credential(auth, b"again")[0] == 0


def test_another_connections_credential_properties_are_seen_by_the_next_request(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.1", state=path) as auth:
        credential_id = _credential_id(_make_credential(auth, b"u"))
        # No properties anywhere: the flag says so, and no per-credential lookup happens.
        assert _assertion_flags(auth, credential_id) & (FLAG_BE | FLAG_BS) == 0
        _other_connection(
            path,
            "INSERT INTO credential_properties (credential_id, backup_eligible, backup_state) "
            "VALUES (?, 1, 1)",
            (credential_id,),
        )
        assert _assertion_flags(auth, credential_id) & (FLAG_BE | FLAG_BS) == FLAG_BE | FLAG_BS


def test_own_writes_update_the_cache_and_a_rollback_forgets_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "key.sqlite3")
    assert store.get_meta("always_uv") is None
    store.set_int("always_uv", 1)
    assert store.get_int("always_uv") == 1
    with pytest.raises(RuntimeError), store.transaction():
        store.set_int("always_uv", 0)
        assert store.get_int("always_uv") == 0
        raise RuntimeError("roll back")
    assert store.get_int("always_uv") == 1
    store.delete_meta("always_uv")
    assert store.get_meta("always_uv") is None
    assert store.get_properties(b"x" * 40) is None
    store.set_properties(b"x" * 40, True, False)
    assert store.get_properties(b"x" * 40) == (True, False)
    store.close()


def test_a_request_reads_no_meta_row_once_known(tmp_path: Path) -> None:
    with Authenticator("ctap2.1", state=tmp_path / "key.sqlite3") as auth:
        assert _make_credential(auth, b"warm")[0] == 0
        statements: list[str] = []
        auth.store._db.set_trace_callback(statements.append)
        try:
            assert _make_credential(auth, b"u")[0] == 0
        finally:
            auth.store._db.set_trace_callback(None)
        assert not [s for s in statements if "FROM meta" in s or "credential_properties" in s]
