"""Remote kinds by URL scheme, imported lazily so local commands never load a client."""

from __future__ import annotations

import importlib
import os
import re

from blobctl.backends.base import Backend, RemoteSettings
from blobctl.errors import UsageError

# scheme -> (module, class); the module is imported only when a URL of that scheme is used.
_REGISTRY = {
    "": ("blobctl.backends.directory", "DirectoryBackend"),
    "file": ("blobctl.backends.directory", "DirectoryBackend"),
    "http": ("blobctl.backends.http", "HttpBackend"),
    "https": ("blobctl.backends.http", "HttpBackend"),
    "s3": ("blobctl.backends.s3", "S3Backend"),
}


def url_scheme(url: str) -> str:
    """'s3' for 's3://bucket/x'; '' for a plain path."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def check_url(url: str, *, new: bool = False) -> str:
    """The URL as recorded: UsageError for an empty one, an unknown scheme or one naming
    no host or bucket; a directory path made absolute, so that it means the same
    directory whatever the current one. A `new` one (being mounted) must also have an
    S3 prefix S3 can hold; one already in a config is not refused for that, so that
    the store stays usable (the mount fails when used, and umount removes it)."""
    from blobctl.backends.common import mask_url

    shown = mask_url(url)  # never the credentials of a URL, even a mistyped one
    if not url or any(ord(c) < 32 for c in url):
        raise UsageError(f"invalid remote URL {shown[:80]!r}")
    scheme = url_scheme(url)
    known = ", ".join(f"{s}://" for s in sorted(_REGISTRY) if s)
    if scheme not in _REGISTRY:
        raise UsageError(f"unknown remote URL scheme {scheme!r} in {shown!r}",
                         f"use a directory path or one of {known}")
    if scheme == "":
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", url):  # 's3:/bucket': a URL missing a '/'
            raise UsageError(f"invalid remote {shown!r}: a URL needs '://'", f"use one of {known}")
        return os.path.abspath(os.path.expanduser(url))
    if scheme != "file" and not url.partition("://")[2].strip("/"):
        raise UsageError(f"invalid remote URL {shown!r}: it names no host or bucket")
    if new and scheme == "s3" and "@" in url.partition("://")[2].partition("/")[0]:
        raise UsageError(f"invalid S3 remote URL {shown!r}: an s3:// URL holds no credentials",
                         "set s3.access_key_id and s3.secret_access_key with 'blobctl config set', "
                         "or the AWS_* variables")
    if new and scheme == "s3" and {"", ".", ".."} & set(url.partition("://")[2].strip("/").split("/")[1:]):
        raise UsageError(f"invalid remote URL {shown!r}: an empty, '.' or '..' path segment",
                         "use s3://bucket or s3://bucket/prefix")
    if new and scheme in ("http", "https"):
        check_http_url(url)
    return url


def check_http_url(url: str) -> None:
    """UsageError unless an http(s) URL parses and names a host and a valid port (checked
    when it is mounted, and again when it is used: a config may hold one written by hand)."""
    import urllib.parse

    from blobctl.backends.common import mask_url

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise UsageError(f"invalid HTTP remote URL {mask_url(url)!r}: {exc}") from None
    if not parts.hostname:
        raise UsageError(f"invalid HTTP remote URL {mask_url(url)!r}: no host name")


def remote_identity(url: str) -> str:
    """What a remote URL names, so that two spellings of one remote compare equal: a
    directory by its real path (plain or file://), any other by scheme, host (no
    credentials, lower case) and path (no trailing '/')."""
    import urllib.parse

    scheme = url_scheme(url)
    if scheme in ("", "file"):
        path = url if scheme == "" else urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        return os.path.realpath(os.path.expanduser(path))
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a malformed URL written into a config by hand: only itself
        return url
    return f"{scheme}://{parts.netloc.rpartition('@')[2].lower()}{parts.path.rstrip('/')}"


def open_backend(url: str, settings: RemoteSettings, *, read_only: bool = False) -> Backend:
    """The backend for `url`; UsageError for an unknown scheme."""
    module_name, class_name = _REGISTRY[url_scheme(check_url(url))]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(url, settings=settings, read_only=read_only)


__all__ = ["Backend", "RemoteSettings", "check_url", "open_backend", "url_scheme"]
