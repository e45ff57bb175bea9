"""Unit tests for the object format: zstd frames (one, or a headed run of segments for
large objects), named by the SHA-256 of the original bytes."""

import hashlib
import io
import os
import random
import shutil
import struct
import subprocess
import time

import pytest
import zstandard

from blobctl import codec
from blobctl.errors import IntegrityError, UsageError


def encode(data: bytes, **kwargs) -> tuple[codec.Encoded, bytes]:
    sink = io.BytesIO()
    encoded = codec.encode(io.BytesIO(data), sink, **kwargs)
    return encoded, sink.getvalue()


def decode(frame: bytes, digest: str, **kwargs) -> bytes:
    out = bytearray()
    codec.decode(io.BytesIO(frame), out.extend, digest, label="k", **kwargs)
    return bytes(out)


def mixed(blocks: int, seed: int = 7) -> bytes:
    """Alternating 1 MiB chunks of random bytes and of text, then a short tail."""
    rng = random.Random(seed)
    text = b"".join(b"line %d of some text\n" % i for i in range(60000))[:1 << 20]
    return b"".join(rng.randbytes(1 << 20) if i % 2 == 0 else text for i in range(blocks)) + b"tail"


MIXED = mixed(6)
SAMPLES = [b"", b"x", os.urandom(1000), b"text " * 50000, os.urandom(5 << 20) + b"ab" * 100000]


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: str(len(d)))
@pytest.mark.parametrize("known_size", [True, False])
def test_round_trip(data, known_size):
    encoded, frame = encode(data, size=len(data) if known_size else None)
    assert encoded.digest == hashlib.sha256(data).hexdigest()
    assert encoded.size == len(data) and encoded.stored == len(frame)
    # A stream of unknown size is read far enough to know which encoding it needs, and
    # either one records the size.
    assert codec.content_size(frame[:codec.HEAD_SIZE]) == len(data)
    assert decode(frame, encoded.digest) == data


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd CLI not installed")
@pytest.mark.parametrize("data", [b"interop " * 10000, MIXED], ids=["one-frame", "segmented"])
def test_zstd_cli_reads_objects(tmp_path, data):
    _, frame = encode(data, size=len(data))
    (tmp_path / "obj").write_bytes(frame)
    out = subprocess.run(["zstd", "-d", "-c", str(tmp_path / "obj")], capture_output=True, check=True)
    assert out.stdout == data


@pytest.mark.parametrize("data", [os.urandom(3 << 20), MIXED], ids=["one-frame", "segmented"])
def test_range_reads_are_exact_and_verified(data):
    encoded, frame = encode(data, size=len(data))
    for start, end in [(0, 0), (0, 10), (100, 2 << 20), ((1 << 20) - 5, (1 << 20) + 5),
                       ((3 << 20) - 7, (5 << 20) + 9), (10, None), (len(data), None)]:
        assert decode(frame, encoded.digest, start=start, end=end) == data[start:end]
    damaged = bytearray(frame)
    damaged[-100] ^= 0xFF
    with pytest.raises(IntegrityError):
        decode(bytes(damaged), encoded.digest, start=0, end=10)


def verify_whole(frame: bytes, digest: str) -> int:
    return codec.verify_whole(frame, digest, label="k")


#: The ways an object is checked: streamed (reads, local and remote), streamed trusting
#: the checksums and a segmented object's header (local reads by default), and whole in
#: memory (small downloads); they must agree on every kind of damage.
CHECKS = {"streamed": lambda frame, digest: len(decode(frame, digest)),
          "trusting": lambda frame, digest: len(decode(frame, digest, rehash=False)),
          "whole": verify_whole}


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: str(len(d)))
def test_whole_check_returns_the_original_size(data):
    encoded, frame = encode(data, size=len(data))
    assert verify_whole(frame, encoded.digest) == len(data)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("data", [b"payload " * 20000, MIXED], ids=["one-frame", "segmented"])
@pytest.mark.parametrize("damage", ["flip", "flip-body", "truncate", "empty", "garbage", "trailing",
                                    "other-hash", "other-large"])
def test_damage_is_an_integrity_error(data, damage, check):
    encoded, frame = encode(data, size=len(data))
    middle = min(codec.HEAD_SIZE + 1000, len(frame) // 2)  # MIXED: in the raw frame of a random chunk
    frames = {
        "flip": frame[:40] + bytes([frame[40] ^ 1]) + frame[41:],  # segmented: in the header's hash
        "flip-body": frame[:middle] + bytes([frame[middle] ^ 1]) + frame[middle + 1:],
        "truncate": frame[: len(frame) // 2],
        "empty": b"",
        "garbage": os.urandom(len(frame)),
        "trailing": frame + b"junk",
        "other-hash": encode(b"something else")[1],
        "other-large": encode(MIXED + b"!")[1],  # a valid object, under another's name
    }
    with pytest.raises(IntegrityError, match="object k is damaged"):
        CHECKS[check](frames[damage], encoded.digest)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("claimed", [900, 1100])
def test_a_frame_header_that_lies_about_the_size_is_damage(check, claimed):
    data = os.urandom(500) + b"a" * 500
    encoded, frame = encode(data, size=len(data))
    # single-segment frame of 1000 bytes: a 2-byte content size (minus 256) after the descriptor
    assert frame[4] >> 6 == 1 and frame[4] & 0x20 and struct.unpack_from("<H", frame, 5)[0] == 1000 - 256
    forged = frame[:5] + struct.pack("<H", claimed - 256) + frame[7:]
    with pytest.raises(IntegrityError, match="object k is damaged"):
        CHECKS[check](forged, encoded.digest)


def test_empty_file_is_not_the_empty_object():
    empty_digest = hashlib.sha256(b"").hexdigest()
    with pytest.raises(IntegrityError):
        decode(b"", empty_digest)


def test_decompression_bomb_decodes_in_bounded_chunks():
    """A 1000x bomb is streamed: no single emitted chunk exceeds the chunk size."""
    data = b"\0" * (64 << 20)
    encoded, frame = encode(data, size=len(data))
    assert len(frame) * 1000 < len(data)
    biggest = 0

    def emit(chunk):
        nonlocal biggest
        biggest = max(biggest, len(chunk))

    assert codec.decode(io.BytesIO(frame), emit, encoded.digest, label="bomb") == len(data)
    assert biggest <= codec.CHUNK_SIZE


@pytest.mark.parametrize("pieces", [[b"abcdef"], [b"ab", b"cd", b"ef"], [b"a", b"bcdef"]])
def test_a_small_input_is_read_whole_across_short_reads(pieces):
    """One read when the input gives all at once (a regular file); more when a file
    system returns fewer bytes, each asking for one byte past what is still missing."""
    given = iter(pieces + [b""])
    asked = []

    def read(n: int) -> bytes:
        asked.append(n)
        return next(given)

    assert codec.read_small(read, 6, "f") == b"abcdef"
    missing = [6 - len(b"".join(pieces[:i])) for i in range(len(pieces))]
    assert asked == [n + 1 for n in missing]


@pytest.mark.parametrize("content", [b"abcdefg", b"abc", b""])
def test_a_small_input_of_another_size_is_refused(content):
    with pytest.raises(UsageError, match="changed while being read"):
        codec.read_small(io.BytesIO(content).read, 6, "f")


def test_input_that_changes_size_is_refused():
    with pytest.raises(UsageError, match="changed while being read"):
        codec.encode(io.BytesIO(b"abc"), io.BytesIO(), size=10, label="f")


def segment_frames(obj: bytes) -> list[tuple[int, bool]]:
    """(content size, is raw) of each frame after a segmented object's header."""
    frames, offset = [], codec.HEAD_SIZE
    while offset < len(obj):
        params = zstandard.get_frame_parameters(obj[offset:offset + 18])
        size = zstandard.frame_header_size(obj[offset:offset + 18])
        first_block = int.from_bytes(obj[offset + size:offset + size + 3], "little")
        frames.append((params.content_size, (first_block >> 1) & 3 == 0))
        offset = _frame_end(obj, offset)
    return frames


def _frame_end(obj: bytes, offset: int) -> int:
    """Where the frame at `offset` ends, walking its block headers (RFC 8878 3.1.1.2)."""
    params = zstandard.get_frame_parameters(obj[offset:offset + 18])
    offset += zstandard.frame_header_size(obj[offset:offset + 18])
    while True:
        header = int.from_bytes(obj[offset:offset + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        offset += 3 + (1 if kind == 1 else size)  # an RLE block stores one byte
        if header & 1:
            return offset + (4 if params.has_checksum else 0)


def test_incompressible_chunks_are_stored_raw_and_the_rest_compressed():
    """Random chunks cost little more than a copy; text chunks are compressed; both in
    input order."""
    data = mixed(5)  # random, text, random, text, random, "tail"
    encoded, obj = encode(data, size=len(data))
    frames = segment_frames(obj)
    assert [raw for _, raw in frames] == [True, False, True, False, True, True]
    assert [size for size, _ in frames] == [1 << 20] * 5 + [4]
    random_bytes = 3 << 20
    assert random_bytes < encoded.stored < random_bytes + 2 * (1 << 20) // 10
    assert decode(obj, encoded.digest) == data


def test_frames_in_flight_are_bounded_by_the_input_they_hold(monkeypatch):
    """While compressing lags, raw frames queue behind it (the workers keep busy) but the
    input held by unwritten frames stays within (workers + 2) segments plus a chunk."""
    real = codec._compress_segment
    monkeypatch.setattr(codec, "_compress_segment",
                        lambda segment, level: (time.sleep(0.02), real(segment, level))[1])
    written: list[int] = []

    class Sink:
        def write(self, frame) -> None:
            written.append(zstandard.frame_content_size(frame))

    limit = (min(codec.usable_cpus(), codec.MAX_COMPRESS_THREADS) + 2) * codec.SEGMENT_SIZE
    data = memoryview(mixed(40))
    added, peak = 0, 0
    with codec._Framer(Sink(), 3) as framer:
        for start in range(0, len(data), codec.CHUNK_SIZE):
            framer.add(data[start:start + codec.CHUNK_SIZE])
            added += len(data[start:start + codec.CHUNK_SIZE])
            peak = max(peak, added - sum(written))
        framer.finish()
    assert sum(written) == len(data)
    assert peak <= limit + codec.CHUNK_SIZE
    assert peak > (limit // codec.SEGMENT_SIZE + 1) * codec.CHUNK_SIZE  # more than a frame per slot


def test_compressible_runs_are_grouped_into_segments():
    data = b"".join(b"record %d\n" % i for i in range(1_500_000))  # ~16 MiB of text
    encoded, obj = encode(data, size=len(data))
    sizes = [size for size, raw in segment_frames(obj) if not raw]
    assert sizes[:-1] == [codec.SEGMENT_SIZE] * (len(sizes) - 1) and sum(sizes) == len(data)
    assert encoded.stored < len(data) // 4
    assert decode(obj, encoded.digest) == data


@pytest.mark.parametrize("rehash", [True, False])
@pytest.mark.parametrize("field", ["size", "length"])
def test_a_segmented_header_that_lies_is_damage(field, rehash):
    encoded, obj = encode(MIXED, size=len(MIXED))
    magic, payload, size, length, digest = struct.unpack_from("<IIQQ32s", obj)
    assert (payload, digest.hex()) == (48, encoded.digest)
    size, length = (size - 1, length) if field == "size" else (size, length - 10)
    forged = struct.pack("<IIQQ32s", magic, payload, size, length, digest) + obj[codec.HEAD_SIZE:]
    with pytest.raises(IntegrityError, match="object k is damaged"):
        decode(forged, encoded.digest, rehash=rehash)


def test_every_frame_of_a_segmented_object_has_a_checksum():
    """What lets a local read skip the SHA-256: zstd checks each frame, raw ones too."""
    _, obj = encode(MIXED, size=len(MIXED))
    assert {raw for _, raw in segment_frames(obj)} == {True, False}
    offset = codec.HEAD_SIZE
    while offset < len(obj):
        assert zstandard.get_frame_parameters(obj[offset:offset + 18]).has_checksum
        offset = _frame_end(obj, offset)


def legacy_object(data: bytes) -> bytes:
    """`data` as blobctl wrote segmented objects before their header held the hash: a
    16-byte header payload, and incompressible chunks as raw frames with no checksum."""
    frames = []
    for offset in range(0, len(data), codec.CHUNK_SIZE):
        chunk = data[offset:offset + codec.CHUNK_SIZE]
        blocks = [chunk[i:i + (128 << 10)] for i in range(0, len(chunk), 128 << 10)]
        frames.append(struct.pack("<IBI", 0xFD2FB528, 0xA0, len(chunk)) + b"".join(
            ((len(block) << 3) | (i == len(blocks) - 1)).to_bytes(3, "little") + block
            for i, block in enumerate(blocks)))
    body = b"".join(frames)
    return struct.pack("<IIQQ", 0x184D2A5B, 16, len(data), 24 + len(body)) + body


@pytest.mark.parametrize("rehash", [True, False])
def test_objects_of_the_legacy_format_are_read_and_always_rehashed(rehash):
    data = os.urandom(5 << 20) + b"tail"
    digest = hashlib.sha256(data).hexdigest()
    obj = legacy_object(data)
    assert codec.content_size(obj[:codec.HEAD_SIZE]) == len(data)
    assert decode(obj, digest, rehash=rehash) == data
    assert decode(obj, digest, start=(1 << 20) - 3, end=(1 << 20) + 3, rehash=rehash) == data[(1 << 20) - 3:(1 << 20) + 3]
    damaged = bytearray(obj)
    damaged[len(obj) // 2] ^= 1  # raw bytes with no checksum: only the SHA-256 sees it
    with pytest.raises(IntegrityError, match="does not match its hash"):
        decode(bytes(damaged), digest, rehash=rehash)


def test_only_rehashing_catches_a_forged_object():
    """The trust a default local read places in a segmented object: a header naming the
    expected hash over other, validly checksummed content passes unless rehashed (get
    --verify, verify_reads = sha256, fsck)."""
    wanted = hashlib.sha256(MIXED).hexdigest()
    _, other = encode(MIXED[::-1], size=len(MIXED))
    magic, payload, size, length, _ = struct.unpack_from("<IIQQ32s", other)
    forged = struct.pack("<IIQQ32s", magic, payload, size, length, bytes.fromhex(wanted)) + other[codec.HEAD_SIZE:]
    assert decode(forged, wanted, rehash=False) == MIXED[::-1]
    with pytest.raises(IntegrityError, match="does not match its hash"):
        decode(forged, wanted)


def test_truncation_at_a_frame_boundary_is_damage():
    encoded, obj = encode(MIXED, size=len(MIXED))
    cut = _frame_end(obj, codec.HEAD_SIZE)
    with pytest.raises(IntegrityError, match="object k is damaged"):
        decode(obj[:cut], encoded.digest)


@pytest.mark.parametrize("size", [codec.MULTITHREAD_MIN_SIZE - 1, codec.MULTITHREAD_MIN_SIZE])
@pytest.mark.parametrize("known_size", [True, False])
def test_the_shape_switches_at_the_threshold_whether_or_not_the_size_is_known(size, known_size):
    """A pipe's first MULTITHREAD_MIN_SIZE bytes decide its shape as a file's size would."""
    data = (b"threshold " * (size // 10 + 1))[:size]
    encoded, obj = encode(data, size=size if known_size else None)
    segmented = obj[:4] == struct.pack("<I", 0x184D2A5B)
    assert segmented == (size >= codec.MULTITHREAD_MIN_SIZE)
    assert codec.content_size(obj[:codec.HEAD_SIZE]) == size
    assert decode(obj, encoded.digest) == data
