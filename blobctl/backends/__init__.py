"""Remote kinds by URL scheme, imported lazily so local commands never load a client."""

from __future__ import annotations

import importlib

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


def check_url(url: str) -> str:
    """UsageError for an empty URL or an unknown scheme, before anything is recorded."""
    if not url or any(ord(c) < 32 for c in url):
        raise UsageError(f"invalid remote URL {url[:80]!r}")
    scheme = url_scheme(url)
    if scheme not in _REGISTRY:
        known = ", ".join(f"{s}://" for s in sorted(_REGISTRY) if s)
        raise UsageError(f"unknown remote URL scheme {scheme!r} in {url!r}",
                         f"use a directory path or one of {known}")
    return url


def open_backend(url: str, settings: RemoteSettings, *, read_only: bool = False) -> Backend:
    """The backend for `url`; UsageError for an unknown scheme."""
    module_name, class_name = _REGISTRY[url_scheme(check_url(url))]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(url, settings=settings, read_only=read_only)


__all__ = ["Backend", "RemoteSettings", "check_url", "open_backend", "url_scheme"]
