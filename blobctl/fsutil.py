"""Atomic, durable file writes shared by the local store and the directory backend.

A file either exists complete under its final name or not at all: data goes to a temp
file on the same file system, is synced, then renamed into place. Directory syncs (which
make the renames durable) are batched per command by a Syncer.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from blobctl.errors import from_os_error

T = TypeVar("T")
TEMP_SUFFIX = ".partial"


class Syncer:
    """Durability policy for one command: sync file data before each rename, and the
    directories touched once at the end (flush). Disabled, it trusts the OS."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._dirs: set[str] = set()

    def sync_file(self, fd: int) -> None:
        if self.enabled:
            os.fsync(fd)

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
            except FileNotFoundError:
                continue  # removed since (e.g. an emptied shard): nothing to make durable
            except OSError as exc:
                raise from_os_error(exc, "sync directory", path) from exc
            try:
                os.fsync(fd)
            except OSError as exc:
                raise from_os_error(exc, "sync directory", path) from exc
            finally:
                os.close(fd)


def temp_path(tmp_dir: Path) -> Path:
    """A fresh, unguessable temp name that gc recognises by its suffix."""
    return tmp_dir / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"


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


def atomic_write(dest: Path, tmp_dir: Path, fill: Callable[[BinaryIO], T], syncer: Syncer) -> T:
    """Write `dest` atomically: `fill(file)` writes the content (and may raise to abandon
    it); the temp file is removed on any failure, including Ctrl-C. Returns fill's result."""
    tmp = temp_path(tmp_dir)
    try:
        with open(tmp, "xb") as handle:
            result = fill(handle)
            handle.flush()
            syncer.sync_file(handle.fileno())
        make_dirs(dest.parent, syncer)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    syncer.sync_dir_later(dest.parent)
    return result
