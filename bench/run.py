"""blobctl against its peers: one command, results in bench/RESULTS.md.

    .venv/bin/python bench/run.py            # full run (~15 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # smaller data, fewer rounds (~3 min)

Generates its data in a fresh directory under bench/work/ (gitignored) and removes it at
the very end (--keep leaves it). Each case and its peer run alternately, in fresh output
directories, several rounds; we report medians and their ratio, since the machine may be
shared and only same-run ratios are meaningful. Peak RSS comes from /usr/bin/time -f %M
(`apt-get install -y time` if missing). blobctl is timed through the venv's own console
script and interpreter (the interpreter running this file), never a shell shim.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.fixtures import build_store, write_mixed_file, write_small_files  # noqa: E402
from bench.product import Product, install_product  # noqa: E402
from bench.results import write_section  # noqa: E402



PRODUCT = Product(sys.executable, str(Path(sys.executable).parent / "blobctl"))  # set in main()
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_kb: int


@dataclass
class Case:
    """One row of the table: blobctl's command, its peer's, and how the ratio is judged."""

    name: str
    target: str
    limit: float | None  # the target as a bound on blobctl/peer time (files/s rows are
    # inverted); None for a row shown for reference, with no target of its own
    ours: list[Run] = field(default_factory=list)
    peer: list[Run] = field(default_factory=list)
    peer_label: str = ""
    unit: str = "s"
    count: int = 1  # items per run, for a per-second unit
    report_rss: bool = False

    def median(self, runs: list[Run]) -> float:
        return statistics.median(r.seconds for r in runs)

    @property
    def ratio(self) -> float:
        return self.median(self.ours) / self.median(self.peer)

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.ratio <= self.limit

    def shown(self, runs: list[Run]) -> str:
        seconds = self.median(runs)
        if self.unit == "files/s":
            return f"{self.count / seconds:,.0f} files/s"
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"

    def shown_ratio(self) -> str:
        if self.unit == "files/s":
            return f"{1 / self.ratio:.2f}x the files/s"
        return f"{self.ratio:.2f}x the time"


def timed(argv: list[str], *, cwd: Path | None = None, env: dict | None = None,
          stdin: Path | None = None, stdout: Path | None = None) -> Run:
    """Wall time (measured here) and peak RSS (from /usr/bin/time) of one command.

    Each command starts with no dirty data left by the one before (an untimed sync): a
    peer that does not sync its output would otherwise leave its writeback to be paid by
    whichever command runs next."""
    os.sync()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        with open(stdin or os.devnull, "rb") as inp, open(stdout or os.devnull, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.run([TIME, "-f", "%M", "-o", report.name, *argv], cwd=cwd,
                                  env={**os.environ, **(env or {})}, stdin=inp, stdout=out,
                                  stderr=subprocess.PIPE)
            seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(argv)}\n"
                             f"{proc.stderr.decode(errors='replace')}")
        return Run(seconds, int(report.read().split()[-1]))


def alternate(case: Case, rounds: int, ours, peer) -> None:
    """Run ours(i) and peer(i) in turn, swapping who goes first every round."""
    for i in range(rounds):
        pair = [(case.ours, ours), (case.peer, peer)]
        for runs, fn in pair if i % 2 == 0 else reversed(pair):
            runs.append(fn(i))


def store_env(store: Path, work: Path) -> dict:
    return {"BLOBCTL_STORE": str(store), "BLOBCTL_CONFIG": str(work / "user-config.toml")}


def removing(output: Path, run: Run) -> Run:
    """Delete a timed command's 1 GiB output once measured: left in place, the outputs of
    earlier rounds fill the page cache, and later commands (ours or the peer's) then pay
    for reclaiming it, which made timings drift by 2-3x within one run."""
    shutil.rmtree(output) if output.is_dir() else output.unlink()
    return run


def bench_big(work: Path, big: Path, rounds: int) -> list[Case]:
    """put and get of one large file. The first round's outputs (a store, a .zst) are the
    inputs of the get case; every other output is deleted as soon as it is measured."""
    def put_into(store: Path, i: int) -> Run:
        run = timed([PRODUCT.blobctl, "put", str(big)], env=store_env(store, work))
        return run if i == 0 else removing(store, run)

    def zstd_into(output: Path, i: int) -> Run:
        run = timed(["zstd", "-3", "-T0", "-q", str(big), "-o", str(output)])
        return run if i == 0 else removing(output, run)

    put = Case("put 1 file (mixed)", "≤ 1.15x zstd -3 -T0", 1.15, peer_label="zstd -3 -T0",
               report_rss=True)
    alternate(put, rounds, lambda i: put_into(work / f"put-big-{i}", i),
              lambda i: zstd_into(work / f"big-{i}.zst", i))
    git = Case("put 1 file (mixed) vs git", "≥ 10x faster", 0.1, peer_label="git hash-object -w")
    repo = work / "git-big"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git.peer.append(removing(repo, timed(["git", "hash-object", "-w", str(big)], cwd=repo)))
    git.ours = put.ours

    store = work / "put-big-0"
    with open(big, "rb") as source:
        digest = hashlib.file_digest(source, "sha256").hexdigest()
    # Two ways to get to a file: '-o' is atomic and synced (the default durability), which
    # zstd -d is not; a shell redirect is neither, like zstd -d. Both verify every byte by
    # zstd's checksums and the hash in the object's header, as zstd -d checks its own
    # checksums; a third row shows the cost of re-hashing with SHA-256 (--verify).
    got, unzstd = work / "got", work / "unzstd"

    def unzstd_run(i: int) -> Run:
        return removing(unzstd, timed(["zstd", "-d", "-q", str(work / "big-0.zst"), "-o", str(unzstd)]))

    get = Case("get 1 file -o FILE (atomic, synced), checksums verified", "≤ 1.3x zstd -d", 1.3,
               peer_label="zstd -d", report_rss=True)
    alternate(get, rounds,
              lambda i: removing(got, timed([PRODUCT.blobctl, "get", digest, "-o", str(got)],
                                            env=store_env(store, work))), unzstd_run)
    redirect = Case("get 1 file > FILE (not synced, as zstd -d), checksums verified", "≤ 1.3x zstd -d",
                    1.3, peer_label="zstd -d", report_rss=True)
    rehashed = Case("get 1 file > FILE, re-hashed (--verify)", "none (for reference)", None,
                    peer_label="zstd -d", report_rss=True)
    for case, extra in [(redirect, []), (rehashed, ["--verify"])]:
        alternate(case, rounds,
                  lambda i, extra=extra: removing(got, timed([PRODUCT.blobctl, "get", digest, *extra], stdout=got,
                                                             env=store_env(store, work))), unzstd_run)
    return [put, git, get, redirect, rehashed]


def bench_small(work: Path, paths_file: Path, count: int, rounds: int) -> Case:
    case = Case(f"put {count:,} files of 4 KiB", "≥ 2x git's files/s", 0.5,
                peer_label="git hash-object -w --stdin-paths", unit="files/s", count=count)

    def git(i: int) -> Run:
        repo = work / f"git-small-{i}"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        return timed(["git", "hash-object", "-w", "--stdin-paths"], cwd=repo, stdin=paths_file)

    alternate(case, rounds,
              lambda i: timed([PRODUCT.blobctl, "put", "--stdin-paths"], stdin=paths_file,
                              env=store_env(work / f"put-small-{i}", work)),
              git)
    return case


def bench_startup(work: Path, small_file: Path, rounds: int) -> list[Case]:
    store = work / "one-object"
    digest = subprocess.run([PRODUCT.blobctl, "put", str(small_file)], env={**os.environ, **store_env(store, work)},
                            capture_output=True, check=True).stdout.decode().strip()
    floor = [PRODUCT.python, "-c", "import typer"]
    version = Case("start-up: blobctl --version", "≤ 1.5x import typer", 1.5,
                   peer_label="python -c 'import typer'")
    get = Case("start-up: get a small object", "≤ 1.5x import typer", 1.5,
               peer_label="python -c 'import typer'")
    for i in range(rounds):
        version.ours.append(timed([PRODUCT.blobctl, "--version"]))
        version.peer.append(timed(floor))
        get.ours.append(timed([PRODUCT.blobctl, "get", digest], env=store_env(store, work)))
        get.peer.append(version.peer[-1])
    return [version, get]


def bench_stat(work: Path, store: Path, rounds: int) -> Case:
    case = Case(f"stat on a store of {count_objects(store):,} objects", "≤ 1.2x empty store", 1.2,
                peer_label="stat on an empty store")
    empty = work / "empty-store"
    empty.mkdir()  # an empty directory: the first stat makes it a store (only put and pull make the directory)
    subprocess.run([PRODUCT.blobctl, "stat"], env={**os.environ, **store_env(empty, work)},
                   capture_output=True, check=True)
    alternate(case, rounds,
              lambda i: timed([PRODUCT.blobctl, "stat"], env=store_env(store, work)),
              lambda i: timed([PRODUCT.blobctl, "stat"], env=store_env(empty, work)))
    return case


def count_objects(store: Path) -> int:
    return sum(len(os.listdir(shard)) for shard in (store / "objects").iterdir())


def version_of(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else "?"


def machine_lines() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import zstandard

    return [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- CPU: {cpu}, {os.cpu_count()} cores; load average at the end: "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- Python {platform.python_version()}, zstandard {zstandard.__version__} "
            f"(libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
            f"- {version_of(['zstd', '--version'])}",
            f"- {version_of(['git', '--version'])}"]


def render(cases: list[Case], args: argparse.Namespace, notes: str) -> str:
    lines = [f"Command: `python bench/run.py{' --quick' if args.quick else ''}` "
             f"({args.rounds} rounds per case, medians; blobctl and peer alternate).", "",
             "| case | blobctl | peer | ratio | target | met? | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for case in cases:
        rss = f"{max(r.peak_kb for r in case.ours) / 1024:.0f} MB (≤ 100 MB: " \
              f"{'yes' if max(r.peak_kb for r in case.ours) <= 100 * 1024 else 'no'})" \
            if case.report_rss else ""
        lines.append(f"| {case.name} | {case.shown(case.ours)} | {case.peer_label}: "
                     f"{case.shown(case.peer)} | {case.shown_ratio()} | {case.target} | "
                     f"{'—' if case.met is None else 'yes' if case.met else '**no**'} | {rss} |")
    lines += ["", "Small files: durability on (default). The disk here is ext4 without a journal, "
              "where syncing is cheap; on a journaling file system the batched syncfs costs more.",
              "", "### Machine", "", *machine_lines(), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


LOCAL_SECTION = "Local: start-up, stat, put and get (bench/run.py)"


def main() -> None:
    global PRODUCT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB / 2,000 files / 20,000 objects, 3 rounds")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, quick 3)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data in bench/work/")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 5)
    big_size, small_count, store_objects = ((256 << 20, 2_000, 20_000) if args.quick
                                            else (1 << 30, 10_000, 100_000))
    work = BENCH_DIR / "work" / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    try:
        print(f"installing blobctl into {work / 'venv'}", file=sys.stderr)
        PRODUCT = install_product(work)
        print(f"generating data in {work}", file=sys.stderr)
        big = work / "mixed.bin"
        write_mixed_file(big, big_size)
        paths_file = work / "small-paths.txt"
        paths_file.write_text("\n".join(write_small_files(work / "small", small_count)) + "\n")
        big_store = work / "stat-store"
        build_store(big_store, store_objects)
        os.sync()  # let the generated data's writeback finish before anything is timed

        cases = []
        print("start-up", file=sys.stderr)
        cases += bench_startup(work, work / "small" / "000" / "f000000", args.rounds * 4)
        print("stat", file=sys.stderr)
        cases.append(bench_stat(work, big_store, args.rounds * 4))
        print("small files", file=sys.stderr)
        cases.append(bench_small(work, paths_file, small_count, args.rounds))
        print("big file", file=sys.stderr)
        cases += bench_big(work, big, args.rounds)
        notes_file = BENCH_DIR / "NOTES.md"
        notes = notes_file.read_text() if notes_file.exists() else ""
        body = render(cases, args, notes)
        write_section(LOCAL_SECTION, body, args.output)
        print(body)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
