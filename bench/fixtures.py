"""Data the benchmarks need, built fast and reproducibly (fixed seeds).

build_store() is shared with other benchmarks (gc needs a big store too): it writes
objects straight into the store layout and lets the store rebuild its index, which is
much faster than n separate puts and gives the same on-disk result.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import zstandard

BLOCK = 1 << 20


def _text_block(rng: random.Random, size: int) -> bytes:
    """Compressible, log-like text: lines of words from a fixed vocabulary."""
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
                  for _ in range(5000)]
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(vocabulary, k=12)) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def write_mixed_file(path: Path, size: int, seed: int = 1) -> None:
    """Half random, half text, alternating in 1 MiB blocks (text blocks are drawn from
    16 distinct ones, further apart than zstd's level-3 window)."""
    rng = random.Random(seed)
    texts = [_text_block(rng, BLOCK) for _ in range(16)]
    with open(path, "wb") as out:
        for i in range(size // BLOCK):
            out.write(rng.randbytes(BLOCK) if i % 2 == 0 else texts[(i // 2) % len(texts)])


def write_small_files(directory: Path, count: int, size: int = 4096, seed: int = 2) -> list[str]:
    """`count` distinct files of `size` bytes (half random, half text), 1000 per subdir;
    returns their paths."""
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        sub = directory / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        text = (f"file {i} line of text\n" * (size // 40 + 1)).encode()
        path = sub / f"f{i:06d}"
        path.write_bytes((rng.randbytes(size // 2) + text)[:size])
        paths.append(str(path))
    return paths


def build_store(path: Path, n: int, size: int = 64, seed: int = 3) -> list[str]:
    """A blobctl store at `path` holding `n` distinct small objects (index rebuilt from
    the files); returns their hashes."""
    from blobctl.config import Config
    from blobctl.store import Store

    rng = random.Random(seed)
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    digests = []
    with Store(Config.load(str(path))) as store:  # written directly, then os.sync() below
        made = set()
        for _ in range(n):
            data = rng.randbytes(size)
            digest = hashlib.sha256(data).hexdigest()
            shard = store.objects_dir / digest[:2]
            if digest[:2] not in made:
                shard.mkdir(exist_ok=True)
                made.add(digest[:2])
            (shard / digest[2:]).write_bytes(compressor.compress(data))
            digests.append(digest)
        store.rebuild_index()
    os.sync()
    return digests
