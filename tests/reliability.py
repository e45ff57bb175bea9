"""Shared pieces of the reliability scenarios (tests/test_reliability_*.py).

Each scenario reports its figures with `report()`; the conftest prints them all in a
"reliability figures" section at the end of the pytest run, so the README test command's
output carries them.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Result, blobctl_executable

FIGURES: list[str] = []


def report(number: int, name: str, figures: str) -> None:
    """Record one scenario's figures: 'RELIABILITY <#> <name>: <figures>'."""
    FIGURES.append(f"RELIABILITY {number} {name}: {figures}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def log_uniform_sizes(rng: random.Random, count: int, low: int, high: int) -> list[int]:
    """Sizes spread evenly over orders of magnitude: many small objects, a few large."""
    return [int(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(count)]


def run_in(store: Path, *args, input: bytes | None = None, env: dict | None = None,
           timeout: float = 120) -> Result:
    """`blobctl --store STORE ARGS...` in a subprocess."""
    proc = subprocess.run(blobctl_executable() + ["--store", str(store), *map(str, args)],
                          input=input, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def popen_in(store: Path, *args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`blobctl --store STORE ARGS...` started in the background; output is captured in
    pipes unless `kwargs` redirect it (a caller that waits first must redirect to files)."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | kwargs
    return subprocess.Popen(blobctl_executable() + ["--store", str(store), *map(str, args)],
                            env={**os.environ, **(env or {})}, **streams)


def object_file(store: Path, digest: str) -> Path:
    return store / "objects" / digest[:2] / digest[2:]


def leftover_temp_files(store: Path) -> list[Path]:
    """What is left in tmp/: temp files, journals and task directories (see
    WorkerProcesses), not the journal directory blobctl keeps there."""
    return [path for path in (store / "tmp").rglob("*") if path != store / "tmp" / "journal"]


@contextmanager
def mounted(*args: str, at: Path) -> Iterator[Path]:
    """`mount ARGS... AT` for one test, unmounted after it. Mounting needs root: without
    it the test is skipped, and under CI it fails."""
    at.mkdir(exist_ok=True)
    done = subprocess.run(["mount", *args, str(at)], capture_output=True, text=True)
    if done.returncode:
        why = f"cannot mount {' '.join(args)} at {at}: {done.stderr.strip()} (needs root)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    try:
        yield at
    finally:
        subprocess.run(["umount", "--lazy", str(at)], check=True)


@contextmanager
def read_only_view(source: Path, at: Path) -> Iterator[Path]:
    """`source` bind-mounted read-only at `at`: a store this user may only read."""
    with mounted("--bind", str(source), at=at):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(at)], check=True)
        yield at
