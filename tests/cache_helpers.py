"""Helpers for the cache tests: make objects and age them without sleeping."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

HOUR_NS = 3600 * 10**9


def put_bytes(store, data: bytes, name: str | None = None) -> str:
    digest = store.put_stream(io.BytesIO(data)).digest
    if name is not None:
        store.bind(name, digest)
    return digest


def backdate(store_dir: Path, digest: str, hours: float) -> int:
    """Record the object's last access `hours` ago (what gc orders by); returns it in ns."""
    accessed = time.time_ns() - int(hours * HOUR_NS)
    with sqlite3.connect(store_dir / "index.sqlite", timeout=60) as db:
        db.execute("UPDATE objects SET accessed = ? WHERE hash = ?", (accessed, digest))
    return accessed
