"""Counters across nodes, in-process on a fake clock.

Each node adds its increments to its own slot of a counter and replicates
the whole state, merged (never replaced) where it lands. These tests show
3 nodes x 1,000 INCRs over RESP, with a partition in the middle and a node
restarted from its data dir, reading 3,000 on every node after healing;
anti-entropy alone healing two replicas that hold one version of a counter
with different slots; INCR inside MULTI riding the transaction frame; and
FLUSHALL reaching a counter on every node.
"""

from __future__ import annotations

import re
from typing import Dict, List

from twisted.trial.unittest import SynchronousTestCase

from distkv.node import Node
from distkv.store.counter import make
from distkv.store.digest import bucket_of
from distkv.store.entries import counter_entry, make_entry
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.respclient import ask, command, connect
from tests.scratch import scratch_dir
from tests.test_levels import Client, quorum_client

KEY = b"hits"
_INTEGER = re.compile(rb":(-?\d+)\r\n")


def say(node: Node, *request: bytes) -> bytes:
    proto, transport = connect(node)
    return ask(proto, transport, *request)


def incr_batch(cluster: SimulatedCluster, node_id: str, count: int) -> int:
    """Pipeline ``count`` INCRs to ``node_id`` over one RESP connection, run
    the cluster until they are answered; how many were acknowledged."""
    proto, transport = connect(cluster.nodes[node_id])
    proto.dataReceived(command(b"INCR", KEY) * count)
    cluster.run()
    cluster.advance(0.5)  # group commits, when the node has a data dir
    replies = _INTEGER.findall(transport.value())
    proto.connectionLost(None)  # type: ignore[arg-type]
    return len(replies)


class CounterClusterTests(SynchronousTestCase):
    def test_three_nodes_a_thousand_incrs_each_through_a_partition_and_a_restart(self) -> None:
        """1,000 INCRs through each of three nodes (n3 partitioned away for
        the middle half, n2 killed and restarted from its data dir) read
        3,000 on every node, over RESP, once healed."""
        cluster = SimulatedCluster(3, data_root=scratch_dir(self))
        cluster.settle()
        self.addCleanup(cluster.stop)
        acked: Dict[str, int] = {node: 0 for node in cluster.nodes}

        def round_of(count: int) -> None:
            for node_id in sorted(cluster.nodes):
                acked[node_id] += incr_batch(cluster, node_id, count)

        round_of(250)
        cluster.net.block("n3", "n1")
        cluster.net.block("n3", "n2")
        round_of(250)
        self.assertNotEqual(say(cluster.nodes["n1"], b"GET", KEY), say(cluster.nodes["n3"], b"GET", KEY))
        cluster.crash("n2")
        cluster.start("n2")
        cluster.advance(5)
        round_of(250)
        cluster.net.heal()
        round_of(250)
        cluster.settle()
        self.assertEqual(acked, {"n1": 1000, "n2": 1000, "n3": 1000})
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", KEY), b"$4\r\n3000\r\n")
        self.assertTrue(cluster.converged())

    def test_anti_entropy_alone_heals_counters_that_share_a_version(self) -> None:
        """Two replicas hold the same newest version of a counter but
        different slots, put there with no replication at all: the periodic
        round alone finds (the digest hashes whole states) and merges them."""
        cluster = settled_cluster(self, 2, sync_interval=10.0)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        now = int(cluster.net.seconds() * 1000)
        zero = Version(0, 0, "")
        newest = ("n2", now, 0), (3, now + 5, 0)
        older = ("n1", now, 1), (4, now, 1)
        n1.store.load(KEY, counter_entry(make(None, 0, zero, dict([newest, older]), {})))
        n2.store.load(KEY, counter_entry(make(None, 0, zero, dict([newest]), {})))
        self.assertEqual(n1.store.entry(KEY)[-3:], n2.store.entry(KEY)[-3:])  # type: ignore[index]
        self.assertEqual((n1.store.get(KEY), n2.store.get(KEY)), (b"7", b"3"))
        cluster.advance(11)
        self.assertEqual((n1.store.get(KEY), n2.store.get(KEY)), (b"7", b"7"))
        self.assertTrue(cluster.converged())

    def test_one_round_each_way_sends_a_counter_whose_peer_holds_a_newer_version(self) -> None:
        """n1's counter is older than n2's but holds a slot n2 lacks, and a
        plain key in the same digest bucket differs too: one round each way
        leaves both with every slot (a counter goes whatever its version)."""
        cluster = settled_cluster(self, 2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        now = int(cluster.net.seconds() * 1000)
        zero = Version(0, 0, "")
        other = b"other357"
        self.assertEqual(bucket_of(other), bucket_of(KEY))
        n1.store.load(KEY, counter_entry(make(None, 0, zero, {("n1", now, 0): (4, now, 0)}, {})))
        n2.store.load(KEY, counter_entry(make(None, 0, zero, {("n2", now, 1): (3, now + 5, 0)}, {})))
        n1.store.load(other, make_entry(b"newer", Version(now + 9, 0, "n1")))
        n2.store.load(other, make_entry(b"older", Version(now + 1, 0, "n2")))
        for source, target in (("n1", "n2"), ("n2", "n1")):
            peer = cluster.ports[target]
            cluster.nodes[source].replication.links[("127.0.0.1", peer)].mark_resync("test")
        cluster.run()
        self.assertEqual((n1.store.get(KEY), n2.store.get(KEY)), (b"7", b"7"))
        self.assertTrue(cluster.converged())

    def test_incr_in_a_transaction_and_set_reach_every_node(self) -> None:
        """INCRs queued in MULTI ride one transaction frame and add up with
        INCRs made elsewhere; a later SET resets the counter everywhere."""
        cluster = settled_cluster(self, 3)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        proto, transport = connect(n1)
        replies: List[bytes] = [ask(proto, transport, *request) for request in (
            (b"MULTI",), (b"INCR", KEY), (b"INCRBY", KEY, b"9"), (b"SET", b"other", b"x"), (b"EXEC",))]
        self.assertEqual(replies[-1], b"*3\r\n:1\r\n:10\r\n+OK\r\n")
        self.assertEqual(say(n2, b"DECRBY", KEY, b"3"), b":-3\r\n")
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", KEY), b"$1\r\n7\r\n")
        self.assertEqual(say(n2, b"SET", KEY, b"100"), b"+OK\r\n")
        cluster.run()
        self.assertEqual(say(n1, b"INCR", KEY), b":101\r\n")
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", KEY), b"$3\r\n101\r\n")

    def test_flushall_drops_a_counter_on_every_node(self) -> None:
        """After FLUSHALL on one node a counter reads missing everywhere, and
        INCRs made afterwards count from zero."""
        cluster = settled_cluster(self, 3)
        for node in cluster.nodes.values():
            say(node, b"INCRBY", KEY, b"5")
        cluster.run()
        self.assertEqual(say(cluster.nodes["n3"], b"GET", KEY), b"$2\r\n15\r\n")
        self.assertEqual(say(cluster.nodes["n1"], b"FLUSHALL"), b"+OK\r\n")
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", KEY), b"$-1\r\n")
            say(node, b"INCR", KEY)
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", KEY), b"$1\r\n3\r\n")


class CounterWatchTests(SynchronousTestCase):
    def test_watch_sees_an_older_increment_merged_from_a_peer(self) -> None:
        """n2's INCR (older) reaches n1 after n1's own (newer) was watched: the
        counter's version stays n1's, its value goes 1 -> 2, and EXEC answers
        the nil array, as any change to a watched key makes it."""
        cluster = settled_cluster(self, 2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        cluster.net.block("n1", "n2")
        p2, t2 = connect(n2)
        self.assertEqual(ask(p2, t2, b"INCR", b"k"), b":1\r\n")
        cluster.advance(0.01)
        p1, t1 = connect(n1)
        self.assertEqual(ask(p1, t1, b"INCR", b"k"), b":1\r\n")
        self.assertEqual(ask(p1, t1, b"WATCH", b"k"), b"+OK\r\n")
        before = n1.store.entry(b"k")[-3:]  # type: ignore[index]
        cluster.net.heal()
        cluster.settle()
        self.assertEqual(n1.store.entry(b"k")[-3:], before)  # type: ignore[index]
        self.assertEqual(ask(p1, t1, b"GET", b"k"), b"$1\r\n2\r\n")
        ask(p1, t1, b"MULTI")
        ask(p1, t1, b"SET", b"k", b"100")
        self.assertEqual(ask(p1, t1, b"EXEC"), b"*-1\r\n")
        self.assertEqual(ask(p1, t1, b"GET", b"k"), b"$1\r\n2\r\n")


class CounterQuorumTests(SynchronousTestCase):
    def test_quorum_reads_of_a_counter_never_go_back(self) -> None:
        """Five nodes; n4's INCR (older) reached only n1, n2's (newer)
        everyone: n1 and the others hold counter states of one version that
        differ. A QUORUM read through n1 returns 2 and writes it back to a
        quorum, so a later QUORUM read through n2 with n1 cut off (n2, n3,
        n5 are still a majority) returns 2 too, never 1."""
        cluster = settled_cluster(self, 5)
        for other in ("n2", "n3", "n5"):
            cluster.net.block("n4", other)  # n4 reaches n1 only
        self.assertEqual(Client(cluster, "n4").ask(b"INCR", b"k"), b":1\r\n")
        cluster.advance(0.01)
        self.assertEqual(Client(cluster, "n2").ask(b"INCR", b"k"), b":1\r\n")
        cluster.run()
        self.assertEqual(
            [cluster.nodes[n].store.get(b"k") for n in ("n1", "n2", "n3", "n5")],
            [b"2", b"1", b"1", b"1"])
        first = quorum_client(cluster, "n1").ask(b"GET", b"k")
        for other in ("n2", "n3", "n5"):
            cluster.net.block("n1", other)
        second = quorum_client(cluster, "n2").ask(b"GET", b"k")
        self.assertEqual((first, second), (b"$1\r\n2\r\n", b"$1\r\n2\r\n"))
