"""Unit tests for the object format: one zstd frame, SHA-256 of the original bytes."""

import hashlib
import io
import os
import shutil
import subprocess

import pytest

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


SAMPLES = [b"", b"x", os.urandom(1000), b"text " * 50000, os.urandom(5 << 20) + b"ab" * 100000]


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: str(len(d)))
@pytest.mark.parametrize("known_size", [True, False])
def test_round_trip(data, known_size):
    encoded, frame = encode(data, size=len(data) if known_size else None)
    assert encoded.digest == hashlib.sha256(data).hexdigest()
    assert encoded.size == len(data) and encoded.stored == len(frame)
    # An empty stream ends before zstd must decide, so it records size 0 either way.
    assert codec.content_size(frame[:18]) == (len(data) if known_size or not data else None)
    assert decode(frame, encoded.digest) == data


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd CLI not installed")
def test_zstd_cli_reads_objects(tmp_path):
    data = b"interop " * 10000
    _, frame = encode(data, size=len(data))
    (tmp_path / "obj").write_bytes(frame)
    out = subprocess.run(["zstd", "-d", "-c", str(tmp_path / "obj")], capture_output=True, check=True)
    assert out.stdout == data


def test_range_reads_are_exact_and_verified():
    data = os.urandom(3 << 20)
    encoded, frame = encode(data, size=len(data))
    for start, end in [(0, 0), (0, 10), (100, 2 << 20), ((1 << 20) - 5, (1 << 20) + 5), (10, None), (len(data), None)]:
        assert decode(frame, encoded.digest, start=start, end=end) == data[start:end]
    damaged = bytearray(frame)
    damaged[-100] ^= 0xFF
    with pytest.raises(IntegrityError):
        decode(bytes(damaged), encoded.digest, start=0, end=10)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage", "trailing", "other-hash"])
def test_damage_is_an_integrity_error(damage):
    data = b"payload " * 20000
    encoded, frame = encode(data, size=len(data))
    frames = {
        "flip": frame[:40] + bytes([frame[40] ^ 1]) + frame[41:],
        "truncate": frame[: len(frame) // 2],
        "empty": b"",
        "garbage": os.urandom(len(frame)),
        "trailing": frame + b"junk",
        "other-hash": encode(b"something else")[1],
    }
    with pytest.raises(IntegrityError, match="object k is damaged"):
        decode(frames[damage], encoded.digest)


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


def test_input_that_changes_size_is_refused():
    with pytest.raises(UsageError, match="changed while being read"):
        codec.encode(io.BytesIO(b"abc"), io.BytesIO(), size=10, label="f")
