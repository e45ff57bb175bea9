"""The object format: zstd frames (RFC 8878) named by the SHA-256 of the original bytes.

An object under MULTITHREAD_MIN_SIZE is one standard frame, content size in its header.
A larger one (or a stream of unknown size that turns out large) is a run of frames, one
per segment, behind a 56-byte skippable frame recording its original size, its own length
and its SHA-256; `zstd -d` reads both kinds. Segments are compressed in parallel by worker
threads, and a 1 MiB chunk that a quick sample shows to be incompressible is written at
zstd's fastest level (raw blocks for such data), costing a copy instead of zstd's search
for matches (~0.26 CPU-s per GiB of random data at level 3, measured here: most of the
speed comes from the threads, not from this). Every frame carries zstd's content checksum.

Encoding hashes and compresses in one read pass. Decoding checks every frame's checksum
(zstd does, at no measurable cost), and the SHA-256 while it streams unless the caller
lets a segmented object's header vouch for it: that hash costs as much CPU as
decompressing (see decode). Both work in fixed-size chunks, so memory stays bounded
whatever the size — and whatever a damaged or hostile object claims about itself. zstd
and SHA-256 release the GIL, so large objects keep more than one core busy: reading,
hashing and compressing run in separate threads, and decoding runs decompressing,
hashing and writing each in a thread of its own (_Pipeline), chunk after chunk.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

import zstandard

from blobctl.errors import IntegrityError, UsageError

CHUNK_SIZE = 1 << 20
MIN_BUFFER_SIZE = 64 << 10
#: Inputs at least this large are segmented and compressed by worker threads, and decoded
#: objects this large are hashed and written out by threads of their own (_Pipeline).
MULTITHREAD_MIN_SIZE = 4 << 20
#: Input per compressed frame: large enough that the ratio matches one long frame (zstd's
#: own worker jobs restart their history as often), small enough to bound memory.
SEGMENT_SIZE = 4 << 20
#: At most this many threads compress one object's segments, each with its own zstd
#: context; the input held by frames in flight is bounded at (threads + 2) segments, so
#: memory stays bounded on many-core machines.
MAX_COMPRESS_THREADS = 8
#: Decoded chunks in flight between the decompressing thread and the writing one.
PIPELINE_DEPTH = 4
#: Largest zstd window a decoder accepts: bounds decode memory (our levels use ≤ 8 MiB).
MAX_WINDOW_SIZE = 1 << 25
#: A chunk whose sample compresses to more than this fraction of itself is incompressible.
INCOMPRESSIBLE_RATIO = 0.95
#: The sample: this many slices of SAMPLE_SLICE bytes spread over the chunk.
SAMPLE_SLICES, SAMPLE_SLICE = 4, 4 << 10
#: The level for such chunks: zstd gives up on them at once and stores raw blocks, with
#: the content checksum a hand-built raw frame would lack (6 GiB/s on one core here).
INCOMPRESSIBLE_LEVEL = -50

#: The skippable frame (magic 0x184D2A5B) that starts a segmented object. Its payload is
#: the original size and the object's length in bytes (both little-endian), then the
#: SHA-256 of the original bytes. Objects written before the hash was added have the
#: 16-byte payload of _LEGACY_HEADER; they are read as before.
_HEADER = struct.Struct("<IIQQ32s")
_LEGACY_HEADER = struct.Struct("<IIQQ")
_HEADER_MAGIC = 0x184D2A5B
#: Bytes of an object's start that tell its original size (see content_size).
HEAD_SIZE = _HEADER.size


class Encoded(NamedTuple):
    digest: str
    size: int  # original bytes
    stored: int  # compressed bytes written


_per_thread = threading.local()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """A compressor for this thread, reused across objects: creating one allocates and
    clears zstd's tables, which costs more than compressing a few KiB."""
    cached = getattr(_per_thread, "by_level", None)
    if cached is None:
        cached = _per_thread.by_level = {}
    if level not in cached:
        cached[level] = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                 write_content_size=True)
    return cached[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    """A decompressor for this thread, reused across objects like _compressor's."""
    cached = getattr(_per_thread, "decompressor", None)
    if cached is None:
        cached = _per_thread.decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    return cached


def encode(source: BinaryIO, sink: BinaryIO, *, level: int = 3, size: int | None = None,
           label: str = "input", on_read: Callable[[int], object] | None = None) -> Encoded:
    """Hash and compress `source` into `sink` (a seekable file, positioned at 0).

    `size`, when known (a regular file), picks the encoding up front; if the input turns
    out to have another length (it changed while being read) this raises UsageError.
    Without it, the first MULTITHREAD_MIN_SIZE bytes are read to decide. `on_read(n)` is
    told of each chunk read from a large input (for a progress bar).
    """
    if size is None:
        head = source.read(MULTITHREAD_MIN_SIZE)
        if len(head) < MULTITHREAD_MIN_SIZE:
            return encode_small(head, sink, level)
        source = _Prepended(head, source)
    elif size < MULTITHREAD_MIN_SIZE:
        return encode_small(read_small(source.read, size, label), sink, level)
    digest = hashlib.sha256()
    total = 0
    sink.write(bytes(HEAD_SIZE))  # completed below
    # Reading (here), hashing and framing run in three threads, so the hash of one chunk
    # overlaps the framing of the previous one while the workers compress.
    with _Framer(sink, level) as framer:
        stages = [lambda chunk, part: digest.update(chunk), lambda chunk, part: framer.add(chunk)]
        with _Pipeline(stages, threaded=True) as pipeline:
            while n := source.readinto(buffer := pipeline.free_buffer()):
                total += n
                if size is not None and total > size:
                    raise _changed_while_read(label, size, total)
                pipeline.submit(memoryview(buffer)[:n], None)
                if on_read is not None:
                    on_read(n)
        framer.finish()
    if size is not None and total != size:
        raise _changed_while_read(label, size, total)
    stored = sink.tell()
    sink.seek(0)
    sink.write(_HEADER.pack(_HEADER_MAGIC, _HEADER.size - 8, total, stored, digest.digest()))
    sink.seek(stored)
    return Encoded(digest.hexdigest(), total, stored)


def read_small(read: Callable[[int], bytes], size: int, label: str) -> bytes:
    """All of an input known to be `size` (< MULTITHREAD_MIN_SIZE) bytes long, by calls of
    `read(n)`: usually one, as for a regular file only an empty read means the end (a
    file system may still return fewer bytes). UsageError if it has another length."""
    data = read(size + 1)
    while 0 < len(data) < size:
        more = read(size + 1 - len(data))
        if not more:
            break
        data += more
    if len(data) != size:
        raise _changed_while_read(label, size, len(data))
    return data


def compress_small(data: bytes, level: int) -> bytes:
    """`data` (< MULTITHREAD_MIN_SIZE bytes) as one zstd frame: one compress call, as the
    per-object overhead is what counts here."""
    return _compressor(level).compress(data)


def encode_small(data: bytes, sink: BinaryIO, level: int) -> Encoded:
    """Hash and compress an input read whole into `sink`, one frame."""
    frame = compress_small(data, level)
    sink.write(frame)
    return Encoded(hashlib.sha256(data).hexdigest(), len(data), len(frame))


class _Framer:
    """Writes 1 MiB chunks to `sink` as frames, in order. Runs of compressible chunks are
    gathered into SEGMENT_SIZE segments that worker threads compress, a frame each; a
    chunk whose sample does not compress becomes a frame of its own at
    INCOMPRESSIBLE_LEVEL, costing little more than a copy."""

    def __init__(self, sink: BinaryIO, level: int):
        from concurrent.futures import ThreadPoolExecutor  # 4 ms of imports only large puts need

        self._sink, self._level = sink, level
        self._workers = min(usable_cpus(), MAX_COMPRESS_THREADS)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="blobctl-zstd")
        self._segment = bytearray()
        self._pending: deque = deque()  # (frame or future of one, input size), in order
        # Input bytes held by the pending frames. Bounding bytes rather than frames lets
        # the quick frames of incompressible chunks queue up behind a segment still
        # compressing instead of idling the workers (1 MiB text and random chunks
        # alternating: put 2.70 -> 2.54 s).
        self._held = 0
        self._max_held = (self._workers + 2) * SEGMENT_SIZE

    def __enter__(self) -> _Framer:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)

    def add(self, chunk: memoryview) -> None:
        if _incompressible(chunk):
            self._submit_segment()
            self._pending.append((_compressor(INCOMPRESSIBLE_LEVEL).compress(chunk), len(chunk)))
            self._held += len(chunk)
        else:
            self._segment += chunk
            if len(self._segment) >= SEGMENT_SIZE:
                self._submit_segment()
        self._write(block=self._held > self._max_held)

    def finish(self) -> None:
        self._submit_segment()
        while self._pending:
            self._write(block=True)

    def _submit_segment(self) -> None:
        if self._segment:
            future = self._pool.submit(_compress_segment, self._segment, self._level)
            self._pending.append((future, len(self._segment)))
            self._held += len(self._segment)
            self._segment = bytearray()

    def _write(self, block: bool) -> None:
        """Write the finished frames at the head of the queue; with `block`, wait for at
        least one (bounding the memory held by frames in flight)."""
        while self._pending:
            head, size = self._pending[0]
            if isinstance(head, bytes):
                frame = head
            elif block or head.done():
                frame = head.result()
            else:
                return
            self._sink.write(frame)
            self._pending.popleft()
            self._held -= size
            block = False


def _compress_segment(segment: bytearray, level: int) -> bytes:
    return _compressor(level).compress(segment)


def _incompressible(chunk: memoryview) -> bool:
    step = max(len(chunk) // SAMPLE_SLICES, 1)
    sample = b"".join(chunk[i:i + SAMPLE_SLICE] for i in range(0, len(chunk), step))
    return len(_compressor(1).compress(sample)) > len(sample) * INCOMPRESSIBLE_RATIO


def _changed_while_read(label: str, expected: int, got: int) -> UsageError:
    return UsageError(f"{label} changed while being read ({expected} bytes expected, "
                      f"{got}{'+' if got > expected else ''} read); nothing was stored")


def decode(source: BinaryIO, emit: Callable[[memoryview], object], expected: str, *,
           label: str, start: int = 0, end: int | None = None, rehash: bool = True) -> int:
    """Decompress one object, verifying it is the content named `expected`.

    Every decompressed chunk whose bytes fall in [start, end) is passed to `emit`, in
    order, from one thread (a helper thread for large objects, so that writing overlaps
    decompressing); chunk buffers are reused, so emit must copy what it keeps. The whole
    object is still decoded, so a range read is verified too. Returns the original size.
    Raises IntegrityError naming `label` on any damage or mismatch — the caller decides
    what to do with what was already emitted.

    zstd checks each frame's content checksum. With `rehash` (the default) the SHA-256 of
    the output is computed and compared too. Without it, an object whose header records
    its SHA-256 (a segmented object written by this version) is verified by that header
    naming `expected` and by its frames' checksums, as `zstd -d` verifies a file: this
    catches damage and a file under the wrong name, not a forgery, and saves hashing the
    output — on two cores, the difference between 1.3x and 1.0x `zstd -d`'s time (see
    bench/NOTES.md). Only a caller reading a local object it trusts passes False.
    """
    digest = hashlib.sha256()
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    offset = 0

    def emit_part(chunk: memoryview, part: memoryview) -> None:
        if part:
            emit(part)

    try:
        head = source.read(HEAD_SIZE)
        header = _segmented_header(head)
        if header is not None:
            declared = header.size
            body = _Limited(_Prepended(head[header.header_size:], source), header.length - header.header_size)
        else:
            declared = zstandard.get_frame_parameters(head).content_size  # a non-zstd file fails here
            body = _Prepended(head, source)
        if header is not None and header.digest is not None and header.digest.hex() != expected:
            raise _damaged(label, "its header names another hash")
        rehash = rehash or header is None or header.digest is None
        reader = dctx.stream_reader(body, read_size=CHUNK_SIZE, read_across_frames=header is not None)
        stages = [lambda chunk, part: digest.update(chunk)] if rehash else []
        # A small object needs no 1 MiB buffer; the floor keeps a header that understates
        # the size (a bomb claiming 0 bytes) from turning into millions of tiny reads.
        buffer_size = min(CHUNK_SIZE, max(declared, MIN_BUFFER_SIZE))
        with _Pipeline(stages + [emit_part], threaded=declared >= MULTITHREAD_MIN_SIZE,
                       buffer_size=buffer_size) as pipeline:
            while n := reader.readinto(buffer := pipeline.free_buffer()):
                chunk = memoryview(buffer)[:n]
                lo, hi = max(start - offset, 0), n if end is None else min(end - offset, n)
                pipeline.submit(chunk, chunk[lo:max(lo, hi)])
                offset += n
    except zstandard.ZstdError as exc:
        raise _damaged(label, str(exc)) from exc
    # zstd stops quietly where a run of frames is cut short, or at a few stray bytes after
    # it: the header's lengths catch both.
    if header is not None and (body.remaining or offset != declared or source.read(1)):
        raise _damaged(label, "its length or size differs from its header")
    if rehash and digest.hexdigest() != expected:
        raise _damaged(label, "its content does not match its hash")
    return offset


def verify_stream_into(source: BinaryIO, sink: BinaryIO, digest: str, label: str) -> int:
    """Copy a compressed object from `source` into `sink` while decoding and hashing it;
    IntegrityError (nothing usable in sink) if it is damaged, truncated or has trailing
    bytes. Returns the original size."""

    class Tee:
        def read(self, size: int = -1) -> bytes:
            data = source.read(size)
            sink.write(data)
            return data

    tee = Tee()
    size = decode(tee, lambda chunk: None, digest, label=label)
    if tee.read(1):
        raise _damaged(label, "bytes follow its zstd frame")
    return size


def _damaged(label: str, what: str) -> IntegrityError:
    """The one error every kind of damage found while decoding becomes."""
    return IntegrityError(f"object {label} is damaged: {what}",
                          "run 'blobctl fsck --repair' to quarantine it")


def verify_whole(data: bytes | memoryview, expected: str, *, label: str) -> int:
    """Verify an object held whole in memory (a download); returns its original size.

    A single frame that declares a size up to MULTITHREAD_MIN_SIZE is checked with one
    decompress call and one hash call, each releasing the GIL for its whole length, so
    several threads verify side by side without contending; anything else streams
    through decode(). Raises IntegrityError as decode() does."""
    try:  # (a segmented object's skippable header would read as a frame of its own)
        declared = -1 if _segmented_header(data) else zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        declared = -1
    if not 0 <= declared < MULTITHREAD_MIN_SIZE:
        return decode(io.BytesIO(data), lambda chunk: None, expected, label=label)
    try:  # the declared size bounds the output: a frame that overruns it is an error
        original = _decompressor().decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise _damaged(label, str(exc)) from exc
    if hashlib.sha256(original).hexdigest() != expected:
        raise _damaged(label, "its content does not match its hash")
    return len(original)


class _Header(NamedTuple):
    size: int  # original bytes
    length: int  # the object's own length, header included
    digest: bytes | None  # SHA-256 of the original bytes; None in a legacy header
    header_size: int


def _segmented_header(head: bytes) -> _Header | None:
    """A segmented object's header, from its first HEAD_SIZE bytes; None if it has none."""
    for layout in (_HEADER, _LEGACY_HEADER):
        if len(head) >= layout.size:
            magic, payload, size, length, *digest = layout.unpack_from(head)
            if magic == _HEADER_MAGIC and payload == layout.size - 8:
                return _Header(size, length, digest[0] if digest else None, layout.size)
    return None


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
                                          name=f"blobctl-stage-{i}")
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
        head to the next read would copy up to a chunk (holding the GIL) for a few bytes."""
        if not self._head:
            return self._source.read(size)
        cut = len(self._head) if size < 0 else size
        head, self._head = self._head[:cut], self._head[cut:]
        return head

    def readinto(self, buffer) -> int:
        if not self._head:
            return self._source.readinto(buffer)
        head = self.read(len(buffer))
        buffer[:len(head)] = head
        return len(head)


class _Limited:
    """The next `remaining` bytes of `source`, then end of file: a segmented object's frames."""

    def __init__(self, source: BinaryIO, remaining: int):
        self._source, self.remaining = source, max(remaining, 0)

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self._source.read(size) if size else b""
        self.remaining -= len(data)
        return data


def content_size(head: bytes) -> int | None:
    """The original size recorded at an object's start (its first HEAD_SIZE bytes), or
    None if absent or unreadable."""
    header = _segmented_header(head)
    if header is not None:
        return header.size
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return None if size < 0 else size
