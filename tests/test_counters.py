"""Counters in the store, on the wire and on disk, without a network.

A counter key keeps one slot per node, a last-writer-wins base for SET and
DEL, and the slot states each reset observed (see :mod:`distkv.store.counter`).
These tests show merges converging in any order and with duplicates, INCRs
through several nodes all counting, a SET cancelling exactly the increments
it saw, DEL then INCR, expiry and flush on counters, a purged counter coming
back without its old increments, the wire and data file carrying whole
states, and hostile encodings refused.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
from typing import Dict, List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.disk.datafile import FILENAME
from distkv.node import Node
from distkv.store.counter import MAX_SLOTS, ZERO, CounterState, decode, encode, make, version
from distkv.store.digest import Digest
from distkv.store.entries import Entry, counter_entry, counter_state
from distkv.store.hlc import HybridClock, Version
from distkv.store.longdouble import format_long_double, long_double
from distkv.store.store import Store
from tests.proptest import examples
from tests.respclient import ask, connect
from tests.scratch import scratch_dir

KEY = b"k"


def data_format(path: str, mark: Optional[str] = None) -> str:
    """The format the data dir at ``path`` is marked with (first marked
    ``mark``, when given)."""
    db = sqlite3.connect(os.path.join(path, FILENAME))
    try:
        if mark is not None:
            db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (mark,))
            db.commit()
        return str(db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()[0])
    finally:
        db.close()


def stores(names: str = "abc", start: int = 1000) -> Dict[str, Store]:
    """One store per node name, on one shared fake wall clock that ticks a
    millisecond per reading (so versions differ and interleave)."""
    ticks = itertools.count(start)
    return {name: Store(HybridClock(name, lambda: next(ticks))) for name in names}


def deliver(source: Store, target: Store, key: bytes = KEY) -> None:
    entry = source.entry(key)
    if entry is not None:
        target.apply(key, entry)


def exchange(*replicas: Store) -> None:
    """Every replica gets every other's entry for KEY (twice round, so all hold all)."""
    for _ in range(2):
        for source in replicas:
            for target in replicas:
                if source is not target:
                    deliver(source, target)


#: One step of a random history: (node, operation, amount or delivery source).
Step = Tuple[str, str, int]
steps = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from(["incr", "incr", "incr", "float", "float", "set",
                                                       "setfloat", "del", "deliver", "expire"]),
              st.integers(-3, 3)),
    max_size=40,
)
#: INCRBYFLOAT's amounts in histories ("float"), and the values of "setfloat":
#: numbers INCRBYFLOAT reads (one with more than 17 decimals), and one it does not.
AMOUNTS = (b"0.1", b"-0.25", b"1.5", b"1e-3", b"0x1p-2", b"0.33333333333333333", b"-2")
FLOAT_BASES = (b"10.5", b"5.0e3", b"-0.1", b"hello", b"0.3333333333333333333333", b"1e30", b"7")


def run_history(history: List[Step]) -> Tuple[Dict[str, Store], List[Entry]]:
    """Run ``history`` on three stores; every entry any of them held after a
    step, in order."""
    replicas = stores()
    produced: List[Entry] = []
    for node, op, arg in history:
        store = replicas[node]
        if op == "incr":
            store.incr(KEY, arg)
        elif op == "float":
            store.incr_float(KEY, AMOUNTS[arg % len(AMOUNTS)])
        elif op == "setfloat":
            store.set(KEY, FLOAT_BASES[arg % len(FLOAT_BASES)])
        elif op == "set":
            store.set(KEY, b"%d" % (arg * 10))
        elif op == "del":
            store.delete(KEY)
        elif op == "expire" and store.get(KEY) is not None:
            store.expire(KEY, store.get(KEY), 10**12 if arg >= 0 else 0)  # type: ignore[arg-type]
        elif op == "deliver":
            deliver(replicas["abc"[arg % 3]], store)
        entry = store.entry(KEY)
        if entry is not None:
            produced.append(entry)
    return replicas, produced


class MergeTests(SynchronousTestCase):
    @settings(max_examples=examples(200), deadline=None)
    @given(history=steps, data=st.data())
    def test_merging_in_any_order_with_duplicates_converges(self, history: List[Step],
                                                            data: st.DataObject) -> None:
        """Every state any replica held, delivered to fresh replicas in any
        order and with duplicates, leaves them all holding one state, the
        same as the original replicas once they exchanged theirs."""
        replicas, produced = run_history(history)
        if not produced:
            return
        for entry in produced:  # every state travels as it is
            frame = wire.encode_write(0, KEY, entry)
            self.assertEqual(wire.decode_body(frame[4:]), wire.Write(0, KEY, entry))
        exchange(*replicas.values())
        finals = [replica.entry(KEY) for replica in replicas.values()]
        self.assertEqual(finals[1:], finals[:1] * 2)
        for replica in replicas.values():  # the store's counts agree with what it holds
            live = replica.get(KEY) is not None
            self.assertEqual((len(replica), replica.tombstones, replica.with_expiry),
                             (int(live), int(not live), int(live and replica.expires(KEY) > 0)))
        for _ in range(2):
            order = data.draw(st.permutations(produced + data.draw(
                st.lists(st.sampled_from(produced), max_size=5))))
            fresh = Store(HybridClock("z", lambda: 10))
            for entry in order:
                fresh.apply(KEY, entry)
            self.assertEqual(fresh.entry(KEY), finals[0])

    @settings(max_examples=examples(100), deadline=None)
    @given(history=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["incr", "deliver"]),
                                      st.integers(-3, 3)), max_size=60))
    def test_with_no_reset_every_increment_counts(self, history: List[Step]) -> None:
        """INCRs through any nodes, delivered in any pattern: once every
        replica has every other's state, each reads the sum of them all."""
        replicas, _ = run_history(history)
        exchange(*replicas.values())
        total = sum(arg for _, op, arg in history if op == "incr")
        if any(op == "incr" for _, op, _ in history):
            for replica in replicas.values():
                self.assertEqual(replica.get(KEY), b"%d" % total)

    def test_three_nodes_incrementing_at_once_add_up(self) -> None:
        """1,000 INCRs through each of three nodes that see nothing of each
        other read 3,000 on every node once they exchange their states."""
        replicas = stores()
        for _ in range(1000):
            for replica in replicas.values():
                replica.incr(KEY, 1)
        self.assertEqual(replicas["a"].get(KEY), b"1000")
        exchange(*replicas.values())
        self.assertEqual({r.get(KEY) for r in replicas.values()}, {b"3000"})


class ResetTests(SynchronousTestCase):
    def test_a_set_cancels_the_increments_it_saw_and_not_the_others(self) -> None:
        """b saw a's 3 INCRs and SETs 10; a's 2 INCRs made meanwhile, unseen
        by b, still count: every replica reads 12."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        for _ in range(3):
            a.incr(KEY, 1)
        deliver(a, b)
        b.set(KEY, b"10")
        a.incr(KEY, 1)
        a.incr(KEY, 1)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"5", b"10"))
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"12", b"12"))

    def test_a_set_from_a_node_that_never_saw_the_counter_keeps_unseen_increments(self) -> None:
        """A plain SET made where the counter was unknown is a base that saw
        nothing: the later SET's value plus every increment."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        a.incr(KEY, 4)
        b.set(KEY, b"100")
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"104", b"104"))

    def test_a_non_integer_set_wins_over_unseen_increments(self) -> None:
        """SET of a non-integer value reads as that value whatever increments
        it did not see, and INCR on it gets Redis's error."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        a.incr(KEY, 4)
        b.set(KEY, b"hello")
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"hello", b"hello"))
        self.assertEqual(a.incr(KEY, 1), "ERR value is not an integer or out of range")

    def test_del_then_incr_starts_from_zero_and_concurrent_incrs_survive_a_del(self) -> None:
        """DEL cancels what it saw: INCR after it reads 1; an INCR made at
        once on another node, unseen by the DEL, counts too."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        for _ in range(5):
            a.incr(KEY, 1)
        deliver(a, b)
        self.assertTrue(b.delete(KEY))
        self.assertIsNone(b.get(KEY))
        self.assertEqual((len(b), b.tombstones), (0, 1))
        self.assertEqual(b.incr(KEY, 1), 1)
        a.incr(KEY, 1)  # a has not seen the DEL
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"2", b"2"))
        exchange(a, b)
        b.delete(KEY)
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (None, None))
        self.assertEqual((len(a), a.tombstones), (0, 1))

    def test_overflow_and_non_integers_get_redis_errors(self) -> None:
        """INCR past 2**63-1 (or below -2**63), or on a non-integer, changes nothing."""
        store = stores("a")["a"]
        store.set(KEY, b"9223372036854775806")
        self.assertEqual(store.incr(KEY, 1), 9223372036854775807)
        self.assertEqual(store.incr(KEY, 1), "ERR increment or decrement would overflow")
        self.assertEqual(store.get(KEY), b"9223372036854775807")
        store.set(KEY, b"-9223372036854775808")
        self.assertEqual(store.incr(KEY, -1), "ERR increment or decrement would overflow")
        for bad in (b"1.5", b" 1", b"01", b"+1", b"", b"99999999999999999999"):
            store.set(KEY, bad)
            self.assertEqual(store.incr(KEY, 1), "ERR value is not an integer or out of range", bad)
            self.assertEqual(store.get(KEY), bad)


class ExpiryTests(SynchronousTestCase):
    def test_a_counter_keeps_its_expiry_and_expires_on_every_replica_alike(self) -> None:
        """INCR keeps a counter's TTL, EXPIRE cancels no increment, and once
        its time passes every replica reads it missing and holds one
        tombstone state (so their digests agree)."""
        wall = [1000]
        a = Store(HybridClock("a", lambda: wall[0]))
        b = Store(HybridClock("b", lambda: wall[0]))
        a.incr(KEY, 2)
        deliver(a, b)
        b.incr(KEY, 3)
        a.expire(KEY, a.get(KEY), 5000)  # type: ignore[arg-type]
        a.incr(KEY, 1)
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"6", b"6"))
        self.assertEqual((a.expires(KEY), b.expires(KEY)), (5000, 5000))
        self.assertEqual(a.with_expiry, 1)
        b.expire(KEY, b.get(KEY), 0)  # type: ignore[arg-type]  # PERSIST
        exchange(a, b)
        self.assertEqual((a.expires(KEY), a.get(KEY), a.with_expiry), (0, b"6", 0))
        a.expire(KEY, a.get(KEY), 5000)  # type: ignore[arg-type]
        exchange(a, b)
        wall[0] = 5000
        self.assertEqual((a.get(KEY), b.get(KEY)), (None, None))
        self.assertEqual(a.entry(KEY), b.entry(KEY))
        self.assertEqual((a.tombstones, len(a), a.with_expiry), (1, 0, 0))
        self.assertEqual(a.incr(KEY, 1), 1)  # a new life, from zero


    def test_an_expiry_on_a_counter_incr_made_travels_and_a_concurrent_del_leaves_a_plain_tombstone(
            self) -> None:
        """EXPIRE on a counter INCR created (its base is none) is a frame a
        peer accepts; a DEL made at once elsewhere, losing the base to the
        EXPIRE but seeing every increment, leaves a key that reads missing
        and counts as a tombstone with no expiry on both replicas."""
        wall = [1000]
        a = Store(HybridClock("a", lambda: wall[0]))
        b = Store(HybridClock("b", lambda: wall[0]))
        a.incr(KEY, 3)
        deliver(a, b)
        b.delete(KEY)
        wall[0] += 5
        a.expire(KEY, a.get(KEY), 10**13)  # type: ignore[arg-type]
        frame = wire.encode_write(1, KEY, a.entry(KEY))  # type: ignore[arg-type]
        self.assertEqual(wire.decode_body(frame[4:]), wire.Write(1, KEY, a.entry(KEY)))  # type: ignore[arg-type]
        exchange(a, b)
        for store in (a, b):
            counts = (store.get(KEY), len(store), store.tombstones, store.with_expiry)
            self.assertEqual(counts, (None, 0, 1, 0))
        self.assertEqual(a.entry(KEY), b.entry(KEY))


class FlushAndPurgeTests(SynchronousTestCase):
    def test_a_flush_drops_every_increment_older_than_it(self) -> None:
        """After FLUSHALL a counter starts again from zero in a new slot; a
        state made before the flush, arriving late, adds nothing, and a
        state mixing old and new slots keeps only the new."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        for _ in range(4):
            a.incr(KEY, 1)
        b.incr(KEY, 7)
        old_b = b.entry(KEY)
        deliver(a, b)
        floor = a.flush()
        self.assertIsNone(a.entry(KEY))
        self.assertFalse(a.apply(KEY, old_b))  # type: ignore[arg-type]
        self.assertEqual(a.incr(KEY, 1), 1)
        b.incr(KEY, 1)  # b has not heard of the flush: its slot predates it
        b.raise_floor(floor)
        self.assertIsNone(b.get(KEY))
        deliver(a, b)
        b.incr(KEY, 1)
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"2", b"2"))

    def test_a_purged_counter_comes_back_without_its_old_increments(self) -> None:
        """b purged a deleted counter that c still holds: b's new INCR, and
        c's own INCR in its old slot, add up to 2 on both, never resurrecting
        the 5 increments the DEL cancelled."""
        replicas = stores("bc")
        b, c = replicas["b"], replicas["c"]
        for _ in range(5):
            c.incr(KEY, 1)
        deliver(c, b)
        b.delete(KEY)
        deliver(b, c)
        self.assertEqual((b.get(KEY), c.get(KEY)), (None, None))
        b.purge(Version(10**9, 0, ""))
        self.assertIsNone(b.entry(KEY))
        b.incr(KEY, 1)
        c.incr(KEY, 1)
        exchange(b, c)
        self.assertEqual((b.get(KEY), c.get(KEY)), (b"2", b"2"))


class RestartTests(SynchronousTestCase):
    def test_a_node_back_from_an_older_copy_never_builds_on_its_old_total(self) -> None:
        """a made 10 INCRs (b has them all), then comes back holding only the
        first 5: its next INCR opens a new slot, so the old slot keeps its
        newest total, 10, and every replica reads 11, not 6."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        for _ in range(5):
            a.incr(KEY, 1)
        older = a.entry(KEY)
        for _ in range(5):
            a.incr(KEY, 1)
        deliver(a, b)
        again = Store(HybridClock("a", lambda: 5000))
        again.load(KEY, older)  # type: ignore[arg-type]
        self.assertEqual(again.incr(KEY, 1), 6)
        exchange(again, b)
        self.assertEqual((again.get(KEY), b.get(KEY)), (b"11", b"11"))


    @settings(max_examples=examples(150), deadline=None)
    @given(steps)
    def test_a_bulk_load_merges_counters_as_one_by_one_loads_do(self, history: List[Step]) -> None:
        """A restart reads its data dir with Store.load_many: the entries any
        replica held in a random history (counters, plain values with an
        expiry, tombstones, several for the key, in order), loaded in bulk,
        leave the store holding what loading them one by one leaves, and its
        digest agrees."""
        _, seen = run_history(history)
        records = [(0, KEY, entry) for entry in seen]
        one_by_one = Store(HybridClock("z", lambda: 1500))
        for _, key, entry in records:
            one_by_one.load(key, entry)
        bulk = Store(HybridClock("z", lambda: 1500))
        self.assertEqual(bulk.load_many(iter(records)), len(records))
        self.assertEqual(bulk.entry(KEY), one_by_one.entry(KEY))
        self.assertEqual((len(bulk), bulk.live_count(), bulk.with_expiry),
                         (len(one_by_one), one_by_one.live_count(), one_by_one.with_expiry))
        self.assertEqual(bulk.digest.encode(), one_by_one.digest.encode())


class EncodingTests(SynchronousTestCase):
    def sample(self) -> Entry:
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        a.incr(KEY, -(2**62))
        deliver(a, b)
        b.set(KEY, b"12")
        b.incr(KEY, 3)
        b.expire(KEY, b.get(KEY), 10**13)  # type: ignore[arg-type]
        return b.entry(KEY)  # type: ignore[return-value]

    def test_write_and_transaction_frames_carry_the_whole_state(self) -> None:
        """W, T and the data file's bulk reader all give back the same entry."""
        entry = self.sample()
        frame = wire.encode_write(7, KEY, entry)
        self.assertEqual(wire.decode_body(frame[4:]), wire.Write(7, KEY, entry))
        self.assertEqual(list(wire.iter_writes(frame)), [(7, KEY, entry)])
        frame = wire.encode_transaction(9, [(KEY, entry), (b"p", (b"v", 1, 2, "a"))])
        self.assertEqual(len(frame) - 4, wire.transaction_size([(KEY, entry), (b"p", (b"v", 1, 2, "a"))]))
        decoded = wire.decode_body(frame[4:])
        self.assertEqual(decoded.writes[0], (KEY, entry))  # type: ignore[union-attr]

    def test_malformed_counter_states_are_refused(self) -> None:
        """A truncated state, trailing bytes, a bad node id, a total out of
        range or a frame version that is not the state's: WireError."""
        entry = self.sample()
        frame = wire.encode_write(7, KEY, entry)
        state: CounterState = counter_state(entry)
        raw = encode(state)
        self.assertEqual(decode(raw, wire.valid_node_id), state)
        bad_frames = [frame[4:-1], frame[4:] + b"\0"]
        head = frame[4:5 + 8]
        bad_frames.append(head + (entry[-3] + 1).to_bytes(8, "big") + frame[4 + 17:])  # type: ignore[operator]
        slot_node = raw.index(b"a", raw.index(b"12") + 2)
        bad_frames.append(frame[4:].replace(raw, raw[:slot_node] + b"/" + raw[slot_node + 1:]))
        for body in bad_frames:
            with self.assertRaises(wire.WireError):
                wire.decode_body(body)

    def test_a_counter_write_with_its_most_slots_fits_a_peer_frame(self) -> None:
        """A counter holding a base of the largest request and as many slots
        and observed slots as INCR can leave, with the longest node ids and
        totals, is a frame a peer with the same --max-request accepts; INCR
        opens no slot past OPEN_SLOTS."""
        from distkv.store.counter import MAX_SLOTS, OPEN_SLOTS, TOTAL_LIMIT
        node = "n" * 64
        slots = {(node, i, 0): (-(TOTAL_LIMIT - 1), i + 1, 0) for i in range(MAX_SLOTS)}
        state = make(b"x" * 1000, 0, Version(5, 0, node), slots, dict(slots))
        frame = wire.encode_write(1, KEY, counter_entry(state))
        self.assertEqual(len(wire.FrameDecoder(wire.max_frame(1000 + len(KEY))).feed(frame)), 1)
        store = Store(HybridClock("a", lambda: 10**7))
        many = {slot: (1, ms, counter) for slot, (_, ms, counter) in list(slots.items())[:OPEN_SLOTS]}
        store.load(KEY, counter_entry(make(None, 0, Version(0, 0, ""), many, {})))
        self.assertEqual(store.incr(KEY, 1),
                         "ERR too many nodes (or restarts of them) have incremented this counter")

    def test_the_digest_sees_states_that_share_a_version(self) -> None:
        """Two states with the same newest version but different slots hash apart."""
        one = make(None, 0, Version(0, 0, ""), {("a", 5, 0): (1, 9, 0)}, {})
        two = make(None, 0, Version(0, 0, ""), {("a", 5, 0): (1, 9, 0), ("b", 1, 0): (2, 2, 0)}, {})
        self.assertEqual(version(one), version(two))
        digests = []
        for state in (one, two):
            digest = Digest({KEY: counter_entry(state)})
            digests.append(digest.hashes)
        self.assertNotEqual(digests[0], digests[1])

    def test_a_data_dir_of_format_4_is_read_and_counters_survive_a_restart(self) -> None:
        """A format 4 data dir (before counters) opens as format 6; a counter
        written to it reads the same after a restart."""
        path = scratch_dir(self)
        clock = Clock()
        clock.advance(1_700_000_000)
        node = Node(clock, "n1", data_dir=path)
        node.store.set(b"plain", b"v")
        node.journal.commit()
        node.crash()
        data_format(path, mark="4")
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual(node.store.get(b"plain"), b"v")
        node.store.incr(b"c", 41)
        node.store.incr(b"c", 1)
        node.journal.commit()
        held = node.store.entry(b"c")
        node.crash()
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual((node.store.get(b"c"), node.store.entry(b"c")), (b"42", held))
        node.crash()
        self.assertEqual(data_format(path), "6")


class FloatTests(SynchronousTestCase):
    def test_long_double_arithmetic_formats_as_redis(self) -> None:
        """Sums computed in 64-bit-significand precision print as Redis's
        %.17Lf with trailing zeros cut (values checked against redis-server 7.0)."""
        cases = [
            (b"10.50", b"0.1", b"10.6"),
            (b"5.0e3", b"2.0e2", b"5200"),
            (b"0", b"0.1", b"0.1"),
            (b"3", b"-3", b"0"),
            (b"1", b"1e-20", b"1"),
            (b"0", b"0x10", b"16"),
        ]
        for held, amount, expected in cases:
            total = long_double(held) + long_double(amount)  # type: ignore[operator]
            self.assertEqual(format_long_double(total), expected, (held, amount))

    def test_what_redis_refuses_as_a_float(self) -> None:
        """Spaces, NaN, empty, trailing junk and overflow are refused; an
        infinity is read (and its sum refused later)."""
        for bad in (b"", b" 1", b"1 ", b"nan", b"abc", b"1e", b"1e99999", b"1e-99999", b"0x"):
            self.assertIsNone(long_double(bad), bad)
        self.assertEqual(long_double(b"-Infinity"), "inf")


class LongDigitsTests(SynchronousTestCase):
    def test_incrbyfloat_reads_and_writes_numbers_of_thousands_of_digits(self) -> None:
        """Results, stored values and exponents past CPython's 4,300-digit
        conversion limit are answered as redis-server 7.0.15 answers them (the
        replies' length, start and SHA-256 were taken from it), not with an
        exception that dropped the connection."""
        cases = [
            (b"1", b"1e4931", 4941, b"$4932\r\n10000", "d5ac9b3ff3529794"),
            (b"9" * 4400, b"1", 4410, b"$4401\r\n10000", "657671dc52b921f0"),
            (b"1", b"1e-" + b"0" * 4399 + b"1", 9, b"$3\r\n1.1\r\n", "c570208aace41c3b"),
            (b"-1", b"-1e4931", 4942, b"$4933\r\n-1000", "219dbacc35d9de81"),
            (b"0.5", b"1e4900", 4910, b"$4901\r\n10000", "7cabb4a4689548ce"),
        ]
        for stored, increment, size, start, sha in cases:
            node = Node(Clock(), "n1")
            proto, transport = connect(node)
            ask(proto, transport, b"SET", b"x", stored)
            reply = ask(proto, transport, b"INCRBYFLOAT", b"x", increment)
            self.assertEqual((len(reply), reply[:len(start)], hashlib.sha256(reply).hexdigest()[:16]),
                             (size, start, sha), increment[:10])
            self.assertTrue(transport.connected)


class SlotBoundTests(SynchronousTestCase):
    def test_a_merge_past_max_slots_is_refused_and_the_key_stays_sendable(self) -> None:
        """A peer's state of MAX_SLOTS slots merged into a counter holding
        one more of this node's would exceed what a frame and the data file
        carry: it is refused and counted, and what the node holds still
        travels in a W frame and survives a restart from its data dir."""
        clock = Clock()
        clock.advance(1_700_000_000)
        path = scratch_dir(self)
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual(node.store.incr(KEY, 1), 1)
        now = int(clock.seconds() * 1000)
        slots = {(f"p{i}", now - 5000 + i, 0): (1, now - 5000 + i, 0)
                 for i in range(MAX_SLOTS)}
        remote = counter_entry(make(None, 0, ZERO, slots, {}))
        frame = wire.decode_body(wire.encode_write(0, KEY, remote)[4:])
        self.assertFalse(node.store.apply(KEY, frame.entry))  # type: ignore[union-attr]
        self.assertEqual(node.store.counters_refused, 1)
        held = node.store.entry(KEY)
        assert held is not None
        self.assertEqual(wire.decode_body(wire.encode_write(0, KEY, held)[4:]).entry,  # type: ignore[union-attr]
                         held)
        clock.advance(1)
        node.journal.commit()  # type: ignore[union-attr]
        node.crash()
        again = Node(clock, "n1", data_dir=path)
        self.addCleanup(again.crash)
        self.assertEqual(again.store.get(KEY), b"1")
