"""Helpers the remote kinds share: exact-size chunked reads, a stream over chunks, one
retry loop with exponential backoff, and credential masking for messages."""

from __future__ import annotations

import io
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from blobctl.errors import BlobctlError, RemoteError

T = TypeVar("T")
CHUNK_SIZE = 1024 * 1024
#: First pause between attempts; it doubles each time up to MAX_BACKOFF (plus jitter).
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0


def iter_exact(source: BinaryIO, size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Exactly `size` bytes of `source` in chunks; an error if it ends early, so a short
    source can never be stored as if it were complete."""
    remaining = size
    while remaining:
        chunk = source.read(min(chunk_size, remaining))
        if not chunk:
            raise BlobctlError(f"source ended after {size - remaining} of {size} bytes; nothing was stored")
        remaining -= len(chunk)
        yield chunk


class ChunkStream(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks (a response body), so
    callers stream large values instead of holding them in memory."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] = lambda: None):
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            self._on_close()
        super().close()


class HeldBody(io.RawIOBase):
    """A value already whole in memory (an S3 body read in one call) as a stream, without
    copying it first: read() copies only what it returns, and view() gives all of it
    with no copy. A pull verifies and writes a download from there (1,000 names from
    SeaweedFS: 2.06 -> 1.89 s)."""

    def __init__(self, body):
        super().__init__()
        self._view = memoryview(body)
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), len(self._view) - self._position)
        buffer[:count] = self._view[self._position:self._position + count]
        self._position += count
        return count

    def view(self) -> memoryview:
        """The whole value, read-only; it stays valid after the stream is closed."""
        return self._view


def buffered(chunks: Iterator[bytes], on_close: Callable[[], None] = lambda: None) -> BinaryIO:
    """ChunkStream with a buffer: read(n) then returns n bytes unless at the end."""
    return io.BufferedReader(ChunkStream(chunks, on_close), buffer_size=CHUNK_SIZE)


class TransientError(Exception):
    """Raised by an attempt to say "worth retrying" (connection error, timeout, 5xx)."""


def with_retries(attempt: Callable[[], T], *, retries: int, what: str) -> T:
    """Run `attempt`, retrying up to `retries` more times while it raises TransientError,
    with exponential backoff and jitter; then a RemoteError naming `what` and the last cause."""
    for number in range(retries + 1):
        try:
            return attempt()
        except TransientError as exc:
            last = exc
            if number < retries:
                pause = min(FIRST_BACKOFF * 2**number, MAX_BACKOFF)
                time.sleep(pause * random.uniform(0.5, 1.0))
    tries = f" after {retries + 1} attempts" if retries else ""
    raise RemoteError(f"{what} failed{tries}: {last}", "check that the server is up and reachable")


#: A user:password@ part after a scheme, however malformed the rest of the URL is.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)[^/?#]*@")


def mask_url(url: str) -> str:
    """The URL without any user:password@ part, fit for messages and logs; also for a URL
    too malformed to parse (a bad port, an unclosed '[', a missing '/'), which is just
    what an error message shows."""
    try:
        if any(ord(c) < 32 for c in url):  # urlsplit drops tabs and newlines: show them
            raise ValueError(url)
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return _USERINFO.sub(r"\1", url) if "://" not in url else url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret replaced: a last guard before a message leaves us."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
