"""Push and pull of 1,000 generated objects (1 KiB–4 MiB, log-uniform, half random and
half text) to a private SeaweedFS S3 server, against `rclone copy` of the same files.

    .venv/bin/python bench/remote_bench.py [--objects 1000] [--rounds 3] [--jobs 8]

Both tools run alternately in each round (fresh buckets, fresh local directories), and
the median of the rounds is reported. blobctl uploads its compressed objects plus one ref
per name; rclone uploads the raw files: that difference is the product, so it is kept.
The section "Remote push/pull" of bench/RESULTS.md is replaced with the table.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.product import install_product  # noqa: E402
from bench.results import write_section  # noqa: E402
from tests.servers import (S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, create_bucket,  # noqa: E402
                           start_seaweed, stop)

BIN = Path(sys.executable).parent  # rclone, from the bench extra


def generate(directory: Path, count: int, seed: int = 7) -> int:
    """`count` files with log-uniform sizes in [1 KiB, 4 MiB]; returns the total bytes."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    words = b"the quick brown fox jumps over the lazy dog 0123456789 "
    total = 0
    for i in range(count):
        size = int(math.exp(rng.uniform(math.log(1024), math.log(4 << 20))))
        half = size // 2
        body = rng.randbytes(half) + (words * (size // len(words) + 1))[: size - half]
        (directory / f"f{i:05d}.bin").write_bytes(body)
        total += size
    return total


def timed(command: list[str], env: dict) -> float:
    """Wall time of one command, started with no dirty data left by the previous one
    (rclone does not sync what it downloads; blobctl would pay for its writeback)."""
    os.sync()
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed


def prepare_store(blobctl: str, store: Path, files: Path, bucket: str, env: dict) -> None:
    """A local store holding every file under the mounted prefix 'bench/' (not timed)."""
    from blobctl.config import Config
    from blobctl.store import Store

    subprocess.run([blobctl, "--store", str(store), "mount", "bench", f"s3://{bucket}/store"],
                   env=env, check=True)
    paths = sorted(str(p) for p in files.iterdir())
    with Store(Config.load(str(store))) as opened:
        for path, result in zip(paths, opened.put_paths(paths)):
            opened.bind(f"bench/{Path(path).name}", result.digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()

    work = REPO / "bench" / "work" / f"remote-{int(time.time())}"
    work.mkdir(parents=True)
    (work / "seaweed").mkdir()
    blobctl = install_product(work).blobctl
    endpoint, server = start_seaweed(work / "seaweed")
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_REGION": S3_REGION, "BLOBCTL_CONFIG": "/nonexistent",
           "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
           "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_REGION": S3_REGION,
           "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": S3_ACCESS_KEY,
           "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    try:
        files = work / "files"
        total = generate(files, args.objects)
        print(f"{args.objects} files, {total / 1e6:.1f} MB in all; SeaweedFS at {endpoint}", file=sys.stderr)
        times: dict[str, list[float]] = {k: [] for k in ("blobctl push", "rclone push", "blobctl pull", "rclone pull")}
        rclone = [str(BIN / "rclone"), "--transfers", str(args.jobs), "--checkers", str(args.jobs)]
        for round_ in range(args.rounds):
            ours, theirs = f"b{round_}-{os.getpid()}", f"r{round_}-{os.getpid()}"
            for bucket in (ours, theirs):
                assert create_bucket(endpoint, bucket), bucket
            sender, receiver = work / f"sender{round_}", work / f"receiver{round_}"
            prepare_store(blobctl, sender, files, ours, env)
            subprocess.run([blobctl, "--store", str(receiver), "mount", "bench",
                            f"s3://{ours}/store"], env=env, check=True)
            cases = [
                ("blobctl push", [blobctl, "--store", str(sender), "push", "--jobs", str(args.jobs)]),
                ("rclone push", rclone + ["copy", str(files), f"bench:{theirs}/files"]),
            ]
            pulls = [
                ("blobctl pull", [blobctl, "--store", str(receiver), "pull", "bench/"]),
                ("rclone pull", rclone + ["copy", f"bench:{theirs}/files", str(work / f"rclone-down{round_}")]),
            ]
            for pair in (cases, pulls):
                for name, command in (pair if round_ % 2 == 0 else reversed(pair)):
                    times[name].append(timed(command, env))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)
            for done in (sender, receiver, work / f"rclone-down{round_}"):  # ~1 GB a round
                shutil.rmtree(done, ignore_errors=True)
    finally:  # a failed run must not leave its gigabytes behind (a full disk fails the next)
        stop(server, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for direction in ("push", "pull"):
        ours = statistics.median(times[f"blobctl {direction}"])
        theirs = statistics.median(times[f"rclone {direction}"])
        rows.append(f"| {direction} {args.objects} objects ({total / 1e6:.0f} MB) | {ours:.2f} s | "
                    f"{theirs:.2f} s | {ours / theirs:.2f}× | ≤ 1.00× | {'yes' if ours <= theirs else 'no'} |")
    rclone_version = subprocess.run([str(BIN / "rclone"), "version"], capture_output=True, text=True).stdout.split("\n")[0]
    table = "\n".join([
        f"Median of {args.rounds} alternating rounds, `--jobs {args.jobs}` / `--transfers {args.jobs}`, "
        f"SeaweedFS on 127.0.0.1; {rclone_version}. Command: `python bench/remote_bench.py`.",
        "",
        "| case | blobctl | rclone copy | ratio | target | met |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    notes = REPO / "bench" / "NOTES-remote.md"  # what limits a missed target, kept by hand
    write_section("Remote push/pull", table + ("\n\n" + notes.read_text() if notes.exists() else ""))
    print(table)


if __name__ == "__main__":
    main()
