"""Pins keep objects out of gc's reach: STORE/pins/<hash> holds nothing (pinned forever)
or an expiry time in ns since the epoch; an expired pin no longer protects.

Pins are written and removed under the index's write lock, so gc's last check before
deleting an object (made under the same lock) sees every pin that was set in time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from blobctl import keys
from blobctl.errors import NotFoundError, warn
from blobctl.fsutil import atomic_write

#: The expiry of a pin that never expires.
FOREVER = None


def pin(store, digest: str, ttl_seconds: float | None) -> int | None:
    """Pin a local object, for `ttl_seconds` or forever (None); returns the expiry in ns.
    The object is looked for under the lock: a gc deleting it meanwhile must not leave a
    pin of nothing, reported as done."""
    expires = FOREVER if ttl_seconds is None else time.time_ns() + int(ttl_seconds * 1e9)
    content = b"" if expires is FOREVER else str(expires).encode()
    with store.index.transaction():
        if not store.has_object(digest):
            raise NotFoundError(f"cannot pin {digest[:12]}: the object is not in the local store",
                                f"fetch it first with: blobctl pull {digest}")
        atomic_write(store.pins_dir / keys.validate_hash(digest), store.tmp_dir,
                     lambda handle: handle.write(content), store.syncer)
    return expires


def unpin(store, digest: str) -> bool:
    """Remove a pin; False if the object was not pinned."""
    path = store.pins_dir / keys.validate_hash(digest)
    with store.index.transaction():
        try:
            path.unlink()
        except FileNotFoundError:
            return False
    store.syncer.sync_dir_later(store.pins_dir)
    return True


def pin_expiry(path: Path) -> int | None:
    """The expiry recorded in a pin file (None: forever). A damaged pin is read as
    'forever' with a warning: protecting an object by mistake is the harmless error."""
    text = path.read_bytes().strip()
    if not text:
        return FOREVER
    try:
        return int(text)
    except ValueError:
        warn(f"pin {path} is damaged; treating it as a pin forever (re-pin or unpin the object)")
        return FOREVER


def is_active(expiry: int | None, now: int) -> bool:
    return expiry is FOREVER or expiry > now


def is_pinned(pins_dir: Path, digest: str, now: int) -> bool:
    try:
        return is_active(pin_expiry(pins_dir / digest), now)
    except FileNotFoundError:
        return False


def active_pins(pins_dir: Path, now: int) -> set[str]:
    """Hashes of the objects pinned at `now`."""
    try:
        entries = os.listdir(pins_dir)
    except FileNotFoundError:
        return set()
    return {digest for digest in entries
            if keys.is_full_hash(digest) and is_pinned(pins_dir, digest, now)}
