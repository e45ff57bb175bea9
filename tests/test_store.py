"""Unit tests of the Store and its index, in-process."""

import io
import os
import threading
import time
from pathlib import Path

import pytest

from blobctl import encoder as encoder_module
from blobctl import index as index_module
from blobctl import pins
from blobctl import store as store_module
from blobctl.config import Config
from blobctl.errors import BlobctlError, IntegrityError, NotFoundError, UsageError
from blobctl.index import Index
from blobctl.results import Resolved
from blobctl.store import Store
from tests.reliability import leftover_temp_files, read_only_view, sha


def read_all(store, key) -> bytes:
    out = bytearray()
    store.read(store.resolve(key), out.extend)
    return bytes(out)


def test_put_is_content_addressed_and_deduplicated(store):
    first = store.put_stream(io.BytesIO(b"hello"))
    again = store.put_stream(io.BytesIO(b"hello"))
    assert first.digest == again.digest == sha(b"hello")
    assert first.created and not again.created
    path = store.object_path(first.digest)
    assert path == store.root / "objects" / first.digest[:2] / first.digest[2:]
    assert store.index.totals().objects == 1
    assert read_all(store, first.digest) == b"hello"
    assert not leftover_temp_files(store.root)


def test_dedup_records_access(store):
    digest = store.put_stream(io.BytesIO(b"x")).digest
    with store.index.transaction():
        store.index.db.execute("UPDATE objects SET accessed = 1 WHERE hash = ?", (digest,))
    store.put_stream(io.BytesIO(b"x"))
    assert store.index.row(digest).accessed > 1


def test_putting_a_stored_file_again_only_hashes_it(store, tmp_path, monkeypatch):
    source = tmp_path / "f"
    source.write_bytes(b"some text " * 1000)
    first = store.put_path(str(source))
    compressed = []
    real = store_module.codec.compress_small
    monkeypatch.setattr(store_module.codec, "compress_small",
                        lambda *args, **kw: compressed.append(1) or real(*args, **kw))

    again = store.put_path(str(source))

    assert not again.created and again.digest == first.digest and not compressed
    assert again.stored == store.object_path(first.digest).stat().st_size == first.stored
    assert store.index.row(first.digest).stored == first.stored
    assert not leftover_temp_files(store.root)


def _at_publish(monkeypatch, action) -> None:
    """Run `action` where a put has encoded its object and is about to take the lock."""
    monkeypatch.setattr(store_module.racehooks, "pause",
                        lambda point: action() if point == "PUBLISH" else None)


def test_a_name_directory_pruned_before_publishing_is_made_again(store, tmp_path, monkeypatch):
    """An rm of the last name under d/ removes refs/d/, maybe just after a put made it
    for its own d/x: the put must still bind its name, and the index record it."""
    source = tmp_path / "f"
    source.write_bytes(b"named under d/")
    _at_publish(monkeypatch, lambda: (store.refs_dir / "d").rmdir())

    result = store.put_path(str(source), name="d/x")

    assert store.read_ref("d/x") == result.digest
    assert store.index.row(result.digest) is not None and store.index.all_names() == {"d/x": result.digest}


def test_a_stored_object_removed_before_publishing_is_written_again(store, tmp_path, monkeypatch):
    """A gc may delete the object a put found stored before the put takes the lock: the
    put then reads the file again, so the name it binds never dangles."""
    source = tmp_path / "f"
    source.write_bytes(b"some text " * 1000)
    digest = store.put_path(str(source)).digest
    _at_publish(monkeypatch, lambda: store.object_path(digest).unlink())

    result = store.put_path(str(source), name="kept")

    assert result.created and result.name == "kept"
    assert read_all(store, "kept") == source.read_bytes()
    assert not leftover_temp_files(store.root)


def test_a_file_changed_after_its_object_was_removed_is_not_stored(store, tmp_path, monkeypatch):
    source = tmp_path / "f"
    source.write_bytes(b"some text " * 1000)
    digest = store.put_path(str(source)).digest

    def gc_and_edit() -> None:
        store.object_path(digest).unlink()
        source.write_bytes(b"other text " * 1000)

    _at_publish(monkeypatch, gc_and_edit)
    with pytest.raises(UsageError, match="changed while being read"):
        store.put_path(str(source), name="kept")
    monkeypatch.undo()
    assert not store.has_object(digest) and not store.has_object(sha(source.read_bytes()))
    with pytest.raises(NotFoundError):
        store.resolve("kept")
    assert not leftover_temp_files(store.root)


@pytest.mark.parametrize("processes", [None, "fork", "spawn"],
                         ids=["inline", "forked-workers", "spawned-workers"])
def test_put_paths_keeps_order_and_reports_errors(store, tmp_path, monkeypatch, processes):
    """Small files (encoded inline, or past PROCESSES_MIN_FILES by worker processes) and
    larger ones (worker threads, or once they run the worker processes, one of them
    segmented) interleaved, with errors of both kinds, across several publish batches."""
    monkeypatch.setattr(store_module, "PUBLISH_BATCH", 7)
    chunks, started = [], []
    if processes:
        monkeypatch.setattr(store_module, "PROCESSES_MIN_FILES", 5)
        monkeypatch.setattr(store_module, "PROCESS_CHUNK", 4)
        monkeypatch.setattr(encoder_module, "_worker_start_method", lambda: started.append(processes) or processes)
    real_result = encoder_module.WorkerProcesses.result
    monkeypatch.setattr(encoder_module.WorkerProcesses, "result",
                        lambda self, future: chunks.append(future) or real_result(self, future))
    files = []
    for i in range(60):
        f = tmp_path / f"f{i}"
        # the larger files start once the workers run, so no thread is there at their fork
        f.write_bytes(os.urandom(store_module.INLINE_MAX_SIZE + i if i % 7 == 0 and i > 20 else i * 50)
                      + (b"segmented " * (500 << 10) if i == 50 else b""))
        files.append(str(f))
    files.insert(30, str(tmp_path / "missing"))
    files.insert(41, str(tmp_path))  # a directory
    results = list(store.put_paths(files, jobs=3))
    assert len(chunks) >= 8 if processes else not chunks
    assert started == ([processes] if processes else [])
    assert len(results) == 62
    assert isinstance(results[30], NotFoundError) and isinstance(results[41], UsageError)
    for path, result in zip(files, results):
        if path not in (files[30], files[41]):
            assert result.digest == sha(open(path, "rb").read()) and result.source == path
            assert read_all(store, result.digest) == open(path, "rb").read()
    assert not leftover_temp_files(store.root)


def many_small_files(directory: Path, count: int) -> list[str]:
    directory.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        (directory / f"f{i}").write_bytes(b"file %d " % i * 30)
        paths.append(str(directory / f"f{i}"))
    return paths


def test_a_many_file_put_renames_each_object_after_its_own_data_sync(store, tmp_path, monkeypatch):
    """Once the worker processes run, a batch's data sync overlaps the publishing of the
    batch before it; still, no temp file is renamed into place before a sync covering it
    has finished."""
    monkeypatch.setattr(store_module, "PUBLISH_BATCH", 10)
    monkeypatch.setattr(store_module, "PROCESSES_MIN_FILES", 5)
    monkeypatch.setattr(store_module, "PROCESS_CHUNK", 4)
    monkeypatch.setattr(encoder_module, "_worker_start_method", lambda: "fork")
    events, lock = [], threading.Lock()
    real_sync, real_replace = store.syncer.sync_files, os.replace

    def sync_files(paths):
        with lock:
            events.append(("sync-start", set(paths)))
        time.sleep(0.02)  # a slow disk
        real_sync(paths)
        with lock:
            events.append(("sync-end", set(paths)))

    def replace(src, dst):
        with lock:
            events.append(("rename", os.fspath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(store.syncer, "sync_files", sync_files)
    monkeypatch.setattr(store_module.os, "replace", replace)
    results = list(store.put_paths(many_small_files(tmp_path / "in", 120)))
    assert [r.digest for r in results] == [sha((b"file %d " % i) * 30) for i in range(120)]
    synced, syncing, overlapped = set(), set(), 0
    for kind, what in events:
        if kind == "sync-start":
            syncing |= what
        elif kind == "sync-end":
            synced |= what
            syncing -= what
        else:
            assert what in synced, "renamed before its data was synced"
            overlapped += bool(syncing)
    assert len([e for e in events if e[0] == "rename"]) == 120
    assert overlapped >= 10  # renames did run while another batch was being synced
    assert not leftover_temp_files(store.root)


def test_an_interrupted_many_file_put_stops_its_workers_between_files(store, tmp_path, monkeypatch):
    """Ctrl-C reaches put_paths at a yield: the chunks the workers already hold are not
    finished (chunks of large files kept the parent waiting for minutes), only the file
    each is on, and no temp file is left."""
    monkeypatch.setattr(store_module, "PUBLISH_BATCH", 10)
    monkeypatch.setattr(store_module, "PROCESSES_MIN_FILES", 2)
    monkeypatch.setattr(store_module, "PROCESS_CHUNK", 50)
    monkeypatch.setattr(encoder_module, "_worker_start_method", lambda: "fork")
    log = tmp_path / "encoded.log"
    real_encode = encoder_module.Encoder.encode_path

    def slow_encode(self, path, *args, **kwargs):  # runs in the forked workers too
        with open(log, "a") as out:
            out.write(path + "\n")
        time.sleep(0.02)
        return real_encode(self, path, *args, **kwargs)

    monkeypatch.setattr(encoder_module.Encoder, "encode_path", slow_encode)
    puts = store.put_paths(many_small_files(tmp_path / "in", 600))
    next(puts)
    encoded_before = len(log.read_text().splitlines())
    with pytest.raises(KeyboardInterrupt):
        puts.throw(KeyboardInterrupt)
    encoded_after = len(log.read_text().splitlines())
    assert encoded_after - encoded_before < 50  # each worker finished its file, not its chunk
    assert encoded_after < 600
    assert not leftover_temp_files(store.root)


@pytest.mark.parametrize("where", ["submit", "publish"])
def test_no_temp_file_is_left_when_an_interrupt_lands_between_sync_and_publish(store, tmp_path, monkeypatch,
                                                                              where):
    """A batch whose sync was started is owned by put_paths until it is published: an
    interrupt in between (starting the next sync, entering _publish) removes its temp files."""
    monkeypatch.setattr(store_module, "PUBLISH_BATCH", 10)
    monkeypatch.setattr(store_module, "PROCESSES_MIN_FILES", 5)
    monkeypatch.setattr(store_module, "PROCESS_CHUNK", 4)
    monkeypatch.setattr(encoder_module, "_worker_start_method", lambda: "fork")
    calls = []
    if where == "publish":
        real_publish = Store._publish

        def publish(self, batch, name=None, synced=None):
            if synced is not None:
                calls.append(1)
                if len(calls) == 2:
                    raise KeyboardInterrupt
            return real_publish(self, batch, name, synced)

        monkeypatch.setattr(Store, "_publish", publish)
    else:
        import concurrent.futures

        real_submit = concurrent.futures.ThreadPoolExecutor.submit

        def submit(self, fn, *args, **kwargs):
            if self._thread_name_prefix == "blobctl-sync":
                calls.append(1)
                if len(calls) == 3:
                    raise KeyboardInterrupt
            return real_submit(self, fn, *args, **kwargs)

        monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", submit)
    with pytest.raises(KeyboardInterrupt):
        list(store.put_paths(many_small_files(tmp_path / "in", 120)))
    assert len(calls) >= 2
    assert not leftover_temp_files(store.root)


def test_names_bind_resolve_and_conflicts(store):
    digest = store.put_stream(io.BytesIO(b"data")).digest
    store.bind("datasets/a.bin", digest)
    assert store.resolve("datasets/a.bin") == Resolved(digest, "datasets/a.bin")
    assert (store.refs_dir / "datasets" / "a.bin").read_text() == digest + "\n"
    with pytest.raises(UsageError, match="already a name"):
        store.bind("datasets/a.bin/sub", digest)
    with pytest.raises(UsageError, match="other names live under it"):
        store.bind("datasets", digest)
    assert [e.name for e in store.list_names()] == ["datasets/a.bin"]
    assert store.index.totals().names == 1


def test_an_empty_directory_left_in_refs_does_not_block_its_name(store):
    """A bind killed after making refs/a/ for a/b leaves it empty: 'a' can still be bound."""
    digest = store.put_stream(io.BytesIO(b"data")).digest
    (store.refs_dir / "left" / "over").mkdir(parents=True)
    store.bind("left/over", digest)
    with pytest.raises(UsageError, match="other names live under it"):
        store.bind("left", digest)  # left/ holds a name
    store.remove("left/over")
    (store.refs_dir / "left").mkdir(exist_ok=True)
    store.bind("left", digest)
    assert store.read_ref("left") == digest


def test_an_emptied_object_file_is_replaced_by_the_next_put_of_its_content(store, tmp_path):
    """No object is 0 bytes: an emptied one (a crash of another tool, a full disk) is
    damage a put of the same content can mend, from a stream or a file."""
    for label, put in (("stream", lambda data: store.put_stream(io.BytesIO(data))),
                       ("file", lambda data: store.put_path(str(_written(tmp_path / label, data))))):
        data = f"content put from a {label}".encode()
        digest = put(data).digest
        store.object_path(digest).write_bytes(b"")
        again = put(data)
        assert again.created and read_all(store, digest) == data
        assert store.index.row(digest).stored == store.object_path(digest).stat().st_size > 0


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_resolve_prefix_and_ambiguity(store):
    digests = [store.put_stream(io.BytesIO(str(i).encode())).digest for i in range(300)]
    target = digests[0]
    assert store.resolve(target[:10]).digest == target
    assert store.resolve("sha256:" + target).digest == target
    shared = {}
    for d in digests:
        shared.setdefault(d[:4], []).append(d)
    clash = next((p for p, ds in shared.items() if len(ds) > 1), None)
    if clash:
        with pytest.raises(UsageError, match="ambiguous"):
            store.resolve(clash)
    with pytest.raises(NotFoundError):
        store.resolve("ffff" if not any(d.startswith("ffff") for d in digests) else "0000ffff")
    with pytest.raises(UsageError):
        store.resolve("sha256:xyz")


def test_resolve_takes_upper_case_hashes_after_names(store):
    """Some tools print hashes in upper case: a key that is not a name resolves as the
    hash (or prefix) in lower case; a name spelt that way still wins."""
    digest = store.put_stream(io.BytesIO(b"upper")).digest
    assert store.resolve(digest.upper()).digest == digest
    assert store.resolve(digest[:8].upper()).digest == digest
    assert store.resolve("sha256:" + digest.upper()).digest == digest
    other = store.put_stream(io.BytesIO(b"other")).digest
    store.bind(digest[:8].upper(), other)
    assert store.resolve(digest[:8].upper()) == (other, digest[:8].upper())
    with pytest.raises(NotFoundError) as short:
        store.resolve(digest[:3])
    assert "at least 4 hex digits" in short.value.hint


def test_damaged_object_is_an_integrity_error(store):
    digest = store.put_stream(io.BytesIO(b"important" * 1000)).digest
    path = store.object_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=digest):
        read_all(store, digest)


def test_export_leaves_no_partial_file_on_damage(store, tmp_path):
    digest = store.put_stream(io.BytesIO(os.urandom(1 << 20))).digest
    path = store.object_path(digest)
    path.write_bytes(path.read_bytes()[:-10])
    dest = tmp_path / "out.bin"
    with pytest.raises(IntegrityError):
        store.export(Resolved(digest), dest)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_write_to_verifies_small_objects_before_emitting(store):
    digest = store.put_stream(io.BytesIO(b"abc" * 1000)).digest
    path = store.object_path(digest)
    data = bytearray(path.read_bytes())
    data[-6] ^= 1
    path.write_bytes(bytes(data))
    out = io.BytesIO()
    with pytest.raises(IntegrityError):
        store.write_to(Resolved(digest), out)
    assert out.getvalue() == b""


def test_a_symlink_planted_where_an_object_goes_is_replaced(store, tmp_path):
    """Not followed, not taken for the object: the put writes the real object over it."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the content")
    source = tmp_path / "f"
    source.write_bytes(b"the content")
    target = store.object_path(sha(b"the content"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)
    result = store.put_path(str(source))
    assert result.created and not target.is_symlink()
    assert read_all(store, result.digest) == b"the content"
    assert outside.read_bytes() == b"not the content"


def test_symlinked_shard_is_refused(store, tmp_path):
    digest = store.put_stream(io.BytesIO(b"x")).digest
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = store.objects_dir / digest[:2]
    (shard / digest[2:]).rename(outside / digest[2:])
    shard.rmdir()
    shard.symlink_to(outside)
    with pytest.raises(IntegrityError, match="symlink"):
        read_all(store, digest)


def test_symlinked_ref_dir_is_refused(store, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store.refs_dir / "evil").symlink_to(outside)
    with pytest.raises(UsageError, match="outside"):
        store.bind("evil/x", "a" * 64)
    assert not list(outside.iterdir())


def test_a_ref_that_is_a_symlink_outside_is_refused(store, tmp_path):
    """Neither read through nor bound over: the leaf is checked as well as its directories."""
    outside = tmp_path / "elsewhere"
    outside.write_text("a" * 64 + "\n")
    store.bind("team/ok", store.put_stream(io.BytesIO(b"x")).digest)  # team/ resolved, and remembered
    (store.refs_dir / "team" / "leak").symlink_to(outside)
    with pytest.raises(UsageError, match="outside"):
        store.read_ref("team/leak")
    with pytest.raises(UsageError, match="outside"):
        store.bind("team/leak", "b" * 64)
    assert outside.read_text() == "a" * 64 + "\n"


def test_counters_and_totals(store):
    digest = store.put_stream(io.BytesIO(b"abc")).digest
    read_all(store, digest)
    with pytest.raises(NotFoundError):
        store.open_object("b" * 64)
    store.close()
    summary = Store(store.config).summary()
    assert summary.objects == 1 and summary.size == 3
    assert summary.counters["local_hits"] == 1 and summary.counters["misses_total"] == 1
    assert summary.counters["objects_written"] == 1


def test_remove_name_and_object(store):
    """In one command (one Store, which reads refs/ once): the name removed first no
    longer keeps the object."""
    digest = store.put_stream(io.BytesIO(b"abc")).digest
    store.bind("a/b", digest)
    with pytest.raises(UsageError, match="still named"):
        store.remove(digest)
    assert store.remove("a/b").kind == "name"
    assert not (store.refs_dir / "a").exists()
    assert store.remove(digest[:8]).kind == "object"
    assert not store.has_object(digest) and store.index.totals().objects == 0


def test_remove_object_respects_names_the_index_does_not_know(store):
    """refs/ is the truth: a ref restored or copied in by hand (so not in the index's
    mirror), even one whose name is no longer valid, keeps rm from deleting its object."""
    digest = store.put_stream(io.BytesIO(b"precious")).digest
    (store.refs_dir / "restored").mkdir()
    (store.refs_dir / "restored" / "p").write_text(digest + "\n")
    with pytest.raises(UsageError, match="still named by restored/p"):
        store.remove(digest[:8])
    (store.refs_dir / "restored" / "p").unlink()
    (store.refs_dir / "bad name").write_text(digest + "\n")
    with Store(store.config) as later:  # refs/ is read once per command
        with pytest.raises(UsageError, match="still named by bad name"):
            later.remove(digest)
        assert later.has_object(digest)
        assert later.remove(digest, force=True).kind == "object"


def test_remove_checks_the_names_it_read_again_under_the_lock(store):
    """refs/ is read once per command; a name another command removed meanwhile no
    longer keeps the object, and one bound meanwhile does."""
    first, second, third = (store.put_stream(io.BytesIO(data)).digest for data in (b"1", b"2", b"3"))
    store.bind("n2", second)
    assert store.remove(first).kind == "object"  # reads refs/ now
    with Store(store.config) as other:
        other.remove("n2")
        other.bind("n3", third)
    assert store.remove(second).kind == "object"
    with pytest.raises(UsageError, match="still named by n3"):
        store.remove(third)


def test_bind_many_refuses_a_name_clashing_with_another_of_the_same_batch(store):
    """A remote may hold both refs/x and refs/x/y (S3 has no directories): the first is
    bound, the other refused (pull warns and exits 1), and no empty directory is left
    where the name x must be a file; in either order."""
    digest = store.put_stream(io.BytesIO(b"x")).digest
    for pairs, kept in (([("x", digest), ("x/y", digest)], "x"), ([("p/q", digest), ("p", digest)], "p/q")):
        refused = []
        store.bind_many(pairs, on_refused=lambda name, exc: refused.append((name, str(exc))))
        assert [name for name, _ in refused] == [n for n, _ in pairs if n != kept]
        assert "already a name" in refused[0][1] or "other names live under it" in refused[0][1]
        assert store.read_ref(kept) == digest and store.index.all_names()[kept] == digest
    assert (store.refs_dir / "x").is_file() and not (store.refs_dir / "p").is_file()


def test_index_is_rebuilt_when_unreadable(store_dir):
    config = Config.load(str(store_dir))
    with Store(config) as store:
        digest = store.put_stream(io.BytesIO(b"payload")).digest
        store.bind("n", digest)
    for leftover in store_dir.glob("index.sqlite*"):
        leftover.unlink()
    (store_dir / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with Store(config) as store:
        totals = store.index.totals()
        assert (totals.objects, totals.size, totals.names) == (1, 7, 1)
    assert list(store_dir.glob("index.sqlite.broken-*"))


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_index_is_rebuilt_when_deleted_or_emptied(store_dir, capsys, damage):
    """Deleting index.sqlite, or truncating it to nothing (which SQLite would take for an
    empty database), must not make stat report an empty store, gc skip max_size, or rm
    miss the names of an object."""
    config = Config.load(str(store_dir))
    with Store(config) as store:
        store.bind("n", store.put_stream(io.BytesIO(b"payload")).digest)
    for leftover in store_dir.glob("index.sqlite*"):
        leftover.unlink()
    if damage == "emptied":
        (store_dir / "index.sqlite").write_bytes(b"")
    with Store(config) as store:
        totals = store.index.totals()
        assert (totals.objects, totals.size, totals.names) == (1, 7, 1)
    assert "was missing or empty; rebuilt" in capsys.readouterr().err
    with Store(config) as store:  # an index that is there is not rebuilt again
        store.index.totals()
    assert capsys.readouterr().err == ""


def test_a_new_store_s_first_named_put_does_not_rebuild(store_dir, capsys):
    """`put --name dir/x` makes refs/dir/ before it first opens the index: an empty
    directory is not data the new index would miss."""
    with Store(Config.load(str(store_dir))) as store:
        store.put_stream(io.BytesIO(b"x"), name="dir/x")
    assert "rebuilt" not in capsys.readouterr().err


def test_an_index_that_appeared_meanwhile_is_not_rebuilt(store_dir, capsys, monkeypatch):
    """A command that found no index may open one another command has just created and
    filled: rebuilding it then could drop that command's rows (seen once in CI with four
    writers on a new store). Only an index that is empty while files exist is rebuilt."""
    config = Config.load(str(store_dir))
    with Store(config) as first:
        first.put_stream(io.BytesIO(b"written by the first command"))
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda path: False if path.name == "index.sqlite" else real_exists(path))
    with Store(config) as second:
        assert second.index.totals().objects == 1
    assert "rebuilt" not in capsys.readouterr().err


def recorded(store) -> dict[tuple[str, str], str]:
    """The index's records of what remotes hold, as stored: (remote, ref) -> hash."""
    return {(remote, ref): digest for remote, ref, digest
            in store.index.db.execute("SELECT remote, ref, hash FROM remote_refs")}


def test_schema_3_records_lose_their_credentials(store_dir):
    """Schema 3 kept records by the mount's URL as written, in an index others may read:
    upgrading keys them by the URL without credentials, and they still count (the name
    is pushed); records made now never hold credentials either."""
    import sqlite3

    secret_url = "https://alice:s3cr3t-pw@dav.example/store"
    store_dir.mkdir()
    (store_dir / "config.toml").write_text(f'[[mounts]]\nprefix = "team/"\nremote = "{secret_url}"\n')
    config = Config.load(str(store_dir))
    with Store(config) as store:
        digest = store.put_stream(io.BytesIO(b"pushed")).digest
        store.bind("team/x", digest)
    db = sqlite3.connect(store_dir / "index.sqlite", isolation_level=None)  # as schema 3 left it
    db.execute("INSERT INTO remote_refs VALUES (?, ?, ?)", (secret_url, "x", digest))
    db.execute("PRAGMA user_version = 3")
    db.close()
    with Store(config) as store:
        assert recorded(store) == {("https://dav.example/store", "x"): digest}
        assert store.mounted().unpushed(config.mounts[0]) == []
        with store.index.transaction():
            store.index.mark_on_remote(secret_url, [("y", digest)])
        assert recorded(store)[("https://dav.example/store", "y")] == digest
    assert all(b"s3cr3t" not in path.read_bytes() for path in store_dir.glob("index.sqlite*"))


def test_schema_3_records_that_differ_only_in_credentials_and_disagree_are_dropped(store_dir):
    """A password changed under schema 3 left records of one ref under two URLs. Which
    is newer is unknown: keeping the stale one made a local value that was never pushed
    look like a cache entry (push skipped it, pull replaced it). Disagreeing records go
    (the name is unpushed); agreeing ones become one."""
    import sqlite3

    old_url, new_url = "https://alice:old-pw@dav.example/store", "https://alice:new-pw@dav.example/store"
    store_dir.mkdir()
    (store_dir / "config.toml").write_text(f'[[mounts]]\nprefix = "team/"\nremote = "{new_url}"\n')
    config = Config.load(str(store_dir))
    with Store(config) as store:
        kept = store.put_stream(io.BytesIO(b"kept local, never pushed")).digest
        pushed = store.put_stream(io.BytesIO(b"pushed with the new password")).digest
        both = store.put_stream(io.BytesIO(b"pushed under both")).digest
        store.bind("team/x", kept)
        store.bind("team/y", both)
    db = sqlite3.connect(store_dir / "index.sqlite", isolation_level=None)  # as schema 3 left it
    db.executemany("INSERT INTO remote_refs VALUES (?, ?, ?)",
                   [(old_url, "x", kept), (new_url, "x", pushed), (old_url, "y", both), (new_url, "y", both)])
    db.execute("PRAGMA user_version = 3")
    db.close()
    with Store(config) as store:
        assert recorded(store) == {("https://dav.example/store", "y"): both}
        assert store.mounted().unpushed(config.mounts[0]) == [("team/x", kept)]


def test_a_read_only_schema_3_index_still_knows_what_was_pushed(tmp_path):
    """A store this user may only read is read at schema 3 as it is: its records are
    keyed by the URL with credentials, and lookups by the masked URL found none, so
    every pushed name looked unpushed (mount, push --dry-run, gc --dry-run)."""
    import sqlite3

    secret_url = "https://alice:s3cr3t-pw@dav.example/store"
    source, view = tmp_path / "store", tmp_path / "read-only"
    source.mkdir()
    (source / "config.toml").write_text(f'[[mounts]]\nprefix = "team/"\nremote = "{secret_url}"\n')
    with Store(Config.load(str(source))) as store:
        pushed = store.put_stream(io.BytesIO(b"pushed")).digest
        local = store.put_stream(io.BytesIO(b"local")).digest
        store.bind("team/x", pushed)
        store.bind("team/y", local)
    db = sqlite3.connect(source / "index.sqlite", isolation_level=None)  # as schema 3 left it
    db.execute("INSERT INTO remote_refs VALUES (?, ?, ?)", (secret_url, "x", pushed))
    db.execute("PRAGMA user_version = 3")
    db.close()
    with read_only_view(source, view):
        config = Config.load(str(view))
        with Store(config) as store:
            assert store.index.db.execute("PRAGMA user_version").fetchone()[0] == 3  # not upgraded
            assert store.mounted().unpushed(config.mounts[0]) == [("team/y", local)]
            assert store.index.remote_hash(config.mounts[0].remote, "x") == pushed


def test_schema_1_push_records_carry_over_to_the_mount_of_each_name(store_dir):
    """Upgrading must not forget what was pushed: every name would look unpushed, and
    the next push would put older values back over a teammate's newer ones."""
    import sqlite3

    store_dir.mkdir()
    (store_dir / "config.toml").write_text('[[mounts]]\nprefix = "team/"\nremote = "/tmp/team-remote"\n')
    config = Config.load(str(store_dir))
    Store(config).index.close()
    db = sqlite3.connect(store_dir / "index.sqlite", isolation_level=None)  # as schema 1 left it
    db.execute("DROP TABLE remote_refs")
    db.execute("CREATE TABLE pushed (name TEXT PRIMARY KEY, hash TEXT NOT NULL) WITHOUT ROWID")
    db.executemany("INSERT INTO pushed VALUES (?, ?)", [("team/x", "a" * 64), ("local/y", "b" * 64)])
    db.execute("PRAGMA user_version = 1")
    db.close()
    with Store(config) as store:
        assert recorded(store) == {("/tmp/team-remote", "x"): "a" * 64}
        tables = {name for (name,) in store.index.db.execute("SELECT name FROM sqlite_master")}
        assert "pushed" not in tables and "remote_names" not in tables


def test_schema_2_records_go_to_the_name_on_the_remote_under_the_mount_covering_them(store_dir):
    """Schema 2 kept records by local name; schema 3 by the name on the remote (so that
    mounting a remote at another prefix does not make names look pushed). Each record
    goes to the mount of its remote covering the name now; the others are dropped (those
    names look unpushed: the next push checks the remote again)."""
    import sqlite3

    store_dir.mkdir()
    (store_dir / "config.toml").write_text('[[mounts]]\nprefix = "team/"\nremote = "/tmp/team-remote"\n\n'
                                           '[[mounts]]\nprefix = ""\nremote = "/tmp/all-remote"\n')
    config = Config.load(str(store_dir))
    Store(config).index.close()
    db = sqlite3.connect(store_dir / "index.sqlite", isolation_level=None)  # as schema 2 left it
    db.execute("DROP TABLE remote_refs")
    db.execute("CREATE TABLE remote_names (remote TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL, "
               "PRIMARY KEY (remote, name)) WITHOUT ROWID")
    db.executemany("INSERT INTO remote_names VALUES (?, ?, ?)", [
        ("/tmp/team-remote", "team/x", "a" * 64), ("/tmp/all-remote", "team/x", "b" * 64),
        ("/tmp/all-remote", "misc/y", "c" * 64), ("/tmp/team-remote", "misc/y", "d" * 64),
        ("/tmp/gone-remote", "team/z", "e" * 64)])
    db.execute("PRAGMA user_version = 2")
    db.close()
    with Store(config) as store:
        assert recorded(store) == {("/tmp/team-remote", "x"): "a" * 64,
                                             ("/tmp/all-remote", "team/x"): "b" * 64,
                                             ("/tmp/all-remote", "misc/y"): "c" * 64}


def test_rebuild_keeps_newer_access_times(store):
    digest = store.put_stream(io.BytesIO(b"z")).digest
    before = store.index.row(digest).accessed
    assert store.rebuild_index() == 1
    assert store.index.row(digest).accessed == before


def test_concurrent_index_writers_keep_exact_totals(store_dir):
    """Threads with their own connections: totals stay exact under contention."""
    config = Config.load(str(store_dir))
    Store(config).close()

    def work(seed):
        with Store(config) as s:
            for i in range(30):
                s.put_stream(io.BytesIO(f"{seed % 2}-{i}".encode()))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index = Index(store_dir / "index.sqlite")
    assert index.totals().objects == 60
    assert index.totals().objects == sum(1 for _ in Store(config).iter_objects())


def test_not_a_store_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(UsageError, match="not a blobctl store"):
        Store(Config.load(str(tmp_path / "junk")))


def test_a_store_being_created_is_not_taken_for_a_foreign_directory(tmp_path):
    """Another command may be creating the store (its directories made, FORMAT not yet
    written), or `config set` may have been killed while writing the first config."""
    root = tmp_path / "new"
    for entry in ("objects", "refs", "tmp"):
        (root / entry).mkdir(parents=True)
    (root / "0123abcd.partial").write_text("max_size = 1")
    store = Store(Config.load(str(root)))
    assert store.put_stream(io.BytesIO(b"first")).created and (root / "FORMAT").exists()


@pytest.mark.parametrize("in_the_way", ["file", "symlink"])
def test_something_in_the_place_of_the_journal_directory_is_replaced(store, tmp_path, in_the_way):
    """tmp/ is blobctl's own; a journal is never written through a symlink out of the store."""
    store.put_stream(io.BytesIO(b"first"))
    journals = store.tmp_dir / "journal"
    journals.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    if in_the_way == "file":
        journals.write_text("not a directory")
    else:
        journals.symlink_to(outside)
    digest = store.put_stream(io.BytesIO(b"second"), name="n").digest
    assert store.read_ref("n") == digest and journals.is_dir() and not journals.is_symlink()
    assert not list(outside.iterdir())


def test_a_directory_holding_files_is_not_taken_for_a_store_being_created(tmp_path):
    root = tmp_path / "mine"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "todo.txt").write_text("my notes")
    with pytest.raises(UsageError, match="not a blobctl store"):
        Store(Config.load(str(root)))


def test_a_leftover_journal_waits_for_the_lock_holder_without_blocking_readers(store_dir, monkeypatch):
    """A journal may be a live writer's (its transaction in progress): a command opening
    the index must not wait for that writer's lock to mend it; the next one does."""
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT", 1)  # waiting would fail the open
    with Store(Config.load(str(store_dir))) as writer:
        digest = writer.put_stream(io.BytesIO(b"committed")).digest
        (store_dir / "tmp" / "journal" / "x.journal").write_text(f"o {digest}\no {'f' * 64}\n")
        (store_dir / "tmp" / "journal" / "dir.journal").mkdir()  # not a journal: ignored
        with writer.index.transaction():
            with Store(Config.load(str(store_dir))) as reader:
                assert reader.index.row(digest) is not None
            assert (store_dir / "tmp" / "journal" / "x.journal").exists()
    with Store(Config.load(str(store_dir))) as later:
        assert later.index.row(digest) is not None
    assert not (store_dir / "tmp" / "journal" / "x.journal").exists()


def test_layout_directories_that_went_missing_are_made_again(store, tmp_path):
    """Tools that drop empty directories (git, some sync tools) may remove tmp/ or pins/."""
    digest = store.put_stream(io.BytesIO(b"kept")).digest
    store.close()
    for directory in ("tmp/journal", "tmp", "pins"):  # empty, all three
        (store.root / directory).rmdir()
    again = Store(store.config)
    assert again.put_stream(io.BytesIO(b"second")).created
    pins.pin(again, digest, None)
    assert read_all(again, digest) == b"kept"


def test_put_after_gc_removed_an_emptied_shard(store):
    """A command caches the shard directories it made; a concurrent gc may remove one
    once it is empty, and the next publish into it must re-create it."""
    digest = store.put_stream(io.BytesIO(b"first")).digest
    shard = store.objects_dir / digest[:2]
    store.remove(digest)
    shard.rmdir()
    assert store.put_stream(io.BytesIO(b"first")).created
    assert read_all(store, digest) == b"first"


def test_a_name_can_replace_a_directory_of_names_in_one_command(store):
    """bind 'a/a', remove it (its directory goes), bind 'a': the end-of-command directory
    sync must not trip over 'refs/a' being a file now (found by the model-based test)."""
    digest = store.put_stream(io.BytesIO(b"")).digest
    store.bind("a/a", digest)
    store.remove("a/a")
    store.bind("a", digest)
    store.close()
    assert (store.refs_dir / "a").read_text() == digest + "\n"


def test_a_busy_index_is_never_set_aside(store_dir, monkeypatch):
    """Only a damaged file is rebuilt: a database another process holds locked is an error
    to retry, and the live index (and its WAL) stays where it is."""
    import sqlite3

    config = Config.load(str(store_dir))
    with Store(config) as first:
        first.put_stream(io.BytesIO(b"kept"))
    holder = sqlite3.connect(store_dir / "index.sqlite", isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        monkeypatch.setattr(index_module, "BUSY_TIMEOUT", 0.1)
        with pytest.raises(Exception) as caught:
            Index(store_dir / "index.sqlite")
        assert "IndexUnreadable" not in type(caught.value).__name__
        assert "retry" in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(store_dir.glob("index.sqlite.broken-*"))
    with Store(config) as again:
        assert again.index.totals().objects == 1


def test_an_index_refused_while_another_process_opens_it_is_retried(tmp_path, monkeypatch):
    """Opening a WAL database another process is closing or recovering can fail at once
    with SQLITE_BUSY, without SQLite's own busy wait (seen in CI with 3 processes)."""
    import sqlite3

    Index(tmp_path / "index.sqlite").close()
    refusals = []
    real = Index._connect

    def refused_twice(path, owner_remote):
        if len(refusals) < 2:
            refusals.append(path)
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise exc
        return real(path, owner_remote)

    monkeypatch.setattr(Index, "_connect", staticmethod(refused_twice))
    index = Index(tmp_path / "index.sqlite")
    assert len(refusals) == 2 and index.totals().objects == 0
    index.close()


def test_index_failures_inside_a_transaction_are_one_clear_error(tmp_path, monkeypatch):
    """A write lock held past the busy timeout, or a full disk at COMMIT, reach the user
    as a BlobctlError naming the index, and the transaction is rolled back."""
    import sqlite3

    from blobctl.errors import BlobctlError

    monkeypatch.setattr(index_module, "BUSY_TIMEOUT", 0.1)
    index = Index(tmp_path / "index.sqlite")
    holder = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(BlobctlError, match="cannot lock the index .*another blobctl command has held it"):
        with index.transaction():
            pass
    holder.execute("ROLLBACK")
    holder.close()

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    with pytest.raises(BlobctlError, match="cannot write the index .*: no space left on device"):
        with index.transaction():
            index.record_many([("a" * 64, 1, 1, 1)])
            raise full
    assert not index.db.in_transaction and index.totals().objects == 0
    index.close()


def _files_outside_tmp(store) -> list[Path]:
    """Files only: the empty shard directory a failed put made may stay."""
    return sorted(path for path in (p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())
                  if path.parts[0] != "tmp")


def _failing(*args, **kwargs):
    raise BlobctlError("cannot write the index: test")


@pytest.mark.parametrize("command", ["put", "named put", "rm name", "rm object", "gc"])
def test_a_command_whose_index_write_fails_changes_no_file(store, tmp_path, monkeypatch, command):
    """The index is written before any file is renamed in or deleted: a read-only or
    failing index then leaves the store as it was (rm reported failure after deleting)."""
    from blobctl import gc

    kept = store.put_stream(io.BytesIO(b"kept"), name="kept").digest
    store.put_stream(io.BytesIO(b"loose"))  # what gc would evict
    before = _files_outside_tmp(store)
    for method in ("record_many", "set_name", "remove_name", "forget", "forget_many"):
        monkeypatch.setattr(store.index, method, _failing)
    with pytest.raises(BlobctlError, match="cannot write the index"):
        if command == "put":
            store.put_stream(io.BytesIO(b"new"))
        elif command == "named put":
            store.put_stream(io.BytesIO(b"new"), name="new")
        elif command == "rm name":
            store.remove("kept")
        elif command == "rm object":
            store.remove(kept, force=True)
        else:
            gc.execute(store, gc.plan(store, max_size=0, grace=0))
    assert _files_outside_tmp(store) == before


def test_a_put_interrupted_before_its_commit_is_recorded_when_the_store_closes(store_dir, monkeypatch):
    """Ctrl-C or SIGTERM after the renames, before COMMIT: the transaction rolls back,
    and closing the store mends the index from the journal before the command ends."""
    def interrupt(point):
        if point == "PUBLISHED":
            raise KeyboardInterrupt

    monkeypatch.setattr(store_module.racehooks, "pause", interrupt)
    with pytest.raises(KeyboardInterrupt), Store(Config.load(str(store_dir))) as store:
        store.put_stream(io.BytesIO(b"interrupted"), name="x")
    monkeypatch.undo()
    with Store(Config.load(str(store_dir))) as store:
        digest = store.read_ref("x")
        assert store.index.row(digest) is not None and store.index.all_names() == {"x": digest}
        assert not leftover_temp_files(store.root)
