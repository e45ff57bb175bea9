"""The object format: one standard zstd frame per object (content checksum on, content
size in the header whenever it is known), named by the SHA-256 of the original bytes.

Encoding hashes and compresses in one read pass; decoding verifies the SHA-256 while it
streams. Both work in fixed-size chunks, so memory stays bounded whatever the size — and
whatever a damaged or hostile frame claims about itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from blobctl.errors import IntegrityError, UsageError

CHUNK_SIZE = 1 << 20
#: Inputs at least this large are compressed by zstd's worker threads.
MULTITHREAD_MIN_SIZE = 4 << 20
#: Largest zstd window a decoder accepts: bounds decode memory (our levels use ≤ 8 MiB).
MAX_WINDOW_SIZE = 1 << 25
MIN_LEVEL, MAX_LEVEL = 1, 19
FRAME_HEADER_MAX = 18  # ZSTD_FRAMEHEADERSIZE_MAX


@dataclass(frozen=True)
class Encoded:
    digest: str
    size: int  # original bytes
    stored: int  # compressed bytes written


def _compressor(level: int, size: int | None) -> zstandard.ZstdCompressor:
    threads = -1 if size is None or size >= MULTITHREAD_MIN_SIZE else 0
    return zstandard.ZstdCompressor(level=level, write_checksum=True,
                                    write_content_size=True, threads=threads)


def encode(source: BinaryIO, sink: BinaryIO, *, level: int = 3, size: int | None = None,
           label: str = "input") -> Encoded:
    """Hash and compress `source` into `sink` as one zstd frame.

    `size`, when known (a regular file), goes into the frame header; if the input turns
    out to have another length (it changed while being read) this raises UsageError.
    """
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    total = 0
    writer = _compressor(level, size).stream_writer(
        sink, size=-1 if size is None else size, closefd=False)
    try:
        while n := source.readinto(buffer):
            chunk = view[:n]
            digest.update(chunk)
            writer.write(chunk)
            total += n
        writer.flush(zstandard.FLUSH_FRAME)
    except zstandard.ZstdError as exc:
        if size is not None and total != size:
            raise UsageError(f"{label} changed while being read ({size} bytes expected, "
                             f"{total} read); nothing was stored") from exc
        raise
    return Encoded(digest.hexdigest(), total, sink.tell())


def decode(source: BinaryIO, emit: Callable[[memoryview], object], expected: str, *,
           label: str, start: int = 0, end: int | None = None) -> int:
    """Decompress one object frame, verifying its SHA-256 against `expected`.

    Every decompressed chunk whose bytes fall in [start, end) is passed to `emit`; the
    whole frame is still decoded and hashed, so a range read is verified too. Returns the
    original size. Raises IntegrityError naming `label` on any damage or mismatch — the
    caller decides what to do with what was already emitted.
    """
    digest = hashlib.sha256()
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    offset = 0
    try:
        head = source.read(FRAME_HEADER_MAX)
        zstandard.get_frame_parameters(head)  # a zero-length or non-zstd file fails here
        reader = dctx.stream_reader(_Prepended(head, source), read_size=CHUNK_SIZE,
                                    read_across_frames=False)
        while chunk := reader.read(CHUNK_SIZE):
            digest.update(chunk)
            lo, hi = max(start - offset, 0), len(chunk) if end is None else min(end - offset, len(chunk))
            if lo < hi:
                emit(memoryview(chunk)[lo:hi])
            offset += len(chunk)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"object {label} is damaged: {exc}",
                             "run 'blobctl fsck --repair' to quarantine it") from exc
    if digest.hexdigest() != expected:
        raise IntegrityError(f"object {label} is damaged: its content does not match its hash",
                             "run 'blobctl fsck --repair' to quarantine it")
    return offset


class _Prepended:
    """A reader that yields `head` and then the rest of `source` (header already peeked)."""

    def __init__(self, head: bytes, source: BinaryIO):
        self._head, self._source = head, source

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._source.read(size)
        head, self._head = self._head, b""
        return head + self._source.read(max(size - len(head), 0)) if size >= 0 else head + self._source.read()


def content_size(head: bytes) -> int | None:
    """The original size recorded in a frame header, or None if absent or unreadable."""
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return None if size < 0 else size
