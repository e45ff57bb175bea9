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
from pathlib import Path

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
