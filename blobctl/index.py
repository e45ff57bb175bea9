"""Metadata kept for speed, in SQLite (WAL): per-object sizes and last access, running
totals, counters, name mirror, recently evicted hashes, and which names each remote holds.

Everything here can be rebuilt from objects/ and refs/ (Store.rebuild_index), so the
index is never the only copy of anything a user cares about. SQLite's write lock is also
the store's mutex between a put that reuses an object and a gc that deletes it: both act
inside `transaction()`, so neither sees the other half-done. Times are integer ns.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from blobctl.backends.common import mask_url
from blobctl.config import Mount, covering_mounts, mount_of
from blobctl.errors import BlobctlError
from blobctl.fsutil import free_bytes

SCHEMA_VERSION = 4
#: Schemas this blobctl reads without upgrading them (a store it may only read): 3 has
#: the tables of 4, with records keyed by URLs that may hold credentials (see remote_key).
READABLE_SCHEMAS = (3, SCHEMA_VERSION)
#: Seconds a command waits for another one holding the index (SQLite busy timeout).
BUSY_TIMEOUT = 120
#: How many recently evicted hashes are remembered, to count misses that gc caused.
EVICTED_MEMORY = 100_000

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS objects (
    hash TEXT PRIMARY KEY, size INTEGER NOT NULL, stored INTEGER NOT NULL,
    created INTEGER NOT NULL, accessed INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_access ON objects (accessed);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), objects INTEGER NOT NULL,
    size INTEGER NOT NULL, stored INTEGER NOT NULL, names INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0, 0);
CREATE TRIGGER IF NOT EXISTS objects_added AFTER INSERT ON objects BEGIN
    UPDATE totals SET objects = objects + 1, size = size + NEW.size, stored = stored + NEW.stored;
END;
CREATE TRIGGER IF NOT EXISTS objects_removed AFTER DELETE ON objects BEGIN
    UPDATE totals SET objects = objects - 1, size = size - OLD.size, stored = stored - OLD.stored;
END;
CREATE TRIGGER IF NOT EXISTS objects_resized AFTER UPDATE OF size, stored ON objects BEGIN
    UPDATE totals SET size = size - OLD.size + NEW.size, stored = stored - OLD.stored + NEW.stored;
END;
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, hash TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_hash ON names (hash);
CREATE TRIGGER IF NOT EXISTS names_added AFTER INSERT ON names BEGIN
    UPDATE totals SET names = names + 1;
END;
CREATE TRIGGER IF NOT EXISTS names_removed AFTER DELETE ON names BEGIN
    UPDATE totals SET names = names - 1;
END;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evicted (hash TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS evicted_by_time ON evicted (at);
-- What each remote holds: its ref `ref` (the name on the remote) has hash `hash`.
CREATE TABLE IF NOT EXISTS remote_refs (
    remote TEXT NOT NULL, ref TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (remote, ref)) WITHOUT ROWID;
-- Schema 1 kept push records by local name alone: each goes to the remote of the mount
-- its name belongs to (owner_remote, a Python function). Schema 2 kept them by remote
-- and local name: each goes to the name on the remote under the mount of that remote
-- covering it now (ref_on), or is dropped; it replaces a record of schema 3, as only an
-- older blobctl, opening this index since, can have written it. Both in the transaction
-- that upgrades.
CREATE TABLE IF NOT EXISTS pushed (name TEXT PRIMARY KEY, hash TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remote_names (
    remote TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (remote, name)) WITHOUT ROWID;
INSERT OR IGNORE INTO remote_names
    SELECT owner_remote(name), name, hash FROM pushed WHERE owner_remote(name) IS NOT NULL;
INSERT OR REPLACE INTO remote_refs
    SELECT remote, ref_on(remote, name), hash FROM remote_names WHERE ref_on(remote, name) IS NOT NULL;
DROP TABLE pushed;
DROP TABLE remote_names;
-- Schema 3 kept records by the mount's URL as written, credentials included, in a file
-- others may read: schema 4 keys them by remote_key(URL). Records of one ref under URLs
-- that differ only in credentials (a password changed, a user added) that disagree on
-- its hash cannot be told apart by age: all of them go, as a lost record is the safe
-- way to be wrong (the name looks unpushed), and a stale one is not (it makes a local
-- value that was never pushed look like a cache entry, which a pull then replaces).
DELETE FROM remote_refs WHERE (remote_key(remote), ref) IN (
    SELECT remote_key(remote), ref FROM remote_refs GROUP BY 1, 2 HAVING count(DISTINCT hash) > 1);
UPDATE OR REPLACE remote_refs SET remote = remote_key(remote) WHERE remote <> remote_key(remote);
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


class IndexUnreadable(Exception):
    """The index file is not a usable SQLite database (the store rebuilds it)."""


class IndexBusy(BlobctlError):
    """Another process holds the index's write lock (see Index.transaction's `wait`)."""


class IndexReadOnly(BlobctlError):
    """The index was opened read-only (a read-only file system, another user's store):
    commands that only read go on."""


class IndexFull(IndexReadOnly):
    """The disk is full: the index cannot be written, and was opened read-only if SQLite
    could not even create its shared-memory file, so that commands that only read go on
    (and gc, which frees room first: see gc.make_room)."""


#: Free space below which an index that fails to open is taken for one on a full disk:
#: opening it for writing needs SQLite's 32 KiB shared-memory file and a write-ahead log.
OPEN_ROOM = 1 << 20


def disk_full(action: str, path: Path) -> IndexFull:
    return IndexFull(f"cannot {action} the index {path}: no space left on device",
                     "free space on that disk: 'blobctl gc --max-size SIZE' evicts cached objects")


def index_failure(exc: sqlite3.Error, action: str, path: Path, *, full: bool = False) -> BlobctlError:
    """One clear line for an SQLite failure on the index: busy, full, unwritable or else.
    `full`: the index was opened read-only because the disk is full, so a refused write
    means that."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BlobctlError(f"cannot {action} the index {path}: another blobctl command has held it "
                            f"for {BUSY_TIMEOUT} s", "retry once it has finished")
    if code == sqlite3.SQLITE_FULL or (full and code == sqlite3.SQLITE_READONLY):
        return disk_full(action, path)
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        kind = IndexReadOnly if getattr(exc, "sqlite_errorcode", 0) == sqlite3.SQLITE_READONLY else BlobctlError
        return kind(f"cannot {action} the index {path}: {exc}", "this needs write access to the store")
    return BlobctlError(f"cannot {action} the index {path}: {exc}")


@functools.lru_cache(maxsize=64)  # a few mounts, looked up once per name
def remote_key(url: str) -> str:
    """What records of what a remote holds are kept by: its URL without credentials
    (the index is readable by whoever may read the store; the config is not)."""
    return mask_url(url)


class ObjectRow(NamedTuple):
    hash: str
    size: int
    stored: int
    created: int
    accessed: int


class Totals(NamedTuple):
    objects: int
    size: int
    stored: int
    names: int


class Index:
    def __init__(self, path: Path, mounts: Sequence[Mount] = ()):
        """`mounts`: the store's, to carry older schemas' records of what remotes hold
        over when upgrading."""
        self.path = path
        self.full = False  # opened read-only for want of space (see IndexFull)
        self._lock = threading.RLock()  # one connection, shared by a command's worker threads
        self._after_commit: list[Callable[[], object]] = []  # see after_commit
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self.db = self._connect(path, mounts)
                return
            except sqlite3.DatabaseError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                # Only a damaged or foreign file is "unreadable" (and gets rebuilt). A busy or
                # locked database is another process at work: never set that aside.
                if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                    raise IndexUnreadable(str(exc)) from exc
                if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM) \
                        and path.exists() and not os.access(path.parent, os.W_OK):
                    self.db = self._connect_read_only(path, exc)
                    return
                if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN) \
                        and free_bytes(path.parent) < OPEN_ROOM:
                    if not path.exists():
                        raise disk_full("create", path) from exc
                    try:
                        self.db = self._connect_read_only(path, exc)
                    except BlobctlError:
                        raise disk_full("open", path) from exc
                    self.full = True
                    return
                # Opening a WAL database while another process closes or recovers it can
                # be refused at once, without SQLite's busy wait: wait here instead.
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() > deadline:
                    raise index_failure(exc, "open", path) from exc
                time.sleep(0.01)

    @staticmethod
    def _connect(path: Path, mounts: Sequence[Mount]) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)

        def owner_remote(name: str) -> str | None:
            covering = covering_mounts(mounts, name)
            return covering[0].remote if covering else None

        def ref_on(remote: str, name: str) -> str | None:
            mount = mount_of(mounts, remote, name)
            return mount.remote_name(name) if mount is not None else None

        try:
            db.execute("PRAGMA synchronous = NORMAL")
            db.create_function("owner_remote", 1, owner_remote, deterministic=True)
            db.create_function("ref_on", 2, ref_on, deterministic=True)
            db.create_function("remote_key", 1, remote_key, deterministic=True)
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _connect_read_only(path: Path, refused: sqlite3.Error) -> sqlite3.Connection:
        """The index of a store this process may only read (a read-only file system,
        another user's store), for commands that only look: writing then fails with
        SQLITE_READONLY (see index_failure). `mode=ro` works while a writer has the WAL
        database open (its -wal and -shm files exist). Without -shm, SQLite cannot read
        WAL read-only; `immutable=1` then reads the file as its last writer left it on
        close, checkpointed, which is only right if no -wal holds changes still to be
        applied. `refused` is the error of the read-write attempt."""
        uri = path.absolute().as_uri()
        wal = path.with_name(path.name + "-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        for flags in ("mode=ro",) if pending else ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{flags}", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None,
                                     check_same_thread=False)
            except sqlite3.Error:
                continue
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.Error:
                db.close()
                continue
            if version not in READABLE_SCHEMAS:
                db.close()
                raise BlobctlError(
                    f"cannot read the index {path}: it has schema {version}, this blobctl reads {SCHEMA_VERSION}",
                    "run this blobctl once with write access to upgrade it" if version < SCHEMA_VERSION
                    else "it was written by a newer blobctl: use that one")
            return db
        if pending:
            raise BlobctlError(f"cannot read the index {path}: {wal.name} holds changes only a writer can apply",
                               "run any blobctl command on this store once with write access") from refused
        raise BlobctlError(f"cannot read the index {path}: {refused}",
                           "this needs read access to the store, and write access to change it") from refused

    def close(self) -> None:
        self.db.close()

    def damage(self) -> str | None:
        """What SQLite's quick check finds wrong with the file (damaged pages that opening
        it does not notice), or None when it is sound."""
        try:
            with self._lock:
                found = [row[0] for row in self.db.execute("PRAGMA quick_check(1)")]
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                return str(exc)
            raise index_failure(exc, "check", self.path) from exc
        return None if found == ["ok"] else "database disk image is malformed: " + " ".join(" ".join(found).split())

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (BEGIN IMMEDIATE);
        threads of this process take turns, and a nested call joins the outer transaction.
        With wait=False, IndexBusy at once if another process holds the lock."""
        with self._lock:
            if self.db.in_transaction:
                yield self.db
                return
            try:
                if not wait:
                    self.db.execute("PRAGMA busy_timeout = 0")
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                finally:
                    if not wait:
                        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT * 1000}")
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if busy and not wait:
                    raise IndexBusy(f"the index {self.path} is locked by another command") from exc
                raise index_failure(exc, "lock", self.path, full=self.full) from exc
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as exc:
                self._after_commit.clear()
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise index_failure(exc, "write", self.path, full=self.full) from exc
                raise
            actions, self._after_commit = self._after_commit, []
            for action in actions:
                action()

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run `action` once the current (outermost) transaction has committed; never if
        it rolls back."""
        self._after_commit.append(action)

    # -- objects ------------------------------------------------------------------------
    def record_many(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Note objects (digest, size, stored, now) as present and just accessed: insert,
        or refresh their rows."""
        self.db.executemany(
            "INSERT INTO objects VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO UPDATE SET "
            "size = excluded.size, stored = excluded.stored, accessed = excluded.accessed",
            [(digest, size, stored, now, now) for digest, size, stored, now in rows])

    def touch(self, digest: str, now: int) -> bool:
        """Record an access; False if the object has no row (unknown or evicted)."""
        return self.db.execute("UPDATE objects SET accessed = ? WHERE hash = ?",
                               (now, digest)).rowcount > 0

    def row(self, digest: str) -> ObjectRow | None:
        found = self.db.execute("SELECT * FROM objects WHERE hash = ?", (digest,)).fetchone()
        return ObjectRow(*found) if found else None

    def forget(self, digest: str) -> None:
        self.forget_many([digest])

    def forget_many(self, digests: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM objects WHERE hash = ?", [(d,) for d in digests])

    def by_access(self) -> Iterator[ObjectRow]:
        """All objects, least recently accessed first."""
        for found in self.db.execute("SELECT * FROM objects ORDER BY accessed, hash"):
            yield ObjectRow(*found)

    def totals(self) -> Totals:
        return Totals(*self.db.execute(
            "SELECT objects, size, stored, names FROM totals WHERE id = 0").fetchone())

    # -- names (a mirror of refs/, for counting without a walk) -------------------------
    def set_name(self, name: str, digest: str) -> None:
        self.db.execute("INSERT INTO names VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                        "SET hash = excluded.hash", (name, digest))

    def remove_name(self, name: str) -> None:
        self.db.execute("DELETE FROM names WHERE name = ?", (name,))

    # -- counters -----------------------------------------------------------------------
    def bump(self, deltas: dict[str, int]) -> None:
        self.db.executemany(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET value = value + excluded.value",
            [(name, delta) for name, delta in deltas.items() if delta])

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters"))

    def zero_counters(self, prefix: str = "") -> None:
        """Forget the counters whose names start with `prefix` (all by default)."""
        self.db.execute("DELETE FROM counters WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))

    # -- name mirror --------------------------------------------------------------------
    def names_of(self, digest: str, limit: int = -1) -> list[str]:
        """The names pointing at an object, sorted (at most `limit`; -1: all)."""
        return [name for (name,) in self.db.execute(
            "SELECT name FROM names WHERE hash = ? ORDER BY name LIMIT ?", (digest, limit))]

    def all_names(self) -> dict[str, str]:
        """The whole mirror: name -> hash."""
        return dict(self.db.execute("SELECT name, hash FROM names"))

    def rows_and_names_of(self, digests: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """For these objects: hash -> recorded access, and the (name, hash) pairs naming them."""
        marks = ",".join("?" * len(digests))
        accessed = dict(self.db.execute(f"SELECT hash, accessed FROM objects WHERE hash IN ({marks})", digests))
        named = list(self.db.execute(f"SELECT name, hash FROM names WHERE hash IN ({marks})", digests))
        return accessed, named

    # -- eviction memory ----------------------------------------------------------------
    def remember_evicted(self, digests: Iterable[str], now: int) -> None:
        self.db.executemany("INSERT OR REPLACE INTO evicted VALUES (?, ?)",
                            [(d, now) for d in digests])
        self.db.execute(
            "DELETE FROM evicted WHERE hash IN (SELECT hash FROM evicted "
            "ORDER BY at DESC LIMIT -1 OFFSET ?)", (EVICTED_MEMORY,))

    def was_evicted(self, digest: str) -> bool:
        return self.db.execute("SELECT 1 FROM evicted WHERE hash = ?", (digest,)).fetchone() is not None

    # -- what remotes hold --------------------------------------------------------------
    def mark_on_remote(self, remote: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Record that `remote` (a mount's URL) holds these (ref, hash) pairs, a ref being
        the name on the remote (Mount.remote_name): pushed there, or pulled from there.
        Kept by the remote's name, not the local one, so that mounting the remote at
        another prefix does not make local names look pushed that are not there."""
        self.db.executemany("INSERT OR REPLACE INTO remote_refs VALUES (?, ?, ?)",
                            [(remote_key(remote), ref, digest) for ref, digest in pairs])

    def forget_on_remote(self, records: Iterable[tuple[str, str, str]]) -> None:
        """Drop these (remote, ref, hash) records, each only if it still says that hash."""
        self.db.executemany("DELETE FROM remote_refs WHERE remote = ? AND ref = ? AND hash = ?",
                            [(remote_key(remote), ref, digest) for remote, ref, digest in records])

    @functools.cached_property
    def _raw_remote_keys(self) -> bool:
        """Whether records are still keyed by URLs as written (schema 3, read where this
        user may only read the store): lookups then mask what is stored, as the upgrade
        would, and records that disagree once masked count as none (see _SCHEMA)."""
        return self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION

    def remote_hash(self, remote: str, ref: str) -> str | None:
        if self._raw_remote_keys:
            return self.remote_records()(remote, ref)
        found = self.db.execute("SELECT hash FROM remote_refs WHERE remote = ? AND ref = ?",
                                (remote_key(remote), ref)).fetchone()
        return found[0] if found else None

    def remote_records(self) -> Callable[[str, str], str | None]:
        """remote_hash for many lookups: every record read once."""
        held, ambiguous = {}, set()
        for remote, ref, digest in self.db.execute("SELECT remote, ref, hash FROM remote_refs"):
            key = (remote_key(remote), ref)  # as stored from schema 4 on
            if held.setdefault(key, digest) != digest:  # schema 3 only (see _raw_remote_keys)
                ambiguous.add(key)
        for key in ambiguous:
            del held[key]
        return lambda remote, ref: held.get((remote_key(remote), ref))

    # -- rebuild ------------------------------------------------------------------------
    def replace_all(self, objects: Iterable[ObjectRow], names: Iterable[tuple[str, str]]) -> None:
        """Replace object rows and the name mirror with what the files say, keeping the
        recorded access time of objects already known (it is newer than any mtime)."""
        with self.transaction():
            known = {r[0]: r[1] for r in self.db.execute("SELECT hash, accessed FROM objects")}
            self.db.execute("DELETE FROM objects")
            self.db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?)", [
                (o.hash, o.size, o.stored, o.created, max(o.accessed, known.get(o.hash, 0)))
                for o in objects])
            self.db.execute("DELETE FROM names")
            self.db.executemany("INSERT INTO names VALUES (?, ?)", list(names))
