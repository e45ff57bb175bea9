"""A lying, failing or slow remote (scenario 11): a tiny HTTP server on 127.0.0.1 serves
a real store but misbehaves on purpose. Nothing it sends is cached, the error is one
clear line, and the command ends in bounded time."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import leftover_temp_files, report, run_in, sha

EXIT_INTEGRITY, EXIT_REMOTE = 4, 5
TIMEOUT, RETRIES = 1, 2
#: Slowest acceptable failure: every attempt timing out, plus backoff and start-up.
BOUND = TIMEOUT * (RETRIES + 1) * 2 + 5


class LyingHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of a store laid out under `root`; the first path segment picks the lie."""

    root: Path
    requests: dict[str, int]

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        mode, _, key = self.path.lstrip("/").partition("/")
        self.requests[mode] = self.requests.get(mode, 0) + 1
        path = self.root / key
        if mode == "error-503":
            return self.reply(503, b"try later")
        if mode == "slow-headers":
            time.sleep(TIMEOUT * 3)
        if not path.is_file():
            return self.reply(404, b"")
        data = path.read_bytes()
        is_object = key.startswith("objects/")
        if mode == "wrong-bytes" and is_object:
            data = bytes(b ^ 0x01 for b in data)
        if mode == "truncated" and is_object:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        if mode == "trickle" and is_object and body:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(len(data)):  # each byte well within the timeout, the whole never
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(TIMEOUT / 4)
            return
        self.reply(200, data, body)

    def reply(self, status: int, data: bytes, body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def lying_server(tmp_path) -> Iterator[tuple[str, Path, dict]]:
    """(base URL, store root it serves, request counts per mode)."""
    root = tmp_path / "served"
    handler = type("Handler", (LyingHandler,), {"root": root, "requests": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, handler.requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode,expected", [
    ("wrong-bytes", EXIT_INTEGRITY), ("truncated", EXIT_REMOTE), ("error-503", EXIT_REMOTE),
    ("slow-headers", EXIT_REMOTE), ("trickle", EXIT_REMOTE)])
def test_lying_remote_is_never_cached_and_fails_in_bounded_time(tmp_path, lying_server, mode, expected):
    base, root, requests = lying_server
    content = os.urandom(4000) + b"remote content " * 200
    assert run_in(root, "put", "--name", "x", "-", input=content).code == 0
    store = tmp_path / "user"
    assert run_in(store, "mount", "m", f"{base}/{mode}", "--read-only").code == 0
    env = {"BLOBCTL_REMOTE_TIMEOUT": str(TIMEOUT), "BLOBCTL_REMOTE_RETRIES": str(RETRIES)}
    started = time.monotonic()
    result = run_in(store, "get", "m/x", env=env, timeout=120)
    elapsed = time.monotonic() - started
    lines = result.err.strip().splitlines()
    assert result.code == expected and result.out == b"", result.err
    assert len(lines) == 1 and "Traceback" not in result.err
    assert base.split("//")[1] in lines[0] or sha(content) in lines[0]
    assert elapsed < BOUND, f"{mode} took {elapsed:.1f} s"
    assert not any((store / "objects").rglob("*/*")) and leftover_temp_files(store) == []
    if mode == "error-503":
        assert requests[mode] == RETRIES + 1
    assert run_in(store, "put", "--name", "local", "-", input=b"still works").code == 0
    report(11, f"lying remote ({mode})",
           f"exit {result.code} in {elapsed:.1f} s (bound {BOUND} s, timeout {TIMEOUT} s, "
           f"{RETRIES} retries), {requests.get(mode, 0)} requests, 0 objects cached")
