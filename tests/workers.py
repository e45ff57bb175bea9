"""Helpers for tests of put's worker processes: finding them, and telling whether they
still run (Linux /proc)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def worker_processes(parent: int) -> list[int]:
    """The worker processes a put (process `parent`) started: spawned ones run
    multiprocessing's spawn_main, forked ones the parent's own command line. Not
    multiprocessing's resource tracker, nor anything else the parent runs."""
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    own = _command_line(parent)
    return [int(child) for child in found.stdout.split()
            if (line := _command_line(int(child))) == own or b"spawn_main" in line]


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone since it was listed
        return b""


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):  # gone, perhaps while being read
        return False
