"""Cache eviction, in the shape plan → show → execute.

`plan()` decides, without locking, which objects go: least recently accessed first (the
access blobctl records on get, put and fetch, not the file system's atime) until the
store fits the size limit, plus anything not accessed for `older_than`. It never picks an
object that a local name points at (unless a mount covering that name is known to hold it:
see name_protection), that is pinned, or that was accessed within the grace period.
Before it lets such a named object go, it asks the mount whether it really holds it (a
HEAD request): records go stale when a remote loses or drops objects, and then the local
copy is the only one. What the remote lacks stays, as unpushed, and its record is dropped
on execute so that `push` publishes it again.

`execute()` deletes in batches, each under the index's write lock (the store's mutex with
put): just before unlinking it re-checks that the object's recorded access is unchanged
since the plan, that no name (via the index's name mirror, which bind() updates under the
same lock) and no pin protects it now. A put that reused the object, or a bind or pin that
arrived after planning, therefore keeps it. Then it removes the expired pins the plan
found, each read again under the lock (a pin set again meanwhile stays).

On a full disk the index cannot be written (its write-ahead log needs room), or even
opened for writing (Index.full), yet that is when gc is needed most. With less than ROOM
free, `make_room()` first deletes the files of the first planned objects, re-checked as
above, until ROOM is free (and reopens a read-only index); execute() drops their rows
with the rest. If gc dies in between, their rows stay behind without files: fsck reports
them, and the next gc drops them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from blobctl import keys, pins, racehooks, stats
from blobctl.backends import Backend, open_backend
from blobctl.backends.common import mask_url
from blobctl.config import Mount, covering_mounts
from blobctl.errors import BlobctlError, IntegrityError, warn
from blobctl.fsutil import TEMP_SUFFIX, free_bytes, in_use, remove_temp_dir
from blobctl.index import OPEN_ROOM, IndexFull, ObjectRow
from blobctl.units import format_count, format_size

#: Why a surviving object stays, most important first (an object counts under the first).
KEEP_REASONS = ("named", "pinned", "unpushed", "grace", "not_needed")
#: Objects deleted per index transaction: long enough to be fast, short enough not to
#: hold up concurrent puts.
EVICT_BATCH = 500
#: Remotes asked at once whether they hold an object before gc evicts its local copy.
CONFIRM_JOBS = 8
#: Seconds the automatic gc after a put allows a mount to confirm an object, once.
QUICK_TIMEOUT = 5.0
#: Automatic gc trims to this fraction of max_size, so it does not run on every put.
LOW_WATER = 0.9
#: Temp files younger than this are left alone whatever the grace period: a put may still
#: be writing one.
TEMP_MIN_AGE = 15 * 60.0
#: Free space gc makes on a full disk before it writes the index: SQLite's shared memory
#: and write-ahead log, and a journal, for an eviction batch of EVICT_BATCH rows.
ROOM = 16 << 20


@dataclass(frozen=True)
class Kept:
    digest: str
    stored: int
    reason: str  # one of KEEP_REASONS


@dataclass(frozen=True)
class GcPlan:
    """What a gc run would do; sizes are bytes on disk (compressed)."""

    now: int
    max_size: int | None
    older_than: float | None
    grace: float
    objects_before: int
    stored_before: int
    evict: tuple[ObjectRow, ...]
    kept: tuple[Kept, ...]
    stale_temps: tuple[Path, ...]  # temp files, also those in stale_temp_dirs
    temp_bytes: int
    stale_temp_dirs: tuple[Path, ...]  # temp directories of killed commands (see locked_temp_dir)
    expired_pins: tuple[str, ...] = ()  # hashes whose pin file has expired
    #: (remote, ref, hash) records of what a remote holds that the remote proved wrong
    disproved: tuple[tuple[str, str, str], ...] = ()

    @property
    def evict_bytes(self) -> int:
        return sum(row.stored for row in self.evict)

    @property
    def stored_after(self) -> int:
        return self.stored_before - self.evict_bytes

    def kept_by_reason(self) -> dict[str, tuple[int, int]]:
        """reason -> (objects, bytes), for every reason in KEEP_REASONS."""
        tally = {reason: [0, 0] for reason in KEEP_REASONS}
        for item in self.kept:
            tally[item.reason][0] += 1
            tally[item.reason][1] += item.stored
        return {reason: (objects, size) for reason, (objects, size) in tally.items()}


@dataclass(frozen=True)
class GcOutcome:
    """What execute() did. `changed` objects were kept because a put, get, bind or pin
    touched them after planning."""

    evicted: tuple[str, ...]
    evicted_bytes: int
    changed: int
    temps_removed: int
    shard_dirs_removed: int
    objects_after: int
    stored_after: int
    pins_removed: int = 0  # expired pin files deleted


def holding_mounts(mounts: Iterable[Mount], remote_hash: Callable[[str, str], str | None],
                   name: str, digest: str) -> list[Mount]:
    """The mounts covering a local name that are known to hold its current hash (pushed
    there, or pulled from there). `remote_hash(remote, ref)` is that record, a ref being
    the name on the remote."""
    return [mount for mount in covering_mounts(mounts, name)
            if remote_hash(mount.remote, mount.remote_name(name)) == digest]


def name_protection(mounts: Iterable[Mount], remote_hash: Callable[[str, str], str | None],
                    name: str, digest: str) -> str | None:
    """Why a local name keeps its object, or None: a name that a mount holds (see
    holding_mounts) leaves an ordinary cache entry, fetched again on demand."""
    return None if holding_mounts(mounts, remote_hash, name, digest) else _unheld_reason(mounts, name)


def _unheld_reason(mounts: Iterable[Mount], name: str) -> str:
    """Why a name no mount holds keeps its object: unpushed under a writable mount."""
    covering = covering_mounts(mounts, name)
    return "unpushed" if covering and not covering[0].read_only else "named"


def name_protections(store) -> Callable[[str, str], str | None]:
    """name_protection(name, digest) for many names under the store's mounts."""
    mounts, remote_hash = store.config.mounts, store.index.remote_records()
    return lambda name, digest: name_protection(mounts, remote_hash, name, digest)


def plan(store, *, max_size: int | None, older_than: float | None = None,
         grace: float | None = None, quick: bool = False) -> GcPlan:
    """Decide what goes. Reads the refs from their files (the truth), pins, and the index.
    `quick`: remotes get one short try each (see _Confirmation): the automatic gc after
    a put must not hold it up for minutes when a mount is unreachable."""
    now = time.time_ns()
    grace = store.config.get("gc_grace") if grace is None else grace
    rank = {reason: position for position, reason in enumerate(KEEP_REASONS)}
    protected: dict[str, str] = {}

    def protect(digest: str, reason: str) -> None:
        if rank[reason] < rank[protected.get(digest, "not_needed")]:
            protected[digest] = reason

    def damaged(name: str, error: BlobctlError) -> None:
        """A ref that is not a valid name now (made by an older blobctl, or by hand) but
        holds a hash still keeps that object: dropping it is for the user to decide."""
        warn(str(error))
        digest = store.hash_in_ref_file(name)
        if digest is not None:
            protect(digest, "named")

    mounts, remote_hash = store.config.mounts, store.index.remote_records()
    backing: dict[str, list[tuple[Mount, str]]] = {}  # hash -> (mount, name) its records say hold it
    for name, digest in store.iter_refs(on_damaged=damaged):
        holders = holding_mounts(mounts, remote_hash, name, digest)
        if holders:
            backing.setdefault(digest, []).extend((mount, name) for mount in holders)
        else:
            protect(digest, _unheld_reason(mounts, name))
    active_pins, expired_pins = pins.scan(store.pins_dir, now)
    for digest in active_pins:
        protect(digest, "pinned")

    grace_start = now - int(grace * 1e9)
    too_old = None if older_than is None else now - int(older_than * 1e9)
    totals = store.index.totals()
    rows = list(store.index.by_access())

    def select() -> tuple[list[ObjectRow], list[Kept]]:
        remaining = totals.stored
        evict: list[ObjectRow] = []
        kept: list[Kept] = []
        for row in rows:
            reason = protected.get(row.hash) or ("grace" if row.accessed > grace_start else None)
            over_limit = max_size is not None and remaining > max_size
            if reason is None and (over_limit or (too_old is not None and row.accessed <= too_old)):
                evict.append(row)
                remaining -= row.stored
            else:
                kept.append(Kept(row.hash, row.stored, reason or "not_needed"))
        return evict, kept

    # A name's object goes only if a remote really has it: records can be stale (the
    # remote lost it, or was emptied). Those it lacks stay, as unpushed, and the next
    # round picks others instead. One Confirmation across rounds: a mount that cannot be
    # asked is asked once, and each mount gets one warning for all the rounds.
    confirmation = _Confirmation(store, quick=quick)
    while True:
        evict, kept = select()
        doubtful = [row.hash for row in evict if row.hash in backing and row.hash not in confirmation.held]
        if not doubtful:
            break
        held = confirmation.ask({digest: backing[digest] for digest in doubtful})
        for digest in set(doubtful) - held:
            protect(digest, _unheld_reason(mounts, backing[digest][0][1]))
    disproved = confirmation.finish()
    cutoff = now - int(max(grace, TEMP_MIN_AGE) * 1e9)
    temps, temp_dirs = _stale_temps(store.tmp_dir, cutoff)
    temp_dirs = [temp_dir for temp_dir in temp_dirs if not in_use(temp_dir)]  # a command running still
    for temp_dir in temp_dirs:  # left by a killed command: all it holds
        temps += _files_under(temp_dir)
    return GcPlan(now, max_size, older_than, grace, totals.objects, totals.stored,
                  tuple(evict), tuple(kept), tuple(path for path, _ in temps),
                  sum(size for _, size in temps), tuple(temp_dirs), tuple(sorted(expired_pins)),
                  tuple(disproved))


class _Confirmation:
    """Asks the remotes whether they hold objects (a HEAD each, in parallel), over one
    or more rounds of a plan: the hashes some mount has (`held`), and what each mount
    lacks. A mount that cannot be asked confirms nothing, and is not asked again in this
    gc (one failure stops the rest). finish() says, once per mount, what stays and why.
    `quick`: each request gets at most QUICK_TIMEOUT and no retry (the automatic gc
    after a put: an object not confirmed just stays)."""

    def __init__(self, store, *, quick: bool = False):
        self.store = store
        self.quick = quick
        self.held: set[str] = set()
        self.unreachable: dict[Mount, str] = {}
        self.missing: dict[Mount, list[tuple[str, str]]] = {}  # mount -> (name, hash) it lacks
        self._backends: dict[Mount, Backend] = {}

    def _backend(self, mount: Mount) -> Backend:
        if mount not in self._backends:
            if self.quick:
                settings = self.store.config.remote_settings()
                self._backends[mount] = open_backend(mount.remote, dataclasses.replace(
                    settings, timeout=min(settings.timeout, QUICK_TIMEOUT), retries=0), read_only=True)
            else:
                self._backends[mount] = self.store.mounted().backend(mount)
        return self._backends[mount]

    def ask(self, backing: dict[str, list[tuple[Mount, str]]]) -> set[str]:
        """Of these hashes (each with the (mount, name)s its records say hold it), those
        a mount has."""
        for mount in {mount for pairs in backing.values() for mount, _ in pairs} - set(self.unreachable):
            try:  # opened here, once: the checks run in threads
                self._backend(mount)
            except BlobctlError as exc:  # a URL written into the config by hand, say
                self.unreachable[mount] = str(exc)

        def check(digest: str) -> bool:
            for mount in dict.fromkeys(mount for mount, _ in backing[digest]):
                if mount in self.unreachable:
                    continue
                try:
                    if self._backends[mount].exists(keys.object_key(digest)):
                        return True
                except BlobctlError as exc:
                    self.unreachable.setdefault(mount, str(exc))
                    continue
                self.missing.setdefault(mount, []).extend((name, digest) for held_by, name in backing[digest]
                                                          if held_by == mount)
            return False

        with ThreadPoolExecutor(max_workers=CONFIRM_JOBS) as pool:
            held = {digest for digest, there in zip(backing, pool.map(check, backing)) if there}
        self.held |= held
        return held

    def finish(self) -> list[tuple[str, str, str]]:
        """Warn of what stays, once per mount, and close quick backends; the (remote,
        ref, hash) records the remotes proved wrong."""
        if self.quick:
            for backend in self._backends.values():
                backend.close()
        for mount, lacking in self.missing.items():
            staying = {digest for _, digest in lacking if digest not in self.held}
            if staying:
                example = next(name for name, digest in lacking if digest in staying)
                advice = "" if mount.read_only else "; 'blobctl push' publishes those names again"
                warn(f"gc keeps what {mask_url(mount.remote)} lacks: "
                     f"{format_count(len(staying), 'object')} that names were pushed or pulled with "
                     f"(e.g. {example}){advice}")
        for mount, error in self.unreachable.items():
            warn(f"gc keeps the objects it cannot confirm {mask_url(mount.remote)} holds: {error}")
        return [(mount.remote, mount.remote_name(name), digest)
                for mount, lacking in self.missing.items() for name, digest in lacking]


def _stale_temps(tmp_dir: Path, cutoff_ns: int) -> tuple[list[tuple[Path, int]], list[Path]]:
    """(path, size) of the blobctl temp files in tmp/ last written before `cutoff_ns`, and
    the temp directories (see locked_temp_dir) made before it."""
    files, directories = [], []
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return files, directories
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not entry.name.endswith(TEMP_SUFFIX) or info.st_mtime_ns >= cutoff_ns:
            continue
        if stat_module.S_ISREG(info.st_mode):
            files.append((Path(entry.path), info.st_size))
        elif stat_module.S_ISDIR(info.st_mode):
            directories.append(Path(entry.path))
    return files, directories


def _files_under(directory: Path) -> list[tuple[Path, int]]:
    """(path, size) of every file under `directory`."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                found.append((Path(root, name), os.lstat(os.path.join(root, name)).st_size))
            except FileNotFoundError:
                continue
    return found


def execute(store, gc_plan: GcPlan, progress=None) -> GcOutcome:
    """Carry out a plan, re-checking each object under the write lock (module docstring);
    `progress` (start/advance) counts the planned objects."""
    temps_removed = _remove_temps(store, gc_plan.stale_temps, gc_plan.stale_temp_dirs)  # first: room
    removed_early = make_room(store, gc_plan) if store.index.full or free_bytes(store.root) < ROOM else {}
    evicted: list[str] = []
    evicted_bytes = changed = 0
    shards: set[Path] = set()
    if progress is not None:
        progress.start("gc", len(gc_plan.evict))
    for start in range(0, len(gc_plan.evict), EVICT_BATCH):
        batch = gc_plan.evict[start:start + EVICT_BATCH]
        batch_evicted = []
        racehooks.pause("GC_EXECUTE")
        with store.index.transaction():
            keep = _changed_since_plan(store, batch)
            gone = [row for row in batch if row.hash not in keep]
            changed += len(batch) - len(gone)
            store.index.forget_many(row.hash for row in gone)  # first: if it cannot be written, nothing is lost
            if gone:
                store.journal_changes([row.hash for row in gone])
            for row in gone:
                freed = removed_early.pop(row.hash, None) or _unlink_object(store, row.hash)
                if freed is not None:
                    batch_evicted.append(row.hash)
                    evicted_bytes += freed
                    shards.add(store.objects_dir / row.hash[:2])
            store.index.remember_evicted(batch_evicted, time.time_ns())
            racehooks.pause("EVICTED")
        evicted += batch_evicted
        if progress is not None:
            progress.advance(len(batch))
    store.count(stats.OBJECTS_EVICTED, len(evicted))
    store.count(stats.BYTES_EVICTED, evicted_bytes)
    for shard in shards:
        store.syncer.sync_dir_later(shard)
    pins_removed = pins.remove_expired(store, gc_plan.expired_pins)
    if gc_plan.disproved:  # so that a plain push publishes those names again
        with store.index.transaction():
            store.index.forget_on_remote(gc_plan.disproved)
    shard_dirs_removed = _remove_empty_shards(store)
    totals = store.index.totals()
    return GcOutcome(tuple(evicted), evicted_bytes, changed, temps_removed,
                     shard_dirs_removed, totals.objects, totals.stored, pins_removed)


def make_room(store, gc_plan: GcPlan) -> dict[str, int]:
    """On a (nearly) full disk: delete the files of planned objects, oldest first and
    re-checked as execute() does, until ROOM is free or the plan is done; then reopen an
    index that had to be opened read-only. Returns their stored sizes by hash, for
    execute() to count. Under the write lock, as execute() deletes, unless the index is
    read-only for want of space: then no other command can write either."""
    free = free_bytes(store.root)
    if free + gc_plan.evict_bytes < OPEN_ROOM:  # the index would open read-only again
        # refuse before deleting anything: files deleted here but still in the index
        # (their rows cannot be dropped) are what fsck reports as damage
        raise IndexFull(f"cannot free space: the disk holding {store.root} is full and this gc would evict "
                        f"only {format_size(gc_plan.evict_bytes)}; the index needs "
                        f"{format_size(OPEN_ROOM)} free to be written",
                        "pass a lower --max-size or --grace 0, or free space elsewhere on that disk "
                        "(named, pinned and unpushed objects stay)")
    removed: dict[str, int] = {}
    read_only = store.index.full
    for start in range(0, len(gc_plan.evict), EVICT_BATCH):
        if free_bytes(store.root) >= ROOM:
            break
        batch = gc_plan.evict[start:start + EVICT_BATCH]
        with contextlib.nullcontext() if read_only else store.index.transaction():
            keep = _changed_since_plan(store, batch)
            for row in batch:
                if free_bytes(store.root) >= ROOM:
                    break
                freed = None if row.hash in keep else _unlink_object(store, row.hash)
                if freed is not None:
                    removed[row.hash] = freed
    if read_only:
        store.reopen_index()
    return removed


def _changed_since_plan(store, batch: tuple[ObjectRow, ...]) -> set[str]:
    """Called under the write lock: the hashes in `batch` that were accessed, named or
    pinned since planning (or are gone), which must stay. One query per kind per batch."""
    hashes = [row.hash for row in batch]
    accessed, named = store.index.rows_and_names_of(hashes)
    keep = {row.hash for row in batch if accessed.get(row.hash) != row.accessed}
    for name, digest in named:
        if name_protection(store.config.mounts, store.index.remote_hash, name, digest):
            keep.add(digest)
    now = time.time_ns()
    pin_files = set(os.listdir(store.pins_dir))
    keep.update(digest for digest in hashes
                if digest in pin_files and pins.is_pinned(store.pins_dir, digest, now))
    return keep


def _unlink_object(store, digest: str) -> int | None:
    """Delete an object file without following a symlink; its size, or None if there was
    no regular file to delete (gone already, or something fsck should look at)."""
    try:
        path = store.object_path(digest)
        info = path.lstat()
    except (FileNotFoundError, IntegrityError):
        return None
    if not stat_module.S_ISREG(info.st_mode):
        return None
    path.unlink()
    return info.st_size


def _remove_temps(store, paths: Iterable[Path], directories: Iterable[Path]) -> int:
    """Remove stale temp files, then the stale temp directories that held some of them;
    returns how many files were removed."""
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    for directory in directories:
        try:
            remove_temp_dir(directory)
        except OSError:  # left for the next gc: a stale temp directory is no reason to fail
            continue
    if removed or directories:
        store.syncer.sync_dir_later(store.tmp_dir)
    return removed


def _remove_empty_shards(store) -> int:
    """rmdir empty shard directories, under the write lock: a put creates a shard and
    renames its object in under that lock, so it never sees its shard vanish."""
    removed = 0
    with store.index.transaction():
        for entry in os.scandir(store.objects_dir):
            if len(entry.name) != 2 or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                os.rmdir(entry.path)
            except OSError:  # not empty
                continue
            removed += 1
    if removed:
        store.syncer.sync_dir_later(store.objects_dir)
    return removed


def auto_trim(store) -> GcOutcome | None:
    """After a put: if the store is now over max_size (an O(1) check of the index totals)
    and auto_gc is on, trim it to LOW_WATER of max_size. None when nothing was needed.
    What this command stored or fetched is never evicted by it, whatever gc_grace says:
    a put must not print the hash of an object that is already gone."""
    max_size = store.config.get("max_size")
    if max_size is None or not store.config.get("auto_gc") \
            or store.index.totals().stored <= max_size:
        return None
    since_opened = (time.time_ns() - store.opened_ns) / 1e9
    return execute(store, plan(store, max_size=int(max_size * LOW_WATER),
                               grace=max(store.config.get("gc_grace"), since_opened), quick=True))
