"""INCRBYFLOAT counters: Redis's replies on one node, exact sums across nodes.

INCRBYFLOAT prints Redis's sum of the value it reads and its amount, and
adds the difference, exactly, to its node's own counter slot (see
:meth:`distkv.store.store.Store.incr_float`). These tests show a recorded
session's replies (redis-server 7.0.15's) and a live redis-server's; merges
of states INCRBYFLOAT, INCRBY, SET and DEL made commutative, associative and
idempotent; with no reset, every replica reading the exact sum of every
node's contributions; 3 nodes x 100 INCRBYFLOATs and INCRBYs of each of
two keys through a partition reading those sums everywhere; a SET cancelling only what it saw;
fractional totals on the wire and in the data file across a restart; and
hostile totals refused.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Dict, List, Optional, Tuple, Union

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.node import Node
from distkv.store.counter import TOTAL_LIMIT, ZERO, CounterError, all_slots, decode, encode, make, merge
from distkv.store.entries import counter_state, is_counter
from distkv.store.longdouble import decimal_text, number
from tests.clusters import settled_cluster
from tests.proptest import examples
from tests.redisoracle import redis_replies, start_redis_server
from tests.respclient import ask, command, connect
from tests.scratch import scratch_dir
from tests.test_counters import AMOUNTS, KEY, Step, data_format, deliver, exchange, run_history, steps, stores

#: One session on one connection to an empty server, with the replies
#: redis-server 7.0.15 gave (RESP2): a float counter turning integer and back
#: (and what INCR answers on each), exponents, hexadecimal, a value of more
#: than 17 decimals, a 64-bit edge, refused values and amounts, the expiry
#: kept, APPEND, DEL, GETDEL and GETSET between INCRBYFLOATs.
SCRIPT: Tuple[Tuple[Tuple[bytes, ...], bytes], ...] = (
    ((b'SET', b'k', b'10.5'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'k', b'0.1'), b'$4\r\n10.6\r\n'),
    ((b'GET', b'k'), b'$4\r\n10.6\r\n'),
    ((b'INCR', b'k'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'INCRBYFLOAT', b'k', b'0.4'), b'$2\r\n11\r\n'),
    ((b'INCR', b'k'), b':12\r\n'),
    ((b'INCRBYFLOAT', b'k', b'-12'), b'$1\r\n0\r\n'),
    ((b'INCRBYFLOAT', b'k', b'-0.1'), b'$4\r\n-0.1\r\n'),
    ((b'DECRBY', b'k', b'1'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'INCRBYFLOAT', b'k', b'0.1'), b'$1\r\n0\r\n'),
    ((b'DECR', b'k'), b':-1\r\n'),
    ((b'GET', b'k'), b'$2\r\n-1\r\n'),
    ((b'SET', b'e', b'5.0e3'), b'+OK\r\n'),
    ((b'INCR', b'e'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'INCRBYFLOAT', b'e', b'0'), b'$4\r\n5000\r\n'),
    ((b'INCR', b'e'), b':5001\r\n'),
    ((b'GET', b'e'), b'$4\r\n5001\r\n'),
    ((b'INCRBYFLOAT', b'f', b'0.1'), b'$3\r\n0.1\r\n'),
    ((b'INCRBYFLOAT', b'f', b'0.1'), b'$3\r\n0.2\r\n'),
    ((b'INCRBYFLOAT', b'f', b'0.1'), b'$3\r\n0.3\r\n'),
    ((b'INCRBYFLOAT', b'f', b'1e-18'), b'$3\r\n0.3\r\n'),
    ((b'INCRBYFLOAT', b'f', b'-0.30000000000000001'), b'$20\r\n-0.00000000000000001\r\n'),
    ((b'GET', b'f'), b'$20\r\n-0.00000000000000001\r\n'),
    ((b'INCRBYFLOAT', b'f', b'-1e-18'), b'$20\r\n-0.00000000000000001\r\n'),
    ((b'SET', b'g', b'0.3333333333333333333333'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'g', b'1'), b'$19\r\n1.33333333333333333\r\n'),
    ((b'INCRBYFLOAT', b'g', b'1'), b'$19\r\n2.33333333333333333\r\n'),
    ((b'GET', b'g'), b'$19\r\n2.33333333333333333\r\n'),
    ((b'SET', b'x', b'9223372036854775807'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'x', b'1'), b'$19\r\n9223372036854775808\r\n'),
    ((b'INCR', b'x'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'INCRBYFLOAT', b'x', b'-1'), b'$19\r\n9223372036854775807\r\n'),
    ((b'INCR', b'x'), b'-ERR increment or decrement would overflow\r\n'),
    ((b'INCRBYFLOAT', b'x', b'-9223372036854775807.5'), b'$4\r\n-0.5\r\n'),
    ((b'INCRBYFLOAT', b'i', b'inf'), b'-ERR increment would produce NaN or Infinity\r\n'),
    ((b'INCRBYFLOAT', b'i', b'nan'), b'-ERR value is not a valid float\r\n'),
    ((b'EXISTS', b'i'), b':0\r\n'),
    ((b'SET', b'j', b'abc'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'j', b'1'), b'-ERR value is not a valid float\r\n'),
    ((b'SET', b'j', b' 1'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'j', b'1'), b'-ERR value is not a valid float\r\n'),
    ((b'SET', b'j', b'1e99999'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'j', b'1'), b'-ERR value is not a valid float\r\n'),
    ((b'SET', b'j', b'inf'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'j', b'1'), b'-ERR increment would produce NaN or Infinity\r\n'),
    ((b'SET', b't', b'1', b'EX', b'100'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b't', b'0.5'), b'$3\r\n1.5\r\n'),
    ((b'TTL', b't'), b':100\r\n'),
    ((b'INCR', b't'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'INCRBYFLOAT', b't', b'0.5'), b'$1\r\n2\r\n'),
    ((b'INCR', b't'), b':3\r\n'),
    ((b'TTL', b't'), b':100\r\n'),
    ((b'SET', b'z', b'-0'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'z', b'0'), b'$1\r\n0\r\n'),
    ((b'SET', b'z', b'0x10'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'z', b'0.5'), b'$4\r\n16.5\r\n'),
    ((b'INCRBYFLOAT', b'z', b'0x1p-3'), b'$6\r\n16.625\r\n'),
    ((b'INCRBYFLOAT', b'z', b'-16.625'), b'$1\r\n0\r\n'),
    ((b'INCRBYFLOAT', b'y', b'123456789012345678.5'), b'$20\r\n123456789012345678.5\r\n'),
    ((b'INCRBYFLOAT', b'y', b'0.25'), b'$21\r\n123456789012345678.75\r\n'),
    ((b'INCRBYFLOAT', b'y', b'1e3'), b'$21\r\n123456789012346678.75\r\n'),
    ((b'SET', b'w', b'1.5'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'w', b'0.5'), b'$1\r\n2\r\n'),
    ((b'INCRBY', b'w', b'3'), b':5\r\n'),
    ((b'INCRBYFLOAT', b'w', b'0.25'), b'$4\r\n5.25\r\n'),
    ((b'DECR', b'w'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'STRLEN', b'w'), b':4\r\n'),
    ((b'SET', b'a', b'1.5'), b'+OK\r\n'),
    ((b'INCRBYFLOAT', b'a', b'1'), b'$3\r\n2.5\r\n'),
    ((b'APPEND', b'a', b'0'), b':4\r\n'),
    ((b'GET', b'a'), b'$4\r\n2.50\r\n'),
    ((b'INCRBYFLOAT', b'a', b'1'), b'$3\r\n3.5\r\n'),
    ((b'DEL', b'f'), b':1\r\n'),
    ((b'INCRBYFLOAT', b'f', b'2.5'), b'$3\r\n2.5\r\n'),
    ((b'GETDEL', b'f'), b'$3\r\n2.5\r\n'),
    ((b'INCRBYFLOAT', b'f', b'5.0e-1'), b'$3\r\n0.5\r\n'),
    ((b'GETSET', b'f', b'7'), b'$3\r\n0.5\r\n'),
    ((b'INCRBYFLOAT', b'f', b'1.25e1'), b'$4\r\n19.5\r\n'),
    ((b'TYPE', b'f'), b'+string\r\n'),
    ((b'INCRBYFLOAT', b's', b'1e-30'), b'$1\r\n0\r\n'),
    ((b'INCRBYFLOAT', b's', b'-.5'), b'$4\r\n-0.5\r\n'),
    ((b'INCRBYFLOAT', b's', b'+7.'), b'$3\r\n6.5\r\n'),
    ((b'INCRBYFLOAT', b's', b'3.0E+2'), b'$5\r\n306.5\r\n'),
    ((b'INCRBYFLOAT', b'n', b'-99999999999999999999.5'), b'$22\r\n-100000000000000000000\r\n'),
    ((b'INCRBYFLOAT', b'n', b'0.5'), b'$22\r\n-100000000000000000000\r\n'),
    ((b'INCR', b'n'), b'-ERR value is not an integer or out of range\r\n'),
)
#: Requests whose long replies are compared with a live redis-server's only.
LONG = ((b'INCRBYFLOAT', b'i', b'1e400'), (b'INCRBYFLOAT', b'm', b'1.7976931348623157e308'),
        (b'INCRBYFLOAT', b'm', b'1.7976931348623157e308'), (b'SET', b'h', b'1e4000'),
        (b'INCRBYFLOAT', b'h', b'1.5'), (b'INCRBYFLOAT', b'h', b'-1e4000'), (b'GET', b'h'))

_REPLY = re.compile(rb"\$-1\r\n|\$\d+\r\n([^\r]*)\r\n|:(-?\d+)\r\n|(-ERR [^\r]*)\r\n")
Exact = Union[int, Fraction]


def values_of(replies: bytes) -> Tuple[List[Optional[bytes]], int]:
    """The values in a run of nil, bulk, integer and error replies, and how
    many of them were integers."""
    found: List[Optional[bytes]] = []
    integers = 0
    for match in _REPLY.finditer(replies):
        bulk, integer, error = match.groups()
        if error is None:
            found.append(integer if integer is not None else bulk)
            integers += integer is not None
        else:
            found.append(error)
    return found, integers


def exact(value: Optional[bytes]) -> Exact:
    read = 0 if value is None else number(value)
    assert read is not None, value
    return read


class ReplyTests(SynchronousTestCase):
    def test_the_session_gets_redis_replies_and_every_node_reads_its_values(self) -> None:
        """SCRIPT through n1 of a three-node cluster gets redis-server's
        recorded replies byte for byte; once replicated, every node reads
        each of its keys as n1 does, with the same expiry."""
        cluster = settled_cluster(self, 3)
        proto, transport = connect(cluster.nodes["n1"])
        for request, expected in SCRIPT:
            self.assertEqual(ask(proto, transport, *request), expected, request)
        cluster.run()
        keys = sorted({request[1] for request, _ in SCRIPT})
        for node in cluster.nodes.values():
            for key in keys:
                self.assertEqual(node.store.get(key), cluster.nodes["n1"].store.get(key), key)
                self.assertEqual(node.store.expires(key), cluster.nodes["n1"].store.expires(key), key)
        self.assertTrue(cluster.converged())


class RedisOracleTests(SynchronousTestCase):
    def test_redis_gives_the_recorded_replies_and_distkv_its_long_ones(self) -> None:
        """A live redis-server 7.0 answers SCRIPT as recorded, and an
        in-process node answers SCRIPT and LONG (values of hundreds and
        thousands of digits) with its bytes, over RESP2 and RESP3."""
        port = start_redis_server(self)
        requests = [request for request, _ in SCRIPT] + list(LONG)
        theirs = redis_replies(port, [command(b"FLUSHALL")] + [command(*r) for r in requests])[1:]
        self.assertEqual(theirs[:len(SCRIPT)], [expected for _, expected in SCRIPT])
        node = Node(Clock(), "n1")
        proto, transport = connect(node)
        for request, expected in zip(requests, theirs):
            self.assertEqual(ask(proto, transport, *request), expected, request)
        hello = [command(b"FLUSHALL"), command(b"HELLO", b"3")]
        theirs = redis_replies(port, hello + [command(*r) for r in requests])[2:]
        node = Node(Clock(), "n1")
        proto, transport = connect(node)
        ask(proto, transport, b"HELLO", b"3")
        for request, expected in zip(requests, theirs):
            self.assertEqual(ask(proto, transport, *request), expected, request)


#: Histories of increments only: (node, "incr" or "float" or "deliver", argument).
increments = st.lists(st.tuples(st.sampled_from("abc"),
                                st.sampled_from(["incr", "float", "float", "deliver"]), st.integers(-3, 3)),
                      max_size=50)


class MergeTests(SynchronousTestCase):
    @settings(max_examples=examples(150), deadline=None)
    @given(history=steps, data=st.data())
    def test_merge_is_commutative_associative_and_idempotent(self, history: List[Step],
                                                             data: st.DataObject) -> None:
        """Any three states a random history of INCRBYFLOAT, INCRBY, integer
        and float SETs, DEL, EXPIRE and deliveries left: merge(a, b) is
        merge(b, a), merge(merge(a, b), c) is merge(a, merge(b, c)), and
        merge(a, a) is a."""
        _, produced = run_history(history)
        if not produced:
            return
        states = [counter_state(entry) for entry in produced]
        a, b, c = (data.draw(st.sampled_from(states)) for _ in range(3))
        self.assertEqual(merge(a, b), merge(b, a))
        self.assertEqual(merge(merge(a, b), c), merge(a, merge(b, c)))
        self.assertEqual(merge(a, a), a)

    @settings(max_examples=examples(150), deadline=None)
    @given(history=increments)
    def test_with_no_reset_every_contribution_counts_exactly(self, history: List[Step]) -> None:
        """INCRBYFLOATs and INCRBYs through any nodes, delivered in any
        pattern: each reply less the value its node read before is that
        node's contribution, and once every replica has every other's state,
        each reads the exact sum of them all, written out in decimal."""
        replicas = stores()
        total: Exact = 0
        for node, op, arg in history:
            store = replicas[node]
            before = store.get(KEY)
            if op == "deliver":
                deliver(replicas["abc"[arg % 3]], store)
                continue
            if op == "incr":
                result: Union[int, bytes, str] = store.incr(KEY, arg)
            else:
                result = store.incr_float(KEY, AMOUNTS[arg % len(AMOUNTS)])
            if type(result) is str:  # INCR of a value that is not an integer now
                self.assertEqual(store.get(KEY), before)
                continue
            self.assertEqual(store.get(KEY), b"%d" % result if type(result) is int else result)
            total += exact(store.get(KEY)) - exact(before)
        exchange(*replicas.values())
        if any(op != "deliver" for _, op, _ in history):
            for replica in replicas.values():
                self.assertEqual(replica.get(KEY), decimal_text(total))
                self.assertTrue(is_counter(replica.entry(KEY)))  # type: ignore[arg-type]

    def test_three_nodes_adding_a_tenth_at_once_add_up(self) -> None:
        """300 INCRBYFLOAT 0.1 through each of three nodes that see nothing
        of each other: each reads 30, and all read 90 once they exchange."""
        replicas = stores()
        for _ in range(300):
            for replica in replicas.values():
                replica.incr_float(KEY, b"0.1")
        self.assertEqual({r.get(KEY) for r in replicas.values()}, {b"30"})
        exchange(*replicas.values())
        self.assertEqual({r.get(KEY) for r in replicas.values()}, {b"90"})
        self.assertEqual(replicas["a"].incr(KEY, 1), 91)

    def test_a_set_cancels_the_float_increments_it_saw_and_adds_the_others(self) -> None:
        """b's SET saw a's first INCRBYFLOAT but not its second, nor c's:
        those two count on top of the SET's value everywhere."""
        replicas = stores()
        a, b, c = replicas["a"], replicas["b"], replicas["c"]
        self.assertEqual(a.incr_float(KEY, b"0.5"), b"0.5")
        deliver(a, b)
        self.assertEqual(a.incr_float(KEY, b"0.25"), b"0.75")
        self.assertEqual(c.incr_float(KEY, b"-0.1"), b"-0.1")
        b.set(KEY, b"10")
        exchange(a, b, c)
        self.assertEqual({r.get(KEY) for r in replicas.values()}, {b"10.15"})
        self.assertEqual(a.incr(KEY, 1), "ERR value is not an integer or out of range")
        self.assertEqual(c.incr_float(KEY, b"0.85"), b"11")
        exchange(a, b, c)
        self.assertEqual([r.incr(KEY, 1) for r in replicas.values()], [12, 12, 12])

    def test_a_float_base_adds_unseen_increments_and_a_word_wins(self) -> None:
        """A SET of a number INCRBYFLOAT reads (5.0e3) made while another
        node incremented reads as the sum, written out; a SET of a word
        reads as itself whatever it did not see."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        a.incr(KEY, 2)
        a.incr_float(KEY, b"0.5")
        b.set(KEY, b"5.0e3")
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"5002.5", b"5002.5"))
        a.incr_float(KEY, b"1")
        b.set(KEY, b"hello")
        exchange(a, b)
        self.assertEqual((a.get(KEY), b.get(KEY)), (b"hello", b"hello"))
        self.assertEqual(a.incr_float(KEY, b"1"), "ERR value is not a valid float")

    def test_a_value_of_more_than_17_decimals_is_written_as_set(self) -> None:
        """INCRBYFLOAT on a value with more decimals than a slot keeps
        writes its result as SET does (the reply is still Redis's); the next
        one, on that result, adds to the node's slot again."""
        store = stores("a")["a"]
        store.set(KEY, b"0.3333333333333333333333")
        self.assertEqual(store.incr_float(KEY, b"1"), b"1.33333333333333333")
        self.assertEqual(len(store.entry(KEY)), 4)  # type: ignore[arg-type]
        self.assertEqual(store.incr_float(KEY, b"1"), b"2.33333333333333333")
        self.assertTrue(is_counter(store.entry(KEY)))  # type: ignore[arg-type]


class ClusterTests(SynchronousTestCase):
    def test_three_nodes_incrbyfloats_through_a_partition_read_the_exact_sum(self) -> None:
        """100 INCRBYFLOATs (tenths, thirds, negative amounts, exponents) of
        one key, and of another 100 INCRBYFLOATs of quarters and INCRBYs
        (answered when its value is a whole number, refused otherwise, as
        Redis does), through each of three nodes over RESP, n3 partitioned
        away for the middle half: once healed every node reads, for each
        key, the exact sum of every node's contributions (each batch's last
        value less the value read before it)."""
        cluster = settled_cluster(self, 3)
        rand = random.Random(13)
        amounts = {b"tricky": (b"0.1", b"0.2", b"-0.05", b"1.25", b"1e-3", b"0.33333333333333333", b"2.5e1"),
                   b"mixed": (b"0.5", b"-0.25", b"0.75", b"0.25", b"-0.5", b"1.5")}
        totals: Dict[bytes, Exact] = {key: 0 for key in amounts}
        last: Dict[Tuple[str, bytes], Optional[bytes]] = {}
        integers = 0

        def batch(node_id: str, key: bytes, count: int) -> None:
            nonlocal integers
            requests = [command(b"GET", key)] + [
                command(b"INCRBY", key, b"3") if key == b"mixed" and rand.random() < 0.3
                else command(b"INCRBYFLOAT", key, rand.choice(amounts[key])) for _ in range(count)]
            proto, transport = connect(cluster.nodes[node_id])
            proto.dataReceived(b"".join(requests))
            replies, answered = values_of(transport.value())
            self.assertEqual(len(replies), count + 1, transport.value()[-200:])
            values = [reply for reply in replies if reply is None or not reply.startswith(b"-ERR")]
            totals[key] += exact(values[-1]) - exact(values[0])
            last[node_id, key] = values[-1]
            integers += answered
            proto.connectionLost(None)  # type: ignore[arg-type]
            cluster.run()

        def round_of(count: int) -> None:
            for node_id in sorted(cluster.nodes):
                for key in amounts:
                    batch(node_id, key, count)

        round_of(25)
        cluster.net.block("n3", "n1")
        cluster.net.block("n3", "n2")
        round_of(25)
        round_of(25)
        self.assertNotEqual(last["n1", b"tricky"], last["n3", b"tricky"])
        cluster.net.heal()
        round_of(25)
        cluster.settle()
        for node in cluster.nodes.values():
            for key, total in totals.items():
                self.assertEqual(node.store.get(key), decimal_text(total), key)
        self.assertTrue(cluster.converged())
        self.assertGreater(integers, 5)  # INCRBYs counted too


class PersistenceTests(SynchronousTestCase):
    def test_float_counters_survive_a_restart_from_the_data_dir(self) -> None:
        """INCRBYFLOATs and a merged peer's slot, committed to the data dir
        (marked format 6), read the same after a crash and restart, and the
        restarted node adds to them in a new slot of its own."""
        path = scratch_dir(self)
        clock = Clock()
        clock.advance(1_700_000_000)
        node = Node(clock, "n1", data_dir=path)
        peer = stores("p")["p"]
        peer.incr_float(KEY, b"0.125")
        node.store.apply(KEY, peer.entry(KEY))  # type: ignore[arg-type]
        for amount in (b"0.1", b"0.2", b"1e-17", b"-2.5e1"):
            node.store.incr_float(KEY, amount)
        node.store.incr_float(b"plain", b"1.5")
        node.journal.commit()
        held = {key: node.store.entry(key) for key in (KEY, b"plain")}
        self.assertEqual(node.store.get(KEY), b"-24.57499999999999999")
        node.crash()
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual({key: node.store.entry(key) for key in held}, held)
        self.assertEqual(node.store.incr_float(KEY, b"0.075"), b"-24.49999999999999999")
        self.assertEqual(len(all_slots(counter_state(node.store.entry(KEY)))), 3)  # type: ignore[arg-type]
        node.crash()
        self.assertEqual(data_format(path), "6")

    def test_a_format_5_data_dir_is_read_and_marked_6(self) -> None:
        """A data dir of the release before fractional totals (format 5)
        opens as it is: its counter reads the same, INCRBYFLOAT adds to it,
        and the dir is marked 6."""
        path = scratch_dir(self)
        clock = Clock()
        clock.advance(1_700_000_000)
        node = Node(clock, "n1", data_dir=path)
        node.store.incr(KEY, 41)
        node.journal.commit()
        node.crash()
        data_format(path, mark="5")
        node = Node(clock, "n1", data_dir=path)
        self.assertEqual(node.store.get(KEY), b"41")
        self.assertEqual(node.store.incr_float(KEY, b"1.5"), b"42.5")
        node.crash()
        self.assertEqual(data_format(path), "6")


class EncodingTests(SynchronousTestCase):
    def test_fractional_totals_travel_in_write_frames(self) -> None:
        """A state with fractional, negative and whole totals, observed
        ones among them, comes back equal from a W frame."""
        replicas = stores("ab")
        a, b = replicas["a"], replicas["b"]
        a.incr_float(KEY, b"-0.00000000000000001")
        b.incr_float(KEY, b"123456789.98765432")
        deliver(a, b)
        b.set(KEY, b"1.5")
        b.incr_float(KEY, b"0.25")
        entry = b.entry(KEY)
        frame = wire.encode_write(3, KEY, entry)  # type: ignore[arg-type]
        self.assertEqual(wire.decode_body(frame[4:]), wire.Write(3, KEY, entry))  # type: ignore[arg-type]

    def test_fractional_totals_out_of_range_are_refused(self) -> None:
        """A fractional total of more than 16 bytes, or of 2**126 units of
        1e-17 or more, does not decode."""
        state = make(None, 0, ZERO, {("a", 1, 0): (Fraction(1, 10), 1, 0)}, {})
        raw = encode(state)
        size_at = 23 + 2 + 26  # the base, the slot count, the slot's fixed fields
        self.assertEqual(raw[size_at], 256 - 7)  # 10**16 units take 7 bytes, size negated
        self.assertEqual(decode(raw, wire.valid_node_id), state)
        too_many = raw[:size_at] + bytes([256 - 17]) + b"a" + b"\0" * 17
        too_far = raw[:size_at] + bytes([256 - 16]) + b"a" + TOTAL_LIMIT.to_bytes(16, "big")
        for bad in (too_many, too_far):
            with self.assertRaises(CounterError):
                decode(bad, wire.valid_node_id)

