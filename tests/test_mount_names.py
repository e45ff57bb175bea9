"""End-to-end: which mount a name belongs to, and what pull, push and gc may do to a
local name given what each remote is known to hold. Directory remotes: the rules are the
overlay's, the same for every remote kind (test_backend_contract covers the kinds)."""

import json
import os
from pathlib import Path

import pytest

from tests.reliability import sha
from tests.test_mounts import store_runner

EXIT_FAILURE, EXIT_USAGE = 1, 2


@pytest.fixture
def remotes(tmp_path):
    """A function making empty directory remotes under tmp_path."""
    def make(name: str) -> str:
        path = tmp_path / name
        path.mkdir()
        return str(path)
    return make


@pytest.fixture
def team(blobctl, tmp_path, remotes):
    """team(STORE): a runner for a fresh store with `team` mounted at one shared
    directory remote (team.remote), as each member of a team would have it."""
    def member(store: str):
        run = store_runner(blobctl, tmp_path / store, {})
        run("mount", "team", member.remote, check=True)
        return run
    member.remote = remotes("shared")
    member.store_dir = lambda store: tmp_path / store
    return member


def publish(run, contents: dict[str, bytes]) -> None:
    """Put each name's content in the store `run` works on, then push."""
    for name, content in contents.items():
        run("put", "--name", name, "-", input=content, check=True)
    run("push", check=True)


def evict_everything(run) -> list[str]:
    """gc with no grace and no size allowance: what it evicted."""
    return json.loads(run("gc", "--max-size", "0", "--grace", "0s", "--json", check=True).out)["evict"]["hashes"]


def test_pull_keeps_a_local_name_that_is_not_pushed_yet(team):
    alice, bob = team("alice"), team("bob")
    alice("put", "--name", "team/x", "-", input=b"v1", check=True)
    alice("put", "--name", "team/other", "-", input=b"other", check=True)
    alice("push", check=True)
    bob("put", "--name", "team/x", "-", input=b"v2 from bob", check=True)
    bob("push", check=True)
    alice("put", "--name", "team/x", "-", input=b"v3, alice's edit", check=True)  # not pushed

    pulled = alice("pull", "team/", "--json")
    assert pulled.code == EXIT_FAILURE
    assert "kept local name 'team/x'" in pulled.err and "push it first" in pulled.err
    assert "pull did not bind 1 remote name(s): team/x" in pulled.err
    assert json.loads(pulled.out)[0]["target"] == "team/"  # what was pulled, though it failed
    assert alice("get", "team/x", check=True).out == b"v3, alice's edit"
    assert alice("get", "team/other", check=True).out == b"other"
    evicted = evict_everything(alice)  # v1 and "other" are on the remote, v2 unnamed here
    assert sha(b"v1") in evicted and sha(b"v3, alice's edit") not in evicted
    assert alice("get", "team/x", check=True).out == b"v3, alice's edit"

    # pulling the key alone says the same, and marks nothing as pushed
    pulled = alice("pull", "team/x")
    assert pulled.code == EXIT_FAILURE and "kept local name 'team/x'" in pulled.err, pulled.err
    assert alice("get", "team/x", check=True).out == b"v3, alice's edit"
    assert json.loads(alice("mount", "--json").out)[0]["unpushed"] == 1


def newer_value_pushed_after_a_pull(team):
    """alice pushes team/x = v1, bob pulls it, alice pushes v2: (alice, bob)."""
    alice, bob = team("alice"), team("bob")
    alice("put", "--name", "team/x", "-", input=b"v1", check=True)
    alice("push", check=True)
    bob("pull", "team/", check=True)
    alice("put", "--name", "team/x", "-", input=b"v2", check=True)
    alice("push", check=True)
    return alice, bob


def test_pull_replaces_a_local_name_the_remote_already_holds(team):
    _, bob = newer_value_pushed_after_a_pull(team)
    report = json.loads(bob("pull", "team/", "--json", check=True).out)
    assert report[0]["names"] == 1
    assert bob("get", "team/x", check=True).out == b"v2"


def test_pull_of_one_key_takes_the_value_another_store_pushed_since(team):
    """Over plain HTTP a key is all a pull can take: it must refresh a name this store
    pulled (or pushed) as `pull team/` does, not report it 'already local' and keep the
    old value; an unpushed local value still stays, with the warning a prefix pull
    gives."""
    _, bob = newer_value_pushed_after_a_pull(team)
    report = json.loads(bob("pull", "team/x", "--json", check=True).out)
    assert report[0]["names"] == 1 and report[0]["fetched"] == 1
    assert bob("get", "team/x", check=True).out == b"v2"
    assert json.loads(bob("mount", "--json").out)[0]["unpushed"] == 0

    bob("put", "--name", "team/x", "-", input=b"bob's edit", check=True)  # not pushed
    kept = bob("pull", "team/x")
    assert kept.code == EXIT_FAILURE and "kept local name 'team/x'" in kept.err, kept.err
    assert bob("get", "team/x", check=True).out == b"bob's edit"
    assert json.loads(bob("mount", "--json").out)[0]["unpushed"] == 1


def test_mounting_another_remote_makes_names_unpushed_again(blobctl, tmp_path, remotes):
    first, second = remotes("first"), remotes("second")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "team", first, check=True)
    publish(run, {"team/doc": b"the only copy"})
    run("umount", "team", check=True)
    run("mount", "team", second, check=True)
    assert json.loads(run("mount", "--json").out)[0]["unpushed"] == 1
    assert evict_everything(run) == []  # the new remote does not have it
    report = json.loads(run("push", "--json", check=True).out)
    assert report[0]["objects"] == 1 and report[0]["refs"] == 1
    assert (Path(second) / "refs" / "doc").read_text().strip() == sha(b"the only copy")


def test_the_most_specific_mount_owns_a_name(blobctl, tmp_path, remotes):
    fallback, team = remotes("fallback"), remotes("team")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "", fallback, check=True)  # mounted first, still only the fallback
    run("mount", "team", team, check=True)
    run("put", "--name", "team/x", "-", input=b"team data", check=True)
    run("put", "--name", "misc/y", "-", input=b"other data", check=True)
    reports = {r["prefix"]: r for r in json.loads(run("push", "--json", check=True).out)}
    assert reports[""]["refs"] == 1 and reports["team/"]["refs"] == 1
    assert (Path(team) / "refs" / "x").is_file() and (Path(fallback) / "refs" / "misc" / "y").is_file()
    assert not (Path(fallback) / "refs" / "team").exists()


def test_push_prefix_matches_whole_segments(blobctl, tmp_path, remotes):
    """'push team' is the names under team/, as a mount prefix is, not 'teamwork/x'; a
    prefix that spells a name pushes that name, not 'team/yz'."""
    fallback, team = remotes("fallback"), remotes("team")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "", fallback, check=True)
    run("mount", "team", team, check=True)
    for name in ("team/y", "team/yz", "teamwork/x", "other/z"):
        run("put", "--name", name, "-", input=name.encode(), check=True)
    assert run("push", "--dry-run", "team").text.split() == ["team/y", "team/yz"]
    assert run("push", "--dry-run", "team/y").text.split() == ["team/y"]
    run("push", "team", check=True)
    assert sorted(p.name for p in (Path(team) / "refs").iterdir()) == ["y", "yz"]
    assert not (Path(fallback) / "refs").exists()
    assert run("push", "--dry-run").text.split() == ["other/z", "teamwork/x"]


def test_a_remote_mounted_again_at_another_prefix_has_the_names_it_holds_there(blobctl, tmp_path, remotes):
    """team/x pushed through 'team' is the remote's refs/x. Mounted at '' instead, team/x
    is the remote's refs/team/x, which it lacks: unpushed again (README), pushed there by
    the next push, and readable through '' by a fresh store."""
    shared = remotes("shared")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "team", shared, check=True)
    run("put", "--name", "team/x", "-", input=b"x", check=True)
    run("push", check=True)
    run("umount", "team", check=True)
    run("mount", "", shared, check=True)
    assert run("push", "--dry-run").text.split() == ["team/x"]
    assert json.loads(run("mount", "--json").out)[0]["unpushed"] == 1
    run("push", check=True)
    assert (Path(shared) / "refs" / "team" / "x").is_file()
    fresh = store_runner(blobctl, tmp_path / "fresh", {})
    fresh("mount", "", shared, check=True)
    assert fresh("get", "team/x", check=True).out == b"x"
    run("umount", "", check=True)
    run("mount", "team", shared, check=True)  # back where it was: refs/x holds it still
    assert run("push", "--dry-run").text.split() == []


def test_a_mounted_name_in_upper_case_hex_is_a_name_not_a_hash(blobctl, tmp_path, remotes):
    """Upper-case hex resolves as a hash only when no name spells it, on a mount too."""
    shared = remotes("shared")
    run = store_runner(blobctl, tmp_path / "store", {})
    local = sha(b"local content")
    run("put", "-", input=b"local content", check=True)
    source = store_runner(blobctl, tmp_path / "source", {})
    source("mount", "", shared, check=True)
    publish(source, {local[:6].upper(): b"remote short", "carrier": b"remote full"})
    # blobctl binds no name that reads as a hash; one made by hand, or by an older build:
    (Path(shared) / "refs" / local.upper()).write_text(sha(b"remote full") + "\n")
    run("mount", "", shared, check=True)
    assert run("get", local[:6].upper(), check=True).out == b"remote short"
    assert run("get", local.upper(), check=True).out == b"remote full"
    refused = run("rm", local[:6].upper())
    assert refused.code == 3 and "comes from a mount" in refused.err
    assert run("get", local[:8].upper(), check=True).out == b"local content"  # no name spells this one
    down = store_runner(blobctl, tmp_path / "offline", {})
    down("put", "-", input=b"local content", check=True)
    down("mount", "", "http://127.0.0.1:9/nothing-listens-here", check=True)
    assert down("get", local.upper(), check=True).out == b"local content"  # a dead mount does not hide it
    assert down("get", "Plain").code == 5  # not hex: only a name, and the mount that may hold it is down


def test_a_read_only_catch_all_mount_neither_blocks_nor_fails_a_push(blobctl, tmp_path, remotes):
    mirror, team = remotes("mirror"), remotes("team")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "team", team, check=True)
    run("mount", "", mirror, "--read-only", check=True)
    run("put", "--name", "team/z", "-", input=b"z", check=True)
    report = json.loads(run("push", "team/", "--json", check=True).out)
    assert [r["prefix"] for r in report] == ["team/"] and report[0]["refs"] == 1
    refused = run("put", "--name", "elsewhere", "-", input=b"z")
    assert refused.code == EXIT_USAGE and "mount that remote at a prefix instead of ''" in refused.err
    assert run("push", "nothing/").code == EXIT_USAGE  # the prefix belongs to the read-only mount


def test_pull_of_nested_mounts_binds_each_name_as_get_resolves_it(blobctl, tmp_path, remotes):
    outer, inner = remotes("outer"), remotes("inner")
    for root, content in ((outer, "outer's"), (inner, "inner's")):
        source = store_runner(blobctl, tmp_path / f"source-{Path(root).name}", {})
        source("mount", "", root, check=True)
        source("put", "--name", "sub/f" if root == outer else "f", "-", input=content.encode(), check=True)
        source("push", check=True)
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "team", outer, check=True)
    run("mount", "team/sub", inner, check=True)
    assert run("get", "team/sub/f", check=True).out == b"inner's"
    report = json.loads(run("pull", "team/", "--json", check=True).out)
    assert report[0]["names"] == 1
    assert run("get", "team/sub/f", check=True).out == b"inner's"


def test_pull_binds_the_other_names_when_one_clashes(team):
    publish(team("source"), {name: name.encode() for name in ("team/a/b", "team/c", "team/d")})
    run = team("store")
    run("put", "--name", "team/a", "-", input=b"a file where the remote has a directory", check=True)
    pulled = run("pull", "team/")
    assert pulled.code == EXIT_FAILURE and "team/a is already a name" in pulled.err
    assert sorted(row["name"] for row in json.loads(run("ls", "--json", check=True).out)) == [
        "team/a", "team/c", "team/d"]


def test_rm_refuses_a_name_that_only_a_mount_has(team):
    publish(team("source"), {"team/y": b"remote"})
    run = team("store")
    refused = run("rm", "team/y")
    assert refused.code == 3 and "is not a local name" in refused.err
    assert run("get", "team/y", check=True).out == b"remote"


def test_a_broken_directory_remote_falls_through_to_the_next_mount(blobctl, tmp_path, remotes):
    """A directory remote that cannot be read (here a shard that is a file) fails as a
    remote does, so the lookup goes on to the next mount instead of stopping."""
    broken, good = remotes("broken"), remotes("good")
    digest = sha(b"served by the good one")
    source = store_runner(blobctl, tmp_path / "source", {})
    source("mount", "", good, check=True)
    publish(source, {"x": b"served by the good one"})
    (Path(broken) / "objects").mkdir()
    (Path(broken) / "objects" / digest[:2]).write_text("not a directory")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "a", broken, "--read-only", check=True)
    run("mount", "b", good, "--read-only", check=True)
    assert run("get", digest, check=True).out == b"served by the good one"


def test_hit_and_miss_counters_add_up(blobctl, tmp_path, remotes, team):
    """One read of a remote name is one hit of the mount that served it; a key found
    nowhere is one miss in total, and a name's miss belongs to its own mount only."""
    publish(team("source"), {"team/x": b"x"})
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "aaa", remotes("other"), check=True)
    run("mount", "team", team.remote, check=True)
    run("get", "team/x", check=True)
    for missing in ("team/nope", "nope", "ffff", "0" * 64):
        assert run("get", missing).code == 3
    for command in ("stat", "rm", "pin"):  # not reads: no misses
        assert run(command, "team/nope").code == 3
    counters = json.loads(run("stat", "--json").out)["counters"]
    assert counters["remote_hits"] == 1 and counters["misses_total"] == 4
    mounts = {m["prefix"]: m for m in json.loads(run("mount", "--json").out)}
    assert (mounts["team/"]["hits"], mounts["team/"]["misses"]) == (1, 1)
    assert (mounts["aaa/"]["hits"], mounts["aaa/"]["misses"]) == (0, 0)


def damaged_copy(content: bytes, damage: str) -> bytes:
    """An object file's bytes after some damage: the same size (a bit flipped) or not."""
    if damage == "emptied":
        return b""
    if damage == "truncated":
        return content[:1000]
    flipped = bytearray(content)
    flipped[len(flipped) // 2] ^= 0x40
    return bytes(flipped)


@pytest.mark.parametrize("damage", ["emptied", "truncated", "bit flipped"])
def test_push_replaces_a_damaged_remote_copy_instead_of_skipping_it(team, damage):
    """Otherwise the name is marked pushed over a copy nobody can read, and gc then
    evicts the only good one. A copy of the right size is read back too: bit rot keeps
    the size."""
    data = os.urandom(50_000)
    publish(team("first"), {"team/y": data})
    remote_copy = Path(team.remote) / "objects" / sha(data)[:2] / sha(data)[2:]
    remote_copy.write_bytes(damaged_copy(remote_copy.read_bytes(), damage))
    run = team("store")
    run("put", "--name", "team/y", "-", input=data, check=True)
    report = json.loads(run("push", "--json", check=True).out)
    assert report[0]["objects"] == 1 and report[0]["skipped"] == 0
    assert sha(data) in evict_everything(run)
    assert run("get", "team/y", check=True).out == data


@pytest.mark.parametrize("size", [50_000, 6 << 20])  # one frame; segmented (header hash)
def test_push_refuses_a_damaged_local_object(team, size):
    """A damaged local object must not become the copy every other store reads: push
    fails for it (exit 4, naming the object) and publishes neither it nor its name."""
    data = os.urandom(size)
    run = team("store")
    run("put", "--name", "team/x", "-", input=data, check=True)
    local = team.store_dir("store") / "objects" / sha(data)[:2] / sha(data)[2:]
    local.write_bytes(damaged_copy(local.read_bytes(), "bit flipped"))
    refused = run("push")
    assert refused.code == 4 and sha(data) in refused.err and "fsck --repair" in refused.err
    assert not (Path(team.remote) / "objects" / sha(data)[:2] / sha(data)[2:]).exists()
    assert not (Path(team.remote) / "refs" / "x").exists()
    assert json.loads(run("mount", "--json").out)[0]["unpushed"] == 1
    publish(team("other"), {"team/y": data})  # now the remote has a sound copy: push goes on
    pushed = run("push", "--json")
    assert pushed.code == 0 and "sound copy" in pushed.err
    assert json.loads(pushed.out)[0]["skipped"] == 1 and (Path(team.remote) / "refs" / "x").is_file()
    run("fsck", "--repair", check=True)
    assert run("get", "team/x", check=True).out == data


def test_umount_says_which_names_it_leaves_unreadable(team):
    run = team("store")
    publish(run, {"team/kept": b"kept locally", "team/evicted": b"only on the remote"})
    run("pin", "team/kept", check=True)
    assert evict_everything(run) == [sha(b"only on the remote")]
    unmounted = run("umount", "team", check=True)
    assert "1 name(s) under team/ point at objects that only a remote holds, e.g. team/evicted" in unmounted.err


def test_umount_forgets_the_mount_counters(blobctl, tmp_path, remotes, team):
    """A mount made again at the same prefix starts from zero: it may be another remote."""
    publish(team("source"), {"team/a": b"a"})
    run = team("store")
    run("get", "team/a", check=True)
    assert run("get", "team/nope").code == 3
    other = store_runner(blobctl, tmp_path / "store", {})
    other("mount", "other", remotes("other"), check=True)
    other("get", "other/nope")
    run("umount", "team", check=True)
    run("mount", "team", remotes("empty"), check=True)
    mounts = {m["prefix"]: m for m in json.loads(run("mount", "--json").out)}
    assert [mounts["team/"][k] for k in ("fetched_objects", "fetched_bytes", "hits", "misses")] == [0, 0, 0, 0]
    assert mounts["other/"]["misses"] == 1
    counters = json.loads(run("stat", "--json").out)["counters"]
    assert counters["remote_hits"] == 1 and counters["misses_total"] == 2  # the store's own stay


def test_umount_is_quiet_about_names_another_mount_still_serves(blobctl, tmp_path, remotes):
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "", remotes("fallback"), check=True)
    run("mount", "team", remotes("team"), check=True)
    publish(run, {"team/x": b"on team's remote"})
    assert evict_everything(run) == [sha(b"on team's remote")]
    assert "point at objects" not in run("umount", "", check=True).err
    assert run("get", "team/x", check=True).out == b"on team's remote"


def test_push_fetches_an_object_gc_evicted_because_another_mount_holds_it(blobctl, tmp_path, remotes):
    """team/x went to the fallback mount; once team/ has its own, the name is unpushed
    there, yet gc may evict its object (the fallback holds it): push gets it back."""
    fallback, team = remotes("fallback"), remotes("team")
    run = store_runner(blobctl, tmp_path / "store", {})
    run("mount", "", fallback, check=True)
    publish(run, {"team/x": b"first pushed to the fallback"})
    run("mount", "team", team, check=True)
    assert sha(b"first pushed to the fallback") in evict_everything(run)
    report = {r["prefix"]: r for r in json.loads(run("push", "--json", check=True).out)}
    assert report["team/"]["objects"] == 1 and report["team/"]["refs"] == 1
    assert (Path(team) / "refs" / "x").read_text().strip() == sha(b"first pushed to the fallback")


def test_pull_of_an_unpushed_local_name_needs_no_reachable_remote(team):
    """pull KEY of a local name not pushed yet keeps it whatever the remote holds: a
    remote that cannot be reached changes nothing (it said 'already local', exit 0,
    before pull KEY read the remote's ref of every local name)."""
    alice = team("alice")
    alice("put", "--name", "team/x", "-", input=b"unpushed", check=True)
    os.rmdir(team.remote)  # unreachable: the remote directory is gone
    pulled = alice("pull", "team/x")
    assert pulled.code == 0, pulled.err
    assert "kept local name 'team/x'" in pulled.err, pulled.err
    assert alice("get", "team/x", check=True).out == b"unpushed"
