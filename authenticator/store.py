"""Persistent device state in SQLite: master key, resident-key slot table, counters, meta.

One transaction per state change (``BEGIN IMMEDIATE`` ... ``COMMIT``), WAL journal and
``synchronous=FULL`` for files, so a crash between two requests never loses a committed
credential nor leaves a half-written one. ``path=None`` keeps everything in memory.
State files and their -wal/-shm are created 0600 and checked (private_files.py) before SQLite
opens them; writers serialise on :class:`StateLock`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import private_files

# 2: credentials.created_at (wall-clock seconds; NULL for rows written by schema 1).
# 3: credentials.user_icon (user.icon on profiles that keep it; NULL for older rows).
# 4: tables imported_credentials (credentials with any ID, authenticator/imported.py) and
#    credential_properties (per-credential backup flags BE/BS, authenticator/backup.py).
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    seq               INTEGER PRIMARY KEY,  -- insertion order, most recent largest
    credential_id     BLOB NOT NULL UNIQUE,
    rp_id             TEXT NOT NULL,
    rp_id_hash        BLOB NOT NULL,
    rp_name           TEXT,
    user_id           BLOB NOT NULL,
    user_name         TEXT,
    user_display_name TEXT,
    cred_protect      INTEGER NOT NULL DEFAULT 1,
    large_blob_key    BLOB,
    created_at        INTEGER,
    user_icon         TEXT,
    UNIQUE (rp_id_hash, user_id)
);
CREATE TABLE IF NOT EXISTS counters (
    credential_hash BLOB PRIMARY KEY,
    value           INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS imported_credentials (
    credential_id BLOB PRIMARY KEY,      -- any bytes the operator chose (1-1023)
    rp_id         TEXT NOT NULL,
    rp_id_hash    BLOB NOT NULL,
    resident      INTEGER NOT NULL,      -- 1: also a row of credentials (it takes a slot)
    user_id       BLOB,                  -- a non-resident one's user handle, listing only
    nonce         BLOB NOT NULL,
    sealed        BLOB NOT NULL,         -- AES-256-GCM of the secrets (imported.py)
    created_at    INTEGER
);
CREATE TABLE IF NOT EXISTS credential_properties (
    credential_id   BLOB PRIMARY KEY,
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL
);
"""


class StateError(Exception):
    """The state file cannot be used (not ours, newer schema, unreadable)."""


@dataclass(frozen=True)
class ResidentCredential:
    credential_id: bytes
    rp_id: str
    rp_id_hash: bytes
    user_id: bytes
    rp_name: str | None = None
    user_name: str | None = None
    user_display_name: str | None = None
    cred_protect: int = 1
    large_blob_key: bytes | None = None
    # Insertion order (the seq column): larger is more recent. SQLite gives a new row
    # max(seq) + 1, so an overwritten credential becomes the most recent one.
    created: int = 0
    # When it was stored (Unix seconds, the store's wall clock); None for schema-1 rows.
    created_at: int | None = None
    # user.icon, kept only by profiles with ``icons`` (CTAP 2.0 §5.1); None for older rows.
    user_icon: str | None = None


_FIELDS = (
    "credential_id, rp_id, rp_id_hash, user_id, rp_name, user_name, user_display_name, "
    "cred_protect, large_blob_key, user_icon"
)
_COLUMNS = _FIELDS + ", seq, created_at"


def _row(row: tuple) -> ResidentCredential:
    return ResidentCredential(
        credential_id=bytes(row[0]),
        rp_id=row[1],
        rp_id_hash=bytes(row[2]),
        user_id=bytes(row[3]),
        rp_name=row[4],
        user_name=row[5],
        user_display_name=row[6],
        cred_protect=row[7],
        large_blob_key=bytes(row[8]) if row[8] is not None else None,
        user_icon=row[9],
        created=row[10],
        created_at=row[11],
    )


@dataclass(frozen=True)
class ImportedRow:
    """A row of imported_credentials: the private key stays sealed (imported.py opens it)."""

    credential_id: bytes
    rp_id: str
    rp_id_hash: bytes
    resident: bool
    user_id: bytes | None
    nonce: bytes
    sealed: bytes
    created_at: int | None = None


_IMPORTED_COLUMNS = "credential_id, rp_id, rp_id_hash, resident, user_id, nonce, sealed, created_at"


def _imported_row(row: tuple) -> ImportedRow:
    return ImportedRow(
        credential_id=bytes(row[0]),
        rp_id=row[1],
        rp_id_hash=bytes(row[2]),
        resident=bool(row[3]),
        user_id=bytes(row[4]) if row[4] is not None else None,
        nonce=bytes(row[5]),
        sealed=bytes(row[6]),
        created_at=row[7],
    )


def counter_key(credential_id: bytes) -> bytes:
    return hashlib.sha256(credential_id).digest()[:16]


# Descriptors this process holds on open state files (and their -wal/-shm), per inode. Closing
# *any* descriptor of a file drops every POSIX lock this process holds on it, SQLite's
# included (SQLite's "How To Corrupt" §2.2): a second Store on the same file must never close
# its checked descriptor while the first is open, or other processes would see the file
# unlocked and could checkpoint and delete the WAL under it (tests/tools/test_crash_safety.py).
# So the descriptors stay open until the last Store of that inode in this process closes.
_OPEN_FILES: dict[tuple[int, int], list[int]] = {}
_OPEN_USERS: dict[tuple[int, int], int] = {}
_OPEN_GUARD = threading.Lock()

# SQLite opens these by name next to the database; we create or check them first.
_SIDECARS = ("-wal", "-shm")


def lock_path(state: str | os.PathLike[str]) -> Path:
    """The lock file every writer of ``state`` holds (``NAME.sqlite3.lock``)."""
    return Path(str(state) + ".lock")


class StateLock:
    """The one-writer-at-a-time lock of a state file (flock on ``NAME.sqlite3.lock``).

    Every process that changes a key holds it for as long as it writes: ``softkey run`` for its
    whole life, an offline CLI verb for the whole verb. An Authenticator reads the master key
    once; a reset by another process between that read and a later write would leave rows
    wrapped under a key that no longer exists. A separate lock file (not the database) because
    import replaces the database file: a lock on the old inode would guard nothing.

    The lock file exists only while held: the holder removes it before letting go, so a
    command leaves nothing behind. A waiter that then wins the flock on the removed inode sees
    that the name no longer points to it and starts over (the usual unlink-safe lock loop).
    """

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self.path = lock_path(state)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; False if another process holds it (at once when not ``blocking``,
        else after ``timeout`` seconds; None waits as long as it takes)."""
        if self._fd is not None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            private_files.check_directory(self.path.parent)
        except private_files.PrivateFileError as exc:
            raise StateError(str(exc)) from None
        while True:
            try:
                fd = private_files.open_private(self.path, what="lock file")
            except private_files.PrivateFileError as exc:
                raise StateError(str(exc)) from None
            try:
                got = self._flock(fd, blocking, deadline)
                if got and self._still_named(fd):
                    self._fd = fd
                    return True
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if not got:
                return False

    @staticmethod
    def _flock(fd: int, blocking: bool, deadline: float | None) -> bool:
        if blocking and deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking or deadline is None or time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)

    def _still_named(self, fd: int) -> bool:
        """True if ``self.path`` still names the file ``fd`` locked (not removed by its last
        holder in the meantime)."""
        try:
            named = os.lstat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            # Remove the name while still holding the lock (see the class docstring).
            if self._still_named(self._fd):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class Store:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._inode: tuple[int, int] | None = None
        if self.path is None:
            self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            try:
                self._open_checked(self.path)
            except private_files.PrivateFileError as exc:
                raise StateError(str(exc)) from None
            try:
                self._db = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False, timeout=10
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                self._release_files()
                raise StateError(f"{self.path} is not a softkey state file ({exc})") from None
        try:
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self.get_meta("schema_version")
                if version is not None and int(version) > SCHEMA_VERSION:
                    raise StateError(
                        f"{self.path} was written by a newer softkey (schema {int(version)}); "
                        "upgrade softkey to open it"
                    )
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(credentials)")}
                if "created_at" not in columns:  # schema 1 -> 2
                    self._db.execute("ALTER TABLE credentials ADD COLUMN created_at INTEGER")
                if "user_icon" not in columns:  # schema 2 -> 3
                    self._db.execute("ALTER TABLE credentials ADD COLUMN user_icon TEXT")
                # schema 3 -> 4: the two new tables come from _SCHEMA's CREATE IF NOT EXISTS.
                if version is None or int(version) < SCHEMA_VERSION:
                    self.set_meta("schema_version", str(SCHEMA_VERSION).encode())
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(f"{self.path} is not a softkey state file ({exc})") from None
        except BaseException:
            self.close()
            raise

    def _open_checked(self, path: Path) -> None:
        """Create or check the file and its SQLite sidecars before SQLite opens them by name
        (private_files.py says what is checked and why). Directories are never created here:
        only the CLI makes its own data directory."""
        private_files.check_directory(path.parent)
        fd = private_files.open_private(path, what="state file")
        st = os.fstat(fd)
        inode = (st.st_dev, st.st_ino)
        with _OPEN_GUARD:
            if inode in _OPEN_FILES:
                # Already open and checked in this process: keep this descriptor too, until
                # the last user closes (closing it now would drop that user's locks).
                _OPEN_FILES[inode].append(fd)
                _OPEN_USERS[inode] += 1
                self._inode = inode
                return
            fds = [fd]
            try:
                for suffix in _SIDECARS:
                    fds.append(private_files.open_private(str(path) + suffix))
                # A rollback journal is only ever left by a crash in a non-WAL mode; check it
                # if present, never create one.
                private_files.check_existing(str(path) + "-journal")
            except BaseException:
                for each in fds:
                    os.close(each)
                raise
            _OPEN_FILES[inode] = fds
            _OPEN_USERS[inode] = 1
            self._inode = inode

    def _release_files(self) -> None:
        if self._inode is None:
            return
        with _OPEN_GUARD:
            _OPEN_USERS[self._inode] -= 1
            if _OPEN_USERS[self._inode] == 0:
                del _OPEN_USERS[self._inode]
                for fd in _OPEN_FILES.pop(self._inode):
                    os.close(fd)
        self._inode = None

    def close(self) -> None:
        self._db.close()
        self._release_files()

    # -- transactions -------------------------------------------------------------------

    _depth = 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic state change; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, name: str, value: bytes) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def delete_meta(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE name = ?", (name,))

    def get_int(self, name: str, default: int = 0) -> int:
        value = self.get_meta(name)
        return int(value) if value is not None else default

    def set_int(self, name: str, value: int) -> None:
        self.set_meta(name, str(value).encode())

    # -- resident credentials -------------------------------------------------------------

    def resident_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0]

    def list_resident(self, rp_id_hash: bytes | None = None) -> list[ResidentCredential]:
        """Most recent first (the order getNextAssertion walks)."""
        if rp_id_hash is None:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM credentials ORDER BY seq DESC"
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM credentials WHERE rp_id_hash = ? ORDER BY seq DESC",
                (rp_id_hash,),
            ).fetchall()
        return [_row(r) for r in rows]

    def get_resident(self, credential_id: bytes) -> ResidentCredential | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM credentials WHERE credential_id = ?", (credential_id,)
        ).fetchone()
        return _row(row) if row else None

    def find_resident(self, rp_id_hash: bytes, user_id: bytes) -> ResidentCredential | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM credentials WHERE rp_id_hash = ? AND user_id = ?",
            (rp_id_hash, user_id),
        ).fetchone()
        return _row(row) if row else None

    def put_resident(self, cred: ResidentCredential, capacity: int | None = None) -> bool:
        """Insert, replacing any credential for the same RP and user handle (same slot).

        False, and nothing written, if that needs a new slot and all ``capacity`` are used.
        """
        with self.transaction() as db:
            old = self.find_resident(cred.rp_id_hash, cred.user_id)
            if old is None and capacity is not None and self.resident_count() >= capacity:
                return False
            if old is not None:
                db.execute("DELETE FROM credentials WHERE credential_id = ?", (old.credential_id,))
                db.execute(
                    "DELETE FROM counters WHERE credential_hash = ?",
                    (counter_key(old.credential_id),),
                )
                self._forget_extras(old.credential_id)
            db.execute(
                f"INSERT INTO credentials ({_FIELDS}, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER))",
                (
                    cred.credential_id,
                    cred.rp_id,
                    cred.rp_id_hash,
                    cred.user_id,
                    cred.rp_name,
                    cred.user_name,
                    cred.user_display_name,
                    cred.cred_protect,
                    cred.large_blob_key,
                    cred.user_icon,
                ),
            )
        return True

    def update_user(
        self, credential_id: bytes, user_name: str | None, user_display_name: str | None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE credentials SET user_name = ?, user_display_name = ? "
                "WHERE credential_id = ?",
                (user_name, user_display_name, credential_id),
            )

    def delete_resident(self, credential_id: bytes) -> bool:
        with self.transaction() as db:
            cur = db.execute("DELETE FROM credentials WHERE credential_id = ?", (credential_id,))
            db.execute(
                "DELETE FROM counters WHERE credential_hash = ?", (counter_key(credential_id),)
            )
            if cur.rowcount > 0:
                self._forget_extras(credential_id)
            return cur.rowcount > 0

    # -- imported credentials and credential properties (schema 4) ---------------------------
    # Rows only: authenticator/imported.py seals and opens the keys, authenticator/backup.py
    # reads the flags. A resident imported credential is a row of both credentials (its slot)
    # and imported_credentials (its key); deleting the slot deletes the key with it.

    def _forget_extras(self, credential_id: bytes) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM imported_credentials WHERE credential_id = ?", (credential_id,))
            db.execute(
                "DELETE FROM credential_properties WHERE credential_id = ?", (credential_id,)
            )

    def put_imported(self, row: ImportedRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO imported_credentials (credential_id, rp_id, rp_id_hash, resident, "
                "user_id, nonce, sealed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "CAST(strftime('%s', 'now') AS INTEGER))",
                (
                    row.credential_id,
                    row.rp_id,
                    row.rp_id_hash,
                    int(row.resident),
                    row.user_id,
                    row.nonce,
                    row.sealed,
                ),
            )

    def get_imported(self, credential_id: bytes) -> ImportedRow | None:
        row = self._db.execute(
            f"SELECT {_IMPORTED_COLUMNS} FROM imported_credentials WHERE credential_id = ?",
            (credential_id,),
        ).fetchone()
        return _imported_row(row) if row else None

    def list_imported(self) -> list[ImportedRow]:
        """Most recent first."""
        rows = self._db.execute(
            f"SELECT {_IMPORTED_COLUMNS} FROM imported_credentials ORDER BY created_at DESC, "
            "rowid DESC"
        ).fetchall()
        return [_imported_row(r) for r in rows]

    def delete_imported(self, credential_id: bytes) -> bool:
        """Forget a non-resident imported credential (a resident one goes with its slot)."""
        with self.transaction() as db:
            cur = db.execute(
                "DELETE FROM imported_credentials WHERE credential_id = ?", (credential_id,)
            )
            db.execute(
                "DELETE FROM counters WHERE credential_hash = ?", (counter_key(credential_id),)
            )
            db.execute(
                "DELETE FROM credential_properties WHERE credential_id = ?", (credential_id,)
            )
            return cur.rowcount > 0

    def longest_imported_id(self) -> int:
        row = self._db.execute(
            "SELECT COALESCE(MAX(LENGTH(credential_id)), 0) FROM imported_credentials"
        ).fetchone()
        return int(row[0])

    def get_properties(self, credential_id: bytes) -> tuple[bool, bool] | None:
        """(backup_eligible, backup_state) set for this credential, or None (the default)."""
        row = self._db.execute(
            "SELECT backup_eligible, backup_state FROM credential_properties "
            "WHERE credential_id = ?",
            (credential_id,),
        ).fetchone()
        return (bool(row[0]), bool(row[1])) if row else None

    def set_properties(
        self, credential_id: bytes, backup_eligible: bool, backup_state: bool
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO credential_properties (credential_id, backup_eligible, backup_state) "
                "VALUES (?, ?, ?) ON CONFLICT(credential_id) DO UPDATE SET "
                "backup_eligible = excluded.backup_eligible, backup_state = excluded.backup_state",
                (credential_id, int(backup_eligible), int(backup_state)),
            )

    # -- signature counters -----------------------------------------------------------------

    def get_counter(self, credential_id: bytes) -> int:
        row = self._db.execute(
            "SELECT value FROM counters WHERE credential_hash = ?", (counter_key(credential_id),)
        ).fetchone()
        return row[0] if row else 0

    def set_counter(self, credential_id: bytes, value: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO counters (credential_hash, value) VALUES (?, ?) "
                "ON CONFLICT(credential_hash) DO UPDATE SET value = excluded.value",
                (counter_key(credential_id), value),
            )

    def increment_counter(self, credential_id: bytes, ceiling: int) -> int:
        """Advance (up to ``ceiling``) and persist the counter before the signature leaves."""
        with self.transaction():
            value = min(self.get_counter(credential_id) + 1, ceiling)
            self.set_counter(credential_id, value)
        return value

    # -- reset ----------------------------------------------------------------------------

    # What authenticatorReset keeps: what a real key keeps (its model, its factory attestation
    # chain: attestation.KEEP_ON_RESET) and emulator settings (counters.META_MODE).
    KEEP_ON_RESET = (
        "schema_version",
        "profile",
        "counter_mode",
        "attestation_root_key",
        "attestation_root_cert",
        "attestation_key",
        "attestation_cert",
        "enterprise_attestation_key",
        "enterprise_attestation_cert",
    )

    def wipe(self, keep: tuple[str, ...] = KEEP_ON_RESET) -> None:
        """Forget everything but the named meta entries (authenticatorReset)."""
        with self.transaction() as db:
            db.execute("DELETE FROM credentials")
            db.execute("DELETE FROM counters")
            db.execute("DELETE FROM imported_credentials")
            db.execute("DELETE FROM credential_properties")
            marks = ",".join("?" for _ in keep)
            db.execute(f"DELETE FROM meta WHERE name NOT IN ({marks})", keep)
