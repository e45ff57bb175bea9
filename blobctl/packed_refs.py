"""packed-refs: every name of a remote and its hash in one file, so that a pull need not
read each ref with its own request (docs/FORMAT.md).

It is a hint, never the truth. A pull takes a name's hash from the pack only when the
MD5 that the remote's listing gives for the ref itself (S3: the ETag of a single-part
upload) is the MD5 of that hash and a newline, the ref's exact content; any other name is
read from its ref. So a stale pack (another push changed a ref since), a damaged one or
none at all costs requests, never a wrong name, and concurrent pushes need no lock.
"""

from __future__ import annotations

import hashlib
import io

from blobctl import keys
from blobctl.backends import Backend
from blobctl.errors import NotFoundError, RemoteError

PACK_KEY = "packed-refs"
#: A pack larger than this many times the bytes at stake (the refs a pull lists, the
#: lines a push adds), and than MIN_BUDGET, is not worth reading: a pull then reads each
#: ref, and a push leaves the pack as it is.
BUDGET_FACTOR = 16
MIN_BUDGET = 256 << 10
#: Bytes a pull allows per listed ref when it budgets the pack (a line: hash, space,
#: name, newline; names are rarely longer than 35 characters).
LINE_ALLOWANCE = 100


def parse(data: bytes) -> dict[str, str]:
    """Remote name -> hash for each well-formed `HASH NAME` line; the rest is skipped, as
    the pack, like everything a remote sends, is untrusted."""
    pack = {}
    for line in data.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition(" ")
        if name and keys.is_full_hash(digest):
            pack[name] = digest
    return pack


def render(pack: dict[str, str]) -> bytes:
    return "".join(f"{digest} {name}\n" for name, digest in sorted(pack.items())).encode()


def holds(digest: str, listed_md5: str | None) -> bool:
    """Whether a ref whose content has MD5 `listed_md5` holds `digest`."""
    return listed_md5 is not None and hashlib.md5(f"{digest}\n".encode()).hexdigest() == listed_md5


def read(backend: Backend, budget: int) -> dict[str, str] | None:
    """The remote's pack: empty if it has none, None if it is larger than `budget` bytes."""
    try:
        data = backend.read_at_most(PACK_KEY, budget)
    except NotFoundError:
        return {}
    return None if data is None else parse(data)


def read_for_pull(backend: Backend, listed_refs: int) -> dict[str, str]:
    """The pack, if a pull of `listed_refs` refs should use it; else empty. A pack that
    cannot be read is no reason to fail: each ref is read instead."""
    try:
        return read(backend, max(MIN_BUDGET, BUDGET_FACTOR * LINE_ALLOWANCE * listed_refs)) or {}
    except RemoteError:
        return {}


def merge_into(backend: Backend, entries: dict[str, str]) -> bool:
    """Add `entries` (remote name -> hash) to the remote's pack. False, leaving the pack
    alone, if it is too large to rewrite for so few: its other entries stay valid hints,
    and pulls read these names from their refs."""
    budget = max(MIN_BUDGET, BUDGET_FACTOR * len(render(entries)))
    pack = read(backend, budget)
    if pack is None:
        return False
    pack.update(entries)
    data = render(pack)
    backend.write(PACK_KEY, io.BytesIO(data), len(data))
    return True
