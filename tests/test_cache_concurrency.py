"""Several processes at once on one store: gc never takes what a put just stored, a name or
a pin protects, and the statistics counters add up exactly."""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from blobctl import gc, pins
from blobctl.config import Config
from blobctl.errors import NotFoundError
from blobctl.results import Resolved
from blobctl.store import Store
from tests.cache_helpers import backdate, put_bytes

RACE_SECONDS = 3.0


def open_store(store_dir: str) -> Store:
    return Store(Config.load(store_dir))


def content(tag: str, number: int) -> bytes:
    return f"{tag} {number}\n".encode() * 50


def read_back(store_dir: str, digest: str) -> bytes:
    out = bytearray()
    with open_store(store_dir) as store:
        store.read(Resolved(digest), out.extend)
    return bytes(out)


def putter(store_dir: str, deadline: float) -> dict[str, list[str]]:
    """Store content, age it so gc targets it, then put it again (reusing the object), name
    it, or pin it; each must survive. 'Loose' aged objects give gc real work."""
    kept: dict[str, list[str]] = {"reput": [], "named": [], "pinned": [], "loose": []}
    number = 0
    while time.time() < deadline:
        kind = list(kept)[number % 4]
        data = content(f"{os.getpid()} {kind}", number)
        with open_store(store_dir) as store:
            digest = put_bytes(store, data, name=f"names/{number}" if kind == "named" else None)
            if kind == "pinned":
                pins.pin(store, digest, None)
        backdate(Path(store_dir), digest, 5)
        if kind == "reput":
            with open_store(store_dir) as store:
                assert put_bytes(store, data) == digest
            assert read_back(store_dir, digest) == data, "a put's object vanished"
        kept[kind].append(digest)
        number += 1
    return kept


def collector(store_dir: str, deadline: float) -> int:
    """Evict everything evictable, over and over; returns how many objects went."""
    evicted = 0
    while time.time() < deadline:
        with open_store(store_dir) as store:
            evicted += len(gc.execute(store, gc.plan(store, max_size=0)).evicted)
    return evicted


def run_together(*calls) -> list:
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(calls)) as pool:
        pending = [pool.apply_async(function, args) for function, *args in calls]
        return [result.get(timeout=60) for result in pending]


def test_gc_never_takes_a_just_put_named_or_pinned_object(store_dir):
    open_store(str(store_dir)).close()
    deadline = time.time() + RACE_SECONDS + 1.5  # workers need ~1 s to start
    kept, evicted = run_together((putter, str(store_dir), deadline),
                                 (collector, str(store_dir), deadline))
    assert len(kept["reput"]) > 20, "too few rounds to mean anything"
    assert evicted > 0
    for kind in ("reput", "named", "pinned"):
        for digest in kept[kind]:
            with open_store(str(store_dir)) as store:
                assert store.has_object(digest), f"{kind} object {digest} was evicted"
    # the loose ones were fair game: at least some went, and the index agrees with the files
    with open_store(str(store_dir)) as store:
        assert not all(store.has_object(d) for d in kept["loose"])
        assert {row.hash for row in store.index.by_access()} == set(store.iter_objects())


def counting_worker(store_dir: str, worker: int, rounds: int) -> tuple[int, int]:
    """Each round is its own command: a put, a get of it, and a miss. Returns the bytes
    written (stored) and read (original) as the store reported them."""
    written = read = 0
    for number in range(rounds):
        with open_store(store_dir) as store:
            result = store.put_stream(io.BytesIO(content(f"worker {worker}", number) * (number + 1)))
            written += result.stored
        with open_store(store_dir) as store:
            read += store.read(Resolved(result.digest), lambda chunk: None)
        with open_store(store_dir) as store, pytest.raises(NotFoundError):
            store.open_object(f"{worker:02x}" * 32)
    return written, read


def test_counters_are_exact_with_concurrent_processes(store_dir):
    workers, rounds = 3, 15
    open_store(str(store_dir)).close()
    totals = run_together(*[(counting_worker, str(store_dir), w, rounds) for w in range(workers)])
    with open_store(str(store_dir)) as store:
        counters = store.index.counters()
    operations = workers * rounds
    assert counters["objects_written"] == operations
    assert counters["local_hits"] == operations
    assert counters["misses_total"] == operations
    assert counters["bytes_written"] == sum(w for w, _ in totals)
    assert counters["bytes_read"] == sum(r for _, r in totals)
