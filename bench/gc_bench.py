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
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import build_store  # noqa: E402
from bench.results import write_section  # noqa: E402
from blobctl.config import Config  # noqa: E402
from blobctl.store import Store  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
BLOBCTL = str(Path(sys.executable).parent / "blobctl")
DAY_NS = 86400 * 10**9


def build_aged_store(root: Path, count: int) -> int:
    """The shared benchmark store, its objects last accessed at random times in the last
    30 days (so LRU order matters); returns its stored bytes."""
    digests = build_store(root, count, size=1024)
    rng = random.Random(42)
    now = time.time_ns()
    with Store(Config.load(str(root))) as store:
        with store.index.transaction():
            store.index.db.executemany("UPDATE objects SET accessed = ? WHERE hash = ?",
                                       [(now - rng.randrange(DAY_NS, 30 * DAY_NS), d) for d in digests])
        return store.index.totals().stored


def timed(*args: str, store: Path) -> tuple[float, str]:
    """Seconds one `blobctl` command took, and its stdout."""
    started = time.perf_counter()
    proc = subprocess.run([BLOBCTL, "--store", str(store), *args], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def median_time(*args: str, store: Path, runs: int = 5) -> float:
    return statistics.median(timed(*args, store=store)[0] for _ in range(runs))


def record(lines: list[str]) -> None:
    write_section("gc", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    count = parser.parse_args().objects
    work = BENCH_DIR / "work" / f"gc-{os.getpid()}"
    big, empty = work / "big", work / "empty"
    try:
        started = time.perf_counter()
        stored = build_aged_store(big, count)
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
