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
# 5: credentials.public_key (the COSE_Key, CBOR) and credentials.third_party_payment, written
#    at creation so credential management lists without unwrapping (NULL in older rows until
#    an enumeration fills them in, credman.py); index credentials_by_rp for the usernameless
#    getAssertion walk (ctap2.py). Counters are reserved in blocks (counters.py).
SCHEMA_VERSION = 5

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
    public_key        BLOB,
    third_party_payment INTEGER,
    UNIQUE (rp_id_hash, user_id)
);
-- One RP's credentials most recent first, with what the credProtect filter needs
-- (getAssertion with an empty allowList: CTAP 2.1 §6.2.2, §12.1).
CREATE INDEX IF NOT EXISTS credentials_by_rp ON credentials (rp_id_hash, seq, cred_protect);
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
    # The credential's COSE_Key (CBOR bytes) and its thirdPartyPayment flag, stored so that
    # listing needs no unwrapping; None in rows written before schema 5 (credman.py fills
    # them in).
    public_key: bytes | None = None
    third_party_payment: bool | None = None


_FIELDS = (
    "credential_id, rp_id, rp_id_hash, user_id, rp_name, user_name, user_display_name, "
    "cred_protect, large_blob_key, user_icon, public_key, third_party_payment"
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
        public_key=bytes(row[10]) if row[10] is not None else None,
        third_party_payment=bool(row[11]) if row[11] is not None else None,
        created=row[12],
        created_at=row[13],
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


# A signature counter lives either in the counters table (per credential: its counter_key)
# or in a meta entry (the device-wide one of counters.py's global mode: its name).
CounterKey = bytes | str


class Store:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._inode: tuple[int, int] | None = None
        # Values kept in memory so that the per-request paths need no scan and no commit (see
        # "cached values" below): all of them are dropped whenever another connection commits
        # (PRAGMA data_version) and when a transaction of ours rolls back.
        self._data_version: int | None = None
        self._slots: int | None = None  # COUNT(*) of credentials
        self._rp_counts: dict[bytes, tuple[int, int]] = {}  # rp hash -> (all, credProtect 1)
        self._counters: dict[CounterKey, list[int]] = {}  # key -> [last handed out, reserved]
        self._meta: dict[str, bytes | None] = {}  # meta name -> value (None: no such entry)
        self._any_properties: bool | None = None  # whether credential_properties has a row
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
                if "public_key" not in columns:  # schema 4 -> 5 (its index: _SCHEMA)
                    self._db.execute("ALTER TABLE credentials ADD COLUMN public_key BLOB")
                if "third_party_payment" not in columns:
                    self._db.execute(
                        "ALTER TABLE credentials ADD COLUMN third_party_payment INTEGER"
                    )
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
        self._settle_counters()
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
            # What the transaction changed in the cached values is undone with it.
            self._forget_cached()
            self._db.execute("ROLLBACK")
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._forget_cached()
                raise
        finally:
            self._depth = 0

    # -- cached values ----------------------------------------------------------------------
    # The slot count, per-RP counts and signature counters are kept in memory and updated by
    # this Store's own writes. Another connection's commit (another Store on the same file,
    # in this process or another) changes PRAGMA data_version (SQLite "PRAGMA data_version":
    # unchanged by this connection's own commits), so every cached read checks it first and
    # starts over from the file when it moved: a few microseconds instead of a COUNT(*).

    def _forget_cached(self) -> None:
        self._slots = None
        self._rp_counts.clear()
        self._counters.clear()
        self._meta.clear()
        self._any_properties = None

    def _check_external(self) -> None:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._forget_cached()

    # -- meta ---------------------------------------------------------------------------

    # Meta values (settings such as always_uv, read on every makeCredential/getAssertion) are
    # cached too ("cached values" above), absent ones as None.

    def get_meta(self, name: str) -> bytes | None:
        self._check_external()
        try:
            return self._meta[name]
        except KeyError:
            pass
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        value = self._meta[name] = bytes(row[0]) if row else None
        return value

    def set_meta(self, name: str, value: bytes) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            self._meta[name] = bytes(value)

    def delete_meta(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE name = ?", (name,))
            self._meta[name] = None

    def get_int(self, name: str, default: int = 0) -> int:
        value = self.get_meta(name)
        return int(value) if value is not None else default

    def set_int(self, name: str, value: int) -> None:
        self.set_meta(name, str(value).encode())

    # -- resident credentials -------------------------------------------------------------

    def resident_count(self) -> int:
        """Slots in use (maintained, not counted per call: see "cached values")."""
        self._check_external()
        if self._slots is None:
            self._slots = self._db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0]
        return self._slots

    def rp_counts(self, rp_id_hash: bytes) -> tuple[int, int]:
        """(all, credProtect level 1) resident credentials of one RP: what an empty-allowList
        getAssertion finds with and without user verification (CTAP 2.1 §12.1)."""
        self._check_external()
        counts = self._rp_counts.get(rp_id_hash)
        if counts is None:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(cred_protect < 2), 0) FROM credentials "
                "WHERE rp_id_hash = ?",
                (rp_id_hash,),
            ).fetchone()
            counts = self._rp_counts[rp_id_hash] = (int(row[0]), int(row[1]))
        return counts

    def next_resident(
        self, rp_id_hash: bytes, before: int | None, protected: bool
    ) -> ResidentCredential | None:
        """The most recent credential of an RP older than insertion order ``before`` (None:
        the most recent of all); only credProtect level 1 unless ``protected``."""
        where = "rp_id_hash = ?"
        args: list[object] = [rp_id_hash]
        if before is not None:
            where += " AND seq < ?"
            args.append(before)
        if not protected:
            where += " AND cred_protect < 2"
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM credentials WHERE {where} ORDER BY seq DESC LIMIT 1", args
        ).fetchone()
        return _row(row) if row else None

    def user_names(self, rp_id_hash: bytes, prefix: str) -> list[str]:
        """The user names starting with ``prefix`` among one RP's credentials."""
        rows = self._db.execute(
            "SELECT user_name FROM credentials WHERE rp_id_hash = ? "
            "AND substr(user_name, 1, ?) = ?",
            (rp_id_hash, len(prefix), prefix),
        ).fetchall()
        return [r[0] for r in rows]

    def set_public_keys(self, keys: list[tuple[bytes, bytes | None, bool]]) -> None:
        """Fill in (credential ID, COSE_Key, thirdPartyPayment) of rows older than schema 5."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE credentials SET public_key = ?, third_party_payment = ? "
                "WHERE credential_id = ?",
                [(key, int(tpp), cid) for cid, key, tpp in keys],
            )

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
            # Only what replacing needs: the same slot's (credential ID, credProtect level).
            old = db.execute(
                "SELECT credential_id, cred_protect FROM credentials "
                "WHERE rp_id_hash = ? AND user_id = ?",
                (cred.rp_id_hash, cred.user_id),
            ).fetchone()
            used = self.resident_count()
            if old is None and capacity is not None and used >= capacity:
                return False
            if old is not None:
                old_id = bytes(old[0])
                db.execute("DELETE FROM credentials WHERE credential_id = ?", (old_id,))
                self._forget_counter(old_id)
                self._forget_extras(old_id)
            db.execute(
                f"INSERT INTO credentials ({_FIELDS}, created_at) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER))",
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
                    cred.public_key,
                    None if cred.third_party_payment is None else int(cred.third_party_payment),
                ),
            )
            # The cached counts follow (a rollback forgets them, see transaction()).
            if old is None:
                self._slots = used + 1
            counts = self._rp_counts.get(cred.rp_id_hash)
            if counts is not None:
                if old is not None:
                    counts = (counts[0] - 1, counts[1] - (old[1] < 2))
                self._rp_counts[cred.rp_id_hash] = (
                    counts[0] + 1,
                    counts[1] + (cred.cred_protect < 2),
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
            self.resident_count()  # cached now, so the decrement below keeps it right
            gone = db.execute(
                "DELETE FROM credentials WHERE credential_id = ? "
                "RETURNING rp_id_hash, cred_protect",
                (credential_id,),
            ).fetchall()
            self._forget_counter(credential_id)
            if gone:
                self._forget_extras(credential_id)
                if self._slots is not None:
                    self._slots -= len(gone)
                for rp_hash, cred_protect in gone:
                    counts = self._rp_counts.get(bytes(rp_hash))
                    if counts is not None:
                        self._rp_counts[bytes(rp_hash)] = (
                            counts[0] - 1,
                            counts[1] - (cred_protect < 2),
                        )
            return bool(gone)

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
            self._forget_counter(credential_id)
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
        # Almost no key has any (a testing aid, backup.py): then no per-credential lookup.
        self._check_external()
        if self._any_properties is None:
            self._any_properties = (
                self._db.execute("SELECT 1 FROM credential_properties LIMIT 1").fetchone()
                is not None
            )
        if not self._any_properties:
            return None
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
            self._any_properties = True

    # -- signature counters -----------------------------------------------------------------
    # A counter is persisted before its value leaves the device, but not one commit per
    # signature: ``increment`` reserves a block, persisting "reserved" (the highest value
    # handed out before the next write) first, then hands out values up to it from memory.
    # After a crash or power loss the counter resumes above the reservation, so it jumps
    # forward and never repeats. A clean close writes back the value last handed out, so an
    # orderly restart continues exactly (counters.py).

    def _counter_disk(self, key: CounterKey) -> int:
        if isinstance(key, str):
            return self.get_int(key)
        row = self._db.execute(
            "SELECT value FROM counters WHERE credential_hash = ?", (key,)
        ).fetchone()
        return row[0] if row else 0

    def _counter_write(self, key: CounterKey, value: int) -> None:
        if isinstance(key, str):
            self.set_int(key, value)
            return
        with self.transaction() as db:
            db.execute(
                "INSERT INTO counters (credential_hash, value) VALUES (?, ?) "
                "ON CONFLICT(credential_hash) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def counter_value(self, key: CounterKey) -> int:
        """The value the last signature carried (0 if none yet)."""
        self._check_external()
        cached = self._counters.get(key)
        return cached[0] if cached is not None else self._counter_disk(key)

    def set_counter_value(self, key: CounterKey, value: int) -> None:
        """Set exactly (no reservation): the next signature carries ``value + 1``."""
        self._check_external()
        self._counters.pop(key, None)
        self._counter_write(key, value)
        self._counters[key] = [value, value]

    def increment(self, key: CounterKey, ceiling: int, block: int = 1) -> int:
        """The next value (at most ``ceiling``), durable before it is returned: reserving
        ``block`` values at a time when the last reservation is used up."""
        self._check_external()
        cached = self._counters.get(key)
        if cached is not None and cached[0] < cached[1]:
            cached[0] += 1
            return cached[0]
        last = cached[0] if cached is not None else self._counter_disk(key)
        value = min(last + 1, ceiling)
        if cached is not None and value <= cached[1]:  # at the ceiling: nothing new to persist
            cached[0] = value
            return value
        reserved = min(value + max(block, 1) - 1, ceiling)
        self._counter_write(key, reserved)
        self._counters[key] = [value, reserved]
        return value

    def _forget_counter(self, credential_id: bytes) -> None:
        with self.transaction() as db:
            key = counter_key(credential_id)
            db.execute("DELETE FROM counters WHERE credential_hash = ?", (key,))
            self._counters.pop(key, None)

    def _settle_counters(self) -> None:
        """On close: write back each reserved counter's last handed-out value, unless the
        file changed under us (then the reservation stays: a jump forward, never a repeat)."""
        if self._depth or not self._counters:
            return
        try:
            self._check_external()
            unused = [(k, v[0], v[1]) for k, v in self._counters.items() if v[0] < v[1]]
            if not unused:
                return
            with self.transaction() as db:
                for key, last, reserved in unused:
                    if isinstance(key, str):
                        db.execute(
                            "UPDATE meta SET value = ? WHERE name = ? AND value = ?",
                            (str(last).encode(), key, str(reserved).encode()),
                        )
                    else:
                        db.execute(
                            "UPDATE counters SET value = ? WHERE credential_hash = ? AND value = ?",
                            (last, key, reserved),
                        )
        except sqlite3.Error:
            pass  # the reservations stay: the counters resume above them
        finally:
            self._meta.clear()  # written above behind set_meta's back

    def get_counter(self, credential_id: bytes) -> int:
        return self.counter_value(counter_key(credential_id))

    def set_counter(self, credential_id: bytes, value: int) -> None:
        self.set_counter_value(counter_key(credential_id), value)

    def increment_counter(self, credential_id: bytes, ceiling: int, block: int = 1) -> int:
        """Advance (up to ``ceiling``) and persist the counter before the signature leaves."""
        return self.increment(counter_key(credential_id), ceiling, block)

    def counter_totals(self) -> tuple[int, int]:
        """(credentials with a counter, sum of their last values), for `softkey info`."""
        self._check_external()
        count, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(value), 0) FROM counters"
        ).fetchone()
        # The file holds reservations; what was handed out is in memory.
        for key, (last, reserved) in self._counters.items():
            if isinstance(key, bytes):
                total -= reserved - last
        return int(count), int(total)

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
            self._forget_cached()
            self._slots = 0
