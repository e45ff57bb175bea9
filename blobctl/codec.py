"""The object format: one standard zstd frame per object (content checksum on, content
size in the header whenever it is known), named by the SHA-256 of the original bytes.

Encoding hashes and compresses in one read pass; decoding verifies the SHA-256 while it
streams. Both work in fixed-size chunks, so memory stays bounded whatever the size — and
whatever a damaged or hostile frame claims about itself. zstd and SHA-256 release the GIL,
so large objects keep more than one core busy: zstd's own workers compress while the
caller's threads read and hash, and decoding hands its output to a writer thread while it
decompresses and hashes the next chunk.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

import zstandard

from blobctl.errors import IntegrityError, UsageError

CHUNK_SIZE = 1 << 20
MIN_BUFFER_SIZE = 64 << 10
#: Inputs at least this large are compressed by zstd's worker threads, and decoded objects
#: this large are written out by a second thread.
MULTITHREAD_MIN_SIZE = 4 << 20
#: Input per zstd worker job: bounds the workers' buffers (zstd's default for level 3 is
#: 8 MiB, which costs ~50 MB more peak memory) at no measurable cost in ratio or speed.
JOB_SIZE = 4 << 20
#: Decoded chunks in flight between the decompressing thread and the writing one.
PIPELINE_DEPTH = 4
#: Largest zstd window a decoder accepts: bounds decode memory (our levels use ≤ 8 MiB).
MAX_WINDOW_SIZE = 1 << 25
FRAME_HEADER_MAX = 18  # ZSTD_FRAMEHEADERSIZE_MAX


class Encoded(NamedTuple):
    digest: str
    size: int  # original bytes
    stored: int  # compressed bytes written


_single_threaded = threading.local()


def _small_compressor(level: int) -> zstandard.ZstdCompressor:
    """A compressor for this thread, reused across objects: creating one allocates and
    clears zstd's tables, which costs more than compressing a few KiB."""
    cached = getattr(_single_threaded, "by_level", None)
    if cached is None:
        cached = _single_threaded.by_level = {}
    if level not in cached:
        cached[level] = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                 write_content_size=True)
    return cached[level]


def _streaming_compressor(level: int, size: int | None) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=size or 0, threads=-1, job_size=JOB_SIZE,
        write_checksum=True, write_content_size=True)
    return zstandard.ZstdCompressor(compression_params=params)


def encode(source: BinaryIO, sink: BinaryIO, *, level: int = 3, size: int | None = None,
           label: str = "input", on_read: Callable[[int], object] | None = None) -> Encoded:
    """Hash and compress `source` into `sink` as one zstd frame.

    `size`, when known (a regular file), goes into the frame header; if the input turns
    out to have another length (it changed while being read) this raises UsageError.
    `on_read(n)` is told of each chunk read from a large input (for a progress bar).
    """
    if size is not None and size < MULTITHREAD_MIN_SIZE:
        return _encode_small(source, sink, level, size, label)
    digest = hashlib.sha256()
    total = 0
    writer = _streaming_compressor(level, size).stream_writer(
        sink, size=-1 if size is None else size, closefd=False)
    # Reading (here), hashing and feeding zstd's workers run in three threads, so the
    # hash of one chunk overlaps the hand-off of the previous one: run in one thread,
    # the hash waits whenever zstd's job queue is full and a core sits idle.
    stages = [lambda chunk, part: digest.update(chunk), lambda chunk, part: writer.write(chunk)]
    try:
        with _Pipeline(stages, threaded=True) as pipeline:
            while n := source.readinto(buffer := pipeline.free_buffer()):
                chunk = memoryview(buffer)[:n]
                pipeline.submit(chunk, chunk)
                total += n
                if on_read is not None:
                    on_read(n)
        writer.flush(zstandard.FLUSH_FRAME)
    except zstandard.ZstdError as exc:
        if size is not None and total != size:
            raise _changed_while_read(label, size, total) from exc
        raise
    return Encoded(digest.hexdigest(), total, sink.tell())


def _encode_small(source: BinaryIO, sink: BinaryIO, level: int, size: int, label: str) -> Encoded:
    """One read, one compress call, one write: the per-object overhead is what counts here."""
    data = source.read(size + 1)
    if len(data) != size:
        raise _changed_while_read(label, size, len(data))
    frame = _small_compressor(level).compress(data)
    sink.write(frame)
    return Encoded(hashlib.sha256(data).hexdigest(), size, len(frame))


def _changed_while_read(label: str, expected: int, got: int) -> UsageError:
    return UsageError(f"{label} changed while being read ({expected} bytes expected, "
                      f"{got}{'+' if got > expected else ''} read); nothing was stored")


def decode(source: BinaryIO, emit: Callable[[memoryview], object], expected: str, *,
           label: str, start: int = 0, end: int | None = None) -> int:
    """Decompress one object frame, verifying its SHA-256 against `expected`.

    Every decompressed chunk whose bytes fall in [start, end) is passed to `emit`, in
    order, from one thread (a helper thread for large objects, so that writing overlaps
    decompressing); chunk buffers are reused, so emit must copy what it keeps. The whole
    frame is still decoded and hashed, so a range read is verified too. Returns the
    original size. Raises IntegrityError naming `label` on any damage or mismatch — the
    caller decides what to do with what was already emitted.
    """
    digest = hashlib.sha256()
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    offset = 0

    def emit_part(chunk: memoryview, part: memoryview) -> None:
        if part:
            emit(part)

    try:
        head = source.read(FRAME_HEADER_MAX)
        declared = zstandard.get_frame_parameters(head).content_size  # a non-zstd file fails here
        reader = dctx.stream_reader(_Prepended(head, source), read_size=CHUNK_SIZE,
                                    read_across_frames=False)
        stages = [lambda chunk, part: digest.update(chunk), emit_part]
        # A small object needs no 1 MiB buffer; the floor keeps a header that understates
        # the size (a bomb claiming 0 bytes) from turning into millions of tiny reads.
        buffer_size = min(CHUNK_SIZE, max(declared, MIN_BUFFER_SIZE))
        with _Pipeline(stages, threaded=declared >= MULTITHREAD_MIN_SIZE,
                       buffer_size=buffer_size) as pipeline:
            while n := reader.readinto(buffer := pipeline.free_buffer()):
                chunk = memoryview(buffer)[:n]
                lo, hi = max(start - offset, 0), n if end is None else min(end - offset, n)
                pipeline.submit(chunk, chunk[lo:max(lo, hi)])
                offset += n
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"object {label} is damaged: {exc}",
                             "run 'blobctl fsck --repair' to quarantine it") from exc
    if digest.hexdigest() != expected:
        raise IntegrityError(f"object {label} is damaged: its content does not match its hash",
                             "run 'blobctl fsck --repair' to quarantine it")
    return offset


class _Pipeline:
    """Passes each submitted chunk through `stages` in order.

    Threaded, every stage runs in its own thread, linked by queues: decompressing (the
    caller), hashing and writing all release the GIL, so they overlap on several cores.
    PIPELINE_DEPTH buffers cycle from the last stage back to free_buffer(). The first
    error a stage raises skips the remaining work and surfaces in the caller at its next
    free_buffer() or at exit. Inline (small objects), stages run in the caller on one
    buffer.
    """

    def __init__(self, stages: list[Callable[[memoryview, memoryview], object]], threaded: bool,
                 buffer_size: int = CHUNK_SIZE):
        self._stages = stages
        self._threaded = threaded
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(PIPELINE_DEPTH if threaded else 1):
            self._free.put(bytearray(buffer_size))
        self._queues = [queue.Queue() for _ in stages] if threaded else []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"blobctl-decode-{i}")
                         for i in range(len(stages))] if threaded else []
        self._error: BaseException | None = None

    def __enter__(self) -> _Pipeline:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if self._threaded:
            self._queues[0].put(None)
            for thread in self._threads:
                thread.join()
        if self._error is not None and exc_type is None:
            raise self._error

    def free_buffer(self) -> bytearray:
        buffer = self._free.get() if self._threaded else self._free.queue[0]
        if self._error is not None:
            raise self._error
        return buffer

    def submit(self, chunk: memoryview, part: memoryview) -> None:
        """Queue `chunk` (a view of the last free_buffer()) and `part`, a slice of it."""
        if self._threaded:
            self._queues[0].put((chunk, part))
            return
        for stage in self._stages:
            stage(chunk, part)

    def _run(self, index: int) -> None:
        stage, inbox = self._stages[index], self._queues[index]
        last = index == len(self._stages) - 1
        while (item := inbox.get()) is not None:
            if self._error is None:
                try:
                    stage(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    self._error = exc
            if last:
                self._free.put(item[0].obj)
            else:
                self._queues[index + 1].put(item)
        if not last:
            self._queues[index + 1].put(None)


class _Prepended:
    """A reader that yields `head` and then the rest of `source` (header already peeked)."""

    def __init__(self, head: bytes, source: BinaryIO):
        self._head, self._source = head, source

    def read(self, size: int = -1) -> bytes:
        """The head alone first: a short read is fine for zstd's reader, and joining the
        head to the next read would copy up to a chunk (holding the GIL) for 18 bytes."""
        if not self._head:
            return self._source.read(size)
        cut = len(self._head) if size < 0 else size
        head, self._head = self._head[:cut], self._head[cut:]
        return head


def content_size(head: bytes) -> int | None:
    """The original size recorded in a frame header, or None if absent or unreadable."""
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return None if size < 0 else size
