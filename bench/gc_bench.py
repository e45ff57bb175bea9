"""Time gc and stat on a 100,000-object store.

Builds the store by writing object frames straight into the layout and rebuilding the
index (much faster than 100,000 puts), spreads the recorded accesses over the past days,
then times `blobctl stat` (against an empty store) and a `blobctl gc --max-size` that
evicts about half. The store is deleted only after all timing (mass deletes slow this disk
for minutes). Figures go to stdout and to the "gc" section of bench/RESULTS.md.

    python bench/gc_bench.py [--objects N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from blobctl import codec
from blobctl.config import Config
from blobctl.store import Store

BENCH_DIR = Path(__file__).resolve().parent
BLOBCTL = str(Path(sys.executable).parent / "blobctl")
DAY_NS = 86400 * 10**9


def build_store(root: Path, count: int) -> Store:
    """`count` small random objects (64 B – 2 kB), accessed at random times in the last 30 days."""
    store = Store(Config.load(str(root)))
    rng = random.Random(42)
    for _ in range(count):
        data = rng.randbytes(rng.randint(64, 2048))
        frame = io.BytesIO()
        digest = codec.encode(io.BytesIO(data), frame, size=len(data)).digest
        path = store.objects_dir / digest[:2] / digest[2:]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(frame.getvalue())
    store.rebuild_index()
    now = time.time_ns()
    with store.index.transaction():
        store.index.db.executemany("UPDATE objects SET accessed = ? WHERE hash = ?",
                                   [(now - rng.randrange(DAY_NS, 30 * DAY_NS), digest)
                                    for digest in store.iter_objects()])
    return store


def timed(*args: str, store: Path) -> tuple[float, str]:
    """Seconds one `blobctl` command took, and its stdout."""
    started = time.perf_counter()
    proc = subprocess.run([BLOBCTL, "--store", str(store), *args], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def median_time(*args: str, store: Path, runs: int = 5) -> float:
    return statistics.median(timed(*args, store=store)[0] for _ in range(runs))


def record(lines: list[str]) -> None:
    """Replace (or add) the '## gc' section of bench/RESULTS.md, leaving the others alone."""
    results = BENCH_DIR / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmarks\n"
    before, found, after = text.partition("## gc\n")
    others = after[after.find("\n## ") + 1:] if found and "\n## " in after else ""
    section = "## gc\n\n" + "\n".join(lines) + "\n"
    results.write_text(before.rstrip("\n") + "\n\n" + section + ("\n" + others if others else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    count = parser.parse_args().objects
    work = BENCH_DIR / "work" / f"gc-{os.getpid()}"
    big, empty = work / "big", work / "empty"
    try:
        started = time.perf_counter()
        store = build_store(big, count)
        stored = store.index.totals().stored
        store.close()
        Store(Config.load(str(empty))).close()
        build_seconds = time.perf_counter() - started

        stat_big = median_time("stat", store=big)
        stat_empty = median_time("stat", store=empty)
        gc_seconds, out = timed("gc", "--json", "--max-size", str(stored // 2), store=big)
        report = json.loads(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs "
        f"(`python bench/gc_bench.py --objects {count}`; store built in {build_seconds:.0f} s).",
        "",
        "| what | time |",
        "|---|---|",
        f"| `blobctl gc --max-size` on {count:,} objects, evicting "
        f"{report['executed']['evicted']:,} ({report['executed']['stored'] / 1e6:.0f} MB) "
        f"| {gc_seconds:.2f} s |",
        f"| `blobctl stat`, {count:,} objects (median of 5) | {stat_big * 1000:.0f} ms |",
        f"| `blobctl stat`, empty store (median of 5) | {stat_empty * 1000:.0f} ms |",
    ]
    print("\n".join(lines))
    record(lines)


if __name__ == "__main__":
    main()
