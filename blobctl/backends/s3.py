"""A remote in an S3 bucket (AWS or any S3-compatible server), through obstore.

obstore (Rust object_store) streams reads, uploads large values as multipart in parts it
retries itself, does conditional create (If-None-Match: *) and imports in ~15 ms.

Settings come from RemoteSettings (config: blobctl's settings, else the AWS_* variables).
Path-style addressing, so custom endpoints (SeaweedFS, MinIO, Ceph) work without DNS tricks.

`settings.timeout` bounds connecting and each wait for data (a stalled server), not a
whole transfer, so a 1 GiB download is not cut off; TRANSFER_CEILING caps a transfer.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from typing import BinaryIO

from blobctl.backends.base import Backend, RemoteSettings
from blobctl.backends.common import (CHUNK_SIZE, FIRST_BACKOFF, MAX_BACKOFF, HeldBody, buffered, iter_exact,
                                     mask_url, redact)
from blobctl.errors import BlobctlError, NotFoundError, RemoteError, UsageError

#: Values up to this size go in one PUT (conditional create possible); larger ones are
#: streamed as a multipart upload in parts of this size (S3's minimum part is 5 MiB).
PART_SIZE = 8 * 1024 * 1024
#: Parts in flight at once: bounds memory to about PART_SIZE * (this + 1).
PART_CONCURRENCY = 4
TRANSFER_CEILING = datetime.timedelta(hours=6)
#: Bodies up to this size are read in one call rather than streamed: per byte it costs
#: half the CPU of obstore's chunk stream (pull is CPU-bound), for bounded memory per job.
WHOLE_READ_MAX = 4 * 1024 * 1024
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


class S3Backend(Backend):
    """Keys are object names under `s3://bucket/prefix`; see the module docstring."""

    def __init__(self, url: str, *, settings: RemoteSettings, read_only: bool = False):
        super().__init__(mask_url(url).rstrip("/"), read_only=read_only)  # never a secret in a message
        from obstore.store import S3Store  # lazily: local commands never pay for it

        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise UsageError(f"invalid S3 remote URL {self.url!r}: no bucket", "use s3://bucket or s3://bucket/prefix")
        self.bucket = bucket
        self.endpoint = settings.s3_endpoint
        self._secrets = (settings.s3_secret_access_key, settings.s3_session_token)
        config = {
            "region": settings.s3_region,
            "access_key_id": settings.s3_access_key_id,
            "secret_access_key": self._secrets[0],
            "session_token": self._secrets[1],
            "endpoint": self.endpoint,
            "virtual_hosted_style_request": False,
        }
        timeout = datetime.timedelta(seconds=settings.timeout)
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix.strip("/") or None,
                config={name: value for name, value in config.items() if value is not None},
                client_options={
                    "allow_http": bool(self.endpoint and self.endpoint.lower().startswith("http://")),
                    "connect_timeout": timeout,
                    "read_timeout": timeout,
                    "timeout": TRANSFER_CEILING,
                },
                retry_config={
                    "max_retries": settings.retries,
                    "backoff": {"init_backoff": datetime.timedelta(seconds=FIRST_BACKOFF),
                                "max_backoff": datetime.timedelta(seconds=MAX_BACKOFF), "base": 2},
                    "retry_timeout": timeout * (settings.retries + 1) + datetime.timedelta(seconds=MAX_BACKOFF),
                },
            )
        except ValueError as exc:  # a prefix S3 cannot hold ('a//b', 'a/./b') in a config written by hand
            raise UsageError(f"invalid S3 remote {self.url!r}: {str(exc).splitlines()[0]}",
                             "unmount it and mount a valid URL") from None
        self._bucket_seen = False

    # -- error mapping ------------------------------------------------------------------
    def _error(self, exc: Exception, action: str, key: str) -> Exception:
        """One clear line for an obstore failure; only the free-text reason could carry a
        secret, so it is scrubbed as a last guard."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        text = str(exc)
        where = mask_url(f"s3://{self.bucket}") + (f" at {mask_url(self.endpoint)}" if self.endpoint else "")
        if "NoSuchBucket" in text:
            return RemoteError(f"S3 bucket {mask_url('s3://' + self.bucket)[5:]!r} does not exist ({where})",
                               "create the bucket or fix the remote URL")
        if isinstance(exc, FileNotFoundError):
            return NotFoundError(f"{key} not found in {self.url}")
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or s3_code(text) in _REFUSED_CODES:
            return RemoteError(f"cannot {action} {key} in {self.url}: access denied ({s3_code(text)})",
                               "check the S3 credentials and the bucket's permissions")
        reason = redact(short_reason(text), *self._secrets)
        return RemoteError(f"cannot {action} {key} in {self.url} ({where}): {reason}",
                           "check the endpoint and that the server is up")

    def _check_bucket(self) -> None:
        """A HEAD 404 carries no body, so a missing bucket would look like a missing key:
        list once per backend to tell them apart."""
        if self._bucket_seen:
            return
        import obstore

        try:
            obstore.list_with_delimiter(self._store)
        except Exception as exc:  # noqa: BLE001 - every obstore failure is mapped
            raise self._error(exc, "list", "") from None
        self._bucket_seen = True

    # -- reads --------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        import obstore

        try:
            result = obstore.get(self._store, key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "read", key) from None
        if result.meta["size"] <= WHOLE_READ_MAX:
            try:
                return HeldBody(result.bytes())
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "read", key) from None

        def chunks() -> Iterator[bytes]:
            stream = result.stream(min_chunk_size=CHUNK_SIZE)
            while True:
                try:
                    chunk = next(stream, None)
                except Exception as exc:  # noqa: BLE001
                    raise self._error(exc, "read", key) from None
                if chunk is None:
                    return
                yield chunk

        return buffered(chunks())

    def size(self, key: str) -> int | None:
        import obstore

        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError:
            self._check_bucket()
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "check", key) from None
        return meta["size"]

    lists_md5 = True

    def list(self, prefix: str) -> Iterator[str]:
        return (key for key, _ in self.list_with_md5(prefix))

    def list_with_md5(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        """obstore lists whole path segments, so list the prefix's directory and filter.
        The ETag of a single-part upload is the MD5 of the value (unless it was encrypted
        with KMS or a customer key: then it matches nothing, which costs only requests);
        a multipart ETag ('...-N') is not."""
        import obstore

        directory = prefix.rpartition("/")[0]
        try:
            for batch in obstore.list(self._store, prefix=directory or None):
                for meta in batch:
                    if meta["path"].startswith(prefix):
                        yield meta["path"], _md5_of_etag(meta.get("e_tag"))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "list", prefix) from None

    # -- writes -------------------------------------------------------------------------
    def _write(self, key: str, source: BinaryIO, size: int, *, if_absent: bool) -> bool:
        """One conditional PUT up to PART_SIZE. Beyond, a streamed multipart upload, which
        S3 cannot make conditional: if_absent is then HEAD first (racy, but large values
        are content-addressed objects, where a racing writer stores the same bytes)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            if size <= PART_SIZE:
                data = b"".join(iter_exact(source, size))
                obstore.put(self._store, key, data, mode="create" if if_absent else "overwrite",
                            use_multipart=False)
                return True
            if if_absent and self.exists(key):
                return False
            obstore.put(self._store, key, iter_exact(source, size, PART_SIZE), use_multipart=True,
                        chunk_size=PART_SIZE, max_concurrency=PART_CONCURRENCY)
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except BlobctlError:  # a short source, or exists() already mapped
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "write", key) from None


def s3_code(text: str) -> str:
    """The S3 error code ('SignatureDoesNotMatch', 'AccessDenied') or the HTTP status."""
    match = re.search(r"<Code>([^<]+)</Code>", text) or re.search(r"status code: (\d{3}[^:]*)", text)
    return match.group(1) if match else "refused"


#: S3 error codes that mean "these credentials may not do this", whatever exception
#: type obstore gave (a listing's 403 arrives as a generic error with the XML body).
_REFUSED_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId",
                            "ExpiredToken", "InvalidToken"})


def short_reason(text: str) -> str:
    """obstore's message is a page of Rust debug output: keep its first line's last clause,
    without the XML body it may end with, but with that body's S3 error code. A timeout or
    a refused connection, which that clause calls "error sending request", is named as
    the HTTP backend names it."""
    if re.search(r"\bkind: Timeout\b", text):
        return "timed out"
    os_error = re.search(r'\bOs \{\s*code: (\d+),.*?message: "([^"]*)"', text, re.S)
    if os_error:
        return f"[Errno {os_error.group(1)}] {os_error.group(2)}"
    first_line = text.split("\n", 1)[0]
    reason = (first_line.rpartition(" - ")[2].strip() or first_line).split(": <?xml", 1)[0]
    code = re.search(r"<Code>([^<]+)</Code>", text)
    return f"{reason} ({code.group(1)})" if code else reason


def _md5_of_etag(etag: str | None) -> str | None:
    """The MD5 hex an ETag may be ('"<32 hex>"'), or None (multipart, or another form)."""
    value = (etag or "").strip('"').lower()
    return value if _MD5_HEX.fullmatch(value) else None
