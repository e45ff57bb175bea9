"""Reliability under load: many writers at once (scenario 1), readers while objects are
deleted under them (scenario 3)."""

from __future__ import annotations

import json
import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blobctl import codec
from blobctl.config import Config
from blobctl.store import Store
from tests.reliability import (leftover_temp_files, log_uniform_sizes, popen_in, report,
                               run_in, sha)

WRITERS = 4
PER_WRITER = 2000  # half of them shared by every writer
MIN_SIZE, MAX_SIZE = 1 << 10, 4 << 20


def write_inputs(directory, rng: random.Random, label: str, count: int) -> dict:
    """`count` files of log-uniform random sizes; returns {path: hash}."""
    made = {}
    for i, size in enumerate(log_uniform_sizes(rng, count, MIN_SIZE, MAX_SIZE)):
        data = rng.randbytes(size)
        path = directory / f"{label}-{i}"
        path.write_bytes(data)
        made[str(path)] = sha(data)
    return made


def verify_every_object(store_dir) -> tuple[set[str], int]:
    """Decode every object file against its name; returns (hashes, total original size)."""
    found, total = set(), 0
    with Store(Config.load(str(store_dir))) as store:
        for digest in store.iter_objects():
            with store.open_local(digest) as handle:
                total += codec.decode(handle, lambda chunk: None, digest, label=digest)
            found.add(digest)
    return found, total


def test_commands_started_at_once_on_a_new_store_all_succeed(tmp_path):
    """The first commands on a store directory create it together: none may take the
    others' half-made layout for a foreign directory (3 of 6 did)."""
    for attempt in range(3):
        store = tmp_path / f"new-{attempt}"
        contents = [b"content %d" % i for i in range(6)]
        procs = [popen_in(store, "put", "-", stdin=subprocess.PIPE) for _ in contents]
        outcomes = [proc.communicate(data, timeout=60) for proc, data in zip(procs, contents)]
        assert [proc.returncode for proc in procs] == [0] * 6, [err for _, err in outcomes]
        assert sorted(out.decode().strip() for out, _ in outcomes) == sorted(map(sha, contents))


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(tmp_path):
    rng = random.Random(1)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shared = write_inputs(inputs, rng, "shared", PER_WRITER // 2)
    own = [write_inputs(inputs, rng, f"own{w}", PER_WRITER // 2) for w in range(WRITERS)]
    expected = {**shared, **{p: d for files in own for p, d in files.items()}}
    sizes = {d: (inputs / p).stat().st_size for p, d in expected.items()}
    store_dir = tmp_path / "store"
    run_in(store_dir, "stat")  # create the store once, so writers race on objects only

    writers = []
    for number, files in enumerate(own):
        paths = list(shared) + list(files)
        rng.shuffle(paths)
        listing = tmp_path / f"writer{number}.paths"
        listing.write_text("\n".join(paths))
        writers.append((listing, paths))
    started = time.monotonic()
    procs = []
    for listing, _ in writers:
        with open(listing, "rb") as stdin, open(listing.with_suffix(".out"), "wb") as out, \
                open(listing.with_suffix(".err"), "wb") as err:
            procs.append(popen_in(store_dir, "put", "--stdin-paths", stdin=stdin, stdout=out, stderr=err))
    codes = [proc.wait(timeout=900) for proc in procs]
    elapsed = time.monotonic() - started
    put_bytes = sum(sizes[expected[p]] for _, paths in writers for p in paths)

    for code, (listing, paths) in zip(codes, writers):
        assert code == 0, listing.with_suffix(".err").read_text()
        printed = dict(reversed(line.split("  ", 1)) for line in listing.with_suffix(".out").read_text().splitlines())
        assert printed == {p: expected[p] for p in paths}
    found, total = verify_every_object(store_dir)
    assert found == set(sizes)
    assert total == sum(sizes.values())
    check = run_in(store_dir, "fsck", "--json")
    assert check.code == 0 and json.loads(check.out)["clean"], check.out
    summary = json.loads(run_in(store_dir, "stat", "--json").out)
    assert (summary["objects"], summary["size"]) == (len(sizes), total)
    assert leftover_temp_files(store_dir) == []
    report(1, "concurrent writers",
           f"{WRITERS} processes x {PER_WRITER} puts, {len(sizes)} distinct objects, "
           f"{total / 1e9:.2f} GB distinct, {put_bytes / 1e9:.2f} GB put at {put_bytes / elapsed / 1e6:.0f} MB/s, "
           f"{elapsed:.1f} s; all exit 0, fsck clean, every object verified, totals match, 0 temp files")


def test_readers_during_eviction_get_whole_objects_or_not_found(tmp_path):
    """Readers stream random keys while gc evicts objects under them, shrinking the store
    step by step to nothing: every read is the exact bytes with exit 0, or exit 3 with no
    output; never a partial object with exit 0."""
    rng = random.Random(3)
    store_dir = tmp_path / "store"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    objects = write_inputs(inputs, rng, "obj", 60)
    big = inputs / "big"  # over VERIFY_BEFORE_EMIT_SIZE: streamed while it is read
    big.write_bytes(rng.randbytes(24 << 20))
    objects[str(big)] = sha(big.read_bytes())
    assert run_in(store_dir, "put", "--stdin-paths", input="\n".join(objects).encode()).code == 0
    content = {digest: Path(path).read_bytes() for path, digest in objects.items()}
    victims = sorted(content)
    stored = json.loads(run_in(store_dir, "stat", "--json").out)["stored"]

    outcomes = {"whole": 0, "not found": 0}

    def reader(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(30):
            digest = local.choice(victims)
            result = run_in(store_dir, "get", digest)
            if result.code == 0:
                assert result.out == content[digest]
                outcomes["whole"] += 1
            else:
                assert result.code == 3 and result.out == b"", result.err
                outcomes["not found"] += 1

    with ThreadPoolExecutor(max_workers=3) as pool:
        readers = [pool.submit(reader, seed) for seed in (1, 2)]
        evicted = 0
        for step in range(7, -1, -1):
            time.sleep(0.5)
            result = run_in(store_dir, "gc", "--json", "--grace", "0", "--max-size", str(stored * step // 8))
            assert result.code == 0, result.err
            evicted += json.loads(result.out)["executed"]["evicted"]
        for future in readers:
            future.result()
    assert evicted == len(victims) and outcomes["whole"] and outcomes["not found"]
    report(3, "read vs eviction",
           f"{sum(outcomes.values())} reads of {len(victims)} objects that 8 gc runs evicted meanwhile: "
           f"{outcomes['whole']} whole and verified, {outcomes['not found']} exit 3 with no output, "
           "0 partial reads with exit 0")
