"""fsutil: writes cut into page-cache-friendly slices, and the writeback hint that lets a
large temp file's data reach the disk while it is still being written (the sync before
its rename then waits for the tail only)."""

from __future__ import annotations

import os
import sys

import pytest

from blobctl import fsutil

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")


def test_writeback_is_handed_over_in_steps_that_cover_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "WRITEBACK_STEP", 1 << 20)
    handed = []
    real = fsutil._start_writeback

    def recording(fd, offset, length):
        handed.append((offset, length))
        real(fd, offset, length)  # the real syscall: it must accept what we pass

    monkeypatch.setattr(fsutil, "_start_writeback", recording)
    data = os.urandom(5 << 20)
    with open(tmp_path / "temp", "xb") as file:
        sink = fsutil.Syncer(enabled=True).writing(file)
        for start in range(0, len(data), 300_000):  # writes that do not line up with steps
            sink.write(data[start:start + 300_000])
        assert sink.tell() == len(data)
    assert (tmp_path / "temp").read_bytes() == data
    assert handed[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(handed, handed[1:]))  # contiguous
    assert all(n >= 1 << 20 for _, n in handed)
    assert handed[-1][0] + handed[-1][1] > len(data) - (1 << 20)  # only the tail is left


def test_no_writeback_when_durability_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "WRITEBACK_STEP", 1 << 20)
    handed = []
    monkeypatch.setattr(fsutil, "_start_writeback", lambda *args: handed.append(args))
    with open(tmp_path / "temp", "xb") as file:
        fsutil.Syncer(enabled=False).writing(file).write(bytes(3 << 20))
    assert handed == []
    assert (tmp_path / "temp").stat().st_size == 3 << 20


class _RecordingFile:
    def __init__(self):
        self.writes: list[bytes] = []

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("size", [0, 1, fsutil.WRITE_SLICE, fsutil.WRITE_SLICE + 1, (1 << 20) + 7])
def test_a_sliced_writer_passes_every_byte_in_order_in_slices_of_at_most_write_slice(size):
    data = os.urandom(size)
    file = _RecordingFile()
    assert fsutil.SlicedWriter(file).write(memoryview(data)) == size
    assert b"".join(file.writes) == data
    assert all(0 < len(w) <= fsutil.WRITE_SLICE for w in file.writes)
    assert len(file.writes) == -(-size // fsutil.WRITE_SLICE)


def test_a_large_put_and_get_o_hand_their_data_to_writeback_before_the_final_sync(tmp_path, monkeypatch):
    from blobctl.config import Config
    from blobctl.results import Resolved
    from blobctl.store import Store

    monkeypatch.setattr(fsutil, "WRITEBACK_STEP", 1 << 20)
    handed = []
    monkeypatch.setattr(fsutil, "_start_writeback", lambda fd, offset, length: handed.append(length))
    source = tmp_path / "random"
    source.write_bytes(os.urandom(12 << 20))  # incompressible: ~12 MiB of object
    monkeypatch.setenv("BLOBCTL_DURABILITY", "on")
    with Store(Config.load(str(tmp_path / "store"))) as store:
        result = store.put_path(str(source))
        assert sum(handed) >= result.stored - (1 << 20)
        handed.clear()
        store.export(Resolved(result.digest), tmp_path / "copy")
        assert sum(handed) >= result.size - (1 << 20)
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()


def test_a_new_file_is_written_whole_and_never_over_an_existing_one(tmp_path):
    path = str(tmp_path / "f")
    data = os.urandom(fsutil.WRITE_SLICE * 2 + 5)
    fsutil.write_new_file(path, data)
    assert open(path, "rb").read() == data
    with pytest.raises(FileExistsError):
        fsutil.write_new_file(path, b"other")
    assert open(path, "rb").read() == data


def test_descriptor_named_follows_links_to_this_process_descriptors(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/dev/stdout")
    descriptor_named = fsutil.descriptor_named
    assert descriptor_named("/dev/stdout") == 1
    assert descriptor_named("/dev/fd/5") == 5
    assert descriptor_named("/proc/self/fd/2") == 2
    assert descriptor_named(link) == 1
    assert descriptor_named(tmp_path / "file") is None
    assert descriptor_named("/dev/null") is None
