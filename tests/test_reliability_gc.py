"""gc against everything else (scenarios 2, 10 and 13): a put that reuses an object gc is
deleting, symlinks gc must not follow, and least-recently-used order."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import time

from blobctl import gc
from blobctl.config import Config
from blobctl.store import Store
from tests.reliability import object_file, report, run_in

RACE_SECONDS = 12
SHARED = b"the object every round puts again" * 500


def open_store(store_dir: str) -> Store:
    return Store(Config.load(store_dir))


def reputter(store_dir: str, deadline: float) -> tuple[int, int]:
    """Put SHARED again under a new name each round, read it back through the name, then
    drop the name so gc may take the object. Rounds alternate between a stream and a file
    (which a put only hashes when its object is stored). Returns (rounds, rounds that
    re-created it)."""
    rounds = recreated = 0
    source = os.path.join(store_dir, "..", "shared-source")
    with open(source, "wb") as file:
        file.write(SHARED)
    while time.time() < deadline:
        name = f"round/{rounds}"
        with open_store(store_dir) as store:
            if rounds % 2:
                result = store.put_path(source, name=name)
            else:
                result = store.put_stream(io.BytesIO(SHARED), name=name)
        out = bytearray()
        with open_store(store_dir) as store:
            store.read(store.resolve(name), out.extend)
        assert bytes(out) == SHARED, f"put of round {rounds} succeeded but reads back wrong"
        with open_store(store_dir) as store:
            store.remove(name)
        rounds += 1
        recreated += result.created
    return rounds, recreated


def collector(store_dir: str, deadline: float) -> tuple[int, int]:
    """`gc --max-size 0 --grace 0` over and over; returns (runs, objects evicted)."""
    runs = evicted = 0
    while time.time() < deadline:
        with open_store(store_dir) as store:
            evicted += len(gc.execute(store, gc.plan(store, max_size=0, grace=0)).evicted)
        runs += 1
    return runs, evicted


def test_put_that_reuses_an_object_survives_gc(store_dir, monkeypatch):
    """Both race windows are widened by the test delay hooks (blobctl/racehooks.py): a put
    waits between encoding and publishing, gc between planning and deleting."""
    open_store(str(store_dir)).close()
    monkeypatch.setenv("BLOBCTL_TEST_DELAY_PUBLISH", "0.01")
    monkeypatch.setenv("BLOBCTL_TEST_DELAY_GC_EXECUTE", "0.01")
    deadline = time.time() + RACE_SECONDS + 1.5
    context = multiprocessing.get_context("spawn")  # children read the delays at import
    with context.Pool(2) as pool:
        puts = pool.apply_async(reputter, (str(store_dir), deadline))
        gcs = pool.apply_async(collector, (str(store_dir), deadline))
        (rounds, recreated), (runs, evicted) = puts.get(timeout=120), gcs.get(timeout=120)
    assert rounds > 20 and runs > 20 and 0 < recreated < rounds
    with open_store(str(store_dir)) as store:
        assert {row.hash for row in store.index.by_access()} == set(store.iter_objects())
    report(2, "put-dedup vs gc",
           f"{rounds} named puts of an existing object against {runs} gc runs (grace 0, max 0, "
           f"delay hooks 10 ms): {recreated} re-created after eviction, {rounds - recreated} reused; "
           f"every one read back; {evicted} evictions; index matches files")


def test_gc_never_deletes_outside_the_store(tmp_path):
    """A shard and an object replaced by symlinks to files outside: gc evicts everything
    it may, and the files outside are all still there."""
    store = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    digests = [run_in(store, "put", "-", input=f"victim {i}".encode() * 100).text.strip() for i in range(3)]
    shard = object_file(store, digests[0]).parent
    shutil.move(shard, outside / "shard")
    shard.symlink_to(outside / "shard")
    path = object_file(store, digests[1])
    shutil.move(path, outside / "object")
    path.symlink_to(outside / "object")
    before = sorted(str(p) for p in outside.rglob("*"))
    result = run_in(store, "gc", "--max-size", "0", "--grace", "0", "--json")
    assert result.code == 0 and "Traceback" not in result.err
    assert sorted(str(p) for p in outside.rglob("*")) == before
    assert not object_file(store, digests[2]).exists()
    report(10, "symlinks in the store (gc)",
           f"gc --max-size 0 with a symlinked shard and object: {len(before)} files outside "
           "untouched, the real object evicted")


def test_lru_keeps_the_recently_read_object(tmp_path):
    """Fill to max_size, read A (the oldest), add more, gc: A stays, the oldest unread go."""
    store = tmp_path / "store"
    size = 100_000
    assert run_in(store, "config", "set", "max_size", str(10 * size + 5000)).code == 0
    first = [run_in(store, "put", "-", input=os.urandom(size)).text.strip() for _ in range(10)]
    assert run_in(store, "get", first[0]).code == 0
    later = [run_in(store, "put", "-", input=os.urandom(size)).text.strip() for _ in range(5)]
    assert run_in(store, "gc", "--grace", "0").code == 0
    present = {d for d in first + later if object_file(store, d).exists()}
    assert first[0] in present and set(later) <= present
    assert present.isdisjoint(first[1:6]) and set(first[6:]) <= present
    report(13, "LRU correctness",
           f"15 x 100 kB into a 1 MB store, oldest read once: gc evicted {len(first + later) - len(present)} "
           "(the 5 oldest unread), the read one survived")
