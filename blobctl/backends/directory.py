"""A remote that is a plain directory (a path or file:// URL): a USB disk, an NFS mount.

Writes are atomic and durable through fsutil (temp file in `<root>/tmp/`, fsync, rename,
directory sync). Every key is resolved and must stay inside the root, so a symlink planted
in the remote cannot make us read or write elsewhere. (This guards against bad content,
not against someone swapping symlinks while we run.)
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from blobctl.backends.base import Backend, RemoteSettings
from blobctl.backends.common import iter_exact
from blobctl.errors import BlobctlError, NotFoundError, RemoteError, UsageError, from_os_error
from blobctl.fsutil import Syncer, atomic_write, discard_file, make_dirs, temp_path

TMP_DIR = "tmp"
#: Where os.link is missing (FAT/exFAT, some network file systems) if_absent falls back
#: to check-then-rename.
NO_HARDLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def path_from_url(url: str) -> Path:
    """'/x', 'x' or 'file:///x' -> Path; UsageError for file://otherhost/…"""
    if not url.lower().startswith("file://"):
        return Path(url).expanduser()
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"cannot use {url}: file:// URLs must name a local path",
                         "mount the share and use its local path")
    return Path(urllib.parse.unquote(parts.path))


def _failure(exc: OSError, action: str, what: str) -> BlobctlError:
    """A missing file is a missing key; any other failure is the remote's (RemoteError),
    so that a lookup falls through to the next mount, as for the other remote kinds."""
    error = from_os_error(exc, action, what)
    return error if isinstance(error, NotFoundError) else RemoteError(error.message)


class DirectoryBackend(Backend):
    """Keys are files under the root; see the module docstring."""

    def __init__(self, url: str, *, settings: RemoteSettings | None = None, read_only: bool = False):
        super().__init__(url, read_only=read_only)
        self.root = path_from_url(url).resolve()

    def _checked_root(self) -> Path:
        """The root, which must exist: writing into a missing (unmounted?) one would hide data."""
        if not self.root.is_dir():
            raise RemoteError(f"remote directory {self.root} does not exist or is not a directory",
                              "create it, or check that the disk or share is mounted")
        return self.root

    def _path(self, key: str) -> Path:
        """The key's file, resolved; RemoteError if that lands outside the root."""
        path = (self._checked_root() / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise RemoteError(f"refusing {key} in {self.url}: it resolves to {path}, outside the remote",
                             "remove the symlink that points out of the remote directory")
        return path

    # -- reads --------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except IsADirectoryError:
            raise NotFoundError(f"{key} not found in {self.url}: it is a directory") from None
        except OSError as exc:
            raise _failure(exc, "read", f"{key} in {self.url}") from None

    def size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _failure(exc, "check", f"{key} in {self.url}") from None
        return info.st_size if stat_module.S_ISREG(info.st_mode) else None

    def list(self, prefix: str) -> Iterator[str]:
        """Walk only the deepest directory the prefix names; sorted, symlinks not followed."""
        directory = prefix.rpartition("/")[0]
        start = self._path(directory) if directory else self._checked_root()
        for dirpath, dirnames, filenames in os.walk(start, onerror=self._raise_unless_missing):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]  # our temp files, not keys
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key

    def _raise_unless_missing(self, exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):  # a prefix with no keys is just empty
            raise _failure(exc, "list", f"{exc.filename} in {self.url}")

    # -- writes -------------------------------------------------------------------------
    def _write(self, key: str, source: BinaryIO, size: int, *, if_absent: bool) -> bool:
        dest = self._path(key)
        if if_absent and dest.exists():
            return False
        tmp_dir = self._path(TMP_DIR)
        syncer = Syncer(enabled=True)  # one per call keeps the backend safe to share across threads
        try:
            make_dirs(tmp_dir, syncer)
            if if_absent:
                return self._create(dest, tmp_dir, source, size, syncer)
            atomic_write(dest, tmp_dir, lambda handle: self._fill(handle, source, size), syncer)
            return True
        except OSError as exc:
            raise _failure(exc, "write", f"{key} in {self.url}") from None
        finally:
            syncer.flush()

    def _create(self, dest: Path, tmp_dir: Path, source: BinaryIO, size: int, syncer: Syncer) -> bool:
        """Stage the content durably, then hard-link it into place: link fails if the key
        appeared meanwhile, so of two concurrent creators exactly one wins."""
        staged = Path(temp_path(tmp_dir))
        atomic_write(staged, tmp_dir, lambda handle: self._fill(handle, source, size), syncer)
        try:
            make_dirs(dest.parent, syncer)
            try:
                os.link(staged, dest)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in NO_HARDLINKS:
                    raise
                if dest.exists():  # no hard links here: check-then-rename, racy but best we can do
                    return False
                os.replace(staged, dest)
            syncer.sync_dir_later(dest.parent)
            return True
        finally:
            discard_file(staged)

    @staticmethod
    def _fill(handle: BinaryIO, source: BinaryIO, size: int) -> None:
        for chunk in iter_exact(source, size):
            handle.write(chunk)
