"""One contract every remote kind must meet, run against real servers, plus each kind's
failure modes (bad credentials, dead or silent servers, 5xx, escaping symlinks)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from blobctl.backends import Backend, RemoteSettings, open_backend
from blobctl.errors import BlobctlError, NotFoundError, ReadOnlyError, RemoteError, UsageError
from tests.servers import RemoteUrl, StaticSite, admin_store, s3_settings

KINDS = ["directory", "webdav", "s3"]
LARGE = 9 * 1024 * 1024 + 7  # over the S3 single-PUT size: multipart and streamed reads
FAST_FAIL = RemoteSettings(timeout=1.0, retries=1)
#: Generous: failures must come back bounded, not instantly, on a busy machine.
BOUND_S = 30


def payload(size: int) -> bytes:
    return (os.urandom(4096) * (size // 4096 + 1))[:size]


def put(backend: Backend, key: str, data: bytes, **kwargs) -> bool:
    return backend.write(key, io.BytesIO(data), len(data), **kwargs)


def read_all(backend: Backend, key: str) -> bytes:
    with backend.open_read(key) as stream:
        return stream.read()


@pytest.fixture
def remote_url(request: pytest.FixtureRequest, tmp_path) -> RemoteUrl:
    """The URL of a fresh, empty remote of the kind under test (servers start on demand)."""
    kind = request.param
    if kind == "directory":
        (tmp_path / "remote").mkdir()
        return RemoteUrl(str(tmp_path / "remote"), RemoteSettings())
    return request.getfixturevalue({"webdav": "webdav_remote", "s3": "s3_remote"}[kind])


@pytest.fixture
def open_remote(remote_url: RemoteUrl) -> Iterator[Callable[..., Backend]]:
    """Opens backends on the test's remote (read_only=…), closing them afterwards."""
    opened: list[Backend] = []

    def make(read_only: bool = False) -> Backend:
        opened.append(open_backend(remote_url.url, remote_url.settings, read_only=read_only))
        return opened[-1]

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_remote) -> Backend:
    return open_remote()


@pytest.mark.parametrize("remote_url", KINDS, indirect=True)
class TestBackendContract:
    @pytest.mark.parametrize("size", [0, 11, LARGE], ids=["empty", "small", "large"])
    def test_write_then_read_round_trips(self, backend, size):
        data = payload(size)
        assert put(backend, "objects/ab/cdef", data) is True
        assert read_all(backend, "objects/ab/cdef") == data

    def test_overwrite_replaces_the_value(self, backend):
        put(backend, "refs/main", b"old\n")
        assert put(backend, "refs/main", b"new\n") is True
        assert backend.read_bytes("refs/main") == b"new\n"

    def test_open_read_streams_in_pieces(self, backend):
        data = payload(3 * 1024 * 1024)
        put(backend, "objects/ab/big", data)
        with backend.open_read("objects/ab/big") as stream:
            head = stream.read(1000)
            rest = stream.read()
        assert head == data[:1000] and head + rest == data

    def test_exists_and_size(self, backend):
        assert backend.exists("objects/ab/x") is False and backend.size("objects/ab/x") is None
        put(backend, "objects/ab/x", b"x" * 1000)
        assert backend.exists("objects/ab/x") is True and backend.size("objects/ab/x") == 1000
        assert backend.exists("objects/ab") is False  # a "directory" is not a key
        assert backend.size("objects/ab") is None

    def test_reading_a_missing_key_is_not_found(self, backend):
        with pytest.raises(NotFoundError):
            backend.open_read("objects/ab/missing")
        with pytest.raises(NotFoundError):
            backend.read_bytes("refs/missing")
        put(backend, "objects/ab/cdef", b"x")
        with pytest.raises(NotFoundError):
            backend.open_read("objects/ab")  # a "directory" is not a key

    @pytest.mark.parametrize("size", [5, LARGE], ids=["small", "large"])
    def test_if_absent_keeps_the_original(self, backend, size):
        original = payload(size)
        assert put(backend, "objects/ab/x", original, if_absent=True) is True
        assert put(backend, "objects/ab/x", b"other bytes", if_absent=True) is False
        assert read_all(backend, "objects/ab/x") == original

    def test_concurrent_if_absent_has_exactly_one_winner(self, backend, remote_url):
        if remote_url.url.startswith("http"):
            pytest.skip("HTTP if_absent is HEAD-then-PUT: documented as racy")
        bodies = [f"writer {n}\n".encode() for n in range(8)]
        results: list[bool] = [False] * len(bodies)
        start = threading.Barrier(len(bodies))

        def create(n: int) -> None:
            start.wait()
            results[n] = put(backend, "refs/race", bodies[n], if_absent=True)

        threads = [threading.Thread(target=create, args=(n,)) for n in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(True) == 1
        assert backend.read_bytes("refs/race") == bodies[results.index(True)]

    def test_short_source_stores_nothing(self, backend):
        with pytest.raises(BlobctlError, match="source ended"):
            backend.write("objects/ab/short", io.BytesIO(b"abc"), 10)
        assert backend.exists("objects/ab/short") is False

    def test_list_by_prefix(self, backend, remote_url):
        keys = ["objects/ab/1", "objects/ab/2", "objects/cd/3", "refs/main", "refs/team/x"]
        for key in keys:
            put(backend, key, b"v")
        if remote_url.url.startswith("http"):
            with pytest.raises(UsageError, match="cannot list"):
                list(backend.list("objects/"))
            return
        assert sorted(backend.list("")) == keys
        assert sorted(backend.list("objects/")) == keys[:3]
        assert sorted(backend.list("objects/a")) == keys[:2]
        assert sorted(backend.list("refs/team/")) == ["refs/team/x"]
        assert list(backend.list("nothing/")) == []

    def test_listing_with_md5s_gives_the_same_keys_and_only_true_md5s(self, backend, remote_url):
        """An MD5 a listing gives must be that of the value: pulls trust packed-refs
        entries by it. S3 gives them for values sent in one PUT, not for multipart ones."""
        values = {"refs/a": b"one\n", "refs/team/b": b"two\n", "objects/ab/big": payload(LARGE)}
        for key, data in values.items():
            put(backend, key, data)
        if remote_url.url.startswith("http"):
            with pytest.raises(UsageError, match="cannot list"):
                list(backend.list_with_md5("refs/"))
            return
        listed = dict(backend.list_with_md5(""))
        assert sorted(listed) == sorted(backend.list("")) == sorted(values)
        for key, md5 in listed.items():
            assert md5 in (None, hashlib.md5(values[key]).hexdigest())
        assert backend.lists_md5 == remote_url.url.startswith("s3://")
        if backend.lists_md5:
            assert listed["refs/a"] == hashlib.md5(b"one\n").hexdigest()
            assert listed["objects/ab/big"] is None  # multipart: not an MD5
        else:
            assert set(listed.values()) == {None}

    def test_read_only_refuses_writes_and_touches_nothing(self, open_remote):
        writable, read_only = open_remote(), open_remote(read_only=True)
        put(writable, "refs/main", b"kept\n")
        with pytest.raises(ReadOnlyError):
            put(read_only, "refs/main", b"changed\n")
        with pytest.raises(ReadOnlyError):
            put(read_only, "refs/new", b"new\n", if_absent=True)
        assert read_only.read_bytes("refs/main") == b"kept\n"
        assert writable.exists("refs/new") is False

    def test_read_bytes_refuses_more_than_the_limit(self, backend):
        put(backend, "refs/huge", b"x" * 300)
        with pytest.raises(RemoteError, match="larger than 200 bytes"):
            backend.read_bytes("refs/huge")
        assert backend.read_bytes("refs/huge", limit=300) == b"x" * 300


# -- deliberately broken loopback servers ------------------------------------------------
@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopping.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def failing_http() -> Iterator[tuple[str, list[str]]]:
    """(URL, requests seen) of a loopback HTTP server that answers 500 to everything."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_DELETE = answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/store", seen
    server.shutdown()
    server.server_close()
    thread.join()


def assert_remote_error_soon(action: Callable[[], object]) -> RemoteError:
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        action()
    assert time.monotonic() - started < BOUND_S
    return caught.value


# -- S3 ----------------------------------------------------------------------------------
def test_s3_wrong_secret_is_refused_without_showing_it(s3_remote):
    secret = "WRONG-secret-9f8e7d"
    settings = s3_settings(s3_remote.settings.s3_endpoint, secret=secret)
    backend = open_backend(s3_remote.url, settings)
    for action in (lambda: backend.exists("refs/x"), lambda: put(backend, "refs/x", b"x\n"),
                   lambda: backend.open_read("refs/x")):
        error = assert_remote_error_soon(action)
        assert secret not in str(error) and "\n" not in str(error)
        assert "credentials" in str(error)


def test_s3_missing_bucket_is_a_remote_error(s3_remote):
    url = "s3://no-such-bucket-" + s3_remote.url.split("/")[2][2:] + "/store"
    backend = open_backend(url, s3_remote.settings)
    for action in (lambda: backend.exists("refs/x"), lambda: backend.open_read("refs/x"),
                   lambda: put(backend, "refs/x", b"x\n"), lambda: list(backend.list("refs/"))):
        assert "does not exist" in str(assert_remote_error_soon(action))


def test_s3_large_values_go_up_as_multipart(s3_remote):
    import obstore

    backend = open_backend(s3_remote.url, s3_remote.settings)
    put(backend, "objects/ab/big", payload(LARGE))
    put(backend, "objects/ab/small", b"x")
    bucket, _, prefix = s3_remote.url[len("s3://"):].partition("/")
    store = admin_store(s3_remote.settings.s3_endpoint, bucket)
    assert obstore.head(store, f"{prefix}/objects/ab/big")["e_tag"].endswith('-2"')  # 2 parts
    assert "-" not in obstore.head(store, f"{prefix}/objects/ab/small")["e_tag"]


@pytest.mark.parametrize("port_fixture, reason", [("closed_port", "Connection refused"),
                                                   ("silent_port", "timed out")])
def test_s3_dead_endpoint_fails_bounded_and_says_why(request, port_fixture, reason):
    port = request.getfixturevalue(port_fixture)
    settings = RemoteSettings(timeout=1.0, retries=1, s3_endpoint=f"http://127.0.0.1:{port}",
                              s3_region="us-east-1", s3_access_key_id="k", s3_secret_access_key="s3cr3t-value")
    backend = open_backend("s3://bucket/store", settings)
    for action in (lambda: backend.exists("refs/x"), lambda: backend.open_read("refs/x")):
        error = assert_remote_error_soon(action)
        assert "s3cr3t-value" not in str(error) and "\n" not in str(error)
        assert reason in str(error)


# -- HTTP --------------------------------------------------------------------------------
@pytest.mark.parametrize("port_fixture", ["closed_port", "silent_port"])
def test_http_dead_server_fails_bounded_without_showing_credentials(request, port_fixture):
    port = request.getfixturevalue(port_fixture)
    backend = open_backend(f"http://alice:pa55word@127.0.0.1:{port}/store", FAST_FAIL)
    for action in (lambda: backend.exists("refs/x"), lambda: backend.open_read("refs/x"),
                   lambda: put(backend, "refs/x", b"x\n")):
        error = assert_remote_error_soon(action)
        assert "pa55word" not in str(error) and "alice" not in str(error)
        assert f"127.0.0.1:{port}/store/refs/x" in str(error)
        assert ("Connection refused" if port_fixture == "closed_port" else "timed out") in str(error)


def test_http_5xx_is_retried_then_fails(failing_http):
    url, seen = failing_http
    backend = open_backend(url, RemoteSettings(timeout=5.0, retries=2))
    error = assert_remote_error_soon(lambda: backend.open_read("refs/x"))
    assert "500" in str(error) and "3 attempts" in str(error)
    assert seen == ["GET /store/refs/x"] * 3


def test_static_http_server_serves_a_read_only_remote(static_site: StaticSite, request):
    (static_site.root / "refs").mkdir()
    (static_site.root / "refs" / "main").write_bytes(b"abc\n")
    backend = open_backend(static_site.url, RemoteSettings(timeout=5.0, retries=0), read_only=True)
    request.addfinalizer(backend.close)
    assert backend.read_bytes("refs/main") == b"abc\n"
    assert backend.exists("refs/other") is False
    with pytest.raises(ReadOnlyError):
        put(backend, "refs/main", b"x\n")


def test_http_write_refused_by_server_says_check_permissions(static_site: StaticSite, request):
    backend = open_backend(static_site.url, RemoteSettings(timeout=5.0, retries=0))
    request.addfinalizer(backend.close)
    error = assert_remote_error_soon(lambda: put(backend, "refs/main", b"x\n"))
    assert "403" in str(error) and "permissions" in str(error)
    assert not (static_site.root / "refs" / "main").exists()


# -- directory ---------------------------------------------------------------------------
def test_directory_refuses_keys_escaping_through_a_symlink(tmp_path):
    root, outside = tmp_path / "remote", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    (root / "objects").symlink_to(outside)
    backend = open_backend(f"file://{root}", RemoteSettings())
    for action in (lambda: backend.open_read("objects/secret"), lambda: backend.exists("objects/secret"),
                   lambda: put(backend, "objects/new", b"x"),
                   lambda: list(backend.list("objects/"))):
        with pytest.raises(RemoteError, match="outside the remote"):
            action()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"do not touch"


def test_directory_missing_root_is_a_remote_error(tmp_path):
    backend = open_backend(str(tmp_path / "not-mounted"), RemoteSettings())
    with pytest.raises(RemoteError, match="does not exist"):
        put(backend, "refs/main", b"x\n")
    assert not (tmp_path / "not-mounted").exists()


def test_directory_write_leaves_no_temp_files(tmp_path):
    backend = open_backend(str(tmp_path), RemoteSettings())
    put(backend, "objects/ab/x", b"x", if_absent=True)
    put(backend, "objects/ab/x", b"y", if_absent=True)
    put(backend, "refs/main", b"z")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_s3_error_text_keeps_the_s3_code_not_the_xml():
    """A listing's error arrives as one line ending in the XML body's first line."""
    from blobctl.backends.s3 import s3_code, short_reason

    text = ('Generic S3 error: Error performing list request - Server returned non-2xx status code: '
            '400 Bad Request: <?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidBucketName</Code>'
            '<Message>The specified bucket is not valid.</Message></Error>')
    assert short_reason(text) == "Server returned non-2xx status code: 400 Bad Request (InvalidBucketName)"
    assert s3_code(text) == "InvalidBucketName"
