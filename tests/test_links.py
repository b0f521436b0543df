"""Links that carry data both ways, members that never linger, and loading
that ends only on data a serving node has synced (issue 11, items 4, 5, 6, 13)."""

from __future__ import annotations

import os
import shutil
from typing import Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.front.commands import NIL, Error, Request
from distkv.node import Node
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.scratch import scratch_dir

GRACE = 5.0


def get(node: Node, key: bytes) -> object:
    return node.dispatcher.execute(Request(b"GET", (key,)))


def loading_reply(reply: object) -> bool:
    return isinstance(reply, Error) and reply.message.startswith("LOADING")


class LinkTests(SynchronousTestCase):
    def make(self, size: int = 3, data_root: Optional[str] = None,
             **options: object) -> SimulatedCluster:
        options.setdefault("heartbeat", 1.0)
        options.setdefault("tombstone_grace", GRACE)
        return settled_cluster(self, size, data_root=data_root, **options)

    def test_a_node_that_lists_no_peers_still_sends_to_those_that_call_it(self) -> None:
        """n2 lists nobody, n1 lists n2: writes on n2 reach n1 over the link n1 dialled,
        including those held while the link was down."""
        cluster = self.make(2, unlisted=[("n2", "n1")])
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        n2.store.set(b"from-n2", b"a")
        n1.store.set(b"from-n1", b"b")
        cluster.run()
        self.assertEqual(n1.store.entry(b"from-n2")[0], b"a")  # type: ignore[index]
        self.assertEqual(n2.store.entry(b"from-n1")[0], b"b")  # type: ignore[index]
        cluster.net.block("n1", "n2")
        n2.store.set(b"while-down", b"c")
        n2.store.delete(b"from-n2")
        cluster.advance(5)
        cluster.net.heal()
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(n1.store.entry(b"while-down")[0], b"c")  # type: ignore[index]
        self.assertEqual(get(n1, b"from-n2"), NIL)
        self.assertEqual(n2.members(), [n1.node_id])

    def test_a_peer_reachable_one_way_gets_writes_over_the_link_it_dialled(self) -> None:
        """n1 cannot reach n2 (one-way block) but n2 reaches n1: n1's writes flow to n2
        over n2's connection, so nothing waits for the block to lift."""
        cluster = self.make(2)
        cluster.net.block("n1", "n2", oneway=True)
        cluster.advance(3)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.advance(1)
        self.assertEqual(cluster.nodes["n2"].store.entry(b"k")[0], b"v")  # type: ignore[index]

    def test_a_node_back_twice_under_new_ids_leaves_no_ghost_and_purging_resumes(self) -> None:
        """n3 restarts (memory only, fresh id) twice while n1 cannot dial it: n1's members
        end with n3's present id only, and a delete is purged on every node."""
        cluster = self.make(3)
        n1 = cluster.nodes["n1"]
        cluster.net.block("n1", "n3", oneway=True)
        for fresh in ("n3-b", "n3-c"):
            cluster.crash("n3")
            cluster.start("n3", None, new_id=fresh)
            cluster.settle()
        cluster.net.heal()
        n1.store.set(b"gone", b"v")
        cluster.run()
        n1.store.delete(b"gone")
        cluster.settle()
        cluster.advance(GRACE + 10)
        self.assertEqual(sorted(n1.members() or []), ["n2", "n3-c"])
        for node in cluster.nodes.values():
            self.assertIsNone(node.store.entry(b"gone"), node.node_id)

    def test_loading_ends_only_on_a_round_from_a_serving_node(self) -> None:
        """n1 and n2 restart memory-only while n3, which holds the data, is cut off:
        they stay LOADING (they would end each other's loading otherwise), then serve
        n3's data once it is back."""
        cluster = self.make(3, loading_wait=60.0)
        cluster.nodes["n3"].store.set(b"k", b"v")
        cluster.run()
        cluster.net.block("n3", "n1")
        cluster.net.block("n3", "n2")
        for node_id in ("n1", "n2"):
            cluster.crash(node_id)
            cluster.start(node_id, None)
        cluster.advance(20)
        for node_id in ("n1", "n2"):
            node = cluster.nodes[node_id]
            self.assertTrue(loading_reply(get(node, b"k")), node_id)
            other = "n2" if node_id == "n1" else "n1"
            self.assertIn(other, node.synced_from)  # synced by a loading node: not enough
        cluster.net.heal()
        cluster.settle()
        for node_id in ("n1", "n2"):
            self.assertEqual(get(cluster.nodes[node_id], b"k"), b"v")

    def test_a_cluster_starting_empty_serves_once_every_peer_synced_it(self) -> None:
        """Nobody serves when every node starts empty: each serves after a round from
        every peer, well before --loading-wait."""
        cluster = SimulatedCluster(3, loading_wait=60.0)
        self.addCleanup(cluster.stop)
        cluster.advance(2)
        for node in cluster.nodes.values():
            self.assertFalse(node.loading, node.node_id)

    def copied_after_a_first_write(self) -> Tuple[SimulatedCluster, str]:
        """Three nodes with data dirs, n1 has written k=old, and a copy of n1's data
        dir as it stands then (the path of the copy)."""
        root = scratch_dir(self)
        cluster = self.make(3, data_root=root, loading_wait=60.0)
        cluster.nodes["n1"].store.set(b"k", b"old")
        cluster.settle()
        older = os.path.join(root, "n1-older")
        shutil.copytree(os.path.join(root, "n1"), older)
        return cluster, older

    def test_a_node_restored_from_an_older_copy_loads_until_synced(self) -> None:
        """n1 restarted on a copy of its data dir taken before later writes and a delete:
        peers have applied more of its writes than it holds, so it answers LOADING from
        its start until a serving peer synced it, never its stale value."""
        cluster, older = self.copied_after_a_first_write()
        n1 = cluster.nodes["n1"]
        n1.store.set(b"k", b"new")
        n1.store.delete(b"k")
        n1.store.set(b"j", b"later")
        cluster.settle()
        seen = cluster.nodes["n2"].seen["n1"]
        cluster.crash("n1")
        restored = cluster.start("n1", older)
        self.assertTrue(loading_reply(get(restored, b"k")))
        cluster.run()  # the handshakes: the peers have seen more of n1's writes
        self.assertGreaterEqual(restored.store.seq, seen)
        cluster.settle()
        self.assertFalse(restored.loading)
        self.assertEqual(get(restored, b"k"), NIL)
        self.assertEqual(get(restored, b"j"), b"later")
        self.assertTrue(cluster.converged())

    def test_a_data_dir_node_serves_once_a_serving_peer_synced_it(self) -> None:
        """A node restarted on its own, current data dir loads only until a peer answers."""
        cluster = self.make(3, data_root=scratch_dir(self), loading_wait=60.0)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.settle()
        cluster.crash("n1")
        n1 = cluster.start("n1")
        self.assertEqual(n1.loading_why, "checking")
        cluster.run()
        self.assertFalse(n1.loading)
        self.assertEqual(get(n1, b"k"), b"v")

    def test_a_node_stopped_while_loading_leaves_no_timer_behind(self) -> None:
        """A node stopped while it waits for a serving peer cancels its loading check
        (the cluster's cleanup fails on any delayed call left)."""
        cluster = self.make(2, loading_wait=60.0)
        cluster.net.block("n1", "n2")
        cluster.crash("n2")
        n2 = cluster.start("n2", None)
        cluster.advance(2)
        self.assertEqual(n2.loading_why, "empty")

    def test_peers_remember_what_they_saw_of_a_node_across_their_own_restarts(self) -> None:
        """n2 and n3 restart from their data dirs after n1's later writes; n1 then
        comes back on an older copy: they still know it is stale (kept in their data
        dirs, saved within a second), and it loads until synced."""
        cluster, older = self.copied_after_a_first_write()
        n1 = cluster.nodes["n1"]
        for i in range(5):
            n1.store.set(b"k", b"new-%d" % i)
        cluster.settle()
        for node_id in ("n2", "n3"):
            cluster.crash(node_id)
            cluster.start(node_id)
        cluster.settle()
        seen = cluster.nodes["n2"].seen["n1"]
        self.assertEqual(seen, n1.store.seq)
        cluster.crash("n1")
        restored = cluster.start("n1", older)
        self.assertLess(restored.store.seq, seen)
        self.assertTrue(loading_reply(get(restored, b"k")))
        cluster.run()  # told it is stale: numbers its writes above what n2 saw
        self.assertGreaterEqual(restored.store.seq, seen)
        cluster.settle()
        self.assertEqual(get(restored, b"k"), b"new-4")

    def test_a_peer_entry_that_is_this_node_holds_no_writes(self) -> None:
        """An address that turns out to be the node itself (another name for it)
        is skipped: writes are not queued for it, so it never overflows."""
        cluster = self.make(2)
        n1 = cluster.nodes["n1"]
        self_link = n1.add_peer("10.9.9.9", cluster.ports["n1"])
        assert self_link is not None
        cluster.run()
        self.assertTrue(self_link.is_self)
        for i in range(100):
            n1.store.set(b"k%d" % i, b"v")
        cluster.run()
        self.assertEqual((len(self_link.outbox), self_link.resyncs), (0, 0))
        self.assertEqual(n1.members(), ["n2"])

    def test_a_caller_names_the_port_it_advertises_not_the_one_it_listens_on(self) -> None:
        """Behind NAT or a proxy (``--advertise``), a node's greeting names the
        port where peers reach it: the peer it calls matches it there, and never
        dials the port it listens on, which only it can reach (a test's proxies
        on the same host would otherwise be bypassed, and a partition leak)."""
        reactor = MemoryReactorClock()
        node = Node(reactor, "a", listen_port=9000, advertise_host="10.0.0.1",
                    advertise_port=19000)
        link = node.add_peer("10.0.0.2", 7001)
        assert link is not None
        proto = link.buildProtocol(IPv4Address("TCP", "10.0.0.2", 7001))
        transport = StringTransport()
        proto.makeConnection(transport)
        greeting = wire.parse_greeting(transport.value().split(b"\r\n")[0])
        self.assertEqual((greeting.hello.node, greeting.port), ("a", 19000))
        plain = Node(MemoryReactorClock(), "b", listen_port=9000)
        self.assertEqual(plain.greeting.port, 9000)
