"""gc's plan and execution, in process: LRU order, every protection, and the re-checks
that keep objects a put, bind or pin touched after planning."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from blobctl import gc, pins
from blobctl.config import Config
from blobctl.errors import NotFoundError
from blobctl.store import Store
from tests.cache_helpers import backdate, put_bytes
from tests.reliability import object_file


def aged_objects(store, store_dir, count: int) -> list[str]:
    """`count` unnamed objects, accessed 10+count .. 11 hours ago (oldest first)."""
    digests = []
    for i in range(count):
        digest = put_bytes(store, f"object {i} ".encode() * 100)
        backdate(store_dir, digest, 10 + count - i)
        digests.append(digest)
    return digests


def reasons(plan) -> dict[str, str]:
    return {kept.digest: kept.reason for kept in plan.kept}


def evicted(plan) -> list[str]:
    return [row.hash for row in plan.evict]


def test_evicts_least_recently_used_first_until_under_the_limit(store, store_dir):
    digests = aged_objects(store, store_dir, 5)
    sizes = [object_file(store_dir, d).stat().st_size for d in digests]
    plan = gc.plan(store, max_size=sum(sizes[3:]))
    assert evicted(plan) == digests[:3]
    assert plan.evict_bytes == sum(sizes[:3])
    assert reasons(plan) == {digests[3]: "not_needed", digests[4]: "not_needed"}


def test_sizes_before_and_after_match_the_store(store, store_dir):
    digests = aged_objects(store, store_dir, 4)
    before = store.index.totals()
    plan = gc.plan(store, max_size=0)
    assert (plan.objects_before, plan.stored_before) == (before.objects, before.stored)
    assert plan.stored_after == 0
    outcome = gc.execute(store, plan)
    assert outcome.evicted == tuple(digests)
    assert (outcome.objects_after, outcome.stored_after) == (0, 0)
    assert outcome.evicted_bytes == before.stored
    assert not any(object_file(store_dir, d).exists() for d in digests)
    assert store._counters["objects_evicted"] == 4
    assert store._counters["bytes_evicted"] == before.stored


def test_no_limit_and_no_age_evicts_nothing(store, store_dir):
    aged_objects(store, store_dir, 3)
    plan = gc.plan(store, max_size=None)
    assert plan.evict == ()
    assert plan.kept_by_reason()["not_needed"][0] == 3


def test_a_name_protects_its_object(store, store_dir):
    old, named = aged_objects(store, store_dir, 2)
    store.bind("data/keep.bin", named)
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [old]
    assert reasons(plan) == {named: "named"}


@pytest.mark.parametrize("ref_name", ["made/by-an-old-build\n", "space in name"])
def test_a_ref_file_whose_name_is_no_longer_valid_still_protects_its_object(store, store_dir, capsys, ref_name):
    """Builds before the name rules were tightened accepted a final newline: the name is
    not usable now (it is reported), but gc must not take its object."""
    old, named, garbage_named = aged_objects(store, store_dir, 3)
    (store_dir / "refs" / ref_name).parent.mkdir(parents=True, exist_ok=True)
    (store_dir / "refs" / ref_name).write_text(named + "\n")
    (store_dir / "refs" / "junk\n").write_text("not a hash\n")
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [old, garbage_named]
    assert reasons(plan) == {named: "named"}
    assert "invalid name" in capsys.readouterr().err
    gc.execute(store, plan)
    assert object_file(store_dir, named).exists()


def test_protection_reads_the_ref_files_not_only_the_index(store, store_dir):
    old, named = aged_objects(store, store_dir, 2)
    (store_dir / "refs" / "handmade").write_text(named + "\n")  # no index mirror row
    assert evicted(gc.plan(store, max_size=0)) == [old]


def test_pins_protect_until_they_expire(store, store_dir):
    forever, later, expired, loose = aged_objects(store, store_dir, 4)
    pins.pin(store, forever, None)
    pins.pin(store, later, 3600)
    (store_dir / "pins" / expired).write_text(str(time.time_ns() - 1))
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [expired, loose]
    assert reasons(plan) == {forever: "pinned", later: "pinned"}


def test_pin_of_an_object_gone_meanwhile_fails_and_leaves_no_pin(store, store_dir):
    """The CLI resolves the key before pin takes the lock: a gc may delete the object
    in between, and the pin must then fail instead of pinning nothing."""
    (digest,) = aged_objects(store, store_dir, 1)
    store.object_path(digest).unlink()
    with pytest.raises(NotFoundError, match="not in the local store"):
        pins.pin(store, digest, None)
    assert not (store_dir / "pins" / digest).exists()


def test_unpin_makes_an_object_evictable_again(store, store_dir):
    (digest,) = aged_objects(store, store_dir, 1)
    pins.pin(store, digest, None)
    assert pins.unpin(store, digest) is True
    assert pins.unpin(store, digest) is False
    assert evicted(gc.plan(store, max_size=0)) == [digest]


def test_objects_accessed_within_the_grace_period_stay(store, store_dir):
    old = aged_objects(store, store_dir, 1)[0]
    fresh = put_bytes(store, b"just put")
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [old]
    assert reasons(plan) == {fresh: "grace"}
    assert plan.grace == 3600.0
    assert evicted(gc.plan(store, max_size=0, grace=0)) == [old, fresh]


def test_older_than_evicts_only_what_was_not_accessed_for_that_long(store, store_dir):
    digests = aged_objects(store, store_dir, 4)  # 14, 13, 12, 11 hours ago
    plan = gc.plan(store, max_size=None, older_than=12.5 * 3600)
    assert evicted(plan) == digests[:2]
    assert set(reasons(plan).values()) == {"not_needed"}


def test_the_first_reason_counts_when_several_apply(store, store_dir):
    fresh = put_bytes(store, b"named, pinned and fresh", name="both")
    pins.pin(store, fresh, None)
    assert reasons(gc.plan(store, max_size=0)) == {fresh: "named"}


@contextmanager
def configured_store(store_dir, config_toml: str):
    """A new store whose config.toml holds `config_toml`."""
    store_dir.mkdir()
    (store_dir / "config.toml").write_text(config_toml)
    with Store(Config.load(str(store_dir))) as opened:
        yield opened


@pytest.fixture
def remotes(tmp_path) -> tuple[Path, Path]:
    """Two empty directory remotes: (team, vendor)."""
    for name in ("team-remote", "vendor-remote"):
        (tmp_path / name).mkdir()
    return tmp_path / "team-remote", tmp_path / "vendor-remote"


@pytest.fixture
def mounted_store(store_dir, remotes):
    """A store with a writable mount at team/ and a read-only one at vendor/."""
    team, vendor = remotes
    with configured_store(store_dir, f'[[mounts]]\nprefix = "team/"\nremote = "{team}"\n\n'
                          f'[[mounts]]\nprefix = "vendor/"\nremote = "{vendor}"\nread_only = true\n') as opened:
        yield opened


def copy_to_remote(store_dir: Path, remote: Path, digest: str) -> None:
    """Give a directory remote a copy of a local object, as a push would."""
    target = remote / "objects" / digest[:2] / digest[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(object_file(store_dir, digest).read_bytes())


def test_names_under_a_writable_mount_protect_only_until_pushed(mounted_store, store_dir, remotes):
    store, (team, _) = mounted_store, remotes
    pushed, unpushed, stale_push, read_only = aged_objects(store, store_dir, 4)
    for name, digest in [("team/pushed", pushed), ("team/unpushed", unpushed),
                         ("team/stale", stale_push), ("vendor/ro", read_only)]:
        store.bind(name, digest, from_remote=name.startswith("vendor/"))  # as pull binds it
    for digest in (pushed, unpushed):
        copy_to_remote(store_dir, team, digest)
    with store.index.transaction():
        store.index.mark_on_remote(str(team), [("pushed", pushed),  # names on the remote
                                               ("stale", unpushed),  # an older version
                                               ("team/unpushed", unpushed)])  # another mount's
        store.index.mark_on_remote("/tmp/elsewhere", [("unpushed", unpushed)])  # not this mount's
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [pushed]
    assert reasons(plan) == {unpushed: "unpushed", stale_push: "unpushed", read_only: "named"}
    outcome = gc.execute(store, plan)  # the re-check under the lock agrees
    assert outcome.evicted == (pushed,) and outcome.changed == 0


def test_a_name_pulled_from_a_read_only_mount_is_a_cache_entry(mounted_store, store_dir, remotes):
    """The remote it came from holds it, so gc may evict it; a get fetches it again."""
    store, (_, vendor) = mounted_store, remotes
    pulled, named = aged_objects(store, store_dir, 2)
    store.bind("vendor/pulled", pulled, from_remote=True)
    store.bind("vendor/local", named, from_remote=True)
    copy_to_remote(store_dir, vendor, pulled)
    with store.index.transaction():
        store.index.mark_on_remote(str(vendor), [("pulled", pulled)])
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [pulled]
    assert reasons(plan) == {named: "named"}


def test_a_name_is_kept_when_its_remote_lost_the_object(mounted_store, store_dir, remotes, capsys):
    """Records are not proof: an object the remote does not have stays (unpushed under a
    writable mount, named under a read-only one), with a warning naming a name, and
    execute drops the wrong records so that a plain push publishes the name again."""
    store, (team, vendor) = mounted_store, remotes
    lost_pushed, lost_pulled = aged_objects(store, store_dir, 2)
    store.bind("team/x", lost_pushed)
    store.bind("vendor/y", lost_pulled, from_remote=True)
    with store.index.transaction():
        store.index.mark_on_remote(str(team), [("x", lost_pushed)])
        store.index.mark_on_remote(str(vendor), [("y", lost_pulled)])
    plan = gc.plan(store, max_size=0)
    assert evicted(plan) == [] and reasons(plan) == {lost_pushed: "unpushed", lost_pulled: "named"}
    warnings = capsys.readouterr().err
    assert "team/x" in warnings and "vendor/y" in warnings and warnings.count("blobctl push") == 1, warnings
    gc.execute(store, plan)
    assert store.index.db.execute("SELECT count(*) FROM remote_refs").fetchone()[0] == 0
    assert [name for name, _ in store.mounted().unpushed(store.config.mounts[0])] == ["team/x"]


def test_a_catch_all_mount_does_not_own_names_under_a_more_specific_one(store_dir):
    """'' is the fallback: team/x belongs to team/, so only team/'s remote counts."""
    with configured_store(store_dir, '[[mounts]]\nprefix = ""\nremote = "/tmp/all-remote"\nread_only = true\n\n'
                          '[[mounts]]\nprefix = "team/"\nremote = "/tmp/team-remote"\n') as store:
        (digest,) = aged_objects(store, store_dir, 1)
        store.bind("team/x", digest)  # allowed: the read-only '' mount does not own it
        assert reasons(gc.plan(store, max_size=0)) == {digest: "unpushed"}


def test_execute_keeps_an_object_put_again_after_planning(store, store_dir):
    (digest,) = aged_objects(store, store_dir, 1)
    plan = gc.plan(store, max_size=0)
    assert put_bytes(store, b"object 0 " * 100) == digest  # reuses it: access refreshed
    outcome = gc.execute(store, plan)
    assert outcome.evicted == () and outcome.changed == 1
    assert object_file(store_dir, digest).is_file()


@pytest.mark.parametrize("protect", [
    lambda store, digest: store.bind("late/name", digest),
    lambda store, digest: pins.pin(store, digest, None),
], ids=["bound", "pinned"])
def test_execute_keeps_an_object_named_or_pinned_after_planning(store, store_dir, protect):
    digests = aged_objects(store, store_dir, 2)
    plan = gc.plan(store, max_size=0)
    protect(store, digests[0])
    outcome = gc.execute(store, plan)
    assert outcome.evicted == (digests[1],) and outcome.changed == 1
    assert object_file(store_dir, digests[0]).is_file()


def test_execute_removes_expired_pins_unless_pinned_again_after_planning(store, store_dir):
    expired, renewed, active = aged_objects(store, store_dir, 3)
    for digest in (expired, renewed):
        (store_dir / "pins" / digest).write_text(str(time.time_ns() - 1))
    pins.pin(store, active, 3600)
    (store_dir / "pins" / "not-a-pin").write_text("")
    plan = gc.plan(store, max_size=None)
    assert sorted(plan.expired_pins) == sorted([expired, renewed])
    pins.pin(store, renewed, 3600)
    outcome = gc.execute(store, plan)
    assert outcome.pins_removed == 1
    assert sorted(os.listdir(store_dir / "pins")) == sorted([renewed, active, "not-a-pin"])


def test_evicted_objects_are_remembered_for_the_miss_counter(store, store_dir):
    (digest,) = aged_objects(store, store_dir, 1)
    gc.execute(store, gc.plan(store, max_size=0))
    assert store.index.was_evicted(digest)


def test_removes_stale_temp_files_and_empty_shards(store, store_dir):
    (digest,) = aged_objects(store, store_dir, 1)
    stale, fresh = store_dir / "tmp" / "old.partial", store_dir / "tmp" / "new.partial"
    stale.write_bytes(b"x" * 10)
    fresh.write_bytes(b"y")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    plan = gc.plan(store, max_size=0)
    assert plan.stale_temps == (stale,) and plan.temp_bytes == 10
    outcome = gc.execute(store, plan)
    assert not stale.exists() and fresh.exists()
    assert outcome.temps_removed == 1 and outcome.shard_dirs_removed == 1
    assert not (store_dir / "objects" / digest[:2]).exists()


def test_removes_the_temp_directories_of_killed_commands_only(store, store_dir):
    """A many-file put keeps its temp files in a directory of its own (see
    locked_temp_dir). Killed, it leaves that directory, with task directories inside:
    gc removes it once stale. A put still running holds its directory's lock: gc leaves
    it, however old, for a file in it may wait long (behind a slow input) or still grow."""
    from blobctl.fsutil import locked_temp_dir

    stale_full, stale_empty, fresh = (store_dir / "tmp" / f"{name}.partial" for name in ("a", "b", "c"))
    for directory in (stale_full, stale_full / "task.partial", stale_empty, fresh):
        directory.mkdir()
    (stale_full / "task.partial" / "x.partial").write_bytes(b"x" * 10)
    (stale_full / "y.partial").write_bytes(b"y" * 5)
    (fresh / "z.partial").write_bytes(b"z")
    two_hours_ago = time.time() - 7200
    with locked_temp_dir(store_dir / "tmp") as running:
        (Path(running) / "waiting.partial").write_bytes(b"w")
        for path in (stale_full / "task.partial" / "x.partial", stale_full / "y.partial", stale_full / "task.partial",
                     stale_full, stale_empty, Path(running) / "waiting.partial", Path(running)):
            os.utime(path, (two_hours_ago, two_hours_ago))
        plan = gc.plan(store, max_size=None)
        assert sorted(plan.stale_temps) == [stale_full / "task.partial" / "x.partial", stale_full / "y.partial"]
        assert plan.temp_bytes == 15 and sorted(plan.stale_temp_dirs) == [stale_full, stale_empty]
        outcome = gc.execute(store, plan)
        assert outcome.temps_removed == 2
        assert sorted(p.name for p in (store_dir / "tmp").iterdir() if p.name != "journal") == \
            sorted(["c.partial", Path(running).name])
        assert (Path(running) / "waiting.partial").exists() and (fresh / "z.partial").exists()
    assert not Path(running).exists()  # the put's own end removes it


def test_never_follows_a_symlinked_object(store, store_dir, tmp_path):
    (digest,) = aged_objects(store, store_dir, 1)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    object_file(store_dir, digest).unlink()
    object_file(store_dir, digest).symlink_to(outside)
    gc.execute(store, gc.plan(store, max_size=0))
    assert outside.read_bytes() == b"precious"


def test_auto_trim_never_evicts_what_its_own_command_stored(store_dir):
    """Even with gc_grace 0 and a new object larger than max_size: the put that stored it
    prints its hash, so it must still be there afterwards."""
    with configured_store(store_dir, 'max_size = "10 kB"\ngc_grace = "0s"\n') as store:
        older = [put_bytes(store, os.urandom(1000)) for _ in range(3)]
        for digest in older:
            backdate(store_dir, digest, 20)
        new = put_bytes(store, os.urandom(12_000))
        outcome = gc.auto_trim(store)
        assert set(outcome.evicted) == set(older) and object_file(store_dir, new).is_file()


def test_auto_trim_waits_for_max_size_then_trims_to_the_low_water_mark(store_dir):
    with configured_store(store_dir, 'max_size = "10 kB"\n') as store:
        digests = [put_bytes(store, os.urandom(1000)) for _ in range(9)]
        for position, digest in enumerate(digests):
            backdate(store_dir, digest, 20 - position)
        assert gc.auto_trim(store) is None  # ~9 kB: under the limit, no plan made
        digests.append(put_bytes(store, os.urandom(2000)))
        outcome = gc.auto_trim(store)
        assert outcome.evicted == tuple(digests[:3])
        assert outcome.stored_after <= 10_000 * gc.LOW_WATER


def test_over_several_rounds_each_mount_is_warned_of_once_and_an_unreachable_one_asked_once(
        store_dir, tmp_path, capsys, monkeypatch):
    """A limit that a few evictions meet makes plan() ask the remote round after round
    (each round picks the next oldest names once the last ones proved unconfirmed): one
    warning per mount with the total, and a mount that failed is not asked again (each
    failure costs remote_timeout x (remote_retries + 1): minutes, offline)."""
    lost_remote, gone_remote = tmp_path / "lost-remote", tmp_path / "not-mounted"
    lost_remote.mkdir()
    with configured_store(store_dir, f'[[mounts]]\nprefix = "team/"\nremote = "{lost_remote}"\n\n'
                          f'[[mounts]]\nprefix = "usb/"\nremote = "{gone_remote}"\n') as store:
        digests = aged_objects(store, store_dir, 20)
        for number, digest in enumerate(digests):
            store.bind(f"team/{number}" if number % 2 else f"usb/{number}", digest)
        with store.index.transaction():
            store.index.mark_on_remote(str(lost_remote), [(str(n), d) for n, d in enumerate(digests) if n % 2])
            store.index.mark_on_remote(str(gone_remote), [(str(n), d) for n, d in enumerate(digests) if not n % 2])
        asked = []
        real_exists = type(store.mounted().backend(store.config.mounts[1])).exists
        monkeypatch.setattr(type(store.mounted().backend(store.config.mounts[1])), "exists",
                            lambda self, key: asked.append(self.url) or real_exists(self, key))
        total = store.index.totals().stored
        plan = gc.plan(store, max_size=total - 1)  # one object at a time would do
        assert evicted(plan) == [] and set(reasons(plan).values()) == {"unpushed"}
        warnings = capsys.readouterr().err.strip().splitlines()
        assert len(warnings) == 2, warnings
        assert "lacks: 10 objects" in warnings[0] and "cannot confirm" in warnings[1], warnings
        assert sum(str(gone_remote) in url for url in asked) == 1, asked
        assert len(plan.disproved) == 10
