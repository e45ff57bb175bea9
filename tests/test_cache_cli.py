"""gc, pin, unpin, automatic gc and stat through the real command."""

from __future__ import annotations

import io
import json
import os
import re
import time

import pytest

from tests.cache_helpers import backdate
from tests.reliability import object_file


@pytest.fixture
def put(blobctl, tmp_path):
    """Put distinct content through the CLI; returns its hash."""
    counter = iter(range(10**6))

    def run(*options: str, size: int = 1000) -> str:
        path = tmp_path / f"input-{next(counter)}"
        path.write_bytes(os.urandom(size))
        return blobctl("put", *options, path, check=True).text.strip()

    return run


def gc_json(blobctl, *args: str) -> dict:
    result = blobctl("gc", "--json", *args)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_gc_table_shows_the_plan_and_evicts(blobctl, put, store_dir):
    old, named = put(), put("--name", "keep")
    backdate(store_dir, old, 5)
    stale = store_dir / "tmp" / "abc.partial"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    result = blobctl("gc", "--max-size", "0")
    assert result.code == 0, result.err
    rows = {label: cells for label, *cells in
            (re.split(r"\s{2,}", line) for line in result.text.splitlines()[1:])}
    assert rows["before"] == ["2", "2.0 kB"]
    assert rows["evict"] == ["1", "1.0 kB"]
    assert rows["kept: named"] == ["1", "1.0 kB"]
    assert rows["after"] == ["1", "1.0 kB"]
    assert "evicted 1 object (" in result.err and "removed 1 stale temp file;" in result.err
    assert not object_file(store_dir, old).exists()
    assert object_file(store_dir, named).exists()


def test_gc_json_fields(blobctl, put, store_dir):
    old, fresh = put(), put()
    pinned = put()
    blobctl("pin", pinned, check=True)
    backdate(store_dir, old, 5)
    backdate(store_dir, pinned, 5)
    report = gc_json(blobctl, "--max-size", "0")
    assert report["dry_run"] is False and report["max_size"] == 0 and report["grace"] == 3600.0
    assert report["before"]["objects"] == 3
    assert report["evict"]["objects"] == 1 and report["evict"]["hashes"] == [old]
    assert report["evict"]["stored"] == report["executed"]["stored"] > 1000
    assert {r: v["objects"] for r, v in report["kept"].items()} == {
        "named": 0, "pinned": 1, "unpushed": 0, "grace": 1, "not_needed": 0}
    assert report["after"] == {"objects": 2, "stored": report["before"]["stored"] - report["evict"]["stored"]}
    assert report["executed"]["evicted"] == 1 and report["executed"]["changed"] == 0
    assert report["temp_files"] == {"files": 0, "stored": 0}
    assert object_file(store_dir, fresh).exists() and object_file(store_dir, pinned).exists()


def test_dry_run_deletes_nothing(blobctl, put, store_dir, tmp_path):
    old = put()
    backdate(store_dir, old, 5)
    stale = store_dir / "tmp" / "abc.partial"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    report = gc_json(blobctl, "--max-size", "0", "--dry-run")
    assert report["dry_run"] is True and report["executed"] is None
    assert report["evict"]["hashes"] == [old] and report["temp_files"]["files"] == 1
    assert object_file(store_dir, old).exists() and stale.exists()
    assert "dry run" in blobctl("gc", "--max-size", "0", "--dry-run").text


def test_grace_zero_and_older_than(blobctl, put, store_dir):
    month_old, fresh = put(), put()
    backdate(store_dir, month_old, 31 * 24)
    assert gc_json(blobctl, "--older-than", "30d")["evict"]["hashes"] == [month_old]
    assert gc_json(blobctl, "--max-size", "0")["evict"]["hashes"] == []
    assert gc_json(blobctl, "--max-size", "0", "--grace", "0")["evict"]["hashes"] == [fresh]


def test_gc_uses_config_max_size(blobctl, put, store_dir):
    digests = [put() for _ in range(3)]
    for age, digest in zip((9, 8, 7), digests):
        backdate(store_dir, digest, age)
    blobctl("config", "set", "auto_gc", "false", check=True)
    blobctl("config", "set", "max_size", "2100", check=True)
    assert gc_json(blobctl)["evict"]["hashes"] == digests[:1]


def test_max_size_none_lifts_the_configured_limit_for_one_run(blobctl, put, store_dir):
    old = put()
    backdate(store_dir, old, 5)
    blobctl("config", "set", "max_size", "0", check=True)
    for word in ("none", "unlimited"):
        report = gc_json(blobctl, "--max-size", word)
        assert report["max_size"] is None and report["evict"]["hashes"] == []
    assert object_file(store_dir, old).exists()
    assert gc_json(blobctl, "--max-size", "none", "--older-than", "1h")["evict"]["hashes"] == [old]


def test_pin_unpin_and_ttl(blobctl, put, store_dir):
    forever, short = put(), put("--name", "short-lived")
    assert blobctl("pin", forever[:12]).code == 0
    result = blobctl("pin", "short-lived", "--ttl", "1h59m")
    assert result.code == 0 and "for 1h59m" in result.err
    blobctl("rm", "short-lived", check=True)
    expiry = int((store_dir / "pins" / short).read_text())
    for digest in (forever, short):
        backdate(store_dir, digest, 5)
    assert gc_json(blobctl, "--max-size", "0", "--dry-run")["kept"]["pinned"]["objects"] == 2
    (store_dir / "pins" / short).write_text(str(expiry - 2 * 3600 * 10**9))  # now expired
    assert gc_json(blobctl, "--max-size", "0", "--dry-run")["evict"]["hashes"] == [short]
    assert blobctl("unpin", forever).code == 0
    assert "was not pinned" in blobctl("unpin", forever).err
    assert gc_json(blobctl, "--max-size", "0")["executed"]["evicted"] == 2


def test_pinning_again_never_shortens_a_pin(blobctl, put, store_dir):
    forever, timed = put(), put()
    pin_file = store_dir / "pins" / timed
    blobctl("pin", forever, check=True)
    result = blobctl("pin", forever, "--ttl", "0.1s")
    assert result.code == 0 and "stays pinned until unpinned" in result.err
    blobctl("pin", timed, "--ttl", "2h", check=True)
    expiry = int(pin_file.read_text())
    result = blobctl("pin", timed, "--ttl", "1h")
    assert result.code == 0 and "stays pinned" in result.err and "never shortened" in result.err
    assert int(pin_file.read_text()) == expiry
    time.sleep(0.2)  # the 0.1s pin would have expired by now
    assert gc_json(blobctl, "--max-size", "0", "--grace", "0")["executed"]["evicted"] == 0
    assert object_file(store_dir, forever).exists()
    assert "for 3h" in blobctl("pin", timed, "--ttl", "3h", check=True).err  # longer: extended
    assert int(pin_file.read_text()) > expiry
    assert "until unpinned" in blobctl("pin", timed, check=True).err
    assert pin_file.read_bytes() == b""
    pin_file.write_text("damaged")  # read as forever, with a warning that says to re-pin
    blobctl("pin", timed, "--ttl", "1h", check=True)
    assert int(pin_file.read_text()) > time.time_ns()


def test_gc_removes_expired_pins_but_not_with_dry_run(blobctl, put, store_dir):
    forever, later, expired = put(), put(), put()
    blobctl("pin", forever, check=True)
    for digest in (later, expired):
        blobctl("pin", digest, "--ttl", "1h", check=True)
    (store_dir / "pins" / expired).write_text(str(time.time_ns() - 1))
    blobctl("gc", "--dry-run", check=True)
    assert (store_dir / "pins" / expired).exists()
    result = blobctl("gc", check=True)  # no size limit: nothing to evict, the pin goes all the same
    assert "removed 1 expired pin;" in result.err
    assert sorted(os.listdir(store_dir / "pins")) == sorted([forever, later])
    assert all(object_file(store_dir, d).exists() for d in (forever, later, expired))
    assert gc_json(blobctl)["executed"]["expired_pins_removed"] == 0


def test_stat_key_shows_the_pin(blobctl, put, store_dir):
    forever, timed, expired, loose = put(), put(), put(), put()
    blobctl("pin", forever, check=True)
    blobctl("pin", timed, "--ttl", "2d", check=True)
    expiry = int((store_dir / "pins" / timed).read_text())
    blobctl("pin", expired, "--ttl", "1h", check=True)
    (store_dir / "pins" / expired).write_text(str(time.time_ns() - 1))
    infos = json.loads(blobctl("stat", "--json", forever, timed, expired, loose, check=True).out)
    assert [(i["pinned"], i["pin_expires_ns"]) for i in infos] == [
        (True, None), (True, expiry), (False, None), (False, None)]
    lines = blobctl("stat", forever, timed, expired, loose, check=True).text.splitlines()
    assert lines[0].split()[-1] == "pinned"
    assert [re.split(r"\s{2,}", line)[-1] for line in lines[1:]] == ["forever", "1d left", "-", "-"]


def test_pin_errors(blobctl, store_dir):
    store_dir.mkdir()
    assert blobctl("pin", "no-such-name").code == 3
    assert blobctl("pin", "0" * 64, "--ttl", "soon").code == 2
    missing = blobctl("pin", "0" * 64)
    assert missing.code == 3 and "is not in the local store" in missing.err
    assert blobctl("gc", "--max-size", "lots").code == 2


def test_pin_ttl_must_be_more_than_zero(blobctl, put, store_dir):
    digest = put()
    for ttl in ("0", "0s", "0.0h"):
        result = blobctl("pin", digest, "--ttl", ttl)
        assert result.code == 2, result.err
        assert result.err.count("\n") == 1 and "more than 0" in result.err
    assert not (store_dir / "pins" / digest).exists()
    assert blobctl("pin", digest, "--ttl", "0.5s").code == 0


def test_automatic_gc_on_put(blobctl, put, store_dir):
    blobctl("config", "set", "max_size", "5 kB", check=True)
    digests = [put() for _ in range(4)]
    for age, digest in zip((9, 8, 7, 6), digests):
        backdate(store_dir, digest, age)
    result = blobctl("put", "-", input=os.urandom(1500))
    assert result.code == 0 and "automatic gc: evicted 2 objects" in result.err
    assert [object_file(store_dir, d).exists() for d in digests] == [False, False, True, True]
    blobctl("config", "set", "auto_gc", "false", check=True)
    assert "automatic gc" not in blobctl("put", "-", input=os.urandom(3000)).err


def test_stat_counts_evictions_and_evicted_misses_and_zero_resets(blobctl, put, store_dir):
    old = put()
    backdate(store_dir, old, 5)
    blobctl("gc", "--max-size", "0", check=True)
    assert blobctl("get", old).code == 3
    counters = json.loads(blobctl("stat", "--json").out)["counters"]
    assert counters["objects_evicted"] == 1 and counters["bytes_evicted"] > 1000
    assert counters["evicted_misses"] == 1 and counters["misses_total"] == 1
    assert blobctl("stat", "--zero").code == 0
    counters = json.loads(blobctl("stat", "--json").out)["counters"]
    assert set(counters.values()) == {0}


def test_summary_reads_totals_without_walking_the_tree(store, monkeypatch):
    store.put_stream(io.BytesIO(b"content"))

    def no_walk(*args, **kwargs):
        raise AssertionError("stat walked the store")

    monkeypatch.setattr(os, "walk", no_walk)
    monkeypatch.setattr(os, "scandir", no_walk)
    monkeypatch.setattr(os, "listdir", no_walk)
    assert store.summary().objects == 1
