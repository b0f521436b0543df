"""Whole clusters in one process on a fake clock: faults are deterministic here."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.peers import PeerLink
from distkv.node import Node
from distkv.store.entries import make_entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster, SimulatedNetwork
from tests import respclient
from tests.clusters import settled_cluster


def values(cluster: SimulatedCluster, node_id: str) -> Dict[bytes, bytes]:
    store = cluster.nodes[node_id].store
    return {k: e[0] for k, e in store.items() if e[0] is not None}


def link(cluster: SimulatedCluster, source: str, target: str):  # type: ignore[no-untyped-def]
    port = cluster.ports[target]
    return cluster.nodes[source].replication.links[("127.0.0.1", port)]


class ClusterTests(SynchronousTestCase):
    def make(self, size: int = 3, **options: object) -> SimulatedCluster:
        return settled_cluster(self, size, **options)

    def test_writes_on_every_node_reach_every_node(self) -> None:
        """With 5 nodes, writes and deletes made through each node end identical everywhere."""
        cluster = self.make(5)
        for node_id, node in cluster.nodes.items():
            for i in range(10):
                node.store.set(b"%s-%d" % (node_id.encode(), i), b"v%d" % i)
            node.store.delete(b"%s-0" % node_id.encode())
        cluster.run()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(values(cluster, "n3")), 45)

    def test_replicated_writes_are_not_broadcast_again(self) -> None:
        """A node queues only its own writes: what it received never enters its outboxes."""
        cluster = self.make(3)
        for i in range(20):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"v")
        cluster.run()
        self.assertTrue(cluster.converged())
        for source in ("n2", "n3"):
            for peer_link in cluster.nodes[source].replication.links.values():
                self.assertEqual(peer_link.outbox.last_seq, 0)

    def test_dropped_links_reconnect_and_resume(self) -> None:
        """Links cut mid-stream reconnect with backoff and deliver every write exactly as written."""
        cluster = self.make(3)
        n1 = cluster.nodes["n1"]
        for round_ in range(5):
            for i in range(20):
                n1.store.set(b"k%d" % i, b"round%d" % round_)
            cluster.net.cut("n1", "n2")
            cluster.net.cut("n1", "n3")
            cluster.advance(0.05)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(values(cluster, "n2")[b"k7"], b"round4")
        self.assertTrue(link(cluster, "n1", "n2").up)

    def test_lost_acknowledgements_cause_harmless_duplicates(self) -> None:
        """Writes delivered whose acks were lost are sent again, and duplicates change nothing."""
        cluster = self.make(2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        applied = []
        n2.store.subscribe(lambda key, entry, local: applied.append(key))
        for i in range(10):
            n1.store.set(b"k%d" % i, b"v%d" % i)
        cluster.net.advance(0)  # the link sends its batch at the end of the turn
        # Deliver n1's writes to n2 but drop the connection before acks return.
        cluster.net.cut("n1", "n2", deliver_from="n1")
        self.assertEqual(len(applied), 10)
        self.assertEqual(len(link(cluster, "n1", "n2").outbox), 10)
        cluster.settle()
        self.assertEqual(len(applied), 10)  # resent, merged, not re-applied
        self.assertTrue(link(cluster, "n1", "n2").outbox.drained())
        self.assertTrue(cluster.converged())

    def test_partitioned_peer_gets_what_it_missed_when_healed(self) -> None:
        """A peer cut off from everyone while others write receives it all once reachable."""
        cluster = self.make(3)
        for other in ("n1", "n2"):
            cluster.net.block("n3", other)
        for i in range(30):
            cluster.nodes["n1" if i % 2 else "n2"].store.set(b"k%d" % i, b"v%d" % i)
        cluster.advance(5)
        self.assertEqual(values(cluster, "n3"), {})
        self.assertEqual(len(link(cluster, "n1", "n3").outbox), 15)
        for other in ("n1", "n2"):
            cluster.net.unblock("n3", other)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(values(cluster, "n3")), 30)

    def test_partition_with_writes_on_both_sides_converges(self) -> None:
        """Both sides of a partition write the same keys; after healing all nodes agree."""
        cluster = self.make(4)
        for a in ("n1", "n2"):
            for b in ("n3", "n4"):
                cluster.net.block(a, b)
        for i in range(20):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"left")
            cluster.advance(0.01)
            cluster.nodes["n4"].store.set(b"k%d" % i, b"right")
        cluster.advance(1)
        for a in ("n1", "n2"):
            for b in ("n3", "n4"):
                cluster.net.unblock(a, b)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(set(values(cluster, "n2").values()), {b"right"})
        digests = {node.store.digest.encode() for node in cluster.nodes.values()}
        self.assertEqual(len(digests), 1)

    def test_concurrent_writers_on_the_same_keys_converge(self) -> None:
        """All nodes write the same keys at the same instant: one value per key wins everywhere."""
        cluster = self.make(5)
        for i in range(10):
            for node_id, node in cluster.nodes.items():
                node.store.set(b"k%d" % i, node_id.encode())
        cluster.run()
        self.assertTrue(cluster.converged())
        # Same timestamp: the version's node id breaks the tie.
        self.assertEqual(values(cluster, "n1")[b"k0"], b"n5")

    def test_causal_overwrite_through_a_slow_clock_wins(self) -> None:
        """A node whose clock is 10 s behind overwrites a value it has seen, and its write wins."""
        cluster = SimulatedCluster(3, skew_ms={"n1": -10_000})
        self.addCleanup(cluster.stop)
        cluster.settle()
        cluster.nodes["n2"].store.set(b"k", b"from fast clock")
        cluster.run()
        self.assertEqual(cluster.nodes["n1"].store.get(b"k"), b"from fast clock")
        cluster.nodes["n1"].store.set(b"k", b"from slow clock")
        cluster.run()
        self.assertTrue(cluster.converged())
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"from slow clock")

    def test_versions_from_a_clock_hours_ahead_are_refused_counted_and_logged(self) -> None:
        """Writes stamped two hours in the future are refused by peers, counted in
        STATUS, and logged once per heartbeat with how many (not once per write)."""
        errors: List[str] = []

        def observe(event: Any) -> None:
            text = formatEvent(event)
            if event.get("log_level") == LogLevel.error and "Refused" in text:
                errors.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        cluster = SimulatedCluster(2, skew_ms={"n2": 7_200_000}, max_clock_skew=60.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        self.assertEqual(errors, [])
        for i in range(3):
            cluster.nodes["n2"].store.set(b"k%d" % i, b"from the future")
        cluster.run()
        n1 = cluster.nodes["n1"]
        self.assertIsNone(n1.store.get(b"k0"))
        self.assertIn("refused_future_versions 3", n1.status_lines())
        self.assertTrue(link(cluster, "n2", "n1").outbox.drained())  # no stuck retries
        cluster.advance(n1.heartbeat)  # the next heartbeat's check logs them
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("Refused 3 replicated writes", errors[0])
        self.assertIn("(3 in all)", errors[0])
        cluster.advance(3 * n1.heartbeat)  # nothing new: nothing more logged
        self.assertEqual(len(errors), 1, errors)

    def test_a_write_that_fills_max_request_replicates_and_one_byte_more_is_refused(
            self) -> None:
        """Issue 11's first break, end to end: over RESP, an 8 KiB key whose value
        fills the default --max-request (1 MiB) with it is acknowledged and
        reaches both peers (its write frame fits their frame limit), and writes
        after it follow; one byte more is refused and stored nowhere. The text
        protocol takes the same write at its own limit (the line's bytes)."""
        cluster = SimulatedCluster(3)
        self.addCleanup(cluster.stop)
        cluster.settle()
        n1 = cluster.nodes["n1"]
        limit = n1.max_request
        key = b"k" * 8192
        proto, transport = respclient.connect(n1)
        self.assertEqual(respclient.ask(proto, transport, b"SET", key, b"v" * (limit - len(key))),
                         b"+OK\r\n")
        self.assertEqual(respclient.ask(proto, transport, b"SET", b"after", b"1"), b"+OK\r\n")
        cluster.run()
        for name in ("n2", "n3"):
            self.assertEqual(len(cluster.nodes[name].store.get(key) or b""), limit - len(key))
            self.assertEqual(cluster.nodes[name].store.get(b"after"), b"1")
        proto, transport = respclient.connect(n1)
        over = respclient.ask(proto, transport, b"SET", b"j" * 8192, b"v" * (limit - 8191))
        self.assertTrue(over.startswith(b"-ERR"), over[:80])
        cluster.run()
        for node in cluster.nodes.values():
            self.assertIsNone(node.store.get(b"j" * 8192))
        for other in ("n2", "n3"):  # no link dropped, nothing stuck in an outbox
            self.assertTrue(link(cluster, "n1", other).up)
            self.assertTrue(link(cluster, "n1", other).outbox.drained())
        text, text_transport = respclient.connect(n1, 6001)
        line = b"SET t " + b"w" * (limit - 6) + b"\n"  # the line fills the limit, \n aside
        text.dataReceived(line)
        self.assertEqual(text_transport.value(), b"OK\r\n")
        cluster.run()
        for name in ("n2", "n3"):
            self.assertEqual(len(cluster.nodes[name].store.get(b"t") or b""), limit - 6)

    def test_deleted_key_never_comes_back(self) -> None:
        """A delete made while one node is cut off wins when that node returns with the old value."""
        cluster = self.make(3)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.run()
        for other in ("n1", "n2"):
            cluster.net.block("n3", other)
        cluster.advance(0.5)
        self.assertTrue(cluster.nodes["n2"].store.delete(b"k"))
        cluster.advance(3)
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"v")
        for other in ("n1", "n2"):
            cluster.net.unblock("n3", other)
        cluster.settle()
        self.assertTrue(cluster.converged())
        for node in cluster.nodes.values():
            self.assertIsNone(node.store.get(b"k"))

    def test_peer_down_while_others_write_then_restarted(self) -> None:
        """A node restarted empty gets what it missed and, by anti-entropy, everything else."""
        cluster = self.make(3)
        cluster.nodes["n1"].store.set(b"before", b"1")
        cluster.run()
        cluster.crash("n3")
        for i in range(10):
            cluster.nodes["n1"].store.set(b"during%d" % i, b"x")
            cluster.nodes["n2"].store.delete(b"gone%d" % i)
        cluster.advance(5)
        self.assertFalse(link(cluster, "n1", "n3").up)
        before = {node_id: cluster.nodes[node_id].store.snapshot() for node_id in ("n1", "n2")}
        n3 = cluster.start("n3")
        cluster.settle()
        # Its peers noticed the new incarnation and resynced it...
        # ...and the resync brought back what it had lost, deleting nothing anywhere.
        self.assertEqual(n3.store.get(b"during9"), b"x")
        self.assertEqual(n3.store.tombstones, 10)
        self.assertEqual(n3.store.get(b"before"), b"1")
        for node_id, snapshot in before.items():
            self.assertEqual(cluster.nodes[node_id].store.snapshot(), snapshot)
        self.assertTrue(cluster.converged())
        for source in ("n1", "n2"):
            peer = link(cluster, source, "n3")
            self.assertEqual(peer.resyncs, 1)
            self.assertFalse(peer.outbox.needs_resync)
            self.assertIn("resync=no resyncs=1", peer.status())

    def test_outbox_overflow_is_repaired_by_a_resync(self) -> None:
        """Too many undelivered bytes empty the outbox and flag a resync that then repairs all."""
        cluster = self.make(2, outbox_bytes=4096)
        cluster.net.block("n1", "n2")
        for i in range(100):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"x" * 50)
        peer = link(cluster, "n1", "n2")
        self.assertTrue(peer.outbox.needs_resync)
        self.assertLessEqual(peer.outbox.bytes, 4096)
        self.assertTrue(any("resync=needed" in line for line in cluster.nodes["n1"].status_lines()))
        self.assertEqual(peer.resyncs, 1, "the overflow is counted (resyncs=1 in STATUS) and logged")
        self.assertIn("resyncs=1", peer.status())
        cluster.net.unblock("n1", "n2")
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(values(cluster, "n2")), 100)
        self.assertFalse(peer.outbox.needs_resync)

    def test_heartbeat_drops_a_link_whose_peer_went_silent(self) -> None:
        """A peer that stops answering is dropped after four heartbeats and reconnected later."""
        cluster = self.make(2, heartbeat=1.0)
        peer = link(cluster, "n1", "n2")
        self.assertTrue(peer.up)
        connection = [c for c in cluster.net.connections if c.nodes == ("n1", "n2")][0]
        connection.pump.serverIO.protocol.dataReceived = lambda data: None  # frozen peer
        cluster.advance(6)
        self.assertNotIn(connection, cluster.net.connections)
        cluster.settle()
        self.assertTrue(peer.up)


class ShutdownTests(SynchronousTestCase):
    def test_stopping_flushes_to_a_peer_whose_link_was_backing_off(self) -> None:
        """Stopping retries a link in backoff at once and waits until its writes are acknowledged."""
        cluster = SimulatedCluster(2)
        cluster.settle()
        cluster.net.block("n1", "n2")
        for i in range(10):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"v")
        cluster.advance(20)  # the link's backoff has grown to seconds
        cluster.net.unblock("n1", "n2")
        stopped: list = []  # type: ignore[type-arg]
        cluster.nodes["n1"].replication.stopService().addBoth(stopped.append)
        cluster.advance(0.5)
        self.assertEqual(len(stopped), 1)
        self.assertEqual(cluster.nodes["n2"].store.get(b"k9"), b"v")
        cluster.stop()

    def test_stopping_gives_up_on_an_unreachable_peer_after_the_flush_timeout(self) -> None:
        """A peer that cannot be reached does not hold the stop beyond --flush-timeout."""
        cluster = SimulatedCluster(2, flush_timeout=2.0)
        cluster.settle()
        cluster.net.block("n1", "n2")
        cluster.nodes["n1"].store.set(b"k", b"v")
        stopped: list = []  # type: ignore[type-arg]
        cluster.nodes["n1"].replication.stopService().addBoth(stopped.append)
        cluster.advance(1.5)
        self.assertEqual(stopped, [])
        cluster.advance(1.0)
        self.assertEqual(len(stopped), 1)
        cluster.stop()
        self.assertEqual(cluster.net.getDelayedCalls(), [])


class AntiEntropyTests(SynchronousTestCase):
    def make(self, size: int = 2, **options: object) -> SimulatedCluster:
        cluster = SimulatedCluster(size, **options)  # type: ignore[arg-type]
        cluster.settle()
        self.addCleanup(cluster.stop)
        return cluster

    def diverge(self, node: Node, count: int, stamp_ms: int, prefix: bytes = b"hidden") -> None:
        """Put entries into one node's store behind replication's back."""
        for i in range(count):
            node.store.load(b"%s%d" % (prefix, i), make_entry(b"v", Version(stamp_ms, i, node.node_id)))

    def test_a_round_sends_only_what_the_peer_lacks(self) -> None:
        """With 500 keys in common and 5 missing, a resync round sends exactly the 5."""
        cluster = self.make(2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        for i in range(500):
            n1.store.set(b"common%d" % i, b"x")
        cluster.run()
        self.diverge(n1, 5, int(cluster.net.seconds() * 1000))
        peer = link(cluster, "n1", "n2")
        peer.mark_resync("test")
        cluster.run()
        self.assertEqual(peer.last_round_sent, 5)
        self.assertTrue(cluster.converged())
        self.assertIn("n1", n2.synced_from)

    def test_the_backlog_a_new_peer_is_resent_is_not_sent_twice(self) -> None:
        """A peer back empty gets n1's 300 queued writes (3 MB) from the outbox; the
        link-up round (a full resync: the peer lost everything) runs after
        them and sends only what the outbox did not hold; then the peer serves."""
        cluster = self.make(2)
        rounds = link(cluster, "n1", "n2").rounds_completed
        cluster.crash("n2")
        n1 = cluster.nodes["n1"]
        for i in range(300):  # 3 MB: more than the outbox sends ahead of acks (1 MiB)
            n1.store.set(b"k%d" % i, b"v" * 10_000)
        self.diverge(n1, 3, int(cluster.net.seconds() * 1000))  # only a round carries these
        n2 = cluster.start("n2")
        self.assertTrue(n2.loading)
        cluster.settle()
        peer = link(cluster, "n1", "n2")
        self.assertEqual(peer.rounds_completed, rounds + 1)
        self.assertEqual(peer.last_round_sent, 3)
        self.assertTrue(cluster.converged())
        self.assertFalse(n2.loading)

    def test_periodic_rounds_repair_silent_divergence(self) -> None:
        """Without any flag, the periodic round finds and repairs a divergence."""
        cluster = self.make(3, sync_interval=10.0)
        self.diverge(cluster.nodes["n2"], 3, int(cluster.net.seconds() * 1000))
        self.assertFalse(cluster.converged())
        cluster.advance(11)
        self.assertTrue(cluster.converged())

    def test_newer_side_wins_and_absence_deletes_nothing(self) -> None:
        """Each side sends what it holds newer; a key one side lacks is copied, never removed."""
        cluster = self.make(2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        now = int(cluster.net.seconds() * 1000)
        n1.store.load(b"k", make_entry(b"older", Version(now, 0, "n1")))
        n2.store.load(b"k", make_entry(b"newer", Version(now + 5, 0, "n2")))
        n2.store.load(b"only-on-n2", make_entry(b"v", Version(now, 1, "n2")))
        n1.store.load(b"dead", make_entry(None, Version(now, 2, "n1")))
        n2.store.load(b"dead", make_entry(b"stale", Version(now - 5, 0, "n2")))
        for source, target in (("n1", "n2"), ("n2", "n1")):
            link(cluster, source, target).mark_resync("test")
        cluster.run()
        self.assertTrue(cluster.converged())
        self.assertEqual(n1.store.get(b"k"), b"newer")
        self.assertEqual(n1.store.get(b"only-on-n2"), b"v")
        self.assertIsNone(n2.store.get(b"dead"))

    def test_all_nodes_restarted_empty_one_by_one_keep_the_data(self) -> None:
        """Restarting every memory-only node in turn, each resyncs before the next goes."""
        cluster = self.make(3)
        for i in range(50):
            cluster.nodes[f"n{i % 3 + 1}"].store.set(b"k%d" % i, b"v%d" % i)
        cluster.run()
        for node_id in ("n1", "n2", "n3"):
            cluster.crash(node_id)
            cluster.start(node_id)
            cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(values(cluster, "n1")), 50)


class IdentityTests(SynchronousTestCase):
    def two_nodes(self, id_a: str, id_b: str) -> tuple:  # type: ignore[type-arg]
        net = SimulatedNetwork()
        nodes = []
        for node_id, port, other in ((id_a, 1, 2), (id_b, 2, 1)):
            node = Node(net, node_id, listen_port=port)
            node.add_peer("127.0.0.1", other)
            net.attach(node_id, port, node.factory())
            node.replication.startService()
            nodes.append(node)
        net.advance_by(3)
        return net, nodes

    def test_nodes_with_the_same_id_refuse_to_link(self) -> None:
        """Two nodes sharing an id never link, never exchange writes, and say why."""
        net, (a, b) = self.two_nodes("same", "same")
        a.store.set(b"k", b"v")
        net.advance_by(3)
        self.assertIsNone(b.store.get(b"k"))
        for node in (a, b):
            (peer,) = node.replication.links.values()
            self.assertFalse(peer.up)
            self.assertIn("refused=duplicate-node-id", peer.status())
        for node in (a, b):
            for peer in node.replication.links.values():
                peer.stopTrying()
        net.advance_by(15)

    def test_a_peer_entry_that_reaches_this_node_is_skipped(self) -> None:
        """A peer address that turns out to be this node (by handshake) is dropped, not retried."""
        net = SimulatedNetwork()
        node = Node(net, "solo", listen_port=1)
        net.attach("solo", 1, node.factory())
        alias = node.add_peer("solo.example", 1)  # same port, a name we cannot recognise
        self.assertIsNotNone(alias)
        self.assertIsNone(node.add_peer("127.0.0.1", 1))
        node.replication.startService()
        net.advance_by(3)
        assert alias is not None
        self.assertTrue(alias.is_self)
        self.assertFalse(alias.up)
        self.assertIn("link=self", alias.status())
        self.assertEqual(net.getDelayedCalls(), [])


class ReconnectTests(SynchronousTestCase):
    def test_a_peer_that_links_to_us_cuts_our_backoff_short(self) -> None:
        """n1 has backed off to 10 s retrying n2; when n2 comes back and links to n1,
        n1's own link to n2 comes up at once instead of after the delay."""
        cluster = SimulatedCluster(2)
        self.addCleanup(cluster.stop)
        cluster.settle()
        cluster.crash("n2")
        cluster.advance(120)
        outgoing = link(cluster, "n1", "n2")
        self.assertFalse(outgoing.up)
        self.assertGreaterEqual(outgoing.delay, 5)
        cluster.start("n2")
        cluster.advance(0.3)
        self.assertTrue(outgoing.up)


class FakePush:
    """Stands for a peer connection: records what the link sends over it."""

    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.link: Any = None
        self.name = "b"

    def send(self, data: bytes) -> None:
        self.sent.append(data)


class LinkUpRoundTests(SynchronousTestCase):
    def backlogged(self) -> Tuple[PeerLink, Clock, Any]:
        """A link to peer b with five writes queued for it, just come up."""
        clock = Clock()
        store = Store(HybridClock("a", lambda: int(clock.seconds() * 1000)))
        local = wire.Greeting(wire.Hello("a", "1"), 7000)
        peer = PeerLink("127.0.0.1", 7001, local, clock, Outbox(1 << 20), 5.0, store, 60.0, 1 << 20)
        for i in range(5):
            entry = store.set(b"k%d" % i, b"v")
            peer.outbox.add(store.seq, b"k%d" % i, entry)
        proto = FakePush()
        self.assertTrue(peer.linked(proto, wire.Hello("b", "1")))  # type: ignore[arg-type]
        self.addCleanup(lambda: peer.unlinked(peer._protocol) if peer._protocol else None)
        return peer, clock, proto

    def test_the_round_waits_for_the_backlog_then_runs(self) -> None:
        peer, clock, proto = self.backlogged()
        self.assertIn("sync=waiting", peer.status())
        self.assertEqual(peer._rounds_started, 0)
        peer.acked(5)
        self.assertEqual(peer._rounds_started, 1)
        self.assertIn("sync=running", peer.status())

    def test_a_link_that_drops_before_its_round_runs_one_at_once_next_time(self) -> None:
        """A flapping link still gets anti-entropy rounds."""
        peer, clock, proto = self.backlogged()
        peer.unlinked(proto)  # type: ignore[arg-type]
        self.assertTrue(peer.linked(FakePush(), wire.Hello("b", "1")))  # type: ignore[arg-type]
        self.assertEqual(peer._rounds_started, 1)

    def test_a_resync_mark_starts_the_round_and_the_backlog_ack_adds_none(self) -> None:
        peer, clock, proto = self.backlogged()
        peer.mark_resync("test")
        clock.advance(0)
        self.assertEqual(peer._rounds_started, 1)
        peer.acked(5)
        self.assertEqual(peer._rounds_started, 1)
