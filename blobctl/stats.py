"""The counters a store keeps in its index, shown by `stat` and `mount` (docs/JSON.md):
their names and labels in one place. Commands add to them with Store.count, which
commits them once, when the command closes the store."""

from __future__ import annotations

LOCAL_HITS = "local_hits"  # reads served by the local store
REMOTE_HITS = "remote_hits"  # reads served by a mount
MISSES = "misses_total"  # reads of keys found nowhere
EVICTED_MISSES = "evicted_misses"  # misses on objects gc had evicted
OBJECTS_WRITTEN = "objects_written"
BYTES_WRITTEN = "bytes_written"
BYTES_READ = "bytes_read"
OBJECTS_EVICTED = "objects_evicted"
BYTES_EVICTED = "bytes_evicted"

#: What `stat` shows, in this order: (counter, label).
STORE_COUNTERS = [
    (LOCAL_HITS, "local hits"), (REMOTE_HITS, "remote hits"), (MISSES, "misses"),
    (EVICTED_MISSES, "misses on evicted objects"), (OBJECTS_WRITTEN, "objects written"),
    (BYTES_WRITTEN, "bytes written"), (BYTES_READ, "bytes read"),
    (OBJECTS_EVICTED, "objects evicted"), (BYTES_EVICTED, "bytes evicted"),
]

#: Kept per mount (see mount_counter).
MOUNT_FETCHED_OBJECTS = "fetched_objects"  # objects fetched into the local store (get, pull)
MOUNT_FETCHED_BYTES = "fetched_bytes"
MOUNT_HITS = "hits"  # objects served to reads here
MOUNT_MISSES = "misses"  # names of its own found nowhere


def mount_counter(prefix: str, what: str) -> str:
    """The name of one mount's counter `what` (one of the MOUNT_ ones)."""
    return f"mount:{prefix}:{what}"
