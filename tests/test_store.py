"""The sans-IO store: last-writer-wins merge that converges under any delivery order."""

from __future__ import annotations

from binascii import crc32
from typing import List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.store.digest import Digest
from distkv.store.entries import Entry, make_entry, version_of
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from tests.proptest import examples


def make_store(node: str = "a", wall: int = 1000) -> Store:
    return Store(HybridClock(node, lambda: wall, max_drift_ms=10**12))


Write = Tuple[bytes, Entry]

# A history: writers (with their own skewed clocks) each do a sequence of
# sets and deletes on a few keys, sometimes after hearing another's writes.
operations = st.lists(
    st.tuples(
        st.integers(0, 2),  # which writer
        st.sampled_from([b"k1", b"k2", b"k3"]),
        st.one_of(st.none(), st.binary(max_size=4)),  # None: delete
        st.booleans(),  # first merge everything written so far
    ),
    max_size=30,
)


def generate(history: List[Tuple[int, bytes, object, bool]]) -> List[Write]:
    skews = [0, 5000, -3000]
    writers = [make_store(f"w{i}", 100_000 + skews[i]) for i in range(3)]
    written: List[Write] = []
    for who, key, value, sync in history:
        store = writers[who]
        if sync:
            for k, e in written:
                store.apply(k, e)
        if value is None:
            store.delete(key)
        else:
            assert isinstance(value, bytes)
            store.set(key, value)
        written.append((key, store.entry(key)))  # type: ignore[arg-type]
    return written


class StoreTests(SynchronousTestCase):
    def test_set_get_delete(self) -> None:
        """SET stores a value, GET returns it, DEL leaves a tombstone and reports a live delete."""
        store = make_store()
        self.assertIsNone(store.get(b"k"))
        store.set(b"k", b"v")
        self.assertEqual(store.get(b"k"), b"v")
        self.assertEqual(len(store), 1)
        self.assertTrue(store.delete(b"k"))
        self.assertFalse(store.delete(b"k"))
        self.assertIsNone(store.get(b"k"))
        self.assertEqual((len(store), store.tombstones), (0, 1))

    def test_delete_of_unknown_key_leaves_a_tombstone_that_beats_older_writes(self) -> None:
        """DEL of a key this node never saw still wins over an older write arriving later."""
        store = make_store(wall=2000)
        self.assertFalse(store.delete(b"k"))
        self.assertFalse(store.apply(b"k", make_entry(b"old", Version(1500, 0, "b"))))
        self.assertIsNone(store.get(b"k"))

    def test_tombstone_loses_to_a_newer_write(self) -> None:
        """A write newer than a tombstone brings the key back."""
        store = make_store(wall=2000)
        store.delete(b"k")
        self.assertTrue(store.apply(b"k", make_entry(b"new", Version(3000, 0, "b"))))
        self.assertEqual(store.get(b"k"), b"new")

    def test_local_overwrite_beats_a_value_from_a_clock_far_ahead(self) -> None:
        """Overwriting a key always wins over the value it replaces, whatever the skew."""
        store = make_store(wall=1000)
        store.apply(b"k", make_entry(b"remote", Version(50_000, 9, "b")))
        entry = store.set(b"k", b"mine")
        self.assertGreater(version_of(entry), Version(50_000, 9, "b"))
        self.assertEqual(store.get(b"k"), b"mine")

    def test_listeners_hear_local_and_remote_changes_but_not_stale_ones(self) -> None:
        """Listeners get (key, entry, seq) for each change and nothing for a stale write;
        seq numbers local writes from 1 and is 0 for a remote one."""
        store = make_store(wall=5000)
        heard: List[Tuple[bytes, Entry, int]] = []
        store.subscribe(lambda k, e, seq: heard.append((k, e, seq)))
        mine = store.set(b"a", b"1")
        theirs = make_entry(b"2", Version(6000, 0, "b"))
        store.apply(b"b", theirs)
        store.apply(b"b", make_entry(b"old", Version(10, 0, "b")))
        store.apply(b"b", theirs)
        second = store.delete(b"a")
        self.assertTrue(second)
        self.assertEqual(
            heard,
            [(b"a", mine, 1), (b"b", theirs, 0), (b"a", store.entry(b"a"), 2)],
        )

    def test_far_future_remote_write_is_refused(self) -> None:
        """A remote version beyond the allowed skew is not stored."""
        store = Store(HybridClock("a", lambda: 1000, max_drift_ms=100))
        self.assertFalse(store.apply(b"k", make_entry(b"v", Version(10_000, 0, "b"))))
        self.assertIsNone(store.entry(b"k"))
        self.assertEqual(store.clock.refused, 1)

    @settings(max_examples=examples(150), deadline=None)
    @given(operations, st.randoms(use_true_random=False), st.integers(0, 3))
    def test_any_delivery_order_with_duplicates_converges(
        self, history: List[Tuple[int, bytes, object, bool]], rnd: object, dups: int
    ) -> None:
        """Replicas fed the same writes in any order, with duplicates, end identical."""
        written = generate(history)
        replicas = []
        for _ in range(3):
            deliveries = list(written) + list(written[:dups])
            rnd.shuffle(deliveries)  # type: ignore[attr-defined]
            replica = make_store("r", 100_000)
            for key, entry in deliveries:
                replica.apply(key, entry)
            replicas.append(replica.snapshot())
        self.assertEqual(replicas[0], replicas[1])
        self.assertEqual(replicas[0], replicas[2])
        # ...and what they hold is, per key, the write with the highest version.
        best = {}
        for key, entry in written:
            if key not in best or version_of(entry) > version_of(best[key]):
                best[key] = entry
        self.assertEqual(replicas[0], best)

    @given(operations)
    def test_a_writer_that_heard_everything_overwrites_it(
        self, history: List[Tuple[int, bytes, object, bool]]
    ) -> None:
        """A write made after merging all others is the one every replica keeps (causality)."""
        written = generate(history)
        late = make_store("late", 1)  # its wall clock is far behind everyone's
        for key, entry in written:
            late.apply(key, entry)
        final = late.set(b"k1", b"final")
        replica = make_store("r", 100_000)
        for key, entry in reversed(written + [(b"k1", final)]):
            replica.apply(key, entry)
        self.assertEqual(replica.get(b"k1"), b"final")


class EntryTests(SynchronousTestCase):
    def test_an_entry_is_one_flat_tuple_that_gives_its_version_back(self) -> None:
        version = Version(1700000000123, 7, "node-a")
        entry = make_entry(b"v", version)
        self.assertIs(type(entry), tuple)  # one object, no inner tuple, no class to construct
        self.assertEqual(entry, (b"v", 1700000000123, 7, "node-a"))
        self.assertEqual(version_of(entry), version)
        self.assertIs(type(version_of(entry)), Version)
        self.assertEqual(make_entry(None, version)[0], None)
        with self.assertRaises(TypeError):
            make_entry(b"w", entry)  # type: ignore[arg-type]  # an entry is not a version

    def test_the_clock_and_the_digest_take_an_entry_for_its_version(self) -> None:
        """The digest hashes a bare version as the tombstone at that version."""
        version = Version(50, 3, "b")
        entry = make_entry(b"x", version)
        self.assertEqual(HybridClock("a", lambda: 10).now_above(entry),
                         HybridClock("a", lambda: 10).now_above(version))
        self.assertEqual(Digest({b"k": version}).hashes, Digest({b"k": make_entry(None, version)}).hashes)

    def test_the_clock_stamps_an_entry_as_it_would_a_version(self) -> None:
        """clock.stamp() makes the entry a value and now_above()'s version would."""
        above = make_entry(b"old", Version(50, 3, "b"))
        stamped = HybridClock("a", lambda: 10).stamp(b"new", above)
        self.assertIs(type(stamped), tuple)
        self.assertEqual(stamped, make_entry(b"new", HybridClock("a", lambda: 10).now_above(above)))
        self.assertEqual(version_of(stamped), Version(50, 4, "a"))

    def test_entries_written_and_read_back_are_plain_tuples(self) -> None:
        """Whatever made an entry (a local write, the wire, the disk), the store holds a tuple."""
        from distkv.cluster import wire

        store = make_store("a", 100)
        store.set(b"local", b"v")
        store.delete(b"gone")
        frame = wire.encode_write(1, b"r", make_entry(b"w", Version(5, 0, "b")))
        _, _, remote = next(wire.iter_writes(frame))
        store.apply(b"r", remote)
        self.assertEqual({key: type(entry) for key, entry in store.items()},
                         {b"local": tuple, b"gone": tuple, b"r": tuple})


class DigestTests(SynchronousTestCase):
    @given(operations)
    def test_incremental_digest_equals_one_computed_from_scratch(
        self, history: List[Tuple[int, bytes, object, bool]]
    ) -> None:
        """However a store got its entries, its digest matches one rebuilt from its contents."""

        replica = make_store("r", 100_000)
        for key, entry in generate(history):
            replica.apply(key, entry)
        fresh = Digest(dict(replica.items()))
        self.assertEqual(replica.digest.encode(), fresh.encode())

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "delete", "apply", "purge", "drop", "unload", "load", "read"]),
                st.integers(0, 5),  # which key
                st.integers(0, 3),  # how far the wall clock moves first
            ),
            max_size=60,
        ),
        st.integers(1, 4),  # FOLD_AT
    )
    @settings(max_examples=examples(300), deadline=None)
    def test_a_digest_read_at_any_point_matches_one_computed_from_scratch(
        self, steps: List[Tuple[str, int, int]], fold_at: int
    ) -> None:
        """Every kind of change, with the digest read (and so folded) between any
        two of them and folds forced every few keys, leaves the same hashes as a
        digest built from the store's contents at that moment."""
        wall = [1000]
        store = Store(HybridClock("a", lambda: wall[0], max_drift_ms=10**12))
        store.digest.fold_at = fold_at
        peer = Store(HybridClock("b", lambda: wall[0] + 7, max_drift_ms=10**12))
        for op, which, tick in steps:
            key = b"k%d" % which
            wall[0] += tick
            if op == "set":
                store.set(key, b"v%d" % wall[0])
            elif op == "delete":
                store.delete(key)
            elif op == "apply":
                store.apply(key, peer.set(key, b"p%d" % wall[0]))
            elif op == "purge":
                store.purge(Version(wall[0], 0, ""))
            elif op == "drop":
                store.drop_dead(key, Version(wall[0], 0, ""))
            elif op == "unload":
                entry = store.entry(key)
                if entry is not None:
                    store.unload(key, version_of(entry))
            elif op == "load":
                store.load(key, peer.set(key, b"l%d" % wall[0]))
            else:
                fresh = Digest(dict(store.items()))
                self.assertEqual(store.digest.hashes, fresh.hashes)
            self.assertLessEqual(len(store.digest.changed), fold_at)
        fresh = Digest(dict(store.items()))
        self.assertEqual(store.digest.encode(), fresh.encode())
        self.assertEqual(store.digest.changed, {})

    def test_a_noted_change_keeps_no_value_alive(self) -> None:
        """Between digest reads a changed key's old version and its value's
        CRC-32 are kept, never its old value, whichever kind of change replaced it."""
        big = b"big" * 1000
        store, peer = make_store("a"), make_store("b", 5000)
        changes = {
            b"set": lambda key: store.set(key, b"small"),
            b"delete": lambda key: store.delete(key),
            b"apply": lambda key: store.apply(key, peer.set(key, b"newer")),
            b"load": lambda key: store.load(key, peer.set(key, b"newer")),
            b"drop": lambda key: store.drop_dead(key, Version(10**9, 0, "")),
        }
        for name in changes:
            store.set(name, big)
        store.digest.encode()
        for name, change in changes.items():
            change(name)
        self.assertEqual(set(store.digest.changed), set(changes))
        for name, kept in store.digest.changed.items():
            assert kept is not None
            self.assertEqual((len(kept), kept[0], kept[1]), (4, crc32(big), 1000), name)
            self.assertNotIn(big, kept, name)

    def test_noted_keys_are_folded_by_count_and_by_size(self) -> None:
        """The notes between digest reads stay bounded: a fold comes after
        fold_at keys, or after FOLD_BYTES of keys, whichever is first."""
        from distkv.store.digest import FOLD_AT, FOLD_BYTES

        store = make_store()
        for i in range(3 * FOLD_AT):
            store.set(b"k%d" % i, b"v")
            self.assertLessEqual(len(store.digest.changed), FOLD_AT)
        store.digest.encode()
        long_key = b"x" * (FOLD_BYTES // 4)
        for i in range(12):
            store.set(long_key + b"%d" % i, b"v")
            noted = sum(map(len, store.digest.changed))
            self.assertLessEqual(noted, FOLD_BYTES + len(long_key) + 2)
        self.assertLess(len(store.digest.changed), 6)
        fresh = Digest(dict(store.items()))
        self.assertEqual(store.digest.encode(), fresh.encode())

    def test_entry_hashes_are_the_same_in_every_process(self) -> None:
        """Pinned values: the suite runs under CPython and PyPy, so a mixed
        cluster's digests agree (and no per-process hash seed leaks in)."""
        from distkv.store.digest import entry_hash

        self.assertEqual(entry_hash(b"k", Version(5, 1, "a"), b"v"), 8716148940400064446)
        version = Version(1764340000123, 70000, "0123456789abcdef")
        self.assertEqual(entry_hash(b"key:\x00\xff", version, b"value"), 13278559674206317635)
        self.assertEqual(entry_hash(b"key:\x00\xff", version), 7325579929568196034)  # a tombstone

    def test_digests_differ_exactly_in_the_changed_bucket(self) -> None:
        """One extra key makes one bucket differ, and only that one."""
        from distkv.store.digest import bucket_of

        a, b = make_store("a"), make_store("b")
        for i in range(100):
            entry = a.set(b"k%d" % i, b"v")
            b.apply(b"k%d" % i, entry)
        self.assertEqual(a.digest.differing(b.digest.encode()), [])
        a.set(b"extra", b"v")
        self.assertEqual(a.digest.differing(b.digest.encode()), [bucket_of(b"extra")])


class DigestFoldSomeTests(SynchronousTestCase):
    def test_folding_in_parts_gives_the_hashes_of_folding_at_once(self) -> None:
        """fold_some in parts of any size, and note's bounded fold over a
        backlog, end with the same bucket hashes as one fold."""
        entries = {b"k%d" % i: (b"v%d" % i, 1000 + i, 0, f"n{i % 3}") for i in range(5000)}
        whole = Digest(dict(entries))
        in_parts = Digest(dict(entries))
        self.assertEqual(in_parts.pending, 5000)
        while in_parts.fold_some(777):
            self.assertLess(in_parts.pending, 5000)
        self.assertEqual(in_parts.pending, 0)
        self.assertEqual(in_parts.hashes, whole.hashes)
        backlog = dict(entries)
        noted = Digest(backlog, fold_at=64)
        noted.note(b"k1", backlog[b"k1"])  # k1 is in the backlog already: nothing folds
        self.assertEqual(noted.pending, 5000)
        noted.note(b"new", None)
        backlog[b"new"] = (b"x", 1, 0, "n0")
        self.assertEqual(noted.pending, 5000 - 64 + 1)  # 64 folded, not the whole backlog
        whole_new = Digest(dict(backlog))
        self.assertEqual(noted.hashes, whole_new.hashes)
