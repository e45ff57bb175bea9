"""Durability order and failing disks (scenarios 5 and 6): what reaches the disk, in
which order, and what is left when a write, sync, mkdir or rename fails."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobctl import fsutil
from blobctl import store as store_module
from blobctl.cli import main
from tests.conftest import blobctl_executable
from tests.reliability import leftover_temp_files, mounted, object_file, report, run_in, sha

_SYSCALL = re.compile(r"^\d+ +(\w+)\((.*)\) += (-?\d+)")
_RESUMED = re.compile(r"^\d+ +<\.\.\. \w+ resumed>(.*)")
_FD_PATH = re.compile(r"^\d+<(.*?)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
#: SQLite manages its own files; the index is rebuildable by design (docs/FORMAT.md).
_INDEX_FILES = re.compile(r"/index\.sqlite(-wal|-shm|-journal)?$")


def trace(command: list[str], log: Path) -> list[tuple[str, list[str]]]:
    """Run `command` under strace (all threads); returns (syscall, path arguments) of
    every successful file call in order."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing (apt-get install strace)")
        pytest.skip("strace is missing (apt-get install strace)")
    subprocess.run([strace, "-f", "-y", "-qq", "-s", "256", "-o", str(log), "-e",
                    "trace=openat,write,pwrite64,fsync,fdatasync,syncfs,rename,renameat,renameat2,mkdir,mkdirat,"
                    "unlink,unlinkat,rmdir",
                    *command], check=True, capture_output=True, timeout=120)
    calls, unfinished = [], {}
    for line in log.read_text().splitlines():
        pid = line.split(" ", 1)[0]
        if line.endswith(" <unfinished ...>"):  # another thread ran meanwhile: join the halves
            unfinished[pid] = line[: -len(" <unfinished ...>")]
            continue
        if pid in unfinished and (resumed := _RESUMED.match(line)):
            line = unfinished.pop(pid) + resumed.group(1)
        match = _SYSCALL.match(line)
        if not match or int(match.group(3)) < 0:
            continue
        name, args = match.group(1), match.group(2)
        if name in ("write", "pwrite64", "fsync", "fdatasync", "syncfs"):
            fd_path = _FD_PATH.match(args)
            calls.append((name, [fd_path.group(1)] if fd_path else []))
        else:
            calls.append((name, [p.encode().decode("unicode_escape") for p in _QUOTED.findall(args)]))
    return calls


def unsynced_at_exit(calls, store: Path) -> tuple[list[str], int, int]:
    """Replay the calls: a renamed file must have been synced since its last write, and
    every store file written and directory changed must be synced by the end. Returns
    (violations, files renamed into place, directory syncs)."""
    root = str(store)
    dirty: set[str] = set()
    problems, renames, dir_syncs = [], 0, 0

    def inside(path: str) -> bool:
        return (path == root or path.startswith(root + "/")) and not _INDEX_FILES.search(path)

    for name, paths in calls:
        if name == "syncfs" and paths and inside(paths[0]):  # the whole file system: all clean
            dir_syncs += len(dirty)
            dirty.clear()
        elif not paths:
            continue
        elif name in ("fsync", "fdatasync"):
            dir_syncs += paths[0] in dirty and os.path.isdir(paths[0])
            dirty.discard(paths[0])
        elif not inside(paths[-1]):
            continue
        elif name in ("write", "pwrite64"):
            dirty.add(paths[0])
        elif name in ("rename", "renameat", "renameat2"):
            source, dest = paths[0], paths[-1]
            if source in dirty:
                problems.append(f"{dest} renamed into place before its data was synced")
            dirty.discard(source)
            dirty.update({os.path.dirname(source), os.path.dirname(dest)})  # both entries changed
            renames += 1
        elif name in ("mkdir", "mkdirat", "unlink", "unlinkat", "rmdir"):
            dirty.add(os.path.dirname(paths[-1]))
            if name not in ("mkdir", "mkdirat"):
                dirty.discard(paths[-1])  # gone: nothing of it left to make durable
    tmp = str(store / "tmp")
    # tmp/ (temp files, journals) holds nothing that must survive a power loss
    problems += [f"{path} not synced before exit" for path in sorted(dirty) if path != tmp and not path.startswith(tmp + "/")]
    return problems, renames, dir_syncs


def test_put_syncs_data_before_rename_and_everything_before_exit(tmp_path):
    store = tmp_path / "store"
    big = tmp_path / "big"
    big.write_bytes(os.urandom(9 << 20))  # compressed by worker threads
    small = tmp_path / "small"
    small.write_bytes(b"small")
    commands = {
        "first put (creates the store)": ["put", small],
        "named put of 9 MiB": ["put", "--name", "a/b/big", big],
        "put of several files": ["put", small, big, __file__],
        "rebind a name": ["put", "--name", "a/b/big", small],
        "get -o": ["get", "a/b/big", "-o", store / "refs" / "exported"],
        "rm of a name": ["rm", "exported"],
        "rm of the last name in a directory": ["rm", "a/b/big"],
    }
    total_renames = total_dir_syncs = 0
    for label, args in commands.items():
        calls = trace(blobctl_executable() + ["--store", str(store), *map(str, args)], tmp_path / "strace.log")
        problems, renames, dir_syncs = unsynced_at_exit(calls, store)
        assert problems == [], label
        total_renames += renames
        total_dir_syncs += dir_syncs
    damaged = next(path for path in (store / "objects").rglob("*") if path.is_file())
    damaged.write_bytes(b"not a zstd frame")
    calls = trace(blobctl_executable() + ["--store", str(store), "fsck", "--repair"], tmp_path / "strace.log")
    problems, renames, dir_syncs = unsynced_at_exit(calls, store)
    assert problems == [] and renames == 1, "fsck --repair moving a damaged object to quarantine/"
    total_renames += renames
    total_dir_syncs += dir_syncs
    assert total_renames >= 7
    report(5, "durability order",
           f"{len(commands)} commands traced: {total_renames} renames each after its data fsync, "
           f"{total_dir_syncs} directory fsyncs, 0 unsynced files or directories at exit")


class FaultPlan:
    """Fail the `nth` call of one kind of file operation with OSError(`code`); nth = 0
    only counts the calls (a dry run finds how many points there are to fail)."""

    def __init__(self, kind: str, code: int = 0, nth: int = 0):
        self.kind, self.code, self.nth, self.calls = kind, code, nth, 0

    def hit(self, kind: str) -> None:
        if kind == self.kind:
            self.calls += 1
            if self.calls == self.nth:
                raise OSError(self.code, os.strerror(self.code))


class FaultyFile:
    """A file opened for writing whose write() consults the plan first."""

    def __init__(self, handle, plan: FaultPlan):
        self._handle, self._plan = handle, plan

    def write(self, data) -> int:
        self._plan.hit("write")
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def install(monkeypatch, plan: FaultPlan) -> None:
    real_fsync, real_replace, real_mkdir, real_open = os.fsync, os.replace, os.mkdir, open

    def faulty_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FaultyFile(handle, plan) if any(m in mode for m in "wxa") else handle

    def call(kind, real):
        def wrapped(*args, **kwargs):
            plan.hit(kind)
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(os, "fsync", call("fsync", real_fsync))
    monkeypatch.setattr(os, "replace", call("rename", real_replace))
    monkeypatch.setattr(os, "mkdir", call("mkdir", real_mkdir))
    for module in (store_module, fsutil):
        monkeypatch.setattr(module, "open", faulty_open, raising=False)


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """blobctl in this process (so faults can be injected): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["blobctl", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code or 0, capsys.readouterr().err


def decodes(store: Path, digest: str) -> bool:
    from blobctl import codec

    with open(object_file(store, digest), "rb") as handle:
        return codec.decode(handle, lambda chunk: None, digest, label=digest) >= 0


@pytest.mark.parametrize("kind", ["write", "fsync", "mkdir", "rename"])
def test_failing_disk_fails_cleanly_and_keeps_earlier_objects(tmp_path, monkeypatch, capsys, kind):
    """Every write, fsync, mkdir and rename of a named put and of `get -o`, failed in turn
    with ENOSPC and with EIO: exit 1 with one line, no partial object, file or temp file,
    and the earlier object intact."""
    template = tmp_path / "template"
    kept = b"kept safe " * 1000
    new = os.urandom(3 << 20)
    (tmp_path / "new").write_bytes(new)
    (tmp_path / "kept").write_bytes(kept)
    assert run_cli(monkeypatch, capsys, "--store", template, "put", "--name", "kept", tmp_path / "kept")[0] == 0
    operations = {"named put": ["put", "--name", "fresh/new", tmp_path / "new"],
                  "get -o": ["get", "kept", "-o", tmp_path / "out" / "restored"]}
    cases = 0
    for label, args in operations.items():
        counter = FaultPlan(kind)
        with monkeypatch.context() as patch:
            shutil.rmtree(tmp_path / "out", ignore_errors=True)
            (tmp_path / "out").mkdir()
            shutil.copytree(template, tmp_path / "dry")
            install(patch, counter)
            assert run_cli(patch, capsys, "--store", tmp_path / "dry", *args)[0] == 0
        shutil.rmtree(tmp_path / "dry")
        for nth in range(1, counter.calls + 1):
            for code in (errno.ENOSPC, errno.EIO):
                store = tmp_path / f"case-{cases}"
                shutil.copytree(template, store)
                shutil.rmtree(tmp_path / "out")
                (tmp_path / "out").mkdir()
                with monkeypatch.context() as patch:
                    install(patch, FaultPlan(kind, code, nth))
                    exit_code, err = run_cli(patch, capsys, "--store", store, *args)
                where = f"{label}: {kind} #{nth} fails with {errno.errorcode[code]}"
                lines = err.strip().splitlines()
                assert exit_code == 1 and len(lines) == 1 and lines[0].startswith("blobctl: error: "), (where, err)
                assert os.strerror(code).lower() in lines[0].lower(), (where, err)
                assert leftover_temp_files(store) == [] and list((tmp_path / "out").iterdir()) in (
                    [], [tmp_path / "out" / "restored"]), where
                if (tmp_path / "out" / "restored").exists():
                    assert (tmp_path / "out" / "restored").read_bytes() == kept, where
                assert not object_file(store, sha(new)).exists() or decodes(store, sha(new)), where
                assert decodes(store, sha(kept)), where
                shutil.rmtree(store)
                cases += 1
    assert cases > 0
    report(6, f"disk full / I/O error ({kind})",
           f"{cases} failures injected (every {kind} of a named put and of get -o, ENOSPC and EIO): "
           "all exit 1 with one line, 0 partial objects or files, earlier object intact")


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB file system of its own (a tmpfs)."""
    with mounted("-t", "tmpfs", "-o", "size=40m", "tmpfs", at=tmp_path / "disk") as mount_point:
        yield mount_point


def fill(directory: Path) -> int:
    """Write a file in `directory` until its disk is full; returns its size."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as filler:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    written += filler.write(b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return written


@pytest.mark.parametrize("index_open", [False, True], ids=["index-closed", "index-open-elsewhere"])
def test_full_disk_reads_and_gc_frees_space(small_disk, index_open):
    """On a disk filled to the last byte, after the store's index was closed (SQLite must
    create its shared-memory file again) or while another process has it open (its
    write-ahead log cannot grow): ls, stat, get and fsck still work, put and rm fail in
    one line, and gc evicts what it may, keeping names and pins, leaving the index
    matching the files (fsck clean) and room for the next put."""
    def free_bytes(path: Path) -> int:
        info = os.statvfs(path)
        return info.f_bavail * info.f_frsize

    store = small_disk / "store"
    objects = [os.urandom(1 << 20) for _ in range(24)]
    named, pinned, cached = objects[0], objects[1], objects[2:]
    for data in objects:
        args = ["--name", "keep/named"] if data is named else []
        assert run_in(store, "put", *args, "-", input=data).code == 0
    assert run_in(store, "pin", sha(pinned)).code == 0
    assert run_in(store, "put", "--name", "drop/me", "-", input=b"a name to remove").code == 0
    reader = sqlite3.connect(store / "index.sqlite") if index_open else None
    if reader is not None:
        assert reader.execute("SELECT count(*) FROM objects").fetchone()[0] == len(objects) + 1
    fill(small_disk)
    left = free_bytes(small_disk)
    assert left < 64 << 10

    listed = run_in(store, "ls")
    assert listed.code == 0 and b"keep/named" in listed.out, listed.err
    assert run_in(store, "stat").code == 0
    got = run_in(store, "get", "keep/named")
    assert got.code == 0 and got.out == named, got.err
    assert "no space left on device" in got.err, got.err  # its access time could not be recorded
    refused = run_in(store, "put", "-", input=os.urandom(1 << 20))
    assert refused.code == 1 and refused.err.count("\n") == 1 and "no space left" in refused.err, refused.err
    refused = run_in(store, "rm", "drop/me")
    assert refused.code == 1 and refused.err.count("\n") == 1 and "no space left" in refused.err, refused.err
    assert "standard output" not in refused.err, refused.err
    refused = run_in(store, "config", "set", "gc_grace", "2h")
    assert refused.code == 1 and "cannot write config" in refused.err and "no space left" in refused.err, refused.err
    assert leftover_temp_files(store) == []
    assert run_in(store, "fsck").code == 0

    collected = run_in(store, "gc", "--max-size", "0", "--grace", "0", "--json")
    assert collected.code == 0, collected.err
    executed = json.loads(collected.out)["executed"]
    assert executed["evicted"] == len(cached) and executed["stored"] > len(cached) * 1_000_000, executed
    assert free_bytes(small_disk) > len(cached) * 1_000_000
    checked = run_in(store, "fsck")
    assert checked.code == 0 and "0 problems" in checked.err, checked.err
    for key, data in (("keep/named", named), (sha(pinned), pinned)):
        got = run_in(store, "get", key)
        assert got.code == 0 and got.out == data and got.err == "", (key, got.err)
    assert run_in(store, "put", "-", input=os.urandom(1 << 20)).code == 0
    if reader is not None:
        reader.close()
    report(6, f"disk full (a real one, {'index open elsewhere' if index_open else 'index closed'})", f"tmpfs of 40 MiB filled to {left >> 10} KiB free: "
           "ls, stat, get, fsck exit 0; put exit 1 in one line; gc evicted "
           f"{executed['evicted']} objects ({executed['stored'] >> 20} MiB), names and pins kept, fsck clean")


def test_full_disk_gc_that_would_free_too_little_deletes_nothing(small_disk):
    """A plan too small for the index to be written again (here 3 kB of a full disk)
    must not delete files it then cannot drop from the index: it says why, exit 1, and
    the store stays consistent (fsck clean)."""
    store = small_disk / "store"
    assert run_in(store, "put", "-", input=os.urandom(3000)).code == 0  # the oldest: the one evicted
    time.sleep(0.01)
    for number in range(8):
        assert run_in(store, "put", "--name", f"keep/{number}", "-", input=os.urandom(1 << 20)).code == 0
    stored = json.loads(run_in(store, "stat", "--json").out)["stored"]
    fill(small_disk)
    collected = run_in(store, "gc", "--max-size", str(stored - 1), "--grace", "0")
    assert collected.code == 1 and "evict only" in collected.err, collected.err
    checked = run_in(store, "fsck")
    assert checked.code == 0 and "0 problems" in checked.err, checked.err
