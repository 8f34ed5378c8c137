"""Credential enumeration from stored rows (credman.py, store.py schema 5): the COSE public key
and thirdPartyPayment are kept with each resident credential, so enumerateCredentials* read the
RP's rows once and unwrap nothing. What python-fido2's CredentialManagement receives must be
exactly what the old per-entry unwrapping produced, for new rows and for rows written before
schema 5 (filled in by their first enumeration), and a schema-4 state file migrates.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin

from softkey.authenticator import Authenticator, cose
from softkey.authenticator.extensions import THIRD_PARTY_PAYMENT
from softkey.authenticator.imported import add_credential
from softkey.authenticator.keywrap import KeyWrapper
from softkey.authenticator.store import SCHEMA_VERSION
from softkey.transports.inprocess import VirtualCtapDevice

R = CredentialManagement.RESULT
RP = "example.com"
PIN = "12345678"
ES256 = [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}]


def _rp_hash(rp: str = RP) -> bytes:
    return hashlib.sha256(rp.encode()).digest()


def _pin_token(ctap: Ctap2, permissions: int, rp: str | None = None) -> tuple[ClientPin, bytes]:
    client_pin = ClientPin(ctap)
    return client_pin, client_pin.get_pin_token(PIN, permissions, rp)


def _enumerate(auth: Authenticator, rp: str = RP) -> list[dict[int, Any]]:
    ctap = Ctap2(VirtualCtapDevice(auth))
    client_pin, token = _pin_token(ctap, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    manager = CredentialManagement(ctap, client_pin.protocol, token)
    return [dict(entry) for entry in manager.enumerate_creds(_rp_hash(rp))]


def _reference(auth: Authenticator, rp: str = RP) -> list[dict[int, Any]]:
    """What the pre-schema-5 code sent: each entry built from the unwrapped private key."""
    creds = auth.store.list_resident(_rp_hash(rp))
    entries = []
    for cred in creds:
        user: dict[str, Any] = {"id": cred.user_id}
        if cred.user_name is not None:
            user["name"] = cred.user_name
        if cred.user_display_name is not None:
            user["displayName"] = cred.user_display_name
        if cred.user_icon is not None:
            user["icon"] = cred.user_icon
        entry: dict[int, Any] = {
            R.USER: user,
            R.CREDENTIAL_ID: {"id": cred.credential_id, "type": "public-key"},
            R.CRED_PROTECT: cred.cred_protect,
        }
        secrets = auth.secrets_of(cred.credential_id, cred.rp_id_hash)
        if secrets is not None:
            entry[R.PUBLIC_KEY] = cose.public_cose(secrets.alg, secrets.private_key)
        if cred.large_blob_key is not None:
            entry[R.LARGE_BLOB_KEY] = cred.large_blob_key
        if THIRD_PARTY_PAYMENT in auth.extensions:
            entry[R.THIRD_PARTY_PAYMENT] = secrets is not None and secrets.third_party_payment
        entries.append(entry)
    entries[0][R.TOTAL_CREDENTIALS] = len(creds)
    return entries


def _populate(auth: Authenticator, profile_has_tpp: bool) -> None:
    """Resident credentials with and without names, icons, large-blob keys, every credProtect
    level, thirdPartyPayment where the profile has it, two algorithms and an imported one."""
    ctap = Ctap2(VirtualCtapDevice(auth))
    client_pin = ClientPin(ctap)
    client_pin.set_pin(PIN)
    for i in range(9):
        cdh = os.urandom(32)
        _, token = _pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP)
        user: dict[str, Any] = {"id": b"user%d" % i}
        if i % 3:
            user["name"] = f"user {i}"
        if i % 2:
            user["displayName"] = f"User {i}"
        if i == 4 and auth.profile.icons:
            user["icon"] = "https://example.com/u.png"
        extensions: dict[str, Any] = {"credProtect": 1 + i % 3}
        if i in (2, 5):
            extensions["largeBlobKey"] = True
        if profile_has_tpp and i % 4 == 1:
            extensions["thirdPartyPayment"] = True
        extensions = {k: v for k, v in extensions.items() if k in auth.extensions}
        ctap.make_credential(
            cdh,
            {"id": RP, "name": "Example"},
            user,
            ES256[i % 2 :] + ES256[: i % 2],
            options={"rk": True},
            extensions=extensions,
            pin_uv_param=client_pin.protocol.authenticate(token, cdh),
            pin_uv_protocol=client_pin.protocol.VERSION,
        )
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    add_credential(
        auth, os.urandom(30), RP, pem, user_handle=b"imported", user_name="imp", resident=True
    )


def _forget_stored_keys(path: Path) -> None:
    """Rows as a schema-4 softkey wrote them: no public key, no thirdPartyPayment."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE credentials SET public_key = NULL, third_party_payment = NULL")
        db.commit()


def _count_unwraps(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = KeyWrapper.unwrap

    def counting(self: KeyWrapper, credential_id: bytes, rp_id_hash: bytes):  # type: ignore[no-untyped-def]
        calls.append(credential_id)
        return real(self, credential_id, rp_id_hash)

    monkeypatch.setattr(KeyWrapper, "unwrap", counting)
    return calls


@pytest.mark.parametrize(
    ("profile", "tpp"), [("ctap2.1", False), ("ctap2.1-pre", False), ("ctap2.2", True)]
)
def test_enumeration_equals_the_unwrapping_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, tpp: bool
) -> None:
    path = tmp_path / "key.sqlite3"
    with Authenticator(profile, path) as auth:
        _populate(auth, tpp)
        expected = _reference(auth)
        assert len(expected) == 10
        calls = _count_unwraps(monkeypatch)
        assert _enumerate(auth) == expected
        assert calls == []  # every row carries its key: nothing unwrapped
    monkeypatch.undo()

    _forget_stored_keys(path)
    with Authenticator(state=path) as auth:
        calls = _count_unwraps(monkeypatch)
        assert _enumerate(auth) == expected  # derived once for the old rows ...
        assert len(calls) == 10
        assert _enumerate(auth) == expected  # ... and kept
        assert len(calls) == 10
    with closing(sqlite3.connect(path)) as db:
        missing = db.execute(
            "SELECT COUNT(*) FROM credentials WHERE public_key IS NULL "
            "OR third_party_payment IS NULL"
        ).fetchone()[0]
    assert missing == 0


def _downgrade_to_schema_4(path: Path) -> None:
    """What a schema-4 softkey left: no public_key / third_party_payment, no index."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX credentials_by_rp")
        db.execute("ALTER TABLE credentials DROP COLUMN public_key")
        db.execute("ALTER TABLE credentials DROP COLUMN third_party_payment")
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (b"4",))
        db.commit()


def _schema(path: Path) -> tuple[set[str], set[str]]:
    with closing(sqlite3.connect(path)) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(credentials)")}
        indexes = {r[1] for r in db.execute("PRAGMA index_list(credentials)")}
    return columns, indexes


def test_a_schema_4_state_migrates(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 5
    path = tmp_path / "key.sqlite3"
    with Authenticator("ctap2.2", path) as auth:
        _populate(auth, True)
        expected = _reference(auth)
        cred = auth.credentials(RP)[-1].credential_id
        ctap = Ctap2(VirtualCtapDevice(auth))
        counters = [
            ctap.get_assertion(
                RP, os.urandom(32), [{"type": "public-key", "id": cred}]
            ).auth_data.counter
            for _ in range(3)
        ]
    _downgrade_to_schema_4(path)
    columns, indexes = _schema(path)
    assert "public_key" not in columns and "credentials_by_rp" not in indexes

    with Authenticator(state=path) as auth:
        assert auth.store.get_int("schema_version") == SCHEMA_VERSION
        columns, indexes = _schema(path)
        assert {"public_key", "third_party_payment"} <= columns
        assert "credentials_by_rp" in indexes
        assert _enumerate(auth) == expected
        # Discoverable credentials and their counters carry over.
        ctap = Ctap2(VirtualCtapDevice(auth))
        first = ctap.get_assertion(RP, os.urandom(32))
        assert first.number_of_credentials == sum(c[R.CRED_PROTECT] == 1 for c in expected)
        got = ctap.get_assertion(RP, os.urandom(32), [{"type": "public-key", "id": cred}])
        assert got.auth_data.counter == counters[-1] + 1


def test_enumeration_is_a_snapshot_of_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Begin reads the RP's rows once; each GetNextCredential asks the store for nothing."""
    auth = Authenticator("ctap2.1")
    _populate(auth, False)
    statements: list[str] = []
    ctap = Ctap2(VirtualCtapDevice(auth))
    client_pin, token = _pin_token(ctap, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    manager = CredentialManagement(ctap, client_pin.protocol, token)
    auth.store._db.set_trace_callback(statements.append)
    first = manager.enumerate_creds_begin(_rp_hash())
    reads_at_begin = sum("FROM credentials" in s for s in statements)
    rest = [manager.enumerate_creds_next() for _ in range(first[R.TOTAL_CREDENTIALS] - 1)]
    assert reads_at_begin == 1
    assert sum("FROM credentials" in s for s in statements) == 1
    assert [dict(first)] + [dict(e) for e in rest] == _reference(auth)
