"""Helpers for tests of put's worker processes: finding them, and telling whether they
still run (Linux /proc)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def worker_processes(parent: int) -> list[int]:
    """The worker processes a put (process `parent`) spawned, not multiprocessing's
    resource tracker."""
    found = subprocess.run(["pgrep", "-P", str(parent), "-f", "spawn_main"], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):  # gone, perhaps while being read
        return False
