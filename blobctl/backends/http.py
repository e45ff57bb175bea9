"""A remote over HTTP(S): GET/HEAD to read any static server; PUT/DELETE to write to a
WebDAV server (e.g. nginx `dav_methods PUT DELETE`).

Client: the standard library's http.client with a small keep-alive pool. It costs no
dependency and no import time, gives exact control of timeouts, of which requests are
retried, and of what is sent (no redirects followed, never a DELETE of a collection).

if_absent: nginx ignores If-None-Match on PUT, so it is HEAD then PUT; two writers racing
can both write. Harmless for content-addressed objects (same bytes); for refs, the
caller must not rely on if_absent over HTTP for mutual exclusion.
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import BinaryIO

from blobctl.backends import check_http_url
from blobctl.backends.base import Backend, RemoteSettings
from blobctl.backends.common import CHUNK_SIZE, TransientError, buffered, iter_exact, mask_url, with_retries
from blobctl.errors import NotFoundError, RemoteError, UsageError

MAX_IDLE_CONNECTIONS = 8
#: Slowest average a download may keep up after its first `timeout` seconds: each wait
#: for data is bounded by the timeout, but a server trickling a byte at a time is not.
MIN_TRANSFER_RATE = 16 * 1024


class HttpBackend(Backend):
    """Keys are paths under the URL's path; see the module docstring."""

    def __init__(self, url: str, *, settings: RemoteSettings, read_only: bool = False):
        super().__init__(mask_url(url).rstrip("/"), read_only=read_only)  # never show credentials
        check_http_url(url)  # a bad one in a config: a usage error when used, not a traceback
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base_path = urllib.parse.quote(urllib.parse.unquote(parts.path.rstrip("/")))
        self._headers = {}
        if parts.username is not None:
            user_pass = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
        self._settings = settings
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- connections --------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self._settings.timeout)

    def _release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Keep the connection for reuse if its response was read to the end."""
        with self._lock:
            if response.isclosed() and not response.will_close and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests -----------------------------------------------------------------------
    def _key_url(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _request(self, method: str, key: str, *, source: BinaryIO | None = None,
                 size: int = 0) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request, retrying transient failures (connection errors, timeouts, 5xx).

        A PUT body is only re-sent if the source can seek back; otherwise it gets one try.
        Returns the connection and the response with its body unread (the caller reads
        it and hands both to _release)."""
        path = f"{self._base_path}/{urllib.parse.quote(key)}"
        what = f"{method} {self._key_url(key)}"
        start = source.tell() if source is not None and source.seekable() else None
        headers = dict(self._headers)
        if source is not None:
            headers["Content-Length"] = str(size)

        def attempt() -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
            conn = self._connection()
            try:
                if source is not None and start is not None:
                    source.seek(start)
                body = iter_exact(source, size) if source is not None else None
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransientError(describe(exc)) from None
            except BaseException:  # e.g. the source ended early: the connection is mid-request
                conn.close()
                raise
            if response.status >= 500:
                response.read()
                self._release(conn, response)
                raise TransientError(f"server error {response.status} {response.reason}")
            return conn, response

        retries = self._settings.retries if source is None or start is not None else 0
        return with_retries(attempt, retries=retries, what=what)

    def _check_status(self, method: str, key: str, response: http.client.HTTPResponse) -> None:
        """NotFoundError for 404, RemoteError for every other non-2xx status."""
        status = response.status
        if 200 <= status < 300:
            return
        url = self._key_url(key)
        if status == 404:
            raise NotFoundError(f"{key} not found at {self.url}")
        if is_collection(response, key):
            raise NotFoundError(f"{key} not found at {self.url}: it is a directory")
        if status in (401, 403):
            raise RemoteError(f"{method} {url} was refused ({status} {response.reason})",
                              "check the credentials in the URL and the server's permissions")
        if status == 405 and method in ("PUT", "DELETE"):
            raise RemoteError(f"{method} {url} is not allowed by the server (405)",
                              "writing needs a WebDAV server with PUT and DELETE enabled")
        raise RemoteError(f"{method} {url} failed: {status} {response.reason}")

    def _simple(self, method: str, key: str, **body) -> http.client.HTTPResponse:
        """A request whose response body is not needed: read it, recycle the connection."""
        conn, response = self._request(method, key, **body)
        try:
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RemoteError(f"{method} {self._key_url(key)} failed: {describe(exc)}") from None
        self._release(conn, response)
        return response

    # -- reads --------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        conn, response = self._request("GET", key)
        if response.status != 200:
            response.read()
            self._release(conn, response)
            self._check_status("GET", key, response)
            raise RemoteError(f"GET {self._key_url(key)} answered {response.status} instead of the content")

        def chunks() -> Iterator[bytes]:
            started, received = time.monotonic(), 0
            while True:
                try:
                    chunk = response.read1(CHUNK_SIZE)
                except (OSError, http.client.HTTPException) as exc:
                    raise RemoteError(f"reading {self._key_url(key)} failed midway: {describe(exc)}") from None
                received += len(chunk)
                elapsed = time.monotonic() - started
                if elapsed > self._settings.timeout + received / MIN_TRANSFER_RATE:
                    raise RemoteError(f"reading {self._key_url(key)} stalled: {received} bytes in "
                                      f"{elapsed:.0f} s", "check the server and the network")
                if not chunk:
                    if response.length:  # http.client's read1 ends quietly on a short body
                        raise RemoteError(f"reading {self._key_url(key)} failed midway: the server "
                                          f"closed the connection {response.length} bytes early")
                    return
                yield chunk

        return buffered(chunks(), on_close=lambda: self._release(conn, response))

    def size(self, key: str) -> int | None:
        response = self._simple("HEAD", key)
        if response.status == 404 or is_collection(response, key):
            return None
        self._check_status("HEAD", key, response)
        length = response.getheader("Content-Length")
        return int(length) if length and length.isdigit() else -1

    def list(self, prefix: str) -> Iterator[str]:
        raise UsageError(f"cannot list {self.url}: plain HTTP has no listing",
                         "use a directory or s3:// remote for commands that list keys")

    # -- writes -------------------------------------------------------------------------
    def _write(self, key: str, source: BinaryIO, size: int, *, if_absent: bool) -> bool:
        if if_absent and self.exists(key):
            return False
        self._check_status("PUT", key, self._simple("PUT", key, source=source, size=size))
        return True


def is_collection(response: http.client.HTTPResponse, key: str) -> bool:
    """A directory's URL: servers redirect .../key to .../key/ (nginx answers 301)."""
    return 300 <= response.status < 400 and (response.getheader("Location") or "").endswith(f"/{key}/")


def describe(exc: BaseException) -> str:
    """A short reason for a connection-level failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
