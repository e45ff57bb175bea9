"""Pulls from S3 (a real SeaweedFS), with the store in-process so that reads can be
counted. packed-refs: a pull takes a name's hash from the pack only when the remote's
listing confirms it (the ref's MD5), so a stale, forged or oversized pack costs requests,
never a wrong name. Bodies held whole in memory are verified and written without a copy,
and still never cached when damaged."""

from __future__ import annotations

import hashlib
import io

import pytest

from blobctl import packed_refs
from blobctl.backends import Backend
from blobctl.backends.common import HeldBody
from blobctl.errors import IntegrityError
from blobctl.config import Config
from blobctl.store import Store
from tests.reliability import leftover_temp_files, sha
from tests.servers import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY


def test_parse_keeps_only_well_formed_lines_and_render_sorts():
    a, b = sha(b"a"), sha(b"b")
    data = f"{b} team/b\n{a} a\nnot a line\n{a.upper()} upper\n{a}\n{a[:-1]} short\n".encode() + b"\xff\xfe\n"
    assert packed_refs.parse(data) == {"team/b": b, "a": a}
    assert packed_refs.render({"team/b": b, "a": a}) == f"{a} a\n{b} team/b\n".encode()
    assert packed_refs.parse(packed_refs.render({"x": a})) == {"x": a}


def test_an_entry_holds_only_for_the_exact_ref_content():
    digest = sha(b"x")
    assert packed_refs.holds(digest, hashlib.md5(f"{digest}\n".encode()).hexdigest())
    assert not packed_refs.holds(digest, hashlib.md5(digest.encode()).hexdigest())
    assert not packed_refs.holds(digest, None)


class CountingReads:
    """A real backend, with the keys read through it recorded."""

    def __init__(self, backend):
        self.backend, self.reads = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    read_bytes = Backend.read_bytes  # both read through open_read below
    read_at_most = Backend.read_at_most

    def open_read(self, key):
        self.reads.append(key)
        return self.backend.open_read(key)


@pytest.fixture
def open_store(s3_remote, tmp_path, monkeypatch):
    """Opens a store at tmp_path/NAME with the test's bucket mounted at 'team'."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_remote.settings.s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", S3_REGION)
    opened = []

    def open_one(name: str) -> Store:
        root = tmp_path / name
        root.mkdir()
        (root / "config.toml").write_text(f'[[mounts]]\nprefix = "team"\nremote = "{s3_remote.url}"\n')
        opened.append(Store(Config.load(str(root))))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def push_names(store: Store, contents: dict[str, bytes]) -> None:
    for name, data in contents.items():
        store.put_stream(io.BytesIO(data), name=f"team/{name}")
    store.overlay.push()


def pull_counting(store: Store) -> list[str]:
    """Pull everything under team/ into `store`; the keys it read from the remote."""
    mount = store.overlay.mounts[0]
    counting = CountingReads(store.overlay.backend(mount))
    store.overlay._backends[mount.prefix] = counting
    (report,) = store.overlay.pull(["team/"])
    if report.failure is not None:
        raise report.failure
    return counting.reads


def remote_of(store: Store):
    return store.overlay.backend(store.overlay.mounts[0])


def test_pull_takes_hashes_from_the_pack_instead_of_reading_each_ref(open_store):
    contents = {f"n{i}": b"content %d" % i for i in range(6)} | {"sub/deep": b"deep"}
    push_names(open_store("alice"), contents)
    bob = open_store("bob")
    assert packed_refs.parse(remote_of(bob).read_bytes(packed_refs.PACK_KEY, 1 << 20)) == {
        name: sha(data) for name, data in contents.items()}

    reads = pull_counting(bob)

    assert [key for key in reads if not key.startswith("objects/")] == [packed_refs.PACK_KEY]
    for name, data in contents.items():
        assert bob.read_ref(f"team/{name}") == sha(data)
        assert bob.has_object(sha(data))


def test_stale_and_forged_pack_entries_are_read_from_their_refs(open_store):
    """Another push changed refs/b without updating the pack, and someone wrote a wrong
    hash for 'a' into it: both names are read from their refs, the others are not."""
    contents = {"a": b"A", "b": b"B", "c": b"C"}
    alice = open_store("alice")
    push_names(alice, contents)
    remote = remote_of(alice)
    remote.write("refs/b", io.BytesIO(f"{sha(b'A')}\n".encode()), 65)
    pack = packed_refs.parse(remote.read_bytes(packed_refs.PACK_KEY, 1 << 20))
    pack["a"] = sha(b"C")
    forged = packed_refs.render(pack)
    remote.write(packed_refs.PACK_KEY, io.BytesIO(forged), len(forged))
    bob = open_store("bob")

    reads = pull_counting(bob)

    assert sorted(key for key in reads if key.startswith("refs/")) == ["refs/a", "refs/b"]
    assert [bob.read_ref(f"team/{n}") for n in "abc"] == [sha(b"A"), sha(b"A"), sha(b"C")]


def test_a_pack_too_large_for_a_small_push_is_left_alone(open_store, monkeypatch):
    """The budget bounds what a push of few names reads and rewrites; the pack's other
    entries stay good hints and the new name is read from its ref."""
    monkeypatch.setattr(packed_refs, "MIN_BUDGET", 100)
    monkeypatch.setattr(packed_refs, "BUDGET_FACTOR", 2)
    alice = open_store("alice")
    push_names(alice, {f"n{i}": b"content %d" % i for i in range(10)})
    remote = remote_of(alice)
    before = remote.read_bytes(packed_refs.PACK_KEY, 1 << 20)
    assert len(packed_refs.parse(before)) == 10

    push_names(alice, {"late": b"late"})

    assert remote.read_bytes(packed_refs.PACK_KEY, 1 << 20) == before
    bob = open_store("bob")
    reads = pull_counting(bob)
    assert [key for key in reads if key.startswith("refs/")] == ["refs/late"]
    assert bob.read_ref("team/late") == sha(b"late") and bob.read_ref("team/n3") == sha(b"content 3")


def test_a_pull_ignores_a_pack_beyond_its_budget(open_store, monkeypatch):
    contents = {f"n{i}": b"content %d" % i for i in range(4)}
    push_names(open_store("alice"), contents)
    monkeypatch.setattr(packed_refs, "MIN_BUDGET", 10)
    monkeypatch.setattr(packed_refs, "LINE_ALLOWANCE", 1)
    monkeypatch.setattr(packed_refs, "BUDGET_FACTOR", 1)
    bob = open_store("bob")

    reads = pull_counting(bob)

    assert sorted(key for key in reads if key.startswith("refs/")) == [f"refs/{n}" for n in sorted(contents)]
    assert all(bob.read_ref(f"team/{n}") == sha(d) for n, d in contents.items())


def test_a_held_body_reads_like_a_file_and_lends_its_buffer():
    body = bytes(range(256)) * 40
    held = HeldBody(body)
    assert held.read(10) == body[:10] and held.read(300) == body[10:310]
    assert held.read() == body[310:] and held.read(5) == b""
    held.close()
    view = held.view()
    assert view.obj is body and bytes(view) == body  # the caller's buffer, not a copy, even once closed


def test_a_damaged_object_held_in_memory_is_not_cached(open_store):
    """The bucket's copy of one object is replaced by garbage: that name fails with an
    integrity error, the others are pulled, and nothing damaged or temporary is left."""
    contents = {f"n{i}": b"content %d " % i * 100 for i in range(4)}
    alice = open_store("alice")
    push_names(alice, contents)
    bad = sha(contents["n2"])
    garbage = b"not a zstd frame" * 10
    remote_of(alice).write(f"objects/{bad[:2]}/{bad[2:]}", io.BytesIO(garbage), len(garbage))
    bob = open_store("bob")

    with pytest.raises(IntegrityError, match=bad):
        pull_counting(bob)

    assert not bob.has_object(bad) and bob.read_ref("team/n2") is None
    for name in ("n0", "n1", "n3"):
        assert bob.read_ref(f"team/{name}") == sha(contents[name])
    assert not leftover_temp_files(bob.root)


def test_a_pull_of_names_that_clash_binds_one_and_refuses_the_other(open_store):
    """Two pushes from two stores leave refs/x and refs/x/y in the bucket (S3 has no
    directories). A pull binds one of the two (whichever it fetched first), refuses the
    other with a warning (pull exits 1), and binds the rest."""
    contents = {"team/x": b"x", "team/x/y": b"x/y"}
    push_names(open_store("alice"), {"x": b"x", "good": b"good"})
    push_names(open_store("bob"), {"x/y": b"x/y"})
    carol = open_store("carol")
    (report,) = carol.overlay.pull(["team/"])
    refused = report.failure
    assert "did not bind 1 remote name(s): team/x" in str(refused)
    assert refused.exit_code == 1 and carol.read_ref("team/good") == sha(b"good")
    bound = [name for name, data in contents.items() if carol.read_ref(name) == sha(data)]
    assert len(bound) == 1 and f"{(set(contents) - set(bound)).pop()} (see" in str(refused)
