"""The local store: owns the on-disk layout (docs/FORMAT.md) and every operation on it.

    STORE/objects/ab/cdef…   zstd frames (blobctl.codec), named by the SHA-256 of the content
    STORE/refs/<name>        a name: the hash it points at, plus a newline
    STORE/pins/<hash>        a pin: empty (forever) or an expiry time in ns since the epoch
    STORE/tmp/               temp files, renamed into place when complete
    STORE/index.sqlite       rebuildable metadata (blobctl.index)
    STORE/config.toml        store-level settings and mounts

Objects are written atomically (temp file, data synced, rename): blobctl.encoder writes
the temp files; the store syncs those of a batch together just before their renames, and
batches the syncs of the directories touched to the end of the command (close()).
"""

from __future__ import annotations

import errno
import functools
import os
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Set as AbstractSet
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from blobctl import codec, journal, keys, pins, racehooks, stats
from blobctl.config import Config, Mount
from blobctl.errors import (BlobctlError, IntegrityError, NotFoundError, PartialOutputError, RemoteError,
                            UsageError, from_os_error, warn)
from blobctl.encoder import Encoder, InputFile, Pending, WorkerProcesses
from blobctl.fsutil import (TEMP_SUFFIX, SlicedWriter, Syncer, atomic_write, descriptor_named, discard_file,
                             is_regular_file, locked_temp_dir, make_dirs, read_regular_file, regular_file_size,
                             temp_path, write_new_file)
from blobctl.index import Index, IndexBusy, IndexFull, IndexReadOnly, IndexUnreadable, ObjectRow
from blobctl.results import (KeyInfo, NameEntry, PutResult, Removed, Resolved,
                             StoreSummary)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from blobctl.mounts import Overlay

FORMAT_MARKER = "blobctl-store 1\n"
#: Objects at most this large are verified completely before the first byte is emitted.
VERIFY_BEFORE_EMIT_SIZE = 8 << 20
#: The directories of a store's layout (docs/FORMAT.md).
_LAYOUT = ("objects", "refs", "pins", "tmp")
#: Objects published per index transaction when putting many files.
PUBLISH_BATCH = 256
#: Files smaller than this are encoded in the thread reading the list (see put_paths).
INLINE_MAX_SIZE = 32 << 10  # measured crossover: inline wins at 16 KiB, threads at 64 KiB
#: Past this many small files to compress, a put hands them to worker processes (see
#: put_paths).
PROCESSES_MIN_FILES = 1024
#: Small files per task sent to a worker process.
PROCESS_CHUNK = 64


class _BatchNames(NamedTuple):
    """The names staged so far in one bind_many, and the directories they need: a name
    may not be both ('a' and 'a/b'), which check_bindable cannot see in refs/ yet."""

    names: AbstractSet[str]
    directories: AbstractSet[str]


_NO_BATCH = _BatchNames(frozenset(), frozenset())  # a single bind: nothing staged beside it


class _StagedRef(NamedTuple):
    """A ref's content in a synced temp file, waiting to be renamed to `path`."""

    temp: str
    path: Path
    name: str
    digest: str


def _counting(emit: Callable[[memoryview], object], advance: Callable[[int], object]
              ) -> Callable[[memoryview], None]:
    def counted(chunk: memoryview) -> None:
        emit(chunk)
        advance(len(chunk))
    return counted


def _removed_if_empty(directory: Path) -> bool:
    """Remove a directory of refs/ that holds no name (a bind killed after making it),
    so that it does not block the name it spells."""
    try:
        directory.rmdir()
    except OSError:
        return False
    return True


def _not_a_regular_file(digest: str, path: Path, what: str) -> IntegrityError:
    return IntegrityError(f"object {digest} is damaged: {path} is {what}",
                          "run 'blobctl fsck --repair' to quarantine it")


def _temps(batch: Iterable[Pending | BlobctlError]) -> list[str]:
    return [item.temp for item in batch if isinstance(item, Pending) and item.temp is not None]


def _size_hint(path: str) -> int:
    """The file's size for scheduling only (0 if it cannot be stat'ed: opening it will
    report why); the encoder trusts only what it reads."""
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return 0


def check_store_directory(root: Path) -> None:
    """UsageError unless `root` is a store, empty, missing or a store being created: for
    opening a store, and for commands that write its config without opening it (config
    set, mount). FORMAT is looked for last: another command may be writing it meanwhile."""
    if not being_created(root) and not (root / "FORMAT").exists():
        raise UsageError(f"{root} is not empty and not a blobctl store",
                         "point --store at a blobctl store or an empty directory")


def being_created(root: Path) -> bool:
    """Whether a directory without FORMAT holds nothing but what creating a store makes
    before FORMAT: empty layout directories (tmp/ may hold the temp file of FORMAT),
    config.toml and the temp file of writing it (`config set` first). Commands that
    write a store's config check it too, so that they never litter a user's directory."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return True
    for entry in entries:
        if entry.name == "config.toml" or (entry.name.endswith(TEMP_SUFFIX) and entry.is_file()):
            continue
        if entry.name not in _LAYOUT or not entry.is_dir(follow_symlinks=False):
            return False
        if any(not (entry.name == "tmp" and inner.endswith(TEMP_SUFFIX)) for inner in os.listdir(entry.path)):
            return False
    return True


class Store:
    def __init__(self, config: Config):
        self.config = config
        self.root = config.store_path
        self.opened_ns = time.time_ns()  # when this command began using the store
        self.objects_dir = self.root / "objects"
        self.refs_dir = self.root / "refs"
        self.pins_dir = self.root / "pins"
        self.tmp_dir = self.root / "tmp"
        self.syncer = Syncer(config.get("durability") == "on")
        #: Whether reads of local objects re-hash them (see codec.decode; get --verify).
        self.rehash_reads = config.get("verify_reads") == "sha256"
        self._encoder = Encoder(self.tmp_dir, str(self.root), config.get("compression_level"), self.syncer)
        self._index: Index | None = None
        self._overlay: Overlay | None = None
        self._counters: dict[str, int] = {}
        self._counters_lock = threading.Lock()
        self._open_lock = threading.RLock()
        self._accesses: dict[str, tuple[int, int, int]] = {}
        self._shards_ready: dict[str, str] = {}
        self._real_dirs: dict[Path, str] = {}  # see _check_inside
        self._ref_users: dict[str, list[str]] | None = None  # see _names_of
        self._journals: set[str] = set()  # this command's, until their transactions commit
        self._ensure_layout()

    # -- lifecycle ----------------------------------------------------------------------
    def _ensure_layout(self) -> None:
        """Create the store, or make again a layout directory that is gone (tools that
        drop empty directories remove tmp/ or pins/). A directory without FORMAT that holds
        only what blobctl itself makes first (layout directories, the config of `config
        set` and its temp file) is a store being created, maybe by another command at this
        moment: both finish creating it."""
        marker = self.root / "FORMAT"
        try:
            text = marker.read_text()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise from_os_error(exc, "open store", self.root) from exc
        if text is not None and text != FORMAT_MARKER:
            raise UsageError(f"{self.root} is not a blobctl store of a known format",
                             "point --store at a blobctl store or an empty directory")
        layout = [self.root / name for name in _LAYOUT]
        if text is not None:
            for directory in layout:
                if not os.path.isdir(directory):
                    try:
                        make_dirs(directory, self.syncer)
                    except OSError:  # a read-only store: reads do without it, writes say why
                        pass
            return
        check_store_directory(self.root)
        try:
            for directory in layout:
                make_dirs(directory, self.syncer)
            atomic_write(marker, self.tmp_dir, lambda handle: handle.write(FORMAT_MARKER.encode()),
                         self.syncer)
        except OSError as exc:
            raise from_os_error(exc, "create store", self.root) from exc

    @property
    def index(self) -> Index:
        """Opened on first use (once, even when worker threads race to it); an unreadable
        index is set aside and rebuilt from the files, and one left behind by a command
        that died changing files is mended (blobctl.journal)."""
        with self._open_lock:
            if self._index is None:
                self._index = self._open_index()
                self._recover_interrupted()
            return self._index

    def journal_changes(self, digests: Iterable[str] = (), names: Iterable[str] = ()) -> None:
        """Called in an index transaction, after its index writes and before it renames in
        or deletes object files (`digests`) or ref files (`names`): if this command dies
        before the transaction commits, the next one mends the index (blobctl.journal)."""
        path = journal.write(self.tmp_dir, list(digests), list(names))
        self._journals.add(path)
        self.index.after_commit(functools.partial(self._journal_done, path))

    def _journal_done(self, path: str) -> None:
        self._journals.discard(path)
        try:
            discard_file(path)
        except OSError:  # left for a later command, which finds the index already right
            pass

    def _recover_interrupted(self) -> None:
        """Mend the index rows of what the journals left list (transactions that never
        committed; see blobctl.journal) from the files, then remove those journals. Not
        now if another command holds the write lock (the journal may be its own, and a
        dead one's can wait for the next command: a reader must not wait), nor on a store
        this user may only read."""
        if not journal.pending(self.tmp_dir) or not os.access(self.tmp_dir / journal.DIRECTORY, os.W_OK):
            return
        try:
            with self.index.transaction(wait=False):  # under the lock, a journal left is a dead one's
                for path in journal.pending(self.tmp_dir):
                    try:
                        digests, names = journal.read(path)
                    except OSError:  # removed meanwhile by its writer, which committed; or unreadable
                        continue
                    self._reconcile(digests, names)
                    self.index.after_commit(functools.partial(self._journal_done, path))
        except (IndexBusy, IndexReadOnly):
            pass

    def _reconcile(self, digests: list[str], names: list[str]) -> None:
        """Make the index rows of `digests` and the mirror of `names` say what the files
        say (inside a transaction)."""
        now, rows, gone = time.time_ns(), [], []
        for digest in digests:
            try:
                found = self.scan_object(digest)
            except BlobctlError:  # not a regular file, say: no row; fsck reports it
                found = None
            if found is not None and found.stored == 0:  # emptied: damage, the next put replaces it
                found = None
            row = self.index.row(digest)
            if found is None and row is not None:
                gone.append(digest)
            elif found is not None and (row is None or (row.size, row.stored) != (found.size, found.stored)):
                rows.append((digest, found.size, found.stored, now))
        self.index.record_many(rows)
        self.index.forget_many(gone)
        for name in names:
            digest = self.hash_in_ref_file(name)
            if digest is None:
                self.index.remove_name(name)
            else:
                self.index.set_name(name, digest)

    def _open_index(self) -> Index:
        path = self.root / "index.sqlite"
        try:  # deleted, or emptied (SQLite takes an empty file for an empty database)
            missing = path.stat().st_size == 0
        except FileNotFoundError:
            missing = True
        try:
            index = Index(path, self.config.mounts)
        except IndexUnreadable as exc:
            self._set_index_aside(path, str(exc))
        else:
            if missing:  # deleted? Then the files are there and it is empty (decided under its lock)
                with index.transaction():
                    totals = index.totals()
                    if totals.objects == totals.names == 0 and self._holds_data():
                        warn(f"index {path} was missing or empty; rebuilt from the objects")
                        self._index = index
                        self.rebuild_index()
            return index
        self._index = Index(path, self.config.mounts)
        self.rebuild_index()
        return self._index

    @staticmethod
    def _set_index_aside(path: Path, reason: str) -> None:
        aside = f"index.sqlite.broken-{time.time_ns()}"
        for suffix in ("", "-wal", "-shm"):  # the journal belongs to the broken file
            try:
                path.with_name(path.name + suffix).replace(path.with_name(aside + suffix))
            except FileNotFoundError:
                pass
        warn(f"index {path} was unreadable ({reason}); moved to {aside} "
             "and rebuilt from the objects")

    def rebuild_damaged_index(self, reason: str) -> None:
        """Set aside and rebuild an index that opened but whose pages are damaged (SQLite's
        "database disk image is malformed", found by fsck's check), as one that cannot be
        opened at all is when the store opens it."""
        with self._open_lock:
            self.reopen_index()
            path = self.root / "index.sqlite"
            try:
                self._set_index_aside(path, reason)
            except OSError as exc:
                raise from_os_error(exc, "set aside the damaged index", path) from exc
            self._index = Index(path, self.config.mounts)
            self.rebuild_index()

    def _holds_data(self) -> bool:
        """Whether objects/ or refs/ holds any file (an index made now would miss them);
        directories alone do not count: a first `put --name dir/x` makes refs/dir/ before
        it opens the index."""
        return any(files for directory in (self.objects_dir, self.refs_dir)
                   for _, _, files in os.walk(directory))

    @property
    def overlay(self) -> Overlay | None:
        """The mounted remotes, or None without mounts (then no backend code is loaded)."""
        if self._overlay is None and self.config.mounts:
            from blobctl.mounts import Overlay

            self._overlay = Overlay(self)
        return self._overlay

    def unmount(self, prefix: str) -> tuple[Mount, list[str]]:
        """Remove a mount and its counters (a mount made there later is another remote's);
        returns it, and the names under it left pointing at objects that gc evicted and
        that no remaining mount holds (reads of them will fail)."""
        from blobctl.gc import name_protections

        removed = self.config.remove_mount(prefix)
        with self.index.transaction():
            self.index.zero_counters(stats.mount_counter(removed.prefix, ""))
        protection = name_protections(self)
        return removed, [name for name, digest in self.iter_refs(removed.prefix)
                         if not self.has_object(digest) and protection(name, digest) is not None]

    def mounted(self) -> Overlay:
        """The overlay, for a command that needs a mount; NotFoundError if none is."""
        if self.overlay is None:
            raise NotFoundError("nothing is mounted", "mount a remote first: blobctl mount PREFIX REMOTE")
        return self.overlay

    def close(self) -> None:
        """Commit counters and access times, and make everything this command wrote
        durable. Statistics never fail a command whose work is done: a store this user
        may only read (another user's, a read-only file system) still serves gets, and
        says nothing of the statistics it cannot keep (no gc runs there either); on a
        full disk, a warning says they were not kept."""
        try:
            if self._overlay is not None:
                self._overlay.close()
            if self._journals:  # a transaction changing files rolled back (an error, SIGTERM)
                try:
                    self._recover_interrupted()
                except (BlobctlError, OSError):
                    pass  # its journal stays: the next command mends the index
            if self._counters or self._accesses:
                try:
                    with self.index.transaction():
                        self.index.bump(self._counters)
                        self._commit_accesses()
                except BlobctlError as exc:
                    if not isinstance(exc, IndexReadOnly) or isinstance(exc, IndexFull):
                        warn(f"counters and access times not recorded: {exc.message}")
                self._counters = {}
            self.syncer.flush()
        finally:
            if self._index is not None:
                self._index.close()
                self._index = None

    def reopen_index(self) -> None:
        """Close the index, to open it again on next use (gc, once it has freed the room
        a full disk's index needs to be written: Index.full)."""
        with self._open_lock:
            if self._index is not None:
                self._index.close()
                self._index = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def written_objects(self) -> int:
        """Objects this command added to the store (puts and fetches from mounts)."""
        return self._counters.get(stats.OBJECTS_WRITTEN, 0)

    def count(self, counter: str, delta: int = 1) -> None:
        """Add to a statistics counter; committed with the command (see close())."""
        with self._counters_lock:
            self._counters[counter] = self._counters.get(counter, 0) + delta

    # -- layout -------------------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        """Where an object lives; refuses a shard directory that is a symlink (it could
        lead outside the store)."""
        path = self.root / keys.object_key(digest)
        if path.parent.is_symlink():
            raise IntegrityError(f"refusing to use {path.parent}: it is a symlink",
                                 "replace it with a real directory ('blobctl fsck' reports these)")
        return path

    def ref_path(self, name: str) -> Path:
        return self.refs_dir / keys.validate_name(name)

    def open_local(self, digest: str) -> BinaryIO | None:
        """The local object opened for reading (not following a symlink, not waiting on a
        FIFO planted in its place), or None."""
        path = self.object_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise _not_a_regular_file(digest, path, "a symlink") from None
            raise from_os_error(exc, f"read object {digest}", path) from exc
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _not_a_regular_file(digest, path, "not a regular file")
        return os.fdopen(fd, "rb")

    def has_object(self, digest: str) -> bool:
        return is_regular_file(self.object_path(digest))

    # -- put ----------------------------------------------------------------------------
    def _publish(self, batch: list[Pending], name: str | None = None, synced: Future | None = None
                 ) -> list[PutResult | BlobctlError]:
        """Sync the batch's temp files, then move them into place under one index
        transaction, binding `name` to the (single) object in that same transaction.
        `synced`: the batch's data sync, already started in another thread (put_paths).

        The transaction holds the store's write lock, so a concurrent gc cannot delete an
        object between our "it already exists" check and our access record (existing
        content is reused and its access refreshed, missing content is renamed in), nor
        between storing an object and naming it. An object found stored when its file was
        read but gone by now is read from its file again; if that fails, the item's
        result is the error."""
        now = time.time_ns()
        results, rows, renamed, written_bytes = [], [], set(), 0
        staged, batch = None, list(batch)
        try:  # staging the ref inside: if it fails, the batch's temp files are still removed
            if name is not None:
                staged = self._stage_ref(name, batch[0].encoded.digest)
            if synced is not None:
                synced.result()
            else:
                self.syncer.sync_files(_temps(batch) + ([staged.temp] if staged else []))
            racehooks.pause("PUBLISH")
            with self.index.transaction():
                moves = []  # (hash, temp, destination) of the new objects, renamed in once recorded
                moving: dict[str, int] = {}  # their stored sizes: the same content twice is one object
                for position, item in enumerate(batch):
                    self._writable_shard(item.encoded.digest)  # refuses a symlinked shard
                    dest = f"{self.root}/{keys.object_key(item.encoded.digest)}"
                    stored = moving.get(item.encoded.digest)
                    if stored is None:
                        # a planted symlink gets replaced, and so does an emptied file (no object is 0 bytes)
                        stored = regular_file_size(dest) or None
                    if stored is None and item.temp is None:
                        try:
                            item = batch[position] = self._encode_again(item)
                        except BlobctlError as exc:
                            results.append(exc)
                            continue
                    created = stored is None
                    if created:
                        moves.append((item.encoded.digest, item.temp, dest))
                        stored = moving[item.encoded.digest] = item.encoded.stored
                    digest, size = item.encoded.digest, item.encoded.size
                    rows.append((digest, size, stored, now))
                    results.append(PutResult(digest, size, stored, item.source, created))
                # the index first: if it cannot be written, no file has changed
                self.index.record_many(rows)
                if moves or staged:
                    self.journal_changes([digest for digest, _, _ in moves], [name] if staged else [])
                for digest, temp, dest in moves:
                    self._move_object_in(digest, temp, dest)
                    renamed.add(temp)
                    written_bytes += moving[digest]
                if staged is not None and isinstance(results[0], PutResult):
                    self.index.set_name(staged.name, staged.digest)
                    self._commit_ref(staged)
                    results = [results[0]._replace(name=name)]
                racehooks.pause("PUBLISHED")
        except OSError as exc:
            raise from_os_error(exc, "write to store", self.objects_dir) from exc
        finally:
            if renamed:  # counted once per batch: this loop bounds the rate of a many-file put
                self.count(stats.OBJECTS_WRITTEN, len(renamed))
                self.count(stats.BYTES_WRITTEN, written_bytes)
            for item in batch:
                if item.temp not in renamed:
                    item.discard()
            if staged is not None:
                discard_file(staged.temp)
        return results

    def _move_object_in(self, digest: str, temp: str, dest: str) -> None:
        """Rename a new object's temp file into its shard (its row written, its change
        journaled)."""
        shard = self._writable_shard(digest)
        try:
            os.replace(temp, dest)
        except FileNotFoundError:  # a gc removed the emptied shard since we made it
            self._shards_ready.pop(digest[:2], None)
            shard = self._writable_shard(digest)
            os.replace(temp, dest)
        self.syncer.sync_dir_later(shard)

    def _encode_again(self, item: Pending) -> Pending:
        """Encode a file whose object a gc removed after it was found stored (rare): the
        file must still hold the same content."""
        again = self._encoder.encode_path(item.source, reuse=False)
        self.syncer.sync_files([again.temp])
        if again.encoded.digest != item.encoded.digest:
            again.discard()
            raise UsageError(f"{item.source} changed while being read; nothing was stored")
        return again

    def _writable_shard(self, digest: str) -> str:
        """The shard directory for a new object, created if needed; checked once per
        command (object_path's symlink refusal) since a batch writes many into each."""
        shard = self._shards_ready.get(digest[:2])
        if shard is None:
            path = self.object_path(digest).parent
            make_dirs(path, self.syncer)
            shard = self._shards_ready[digest[:2]] = str(path)
        return shard

    def put_stream(self, source: BinaryIO, label: str = "-", size: int | None = None,
                   name: str | None = None, progress=None) -> PutResult:
        """Put one stream; `progress` (start/advance, e.g. render.progress's) sees its bytes."""
        source = InputFile(source, "standard input" if label == "-" else label)
        return self._publish([self._encoder.encode_stream(source, size, label, progress)], name)[0]

    def put_path(self, path: str, name: str | None = None, progress=None) -> PutResult:
        result = self._publish([self._encoder.encode_path(path, progress)], name)[0]
        if isinstance(result, BlobctlError):
            raise result
        return result

    def stage_verified(self, source: BinaryIO | bytes | memoryview, digest: str, label: str) -> Pending:
        """Copy an object that arrives already compressed (a remote fetch) into a temp
        file, verified: a stream as it is copied, a whole object in memory (bytes, or a
        view of a download's buffer) before it is written. Publish it with publish(), or
        discard() it; _publish syncs its data before the rename."""
        if isinstance(source, (bytes, memoryview)):
            size = codec.verify_whole(source, digest, label=label)
            temp, stored = self._encoder.write_temp(source), len(source)
        else:
            temp, (size, stored) = self._encoder.fill_temp(
                lambda sink: (codec.verify_stream_into(source, sink, digest, label), sink.tell()))
        return Pending(temp, codec.Encoded(digest, size, stored), label)

    def publish(self, staged: list[Pending]) -> None:
        """Move verified objects into place: one data sync and one index transaction."""
        if staged:
            self._publish(staged)

    @staticmethod
    def discard(staged: Iterable[Pending]) -> None:
        for item in staged:
            item.discard()

    def put_paths(self, paths: Iterable[str], jobs: int | None = None
                  ) -> Iterator[PutResult | BlobctlError]:
        """Put many files and publish them in batches; yields a result or the error for
        each path, in input order, and keeps going past errors.

        Files under INLINE_MAX_SIZE are encoded right here at first: for them a worker
        thread costs more in GIL hand-offs than it overlaps (10,000 files of 4 KiB: half
        the CPU time and 1.5x the rate); larger files go to `jobs` threads, where hashing
        and compressing release the GIL for long stretches. Once PROCESSES_MIN_FILES
        small files had to be compressed, the rest, whatever their size, go in chunks to
        worker processes, one per CPU, which have no GIL to share (10,000 files of 4 KiB
        on 2 cores: 1.53 -> 1.24 s) and encode a large file with threads of their own;
        this thread only publishes, which is what bounds the rate, so it does not stat
        those files to choose. Files already stored are only hashed, which costs less
        than handing them over: putting the same 10,000 files again needs no workers.

        Every temp file goes to a directory of this put's, locked while it runs (see
        locked_temp_dir): a file may wait there for long (behind a slow input), and gc
        must not take it for a leftover; and whatever an interruption leaves unpublished
        goes with the directory."""
        from contextlib import ExitStack

        with ExitStack() as held:
            try:
                workdir = held.enter_context(locked_temp_dir(self.tmp_dir))
            except OSError as exc:
                raise from_os_error(exc, "write to store", self.tmp_dir) from exc
            yield from self._put_paths_via(self._encoder._replace(tmp_dir=Path(workdir)), paths, jobs)

    def _put_paths_via(self, encoder: Encoder, paths: Iterable[str], jobs: int | None
                       ) -> Iterator[PutResult | BlobctlError]:
        """put_paths, its temp files written by `encoder`."""
        from concurrent.futures import Future, ThreadPoolExecutor  # 4 ms of imports only many-file puts need

        compressed_here = 0  # small files encoded here that were not stored yet
        chunk: list[str] = []
        processes = WorkerProcesses(encoder)

        def start(path: str) -> None:
            nonlocal compressed_here
            if compressed_here > PROCESSES_MIN_FILES and processes.available:
                chunk.append(path)
                if len(chunk) >= PROCESS_CHUNK:
                    finish_chunk()
            elif _size_hint(path) >= INLINE_MAX_SIZE:
                in_flight.append(threads.submit(encoder.encode_paths, [path]))
            else:
                outcome = encoder.encode_paths([path])
                in_flight.append(outcome)
                if isinstance(outcome[0], Pending) and outcome[0].temp is not None:
                    compressed_here += 1

        def finish_chunk() -> None:
            if chunk:
                in_flight.append(processes.submit(chunk.copy()))
                chunk.clear()

        def settle(item: Future | list) -> list[Pending | BlobctlError]:
            if not isinstance(item, Future):
                return item
            return processes.result(item) if processes.owns(item) else item.result()

        def publish(ready: list[Pending | BlobctlError]) -> Iterator[PutResult | BlobctlError]:
            """Publish the batch before `ready`, whose data sync ran while `ready` was being
            encoded, and start syncing `ready`'s (empty `ready`: the last one). Publishing
            is what bounds the rate here, and a sync (~7 ms for 256 files) stalled it; but
            a thread alive when the worker processes start would make them spawn rather
            than fork, so until they run each batch is synced and published in turn. A
            batch stays in `syncing` until published, for `finally` to clean up."""
            if not syncing and not processes.running:
                if ready:
                    yield from self._publish_in_order(ready)
                    processes.published(ready)
                return
            if ready:
                syncing.append((ready, sync_thread.submit(self.syncer.sync_files, _temps(ready))))
            while len(syncing) > (1 if ready else 0):
                yield from self._publish_in_order(*syncing[0])
                processes.published(syncing.popleft()[0])

        jobs = jobs or min(8, (os.cpu_count() or 2) + 2)
        in_flight: deque[Future | list] = deque()  # each: the outcomes of one or more paths, in order
        batch: list[Pending | BlobctlError] = []
        syncing: deque[tuple[list[Pending | BlobctlError], Future]] = deque()  # see publish()
        with ThreadPoolExecutor(max_workers=jobs) as threads, processes, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobctl-sync") as sync_thread:
            try:
                for path in paths:
                    start(path)
                    if len(in_flight) >= jobs * 4:
                        batch += settle(in_flight[0])
                        in_flight.popleft()
                    if len(batch) >= PUBLISH_BATCH:
                        yield from publish(batch)
                        batch = []
                finish_chunk()
                while in_flight:
                    batch += settle(in_flight[0])
                    in_flight.popleft()
                    if len(batch) >= PUBLISH_BATCH:
                        yield from publish(batch)
                        batch = []
                yield from publish(batch)
                batch = []
                yield from publish([])
            finally:  # interrupted: drop queued work; what is unpublished goes with put_paths' directory
                if in_flight:
                    processes.stop()
                for item in in_flight:
                    if isinstance(item, Future):
                        item.cancel()

    def _publish_in_order(self, batch: list[Pending | BlobctlError], synced: Future | None = None
                          ) -> Iterator[PutResult | BlobctlError]:
        published = iter(self._publish([item for item in batch if isinstance(item, Pending)], synced=synced))
        for item in batch:
            yield item if isinstance(item, BlobctlError) else next(published)

    # -- names --------------------------------------------------------------------------
    def check_bindable(self, name: str, *, from_remote: bool = False,
                       batch: _BatchNames = _NO_BATCH) -> Path:
        """The ref path for `name`, or a UsageError saying why it cannot be bound: invalid,
        a full hash (names made before this rule still work), escaping through a symlink,
        clashing with another name (also one staged in the same `batch`, not in place
        yet), or under a read-only mount (names there can only come from that remote, by
        pull)."""
        path = self.ref_path(name)
        self._check_inside(path, self.refs_dir, name)
        if keys.is_full_hash(name.lower()):  # get, stat and rm would take it for the object with that hash
            raise UsageError(f"cannot bind name {name!r}: it reads as a hash", "add a prefix, e.g. by-hash/NAME")
        for parent in keys.parent_names(name):
            if parent in batch.names or (self.refs_dir / parent).is_file():
                raise UsageError(f"cannot bind name {name!r}: {parent} is already a name",
                                 f"remove it first with: blobctl rm {parent}")
        if name in batch.directories or (path.is_dir() and not _removed_if_empty(path)):
            raise UsageError(f"cannot bind name {name!r}: other names live under it")
        if not from_remote and self.overlay is not None:
            self.overlay.writable_mount_for(name)
        return path

    def bind(self, name: str, digest: str, *, from_remote: bool = False) -> None:
        """Point `name` at an object, atomically replacing an older binding."""
        self.bind_many([(name, digest)], from_remote=from_remote)

    def bind_many(self, pairs: Iterable[tuple[str, str]], *, from_remote: bool = False,
                  on_refused: Callable[[str, UsageError], object] | None = None) -> None:
        """Bind several names with one data sync and one index transaction. A name that
        cannot be bound (see check_bindable) raises, or with `on_refused` is passed to it
        and skipped."""
        staged: list[_StagedRef] = []
        batch = _BatchNames(set(), set())
        try:
            for name, digest in pairs:
                try:
                    staged.append(self._stage_ref(name, digest, from_remote=from_remote, batch=batch))
                    batch.names.add(name)
                    batch.directories.update(keys.parent_names(name))
                except UsageError as exc:
                    if on_refused is None:
                        raise
                    on_refused(name, exc)
            self.syncer.sync_files([ref.temp for ref in staged])
            if not staged:
                return
            with self.index.transaction():
                for ref in staged:
                    self.index.set_name(ref.name, ref.digest)  # first: if it cannot be written, nothing changed
                self.journal_changes(names=[ref.name for ref in staged])
                for ref in staged:
                    self._commit_ref(ref)
        finally:
            for ref in staged:
                discard_file(ref.temp)

    def _stage_ref(self, name: str, digest: str, *, from_remote: bool = False,
                   batch: _BatchNames = _NO_BATCH) -> _StagedRef:
        """Write a ref's content to a temp file (the caller syncs it), ready to be renamed
        into place."""
        path = self.check_bindable(name, from_remote=from_remote, batch=batch)
        temp = temp_path(self.tmp_dir)
        try:
            write_new_file(temp, f"{digest}\n".encode())
            make_dirs(path.parent, self.syncer)
        except OSError as exc:
            discard_file(temp)
            raise from_os_error(exc, f"bind name {name!r} at", path) from exc
        return _StagedRef(temp, path, name, digest)

    def _commit_ref(self, staged: _StagedRef) -> None:
        """Rename a staged ref into place (its mirror set, its change journaled)."""
        try:
            try:
                os.replace(staged.temp, staged.path)
            except FileNotFoundError:  # an rm of the last name under it pruned the directory
                make_dirs(staged.path.parent, self.syncer)
                os.replace(staged.temp, staged.path)
        except OSError as exc:
            raise from_os_error(exc, f"bind name {staged.name!r} at", staged.path) from exc
        self.syncer.sync_dir_later(staged.path.parent)

    def read_ref(self, name: str) -> str | None:
        """The hash a local name points at, or None if there is no such local name."""
        path = self.ref_path(name)
        self._check_inside(path, self.refs_dir, name)
        try:  # a FIFO left in refs/ must not hang every command that lists names
            data = read_regular_file(path, keys.MAX_REF_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # a directory: of other names
            return None
        except ValueError:  # a device or FIFO holds no hash: damaged
            data = b""
        except OSError as exc:
            raise from_os_error(exc, f"read name {name!r} at", path) from exc
        return keys.parse_ref(data, f"{name!r} ({path})")

    def ref_file_content(self, relative: str) -> bytes | None:
        """The bytes of a file under refs/ (up to one more than a ref may hold), whatever
        its name, or None if it cannot be read. Not following symlinks: such a file is
        read only to keep its object from gc, or to move it aside (fsck)."""
        try:
            fd = os.open(self.refs_dir / relative, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return os.read(fd, keys.MAX_REF_BYTES + 1)
        except OSError:
            return None
        finally:
            os.close(fd)

    def hash_in_ref_file(self, relative: str) -> str | None:
        """The hash a file under refs/ holds, whatever its name (one made by an older
        blobctl under a rule since tightened, say), or None if it holds none or cannot
        be read (see ref_file_content)."""
        content = self.ref_file_content(relative)
        try:
            return None if content is None else keys.parse_ref(content, relative)
        except BlobctlError:
            return None

    def iter_refs(self, prefix: str = "", on_damaged: Callable[[str, BlobctlError], object]
                  | None = None) -> Iterator[tuple[str, str]]:
        """(name, hash) of every local name starting with `prefix`, sorted; damaged refs
        are skipped and passed to `on_damaged` (default: a warning on stderr)."""
        base, names = self.refs_dir, []
        for directory, _, files in os.walk(base):
            rel_dir = os.path.relpath(directory, base)
            names += (name for name in (f if rel_dir == "." else f"{rel_dir}/{f}" for f in files)
                      if name.startswith(prefix))
        for name in sorted(names):  # by whole name: 'a.txt' before 'a/x', 'b' before 'c/d'
            try:
                digest = self.read_ref(name)
                if digest is None and os.path.islink(self.refs_dir / name):
                    raise IntegrityError(f"ref {name!r} ({self.refs_dir / name}) is damaged: "
                                         "a symlink to nothing", keys.LOCAL_REF_HINT)
            except BlobctlError as exc:
                if on_damaged is None:
                    warn(str(exc))
                else:
                    on_damaged(name, exc)
                continue
            if digest is not None:  # None: removed since the listing (an rm meanwhile)
                yield name, digest

    def _check_inside(self, path: Path, base: Path, what: str) -> None:
        """Refuse a path that a symlink inside the store would lead elsewhere. Directories
        are resolved once per command: a pull binding 1,000 names resolved the same few
        directories 4,000 times, each a walk from / in Python."""
        real = os.path.realpath(path) if os.path.islink(path) else f"{self._real_dir(path.parent)}/{path.name}"
        if not real.startswith(self._real_dir(base) + os.sep):
            raise UsageError(f"refusing {what!r}: {path} leads outside {base} through a symlink")

    def _real_dir(self, directory: Path) -> str:
        real = self._real_dirs.get(directory)
        if real is None:
            real = self._real_dirs[directory] = os.path.realpath(directory)
        return real

    # -- resolving keys -----------------------------------------------------------------
    def resolve(self, key: str) -> Resolved:
        """A full hash, 'sha256:<hash>', a name, or a unique hash prefix (≥ 4 hex)."""
        if key.startswith("sha256:"):
            return Resolved(keys.validate_hash(key))
        if keys.is_full_hash(key):
            return Resolved(key)
        name_error = None
        try:
            keys.validate_name(key)
        except UsageError as exc:
            name_error = exc
        if name_error is None:
            digest = self.read_ref(key)
            if digest is not None:
                return Resolved(digest, key)
        if keys.is_hash_prefix(key) and (found := self._resolve_prefix(key)) is not None:
            return found
        hex_key = key.lower()  # if no name spells it: an upper-case hash or prefix, as some tools print them
        if name_error is None and self.overlay is not None:
            try:
                digest = self.overlay.resolve_name(key)
            except RemoteError:
                if not keys.is_hash_prefix(hex_key):
                    raise
                digest = None  # an unreachable mount does not stop a local hash
            if digest is not None:
                return Resolved(digest, key)
        if hex_key != key and keys.is_full_hash(hex_key):
            return Resolved(hex_key)
        if hex_key != key and keys.is_hash_prefix(hex_key) and (found := self._resolve_prefix(hex_key)) is not None:
            return found
        if name_error is not None and not keys.is_hash_prefix(hex_key):
            raise name_error
        hint = "list names with 'blobctl ls' and objects with 'blobctl ls --objects'"
        if keys.is_hash_prefix(hex_key) and self.overlay is not None:
            remote_matches, unlisted = self.overlay.match_prefix(hex_key)
            if (found := self._unique(hex_key, remote_matches)) is not None:
                return found
            if unlisted:
                hint = f"{', '.join(unlisted)} cannot be searched by hash prefix: give the full hash"
        if len(key) < keys.MIN_PREFIX_LEN and keys.is_hex(hex_key):
            hint = f"a hash prefix needs at least {keys.MIN_PREFIX_LEN} hex digits; {hint}"
        raise NotFoundError(f"no object or name matches {key!r}", hint)

    def _resolve_prefix(self, prefix: str) -> Resolved | None:
        """The local object whose hash starts with `prefix`, None if none does; UsageError
        if several do."""
        return self._unique(prefix, self.match_prefix(prefix))

    @staticmethod
    def _unique(prefix: str, matches: list[str]) -> Resolved | None:
        """The one hash of `matches` (those starting with `prefix`); None if there is
        none, UsageError if there are several."""
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in matches[:5]) + (" …" if len(matches) > 5 else "")
            raise UsageError(f"hash prefix {prefix!r} is ambiguous: {len(matches)} objects match "
                             f"({shown})", "give more hex digits")
        return Resolved(matches[0]) if matches else None

    def resolve_to_read(self, key: str) -> Resolved:
        """resolve() for a read: a key found nowhere counts as a miss (a hash that is not
        there counts when its object is opened)."""
        try:
            return self.resolve(key)
        except NotFoundError:
            self.count(stats.MISSES)
            owner = self.overlay.owner(key) if self.overlay is not None else None
            if owner is not None:  # a name of its own that no mount has
                self.count(stats.mount_counter(owner.prefix, stats.MOUNT_MISSES))
            raise

    def match_prefix(self, prefix: str) -> list[str]:
        """Full hashes of local objects starting with `prefix` (at least 2 hex digits)."""
        shard = self.objects_dir / prefix[:2]
        if shard.is_symlink():
            return []
        try:
            entries = os.listdir(shard)
        except FileNotFoundError:
            return []
        rest = prefix[2:]
        return sorted(prefix[:2] + e for e in entries
                      if e.startswith(rest) and keys.is_full_hash(prefix[:2] + e))

    # -- reading ------------------------------------------------------------------------
    def open_object(self, digest: str) -> BinaryIO:
        """A local object's file, opened for reading; NotFoundError if it is absent."""
        handle = self.open_local(digest)
        if handle is None and self.overlay is not None and self.overlay.fetch(digest):
            self.count(stats.REMOTE_HITS)
            handle = self.open_local(digest)
            if handle is not None:
                return handle
        if handle is None:
            evicted = self._index_lookup(lambda index: index.was_evicted(digest))
            if evicted:
                self.count(stats.EVICTED_MISSES)
            self.count(stats.MISSES)
            raise NotFoundError(f"object {digest} is not in the store"
                                + (" (gc evicted it earlier)" if evicted else ""),
                                "raise max_size if this happens often" if evicted else None)
        self.count(stats.LOCAL_HITS)
        return handle

    def _index_lookup(self, query: Callable[[Index], object]) -> object:
        try:
            return query(self.index)
        except Exception:  # noqa: BLE001 - statistics must never fail a read
            return None

    def read(self, resolved: Resolved, emit: Callable[[memoryview], object],
             start: int = 0, end: int | None = None, *, verify_first: bool = False,
             announce: Callable[[int], object] | None = None, progress=None) -> int:
        """Stream an object's verified bytes in [start, end) to `emit`; returns its size.
        An object fetched from a mount was SHA-256-verified on its way in; a local one is
        checked as `rehash_reads` says.

        With `verify_first`, an object of at most VERIFY_BEFORE_EMIT_SIZE is decoded and
        verified completely before `emit` sees its first byte; a larger one streams, and if
        it fails after output began, PartialOutputError says the output is incomplete.
        `announce(size)` runs once, just before the first byte (a framing header);
        `progress` (start/advance) follows the bytes of an object that streams."""
        label = resolved.name or resolved.digest
        begun = False

        def deliver(chunk: memoryview) -> None:
            nonlocal begun
            if not begun and announce is not None:
                announce(declared)
            begun = True
            emit(chunk)

        with self.open_object(resolved.digest) as handle:
            declared = codec.content_size(handle.read(codec.HEAD_SIZE))
            handle.seek(0)
            if announce is not None and declared is None:  # the header needs the size first
                declared = codec.decode(handle, lambda chunk: None, resolved.digest, label=label,
                                        rehash=self.rehash_reads)
                handle.seek(0)
            held = bytearray() if verify_first and declared is not None \
                and declared <= VERIFY_BEFORE_EMIT_SIZE else None
            if progress is not None and held is None:
                progress.start(f"get {resolved.name or resolved.digest[:12]}", declared)
                emit = _counting(emit, progress.advance)
            try:
                size = codec.decode(handle, deliver if held is None else held.extend, resolved.digest,
                                    label=label, start=start, end=end, rehash=self.rehash_reads)
            except IntegrityError as exc:
                if begun and verify_first:
                    raise PartialOutputError(f"{exc.message}; the output is incomplete", exc.hint) from exc
                raise
            stored = os.fstat(handle.fileno()).st_size
        if held is not None or not begun:
            deliver(memoryview(held if held is not None else b""))
        self._note_access(resolved.digest, size, stored)
        self.count(stats.BYTES_READ, max(0, min(size if end is None else end, size) - start))
        return size

    def _note_access(self, digest: str, size: int, stored: int) -> None:
        """Remember a read; committed with the counters in close(), so a command that
        reads many objects (get --batch) pays for one transaction, not one per object."""
        self._accesses[digest] = (size, stored, time.time_ns())

    def _commit_accesses(self) -> None:
        """Runs under the write lock: an object removed since it was read (rm, or a gc in
        another process) gets no row back, or the totals would count a ghost."""
        accesses, self._accesses = self._accesses, {}
        missing = [(digest, size, stored, now) for digest, (size, stored, now) in accesses.items()
                   if not self.index.touch(digest, now) and self.has_object(digest)]
        self.index.record_many(missing)

    def write_to(self, resolved: Resolved, out: BinaryIO, start: int = 0, end: int | None = None,
                 progress=None) -> int:
        """Copy an object to a stream, small objects verified before any byte goes out."""
        return self.read(resolved, SlicedWriter(out).write, start, end, verify_first=True,
                         progress=progress)

    def write_framed(self, resolved: Resolved, out: BinaryIO) -> int:
        """Write 'HASH SIZE\\n', the object's bytes and '\\n' (git cat-file --batch framing).
        Nothing is written for an object that fails before its header; PartialOutputError
        means it failed while streaming, after the header."""
        size = self.read(resolved, SlicedWriter(out).write, verify_first=True,
                         announce=lambda size: out.write(f"{resolved.digest} {size}\n".encode()))
        out.write(b"\n")
        return size

    def export(self, resolved: Resolved, dest: Path, start: int = 0, end: int | None = None,
               progress=None) -> int:
        """Write an object to a file, as `cp` would but atomically: a regular file (new or
        replaced, keeping its permissions) is complete and verified, or untouched. A
        symlink is written through, and a device or FIFO (/dev/null, a named pipe) is
        written directly, as there is no file to replace; so is one of this process's
        descriptors (/dev/stdout), as `> FILE` would."""
        target = Path(os.path.realpath(dest))
        descriptor = descriptor_named(dest)
        try:
            info = target.stat() if descriptor is None else None
        except FileNotFoundError:
            info = None
        try:
            if descriptor is None and (info is None or stat_module.S_ISREG(info.st_mode)):
                return atomic_write(target, target.parent, lambda handle: self.read(
                    resolved, handle.write, start, end, progress=progress), self.syncer,
                    mode=None if info is None else stat_module.S_IMODE(info.st_mode))
            if info is not None and stat_module.S_ISDIR(info.st_mode):
                raise UsageError(f"cannot write to {dest}: it is a directory")
            with open(target if descriptor is None else os.dup(descriptor), "wb") as handle:
                return self.read(resolved, SlicedWriter(handle).write, start, end, progress=progress)
        except OSError as exc:
            error = from_os_error(exc, "write", dest)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                error.hint = None  # the store's own advice (gc) does not apply to this file
            elif exc.errno in (errno.EACCES, errno.EPERM) and not os.access(target.parent, os.W_OK):
                error.hint = (f"-o writes a temp file in {target.parent} and renames it over the file, "
                              "so that directory must be writable; '> FILE' writes in place")
            raise error from exc

    # -- listing and inspection ---------------------------------------------------------
    def describe(self, digest: str) -> tuple[int | None, int | None, int | None]:
        """(size, stored, accessed_ns) from the index, falling back to the file itself."""
        row = self.index.row(digest)
        if row is not None and self.has_object(digest):
            return row.size, row.stored, row.accessed
        handle = self.open_local(digest)
        if handle is None:
            return None, None, None
        with handle:
            size = codec.content_size(handle.read(codec.HEAD_SIZE))
            return size, os.fstat(handle.fileno()).st_size, None

    def list_names(self, prefix: str = "") -> list[NameEntry]:
        entries = []
        for name, digest in self.iter_refs(keys.validate_prefix(prefix)):
            size, stored, _ = self.describe(digest)
            entries.append(NameEntry(name, digest, size, stored))
        return entries

    def iter_objects(self) -> Iterator[str]:
        """Hashes of the object files present, in hash order (walks the tree)."""
        return (digest for kind, _, digest in self.walk_objects() if kind == "object")

    def walk_objects(self) -> Iterator[tuple[str, Path, str | None]]:
        """(kind, path, hash) for every entry under objects/, in order, never following a
        symlink: kind is 'object' (a regular file named by a full hash in its shard),
        'symlink' or 'stray_file' (anything else, for fsck)."""
        try:
            shards = sorted(os.scandir(self.objects_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for shard in shards:
            if shard.is_symlink():
                yield "symlink", Path(shard.path), None
            elif not shard.is_dir() or len(shard.name) != 2:
                yield "stray_file", Path(shard.path), None
            else:
                try:
                    shard_entries = sorted(os.scandir(shard.path), key=lambda e: e.name)
                except FileNotFoundError:  # emptied and removed by a gc since the listing
                    continue
                for entry in shard_entries:
                    digest = shard.name + entry.name
                    if entry.is_symlink():
                        yield "symlink", Path(entry.path), None
                    elif keys.is_full_hash(digest) and entry.is_file(follow_symlinks=False):
                        yield "object", Path(entry.path), digest
                    else:
                        yield "stray_file", Path(entry.path), None

    def info(self, key: str) -> KeyInfo:
        resolved = self.resolve(key)
        size, stored, accessed = self.describe(resolved.digest)
        names = tuple(self.index.names_of(resolved.digest))
        pinned, pin_expires = pins.state(self.pins_dir, resolved.digest, time.time_ns())
        return KeyInfo(key, resolved.digest, size is not None or stored is not None,
                       size, stored, accessed, names, pinned, pin_expires)

    def zero_counters(self) -> None:
        with self.index.transaction():
            self.index.zero_counters()

    def summary(self) -> StoreSummary:
        totals = self.index.totals()
        return StoreSummary(os.path.abspath(self.root), totals.objects, totals.names, totals.size,
                            totals.stored, self.config.get("max_size"), self.index.counters())

    # -- removal ------------------------------------------------------------------------
    def remove(self, key: str, *, force: bool = False) -> Removed:
        """Remove a name (its object stays until gc), or an object that no name uses. A
        damaged ref is removed as a name: removing it needs no hash."""
        try:
            resolved = self.resolve(key)
            local = resolved.name is not None and self.read_ref(resolved.name) is not None
        except IntegrityError:
            path = self.ref_path(key)
            self._check_inside(path, self.refs_dir, key)  # never a file a symlink leads to
            if regular_file_size(path) is None:
                raise
            resolved, local = Resolved(None, key), True
        if resolved.name is not None:
            path = self.ref_path(resolved.name)
            if not local:
                raise NotFoundError(f"{key!r} is not a local name: it comes from a mount",
                                    "rm removes local names; a remote's names change only by push")
            with self.index.transaction():
                self.index.remove_name(resolved.name)  # the index first: if it cannot be written, nothing changed
                self.journal_changes(names=[resolved.name])
                path.unlink(missing_ok=True)
            self.syncer.sync_dir_later(path.parent)
            if self._ref_users is not None and resolved.name in self._ref_users.get(resolved.digest, []):
                self._ref_users[resolved.digest].remove(resolved.name)
            self._prune_empty_dirs(path.parent, self.refs_dir)
            return Removed(key, "name", resolved.digest)
        users = [] if force else self._names_of(resolved.digest)
        pin = self.pins_dir / resolved.digest
        path = self.object_path(resolved.digest)
        with self.index.transaction():
            if not force:  # again under the lock: a name bound, moved or removed since the scan
                users = [name for name in users if self.hash_in_ref_file(name) == resolved.digest] \
                    or self.index.names_of(resolved.digest, limit=3)
                if users:
                    raise UsageError(f"object {resolved.digest[:12]} is still named by {', '.join(users)}",
                                     "remove the names first, or pass --force")
                if pins.is_pinned(self.pins_dir, resolved.digest, time.time_ns()):
                    raise UsageError(f"object {resolved.digest[:12]} is pinned",
                                     f"unpin it first (blobctl unpin {resolved.digest[:12]}), or pass --force")
            if not os.path.lexists(path):
                raise NotFoundError(f"object {resolved.digest} is not in the store")
            self.index.forget(resolved.digest)  # the index first: if it cannot be written, nothing changed
            self.journal_changes([resolved.digest])
            path.unlink()
            discard_file(pin)  # a pin of an object that is gone would protect nothing
        self.syncer.sync_dir_later(path.parent)
        return Removed(key, "object", resolved.digest)

    def _names_of(self, digest: str, limit: int = 3) -> list[str]:
        """Up to `limit` local names pointing at `digest`, read from refs/ (the truth: a
        ref restored by hand is not in the index's mirror), counting refs whose name is
        no longer valid, as gc does. refs/ is read once per command (`rm` of many
        hashes), and remove() keeps what it read current."""
        if self._ref_users is None:
            users: dict[str, list[str]] = {}

            def damaged(name: str, _: BlobctlError) -> None:
                found = self.hash_in_ref_file(name)
                if found is not None:
                    users.setdefault(found, []).append(name)

            for name, target in self.iter_refs(on_damaged=damaged):
                users.setdefault(target, []).append(name)
            self._ref_users = users
        return self._ref_users.get(digest, [])[:limit]

    def _prune_empty_dirs(self, directory: Path, stop: Path) -> None:
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            self.syncer.sync_dir_later(directory.parent)
            directory = directory.parent

    # -- metadata rebuild ---------------------------------------------------------------
    def scan_object(self, digest: str) -> ObjectRow | None:
        """An index row built from the object file alone (size from its frame header)."""
        handle = self.open_local(digest)
        if handle is None:
            return None
        with handle:
            info = os.fstat(handle.fileno())
            size = codec.content_size(handle.read(codec.HEAD_SIZE))
            if size is None:
                handle.seek(0)
                try:
                    size = codec.decode(handle, lambda chunk: None, digest, label=digest)
                except IntegrityError:
                    size = 0
        return ObjectRow(digest, size, info.st_size, info.st_mtime_ns, info.st_mtime_ns)

    def rebuild_index(self) -> int:
        """Recompute object rows and the name mirror from the files; returns objects seen.
        Done under the index's write lock, which publishing holds while it renames files
        in, so no object or name of a concurrent command is missed or dropped. An object
        file that cannot be opened (a planted symlink, say) gets no row: fsck reports it."""
        rows = []
        with self.index.transaction():
            for digest in self.iter_objects():
                try:
                    row = self.scan_object(digest)
                except BlobctlError:
                    continue
                if row is not None:
                    rows.append(row)
            self.index.replace_all(rows, self.iter_refs())
        return len(rows)
