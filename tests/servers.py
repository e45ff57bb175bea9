"""Real servers for remote-backend tests, as a pytest plugin (`pytest_plugins`).

One nginx (WebDAV + a read-only static location) and one SeaweedFS (S3) per session, on
127.0.0.1 with free ports, in a temp dir, stopped by PID. Each test gets a fresh bucket or
sub-path, so tests never see each other's keys. A missing server program skips the tests,
except under CI, where a silent skip would hide a broken setup: there it fails.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blobctl.backends.base import RemoteSettings

S3_ACCESS_KEY = "testkey"
S3_SECRET_KEY = "testsecret"
S3_REGION = "us-east-1"
#: Short enough that a broken test fails fast, long enough for a busy 2-core machine.
TEST_SETTINGS = RemoteSettings(timeout=10.0, retries=2)


@dataclass(frozen=True)
class RemoteUrl:
    """What a test needs to open a backend: the URL and its settings."""

    url: str
    settings: RemoteSettings


@dataclass(frozen=True)
class StaticSite:
    """A read-only HTTP location and the directory it serves (tests lay files there)."""

    url: str
    root: Path


def require_program(name: str) -> str:
    """Path of a server program, looked up on PATH and beside this Python (a venv's bin/)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"{name} is not installed (see SERVERS.md)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the remote tests, not skip them")
        pytest.skip(message)
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, deadline_s: float) -> None:
    """Poll `ready` until it holds; fail with the log's tail if the server dies or is late."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            state = f"exited with {proc.returncode}" if proc.returncode is not None else "not ready in time"
            stop(proc, signal.SIGKILL)
            pytest.fail(f"{proc.args[0]} {state}; log tail:\n{tail}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Stop our own server by its PID (never by name: other sessions run the same programs)."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    proc.wait(timeout=30)


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# -- nginx: WebDAV at /dav/, read-only at /static/ --------------------------------------
NGINX_CONF = """\
daemon off; master_process off; pid nginx.pid; error_log error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; default_type application/octet-stream;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  server {{ listen 127.0.0.1:{port}; root data; client_max_body_size 0;
    location /dav/ {{ dav_methods PUT DELETE; create_full_put_path on; dav_access user:rw;
                     autoindex off; }}
    location /static/ {{ limit_except GET {{ deny all; }} autoindex off; }} }} }}
"""


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, data dir) of a private nginx; /dav/ accepts PUT/DELETE, /static/ only GET."""
    program = require_program("nginx")
    prefix = tmp_path_factory.mktemp("nginx")
    for sub in ("data/dav", "data/static", "tmp"):
        (prefix / sub).mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(port=port))
    log = prefix / "error.log"
    with open(prefix / "stderr.log", "wb") as stderr:  # the child keeps its own copy of the fd
        proc = subprocess.Popen([program, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(log)],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    wait_until(lambda: accepts_connections(port), proc, prefix / "stderr.log", deadline_s=30)
    yield f"http://127.0.0.1:{port}", prefix / "data"
    stop(proc, signal.SIGTERM)


@pytest.fixture
def webdav_remote(nginx_server: tuple[str, Path]) -> RemoteUrl:
    """A fresh, empty WebDAV sub-path for one test."""
    base, _ = nginx_server
    return RemoteUrl(f"{base}/dav/{uuid.uuid4().hex}", TEST_SETTINGS)


@pytest.fixture
def static_site(nginx_server: tuple[str, Path]) -> StaticSite:
    """A fresh read-only HTTP location (GET/HEAD only) and the directory behind it."""
    base, data = nginx_server
    name = uuid.uuid4().hex
    (data / "static" / name).mkdir()
    return StaticSite(f"{base}/static/{name}", data / "static" / name)


# -- SeaweedFS: S3 -----------------------------------------------------------------------
def seaweed_base_port() -> int:
    """A base port P with P..P+3 and their gRPC twins (P+10000..) all free."""
    for _ in range(100):
        base = random.randrange(20000, 45000)
        if all(port_is_free(p + offset) for p in range(base, base + 4) for offset in (0, 10000)):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


def s3_settings(endpoint: str, secret: str = S3_SECRET_KEY) -> RemoteSettings:
    return RemoteSettings(timeout=TEST_SETTINGS.timeout, retries=TEST_SETTINGS.retries,
                          s3_endpoint=endpoint, s3_region=S3_REGION,
                          s3_access_key_id=S3_ACCESS_KEY, s3_secret_access_key=secret)


def admin_store(endpoint: str, bucket: str):
    """A bare obstore client with the test identity, for setup outside the code under test."""
    from obstore.store import S3Store

    return S3Store(bucket, endpoint=endpoint, region=S3_REGION, access_key_id=S3_ACCESS_KEY,
                   secret_access_key=S3_SECRET_KEY, client_options={"allow_http": True},
                   retry_config={"max_retries": 0})


def create_bucket(endpoint: str, bucket: str) -> bool:
    """CreateBucket through a URL presigned by obstore (no boto3 needed); False on failure."""
    import obstore

    url = obstore.sign(admin_store(endpoint, bucket), "PUT", "", datetime.timedelta(minutes=5))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="PUT"), timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_seaweed(root: Path) -> tuple[str, subprocess.Popen]:
    """Start a private single-process SeaweedFS with one identity in `root`; returns its
    S3 endpoint and process once a bucket can be created and written (stop with SIGKILL)."""
    program = require_program("weed")
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "blobctl", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    p = seaweed_base_port()
    log = root / "weed.log"
    # Each bucket is a collection that grows 7 volumes; -volume.max=0 would cap the volumes
    # at free disk / 64 MB, so on a disk with 8 GB free the 28th test bucket got 500s.
    # Volumes are not preallocated: a high cap costs no disk.
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            [program, f"-logdir={root}", "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p}", f"-volume.port={p + 1}", "-filer", f"-filer.port={p + 2}",
             "-s3", f"-s3.port={p + 3}", f"-s3.config={root / 's3.json'}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
             "-master.volumeSizeLimitMB=64", "-volume.max=10000", "-volume.preStopSeconds=0",
             f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"],
            stdout=output, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{p + 3}"
    wait_until(lambda: accepts_connections(p + 3) and create_bucket(endpoint, "readiness") and _can_put(endpoint),
               proc, log, deadline_s=60)
    return endpoint, proc


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The S3 endpoint URL of a private SeaweedFS shared by the session."""
    endpoint, proc = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield endpoint
    stop(proc, signal.SIGKILL)  # TERM makes weed linger 15-27 s


def _can_put(endpoint: str) -> bool:
    """Volumes come up after the S3 port: ready means an object can be stored."""
    import obstore

    try:
        obstore.put(admin_store(endpoint, "readiness"), "probe", b"ok")
    except Exception:  # any failure just means "not yet"
        return False
    return True


@pytest.fixture
def s3_remote(seaweed_server: str) -> RemoteUrl:
    """A fresh, empty bucket (with a key prefix, as users configure) for one test."""
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    assert create_bucket(seaweed_server, bucket), f"could not create bucket {bucket}"
    return RemoteUrl(f"s3://{bucket}/store", s3_settings(seaweed_server))
