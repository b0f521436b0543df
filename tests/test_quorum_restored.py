"""A node back empty holds only what the peers that synced it held: until it
has synced from enough members that one of any majority is among them
(:meth:`distkv.node.Node.restored`), the consistency levels do not count it,
as coordinator or as member. On a fake-clock cluster in one process, memory
only."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.clusters import settled_cluster
from tests.test_levels import quorum_client


class BackEmptyTests(SynchronousTestCase):
    def test_a_quorum_read_never_returns_what_a_write_before_the_crash_replaced(self) -> None:
        """``k`` is ``old`` everywhere; n3 is cut off and a QUORUM SET of ``new``
        is acknowledged by n1 and n2. n1 crashes and comes back empty while
        n2 is cut off: n3, which serves, syncs it, so n1 serves too, holding
        ``old``. A QUORUM read through n3 (asking n1) or through n1 must not
        answer ``old``: n1 is not counted until it synced from n2 as well.
        Once n2 is back, both answer ``new``."""
        cluster = settled_cluster(self, quorum_timeout=1.0)
        net = cluster.net
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"old"), b"+OK\r\n")
        cluster.advance(1.0)
        net.block("n3", "n1")
        net.block("n3", "n2")
        net.run()
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"new"), b"+OK\r\n")
        cluster.crash("n1")
        net.heal()
        net.block("n2", "n1")
        net.block("n2", "n3")
        cluster.start("n1")
        n1 = cluster.nodes["n1"]
        deadline = net.seconds() + 5.0
        while n1.loading and net.seconds() < deadline:
            cluster.advance(0.1)
        self.assertFalse(n1.loading)  # n3 synced it: it serves at ONE
        self.assertEqual(n1.store.get(b"k"), b"old")
        self.assertFalse(n1.restored())
        for node in ("n3", "n1"):
            client = quorum_client(cluster, node)
            client.send(b"GET", b"k")
            cluster.advance(1.5)
            answer = client.answer()
            self.assertNotIn(b"old", answer)
            self.assertTrue(answer.startswith(b"-"), (node, answer))
        net.heal()
        deadline = net.seconds() + 10.0
        while not n1.restored() and net.seconds() < deadline:
            cluster.advance(0.1)
        self.assertTrue(n1.restored())
        for node in ("n3", "n1"):
            self.assertEqual(quorum_client(cluster, node).ask(b"GET", b"k"), b"$3\r\nnew\r\n")


class LatchTests(SynchronousTestCase):
    def test_a_restored_node_stays_counted_when_the_cluster_grows(self) -> None:
        """n1 synced from both others (restored in a cluster of 3); n4 and n5
        join while n1 cannot reach them. n1 lost nothing, so it still counts:
        a QUORUM read through it answers with a majority (n1, n2, n3) up."""
        cluster = settled_cluster(self, quorum_timeout=1.0)
        n1 = cluster.nodes["n1"]
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertTrue(n1.restored())
        for new in ("n4", "n5"):
            cluster.net.block("n1", new)
        cluster.join("n4", via=["n2"])
        cluster.join("n5", via=["n2"])
        cluster.advance(20.0)
        self.assertEqual(n1.quorum_members(), 5)
        self.assertTrue(n1.restored())
        self.assertEqual(quorum_client(cluster, "n1").ask(b"GET", b"k"), b"$1\r\nv\r\n")
        cluster.net.heal()
        cluster.advance(20.0)
