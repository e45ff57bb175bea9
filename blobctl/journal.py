"""Journals of file changes the index mirrors, for commands that die half-way.

A put renames object files in, and gc or rm deletes them, inside an index transaction
that records the change. If the command dies before COMMIT (kill -9, a second SIGTERM,
an index write error), SQLite rolls the rows back but the renames and deletions stay,
and the index no longer describes the files: gc cannot see those objects, stat counts
what is not there. So before changing files, a transaction writes a journal naming the
objects and names it may change, and removes it once committed. A journal found later,
under the write lock, is one whose transaction never committed: Store reconciles the
index rows of what it names with the files and removes it.

Journals are tmp/journal/<random>.journal (made on first use: every command looks there,
and tmp/ itself may hold thousands of temp files), not synced: they guard against a
dead process, not a power loss.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from blobctl import keys
from blobctl.errors import UsageError, from_os_error
from blobctl.fsutil import discard_file, temp_path, write_new_file

DIRECTORY = "journal"
SUFFIX = ".journal"


def write(tmp_dir: Path, digests: list[str], names: list[str]) -> str:
    """A journal naming `digests` and `names` (names never hold a newline or a space)."""
    directory = tmp_dir / DIRECTORY
    path = temp_path(directory, suffix=SUFFIX)
    content = "".join([f"o {digest}\n" for digest in digests] + [f"n {name}\n" for name in names]).encode()
    try:
        try:
            in_place = stat.S_ISDIR(os.lstat(directory).st_mode)
        except FileNotFoundError:  # the first journal of this store
            in_place = None
        if in_place is False:  # a file or a symlink: tmp/ is blobctl's own, and journals never leave the store
            directory.unlink()
        if not in_place:
            directory.mkdir()
        write_new_file(path, content)
    except OSError as exc:  # a full disk, say: the transaction rolls back, and nothing is left
        discard_file(path)
        raise from_os_error(exc, "write journal", path) from exc
    return path


def pending(tmp_dir: Path) -> list[str]:
    """Paths of the journals left (by transactions that did not commit, or did a moment
    ago and are about to remove theirs); anything else there is ignored."""
    directory = tmp_dir / DIRECTORY
    if directory.is_symlink():  # what it leads to is not the store's (write replaces it)
        return []
    try:
        return sorted(entry.path for entry in os.scandir(directory)
                      if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read(path: str) -> tuple[list[str], list[str]]:
    """(hashes, names) a journal lists; a journal cut short lists what it holds, and
    anything that is not a hash or a valid name is ignored."""
    digests, names = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            kind, _, value = line.rstrip("\n").partition(" ")
            if kind == "o" and keys.is_full_hash(value):
                digests.append(value)
            elif kind == "n" and _is_name(value):
                names.append(value)
    return digests, names


def _is_name(text: str) -> bool:
    try:
        keys.validate_name(text)
    except UsageError:
        return False
    return True
