"""The one small interface every remote kind implements: bytes by key.

Keys are '/'-separated relative paths in the store layout ('objects/ab/cdef…',
'refs/datasets/x'). Backends know nothing of hashes, zstd or names: the store validates
keys before they get here and verifies every byte that comes back.

Errors: a missing key raises NotFoundError; a write to a read-only backend raises
ReadOnlyError (checked here, in one place); every other failure (unreachable, timeout after
retries, refused, bad credentials, missing bucket) raises RemoteError with one clear line.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from blobctl.config import DEFAULT_S3_REGION
from blobctl.errors import ReadOnlyError
from blobctl.keys import MAX_REF_BYTES


@dataclass(frozen=True)
class RemoteSettings:
    """Connection settings shared by all remote kinds (from config and AWS_* variables)."""

    timeout: float = 30.0  # seconds allowed per request
    retries: int = 3  # further attempts after a transient failure, with backoff
    s3_endpoint: str | None = None
    s3_region: str = DEFAULT_S3_REGION
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None

    def __repr__(self) -> str:  # never leak credentials through a repr in a traceback/log
        return f"RemoteSettings(timeout={self.timeout}, retries={self.retries}, s3_endpoint={self.s3_endpoint!r})"


class Backend(abc.ABC):
    """A remote store addressed by a URL; see the module docstring for the contract."""

    def __init__(self, url: str, *, read_only: bool = False):
        self.url = url
        self.read_only = read_only

    # -- reads --------------------------------------------------------------------------
    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable stream of the key's bytes (caller closes it). NotFoundError if absent."""

    def read_at_most(self, key: str, limit: int) -> bytes | None:
        """The whole value of a key, or None if it is larger than `limit` bytes (no more
        than limit + 1 of them are read)."""
        with self.open_read(key) as stream:
            data = stream.read(limit + 1)
        return data if len(data) <= limit else None

    def read_bytes(self, key: str, limit: int = MAX_REF_BYTES) -> bytes:
        """The whole value of a small key; RemoteError if it is larger than `limit`."""
        from blobctl.errors import RemoteError

        data = self.read_at_most(key, limit)
        if data is None:
            raise RemoteError(f"{self.url}: {key} is larger than {limit} bytes; refusing to read it")
        return data

    @abc.abstractmethod
    def size(self, key: str) -> int | None:
        """The key's size in bytes, or None if it is absent (a cheap HEAD/stat, not a
        download); -1 if the server does not say."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix`. UsageError if this kind cannot list (plain HTTP)."""

    #: Whether list_with_md5 gives MD5s (then a push keeps packed-refs for pulls to use).
    lists_md5 = False

    def list_with_md5(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        """As list, each key with the MD5 (hex) of its value where the listing carries it
        at no extra cost, else None."""
        return ((key, None) for key in self.list(prefix))

    # -- writes (read-only enforced here, once) -----------------------------------------
    def write(self, key: str, source: BinaryIO, size: int, *, if_absent: bool = False) -> bool:
        """Store `size` bytes read from `source` under `key`, atomically: readers see the
        old value or the whole new one, never a part. With `if_absent`, leave an existing
        key alone (conditional create where the server supports it) and return False."""
        self._check_writable(key)
        return self._write(key, source, size, if_absent=if_absent)

    def _check_writable(self, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"cannot write {key} to {self.url}: the remote is read-only",
                                "mount it without --read-only if the server accepts writes")

    @abc.abstractmethod
    def _write(self, key: str, source: BinaryIO, size: int, *, if_absent: bool) -> bool: ...

    def close(self) -> None:
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
