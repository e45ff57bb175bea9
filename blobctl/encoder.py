"""Encoding new objects into temp files: the part of storing that comes before the store
(blobctl.store) publishes them under their hashes. A put of many small files hands chunks
of them to worker processes (WorkerProcesses), which run this same code; a verified
download is staged as a Pending too (blobctl.mounts)."""

from __future__ import annotations

import functools
import hashlib
import os
import stat as stat_module
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from blobctl import codec, keys
from blobctl.errors import BlobctlError, UsageError, from_os_error
from blobctl.fsutil import (TEMP_SUFFIX, Syncer, discard_file, regular_file_size, remove_temp_dir, temp_path,
                            write_new_file)

T = TypeVar("T")
#: At most this many worker processes, however many CPUs.
MAX_WORKER_PROCESSES = 8
#: How often a worker process checks that the put that started it is still there.
WORKER_WATCH_SECONDS = 0.25


class Pending(NamedTuple):
    """An encoded object in a temp file, waiting to be published under its hash. No temp
    file: the object was already stored when its file was read (see encode_small)."""

    temp: str | None
    encoded: codec.Encoded
    source: str

    def discard(self) -> None:
        if self.temp is not None:
            discard_file(self.temp)


class InputFile:
    """A file being put: its read errors name that file, not the store being written."""

    def __init__(self, handle: BinaryIO, label: str):
        self._handle, self._label = handle, label

    def read(self, size: int = -1) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as exc:
            raise from_os_error(exc, "read", self._label) from exc

    def readinto(self, buffer) -> int:
        try:
            return self._handle.readinto(buffer)
        except OSError as exc:
            raise from_os_error(exc, "read", self._label) from exc


class Encoder(NamedTuple):
    """Writes the temp files of new objects: the part of a put that comes before
    publishing, done in this process or in a worker process (see Store.put_paths)."""

    tmp_dir: Path
    root: str  # the store's directory
    level: int
    syncer: Syncer

    def fill_temp(self, fill: Callable[[BinaryIO], T]) -> tuple[str, T]:
        """A fresh temp file in tmp/ written by `fill(file)`, with fill's result. It is
        removed on any failure (Ctrl-C too), and an OSError becomes one clear line."""
        temp = temp_path(self.tmp_dir)
        try:
            with open(temp, "xb") as sink:
                return temp, fill(self.syncer.writing(sink))
        except BaseException as exc:
            raise self._abandon(temp, exc)

    def write_temp(self, content: bytes) -> str:
        """A fresh temp file in tmp/ holding `content`, as fill_temp but without a file
        object (see write_new_file)."""
        temp = temp_path(self.tmp_dir)
        try:
            write_new_file(temp, content)
        except BaseException as exc:
            raise self._abandon(temp, exc)
        return temp

    def _abandon(self, temp: str, exc: BaseException) -> BaseException:
        """Remove a temp file that could not be completed; returns what to raise for `exc`."""
        discard_file(temp)
        if not isinstance(exc, OSError):
            return exc
        error = from_os_error(exc, "write to store", self.tmp_dir)
        error.__cause__ = exc
        return error

    def encode_stream(self, source: BinaryIO, size: int | None, label: str, progress=None, *,
                      reuse: bool = False) -> Pending:
        """The temp file of `source`'s object; `reuse` as for encode_small."""
        if size is not None and size < codec.MULTITHREAD_MIN_SIZE:
            return self.encode_small(codec.read_small(source.read, size, label), label, reuse=reuse)

        def fill(sink: BinaryIO) -> codec.Encoded:
            if progress is not None:
                progress.start(f"put {label}", size)
            return codec.encode(source, sink, level=self.level, size=size, label=label,
                                on_read=progress.advance if progress is not None else None)

        temp, encoded = self.fill_temp(fill)
        return Pending(temp, encoded, label)

    def encode_small(self, data: bytes, label: str, *, reuse: bool) -> Pending:
        """The temp file of an input read whole. With `reuse` (the input is a file that
        can be read again), an input whose object is already stored is hashed only, not
        compressed or written (putting 10,000 files put before: 1.8-2.8 s -> 0.47 s; git,
        which also checks first, 0.19 s). _publish checks again, under the store's lock."""
        digest = hashlib.sha256(data).hexdigest()
        # a plain string join (os.path.join cost 7% of re-putting many files); shard unchecked
        if reuse and regular_file_size(f"{self.root}/{keys.object_key(digest)}"):  # not emptied: see _publish
            return Pending(None, codec.Encoded(digest, len(data), 0), label)
        frame = codec.compress_small(data, self.level)
        return Pending(self.write_temp(frame), codec.Encoded(digest, len(data), len(frame)), label)

    def encode_path(self, path: str, progress=None, *, reuse: bool = True) -> Pending:
        """The temp file of the file at `path`. A small regular file is opened and read
        with plain system calls, as this runs once per file of a many-file put: with
        write_temp, 10,000 files of 4 KiB went from 1.09 to 0.88 s, 1.56 to 1.19 CPU-s."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise from_os_error(exc, "read", path) from exc
        except ValueError:  # a NUL byte: no file can be named so (a NUL-separated list read by lines?)
            raise UsageError(f"cannot read {path}: a path cannot hold a NUL byte",
                             "for NUL-separated paths use --stdin-paths -z") from None
        try:
            info = os.fstat(fd)
            if stat_module.S_ISDIR(info.st_mode):
                raise UsageError(f"cannot put {path}: it is a directory",
                                 "pass files, e.g. with: find DIR -type f | blobctl put --stdin-paths")
            size = info.st_size if stat_module.S_ISREG(info.st_mode) else None
            try:
                if size is not None and size < codec.MULTITHREAD_MIN_SIZE:
                    try:
                        return self.encode_small(codec.read_small(functools.partial(os.read, fd), size, path),
                                                 path, reuse=reuse)
                    except UsageError:  # another length than its size said
                        if not _unchanged(fd, info):
                            raise
                        os.lseek(fd, 0, os.SEEK_SET)  # a /proc or /sys file: its size is no guide
                        size = None
            except OSError as exc:
                raise from_os_error(exc, "read", path) from exc
            with open(fd, "rb", closefd=False) as handle:
                return self.encode_stream(InputFile(handle, path), size, path, progress, reuse=reuse)
        finally:
            os.close(fd)

    def encode_paths(self, paths: list[str], stopping: Callable[[], bool] = lambda: False
                     ) -> list[Pending | BlobctlError]:
        """Each path's temp file, or the error that kept it from being read, in order.
        Once `stopping()` says so, the remaining paths are not read (an interrupted put
        in a worker process: see WorkerProcesses.stop)."""
        results: list[Pending | BlobctlError] = []
        try:
            for path in paths:
                if stopping():
                    results.append(BlobctlError(f"{path}: not stored, the put was interrupted"))
                    continue
                try:
                    results.append(self.encode_path(path))
                except BlobctlError as exc:
                    results.append(exc)
        except BaseException:  # interrupted: what this call wrote will never be published
            for item in results:
                if isinstance(item, Pending):
                    item.discard()
            raise
        return results


def _unchanged(fd: int, before: os.stat_result) -> bool:
    """Whether a file's size and times are still those of `before`: a file read to
    another length than its size without changing is a /proc or /sys file, whose size
    says nothing of its content."""
    now = os.fstat(fd)
    return (now.st_size, now.st_mtime_ns, now.st_ctime_ns) == \
        (before.st_size, before.st_mtime_ns, before.st_ctime_ns)


#: In a worker process: the flag its parent raises when the put is interrupted.
_stop_flag = None


def _encode_in_worker(encoder: Encoder, paths: list[str]) -> None:
    """A worker process's task: encode `paths` into temp files for the parent to publish,
    and leave their outcomes in a file (_outcomes_path). Not returned: the pool would send
    them through the pipe all workers share, and a chunk's outcomes (~13 KB for 64 files)
    take more than one atomic pipe write; a worker killed in the middle of one (the OOM
    killer, say) left the pool waiting forever for the rest, and the put hung."""
    import pickle

    outcomes = encoder.encode_paths(paths, lambda: _stop_flag.value != 0)
    with open(_outcomes_path(encoder), "wb") as sink:
        pickle.dump(outcomes, sink, pickle.HIGHEST_PROTOCOL)


def _outcomes_path(encoder: Encoder) -> str:
    """Where a worker leaves a task's outcomes: in the task's directory (see
    WorkerProcesses.submit), so gc removes it if nobody does."""
    return f"{encoder.tmp_dir}/outcomes{TEMP_SUFFIX}"


def _worker_start_method() -> str:
    """Forking a worker costs ~2 ms; spawning one imports blobctl again (~75 ms of CPU
    each; 10,000 files of 4 KiB: 1.19 -> 1.11 s). A fork is safe only while this process
    has no other thread, which might hold a lock the child would then wait for, and only
    on Linux (macOS system libraries do not survive a fork)."""
    return "fork" if sys.platform.startswith("linux") and threading.active_count() == 1 else "spawn"


def _start_worker(parent: int, stop_flag) -> None:
    """Ctrl-C (and SIGTERM, sent to a whole job) reach the process group: the parent alone
    handles them; it raises `stop_flag`, and each worker finishes the file it is on, so
    that the parent can remove their temp files. A SIGTERM from the parent itself is
    obeyed at once: the pool sends it to the other workers when one dies, and that one
    may have died holding the task queue's lock, which they would wait for forever. A parent killed outright would leave
    the workers waiting for tasks forever too: a watcher thread ends the worker once its
    parent is gone. (Without sigtimedwait, as on macOS, any SIGTERM ends a worker.)"""
    import signal

    global _stop_flag
    _stop_flag = stop_flag
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigtimedwait"):  # the watcher below takes SIGTERM instead of a handler
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def watch() -> None:
        while os.getppid() == parent:
            if not hasattr(signal, "sigtimedwait"):
                time.sleep(WORKER_WATCH_SECONDS)
                continue
            info = signal.sigtimedwait({signal.SIGTERM}, WORKER_WATCH_SECONDS)
            if info is not None and info.si_pid == parent:
                break
        os._exit(1)  # its half-written temp file is left for gc, as the parent's would be

    threading.Thread(target=watch, daemon=True, name="blobctl-parent-watch").start()


#: Seconds an interrupted put gives a worker to end on SIGTERM before it kills it.
WORKER_STOP_TIMEOUT = 2.0

class WorkerProcesses:
    """Worker processes encoding chunks of small files for Store.put_paths, started on first
    use (forked or spawned: see _worker_start_method). If they cannot start or one dies,
    the chunks are encoded here instead: slower, same results."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder
        self._pool = None
        self._stop_flag = None  # shared with the workers: see stop()
        self._chunks: dict = {}  # future -> (its paths, its task's encoder), to redo here if the pool breaks
        self._task_dirs: list[str] = []  # see submit
        self._unpublished: dict[str, int] = {}  # task directory -> its temp files not yet published
        self._count = min(codec.usable_cpus(), MAX_WORKER_PROCESSES)
        self.available = self._count > 1

    def submit(self, paths: list[str]):
        """A future of the outcomes of `paths`, or the outcomes themselves if encoded here.
        Each task writes its temp files into a directory of its own (in the encoder's
        temp directory), which nobody writes to once this process renames files out of
        it: a rename waits for the lock of a directory that others are creating files in
        (10,000 files of 4 KiB, all in one directory: 0.86 -> 0.82 s, CPU 1.17 -> 1.09 s).
        It is removed once its files are published (see published)."""
        from concurrent.futures import BrokenExecutor, ProcessPoolExecutor

        if self.available and self._pool is None:
            import multiprocessing

            try:
                context = multiprocessing.get_context(_worker_start_method())
                self._stop_flag = context.RawValue("b", 0)  # a byte of shared memory: read per file, no lock
                self._pool = ProcessPoolExecutor(self._count, context, initializer=_start_worker,
                                                 initargs=(os.getpid(), self._stop_flag))
            except (OSError, ImportError, NotImplementedError):  # e.g. no working sem_open
                self.available = False
        if self.available:
            task_dir = temp_path(self._encoder.tmp_dir)
            self._task_dirs.append(task_dir)  # first: Ctrl-C may come at any point from here
            try:
                os.mkdir(task_dir)
            except OSError as exc:
                raise from_os_error(exc, "write to store", self._encoder.tmp_dir) from exc
            try:
                # a fresh Syncer: the workers only write temp files, which this process syncs
                encoder = self._encoder._replace(tmp_dir=Path(task_dir), syncer=Syncer(self._encoder.syncer.enabled))
                future = self._pool.submit(_encode_in_worker, encoder, paths)
            except BrokenExecutor:  # a worker died since the last result was read
                self.available = False
            else:
                self._chunks[future] = (paths, encoder)
                return future
        return self._encoder.encode_paths(paths)

    def stop(self) -> None:
        """Tell the workers to skip what is left of their chunks (the put was interrupted):
        a chunk of large files would otherwise keep the parent waiting for minutes."""
        if self._stop_flag is not None:
            self._stop_flag.value = 1

    @property
    def running(self) -> bool:
        """Whether the worker processes have been started (see _worker_start_method)."""
        return self._pool is not None

    def owns(self, future) -> bool:
        return future in self._chunks

    def result(self, future) -> list[Pending | BlobctlError]:
        import pickle
        from concurrent.futures import BrokenExecutor

        paths, encoder = self._chunks[future]  # forgotten only once its outcome is in hand
        try:
            future.result()
            outcomes_file = _outcomes_path(encoder)
            with open(outcomes_file, "rb") as source:
                outcome = pickle.load(source)
            discard_file(outcomes_file)
        except BrokenExecutor:  # a worker died (killed, out of memory): carry on here
            self.available = False
            self._pool.shutdown(wait=True)  # the pool stops every worker: wait for that
            remove_temp_dir(encoder.tmp_dir)
            outcome = self._encoder.encode_paths(paths)
        except (OSError, pickle.UnpicklingError):  # its outcomes could not be written (a full disk)
            remove_temp_dir(encoder.tmp_dir)
            outcome = self._encoder.encode_paths(paths)
        del self._chunks[future]
        self._unpublished[str(encoder.tmp_dir)] = 0
        self.published(outcome, taken=-1)
        return outcome

    def published(self, items: Iterable[Pending | BlobctlError], taken: int = 1) -> None:
        """Note that `items` (outcomes of result) were published or discarded; a task's
        directory goes once all its files have (a put of a million files made 15,600 of
        them). `taken` -1: count them in as the outcome is handed out."""
        for item in items:
            if isinstance(item, Pending) and item.temp is not None:
                home = os.path.dirname(item.temp)
                if home in self._unpublished:
                    self._unpublished[home] -= taken
        for home in [home for home, count in self._unpublished.items() if count == 0]:
            del self._unpublished[home]
            remove_temp_dir(home)

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        """Stop the workers; then remove every task's directory, with the temp files of
        any chunk whose outcome nobody took: no worker can be writing them any more, and
        the caller has published or discarded the rest. Interrupted (Ctrl-C, an error),
        the workers are stopped at once: one may be reading an input that never ends
        (/dev/zero, a FIFO nobody writes to), and the put would wait for it forever."""
        if self._pool is not None:
            if exc_type is not None:
                import multiprocessing

                workers = multiprocessing.active_children()
                for worker in workers:  # they obey a SIGTERM from here
                    worker.terminate()
                for worker in workers:  # one blocked on a queue lock a terminated sibling held does not
                    worker.join(WORKER_STOP_TIMEOUT)
                    if worker.is_alive():
                        worker.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
        for task_dir in self._task_dirs:
            remove_temp_dir(task_dir)
