"""A batch of replicated writes merged in one call (``Store.apply_all``) leaves
the store exactly as merging them one by one (``Store.apply``) does."""

from __future__ import annotations

from typing import List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.store.entries import Entry, expiring_entry, make_entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from tests.proptest import examples

WALL = 1_000_000
DRIFT = 5_000

Write = Tuple[bytes, Entry]


def make_store() -> Tuple[Store, List[Tuple[bytes, Entry, int]]]:
    """A store a little way into its life: a few keys held (one of them a
    counter), a flush floor and a stable horizon set; and what its listener hears."""
    store = Store(HybridClock("me", lambda: WALL, max_drift_ms=DRIFT))
    heard: List[Tuple[bytes, Entry, int]] = []
    store.set(b"held", b"v")
    store.delete(b"gone")
    store.set(b"brief", b"v", WALL + 50)
    store.incr(b"count", 3)
    store.raise_floor(Version(WALL - 900, 0, ""))
    store.horizon = Version(WALL - 500, 0, "")
    store.subscribe(lambda key, entry, seq: heard.append((key, entry, seq)))
    return store, heard


keys = st.sampled_from([b"held", b"gone", b"brief", b"count", b"new1", b"new2"])
# Versions around the floor (WALL - 900), the horizon (WALL - 500), the wall
# clock and beyond the allowed drift, with ties on the millisecond.
versions = st.builds(
    Version,
    st.sampled_from([WALL - 1000, WALL - 700, WALL - 100, WALL, WALL + 10, WALL + DRIFT + 1]),
    st.integers(0, 2),
    st.sampled_from(["a", "b", "me"]),
)


@st.composite
def writes(draw: st.DrawFn) -> Write:
    key = draw(keys)
    version = draw(versions)
    kind = draw(st.sampled_from(["value", "tombstone", "expiring", "expired", "counter"]))
    if kind == "value":
        return key, make_entry(draw(st.sampled_from([b"x", b"y", b"v"])), version)
    if kind == "tombstone":
        return key, make_entry(None, version)
    if kind == "counter":
        other = Store(HybridClock(version.node, lambda: version.ms, max_drift_ms=DRIFT))
        other.incr(key, draw(st.integers(-2, 2)))
        held = other.entry(key)
        assert held is not None
        return key, held
    expires = WALL + 100 if kind == "expiring" else WALL - 1
    return key, expiring_entry(b"e", expires, version.ms, version.counter, version.node)


def state(store: Store) -> object:
    """Everything a merge can change, as comparable values."""
    store.digest.fold()
    return (
        store.snapshot(),
        list(store.digest.hashes),
        len(store),
        store.tombstones,
        store.with_expiry,
        store.changes,
        store.flush_dropped,
        store.stale_dropped,
        store.counters_refused,
        store.clock.refused,
        store.clock.now(),
    )


class ApplyAllTests(SynchronousTestCase):
    @settings(max_examples=examples(300), deadline=None)
    @given(st.lists(writes(), max_size=12))
    def test_apply_all_leaves_the_store_as_applying_one_by_one(self, batch: List[Write]) -> None:
        """Whatever the batch holds (values, tombstones, expiring and expired
        entries, counters, writes older than the flush floor or the horizon,
        writes too far ahead), apply_all stores, counts, tells its listeners
        and moves the clock exactly as apply called for each write in order."""
        one, heard_one = make_store()
        changed = sum(bool(one.apply(key, entry)) for key, entry in batch)
        many, heard_many = make_store()
        self.assertEqual(many.apply_all(batch), changed)
        self.assertEqual(heard_many, heard_one)
        self.assertEqual(state(many), state(one))

    def test_a_write_too_far_ahead_is_refused_alone(self) -> None:
        """One write of a batch beyond the allowed drift is refused and
        counted; the others in the batch are merged."""
        store, heard = make_store()
        ahead = make_entry(b"far", Version(WALL + DRIFT + 1, 0, "a"))
        fine = make_entry(b"ok", Version(WALL, 5, "a"))
        self.assertEqual(store.apply_all([(b"new1", ahead), (b"new2", fine)]), 1)
        self.assertIsNone(store.get(b"new1"))
        self.assertEqual(store.get(b"new2"), b"ok")
        self.assertEqual(store.clock.refused, 1)
        self.assertEqual(heard, [(b"new2", fine, 0)])
