"""kill -9 at random moments (scenario 4) and interrupted pushes (scenario 12): whatever
instant a command dies at, objects are complete or absent, names hold the old or the new
hash, the next command works, and a remote never names an object it does not have."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blobctl import codec, keys
from blobctl.backends import open_backend
from blobctl.config import Config
from blobctl.errors import NotFoundError
from blobctl.store import Store
from tests.reliability import leftover_temp_files, object_file, popen_in, report, run_in, sha
from tests.test_mounts import s3_env

KILLS = 100


def kill_at_random(store: Path, args: list, rng: random.Random, span: float) -> bool:
    """Start `blobctl ARGS`, SIGKILL it after a random 0..span seconds; True if it died
    by the signal, False if it had already finished (then it must have succeeded)."""
    proc = popen_in(store, *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(rng.uniform(0, span))
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    return proc.returncode == -signal.SIGKILL


def calibrate(store: Path, args: list) -> float:
    """How long one uninterrupted run takes: kills are spread over that span."""
    started = time.monotonic()
    result = run_in(store, *args)
    assert result.code == 0, result.err
    return time.monotonic() - started


def verify_file(path: Path, digest: str) -> None:
    with open(path, "rb") as handle:
        codec.decode(handle, lambda chunk: None, digest, label=digest)


def check_name(store_dir: Path, name: str, allowed: set[str]) -> str | None:
    """The name is absent or holds one of the `allowed` hashes, whose object verifies;
    opening the store and resolving works (the index survives the crash)."""
    with Store(Config.load(str(store_dir))) as store:
        digest = store.read_ref(name)
        if digest is not None:
            assert digest in allowed
            verify_file(object_file(store_dir, digest), digest)
            assert store.resolve(name).digest == digest
        for candidate in allowed:
            if object_file(store_dir, candidate).exists():
                verify_file(object_file(store_dir, candidate), candidate)
        return digest


def kill_loop_put(tmp_path: Path, seed: int) -> tuple[int, int]:
    """Named puts of 24 MiB of new content each time, killed at random."""
    rng = random.Random(seed)
    store = tmp_path / f"put-{seed}"
    source = tmp_path / f"input-{seed}"
    body = os.urandom(24 << 20)
    source.write_bytes(b"0" * 8 + body)
    span = calibrate(store, ["put", "--name", "big", source])
    allowed, killed = {sha(b"0" * 8 + body)}, 0
    for i in range(KILLS):
        data = i.to_bytes(8, "big") + body
        source.write_bytes(data)
        allowed.add(sha(data))
        killed += kill_at_random(store, ["put", "--name", "big", source], rng, span)
        check_name(store, "big", allowed)
    assert run_in(store, "put", "--name", "big", source).code == 0
    assert run_in(store, "get", "big").out == data
    assert run_in(store, "fsck").code == 0  # the index describes the files
    return KILLS, killed


def kill_loop_ref(tmp_path: Path, seed: int) -> tuple[int, int]:
    """Rebinding one name to another small object, killed at random."""
    rng = random.Random(seed)
    store = tmp_path / f"ref-{seed}"
    span = calibrate(store, ["put", "--name", "deep/ref", "-"])
    contents = [f"version {i}".encode() for i in range(KILLS)]
    allowed, killed = {sha(b"")}, 0
    for i, content in enumerate(contents):
        allowed.add(sha(content))
        proc = popen_in(store, "put", "--name", "deep/ref", "-", stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL)
        proc.stdin.write(content)
        proc.stdin.close()
        time.sleep(rng.uniform(0, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()
        killed += proc.returncode != 0
        proc.stderr.close()
        assert check_name(store, "deep/ref", allowed) is not None or i == 0
    assert run_in(store, "put", "--name", "deep/ref", "-", input=b"final").code == 0
    assert run_in(store, "get", "deep/ref").out == b"final"
    assert run_in(store, "fsck").code == 0
    return KILLS, killed


def remote_is_consistent(remote: Path) -> int:
    """Every ref on a directory remote holds a hash whose object is there and verifies."""
    refs = [p for p in (remote / "refs").rglob("*") if p.is_file()] if (remote / "refs").exists() else []
    for ref in refs:
        digest = keys.parse_ref(ref.read_bytes(), str(ref))
        verify_file(remote / keys.object_key(digest), digest)
    return len(refs)


def kill_loop_push(tmp_path: Path, seed: int) -> tuple[int, int]:
    """A new 2 MiB name each round, then a push killed at random."""
    rng = random.Random(seed)
    store, remote = tmp_path / f"push-{seed}", tmp_path / f"remote-{seed}"
    remote.mkdir()
    assert run_in(store, "mount", "", remote).code == 0
    assert run_in(store, "put", "--name", "warmup", "-", input=os.urandom(2 << 20)).code == 0
    span = calibrate(store, ["push"])
    killed = 0
    for i in range(KILLS):
        with Store(Config.load(str(store))) as opened:
            opened.bind(f"round/{i}", opened.put_stream(io.BytesIO(os.urandom(2 << 20))).digest)
        killed += kill_at_random(store, ["push"], rng, span)
        remote_is_consistent(remote)
    assert run_in(store, "push").code == 0
    assert remote_is_consistent(remote) == KILLS + 1
    return KILLS, killed


def kill_loop_gc(tmp_path: Path, seed: int) -> tuple[int, int]:
    """30 new unnamed objects each round, then `gc --max-size 0 --grace 0` killed at
    random; a named object must survive every round, and the index must describe the
    files (the next command mends it from gc's journal) without fsck --repair."""
    rng = random.Random(seed)
    store = tmp_path / f"gc-{seed}"
    assert run_in(store, "put", "--name", "keep", "-", input=b"named, never evicted").code == 0

    def add_objects() -> None:
        with Store(Config.load(str(store))) as opened:
            for _ in range(30):
                opened.put_stream(io.BytesIO(os.urandom(rng.randrange(100, 200_000))))

    add_objects()
    span = calibrate(store, ["gc", "--max-size", "0", "--grace", "0"])
    killed = 0
    for _ in range(KILLS):
        add_objects()
        killed += kill_at_random(store, ["gc", "--max-size", "0", "--grace", "0"], rng, span)
        for shard in (store / "objects").iterdir():
            for path in shard.iterdir():
                verify_file(path, shard.name + path.name)
        check_name(store, "keep", {sha(b"named, never evicted")})
    assert run_in(store, "fsck").code == 0
    assert run_in(store, "gc", "--max-size", "0", "--grace", "0").code == 0
    assert run_in(store, "get", "keep").out == b"named, never evicted"
    return KILLS, killed


@pytest.mark.slow
def test_kill_9_at_random_points(tmp_path):
    loops = {"large put": kill_loop_put, "ref update": kill_loop_ref, "push": kill_loop_push,
             "gc": kill_loop_gc}
    with ThreadPoolExecutor(max_workers=2) as pool:  # one loop per core
        outcomes = {label: pool.submit(loop, tmp_path, seed) for seed, (label, loop) in enumerate(loops.items())}
        figures = {label: future.result() for label, future in outcomes.items()}
    report(4, "kill -9", "; ".join(f"{label}: {runs} runs, {killed} killed before finishing"
                                    for label, (runs, killed) in figures.items())
           + "; objects complete or absent, names old or new, remote refs never dangling, next command works")


@pytest.mark.parametrize("kind", ["webdav", "s3"])
def test_interrupted_push_completes_when_run_again(tmp_path, request, kind):
    """A push of 40 names killed five times part-way over a real server: after each kill
    every ref on the remote points at an object the remote has; running it again finishes
    the job, and a fresh store reads every name back through the remote."""
    if kind == "webdav":
        remote, env = request.getfixturevalue("webdav_remote"), {}
    else:
        remote = request.getfixturevalue("s3_remote")
        env = s3_env(remote.settings.s3_endpoint)
    rng = random.Random(12)
    store = tmp_path / "local"
    assert run_in(store, "mount", "team", remote.url).code == 0
    contents = {f"team/run/{i}": rng.randbytes(rng.randrange(1 << 20, 3 << 20)) for i in range(40)}
    with Store(Config.load(str(store))) as opened:
        for name, data in contents.items():
            opened.bind(name, opened.put_stream(io.BytesIO(data)).digest)
    backend = open_backend(remote.url, remote.settings)
    on_remote = []
    try:
        for attempt in range(5):  # later and later: each run starts where the last one died
            proc = popen_in(store, "push", "--jobs", "4", env=env, stdout=subprocess.DEVNULL)
            time.sleep(0.2 + 0.06 * attempt + rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, -signal.SIGKILL), err.decode()
            present = refs = 0
            for name, data in contents.items():
                object_there = backend.exists(keys.object_key(sha(data)))
                present += object_there
                try:
                    ref = backend.read_bytes(keys.ref_key(name[len("team/"):]))
                except NotFoundError:
                    continue
                assert keys.parse_ref(ref, name) == sha(data) and object_there, name
                refs += 1
            on_remote.append(f"{present}/{refs}")
        result = run_in(store, "push", env=env)
        assert result.code == 0, result.err
    finally:
        backend.close()
    fresh = tmp_path / "fresh"
    assert run_in(fresh, "mount", "team", remote.url, "--read-only").code == 0
    for name, data in contents.items():
        assert run_in(fresh, "get", name, env=env).out == data
    report(12, f"interrupted push ({kind})",
           f"40 names, push killed 5 times with objects/refs on the remote {', '.join(on_remote)}: no ref ever "
           "dangling; the re-run completed and a fresh store read back 40/40")


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("command", ["put", "named put", "gc"])
def test_a_command_killed_before_its_index_commit_leaves_a_consistent_store(tmp_path, command):
    """kill -9 after a put renamed its objects in (or a gc deleted its objects) but
    before the index transaction recording it committed: SQLite rolls the rows back,
    the files stay. The next command must mend the index from the journal, so that
    stat and gc see what is on disk, without an fsck --repair."""
    store = tmp_path / "store"
    files = []
    for i in range(5):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(os.urandom(50_000))
    assert run_in(store, "put", "--name", "kept", files[0]).code == 0
    if command == "gc":
        assert run_in(store, "put", *files[1:]).code == 0
        args, hook = ["gc", "--max-size", "0", "--grace", "0"], "EVICTED"
        done = lambda: not any(object_file(store, sha(f.read_bytes())).exists() for f in files[1:])  # noqa: E731
    else:
        if command == "named put":
            files = files[:2]
        args, hook = ["put", *(["--name", "new"] if command == "named put" else []), *files[1:]], "PUBLISHED"
        done = lambda: all(object_file(store, sha(f.read_bytes())).exists() for f in files[1:])  # noqa: E731
    proc = popen_in(store, *args, env={f"BLOBCTL_TEST_DELAY_{hook}": "60"},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(done)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    summary = json.loads(run_in(store, "stat", "--json").out)
    assert summary["objects"] == (1 if command == "gc" else len(files))
    assert run_in(store, "fsck").code == 0
    assert not [path for path in leftover_temp_files(store) if not path.is_dir()]  # its emptied temp directory: gc's
    assert run_in(store, "get", "kept").out == files[0].read_bytes()
