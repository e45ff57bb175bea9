"""Integrity check of a store: every object decodes to the content its name promises, every
ref points at an object, and the index agrees with the files. `repair` moves what is
damaged or foreign out of objects/ and refs/ into STORE/quarantine/ (nothing is
deleted) and rebuilds the index from the files.

Problem kinds (stable, for --json):
  bad_object    an object that does not decode, or whose content has another hash
  symlink       a symlink where a shard directory or an object file should be
  stray_file    something in objects/ that is not an object of the layout
  bad_ref       a ref file that does not hold a hash
  dangling_ref  a ref whose object is missing or damaged
  missing_row   an object file the index does not know
  stale_row     an index row for an object file that is not there
  wrong_size    an index row whose sizes disagree with the file
  name_mirror   the index's name mirror disagrees with refs/
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from blobctl import codec, keys
from blobctl.errors import BlobctlError, IntegrityError
from blobctl.fsutil import is_regular_file
from blobctl.gc import name_protections
from blobctl.index import IndexReadOnly

#: Kinds that `repair` fixes by rebuilding the index from the files.
METADATA_KINDS = frozenset({"missing_row", "stale_row", "wrong_size", "name_mirror"})


@dataclass(frozen=True)
class Problem:
    kind: str
    key: str  # an object's hash, a name, or a path relative to the store
    detail: str
    repaired: bool = False


@dataclass(frozen=True)
class FsckReport:
    objects: int  # object files checked, damaged ones included
    refs: int
    problems: tuple[Problem, ...]

    @property
    def remaining(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.repaired)


def _relative(store, path: Path) -> str:
    return str(path.relative_to(store.root))


def _verify(path: Path, digest: str) -> tuple[int, int]:
    """(content size, file size) of an object whose frame and hash check out."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
        size = codec.decode(handle, lambda chunk: None, digest, label=digest)
        return size, os.fstat(handle.fileno()).st_size


def check(store, *, repair: bool = False, progress=None) -> FsckReport:
    """Check the whole store; `progress` (render.progress's) is advanced per object."""
    problems: list[Problem] = []
    to_quarantine: list[tuple[int, Path]] = []  # (index in problems, path)
    to_refetch: list[tuple[int, str]] = []  # (index in problems, hash) a mount may still have

    def report(kind: str, key: str, detail: str, path: Path | None = None,
               refetch: str | None = None) -> None:
        if path is not None:
            to_quarantine.append((len(problems), path))
        if refetch is not None:
            to_refetch.append((len(problems), refetch))
        problems.append(Problem(kind, key, detail))

    # other commands may run meanwhile: disagreements between the index and the files
    # are reported only if they still hold under the write lock, at the end
    unconfirmed: list[Problem] = []

    def suspect(kind: str, key: str, detail: str) -> None:
        unconfirmed.append(Problem(kind, key, detail))

    damage = store.index.damage()
    if damage is not None:  # rows read from damaged pages are no guide: rebuild from the files
        store.rebuild_damaged_index(damage)
    entries = list(store.walk_objects())
    if progress is not None:
        progress.start("checking objects", len(entries))
    rows = {row.hash: row for row in store.index.by_access()}
    good: set[str] = set()
    for kind, path, digest in entries:
        if progress is not None:
            progress.advance()
        if kind == "symlink":
            report(kind, _relative(store, path), f"points at {os.readlink(path)}", path)
            continue
        if kind == "stray_file":
            report(kind, _relative(store, path), "not an object of the store layout", path)
            continue
        row = rows.pop(digest, None)
        try:
            size, stored = _verify(path, digest)
        except IntegrityError as exc:
            report("bad_object", digest, exc.message, path, refetch=digest)
            continue
        except FileNotFoundError:  # removed since the listing (gc, rm): nothing to check
            continue
        except OSError as exc:
            report("bad_object", digest, f"cannot read {path}: {exc.strerror or exc}")
            continue
        good.add(digest)
        if row is None:
            suspect("missing_row", digest, "object file not in the index")
        elif (row.size, row.stored) != (size, stored):
            report("wrong_size", digest, f"index says {row.size} bytes ({row.stored} stored), "
                                         f"file holds {size} ({stored} stored)")
    for digest in sorted(rows):
        suspect("stale_row", digest, "index row for an object file that is not there")

    refs: dict[str, str] = {}
    protection = name_protections(store)
    def bad_ref(name: str, exc: BlobctlError) -> None:
        """A ref holding no hash goes to quarantine; one holding a hash under a name that
        is no longer valid keeps its object (gc honours it) until its owner renames it,
        and one that cannot be read stays too."""
        report("bad_ref", name, exc.message, store.refs_dir / name if _holds_no_hash(store, name) else None)

    listed = {digest for kind, _, digest in entries if kind == "object"}
    for name, digest in store.iter_refs(on_damaged=bad_ref):
        refs[name] = digest
        if digest in good or (digest not in listed and _sound_now(store, digest)):
            continue
        if not store.has_object(digest) and protection(name, digest) is None:
            continue  # gc evicted the local copy of what a mount holds
        state = "is damaged" if store.has_object(digest) else "is not in the store"
        report("dangling_ref", name, f"its object {digest} {state}", refetch=digest)
    mirror = store.index.all_names()
    for name in sorted(refs.keys() | mirror.keys()):
        if refs.get(name) != mirror.get(name):
            suspect("name_mirror", name, f"refs/ says {refs.get(name) or 'nothing'}, "
                                         f"the index says {mirror.get(name) or 'nothing'}")
    problems += _confirmed(store, unconfirmed)

    if repair and problems:
        _repair(store, problems, to_quarantine, to_refetch)
    checked = sum(1 for kind, _, _ in entries if kind == "object")
    return FsckReport(checked, len(refs), tuple(problems))


def _repair(store, problems: list[Problem], to_quarantine: list[tuple[int, Path]],
            to_refetch: list[tuple[int, str]]) -> None:
    """Quarantine what is damaged or foreign, fetch good copies of damaged or missing
    objects from the mounts, then rebuild the index from the files; marks the problems
    this fixed."""
    quarantine = store.root / "quarantine"
    quarantine.mkdir(exist_ok=True)
    stamp = time.time_ns()
    for position, path in to_quarantine:
        if path.is_relative_to(store.objects_dir):  # an object keeps its hash as its name
            flat = str(path.relative_to(store.objects_dir)).replace(os.sep, "")
        else:  # '%' always encoded, so the name is the ref's; too long for a file name: hashed
            flat = "ref-" + quote(str(path.relative_to(store.refs_dir)), safe="=+@,")
            if len(flat.encode()) > 200:
                flat = "ref-" + hashlib.sha256(flat.encode()).hexdigest()
        try:
            with store.index.transaction():  # a concurrent put or bind sees the file or nothing
                if path.is_relative_to(store.refs_dir) and not _holds_no_hash(store, problems[position].key):
                    gone = not os.path.lexists(path)
                    problems[position] = replace(problems[position], repaired=gone, detail=(
                        f"{problems[position].detail}; {'removed' if gone else 'bound again'} since"))
                    continue
                os.replace(path, _free_name(quarantine / f"{flat}.{stamp}"))
                store.syncer.sync_dir_later(path.parent)  # the move is in both directories
        except OSError as exc:
            problems[position] = replace(problems[position],
                                         detail=f"{problems[position].detail}; not moved: {exc}")
            continue
        problems[position] = replace(problems[position], repaired=True)
    store.syncer.sync_dir_later(quarantine)
    _refetch(store, problems, to_refetch)
    store.rebuild_index()
    for position, problem in enumerate(problems):
        if problem.kind in METADATA_KINDS:
            problems[position] = replace(problem, repaired=True)


def _sound_now(store, digest: str) -> bool:
    """Whether an object stored since fsck listed the objects (a put naming it) checks out."""
    try:
        _verify(store.object_path(digest), digest)
    except (BlobctlError, OSError):
        return False
    return True


def _confirmed(store, suspects: list[Problem]) -> list[Problem]:
    """The index/file disagreements in `suspects` that still hold under the write lock,
    where puts, rms and gcs change both together: one seen while such a command ran
    (its file renamed in or deleted, its row not yet committed) is gone by then."""
    def still_hold() -> list[Problem]:
        mirror = store.index.all_names()

        def holds(problem: Problem) -> bool:
            if problem.kind == "name_mirror":
                return store.hash_in_ref_file(problem.key) != mirror.get(problem.key)
            has_row = store.index.row(problem.key) is not None
            return is_regular_file(store.object_path(problem.key)) != has_row

        return [problem for problem in suspects if holds(problem)]

    if not suspects:
        return []
    try:
        with store.index.transaction():
            return still_hold()
    except IndexReadOnly:  # nobody can be writing: nothing to wait for
        return still_hold()


def _holds_no_hash(store, name: str) -> bool:
    """Whether refs/`name` is a symlink (a damaged one: iter_refs reads the good ones) or
    a file that could be read and holds no hash: only then may fsck move it aside."""
    if (store.refs_dir / name).is_symlink():
        return True
    content = store.ref_file_content(name)
    if content is None:
        return False
    try:
        keys.parse_ref(content, name)
    except BlobctlError:
        return True
    return False


def _free_name(path: Path) -> Path:
    """`path`, or `path` with a number added if that is taken: quarantine deletes nothing."""
    candidate, number = path, 0
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _refetch(store, problems: list[Problem], to_refetch: list[tuple[int, str]]) -> None:
    """Replace damaged (already quarantined) or missing objects with verified copies from
    the mounts; an object still in place (its quarantine failed) is left alone."""
    if store.overlay is None:
        return
    fetched: set[str] = set()
    for position, digest in to_refetch:
        problem = problems[position]
        if digest not in fetched:
            if store.has_object(digest):
                continue
            try:
                if not store.overlay.fetch(digest):
                    continue
            except BlobctlError as exc:
                problems[position] = replace(problem, detail=f"{problem.detail}; refetch failed: {exc}")
                continue
            fetched.add(digest)
        problems[position] = replace(problem, repaired=True, detail=f"{problem.detail}; refetched from a mount")
