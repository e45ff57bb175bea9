"""Atomic, durable file writes shared by the local store and the directory backend.

A file either exists complete under its final name or not at all: data goes to a temp
file on the same file system, is synced, then renamed into place. Directory syncs (which
make the renames durable) are batched per command by a Syncer, and so are the data syncs
of many temp files published together (one syncfs instead of an fsync each: ~50 µs per
small file instead of ~1 ms).
"""

from __future__ import annotations

import errno
import functools
import os
import stat as stat_module
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

from blobctl.errors import from_os_error

T = TypeVar("T")
TEMP_SUFFIX = ".partial"
#: From this many files on, one syncfs(2) of the file system beats an fsync per file.
SYNCFS_MIN_FILES = 8
#: While a large temp file is written, its data is handed to the kernel's writeback every
#: this many bytes, so the sync before its rename finds only the tail left to write.
WRITEBACK_STEP = 16 << 20
#: The most file data handed to one write(2). Larger writes get larger page-cache folios
#: (ext4 on Linux 6.18 here), and on this VM writing 1 GiB in 1 MiB writes took 0.22 to
#: 2.3 s of system time from one run to the next, against a steady 0.25-0.29 s in writes
#: of 128 KiB (zstd's own tool writes 32 KiB at a time, which measured no faster; bench/NOTES.md).
WRITE_SLICE = 128 << 10


class Syncer:
    """Durability policy for one command: sync file data before each rename, and the
    directories touched once at the end (flush). Disabled, it trusts the OS."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._dirs: set[str] = set()

    def sync_file(self, fd: int) -> None:
        if self.enabled:
            os.fsync(fd)

    def writing(self, file: BinaryIO) -> SlicedWriter:
        """`file` (a temp file about to be filled), wrapped to write in slices and, when
        durability is on, to start its data going to disk while it is still being written
        (Linux)."""
        return SlicedWriter(file, writeback=self.enabled and sys.platform.startswith("linux"))

    def sync_files(self, paths: list[str | os.PathLike]) -> None:
        """Make the data of closed files durable, with one syncfs for many (Linux)."""
        if not self.enabled or not paths:
            return
        if len(paths) >= SYNCFS_MIN_FILES and sys.platform.startswith("linux"):
            _sync_file_system(paths[0])
            return
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def sync_dir_later(self, path: str | os.PathLike) -> None:
        if self.enabled:
            self._dirs.add(os.fspath(path))

    def flush(self) -> None:
        """Sync every directory whose entries changed, so the renames survive power loss.
        A failure is a BlobctlError: the command must not report success."""
        dirs, self._dirs = sorted(self._dirs), set()
        for path in dirs:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                # Removed since (an emptied shard), or replaced by a file (names 'a/b' then
                # 'a'): nothing left to make durable; its parent, synced too, has the change.
                continue
            except OSError as exc:
                raise from_os_error(exc, "sync directory", path) from exc
            try:
                os.fsync(fd)
            except OSError as exc:
                raise from_os_error(exc, "sync directory", path) from exc
            finally:
                os.close(fd)


class SlicedWriter:
    """Writes to `file` at most WRITE_SLICE bytes at a time. With `writeback`, the data
    written is also handed to writeback (sync_file_range(2), which does not wait) every
    WRITEBACK_STEP bytes: disk writes then overlap the work producing the data instead of
    all happening in the final fsync, as they would with a 1 GiB object."""

    def __init__(self, file: BinaryIO, *, writeback: bool = False):
        self._file = file
        self._writeback = writeback
        self._written = 0
        self._handed = 0  # bytes already handed to writeback

    def write(self, data) -> int:
        view = memoryview(data)
        for offset in range(0, len(view), WRITE_SLICE):
            self._file.write(view[offset:offset + WRITE_SLICE])
        self._written += len(view)
        if self._writeback and self._written - self._handed >= WRITEBACK_STEP:
            self._file.flush()
            _start_writeback(self._file.fileno(), self._handed, self._written - self._handed)
            self._handed = self._written
        return len(view)

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """sync_file_range(SYNC_FILE_RANGE_WRITE): start writing the range out, don't wait.
    Only a hint: the later fsync/syncfs is what guarantees durability, so errors are
    left for it to report."""
    _libc().sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


SYNC_FILE_RANGE_WRITE = 2  # from <fcntl.h>


@functools.cache
def _libc():
    """The C library, for the Linux calls os lacks (loaded, and ctypes imported, on first use)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return libc


def _sync_file_system(path: str | os.PathLike) -> None:
    """syncfs(2): write out and wait for all dirty data of the file system holding `path`."""
    import ctypes

    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc().syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fspath(path))
    finally:
        os.close(fd)


def is_regular_file(path: str | Path) -> bool:
    """Whether `path` itself (not a symlink's target) is a regular file."""
    return regular_file_size(path) is not None


def regular_file_size(path: str | Path) -> int | None:
    """The size of `path` if it is itself (not a symlink's target) a regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_size if stat_module.S_ISREG(info.st_mode) else None


def temp_path(tmp_dir: str | Path, prefix: str = "", suffix: str = TEMP_SUFFIX) -> str:
    """A fresh, unguessable temp name that gc recognises by its suffix (another suffix:
    not gc's to remove); `prefix` lets whoever chose it find the temp files of one task.
    A plain string: a put of many small files makes one per file."""
    return f"{tmp_dir}/{prefix}{os.urandom(8).hex()}{suffix}"  # what secrets.token_hex does, without its 2 ms import


def remove_temp_dir(path: str | Path) -> None:
    """Remove a directory of temp files (see locked_temp_dir) with whatever it holds, its
    own directories too; what cannot be removed (gone already, or another process adding
    to it) is left, for gc."""
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_temp_dir(entry.path)
        else:
            discard_file(entry.path)
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise


@contextmanager
def locked_temp_dir(tmp_dir: str | Path) -> Iterator[str]:
    """A fresh directory for one command's temp files, tmp/<random>.partial/, flock(2)ed
    while the command runs so that gc never takes it for the leftover of a killed command
    however long a file in it waits (the lock goes with the process); removed with its
    contents at the end, before the lock is let go."""
    import fcntl

    path = temp_path(tmp_dir)
    os.mkdir(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        os.rmdir(path)
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody else holds it
        yield path
    finally:
        try:
            remove_temp_dir(path)
        finally:
            os.close(fd)


def in_use(directory: str | Path) -> bool:
    """Whether a command holds `directory` (see locked_temp_dir)."""
    import fcntl

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def discard_file(path: str | Path) -> None:
    """Remove a file that may already be gone, or never came to be: on a read-only file
    system unlink fails with EROFS even for a missing file, and that must not hide the
    error that kept the file from being written."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if os.path.lexists(path):
            raise


def write_new_file(path: str, content: bytes) -> None:
    """Create `path`, which must not exist, holding `content`. Plain system calls: a put
    of many small files writes one per file, and a file object costs ~5 of the ~25 us."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view[:WRITE_SLICE]):]
    finally:
        os.close(fd)


def descriptor_named(path: str | os.PathLike) -> int | None:
    """The file descriptor of this process that `path` names (/dev/stdout, /dev/fd/3,
    /proc/self/fd/1), or None. Such a path must be written through the descriptor: the
    link behind it leads to a pipe (no file to open by name) or to a file the shell
    opened, which must be appended to at its offset, not replaced. Follows symlinks
    one at a time and stops at the /proc/PID/fd directory, whose entries are not real
    symlinks."""
    path, own = os.fspath(path), (f"/proc/{os.getpid()}/fd", "/proc/self/fd")
    for _ in range(40):  # the kernel's limit on symlinks in one lookup
        if os.path.realpath(os.path.dirname(path) or ".") in own:
            name = os.path.basename(path)
            return int(name) if name.isdigit() else None
        if not os.path.islink(path):
            return None
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return None


def make_dirs(path: Path, syncer: Syncer) -> None:
    """mkdir -p that records each created directory's parent for the end-of-command sync."""
    if path.is_dir():
        return
    make_dirs(path.parent, syncer)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    syncer.sync_dir_later(path.parent)


def atomic_write(dest: Path, tmp_dir: Path, fill: Callable[[BinaryIO], T], syncer: Syncer,
                 mode: int | None = None) -> T:
    """Write `dest` atomically: `fill(file)` writes the content (and may raise to abandon
    it); the temp file is removed on any failure, including Ctrl-C. With `mode`, the file
    has those permissions before any byte is written. Returns fill's result."""
    tmp = temp_path(tmp_dir)
    try:
        with open(tmp, "xb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            result = fill(syncer.writing(handle))
            handle.flush()
            syncer.sync_file(handle.fileno())
        make_dirs(dest.parent, syncer)
        os.replace(tmp, dest)
    except BaseException:
        discard_file(tmp)
        raise
    syncer.sync_dir_later(dest.parent)
    return result


def free_bytes(path: Path) -> int:
    """Space this user may still use on the file system holding `path`."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """Up to `limit` bytes of a small regular file, opened without blocking: a FIFO or
    device left where such a file goes must not hang a command. IsADirectoryError for
    a directory, ValueError for any other kind of file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat_module.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat_module.S_ISREG(mode):
            raise ValueError(f"{os.fspath(path)} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)
