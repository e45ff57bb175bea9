"""Frozen results that cross from the store to the CLI's renderers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PutResult:
    digest: str
    size: int  # original bytes
    stored: int  # bytes on disk (compressed)
    source: str  # the path given, or '-' for stdin
    created: bool  # False when the content was already stored
    name: str | None = None


@dataclass(frozen=True)
class Resolved:
    """What a user's KEY (hash, sha256:hash, prefix or name) resolved to."""

    digest: str
    name: str | None = None


@dataclass(frozen=True)
class NameEntry:
    name: str
    digest: str
    size: int | None  # None when the object is not in the local store
    stored: int | None


@dataclass(frozen=True)
class KeyInfo:
    key: str
    digest: str
    local: bool
    size: int | None
    stored: int | None
    accessed_ns: int | None
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Removed:
    key: str
    kind: str  # 'name' or 'object'
    digest: str


@dataclass(frozen=True)
class StoreSummary:
    path: str
    objects: int
    names: int
    size: int
    stored: int
    max_size: int | None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.size / self.stored if self.stored else None
