"""Pins keep objects out of gc's reach: STORE/pins/<hash> holds nothing (pinned forever)
or an expiry time in ns since the epoch; an expired pin no longer protects, and gc
removes it. Pinning again only ever lengthens a pin; unpin removes one.

Pins are written and removed under the index's write lock, so gc's last check before
deleting an object (made under the same lock) sees every pin that was set in time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from blobctl import keys
from blobctl.errors import NotFoundError, from_os_error, warn
from blobctl.fsutil import atomic_write, read_regular_file

#: A pin file holds its expiry in ns as decimal digits, or nothing (forever).
MAX_PIN_BYTES = 64

#: The expiry of a pin that never expires.
FOREVER = None


def pin(store, digest: str, ttl_seconds: float | None) -> tuple[int | None, bool]:
    """Pin a local object, for `ttl_seconds` or forever (None). Pinning again never
    shortens a pin: a pin forever stays, and so does an expiry later than the new one
    (unpin removes a pin). Returns the expiry in ns now in force (None: forever) and
    whether this call set it (False: an existing pin was kept).
    The object is looked for under the lock: a gc deleting it meanwhile must not leave a
    pin of nothing, reported as done."""
    expires = FOREVER if ttl_seconds is None else time.time_ns() + int(ttl_seconds * 1e9)
    content = b"" if expires is FOREVER else str(expires).encode()
    path = store.pins_dir / keys.validate_hash(digest)
    with store.index.transaction():
        if not store.has_object(digest):
            raise NotFoundError(f"cannot pin {digest[:12]}: the object is not in the local store",
                                f"fetch it first with: blobctl pull {digest}")
        current = _recorded_expiry(path)
        if current is not _NONE and (current is FOREVER or (expires is not FOREVER and current >= expires)):
            return current, False
        try:
            atomic_write(path, store.tmp_dir, lambda handle: handle.write(content), store.syncer)
        except OSError as exc:
            raise from_os_error(exc, "write pin", path) from exc
    return expires, True


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


#: What _recorded_expiry returns for a pin that is not there, or is damaged.
_NONE = object()


def _recorded_expiry(path: Path):
    """The expiry in a pin file; _NONE when there is none or it is damaged (so that
    pinning again repairs it, as the warning about a damaged pin advises)."""
    try:
        return _parse(_read(path))
    except (FileNotFoundError, ValueError):
        return _NONE


def _read(path: Path) -> bytes:
    """A pin file's bytes; ValueError (damaged) for a directory, FIFO or device there."""
    try:
        data = read_regular_file(path, MAX_PIN_BYTES + 1)
    except IsADirectoryError as exc:
        raise ValueError(str(exc)) from None
    if len(data) > MAX_PIN_BYTES:
        raise ValueError(f"{path} is longer than a pin")
    return data


def _parse(text: bytes) -> int | None:
    text = text.strip()
    return FOREVER if not text else int(text)


def pin_expiry(path: Path) -> int | None:
    """The expiry recorded in a pin file (None: forever). A damaged pin is read as
    'forever' with a warning: protecting an object by mistake is the harmless error."""
    try:
        return _parse(_read(path))
    except ValueError:
        warn(f"pin {path} is damaged; treating it as a pin forever (re-pin or unpin the object)")
        return FOREVER


def is_active(expiry: int | None, now: int) -> bool:
    return expiry is FOREVER or expiry > now


def state(pins_dir: Path, digest: str, now: int) -> tuple[bool, int | None]:
    """Whether the object is pinned at `now`, and the pin's expiry in ns (None: forever,
    or not pinned); one read of its pin file."""
    try:
        expiry = pin_expiry(pins_dir / digest)
    except FileNotFoundError:
        return False, None
    return (True, expiry) if is_active(expiry, now) else (False, None)


def is_pinned(pins_dir: Path, digest: str, now: int) -> bool:
    return state(pins_dir, digest, now)[0]


def scan(pins_dir: Path, now: int) -> tuple[set[str], set[str]]:
    """The hashes of the objects pinned at `now`, and those whose pin has expired (one
    read per pin file)."""
    try:
        entries = os.listdir(pins_dir)
    except FileNotFoundError:
        return set(), set()
    active, expired = set(), set()
    for digest in entries:
        if not keys.is_full_hash(digest):
            continue
        try:
            (active if is_active(pin_expiry(pins_dir / digest), now) else expired).add(digest)
        except FileNotFoundError:  # unpinned meanwhile
            continue
    return active, expired


def remove_expired(store, digests: Iterable[str]) -> int:
    """Delete those of these pins that have expired, each read again under the write lock:
    a pin set again since they were found stays. A damaged pin stays too (for the user to
    re-pin or unpin). Returns how many were removed."""
    digests = list(digests)
    if not digests:
        return 0
    removed = 0
    with store.index.transaction():
        now = time.time_ns()
        for digest in digests:
            path = store.pins_dir / digest
            expiry = _recorded_expiry(path)
            if expiry is _NONE or is_active(expiry, now):
                continue
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        store.syncer.sync_dir_later(store.pins_dir)
    return removed
