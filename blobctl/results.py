"""Immutable results that cross from the store to the CLI's renderers.

Records on the path of every command are NamedTuples rather than frozen dataclasses:
the same fields and immutability, but a NamedTuple class is built in ~0.1 ms where a
frozen dataclass takes ~1 ms, and each run pays that at start-up (a benchmark target).
"""

from __future__ import annotations

from typing import NamedTuple


class PutResult(NamedTuple):
    digest: str
    size: int  # original bytes
    stored: int  # bytes on disk (compressed)
    source: str  # the path given, or '-' for stdin
    created: bool  # False when the content was already stored
    name: str | None = None


class Resolved(NamedTuple):
    """What a user's KEY (hash, sha256:hash, prefix or name) resolved to."""

    digest: str
    name: str | None = None


class NameEntry(NamedTuple):
    name: str
    digest: str
    size: int | None  # None when the object is not in the local store
    stored: int | None


class KeyInfo(NamedTuple):
    key: str
    digest: str
    local: bool
    size: int | None
    stored: int | None
    accessed_ns: int | None
    names: tuple[str, ...] = ()
    pinned: bool = False
    pin_expires_ns: int | None = None  # None: pinned forever, or not pinned


class Removed(NamedTuple):
    key: str
    kind: str  # 'name' or 'object'
    digest: str


class StoreSummary(NamedTuple):
    path: str
    objects: int
    names: int
    size: int
    stored: int
    max_size: int | None
    counters: dict[str, int]
