"""`softkey export` / `softkey import`: the whole key state in one versioned file.

File format (JSON, UTF-8), version 1::

    {
      "format": "softkey-state-export",
      "version": 1,
      "profile": "yubikey-5",            # informational
      "encryption": null,                # or the object below
      "state": {                         # absent when encrypted
        "schema_version": 1,             # authenticator/store.py SCHEMA_VERSION
        "tables": {"meta": {"columns": [...], "rows": [[...], ...]}, ...}
      },
      "ciphertext": "<base64>"           # only when encrypted: AES-256-GCM of the state JSON
    }

Every SQLite table of the state is exported row by row (so new tables added by later
features travel without a format change); blobs are ``{"hex": "..."}``. The master key is in
the ``meta`` table: an unencrypted export is as sensitive as the key itself, hence the file is
written 0600 and ``--passphrase`` encrypts it:

    "encryption": {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64 16 B>",
                   "cipher": "AES-256-GCM", "nonce": "<base64 12 B>"}

The AES-GCM associated data is the canonical JSON of the header (format, version, profile,
encryption), so a header edited in transit fails authentication like a wrong passphrase.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from softkey.authenticator import Authenticator, StateError, private_files
from softkey.authenticator.profiles import PROFILES
from softkey.authenticator.store import SCHEMA_VERSION, StateLock, Store
from softkey.tools import paths

FORMAT = "softkey-state-export"
VERSION = 1
# scrypt at N=2^17, r=8 takes 128 MiB and ~0.3 s here: the cost an attacker pays per guess.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# scrypt needs 128·r·N bytes; an export file is untrusted input, so its header may not make us
# allocate more than this (a crafted N=2^30 would otherwise ask for a terabyte).
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
LOCK_WAIT_SECONDS = 120.0
_MAX_FILE = 64 * 1024 * 1024


class ExportError(Exception):
    """Export/import refused; the message is one sentence saying what to do."""


# -- reading a state file without disturbing a running key --------------------------------------


def _connect_existing(state: Path) -> sqlite3.Connection:
    try:
        private_files.check_directory(state.parent)
        if not private_files.check_existing(state, what="state file"):
            raise ExportError(f"there is no key state at {state}")
    except private_files.PrivateFileError as exc:
        raise ExportError(str(exc)) from None
    try:
        # Plain reads in one deferred transaction: a consistent snapshot even while a running
        # key writes (WAL lets readers and one writer proceed concurrently).
        uri = "file:" + urllib.parse.quote(str(state.absolute())) + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=10)
        db.execute("BEGIN")
        return db
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"{state} is not a softkey state file ({exc})") from None


def _encode_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"hex"} or not isinstance(value["hex"], str):
            raise ExportError("the export file has a malformed value; it is damaged")
        try:
            return bytes.fromhex(value["hex"])
        except ValueError:
            raise ExportError("the export file has a malformed value; it is damaged") from None
    if value is None or isinstance(value, (int, str, float)) and not isinstance(value, bool):
        return value
    raise ExportError("the export file has a malformed value; it is damaged")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snapshot(state: Path) -> dict[str, Any]:
    """Every table of the state file, as JSON-able rows."""
    db = _connect_existing(state)
    try:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        if "meta" not in names:
            raise ExportError(f"{state} is not a softkey state file (no meta table)")
        tables: dict[str, Any] = {}
        for name in names:
            cursor = db.execute(f"SELECT * FROM {_quote(name)}")
            columns = [d[0] for d in cursor.description]
            rows = [[_encode_value(v) for v in row] for row in cursor.fetchall()]
            tables[name] = {"columns": columns, "rows": rows}
        meta = {r[0]: r[1] for r in db.execute("SELECT name, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"{state} is not a softkey state file ({exc})") from None
    finally:
        db.close()
    schema = int(bytes(meta.get("schema_version", b"1")))
    if "master_key" not in meta:
        raise ExportError(f"{state} has no master key yet; start the key once, then export")
    return {
        "profile": bytes(meta["profile"]).decode() if "profile" in meta else None,
        "schema_version": schema,
        "tables": tables,
    }


def peek(state: Path) -> dict[str, Any]:
    """Profile and slot usage of a state file, read-only (for `softkey keys`)."""
    db = _connect_existing(state)
    try:
        profile = db.execute("SELECT value FROM meta WHERE name = 'profile'").fetchone()
        used = db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"{state} is not a softkey state file ({exc})") from None
    finally:
        db.close()
    return {"profile": bytes(profile[0]).decode() if profile else None, "used": used}


# -- the file -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ExportError(f"the export file's {what} is not base64; it is damaged") from None


def _header_aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    try:
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    except (MemoryError, ValueError) as exc:
        raise ExportError(f"cannot derive the export's key ({exc or 'out of memory'})") from None


def write_private(path: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically
    (private_files.write_private_file); an existing file only with ``force``."""
    path = Path(path)
    if os.path.lexists(path) and not force:
        raise ExportError(f"{path} already exists; choose another file or pass --force")
    try:
        private_files.write_private_file(path, data, what="export file")
    except private_files.PrivateFileError as exc:
        raise ExportError(str(exc)) from None


def export_state(
    state: Path, out: Path, passphrase: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Write the export file; returns a summary (no secrets)."""
    snap = snapshot(Path(state))
    body = {"schema_version": snap["schema_version"], "tables": snap["tables"]}
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "profile": snap["profile"],
        "encryption": None,
    }
    document: dict[str, Any]
    if passphrase:
        salt, nonce = os.urandom(16), os.urandom(12)
        header["encryption"] = {
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": _b64(salt),
            "cipher": "AES-256-GCM",
            "nonce": _b64(nonce),
        }
        key = _kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        plaintext = json.dumps(body, separators=(",", ":")).encode()
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, _header_aad(header))
        document = {**header, "ciphertext": _b64(ciphertext)}
    else:
        document = {**header, "state": body}
    write_private(Path(out), (json.dumps(document, indent=1) + "\n").encode(), force=force)
    credentials = snap["tables"].get("credentials", {}).get("rows", [])
    profile = PROFILES.get(snap["profile"] or "")
    return {
        "file": str(out),
        "profile": snap["profile"],
        "encrypted": bool(passphrase),
        "resident_credentials": _slots(len(credentials), profile.rk_capacity if profile else None),
    }


def _slots(used: int, capacity: int | None) -> dict[str, int | None]:
    """The same {used, capacity, free} every other verb reports (tools/admin.slot_usage)."""
    return {
        "used": used,
        "capacity": capacity,
        "free": None if capacity is None else max(0, capacity - used),
    }


def read_export(path: Path) -> dict[str, Any]:
    """The parsed export document (still encrypted if it was)."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ExportError(f"{path} is too large to be a softkey export")
        document = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ExportError(f"{path} is not a softkey export file") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ExportError(f"{path} is not a softkey export file")
    version = document.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ExportError(
            f"{path} uses export format {version!r}, newer than this softkey reads "
            f"({VERSION}); upgrade softkey"
        )
    return document


def is_encrypted(document: dict[str, Any]) -> bool:
    return document.get("encryption") is not None


def decrypt(document: dict[str, Any], passphrase: str | None) -> dict[str, Any]:
    """The state body of an export document, decrypting it if needed."""
    enc = document.get("encryption")
    if enc is None:
        body = document.get("state")
        if not isinstance(body, dict):
            raise ExportError("the export file has no state; it is damaged")
        return body
    if not passphrase:
        raise ExportError("this export is encrypted; give its passphrase (--passphrase)")
    if (
        not isinstance(enc, dict)
        or enc.get("kdf") != "scrypt"
        or enc.get("cipher") != "AES-256-GCM"
    ):
        raise ExportError("the export uses an encryption this softkey does not know; upgrade")
    n, r, p = enc.get("n"), enc.get("r"), enc.get("p")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
        raise ExportError("the export's key-derivation parameters are malformed; it is damaged")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if not (1 < n and n & (n - 1) == 0 and 0 < r and 0 < p and r * p <= 64):
        raise ExportError("the export's key-derivation parameters are malformed; it is damaged")
    if 128 * r * n > MAX_SCRYPT_MEMORY:
        raise ExportError(
            f"the export asks for {128 * r * n // 2**20} MiB of memory to derive its key, more "
            f"than softkey allows ({MAX_SCRYPT_MEMORY // 2**20} MiB); refusing a file that "
            "was not made by softkey"
        )
    salt = _unb64(enc.get("salt"), "salt")
    nonce = _unb64(enc.get("nonce"), "nonce")
    ciphertext = _unb64(document.get("ciphertext"), "ciphertext")
    header = {k: document.get(k) for k in ("format", "version", "profile", "encryption")}
    key = _kdf(passphrase, salt, n, r, p)
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _header_aad(header))
    except (InvalidTag, ValueError):
        raise ExportError(
            "wrong passphrase (or the export file was modified); retry with the right one"
        ) from None
    body = json.loads(plaintext)
    if not isinstance(body, dict):
        raise ExportError("the export file has no state; it is damaged")
    return body


def _remove_state_files(state: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(state) + suffix).unlink(missing_ok=True)


def import_state(
    source: Path, state: Path, passphrase: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Create the key at ``state`` from an export; refuses to overwrite unless ``force``."""
    state = Path(state)
    if state.exists() and not force:
        raise ExportError(
            f"a key already exists at {state}; import into a new --key or pass --force to "
            "replace it (its credentials will be gone)"
        )
    body = decrypt(read_export(Path(source)), passphrase)
    schema = body.get("schema_version")
    tables = body.get("tables")
    if not isinstance(schema, int) or not isinstance(tables, dict):
        raise ExportError("the export file has no state; it is damaged")
    if schema > SCHEMA_VERSION:
        raise ExportError(
            f"the export holds state schema {schema}, newer than this softkey ({SCHEMA_VERSION})"
            "; upgrade softkey"
        )

    meta_table = tables.get("meta")
    meta_rows = meta_table.get("rows", []) if isinstance(meta_table, dict) else []
    meta_names = {r[0] for r in meta_rows if isinstance(r, list) and r}
    if not {"master_key", "profile"} <= meta_names:
        raise ExportError("the export holds no master key or profile; it is damaged")

    try:
        paths.prepare_state_dir(state)
    except paths.KeyPathError as exc:
        raise ExportError(str(exc)) from None
    # Replacing the file is a write like any other: hold the state's writer lock (a fill
    # running meanwhile would otherwise keep writing into the replaced file).
    lock = StateLock(state)
    try:
        if not lock.acquire(timeout=LOCK_WAIT_SECONDS):
            raise ExportError(
                f"another softkey process is changing the key at {state}; wait for it to "
                "finish (or stop it) and retry"
            )
    except StateError as exc:
        raise ExportError(str(exc)) from None
    try:
        return _import_locked(tables, state, force)
    finally:
        lock.release()


def _import_locked(tables: dict[str, Any], state: Path, force: bool) -> dict[str, Any]:
    if state.exists() and not force:  # checked again: another import may have won the lock
        raise ExportError(f"a key already exists at {state}; pass --force to replace it")
    tmp = state.with_name(f".{state.name}.import-{secrets.token_hex(8)}")
    _remove_state_files(tmp)
    try:
        store = Store(tmp)
        try:
            with store.transaction() as db:
                for name, table in tables.items():
                    _load_table(db, name, table)
        finally:
            store.close()
        # Must open as a key (profile known, master key present) before it replaces anything.
        try:
            Authenticator(state=tmp).close()
        except (StateError, ValueError) as exc:
            raise ExportError(f"the export does not hold a usable key: {exc}") from None
        _remove_state_files(state)
        os.replace(tmp, state)
    finally:
        _remove_state_files(tmp)
    with Authenticator(state=state) as auth:
        return {
            "state": str(state),
            "profile": auth.profile.name,
            "resident_credentials": _slots(auth.store.resident_count(), auth.profile.rk_capacity),
        }


def _load_table(db: sqlite3.Connection, name: Any, table: Any) -> None:
    if not isinstance(name, str) or not isinstance(table, dict):
        raise ExportError("the export file's tables are malformed; it is damaged")
    columns = table.get("columns")
    rows = table.get("rows")
    if (
        not isinstance(columns, list)
        or not isinstance(rows, list)
        or not all(isinstance(c, str) for c in columns)
    ):
        raise ExportError(f"the export's table {name!r} is malformed; it is damaged")
    known = {row[1] for row in db.execute(f"PRAGMA table_info({_quote(name)})").fetchall()}
    if not known:
        raise ExportError(
            f"the export holds a table {name!r} this softkey does not know; upgrade softkey"
        )
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ExportError(
            f"the export's table {name!r} has columns {unknown} this softkey does not know; "
            "upgrade softkey"
        )
    db.execute(f"DELETE FROM {_quote(name)}")
    marks = ", ".join("?" for _ in columns)
    cols = ", ".join(_quote(c) for c in columns)
    for row in rows:
        if not isinstance(row, list) or len(row) != len(columns):
            raise ExportError(f"the export's table {name!r} is malformed; it is damaged")
        try:
            db.execute(
                f"INSERT INTO {_quote(name)} ({cols}) VALUES ({marks})",
                [_decode_value(v) for v in row],
            )
        except sqlite3.DatabaseError as exc:
            raise ExportError(f"the export's table {name!r} is inconsistent ({exc})") from None
