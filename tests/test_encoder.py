"""Unit tests of the encoder's worker processes (blobctl.encoder.WorkerProcesses), which
encode chunks of a many-file put: how they start, and what happens when one dies or a
put stops waiting for them."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blobctl import encoder as encoder_module
from tests.reliability import leftover_temp_files, sha
from tests.workers import alive, worker_processes


def _blocks_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
    return bool(blocked & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not hasattr(signal, "sigtimedwait"), reason="workers obey any SIGTERM there")
def test_workers_obey_a_sigterm_from_the_put_only(store, tmp_path):
    """A SIGTERM sent to the whole job is the put's to handle, so workers ignore it; the
    pool's own SIGTERM, sent to the others when a worker dies, they obey: the dead one
    may have held the task queue's lock, and waiting for it would hang the put."""
    processes = encoder_module.WorkerProcesses(store._encoder)
    if not processes.available:
        pytest.skip("worker processes need two CPUs")
    files = [tmp_path / f"f{i}" for i in range(8)]
    for i, path in enumerate(files):
        path.write_bytes(b"file %d" % i)
    with processes:
        started = [processes.submit([str(p) for p in files[i:i + 2]]) for i in (0, 2)]  # a worker each
        for future in started:
            processes.result(future)
        workers = worker_processes(os.getpid())
        assert len(workers) >= 2
        deadline = time.time() + 20
        while not all(_blocks_sigterm(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.02)  # until each has run its set-up
        subprocess.run(["kill", "-TERM", str(workers[1])], check=True)  # from someone else
        time.sleep(1)
        assert alive(workers[1])
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.time() + 10
        while alive(workers[1]) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(workers[1])
        outcome = processes.submit([str(p) for p in files[4:]])  # carried on here
        if not isinstance(outcome, list):
            outcome = processes.result(outcome)
    assert [item.encoded.digest for item in outcome] == [sha(p.read_bytes()) for p in files[4:]]
    store.publish(outcome)


def test_workers_are_forked_only_while_the_put_runs_alone():
    """Another thread could hold a lock at the moment of a fork, and the child would wait
    for it forever: then the workers are spawned."""
    if not sys.platform.startswith("linux"):
        pytest.skip("workers are always spawned there")
    if threading.active_count() != 1:
        pytest.skip("an earlier test left a thread running")
    assert encoder_module._worker_start_method() == "fork"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert encoder_module._worker_start_method() == "spawn"
    finally:
        stop.set()
        other.join()


def _workers_and_a_chunk_ending_in_a_fifo(store, tmp_path) -> tuple:
    """Worker processes, and a chunk whose third file is a FIFO nobody writes to yet, so
    the worker that takes it waits there."""
    processes = encoder_module.WorkerProcesses(store._encoder)
    if not processes.available:
        pytest.skip("worker processes need two CPUs")
    paths = []
    for i in range(2):
        (tmp_path / f"f{i}").write_bytes(b"content %d" % i)
        paths.append(str(tmp_path / f"f{i}"))
    os.mkfifo(tmp_path / "fifo")
    paths.append(str(tmp_path / "fifo"))
    return processes, paths


def _wait_at_the_fifo(store) -> float:
    """Until the chunk's worker has written its first two temp files (then it waits at
    the FIFO); returns the deadline, for the caller's own waits."""
    deadline = time.time() + 20
    while len(list(store.tmp_dir.glob("*.partial/*"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert len(list(store.tmp_dir.glob("*.partial/*"))) == 2
    return deadline


def test_a_chunk_whose_worker_died_is_encoded_here(store, tmp_path):
    """Workers killed mid-chunk (the third file is a FIFO nobody writes to yet, so the
    chunk's worker waits there): the chunk is encoded again here, after removing what
    its worker had written."""
    processes, paths = _workers_and_a_chunk_ending_in_a_fifo(store, tmp_path)
    with processes:
        future = processes.submit(paths)
        deadline = _wait_at_the_fifo(store)
        workers = worker_processes(os.getpid())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):  # the pool may have stopped it already
                os.kill(worker, signal.SIGKILL)
        while any(alive(worker) for worker in workers) and time.time() < deadline:
            time.sleep(0.02)  # dead: none of them can take the FIFO's writer now
        feeder = threading.Thread(target=(tmp_path / "fifo").write_bytes, args=(b"from the fifo",))
        feeder.start()
        outcomes = processes.result(future)
        feeder.join()
    assert [item.encoded.digest for item in outcomes] == [
        sha(b"content 0"), sha(b"content 1"), sha(b"from the fifo")]
    assert not processes.available  # the rest of the put stays here too
    # the dead worker's temp files are gone; only the new ones remain
    assert sorted(p.name for p in leftover_temp_files(store.root)) == sorted(os.path.basename(item.temp) for item in outcomes)
    store.discard(outcomes)


def test_chunks_whose_outcome_nobody_took_leave_no_temp_files(store, tmp_path):
    """A put interrupted while it waits for a chunk (here: it simply stops asking): once
    the workers have stopped, that chunk's temp files are removed."""
    processes, paths = _workers_and_a_chunk_ending_in_a_fifo(store, tmp_path)
    feeder = threading.Thread(target=(tmp_path / "fifo").write_bytes, args=(b"from the fifo",))
    with processes:
        processes.submit(paths)
        _wait_at_the_fifo(store)
        feeder.start()  # it finishes the chunk while the pool stops
    feeder.join()
    assert not leftover_temp_files(store.root)


def test_each_task_writes_into_a_directory_of_its_own(store, tmp_path):
    """A worker task's temp files go to a directory of that task in tmp/, which nobody
    writes to once its outcome is in hand (see WorkerProcesses.submit); the directories
    are gone after the put, with whatever the caller did not publish."""
    processes = encoder_module.WorkerProcesses(store._encoder)
    if not processes.available:
        pytest.skip("worker processes need two CPUs")
    chunks = [[], []]
    for i in range(6):
        (tmp_path / f"f{i}").write_bytes(b"content %d" % i)
        chunks[i % 2].append(str(tmp_path / f"f{i}"))
    with processes:
        outcomes = [processes.result(processes.submit(chunk)) for chunk in chunks]
        homes = [{os.path.dirname(item.temp) for item in outcome} for outcome in outcomes]
        assert all(len(home) == 1 for home in homes) and homes[0] != homes[1]
        assert all(Path(home.pop()).parent == store.tmp_dir for home in homes)
        assert [item.encoded.digest for item in outcomes[0]] == [sha(b"content %d" % i) for i in (0, 2, 4)]
        store.discard(outcomes[0])  # the second chunk's files are left to the directory's removal
    assert not leftover_temp_files(store.root)
