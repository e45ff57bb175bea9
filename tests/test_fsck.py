"""fsck through the real command: each kind of damage is found, --repair quarantines and
rebuilds, and the exit code says whether problems remain."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from blobctl.config import Config
from blobctl.store import Store
from tests.cache_helpers import put_bytes
from tests.reliability import object_file


@pytest.fixture
def objects(store_dir):
    """Four named objects (put in process, to keep the tests quick): name -> hash."""
    with Store(Config.load(str(store_dir))) as store:
        return {f"n{number}": put_bytes(store, f"content number {number}\n".encode() * 500,
                                        name=f"n{number}") for number in range(4)}


def fsck(blobctl, *args: str) -> tuple[int, list[tuple[str, str]], dict]:
    result = blobctl("fsck", "--json", *args)
    report = json.loads(result.out)
    return result.code, sorted((p["kind"], p["key"]) for p in report["problems"]), report


def test_clean_store(blobctl, objects):
    code, problems, report = fsck(blobctl)
    assert (code, problems) == (0, [])
    assert report["clean"] is True and report["objects"] == 4 and report["refs"] == 4
    result = blobctl("fsck")
    assert result.code == 0 and result.err.strip() == "checked 4 objects and 4 refs: 0 problems, 0 remaining"


def test_one_object_is_said_in_the_singular(blobctl, store_dir):
    blobctl("put", "--name", "only", "-", input=b"one", check=True)
    result = blobctl("fsck")
    assert result.code == 0 and result.err.strip() == "checked 1 object and 1 ref: 0 problems, 0 remaining"


def damage(path, how: str, other) -> None:
    """Damage an object file: a flipped byte, cut in half, emptied, or another object's content."""
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes({"flip": data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:],
                      "truncate": data[:middle], "empty": b"",
                      "misname": other.read_bytes()}[how])


@pytest.mark.parametrize("how", ["flip", "truncate", "empty", "misname"])
def test_damaged_object_is_found_and_quarantined(blobctl, objects, store_dir, how):
    victim = objects["n1"]
    damage(object_file(store_dir, victim), how, other=object_file(store_dir, objects["n2"]))
    code, problems, report = fsck(blobctl)
    assert code == 4 and report["clean"] is False
    assert ("bad_object", victim) in problems
    assert ("dangling_ref", "n1") in problems

    code, problems, report = fsck(blobctl, "--repair")
    assert code == 4  # the name still points at content the store no longer has
    repaired = {(p["kind"], p["key"]): p["repaired"] for p in report["problems"]}
    assert repaired[("bad_object", victim)] is True
    assert repaired[("dangling_ref", "n1")] is False
    assert not object_file(store_dir, victim).exists()
    assert [p.name.split(".")[0] for p in (store_dir / "quarantine").iterdir()] == [victim]

    blobctl("rm", "n1", check=True)
    assert fsck(blobctl)[:2] == (0, [])


def test_metadata_disagreeing_with_files_is_rebuilt(blobctl, objects, store_dir):
    with sqlite3.connect(store_dir / "index.sqlite") as db:
        db.execute("DELETE FROM objects WHERE hash = ?", (objects["n0"],))
        db.execute("UPDATE objects SET size = 1 WHERE hash = ?", (objects["n1"],))
        db.execute("INSERT INTO objects VALUES (?, 5, 5, 0, 0)", ("ab" * 32,))
        db.execute("DELETE FROM names WHERE name = 'n3'")
    code, problems, _ = fsck(blobctl)
    assert code == 4
    assert problems == [("missing_row", objects["n0"]), ("name_mirror", "n3"),
                        ("stale_row", "ab" * 32), ("wrong_size", objects["n1"])]
    assert fsck(blobctl, "--repair")[0] == 0
    assert fsck(blobctl)[:2] == (0, [])


def test_dangling_and_damaged_refs(blobctl, objects, store_dir):
    (store_dir / "refs" / "ghost").write_text("cd" * 32 + "\n")
    (store_dir / "refs" / "garbled").write_text("not a hash\n")
    code, problems, _ = fsck(blobctl)
    assert code == 4
    assert ("dangling_ref", "ghost") in problems and ("bad_ref", "garbled") in problems


def test_repair_quarantines_a_ref_holding_no_hash_and_rm_removes_one(blobctl, objects, store_dir):
    """A ref holding garbage is moved to quarantine/ by --repair (it protects nothing); one
    holding a hash under a name no longer valid stays, as it keeps its object from gc.
    `rm NAME` removes a damaged ref too: removing a name needs no hash."""
    (store_dir / "refs" / "sub").mkdir()
    (store_dir / "refs" / "sub" / "garbled").write_text("not a hash\n")
    (store_dir / "refs" / "old name").write_text(objects["n0"] + "\n")
    code, problems, report = fsck(blobctl, "--repair")
    assert code == 4 and problems == [("bad_ref", "old name"), ("bad_ref", "sub/garbled")]
    assert {p["key"]: p["repaired"] for p in report["problems"]} == {"old name": False, "sub/garbled": True}
    assert not (store_dir / "refs" / "sub" / "garbled").exists() and (store_dir / "refs" / "old name").exists()
    assert [p.read_text() for p in (store_dir / "quarantine").glob("ref-sub%2Fgarbled.*")] == ["not a hash\n"]
    (store_dir / "refs" / "a").mkdir()  # two refs whose flattened names could meet: both kept
    (store_dir / "refs" / "a" / "b").write_text("one\n")
    (store_dir / "refs" / "a%2Fb").write_text("two\n")
    (store_dir / "refs" / "a%b").write_text("three\n")
    assert fsck(blobctl, "--repair")[0] == 4  # 'old name' remains
    assert sorted(p.read_text() for p in (store_dir / "quarantine").glob("ref-a*")) == ["one\n", "three\n", "two\n"]
    (store_dir / "refs" / "n1").write_text("garbage again\n")
    assert blobctl("rm", "n1").code == 0 and not (store_dir / "refs" / "n1").exists()
    assert blobctl("rm", "n1").code == 3


def test_symlinks_and_stray_files_are_reported_and_moved_aside(blobctl, objects, store_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("0" * 62)).write_bytes(b"not ours")
    os.symlink(outside, store_dir / "objects" / "00")
    (store_dir / "objects" / "README").write_text("stray")
    victim = objects["n0"]
    object_file(store_dir, victim).rename(tmp_path / "moved")
    object_file(store_dir, victim).symlink_to(tmp_path / "moved")
    code, problems, _ = fsck(blobctl)
    assert code == 4
    assert {("symlink", "objects/00"), ("stray_file", "objects/README"),
            ("symlink", f"objects/{victim[:2]}/{victim[2:]}")} <= set(problems)
    fsck(blobctl, "--repair")
    assert (outside / ("0" * 62)).read_bytes() == b"not ours"  # moved the link, not its target
    assert (tmp_path / "moved").exists()
    assert not (store_dir / "objects" / "00").exists()
    blobctl("rm", "n0", check=True)
    assert fsck(blobctl)[:2] == (0, [])


def test_table_output_and_exit_code(blobctl, objects, store_dir):
    object_file(store_dir, objects["n2"]).write_bytes(b"")
    result = blobctl("fsck")
    assert result.code == 4
    assert "bad_object" in result.text and objects["n2"] in result.text
    assert "2 problems, 2 remaining" in result.err


def test_repair_leaves_a_ref_bound_again_after_the_check(store_dir, objects, monkeypatch):
    """The check reads refs/ long before the repair moves anything: a name fixed by its
    owner meanwhile (rm, then put --name) must not be quarantined."""
    from blobctl import fsck as fsck_module

    (store_dir / "refs" / "fixed").write_text("not a hash\n")
    with Store(Config.load(str(store_dir))) as store:
        real_all_names = store.index.all_names

        def rebound_meanwhile():  # runs after the refs were read
            (store_dir / "refs" / "fixed").write_text(objects["n2"] + "\n")
            return real_all_names()

        monkeypatch.setattr(store.index, "all_names", rebound_meanwhile)
        report = fsck_module.check(store, repair=True)
    (problem,) = [p for p in report.problems if p.kind == "bad_ref"]
    assert not problem.repaired and "bound again since" in problem.detail
    assert (store_dir / "refs" / "fixed").read_text() == objects["n2"] + "\n"


def test_repair_moves_symlinked_and_long_named_bad_refs(blobctl, objects, store_dir, tmp_path):
    """A ref that is a symlink leading out of refs/ (or nowhere) is damaged: it goes to
    quarantine, not followed; a long valid name still fits a quarantine file name."""
    outside = tmp_path / "outside"
    outside.write_text("not ours\n")
    (store_dir / "refs" / "evil").symlink_to(outside)
    (store_dir / "refs" / "dangling").symlink_to(tmp_path / "nothing")
    long_name = "data/" + ",".join(["k=v"] * 40)
    (store_dir / "refs" / "data").mkdir()
    (store_dir / "refs" / long_name).write_text("garbage\n")
    code, problems, report = fsck(blobctl, "--repair")
    assert [p["repaired"] for p in report["problems"] if p["kind"] == "bad_ref"] == [True, True, True]
    assert fsck(blobctl)[0] == 0 and outside.read_text() == "not ours\n"
    assert len(list((store_dir / "quarantine").glob("ref-*"))) == 3


def test_repair_counts_a_bad_ref_removed_after_the_check_as_repaired(store_dir, objects, monkeypatch):
    from blobctl import fsck as fsck_module

    (store_dir / "refs" / "gone").write_text("not a hash\n")
    with Store(Config.load(str(store_dir))) as store:
        real_all_names = store.index.all_names

        def removed_meanwhile():
            (store_dir / "refs" / "gone").unlink()
            return real_all_names()

        monkeypatch.setattr(store.index, "all_names", removed_meanwhile)
        report = fsck_module.check(store, repair=True)
    assert [(p.key, p.repaired) for p in report.problems if p.kind == "bad_ref"] == [("gone", True)]


def test_changes_made_by_other_commands_while_fsck_runs_are_not_problems(store_dir, monkeypatch):
    """fsck reads the files and the index while puts, rms and gcs may change both: an
    object removed since the listing, or stored (and named) since, is no problem (a gc
    running beside fsck made it report damaged and stale objects)."""
    from blobctl import fsck as checker

    with Store(Config.load(str(store_dir))) as store, Store(Config.load(str(store_dir))) as other:
        evicted = put_bytes(store, b"evicted meanwhile\n" * 100)
        put_bytes(store, b"stays\n" * 100, name="stays")
        real_verify, calls = checker._verify, []

        def verify_while_others_run(path, digest):
            if not calls:
                other.remove(evicted)
                put_bytes(other, b"stored and named meanwhile\n" * 100, name="new")
            calls.append(digest)
            return real_verify(path, digest)

        real_walk = store.walk_objects

        def walk_then_put():  # stored after the listing, before the index is read: a row without a listed file
            entries = list(real_walk())
            put_bytes(other, b"stored after the listing\n" * 100)
            return iter(entries)

        monkeypatch.setattr(checker, "_verify", verify_while_others_run)
        monkeypatch.setattr(store, "walk_objects", walk_then_put)
        report = checker.check(store)
        assert report.problems == ()


def test_listing_objects_survives_a_shard_removed_meanwhile(store_dir, monkeypatch):
    """gc removes emptied shard directories: a listing that saw one must not fail on it."""
    with Store(Config.load(str(store_dir))) as store:
        gone = put_bytes(store, b"in a shard that goes")
        kept = put_bytes(store, b"kept")
        assert gone[:2] != kept[:2]
        store.remove(gone)
        real_scandir = os.scandir

        def scandir(path):
            entries = real_scandir(path)
            if os.fspath(path) == str(store.objects_dir):
                entries = list(entries)
                (store.objects_dir / gone[:2]).rmdir()
            return entries

        monkeypatch.setattr(os, "scandir", scandir)
        assert list(store.iter_objects()) == [kept]


def test_an_index_with_damaged_pages_is_rebuilt_by_fsck(blobctl, objects, store_dir):
    """SQLite checks only the header when it opens a file: an index whose later pages are
    damaged opened, and every query then failed with a traceback, fsck --repair too."""
    blobctl("ls", check=True)  # checkpointed: the rows are in index.sqlite itself
    index = store_dir / "index.sqlite"
    data = bytearray(index.read_bytes())
    assert len(data) > 8192
    for position in range(4096, len(data), 7):
        data[position] ^= 0x5A
    index.write_bytes(bytes(data))
    listed = blobctl("ls")
    assert listed.code == 1 and "Traceback" not in listed.err
    assert listed.err.startswith("blobctl: error: the store's index is damaged") and "blobctl fsck" in listed.err
    result = blobctl("fsck", "--json")
    assert result.code == 0 and "Traceback" not in result.err and "rebuilt from the objects" in result.err
    assert json.loads(result.out)["clean"] is True
    assert list(store_dir.glob("index.sqlite.broken-*"))
    assert fsck(blobctl)[:2] == (0, [])
    assert {entry["name"]: entry["hash"] for entry in json.loads(blobctl("ls", "--json", check=True).out)} == objects


def test_a_fifo_in_refs_is_a_damaged_ref_not_a_hang(blobctl, objects, store_dir):
    """read_ref read a ref with a blocking open: a FIFO in refs/ (nobody writing it) hung
    ls, get, gc and fsck --repair, the command meant to clear it, for ever."""
    os.mkfifo(store_dir / "refs" / "fifo")
    listed = blobctl("ls", "--json", timeout=20)
    assert listed.code == 0 and "'fifo'" in listed.err and "is damaged" in listed.err
    assert {entry["name"] for entry in json.loads(listed.out)} == set(objects)
    assert blobctl("get", "fifo", timeout=20).code == 4
    assert blobctl("gc", "--dry-run", timeout=20).code == 0
    code, problems, _ = fsck(blobctl)
    assert code == 4 and problems == [("bad_ref", "fifo")]
    assert blobctl("fsck", "--repair", timeout=20).code == 0
    assert not os.path.lexists(store_dir / "refs" / "fifo")
    assert fsck(blobctl)[:2] == (0, [])


def test_a_fifo_or_directory_in_pins_is_a_damaged_pin_not_a_hang(blobctl, objects, store_dir):
    """Pins were read with a blocking open too: a FIFO in pins/ hung stat and gc. Read
    as a damaged pin, it protects its object (the harmless error) and says so."""
    name, digest = next(iter(objects.items()))
    blobctl("rm", name, check=True)  # a name would keep it anyway
    os.mkfifo(store_dir / "pins" / digest)
    described = blobctl("stat", digest, "--json", timeout=20)
    assert described.code == 0 and "is damaged" in described.err, described.err
    assert json.loads(described.out)[0]["pinned"] is True
    planned = blobctl("gc", "--dry-run", "--max-size", "0", "--grace", "0", "--json", timeout=20)
    assert planned.code == 0 and json.loads(planned.out)["kept"]["pinned"]["objects"] == 1, planned.err
    os.unlink(store_dir / "pins" / digest)
    (store_dir / "pins" / digest).mkdir()
    assert blobctl("gc", "--dry-run", "--max-size", "0", "--grace", "0", timeout=20).code == 0


def test_a_dangling_symlink_in_refs_is_a_damaged_ref_not_a_traceback(tmp_path):
    """ls, gc and fsck list refs/ and read each name: a symlink to nothing there read as
    'no such name' (None), which ls and fsck then used as a hash."""
    import subprocess, sys
    store = tmp_path / "s"
    def run(*args):
        return subprocess.run([sys.executable, "-m", "blobctl", "--store", str(store), *args],
                              capture_output=True, env={**os.environ, "BLOBCTL_CONFIG": str(tmp_path / "c.toml")})
    (tmp_path / "f").write_bytes(b"data")
    assert run("put", "--name", "x", str(tmp_path / "f")).returncode == 0
    os.symlink("nowhere", store / "refs" / "dangling")
    listed = run("ls")
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr, listed.stderr
    assert b"'dangling'" in listed.stderr and b"x" in listed.stdout
    checked = run("fsck")
    assert checked.returncode == 4 and b"Traceback" not in checked.stderr, checked.stderr
    assert b"dangling" in checked.stdout
    repaired = run("fsck", "--repair")
    assert b"Traceback" not in repaired.stderr, repaired.stderr
    assert run("fsck").returncode == 0
