"""Model-based testing of the store (scenario 14): Hypothesis drives random sequences of
put / get / name / pin / unpin / rm / gc / reopen against the in-process Store API and a
plain dict model, on a fresh store per example."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from blobctl import gc, pins
from blobctl.config import Config
from blobctl.errors import NotFoundError, UsageError
from blobctl.store import Store
from tests.reliability import report, sha

contents = st.one_of(st.binary(max_size=2000), st.sampled_from([b"", b"same", b"same" * 1000]))
name_segments = st.sampled_from(["a", "b", "data", "x.y", "v1", "v-2"])
names = st.lists(name_segments, min_size=1, max_size=3).map("/".join)
STEPS = {"runs": 0, "steps": 0, "evicted": 0}


class StoreMachine(RuleBasedStateMachine):
    """Model: objects {hash: bytes}, names {name: hash} and pinned hashes."""

    digests = Bundle("digests")

    def __init__(self):
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="blobctl-model-"))
        self.store = Store(Config.load(str(self.directory / "store")))
        self.objects: dict[str, bytes] = {}
        self.names: dict[str, str] = {}
        self.pinned: set[str] = set()
        STEPS["runs"] += 1

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory)

    def read(self, key: str) -> bytes:
        out = bytearray()
        self.store.read(self.store.resolve(key), out.extend, verify_first=True)
        return bytes(out)

    @rule(target=digests, data=contents)
    def put(self, data):
        STEPS["steps"] += 1
        result = self.store.put_stream(io.BytesIO(data), size=len(data) if len(data) % 2 else None)
        assert result.digest == sha(data) and result.size == len(data)
        assert result.created == (result.digest not in self.objects)
        self.objects[result.digest] = data
        return result.digest

    @rule(name=names, digest=digests)
    def bind(self, name, digest):
        STEPS["steps"] += 1
        if digest not in self.objects:
            return
        clashes = any(other.startswith(name + "/") or name.startswith(other + "/") for other in self.names)
        try:
            self.store.bind(name, digest)
        except UsageError:
            assert clashes
            return
        assert not clashes
        self.names[name] = digest

    @rule(digest=digests)
    def get_by_hash(self, digest):
        STEPS["steps"] += 1
        if digest in self.objects:
            assert self.read(digest) == self.objects[digest]
        else:
            with pytest.raises(NotFoundError):
                self.read(digest)

    @rule(name=names)
    def remove_name(self, name):
        STEPS["steps"] += 1
        if name not in self.names:
            return
        removed = self.store.remove(name)
        assert (removed.kind, removed.digest) == ("name", self.names.pop(name))

    @rule(digest=consumes(digests))
    def remove_object(self, digest):
        STEPS["steps"] += 1
        if digest not in self.objects:
            return
        if digest in self.names.values() or digest in self.pinned:
            with pytest.raises(UsageError):
                self.store.remove(digest)
            return
        self.store.remove(digest)
        del self.objects[digest]

    @rule(digest=digests)
    def pin(self, digest):
        STEPS["steps"] += 1
        if digest in self.objects:
            pins.pin(self.store, digest, None)
            self.pinned.add(digest)

    @rule(digest=digests)
    def unpin(self, digest):
        STEPS["steps"] += 1
        if digest in self.pinned:
            pins.unpin(self.store, digest)
            self.pinned.discard(digest)

    @rule(max_size=st.integers(0, 6000))
    def collect(self, max_size):
        """gc with no grace: only named and pinned objects are safe; the store ends at or
        under max_size unless those alone exceed it."""
        STEPS["steps"] += 1
        outcome = gc.execute(self.store, gc.plan(self.store, max_size=max_size, grace=0))
        protected = set(self.names.values()) | self.pinned
        for digest in outcome.evicted:
            assert digest not in protected
            del self.objects[digest]
        STEPS["evicted"] += len(outcome.evicted)
        protected_stored = sum(self.store.describe(d)[1] or 0 for d in protected)
        assert self.store.index.totals().stored <= max(max_size, protected_stored)

    @rule()
    def reopen(self):
        STEPS["steps"] += 1
        self.store.close()
        self.store = Store(Config.load(str(self.directory / "store")))

    @invariant()
    def named_data_is_readable_and_totals_match(self):
        for name, digest in self.names.items():
            assert self.read(name) == self.objects[digest]
        totals = self.store.index.totals()
        assert (totals.objects, totals.names) == (len(self.objects), len(self.names))
        assert totals.size == sum(map(len, self.objects.values()))
        assert dict(self.store.iter_refs()) == self.names
        assert set(self.store.iter_objects()) == set(self.objects)


def test_store_matches_its_model():
    run = StoreMachine.TestCase
    run.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
    run().runTest()
    report(14, "model-based", f"{STEPS['runs']} random programs, {STEPS['steps']} put/get/name/pin/"
           f"unpin/rm/gc/reopen steps ({STEPS['evicted']} evictions) vs a dict model: named and pinned "
           "data always readable, size <= max unless pins and names exceed it, index totals exact")
