"""A counter key's entry is its state, and INCR's reply is that entry.

INCR builds one tuple per call: the counter's state, which the store keeps
as the key's entry (see :mod:`distkv.store.entries`) and the command answers
as its reply, an integer already written out (``replies.IntegerText``). These
tests show the entry and the reply agree with the number INCR computed on
its fast and slow paths, every front end (RESP2, RESP3, pipelined, behind a
commit, inside EXEC, the text protocol) writes that reply as the integer it
is, and the wire and data-file bytes of a counter are the ones the layout of
two tuples wrote (so peers and data dirs of either read each other's).
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Dict, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.front.replies import Array, integer_text
from distkv.front.replyqueue import reply_size
from distkv.front.resp import encode, encode3
from distkv.front.textproto import format_reply
from distkv.node import Node
from distkv.store import counter as counters
from distkv.store.entries import counter_state, expires_of, is_counter, version_of
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster
from tests.respclient import ask, command, connect
from tests.scratch import scratch_dir

KEY = b"k"

#: ``wire.encode_write(7, KEY, entry)`` of the counter :func:`_sample`
#: makes, as the code before this layout (commit ab0fdb5, where a counter's
#: entry was ``(value, expires, state, ms, counter, node)``) wrote it.
GOLDEN_WRITE = bytes.fromhex(
    "000000ac57000000000000000700000000000003f30000000004000162000000016b01000009184e72a0"
    "0000000000000003f1000000000001620000000231320002000100000000000003e80000000000000000"
    "000003e8000000000861c000000000000000000100000000000003ee0000000000000000000003f30000"
    "0000f8620a0fb7a8a62880000001000100000000000003e80000000000000000000003e8000000000861"
    "c000000000000000"
)


def _sample() -> Store:
    """Store ``b`` after an INCR from ``a``, SET, two INCRs, EXPIRE and an
    INCRBYFLOAT of its own, on a wall clock ticking a millisecond per read."""
    ticks = itertools.count(1000)
    a = Store(HybridClock("a", lambda: next(ticks)))
    b = Store(HybridClock("b", lambda: next(ticks)))
    a.incr(KEY, -(2**62))
    b.apply(KEY, a.entry(KEY))  # type: ignore[arg-type]
    b.set(KEY, b"12")
    b.incr(KEY, 3)
    b.incr(KEY, 4)
    b.expire(KEY, b.get(KEY), 10**13)  # type: ignore[arg-type]
    b.incr_float(KEY, b"0.25")
    return b


class EntryTests(SynchronousTestCase):
    def test_increment_answers_the_stored_entry_whose_text_is_the_new_number(self) -> None:
        """On the slow path (a new counter, a plain base, a negative amount,
        a counter with an expiry) and the fast one (this node's own INCRs),
        the reply is the very entry stored, a counter's, whose value is the
        new number written out and whose state's number is that number."""
        store = Store(HybridClock("n", itertools.count(10**12).__next__))
        store.set(b"base", b"40")
        store.set(b"timed", b"7", expires=10**13)
        expected = {KEY: 0, b"base": 40, b"timed": 7}
        for amount in (1, 1, -5, 2**40, -(2**41), 1, 1):
            for key in (KEY, b"base", b"timed"):
                expected[key] += amount
                entry = store.increment(key, amount)
                assert type(entry) is not str
                self.assertIs(store.entry(key), entry)
                self.assertTrue(is_counter(entry))
                self.assertEqual(integer_text(entry), b"%d" % expected[key])
                self.assertEqual(counters.number_of(entry), expected[key])
                self.assertEqual(store.get(key), b"%d" % expected[key])
        self.assertEqual(expires_of(store.entry(b"timed")), 10**13)  # type: ignore[arg-type]
        self.assertEqual(expires_of(store.entry(KEY)), 0)  # type: ignore[arg-type]
        self.assertEqual(store.incr(KEY, 1), expected[KEY] + 1)

    def test_a_counter_entry_reads_through_its_accessors(self) -> None:
        """The state is the entry: its version is the entry's last three
        fields, a deleted counter reads as a tombstone with no expiry."""
        store = _sample()
        entry = store.entry(KEY)
        assert entry is not None
        self.assertIs(counter_state(entry), entry)
        self.assertEqual(version_of(entry), counters.version(counter_state(entry)))
        self.assertEqual(entry[0], counters.value(counter_state(entry)))
        self.assertEqual(expires_of(entry), 10**13)
        store.delete(KEY)
        gone = store.entry(KEY)
        assert gone is not None
        self.assertTrue(is_counter(gone))
        self.assertEqual((gone[0], expires_of(gone)), (None, 0))
        self.assertEqual(counters.number_of(counter_state(gone)), 0)


class FractionalSlotTests(SynchronousTestCase):
    def test_incrby_on_a_fractional_slot_stops_at_its_bound(self) -> None:
        """A slot INCRBYFLOAT made fractional is never kept aside, so INCRBY
        in it, even right after an INCRBY of its own (INCR's fast path),
        checks a fraction's bound (2**126 units of 10**-17, about 2**69.5):
        node a's INCRBYs of 3 * 2**59, two at a time, each pair cancelled by node
        b, are refused as an overflow at the first that would pass it, while
        the value stays inside 64 bits."""
        ticks = itertools.count(10**12)
        a, b, c = (Store(HybridClock(name, ticks.__next__)) for name in "abc")
        a.incr_float(KEY, b"0.5")
        c.incr_float(KEY, b"0.5")
        for source, target in ((a, c), (c, a), (a, b)):
            target.apply(KEY, source.entry(KEY))  # type: ignore[arg-type]
        self.assertEqual([store.get(KEY) for store in (a, b, c)], [b"1"] * 3)
        step = 3 * 2**59  # the one refused is the second of a pair (492nd)
        bound = Fraction(counters.TOTAL_LIMIT, counters.SCALE)
        refused = next(n for n in itertools.count(1) if Fraction(1, 2) + n * step >= bound)
        self.assertEqual(refused % 2, 0)
        made = 0
        while True:
            for _ in range(2):  # the second on INCR's fast path, but for the bound
                reply = a.incr(KEY, step)
                if type(reply) is str:
                    break
                made += 1
                self.assertEqual(reply, 1 + step * (2 - made % 2))
                held = a.entry(KEY)
                assert held is not None
                self.assertEqual(held, counters.make(*_parts(counter_state(held))))
            if type(reply) is str:
                break
            b.apply(KEY, a.entry(KEY))  # type: ignore[arg-type]
            self.assertEqual(b.incr(KEY, -2 * step), 1)
            a.apply(KEY, b.entry(KEY))  # type: ignore[arg-type]
        self.assertEqual((made + 1, reply), (refused, "ERR increment or decrement would overflow"))
        self.assertEqual(a.get(KEY), b"%d" % (1 + step * (made % 2)))


_Slots = Dict[counters.Slot, counters.SlotState]


def _parts(state: counters.CounterState) -> Tuple[Optional[bytes], int, Version, _Slots, _Slots]:
    """What :func:`~distkv.store.counter.make` builds ``state`` from."""
    return (state[counters.BASE], state[counters.EXPIRES],  # type: ignore[return-value]
            state[counters.BASE_VERSION], counters.all_slots(state), state[counters.OBSERVED])


class FormatTests(SynchronousTestCase):
    def test_a_counter_is_written_to_peers_and_disk_as_before(self) -> None:
        """A counter's write frame (what the data file stores too) is byte for
        byte what the two-tuple layout wrote, and reads back as the entry."""
        entry = _sample().entry(KEY)
        assert entry is not None
        self.assertEqual(wire.encode_write(7, KEY, entry), GOLDEN_WRITE)
        self.assertEqual(wire.decode_body(GOLDEN_WRITE[4:]), wire.Write(7, KEY, entry))

    def test_a_counter_in_the_data_dir_reads_back_the_same_after_a_restart(self) -> None:
        """INCRs (fast path included) written to a data dir give back, after a
        crash, the same entry and value, and INCR goes on from it."""
        path = scratch_dir(self)
        clock = Clock()
        clock.advance(1_700_000_000)
        node = Node(clock, "n1", data_dir=path)
        for _ in range(3):
            node.store.incr(b"c", 5)
        node.journal.commit()  # type: ignore[union-attr]
        held = node.store.entry(b"c")
        node.crash()
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual((node.store.get(b"c"), node.store.entry(b"c")), (b"15", held))
        self.assertEqual(node.store.incr(b"c", 1), 16)
        node.crash()


class ReplyTests(SynchronousTestCase):
    def test_every_encoder_writes_an_integer_text_as_the_integer(self) -> None:
        """RESP2, RESP3, an array of them (EXEC's), the text protocol and the
        reply queue's size bound treat INCR's reply as the int it stands for."""
        store = Store(HybridClock("n", itertools.count(10**12).__next__))
        for number in (1, -7, 2**63 - 1):
            store.delete(KEY)
            reply = store.increment(KEY, number)
            assert type(reply) is not str
            self.assertEqual(encode(reply), encode(number))
            self.assertEqual(encode3(reply), encode3(number))
            self.assertEqual(encode(Array((reply, b"x"))), encode(Array((number, b"x"))))
            self.assertEqual(format_reply(reply), format_reply(number))
            self.assertGreaterEqual(reply_size(reply), len(encode(reply)))

    def test_incr_replies_pipelined_in_resp2_resp3_and_text(self) -> None:
        """Pipelined INCRs (the fast path of both the store and the RESP
        loop), INCRBY and DECR, over RESP2, RESP3 and the text protocol."""
        node = Node(Clock(), "n1")
        proto, transport = connect(node)
        proto.dataReceived(command(b"INCR", b"a") * 3 + command(b"DECRBY", b"a", b"10")
                           + command(b"GET", b"a") + command(b"INCR", b"a"))
        self.assertEqual(transport.value(), b":1\r\n:2\r\n:3\r\n:-7\r\n$2\r\n-7\r\n:-6\r\n")
        ask(proto, transport, b"HELLO", b"3")
        self.assertEqual(ask(proto, transport, b"INCRBY", b"a", b"100"), b":94\r\n")
        text, out = connect(node, 6001)
        text.dataReceived(b"INCR a\r\nDECR a\r\nINCR fresh\r\n")
        self.assertEqual(out.value(), b"95\r\n94\r\n1\r\n")

    def test_incr_replies_behind_a_commit_and_inside_exec(self) -> None:
        """With a data dir, INCR's reply waits for the commit and is the
        integer; INCRs in a transaction answer as EXEC's array items."""
        cluster = SimulatedCluster(1, data_root=scratch_dir(self))
        self.addCleanup(cluster.stop)
        cluster.settle()
        proto, transport = connect(cluster.nodes["n1"])
        proto.dataReceived(command(b"INCR", b"a") * 2 + command(b"MULTI") + command(b"INCR", b"a")
                           + command(b"INCRBY", b"a", b"-5") + command(b"EXEC"))
        cluster.net.advance(0)
        self.assertEqual(transport.value(),
                         b":1\r\n:2\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:3\r\n:-2\r\n")
