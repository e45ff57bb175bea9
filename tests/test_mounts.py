"""End-to-end mounts: put → push → a fresh store mounts the same remote → get, over a
directory, nginx WebDAV and SeaweedFS S3; plus the faults a user will hit."""

import itertools
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.reliability import leftover_temp_files, sha
from tests.servers import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY, EXIT_REMOTE = 2, 3, 4, 5


@pytest.fixture(params=["directory", "webdav", "s3"])
def remote(request, tmp_path):
    """(url, env) for a fresh, empty remote of each kind."""
    if request.param == "directory":
        path = tmp_path / "remote-dir"
        path.mkdir()
        return str(path), {}
    if request.param == "webdav":
        return request.getfixturevalue("webdav_remote").url, {}
    s3 = request.getfixturevalue("s3_remote")
    return s3.url, s3_env(s3.settings.s3_endpoint)


def s3_env(endpoint: str, secret: str = S3_SECRET_KEY) -> dict:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": S3_REGION}


def store_runner(blobctl, path: Path, env: dict):
    def run(*args, **kwargs):
        return blobctl("--store", path, *args, env={**env, "BLOBCTL_REMOTE_TIMEOUT": "10s",
                                                    "BLOBCTL_REMOTE_RETRIES": "1"}, **kwargs)
    return run


def test_push_then_fresh_store_reads_through(blobctl, tmp_path, remote):
    url, env = remote
    alice = store_runner(blobctl, tmp_path / "alice", env)
    bob = store_runner(blobctl, tmp_path / "bob", env)
    big = os.urandom(9 << 20)  # multipart on S3
    small = b"hello team\n"
    alice("mount", "team", url, check=True)
    alice("put", "--name", "team/big.bin", "-", input=big, check=True)
    alice("put", "--name", "team/docs/readme", "-", input=small, check=True)
    alice("put", "--name", "private/notes", "-", input=b"local only", check=True)
    assert json.loads(alice("mount", "--json").out)[0]["unpushed"] == 2
    assert alice("push", "--dry-run").text.split() == ["team/big.bin", "team/docs/readme"]
    report = json.loads(alice("push", "--json", check=True).out)
    assert report[0]["objects"] == 2 and report[0]["refs"] == 2 and report[0]["skipped"] == 0
    again = json.loads(alice("push", "--json", check=True).out)
    assert again[0]["objects"] == 0 and again[0]["refs"] == 0
    assert json.loads(alice("mount", "--json").out)[0]["unpushed"] == 0

    bob("mount", "team/", url, check=True)
    assert bob("get", "team/big.bin", check=True).out == big
    assert bob("get", "team/docs/readme", check=True).out == small
    assert bob("get", "private/notes").code == EXIT_NOT_FOUND
    stats = json.loads(bob("stat", "--json").out)
    assert stats["counters"]["remote_hits"] == 2 and stats["objects"] == 2
    assert bob("get", sha(big), check=True).out == big  # now a local hit
    stats = json.loads(bob("stat", "--json").out)
    assert stats["counters"]["local_hits"] == 1 and stats["counters"]["remote_hits"] == 2
    mount_row = json.loads(bob("mount", "--json").out)[0]
    assert mount_row["fetched_objects"] == 2 and mount_row["fetched_bytes"] > 9 << 20 // 2


def test_hash_prefix_falls_through_to_mounts_that_can_list(blobctl, tmp_path, remote):
    """A short hash someone printed resolves on the remote as a full hash does; plain
    HTTP cannot be searched by prefix, and the error says so."""
    url, env = remote
    alice = store_runner(blobctl, tmp_path / "alice", env)
    bob = store_runner(blobctl, tmp_path / "bob", env)
    alice("mount", "team", url, check=True)
    data = os.urandom(3000)
    digest = alice("put", "--name", "team/x", "-", input=data, check=True).text.strip()
    alice("push", check=True)
    bob("mount", "team", url, check=True)
    result = bob("get", digest[:8])
    if url.startswith("http"):
        assert result.code == EXIT_NOT_FOUND and "cannot be searched by hash prefix" in result.err
        return
    assert result.code == 0 and result.out == data
    assert bob("get", digest[:8].upper(), check=True).out == data  # now local
    assert bob("get", "0000" if not digest.startswith("0000") else "ffff").code == EXIT_NOT_FOUND


def test_hash_prefix_on_a_remote_can_be_ambiguous_or_unanswered(blobctl, tmp_path):
    remote = tmp_path / "remote"
    alice = store_runner(blobctl, remote, {})
    seen: dict[str, bytes] = {}
    for i in itertools.count():  # two contents whose hashes share 4 hex digits
        data = b"%d" % i
        if (first := seen.setdefault(sha(data)[:4], data)) is not data:
            break
    for content in (first, data):
        alice("put", "-", input=content, check=True)
    bob = store_runner(blobctl, tmp_path / "bob", {})
    bob("mount", "team", remote, "--read-only", check=True)
    ambiguous = bob("get", sha(data)[:4])
    assert ambiguous.code == EXIT_USAGE and "ambiguous: 2 objects" in ambiguous.err
    assert bob("get", sha(data)[:12], check=True).out == data
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bob_offline = store_runner(blobctl, tmp_path / "bob", {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"})
    bob_offline("mount", "far", "s3://bucket/x", check=True)
    assert bob_offline("get", sha(data)[:12], check=True).out == data  # the other mount answers
    unanswered = bob_offline("get", "ffffffff")  # the object may be on the one that cannot
    assert unanswered.code == EXIT_REMOTE and "Connection refused" in unanswered.err


def test_pull_prefix_for_offline_use(blobctl, tmp_path, remote):
    url, env = remote
    alice = store_runner(blobctl, tmp_path / "alice", env)
    bob = store_runner(blobctl, tmp_path / "bob", env)
    alice("mount", "data", url, check=True)
    blobs = {f"data/set/{i}": os.urandom(1000 + i) for i in range(5)}
    for name, data in blobs.items():
        alice("put", "--name", name, "-", input=data, check=True)
    alice("push", check=True)
    bob("mount", "data", url, check=True)
    if url.startswith("http"):  # plain HTTP has no listing: a clear usage error, nothing fetched
        result = bob("pull", "data/")
        assert result.code == EXIT_USAGE and "list" in result.err
        assert json.loads(bob("stat", "--json").out)["objects"] == 0
        return
    assert bob("pull", "data/", "--jobs", "0").code == EXIT_USAGE
    pulled = json.loads(bob("pull", "data/", "--jobs", "2", "--json", check=True).out)
    assert pulled == [{"target": "data/", "names": 5, "fetched": 5, "bytes": pulled[0]["bytes"], "present": 0,
                       "error": None}]
    bob("umount", "data", check=True)  # offline from here
    for name, data in blobs.items():
        assert bob("get", name, check=True).out == data
    assert json.loads(bob("stat", "--json").out)["names"] == 5


def test_pull_by_key_over_http(blobctl, tmp_path, webdav_remote):
    alice = store_runner(blobctl, tmp_path / "alice", {})
    bob = store_runner(blobctl, tmp_path / "bob", {})
    alice("mount", "", webdav_remote.url, check=True)
    alice("put", "--name", "x/y", "-", input=b"payload", check=True)
    alice("push", check=True)
    bob("mount", "", webdav_remote.url, check=True)
    assert json.loads(bob("pull", "x/y", "--json", check=True).out)[0]["fetched"] == 1
    assert bob("pull", "x/").code == EXIT_USAGE  # cannot list over plain HTTP


def test_static_http_site_is_a_read_only_remote(blobctl, tmp_path, static_site):
    """A store directory copied to any static web server works as a remote."""
    maker = store_runner(blobctl, tmp_path / "maker", {})
    data = os.urandom(50_000)
    maker("put", "--name", "releases/v1.tar", "-", input=data, check=True)
    for sub in ("objects", "refs"):
        shutil.copytree(tmp_path / "maker" / sub, static_site.root / sub)
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "", f"{static_site.url}/", "--read-only", check=True)  # the whole store, as published
    assert user("get", "releases/v1.tar", check=True).out == data
    assert user("get", sha(data)[:10]).out == data  # prefix works once the object is local
    result = user("put", "--name", "releases/v2.tar", "-", input=b"new")
    assert result.code == EXIT_USAGE and "read-only" in result.err
    assert json.loads(user("stat", "--json").out)["objects"] == 1
    for spelling in ("releases", "releases/", "releases/v1.tar"):
        assert user("push", spelling).code == EXIT_USAGE  # every spelling of a read-only prefix
    # a '' fallback that cannot list does not stop a prefix pull from a mount that can
    team = tmp_path / "team"
    store_runner(blobctl, team, {})("put", "--name", "x", "-", input=b"team data", check=True)
    user("mount", "team", team, "--read-only", check=True)
    pulled = user("pull", "team/", "--json")
    assert pulled.code == 0 and json.loads(pulled.out)[0]["names"] == 1 and "plain HTTP" in pulled.err


def test_push_check_gives_a_remote_what_it_lost_and_other_mounts_go_on(blobctl, tmp_path):
    """The records of what a remote holds are not proof: a remote that lost an object
    (or holds a damaged copy) gets it again from push --check, never from plain push.
    And a mount that cannot be pushed to does not stop the others."""
    remote, gone = tmp_path / "remote", tmp_path / "gone"
    remote.mkdir()
    alice = store_runner(blobctl, tmp_path / "alice", {})
    alice("mount", "team", remote, check=True)
    data = os.urandom(5000)
    digest = alice("put", "--name", "team/x", "-", input=data, check=True).text.strip()
    alice("push", check=True)
    (remote / "objects" / digest[:2] / digest[2:]).unlink()
    assert json.loads(alice("push", "--json", check=True).out)[0]["objects"] == 0  # as recorded
    assert json.loads(alice("push", "--check", "--json", check=True).out)[0]["objects"] == 1
    bob = store_runner(blobctl, tmp_path / "bob", {})
    bob("mount", "team", remote, "--read-only", check=True)
    assert bob("get", "team/x", check=True).out == data

    alice("mount", "lost", gone, check=True)  # a directory that is not there
    alice("put", "--name", "lost/y", "-", input=b"y", check=True)
    alice("put", "--name", "team/z", "-", input=b"z", check=True)
    result = alice("push", "--json")
    assert result.code == EXIT_REMOTE and str(gone) in result.err
    rows = {row["prefix"]: row for row in json.loads(result.out)}
    assert rows["team/"]["refs"] == 1 and (remote / "refs" / "z").exists()
    assert rows["team/"]["error"] is None and str(gone) in rows["lost/"]["error"]  # scripts see which mount failed
    assert f"blobctl: error: {rows['lost/']['error']}" in result.err


@pytest.mark.parametrize("command", ["get", "pull"])  # pull verifies in its publishing thread
@pytest.mark.parametrize("lie", ["other-object", "truncated", "trailing-bytes", "garbage"])
def test_lying_remote_is_never_cached(blobctl, tmp_path, lie, command):
    remote_dir = tmp_path / "remote"
    maker = store_runner(blobctl, remote_dir, {})
    digest = maker("put", "--name", "x", "-", input=b"the real content" * 1000, check=True).text.strip()
    other = maker("put", "-", input=b"another content!" * 1000, check=True).text.strip()
    victim = remote_dir / "objects" / digest[:2] / digest[2:]
    body = victim.read_bytes()
    lies = {"other-object": (remote_dir / "objects" / other[:2] / other[2:]).read_bytes(),
            "truncated": body[: len(body) // 2], "trailing-bytes": body + b"\0\0\0",
            "garbage": os.urandom(len(body))}
    victim.write_bytes(lies[lie])
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "", remote_dir, "--read-only", check=True)
    result = user(*(["get", "x"] if command == "get" else ["pull", ""]))
    assert result.code == EXIT_INTEGRITY and digest in result.err and "not cached" in result.err
    assert "fsck" not in result.err  # local repair cannot mend the remote's copy
    assert result.out == b"" if command == "get" else body not in result.out  # pull: its report
    assert not any((tmp_path / "user" / "objects").rglob("*/*"))
    assert not leftover_temp_files(tmp_path / "user")


def test_push_writes_refs_only_after_every_object(blobctl, tmp_path):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    alice = store_runner(blobctl, tmp_path / "alice", {})
    alice("mount", "", remote_dir, check=True)
    digests = [alice("put", "--name", f"n{i}", "-", input=os.urandom(100), check=True).text.strip()
               for i in range(6)]
    blocked = remote_dir / "objects" / digests[3][:2]
    blocked.mkdir(parents=True)
    blocked.chmod(0o500)
    try:
        result = blobctl("--store", tmp_path / "alice", "push", env={"BLOBCTL_REMOTE_RETRIES": "0"}) \
            if os.geteuid() != 0 else None
        if result is None:  # root ignores permissions: make the shard a file instead
            blocked.chmod(0o700)
            blocked.rmdir()
            blocked.write_bytes(b"not a directory")
            result = alice("push")
        assert result.code != 0 and "Traceback" not in result.err
        assert not (remote_dir / "refs").exists() or not any((remote_dir / "refs").iterdir())
    finally:
        if blocked.is_dir():
            blocked.chmod(0o700)
        else:
            blocked.unlink()
    report = json.loads(alice("push", "--json", check=True).out)[0]
    assert report["refs"] == 6 and report["objects"] + report["skipped"] == 6 and report["skipped"] >= 1
    assert sorted(p.name for p in (remote_dir / "refs").iterdir()) == [f"n{i}" for i in range(6)]


def test_unreachable_remote_is_one_line_and_bounded(blobctl, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens
    user = store_runner(blobctl, tmp_path / "user", {})
    user("put", "--name", "local/keep", "-", input=b"safe", check=True)
    user("mount", "far", f"http://127.0.0.1:{port}/store", check=True)
    started = time.monotonic()
    result = user("get", "far/thing")
    assert result.code == EXIT_REMOTE and len(result.err.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in result.err and time.monotonic() - started < 60
    assert user("get", "local/keep", check=True).out == b"safe"


def test_s3_wrong_credentials_and_missing_bucket(blobctl, tmp_path, s3_remote):
    endpoint = s3_remote.settings.s3_endpoint
    user = store_runner(blobctl, tmp_path / "user", s3_env(endpoint, secret="wrong-secret-abcdef"))
    user("mount", "s", s3_remote.url, check=True)
    for command in (("get", "s/anything"), ("pull", "s/")):  # a HEAD, and a listing with an XML body
        result = user(*command)
        assert result.code == EXIT_REMOTE and "wrong-secret-abcdef" not in result.err + result.text
        assert "credentials" in result.err and "<?xml" not in result.err, result.err
    user("put", "--name", "s/x", "-", input=b"x", check=True)
    result = user("push")
    assert result.code == EXIT_REMOTE and "credentials" in result.err and "<?xml" not in result.err, result.err
    other = store_runner(blobctl, tmp_path / "other", s3_env(endpoint))
    other("mount", "s", "s3://no-such-bucket-here/x", check=True)
    result = other("get", "s/anything")
    assert result.code == EXIT_REMOTE and "does not exist" in result.err


def test_mount_errors(blobctl, store_dir):
    assert blobctl("mount", "x", "ftp://host/path").code == EXIT_USAGE
    for typo in ("s3:/bucket", "http://", "s3://", "s3://bucket/a//b", "s3://bucket/a/./b", "s3://bucket/../b"):
        assert blobctl("mount", "x", typo).code == EXIT_USAGE
    blobctl("mount", "rel", "relative/remote", check=True)  # recorded absolute: the same from anywhere
    assert json.loads(blobctl("mount", "--json").out)[0]["remote"] == os.path.abspath("relative/remote")
    blobctl("umount", "rel", check=True)
    assert blobctl("mount", "../x", "/tmp").code == EXIT_USAGE
    blobctl("mount", "x", "/tmp/somewhere", check=True)
    assert blobctl("mount", "x/", "/tmp/other").code == EXIT_USAGE  # already mounted
    for spelling in ("/tmp/somewhere/", "file:///tmp/somewhere", "/tmp/../tmp/somewhere"):
        twice = blobctl("mount", "y", spelling)  # one remote's refs/ cannot serve two prefixes
        assert twice.code == EXIT_USAGE and "already mounted at x/" in twice.err
    blobctl("mount", "web", "https://user:s3cret@example.com/r/", check=True)
    twice = blobctl("mount", "web2", "https://EXAMPLE.com/r")
    assert twice.code == EXIT_USAGE and "already mounted at web/" in twice.err and "s3cret" not in twice.err
    blobctl("umount", "web", check=True)
    assert blobctl("umount", "nope").code == EXIT_NOT_FOUND
    assert blobctl("umount", "x", check=True).code == 0
    assert blobctl("push").code == EXIT_NOT_FOUND  # nothing mounted
    (store_dir / "config.toml").write_text('[[mounts]]\nprefix = "a"\nremote = "gopher://x"\n')
    result = blobctl("stat")
    assert result.code == EXIT_USAGE and "config.toml:1" in result.err and "gopher" in result.err


def test_credentials_in_urls_are_masked(blobctl, webdav_remote):
    url = webdav_remote.url.replace("http://", "http://user:hunter2secret@")
    blobctl("mount", "t", url, check=True)
    listing = blobctl("mount").text + blobctl("mount", "--json").text
    assert "hunter2secret" not in listing and "127.0.0.1" in listing


def test_an_s3_url_with_credentials_is_refused_without_showing_them(blobctl):
    """S3 takes no user:password@ part: it became part of the bucket name, the mount
    table showed s3://bucket/pre (another bucket), and every error showed the secret."""
    result = blobctl("mount", "t", "s3://AKIAKEY:hunter2secret@bucket/pre")
    assert result.code == EXIT_USAGE and "holds no credentials" in result.err
    assert "hunter2secret" not in result.err + result.text
    assert "bucket" not in blobctl("mount").text  # nothing was mounted


def test_pull_keeps_what_it_verified_when_one_name_fails(blobctl, tmp_path):
    remote_dir = tmp_path / "remote"
    maker = store_runner(blobctl, remote_dir, {})
    blobs = {f"n{i}": os.urandom(5000 + i) for i in range(4)}
    digests = {name: maker("put", "--name", name, "-", input=data, check=True).text.strip()
               for name, data in blobs.items()}
    bad = digests["n2"]
    (remote_dir / "objects" / bad[:2] / bad[2:]).write_bytes(b"not a zstd frame")
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "team", remote_dir, "--read-only", check=True)
    result = user("pull", "team/")
    assert result.code == EXIT_INTEGRITY and bad in result.err
    for name, data in blobs.items():
        if name != "n2":
            assert user("get", f"team/{name}", check=True).out == data
    stats = json.loads(user("stat", "--json").out)
    assert stats["objects"] == 3 and stats["names"] == 3
    assert not leftover_temp_files(tmp_path / "user")


def test_pull_falls_through_to_the_next_mount_when_one_sends_damaged_data(blobctl, tmp_path):
    """Small objects are verified by pull's publishing thread after the download: a
    damaged copy there must still fall through to the next mount, as a read does."""
    data = os.urandom(5000)
    good, damaged = tmp_path / "good", tmp_path / "damaged"
    digest = store_runner(blobctl, good, {})("put", "-", input=data, check=True).text.strip()
    store_runner(blobctl, damaged, {})("put", "--name", "x", "-", input=data, check=True)
    (damaged / "objects" / digest[:2] / digest[2:]).write_bytes(b"not a zstd frame")
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "team", damaged, "--read-only", check=True)
    user("mount", "spare", good, "--read-only", check=True)
    pulled = json.loads(user("pull", "team/", "--json", check=True).out)
    assert pulled[0]["fetched"] == 1
    assert user("get", "team/x", check=True).out == data


def test_a_mount_written_by_hand_with_a_bad_s3_url_breaks_only_its_own_lookups(blobctl, store_dir):
    """mount refuses such a URL; one already in a config must not make the store unusable,
    only the lookups that need that mount fail, with one line (a hash prefix matching
    nothing local is looked for in every mount)."""
    blobctl("put", "--name", "local", "-", input=b"mine", check=True)
    with open(store_dir / "config.toml", "a") as config:
        config.write('[[mounts]]\nprefix = "p/"\nremote = "s3://bucket/a//b"\n')
    assert blobctl("get", "local", check=True).out == b"mine"
    for key in ("p/x", "abcd1234"):
        broken = blobctl("get", key)
        assert broken.code == EXIT_USAGE and "invalid S3 remote" in broken.err and len(broken.err.splitlines()) == 1
    blobctl("umount", "p", check=True)


def test_pull_of_several_targets_reports_each_and_pulls_past_a_bad_one(blobctl, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for remote, name in ((first, "a"), (second, "b")):
        store_runner(blobctl, remote, {})("put", "--name", name, "-", input=name.encode(), check=True)
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "one", first, "--read-only", check=True)
    user("mount", "two", second, "--read-only", check=True)
    result = user("pull", "one/", "no-such-key", "two/", "--json")
    assert result.code == EXIT_NOT_FOUND and "no-such-key" in result.err
    rows = json.loads(result.out)
    assert [row["target"] for row in rows] == ["one/", "no-such-key", "two/"]
    assert rows[0]["error"] is None and rows[2]["error"] is None and "no-such-key" in rows[1]["error"]
    assert user("get", "one/a", check=True).out == b"a" and user("get", "two/b", check=True).out == b"b"


def test_damaged_remote_ref_says_how_to_mend_it_on_the_remote(blobctl, tmp_path):
    """fsck checks only the local store, so the hint for a remote's ref must not send
    the user there."""
    remote = tmp_path / "remote"
    store_runner(blobctl, remote, {})("put", "--name", "x", "-", input=b"data", check=True)
    (remote / "refs" / "x").write_bytes(b"not a hash\n")
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "team", remote, "--read-only", check=True)
    result = user("get", "team/x")
    assert result.code == EXIT_INTEGRITY
    assert "'refs/x' on" in result.err and "is damaged" in result.err
    assert "fsck" not in result.err and "push" in result.err and "delete refs/x on the remote" in result.err


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "damaged"])
def test_pull_streams_large_objects_through_verification(blobctl, tmp_path, damaged):
    """An object over mounts.VERIFY_WHOLE_MAX is verified by the worker while it streams."""
    from blobctl.mounts import VERIFY_WHOLE_MAX

    big = os.urandom(VERIFY_WHOLE_MAX + (1 << 20))  # incompressible: stays over the limit
    remote_dir = tmp_path / "remote"
    digest = store_runner(blobctl, remote_dir, {})("put", "--name", "big", "-", input=big, check=True).text.strip()
    stored = remote_dir / "objects" / digest[:2] / digest[2:]
    assert stored.stat().st_size > VERIFY_WHOLE_MAX
    if damaged:
        body = bytearray(stored.read_bytes())
        body[len(body) // 2] ^= 0xFF
        stored.write_bytes(bytes(body))
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "team", remote_dir, "--read-only", check=True)
    result = user("pull", "team/")
    if damaged:
        assert result.code == EXIT_INTEGRITY and digest in result.err and "not cached" in result.err
        assert json.loads(user("stat", "--json").out)["objects"] == 0
    else:
        assert result.code == 0, result.err
        user("umount", "team", check=True)
        assert user("get", digest, check=True).out == big
    assert not leftover_temp_files(tmp_path / "user")


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "damaged"])
def test_pull_of_names_sharing_an_object_fetches_it_once_and_never_binds_it_missing(blobctl, tmp_path, damaged):
    data = os.urandom(3000)
    remote_dir = tmp_path / "remote"
    maker = store_runner(blobctl, remote_dir, {})
    names = [f"n{i}" for i in range(20)]
    for name in names:
        digest = maker("put", "--name", name, "-", input=data, check=True).text.strip()
    if damaged:
        (remote_dir / "objects" / digest[:2] / digest[2:]).write_bytes(b"not a zstd frame")
    user = store_runner(blobctl, tmp_path / "user", {})
    user("mount", "team", remote_dir, "--read-only", check=True)
    result = user("pull", "team/", "--json")
    if damaged:
        assert result.code == EXIT_INTEGRITY
        assert not (tmp_path / "user" / "refs").exists() or not any((tmp_path / "user" / "refs").rglob("n*"))
    else:
        assert result.code == 0, result.err
        report = json.loads(result.out)[0]
        assert (report["names"], report["fetched"]) == (20, 1)
        user("umount", "team", check=True)
        for name in names:
            assert user("get", f"team/{name}", check=True).out == data
    assert user("fsck").code == 0


def drop_from_remote(url: str, env: dict, key: str) -> None:
    """Delete one key from a remote behind blobctl's back (a lifecycle rule, a cleanup)."""
    import urllib.parse
    import urllib.request

    if url.startswith("http"):
        with urllib.request.urlopen(urllib.request.Request(f"{url}/{key}", method="DELETE"), timeout=10):
            return
    if url.startswith("s3://"):
        import obstore

        from tests.servers import admin_store

        parsed = urllib.parse.urlparse(url)
        obstore.delete(admin_store(env["AWS_ENDPOINT_URL"], parsed.netloc), f"{parsed.path.strip('/')}/{key}")
        return
    (Path(url) / key).unlink()


def test_gc_keeps_a_pushed_name_whose_remote_lost_its_object(blobctl, tmp_path, remote):
    """Records of what a remote holds go stale when it loses objects: gc asks the remote
    before it evicts a pushed name's object, keeps what is gone there (with a warning
    naming it), and a plain push then publishes it again; after that gc may evict it,
    and a get fetches it back."""
    url, env = remote
    alice = store_runner(blobctl, tmp_path / "alice", env)
    alice("mount", "team", url, check=True)
    lost, kept = os.urandom(30_000), os.urandom(30_000)
    alice("put", "--name", "team/lost", "-", input=lost, check=True)
    alice("put", "--name", "team/kept", "-", input=kept, check=True)
    alice("push", check=True)
    drop_from_remote(url, env, f"objects/{sha(lost)[:2]}/{sha(lost)[2:]}")

    collected = alice("gc", "--max-size", "0", "--grace", "0", "--json")
    assert collected.code == 0, collected.err
    plan = json.loads(collected.out)
    assert plan["evict"]["hashes"] == [sha(kept)] and plan["kept"]["unpushed"]["objects"] == 1, plan
    assert "team/lost" in collected.err and "blobctl push" in collected.err, collected.err
    assert alice("get", "team/lost", check=True).out == lost
    assert json.loads(alice("push", "--json", check=True).out)[0]["objects"] == 1
    again = json.loads(alice("gc", "--max-size", "0", "--grace", "0", "--json", check=True).out)
    assert again["evict"]["hashes"] == [sha(lost)]
    assert alice("get", "team/lost", check=True).out == lost  # from the remote
    assert alice("get", "team/kept", check=True).out == kept


def test_gc_keeps_pushed_names_it_cannot_confirm(blobctl, tmp_path, s3_remote):
    """A remote that cannot be asked (here: wrong credentials) confirms nothing: gc keeps
    every pushed name's object, says why in one warning, and keeps the records (a push
    with the right credentials has nothing to do)."""
    endpoint = s3_remote.settings.s3_endpoint
    alice = store_runner(blobctl, tmp_path / "alice", s3_env(endpoint))
    alice("mount", "team", s3_remote.url, check=True)
    for number in range(3):
        alice("put", "--name", f"team/{number}", "-", input=os.urandom(10_000), check=True)
    alice("put", "-", input=os.urandom(10_000), check=True)  # a cache entry: no remote to ask
    alice("push", check=True)
    locked_out = store_runner(blobctl, tmp_path / "alice", s3_env(endpoint, secret="wrong-secret-abcdef"))
    collected = locked_out("gc", "--max-size", "0", "--grace", "0", "--json")
    assert collected.code == 0, collected.err
    plan = json.loads(collected.out)
    assert plan["executed"]["evicted"] == 1 and plan["kept"]["unpushed"]["objects"] == 3, plan
    warnings = collected.err.strip().splitlines()
    assert len(warnings) == 1 and "cannot confirm" in warnings[0] and "credentials" in warnings[0], warnings
    assert "wrong-secret-abcdef" not in collected.err
    assert json.loads(alice("push", "--json", check=True).out)[0]["objects"] == 0


def test_automatic_gc_waits_briefly_on_a_mount_that_does_not_answer(blobctl, tmp_path):
    """The automatic gc after a put asks a mount once, briefly, whether it holds what
    it would evict: a mount that accepts connections and never answers holds the put up
    for one short timeout, not remote_timeout x (remote_retries + 1) per planning round,
    and what it could not confirm stays."""
    import functools
    import http.server
    import threading

    remote = tmp_path / "remote"
    remote.mkdir()
    alice = store_runner(blobctl, tmp_path / "alice", {})
    alice("mount", "team", remote, check=True)
    for number in range(5):
        alice("put", "--name", f"team/{number}", "-", input=os.urandom(20_000), check=True)
    alice("push", check=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(remote)))
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bob_store = tmp_path / "bob"
    bob = functools.partial(blobctl, "--store", bob_store)  # default remote_timeout and retries
    bob("mount", "team", f"http://127.0.0.1:{port}", "--read-only", check=True)
    bob("pull", *(f"team/{number}" for number in range(5)), check=True)  # plain HTTP cannot list
    server.shutdown()
    server.server_close()
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", port))
        silent.listen(64)
        bob("config", "set", "max_size", "50 kB", check=True)
        bob("config", "set", "gc_grace", "0s", check=True)
        started = time.monotonic()
        result = bob("put", "-", input=os.urandom(20_000))
        took = time.monotonic() - started
    assert result.code == 0, result.err
    assert result.err.count("cannot confirm") == 1, result.err
    assert took < 25, f"the put waited {took:.0f} s on a mount that does not answer"
    assert len(json.loads(bob("ls", "--json").out)) == 5  # every pulled name still readable locally
