"""Validation of everything a user or a remote hands us as a key: hashes, names, prefixes.

These run before any filesystem or network access, so a hostile key can never address a
file outside the store.
"""

from __future__ import annotations

import re

from blobctl.errors import IntegrityError, UsageError

HASH_LEN = 64
MIN_PREFIX_LEN = 4
MAX_NAME_LEN = 1024
MAX_SEGMENT_LEN = 255
#: Largest ref file read, locally or from a remote: refs hold one hash and a newline.
MAX_REF_BYTES = 200

_HEX_RE = re.compile(r"[0-9a-f]+\Z")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._+=@,~-]+\Z")  # \Z: "$" would let a final newline in
NAME_CHARSET = "letters, digits and . _ + = @ , ~ - separated by /"


def is_hex(text: str) -> bool:
    """Lower-case hex digits only (and at least one)."""
    return bool(_HEX_RE.match(text))


def is_full_hash(text: str) -> bool:
    return len(text) == HASH_LEN and is_hex(text)


def strip_hash_scheme(text: str) -> str:
    """'sha256:<hex>' -> '<hex>'; anything else unchanged."""
    return text[7:] if text.startswith("sha256:") else text


def is_hash_prefix(text: str) -> bool:
    return MIN_PREFIX_LEN <= len(text) <= HASH_LEN and is_hex(text)


def validate_hash(text: str) -> str:
    """A full SHA-256 hex digest typed by a user (either case: some tools print upper
    case), in lower case; or UsageError."""
    digest = strip_hash_scheme(text).lower()
    if not is_full_hash(digest):
        raise UsageError(f"invalid hash {text[:80]!r}", "expected 64 hex characters")
    return digest


def validate_name(name: str) -> str:
    """A name like 'datasets/mnist.npz': relative, no '.'/'..' segments, safe charset."""
    shown = repr(name[:80])
    if not name:
        raise UsageError("invalid name '': names must not be empty")
    if len(name) > MAX_NAME_LEN:
        raise UsageError(f"invalid name {shown}...: longer than {MAX_NAME_LEN} characters")
    if name.startswith("/"):
        raise UsageError(f"invalid name {shown}: must not be an absolute path")
    if name.startswith("-"):
        raise UsageError(f"invalid name {shown}: must not start with '-'")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise UsageError(f"invalid name {shown}: empty, '.' or '..' path segment")
        if len(segment) > MAX_SEGMENT_LEN:
            raise UsageError(f"invalid name {shown}: a segment is over {MAX_SEGMENT_LEN} characters")
        if not _SEGMENT_RE.match(segment):
            raise UsageError(f"invalid name {shown}", f"names may contain {NAME_CHARSET}")
    return name


def parent_names(name: str) -> list[str]:
    """The directories a name lives in, as names: 'a/b/c' -> ['a', 'a/b']."""
    return [name[:i] for i, char in enumerate(name) if char == "/"]


def validate_prefix(prefix: str) -> str:
    """A mount or listing prefix: '' (everything), or a name optionally ending in '/'."""
    if prefix == "":
        return prefix
    validate_name(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


#: What to do about a damaged local ref (a remote's: see mounts._read_remote_ref).
LOCAL_REF_HINT = "run 'blobctl fsck' or re-bind the name with 'put --name'"


def parse_ref(content: bytes, where: str, hint: str = LOCAL_REF_HINT) -> str:
    """The hash stored in a ref file (local or remote, so untrusted): '<64 hex>' + newline."""
    text = content.decode("ascii", "replace").strip()
    if len(content) > MAX_REF_BYTES or not is_full_hash(text):
        raise IntegrityError(f"ref {where} is damaged: it does not hold a SHA-256 hash", hint)
    return text


def object_key(digest: str) -> str:
    """An object's path in the store layout (docs/FORMAT.md), below the store's directory
    and below every remote's root: the one place that says how objects are sharded."""
    return f"objects/{digest[:2]}/{digest[2:]}"


def hash_of_object_key(key: str) -> str | None:
    """The hash an object_key names; None for any other key (a stray file on a remote)."""
    _, shard, rest = key.split("/", 2) if key.count("/") == 2 else ("", "", "")
    digest = shard + rest
    return digest if key == object_key(digest) and is_full_hash(digest) else None


def ref_key(name: str) -> str:
    return f"refs/{name}"
