"""Reading a data dir back in bulk: Store.load_columns leaves the store as
load_many (an entry at a time) does, and DataLoad pauses the cyclic garbage
collector while it reads and puts it back after (a node: once the digest has
taken the data in)."""

from __future__ import annotations

import gc
from typing import List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.disk.datafile import Disk, DiskError
from distkv.disk.loader import DataLoad
from distkv.front.commands import Request
from distkv.node import Node
from distkv.store.entries import Entry, make_entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from tests.proptest import examples
from tests.scratch import fill_data_dir, scratch_dir

WALL = 1_700_000_000_000

Record = Tuple[int, bytes, Entry]

records = st.builds(
    lambda seq, key, value, ms, node, expires: (
        seq, key, make_entry(value, Version(ms, 1, node), expires)),
    st.integers(0, 50),
    st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"]),
    st.one_of(st.none(), st.binary(max_size=3)),
    st.integers(WALL - 10, WALL + 10),
    st.sampled_from(["n1", "n2"]),
    # Mostly none; some expired by the wall clock, some not.
    st.sampled_from([0, 0, 0, WALL - 1, WALL + 100_000]),
)
# Batches of distinct keys are what the one-go path takes.
distinct = st.lists(records, max_size=6, unique_by=lambda r: r[1])
# Each batch, then perhaps a key forgotten (a purge replayed), which the
# digest has noted but the store no longer holds.
batches = st.lists(st.tuples(st.one_of(distinct, st.lists(records, max_size=6)),
                             st.sampled_from([None, b"a", b"b", b"c"])), max_size=8)


def store() -> Store:
    return Store(HybridClock("z", lambda: WALL, max_drift_ms=10**12))


def state(s: Store) -> object:
    """Everything loading may change, the digest included."""
    return (list(s._data.items()), sorted(s._tombstones), s.live_count(), s.with_expiry,
            s.seq, len(s), s.digest.encode())


class LoadColumnsTests(SynchronousTestCase):
    @settings(max_examples=examples(300), deadline=None)
    @given(batches, st.booleans())
    def test_load_columns_leaves_what_load_many_leaves(
            self, parts: List[Tuple[List[Record], Optional[bytes]]], floored: bool) -> None:
        """Batches of records (new keys and known ones, a key twice in one
        batch, tombstones, expiries past and future, below a flush floor or
        not, a key forgotten in between) leave the same entries, tombstones,
        counts, sequence number and digest whether read by load_columns or by
        load_many."""
        columns, one_by_one = store(), store()
        if floored:
            for s in (columns, one_by_one):
                s.restore_floor(Version(WALL, 0, "n1"))
        for part, forgotten in parts:
            seqs = [seq for seq, _, _ in part]
            keys = [key for _, key, _ in part]
            entries = [entry for _, _, entry in part]
            self.assertEqual(columns.load_columns(seqs, keys, entries), len(part))
            self.assertEqual(one_by_one.load_many(iter(part)), len(part))
            self.assertEqual(state(columns), state(one_by_one))
            held = one_by_one.entry(forgotten) if forgotten is not None else None
            if forgotten is not None and held is not None:
                for s in (columns, one_by_one):
                    s.unload(forgotten, Version(*held[-3:]))

    def test_a_snapshot_part_of_new_keys_goes_in_at_once(self) -> None:
        """Distinct new keys, values and tombstones, go in without an entry
        at a time (load_many is not called), counted as load_many counts them."""
        loaded = store()
        self.patch(loaded, "load_many", lambda records: self.fail("entry at a time"))
        entries: List[Entry] = [(b"1", 5, 0, "n"), (None, 6, 0, "n"), (b"3", 7, 0, "n")]
        self.assertEqual(loaded.load_columns([0, 9, 4], [b"x", b"y", b"z"], entries), 3)
        self.assertEqual((loaded.live_count(), loaded.seq), (2, 9))
        self.assertEqual([loaded.entry(key) for key in (b"x", b"y", b"z")], entries)
        self.assertEqual(loaded.digest.pending, 3)


class CollectorPauseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = scratch_dir(self)
        fill_data_dir(self.dir, 300, per_row=100)
        self.addCleanup(gc.enable)

    def reading(self, close: bool = True) -> DataLoad:
        disk = Disk(self.dir)
        if close:  # a load that fails closes the file itself
            self.addCleanup(disk.close)
        return DataLoad(disk, store(), None, 0.0)

    def test_the_collector_is_paused_while_reading_and_back_after(self) -> None:
        """Between two steps the collector is off; once everything is read it
        is on again, and every key is there."""
        load = self.reading()
        self.assertFalse(load.step(0))
        self.assertFalse(gc.isenabled())
        while not load.step(0):
            self.assertFalse(gc.isenabled())
        self.assertTrue(gc.isenabled())
        self.assertEqual(load.result.entries if load.result else None, 300)

    def test_giving_up_puts_the_collector_back(self) -> None:
        """A load cancelled halfway turns the collector back on."""
        load = self.reading()
        load.step(0)
        load.cancel()
        self.assertTrue(gc.isenabled())

    def test_a_collector_off_before_stays_off(self) -> None:
        """Reading does not turn on a collector someone else turned off."""
        gc.disable()
        self.reading().run()
        self.assertFalse(gc.isenabled())

    def test_an_unreadable_record_puts_the_collector_back(self) -> None:
        """A malformed record read halfway raises DiskError with the collector on."""
        import sqlite3

        with sqlite3.connect(f"{self.dir}/distkv.sqlite3") as db:
            db.execute("UPDATE log SET writes = x'00000003570000' WHERE id = 2")
        load = self.reading(close=False)
        with self.assertRaises(DiskError):
            load.run()
        self.assertTrue(gc.isenabled())


class NodeCollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.dir = scratch_dir(self)
        fill_data_dir(self.dir, 300, per_row=100)
        self.addCleanup(gc.enable)

    def test_the_collector_stays_off_until_the_digest_has_the_data(self) -> None:
        """A node reading its data dir in steps keeps the collector off while
        it reads and while the digest takes the data in (serving meanwhile),
        and turns it back on before it links to peers."""
        import distkv.node

        self.patch(distkv.node, "FOLD_STEP", 100)
        done: List[str] = []
        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True)
        self.addCleanup(lambda: node.cancel_load() or node.crash())
        node.load_data(lambda: done.append("linked"), done.append, budget=0, pause=1)
        for _ in range(4):  # three rows, then none left: read, 100 keys folded
            self.clock.advance(1)
            self.assertFalse(gc.isenabled())
        self.assertEqual(node.dispatcher.execute(Request(b"GET", (b"k5",))), b"v5")
        while not done:
            self.assertFalse(gc.isenabled())
            self.clock.advance(1)
        self.assertEqual(done, ["linked"])
        self.assertTrue(gc.isenabled())

    def test_a_node_stopped_while_the_digest_folds_turns_the_collector_back_on(self) -> None:
        """Stopped after its data is read but before the digest has it all, a
        node leaves the collector on."""
        import distkv.node

        self.patch(distkv.node, "FOLD_STEP", 100)
        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True)
        node.load_data(lambda: None, lambda why: None, budget=0, pause=1)
        self.addCleanup(lambda: node.journal is not None and not node.journal.closed
                        and node.crash())
        for _ in range(4):
            self.clock.advance(1)
        self.assertFalse(gc.isenabled())
        self.assertTrue(node.cancel_load())
        self.assertTrue(gc.isenabled())

    def test_a_node_crashed_while_reading_leaves_the_collector_on_for_good(self) -> None:
        """A node crashed (or stopped) halfway through reading its data dir
        reads no more: the collector it paused is on again, and stays on."""
        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True)
        node.load_data(lambda: None, lambda why: None, budget=0, pause=1)
        self.clock.advance(1)
        self.assertFalse(gc.isenabled())
        node.crash()
        self.assertTrue(gc.isenabled())
        for _ in range(6):
            self.clock.advance(1)
            self.assertTrue(gc.isenabled())
        self.assertEqual(self.clock.getDelayedCalls(), [])

