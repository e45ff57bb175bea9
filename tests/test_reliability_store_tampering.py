"""Store contents that are not what blobctl wrote (scenarios 7 and 10): symlinks planted
in the tree, special files, damaged objects."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard

from blobctl.config import Config
from blobctl.errors import IntegrityError
from blobctl.store import Store
from tests.conftest import blobctl_executable
from tests.reliability import object_file, report, run_in, sha

EXIT_INTEGRITY = 4


def snapshot(directory) -> dict:
    """Every file under `directory` with its content and mtime, to prove nothing changed."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_symlinks_in_the_store_are_refused_or_replaced(tmp_path):
    store = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    refused = 0
    # an object file that is a symlink to a copy of itself outside the store
    data = b"object behind a symlink" * 100
    digest = run_in(store, "put", "-", input=data).text.strip()
    path = object_file(store, digest)
    shutil.move(path, outside / "object-copy")
    path.symlink_to(outside / "object-copy")
    # a shard directory that is a symlink to a directory outside holding a valid object
    other = b"object in a symlinked shard" * 100
    other_digest = run_in(store, "put", "-", input=other).text.strip()
    shard = object_file(store, other_digest).parent
    shutil.move(shard, outside / "shard")
    shard.symlink_to(outside / "shard")
    before = snapshot(outside)

    for args in (["get", digest], ["get", other_digest], ["rm", other_digest],
                 ["put", "-"], ["stat", other_digest]):
        result = run_in(store, *args, input=other)
        assert result.code != 0 and data not in result.out and other not in result.out, (args, result)
        if args[0] == "get":  # damage, as any other: exit 4 and the fsck hint
            assert result.code == EXIT_INTEGRITY and "fsck" in result.err, result.err
        assert "Traceback" not in result.err
        assert "symlink" in result.err or "symbolic link" in result.err, result.err
        refused += 1
    # putting the content again replaces the planted symlink with a real object file
    assert run_in(store, "put", "--name", "again", "-", input=data).code == 0
    assert not path.is_symlink() and run_in(store, "get", "again").out == data
    assert snapshot(outside) == before
    report(10, "symlinks in the store",
           f"object and shard symlinked outside: {refused} commands refused, the planted object "
           "symlink replaced by a real object on put, 0 files outside changed")


def test_special_file_as_object_fails_fast(tmp_path):
    """A FIFO where an object should be must not hang a reader."""
    store = tmp_path / "store"
    digest = run_in(store, "put", "-", input=b"fifo victim").text.strip()
    object_file(store, digest).unlink()
    os.mkfifo(object_file(store, digest))
    result = run_in(store, "get", digest, timeout=30)
    assert result.code == EXIT_INTEGRITY and "not a regular file" in result.err
    assert run_in(store, "put", "-", input=b"fifo victim").code == 0
    assert run_in(store, "get", digest).out == b"fifo victim"


DAMAGES = {
    "flipped byte": lambda path: path.write_bytes(flip(path.read_bytes())),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "zero-length": lambda path: path.write_bytes(b""),
}


def flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    return bytes(damaged)


def test_bit_rot_is_caught_naming_the_key(tmp_path):
    """1,000 objects, 50 damaged (flipped byte, truncated, emptied, or renamed to another
    object's name): each damaged one fails with exit 4 naming its key, the others read back."""
    store = tmp_path / "store"
    rng = random.Random(7)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    contents = {}
    for i in range(1000):
        data = rng.randbytes(rng.randrange(1, 20_000)) + b"text " * rng.randrange(100)
        (inputs / str(i)).write_bytes(data)
        contents[sha(data)] = data
    listing = "\n".join(str(inputs / str(i)) for i in range(1000)).encode()
    assert run_in(store, "put", "--stdin-paths", input=listing).code == 0
    remote = tmp_path / "remote"  # an intact copy the repair can fetch from
    shutil.copytree(store / "objects", remote / "objects")
    assert run_in(store, "mount", "", remote, "--read-only").code == 0
    victims = rng.sample(sorted(contents), 50)
    kinds = list(DAMAGES) + ["misnamed"]
    damaged = {}
    for number, digest in enumerate(victims):
        kind = kinds[number % len(kinds)]
        path = object_file(store, digest)
        if kind == "misnamed":  # another object's file under this name
            donor = next(d for d in contents if d not in victims)
            path.write_bytes(object_file(store, donor).read_bytes())
        else:
            DAMAGES[kind](path)
        damaged[digest] = kind
    failures = {}
    with Store(Config.load(str(store))) as opened:
        for digest, data in contents.items():
            out = bytearray()
            try:
                opened.write_to(opened.resolve(digest), _Sink(out))
            except IntegrityError as exc:
                failures[digest] = str(exc)
                assert out == b"" and digest in str(exc)
                continue
            assert bytes(out) == data
    assert set(failures) == set(damaged)
    for digest in victims[: len(kinds) * 2]:  # every kind through the real command too
        result = run_in(store, "get", digest)
        assert result.code == EXIT_INTEGRITY and result.out == b"" and digest in result.err
    check = run_in(store, "fsck", "--json")
    problems = json.loads(check.out)["problems"]
    assert check.code == EXIT_INTEGRITY and len(problems) == 50
    assert {p["key"] for p in problems if p["kind"] == "bad_object"} == set(damaged)
    repair = run_in(store, "fsck", "--repair")
    assert repair.code == 0, repair.err
    assert len(list((store / "quarantine").iterdir())) == 50
    assert json.loads(run_in(store, "fsck", "--json").out)["clean"]
    with Store(Config.load(str(store))) as opened:
        for digest, data in contents.items():
            out = bytearray()
            opened.write_to(opened.resolve(digest), _Sink(out))
            assert bytes(out) == data
    counts = {kind: list(damaged.values()).count(kind) for kind in kinds}
    report(7, "bit rot", f"1000 objects, 50 damaged {counts}: get failed with exit 4 naming "
           f"the key for {len(failures)}/50 (0 bytes emitted), 950/950 intact read back; fsck "
           f"found exactly the {len(problems)}; --repair quarantined 50 and refetched them from "
           "a mount; fsck then clean, 1000/1000 read back")


def test_large_objects_are_checked_by_checksums_and_header_unless_rehashing_is_asked(tmp_path):
    """A local get of a segmented object trusts its frame checksums and the hash in its
    header (docs/FORMAT.md): that catches a flipped byte in a raw frame and another
    object's file under its name. A forged header over other content is caught only when
    rehashing: `get --verify`, `verify_reads = "sha256"` and fsck."""
    store = tmp_path / "store"
    rng = random.Random(11)
    contents = {}
    for i in range(4):  # random 1 MiB chunks (raw frames) between text
        data = b"".join(rng.randbytes(1 << 20) if j % 2 else b"line %d\n" % j * 100_000 for j in range(6))
        (tmp_path / str(i)).write_bytes(data)
        contents[sha(data)] = data
    assert run_in(store, "put", *(tmp_path / str(i) for i in range(4))).code == 0
    intact, flipped, misnamed, forged = contents
    path = object_file(store, flipped)
    path.write_bytes(flip(path.read_bytes()))
    object_file(store, misnamed).write_bytes(object_file(store, intact).read_bytes())
    other = object_file(store, intact).read_bytes()
    object_file(store, forged).write_bytes(other[:24] + bytes.fromhex(forged) + other[56:])

    assert run_in(store, "get", intact).out == contents[intact]
    assert run_in(store, "get", intact, "--verify").out == contents[intact]
    for digest in (flipped, misnamed):
        result = run_in(store, "get", digest, "-o", tmp_path / "out")
        assert result.code == EXIT_INTEGRITY and digest in result.err
        assert not (tmp_path / "out").exists()
    for rehashing in (["--verify"], ["--batch", "--verify"]):
        result = run_in(store, "get", *([] if "--batch" in rehashing else [forged]), *rehashing,
                        input=f"{forged}\n".encode())
        assert result.code == EXIT_INTEGRITY and "does not match its hash" in result.err
    result = run_in(store, "get", forged, env={"BLOBCTL_VERIFY_READS": "sha256"})
    assert result.code == EXIT_INTEGRITY and "does not match its hash" in result.err
    problems = json.loads(run_in(store, "fsck", "--json").out)["problems"]
    assert {p["key"] for p in problems} == {flipped, misnamed, forged}


class _Sink:
    def __init__(self, buffer: bytearray):
        self.write = buffer.extend


# -- decompression bombs -------------------------------------------------------------------
BOMB_SIZE = 1 << 30
MAX_RSS_KB = 100 * 1024


def zeros_frame(size: int, window_log: int = 0) -> tuple[str, bytes]:
    """(hash, zstd frame) of `size` zero bytes, made in 1 MiB steps."""
    digest, out = hashlib.sha256(), io.BytesIO()
    chunk = bytes(1 << 20)
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=window_log, write_checksum=True, write_content_size=True)
    compressor = zstandard.ZstdCompressor(compression_params=params)
    with compressor.stream_writer(out, size=size, closefd=False) as writer:
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            digest.update(chunk)
    return digest.hexdigest(), out.getvalue()


def with_content_size(frame: bytes, size: int) -> bytes:
    """The frame with the content size in its header replaced (a lying header)."""
    descriptor = frame[4]
    field = {2: "<I", 3: "<Q"}[descriptor >> 6]  # our frames use a 4- or 8-byte size field
    start = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
    return frame[:start] + struct.pack(field, size) + frame[start + struct.calcsize(field):]


def get_with_peak_memory(store: Path, digest: str) -> tuple[int, int, str]:
    """(exit code, peak RSS in KiB, stderr) of `blobctl get` writing to /dev/null."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *blobctl_executable(), "--store", str(store),
                           "get", digest], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    *messages, peak = proc.stderr.decode().strip().splitlines()
    return proc.returncode, int(peak), "\n".join(m for m in messages if not m.startswith("Command exited"))


@pytest.mark.slow
def test_decompression_bombs_stream_in_bounded_memory(tmp_path):
    store = tmp_path / "store"
    store.mkdir()  # an existing empty directory: any command makes it a store
    run_in(store, "stat")
    digest, frame = zeros_frame(BOMB_SIZE)
    small_digest, small_frame = zeros_frame(1 << 20)
    wide_digest, wide_frame = zeros_frame(64 << 20, window_log=27)  # 128 MiB window
    cases = {
        "honest 1 GiB bomb": (digest, frame, 0),
        "header claims 100 bytes": (digest, with_content_size(frame, 100), EXIT_INTEGRITY),
        "header claims 4 GiB": (small_digest, with_content_size(small_frame, 0xFFFFFFFF), EXIT_INTEGRITY),
        "128 MiB window": (wide_digest, wide_frame, EXIT_INTEGRITY),
        "garbage": (sha(b"garbage"), os.urandom(1 << 20), EXIT_INTEGRITY),
    }
    peaks = {}
    for label, (key, body, expected) in cases.items():
        path = object_file(store, key)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        code, peak, err = get_with_peak_memory(store, key)
        assert code == expected, (label, err)
        assert peak < MAX_RSS_KB, (label, peak)
        assert expected == 0 or (key in err and "damaged" in err), (label, err)
        peaks[label] = peak
    ratio = BOMB_SIZE / len(frame)
    report(8, "decompression bomb",
           f"1 GiB from {len(frame) / 1024:.0f} KiB ({ratio:,.0f}x) streamed; peak RSS "
           + ", ".join(f"{label} {kb / 1024:.0f} MB" for label, kb in peaks.items())
           + "; lying headers, oversize window and garbage are integrity errors (exit 4)")
