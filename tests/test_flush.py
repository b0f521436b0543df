"""FLUSHDB/FLUSHALL: a versioned cluster-wide flush that no older write survives.

The store's flush floor, the ``F`` frame, and whole clusters on a simulated
network: the flush reaches every node, a write in flight older than it is
dropped where it arrives, a node partitioned at the time does not bring its
keys back, writes made after it survive, and the floor survives a restart.
"""

from __future__ import annotations

from typing import Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.front.auth import parse_users
from distkv.node import Node
from distkv.store.entries import ZERO, make_entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from tests.clusters import settled_cluster
from tests.respclient import ask, connect
from tests.scratch import scratch_dir


class StoreFloorTests(SynchronousTestCase):
    def make(self) -> Tuple[Store, list]:
        now = [1_000]
        return Store(HybridClock("a", lambda: now[0])), now

    def test_a_flush_drops_everything_and_refuses_older_writes(self) -> None:
        """Every entry (tombstones too) goes; a replicated write below the floor
        is refused and counted; one above it, and local writes after it, stay."""
        store, now = self.make()
        store.set(b"k", b"v")
        store.delete(b"gone")
        floor = store.flush()
        self.assertEqual((len(store), store.tombstones, store.snapshot()), (0, 0, {}))
        self.assertFalse(store.apply(b"old", make_entry(b"x", Version(999, 0, "b"))))
        self.assertEqual(store.flush_dropped, 3)
        self.assertTrue(store.apply(b"new", make_entry(b"y", Version(floor.ms, floor.counter + 1, "b"))))
        store.set(b"after", b"z")
        self.assertGreater(store.entry(b"after")[1:], floor)
        self.assertEqual(sorted(store.live_keys()), [b"after", b"new"])

    def test_a_flush_on_another_node_keeps_a_transaction_whole(self) -> None:
        """Another node's flush made in the same millisecond as a transaction,
        its counter between the transaction's writes' (seed 100231 of the
        simulator: the floor used to be that node's fresh version), drops all
        of the transaction's writes; one made a millisecond earlier keeps all."""
        now = [1_000]
        origin = Store(HybridClock("a", lambda: now[0]))
        origin.begin_group()
        origin.set(b"k0", b"x")
        origin.set(b"k1", b"y")
        writes = origin.end_group()
        self.assertEqual({entry[1] for _, _, entry in writes}, {1_000})
        for wall, kept in ((1_000, []), (999, [b"k0", b"k1"])):
            # At 1,000 its fresh version was (1000, 0, "b"): between the
            # transaction's (1000, 0, "a") and (1000, 1, "a").
            other = Store(HybridClock("b", lambda wall=wall: wall))  # type: ignore[misc]
            replica = Store(HybridClock("c", lambda: now[0]))
            for _, key, entry in writes:
                replica.apply(key, entry)
            replica.raise_floor(other.flush())
            self.assertEqual(sorted(replica.live_keys()), kept, wall)

    def test_a_transaction_is_stamped_within_one_millisecond(self) -> None:
        """Whatever the wall clock does while a group of writes runs (no front
        end holding the clock), its writes share one millisecond."""
        ticks = iter(range(5_000, 6_000, 7))
        store = Store(HybridClock("a", lambda: next(ticks)))
        store.begin_group()
        for i in range(5):
            store.set(b"k%d" % i, b"v")
        writes = store.end_group()
        self.assertEqual(len({entry[1] for _, _, entry in writes}), 1)
        store.set(b"after", b"v")
        self.assertGreater(store.entry(b"after")[1], writes[0][2][1])

    def test_a_group_inside_a_front_ends_hold_leaves_it_on(self) -> None:
        """A transaction run while a front end holds the clock over a read
        stamps with that hold and leaves it on for the read's other requests;
        one run without a hold takes and drops its own."""
        store, now = self.make()
        store.clock.hold()
        store.begin_group()
        store.set(b"k", b"v")
        store.end_group()
        self.assertTrue(store.clock.holding)
        store.clock.release()
        store.begin_group()
        self.assertTrue(store.clock.holding)
        store.end_group()
        self.assertFalse(store.clock.holding)

    def test_keys_with_an_expiry_are_flushed_by_their_version(self) -> None:
        """An entry carrying an expiry (its version in its last three fields) is
        dropped by a flush and refused below the floor like any other; one above the
        floor stays, expiry and all."""
        store, now = self.make()
        store.set(b"ttl", b"v", expires=10**13)
        floor = store.flush()
        self.assertEqual(len(store), 0)
        self.assertFalse(store.apply(b"old", make_entry(b"x", Version(999, 0, "b"), 10**13)))
        above = make_entry(b"y", Version(floor.ms, floor.counter + 1, "b"), 10**13)
        self.assertTrue(store.apply(b"new", above))
        self.assertEqual(store.entry(b"new"), above)
        self.assertEqual(store.expires(b"new"), 10**13)

    def test_a_floor_from_a_peer_moves_the_clock_past_it(self) -> None:
        """A node that learns a flush stamped ahead of its clock writes above it,
        so its own next write survives the flush."""
        store, now = self.make()
        store.set(b"k", b"v")
        self.assertTrue(store.raise_floor(Version(5_000, 3, "b")))
        self.assertFalse(store.raise_floor(Version(4_000, 0, "b")))  # never goes back
        store.set(b"k2", b"v")
        self.assertGreater(store.entry(b"k2")[1:], Version(5_000, 3, "b"))
        self.assertEqual(store.live_keys(), [b"k2"])

    def test_a_floor_too_far_ahead_is_refused(self) -> None:
        """A floor past the clock's drift bound is refused like such a write."""
        store, now = self.make()
        store.set(b"k", b"v")
        self.assertFalse(store.raise_floor(Version(10**9, 0, "b")))
        self.assertEqual((store.flushed, store.live_keys()), (ZERO, [b"k"]))

    def test_loading_skips_entries_below_a_restored_floor(self) -> None:
        """Entries read back from disk below the saved floor stay out."""
        store, now = self.make()
        store.restore_floor(Version(2_000, 0, "a"))
        store.load(b"old", make_entry(b"x", Version(1_500, 0, "a")), seq=4)
        store.load(b"new", make_entry(b"y", Version(2_500, 0, "a")))
        self.assertEqual((store.live_keys(), store.seq), ([b"new"], 4))
        store.set(b"k", b"v")
        self.assertGreater(store.entry(b"k")[1:], Version(2_000, 0, "a"))


class FlushFrameTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """An F frame decodes to the floor it carries."""
        floor = Version(1_700_000_000_000, 7, "n1")
        self.assertEqual(wire.FrameDecoder(1 << 20).feed(wire.encode_flush(floor)),
                         [wire.Flush(floor)])

    def test_malformed_frames_are_refused(self) -> None:
        """A flush frame with a bad node id, a wrong length, a truncated head
        or a clock past the range is a protocol error; the empty node id of a
        millisecond's start (what Store.flush makes) is a floor."""
        good = wire.encode_flush(Version(5, 1, "n1"))[4:]
        edge = wire.decode_body(wire.encode_flush(Version(5, 0, ""))[4:])
        self.assertEqual(edge, wire.Flush(Version(5, 0, "")))
        bad = [
            b"F",
            good[:-1],
            good + b"x",
            b"F" + (5).to_bytes(8, "big") + (1).to_bytes(4, "big") + (3).to_bytes(2, "big") + b"n 1",
            b"F" + (1 << 63).to_bytes(8, "big") + (1).to_bytes(4, "big") + (2).to_bytes(2, "big") + b"n1",
        ]
        for body in bad:
            with self.assertRaises(wire.WireError, msg=repr(body)):
                wire.decode_body(body)


class ClusterFlushTests(SynchronousTestCase):
    def test_a_flush_on_one_node_reaches_every_node(self) -> None:
        """FLUSHALL through n1 empties n1, n2 and n3; a write after it survives everywhere."""
        cluster = settled_cluster(self)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        for i in range(20):
            n2.store.set(b"k%d" % i, b"v")
        n2.store.delete(b"k0")
        cluster.settle()
        proto, transport = connect(n1)
        self.assertEqual(ask(proto, transport, b"FLUSHALL", b"ASYNC"), b"+OK\r\n")
        cluster.run()
        self.assertEqual({n: len(node.store.snapshot()) for n, node in cluster.nodes.items()},
                         {"n1": 0, "n2": 0, "n3": 0})
        n2.store.set(b"after", b"yes")
        cluster.settle()
        for node in cluster.nodes.values():
            self.assertEqual(node.store.live_keys(), [b"after"])
            self.assertEqual(node.store.flushed, n1.store.flushed)
        self.assertTrue(cluster.converged())

    def test_a_write_in_flight_older_than_the_flush_is_dropped_on_arrival(self) -> None:
        """n2's write reaches n3 but is held on its way to n1; n1 flushes; when
        the write arrives at n1 it is refused, and n2 and n3 drop it too."""
        cluster = settled_cluster(self)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        cluster.net.stall("n2", "n1", 3.0)
        n2.store.set(b"late", b"old")
        cluster.advance(0.5)
        self.assertEqual(cluster.nodes["n3"].store.get(b"late"), b"old")
        self.assertIsNone(n1.store.get(b"late"))
        n1.store.flush()
        dropped = n1.store.flush_dropped
        cluster.advance(0.5)
        self.assertIsNone(n2.store.get(b"late"))  # heard of the flush through n3
        cluster.advance(5)
        self.assertGreater(n1.store.flush_dropped, dropped)  # the write arrived, refused
        cluster.settle()
        for name, node in cluster.nodes.items():
            self.assertIsNone(node.store.get(b"late"), name)
        self.assertTrue(cluster.converged())

    def test_a_partitioned_node_does_not_bring_old_keys_back(self) -> None:
        """n3, cut off during the flush and writing meanwhile (older than the
        flush), rejoins: its keys are gone everywhere, the flush's floor is
        everywhere, and a write made after the flush survives."""
        cluster = settled_cluster(self)
        n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
        n1.store.set(b"shared", b"v")
        cluster.settle()
        cluster.net.block("n3", "n1")
        cluster.net.block("n3", "n2")
        cluster.advance(10)
        n3.store.set(b"island", b"old")
        cluster.advance(1)
        n1.store.flush()
        cluster.advance(1)
        n1.store.set(b"fresh", b"new")
        cluster.advance(5)
        self.assertEqual(n3.store.get(b"shared"), b"v")
        cluster.net.heal()
        cluster.settle()
        cluster.settle()
        for name, node in cluster.nodes.items():
            self.assertEqual(node.store.live_keys(), [b"fresh"], name)
            self.assertEqual(node.store.flushed, n1.store.flushed, name)
        self.assertTrue(cluster.converged())

    def test_the_floor_survives_a_crash_and_restart(self) -> None:
        """With data dirs: a node crashed before the flush comes back from disk
        holding old keys, learns the floor and drops them; a node crashed after
        it reads the floor back and keeps nothing below it."""
        root = scratch_dir(self)
        cluster = settled_cluster(self, data_root=root)
        n1 = cluster.nodes["n1"]
        for i in range(10):
            n1.store.set(b"k%d" % i, b"v")
        cluster.settle()
        cluster.crash("n3")
        n1.store.flush()
        cluster.settle()
        cluster.crash("n2")
        restarted = cluster.start("n2")
        self.assertEqual(restarted.store.flushed, n1.store.flushed)
        self.assertEqual(restarted.store.live_keys(), [])
        n3 = cluster.start("n3")
        self.assertEqual(len(n3.store), 10)  # from its disk, before it hears anyone
        cluster.settle()
        n1.store.set(b"after", b"v")
        cluster.settle()
        for name, node in cluster.nodes.items():
            self.assertEqual(node.store.live_keys(), [b"after"], name)
        self.assertTrue(cluster.converged())


class FlushCommandTests(SynchronousTestCase):
    def test_arguments_as_redis(self) -> None:
        """ASYNC/SYNC in any case are accepted; anything else is Redis's syntax error."""
        node = Node(Clock(), "n")
        proto, transport = connect(node)
        for args in ((), (b"async",), (b"SYNC",)):
            node.store.set(b"k", b"v")
            self.assertEqual(ask(proto, transport, b"FLUSHDB", *args), b"+OK\r\n")
            self.assertEqual(node.store.live_keys(), [])
        node.store.set(b"k", b"v")
        for args in ((b"foo",), (b"ASYNC", b"SYNC"), (b"async", b"async")):
            for name in (b"FLUSHDB", b"flushall"):
                self.assertEqual(ask(proto, transport, name, *args), b"-ERR syntax error\r\n")
        self.assertEqual(node.store.live_keys(), [b"k"])

    def test_a_read_only_user_gets_noperm(self) -> None:
        """FLUSHDB and FLUSHALL are writes: a read-only user is refused and nothing goes."""
        node = Node(Clock(), "n", users=parse_users(b"default readwrite >pw\nreader read >r\n"))
        node.store.set(b"k", b"v")
        proto, transport = connect(node)
        self.assertEqual(ask(proto, transport, b"AUTH", b"reader", b"r"), b"+OK\r\n")
        for name in (b"FLUSHDB", b"FLUSHALL"):
            self.assertTrue(ask(proto, transport, name).startswith(b"-NOPERM"), name)
        self.assertEqual(node.store.live_keys(), [b"k"])
        self.assertEqual(node.dispatcher.access[b"WAIT"], "read")


class FlushOverPeerConnectionTests(SynchronousTestCase):
    def test_a_connection_starts_with_the_floor_and_a_floor_heard_is_applied(self) -> None:
        """A node with a flush floor sends it (an F frame) right after its member
        list on a new peer connection; an F frame from the peer raises our floor
        and drops what lies below it."""
        node = Node(Clock(), "n1")
        node.store.set(b"old", b"v")
        floor = node.store.flush()
        node.store.set(b"k", b"v")
        address = IPv4Address("TCP", "127.0.0.1", 6001)
        proto = node.factory().buildProtocol(address)
        transport = StringTransport(peerAddress=address,
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 9000))
        proto.makeConnection(transport)
        caller = wire.Greeting(wire.Hello("n2", "1"), 7001)
        proto.dataReceived(wire.greeting_line(caller))
        accept, frames = transport.value().split(b"\r\n", 1)
        self.assertTrue(accept.startswith(b"DISTKV-PEER-OK"), accept)
        decoded = wire.FrameDecoder(1 << 20).feed(frames)
        self.assertIsInstance(decoded[0], wire.Members)
        self.assertEqual(decoded[1], wire.Flush(floor))
        later = Version(floor.ms + 5, 0, "n2")
        proto.dataReceived(wire.encode_flush(later))
        self.assertEqual((node.store.flushed, node.store.live_keys()), (later, []))
        node.stop_timers()
