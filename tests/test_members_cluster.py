"""Membership while the cluster runs, on a fake clock: joins through one member,
CLUSTER FORGET and LEAVE, a member list kept in the data dir, asymmetric peer
lists, and memory-only nodes restarted under their id (issue 12, item 4)."""

from __future__ import annotations

from typing import Dict, List

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.membership import REMOVED, REPLACED
from distkv.front.commands import OK, Error, Lines, Request, Status
from distkv.node import Node
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.scratch import scratch_dir

GRACE = 5.0


def run(node: Node, *words: bytes) -> object:
    return node.dispatcher.execute(Request(words[0], tuple(words[1:])))


def dialled(node: Node) -> List[str]:
    """The node ids ``node`` has a dialling link to, up or not."""
    return sorted(link.remote.node if link.remote else (link.expect or link.name)
                  for link in node.replication.links.values() if link.dials and not link.is_self)


class MembershipClusterTests(SynchronousTestCase):
    def make(self, size: int = 3, **options: object) -> SimulatedCluster:
        options.setdefault("heartbeat", 1.0)
        options.setdefault("tombstone_grace", GRACE)
        options.setdefault("loading_wait", 60.0)
        options.setdefault("sync_interval", 10.0)
        return settled_cluster(self, size, **options)

    def tombstones(self, cluster: SimulatedCluster) -> Dict[str, int]:
        return {name: node.store.tombstones for name, node in cluster.nodes.items()}

    def test_a_node_started_with_one_members_address_gets_every_member_and_all_data(self) -> None:
        """n4 lists only n1; while writes go on through n1..n3 it learns n2 and n3,
        every old node learns and dials n4, and n4 ends with every key."""
        cluster = self.make(3)
        for i in range(50):
            cluster.nodes[f"n{i % 3 + 1}"].store.set(b"old%d" % i, b"v%d" % i)
        cluster.run()
        n4 = cluster.join("n4", via=["n1"])
        self.assertTrue(n4.loading)
        for i in range(30):  # writes go on while it joins
            cluster.nodes[f"n{i % 3 + 1}"].store.set(b"new%d" % i, b"w%d" % i)
            cluster.advance(0.1)
        cluster.settle()
        self.assertFalse(n4.loading)
        self.assertEqual(n4.members(), ["n1", "n2", "n3"])
        self.assertEqual(dialled(n4), ["n1", "n2", "n3"])
        for name in ("n1", "n2", "n3"):
            node = cluster.nodes[name]
            self.assertEqual(node.members(), sorted({"n1", "n2", "n3", "n4"} - {name}))
            self.assertIn("n4", dialled(node), name)
        self.assertEqual(len(n4.store), 80)
        self.assertTrue(cluster.converged())

    def test_forgetting_a_dead_member_lets_purging_resume_everywhere(self) -> None:
        """n3 dies for good: its tombstones stay until CLUSTER FORGET n3 on one node;
        then every node drops n3, closes its links, and purges."""
        cluster = self.make(3)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        n1.store.set(b"k", b"v")
        cluster.settle()
        cluster.crash("n3")
        n1.store.delete(b"k")
        cluster.advance(60)
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1})
        self.assertEqual(run(n2, b"CLUSTER", b"FORGET", b"n3"), OK)
        cluster.advance(GRACE + 20)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0})
        for node in (n1, n2):
            self.assertEqual(node.members(), sorted({"n1", "n2"} - {node.node_id}))
            self.assertTrue(node.membership.is_removed("n3"))
            self.assertNotIn("n3", dialled(node))

    def test_a_forgotten_node_that_comes_back_is_refused(self) -> None:
        """n3, forgotten, restarts under its id: every handshake it makes is refused,
        it learns it was removed, and the others never count it again."""
        cluster = self.make(3)
        cluster.crash("n3")
        run(cluster.nodes["n1"], b"CLUSTER", b"FORGET", b"n3")
        cluster.settle()
        n3 = cluster.start("n3", None)
        cluster.settle()
        for name in ("n1", "n2"):
            self.assertEqual(cluster.nodes[name].members(),
                             sorted({"n1", "n2"} - {name}))
        self.assertTrue(all(link.refusal is not None and link.refusal[0] == "removed"
                            for link in n3.replication.links.values()))
        self.assertIsInstance(run(n3, b"SET", b"k", b"v"), Error)

    def test_a_node_whose_only_peer_was_forgotten_sends_each_write_once_to_a_new_one(
            self) -> None:
        """Forgetting the only peer drops every link; a node joining later gets each
        write (and each transaction) once, and the outbox drains to nothing."""
        cluster = self.make(2)
        n1 = cluster.nodes["n1"]
        self.assertEqual(run(n1, b"CLUSTER", b"FORGET", b"n2"), OK)
        cluster.crash("n2")
        cluster.settle()
        self.assertEqual(n1.replication.links, {})
        n3 = cluster.join("n3", via=["n1"])
        cluster.settle()
        sent: List[bytes] = []
        link = next(iter(n1.replication.links.values()))
        shared = n1.replication.outbox_log
        original = shared.add
        shared.add = lambda seq, key, entry, frame=None, size=None: (  # type: ignore[method-assign]
            sent.append(key), original(seq, key, entry, frame, size))[1]
        n1.store.set(b"a", b"1")
        n1.store.begin_group()
        n1.store.set(b"b", b"2")
        n1.store.set(b"c", b"3")
        n1.store.end_group()
        cluster.settle()
        self.assertEqual(sent, [b"a"])
        self.assertEqual((len(link.outbox), link.outbox.bytes), (0, 0))
        self.assertEqual([n3.store.get(key) for key in (b"a", b"b", b"c")], [b"1", b"2", b"3"])

    def test_forgetting_a_peer_address_that_never_answered_lets_purging_resume(self) -> None:
        """A --peers address whose node died for good before any member learned its id
        holds every purge back, and no id is there to forget: CLUSTER FORGET host:port
        on one node removes it on every node (a memory-only node restarted with the
        address in its peer list again learns it too), and purging resumes."""
        cluster = self.make(3)
        ghost = ("127.0.0.1", 7999)  # nothing ever listens there
        cluster.ports["ghost"] = ghost[1]  # in every peer list a restart uses
        for node in cluster.nodes.values():
            node.add_peer(*ghost)
        n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
        n1.store.set(b"k", b"v")
        cluster.advance(5)
        n1.store.delete(b"k")
        cluster.advance(60)
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1, "n3": 1})
        self.assertIsNone(n1.members())
        self.assertEqual(run(n3, b"CLUSTER", b"FORGET", b"127.0.0.1:7999"), OK)
        cluster.crash("n2")
        n2 = cluster.start("n2", None)
        self.assertIn(ghost, [(link.host, link.port) for link in n2.replication.links.values()])
        cluster.advance(GRACE + 30)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        for node in cluster.nodes.values():
            self.assertEqual(node.members(), sorted({"n1", "n2", "n3"} - {node.node_id}))
            self.assertTrue(node.membership.is_removed("127.0.0.1:7999"))
            self.assertNotIn(ghost, [(link.host, link.port)
                                     for link in node.replication.links.values()])

    def test_forget_by_address_removes_the_members_listed_there(self) -> None:
        """CLUSTER FORGET host:port removes the member at that address; this node's
        own address is refused as its own id is, and an address nobody lists or
        dials is an unknown node."""
        cluster = self.make(3)
        n1 = cluster.nodes["n1"]
        own = b"127.0.0.1:%d" % cluster.ports["n1"]
        self.assertEqual(run(n1, b"CLUSTER", b"FORGET", own),
                         Error("ERR I tried hard but I can't forget myself..."))
        for unknown in (b"10.1.2.3:4", b"127.0.0.1:99999", b"127.0.0.1:",
                        "127.0.0.1:\u00b2".encode(), b"127.0.0.1:" + b"9" * 5000):
            self.assertEqual(run(n1, b"CLUSTER", b"FORGET", unknown),
                             Error("ERR Unknown node " + unknown.decode()))
        cluster.crash("n2")
        self.assertEqual(run(n1, b"CLUSTER", b"FORGET", b"localhost:%d" % cluster.ports["n2"]),
                         OK)
        cluster.settle()
        for name in ("n1", "n3"):
            self.assertTrue(cluster.nodes[name].membership.is_removed("n2"))
            self.assertFalse(cluster.nodes[name].membership.is_removed("127.0.0.1:7001"))

    def test_forget_answers_like_redis_for_unknown_and_own_ids(self) -> None:
        cluster = self.make(2)
        n1 = cluster.nodes["n1"]
        self.assertEqual(run(n1, b"CLUSTER", b"FORGET", b"nobody"),
                         Error("ERR Unknown node nobody"))
        self.assertEqual(run(n1, b"CLUSTER", b"FORGET", b"n1"),
                         Error("ERR I tried hard but I can't forget myself..."))
        reply = run(n1, b"CLUSTER", b"FORGET")
        self.assertIsInstance(reply, Error)

    def test_leave_tells_every_member_and_purging_resumes(self) -> None:
        """n3 LEAVEs: it says what it did, takes no more writes, its links close; the
        others drop it and purge a delete n3 never answers for."""
        cluster = self.make(3)
        n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
        n3.store.set(b"before-leave", b"v")
        reply = run(n3, b"LEAVE")
        assert isinstance(reply, Status)
        self.assertTrue(reply.text.startswith(b"OK leaving the cluster: 2 linked member(s)"))
        self.assertIsInstance(run(n3, b"SET", b"after-leave", b"v"), Error)
        cluster.settle()
        self.assertEqual(run(n3, b"LEAVE"), Error("ERR this node has already left the cluster"))
        self.assertIsInstance(run(n3, b"SET", b"k", b"v"), Error)
        self.assertEqual(n3.replication.links, {})
        n1.store.set(b"k", b"v")
        cluster.run()
        n1.store.delete(b"k")
        cluster.advance(GRACE + 20)
        for name in ("n1", "n2"):
            node = cluster.nodes[name]
            self.assertTrue(node.membership.is_removed("n3"), name)
            self.assertEqual(node.store.tombstones, 0, name)
            self.assertEqual(node.store.get(b"before-leave"), b"v", name)

    def test_leave_keeps_every_write_it_acknowledged(self) -> None:
        """Writes queued when LEAVE comes (20 of 200 kB, more than one window) all
        reach the other members before they drop the leaving node."""
        cluster = self.make(2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        big = b"x" * 200_000
        for i in range(20):
            self.assertEqual(run(n1, b"SET", b"k%d" % i, big), OK)
        run(n1, b"LEAVE")
        cluster.settle()
        self.assertTrue(n2.membership.is_removed("n1"))
        self.assertEqual([i for i in range(20) if n2.store.get(b"k%d" % i) != big], [])

    def test_a_join_and_a_forget_at_once_on_two_sides_of_a_partition_converge(self) -> None:
        """n4 joins through n1 while n2, cut off from n1, forgets n3: once healed every
        member holds the same list (n4 in, n3 removed) and the same data."""
        cluster = self.make(3)
        cluster.crash("n3")
        cluster.net.block("n1", "n2")
        n4 = cluster.join("n4", via=["n1"])
        run(cluster.nodes["n2"], b"CLUSTER", b"FORGET", b"n3")
        cluster.nodes["n2"].store.set(b"from-n2", b"x")
        n4.store.set(b"from-n4", b"y")
        cluster.advance(5)
        cluster.net.heal()
        cluster.settle()
        lists = {name: node.membership.entries for name, node in cluster.nodes.items()}
        self.assertEqual(len({repr(sorted(x.items())) for x in lists.values()}), 1, lists)
        self.assertEqual(n4.membership.get("n3").state, REMOVED)  # type: ignore[union-attr]
        self.assertEqual(cluster.nodes["n2"].members(), ["n1", "n4"])
        self.assertTrue(cluster.converged())

    def test_a_restarted_node_redials_the_members_it_learned_at_run_time(self) -> None:
        """n4 joined while n2 ran; n2 restarts from its data dir with its old peer
        list (n1, n3) and dials n4 at once, from the list kept in its data dir."""
        cluster = self.make(3, data_root=scratch_dir(self))
        cluster.join("n4", via=["n1"])
        cluster.settle()
        cluster.crash("n2")
        n2 = cluster.start("n2")
        self.assertIn(("127.0.0.1", cluster.ports["n4"]),
                      [(link.host, link.port) for link in n2.replication.links.values()])
        cluster.settle()
        self.assertEqual(n2.members(), ["n1", "n3", "n4"])
        self.assertEqual(dialled(n2), ["n1", "n3", "n4"])

    def test_asymmetric_peer_lists_end_with_every_member_linked_to_every_other(self) -> None:
        """n1 lists nobody, n2 lists n1, n3 lists n2: each learns the others, dials
        them, and writes anywhere reach everyone."""
        cluster = SimulatedCluster(3, heartbeat=1.0, loading_wait=60.0,
                                   unlisted=[("n1", "n2"), ("n1", "n3"), ("n2", "n3"),
                                             ("n3", "n1")])
        self.addCleanup(cluster.stop)
        cluster.settle()
        for name, node in cluster.nodes.items():
            others = sorted({"n1", "n2", "n3"} - {name})
            self.assertEqual(node.members(), others)
            self.assertEqual(dialled(node), others)
            node.store.set(name.encode(), b"v")
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(cluster.nodes["n1"].store), 3)

    def test_a_memory_only_node_restarted_twice_under_its_id_loses_no_write(self) -> None:
        """n3 (memory only, same id) restarts twice while writes go on: its new writes
        are numbered above what its peers saw of the old ones, it does not think
        itself stale, every write survives, and a delete is purged afterwards."""
        cluster = self.make(3)
        acked: Dict[bytes, bytes] = {}
        for round_ in range(2):
            for i in range(20):
                name = f"n{i % 3 + 1}"
                if name in cluster.nodes and not cluster.nodes[name].loading:
                    key, value = b"k%d-%d" % (round_, i), b"v%d" % i
                    self.assertEqual(run(cluster.nodes[name], b"SET", key, value), OK)
                    acked[key] = value
                cluster.advance(0.1)
            seen = cluster.nodes["n1"].seen.get("n3", 0)
            cluster.crash("n3")
            n3 = cluster.start("n3", None)
            self.assertGreater(n3.store.seq, seen)
            cluster.settle()
            self.assertIsNone(n3.loading_why)
            self.assertEqual(run(n3, b"SET", b"after%d" % round_, b"x"), OK)
            acked[b"after%d" % round_] = b"x"
            cluster.settle()
            self.assertEqual(n3.node_id, "n3")
        for node in cluster.nodes.values():
            for key, value in acked.items():
                self.assertEqual(node.store.get(key), value, (node.node_id, key))
        cluster.nodes["n1"].store.delete(b"after0")
        cluster.advance(GRACE + 20)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})

    def test_an_address_that_answers_as_another_node_marks_the_old_one_replaced(self) -> None:
        """n3's address answers as n3-b: every node lists n3 as replaced (not a
        second member, not silently dropped) and counts n3-b only."""
        cluster = self.make(3)
        cluster.crash("n3")
        cluster.start("n3", None, new_id="n3-b")
        cluster.settle()
        for name in ("n1", "n2"):
            node = cluster.nodes[name]
            self.assertEqual(node.membership.get("n3").state, REPLACED)  # type: ignore[union-attr]
            self.assertEqual(node.members(), sorted({"n1", "n2", "n3-b"} - {name}))

    def test_cluster_nodes_and_members_list_every_member(self) -> None:
        """CLUSTER NODES has a Redis-format line per member; MEMBERS and STATUS show
        address, state, link each way, last heard, outbox and lag."""
        cluster = self.make(3)
        n1 = cluster.nodes["n1"]
        nodes = run(n1, b"CLUSTER", b"NODES")
        assert isinstance(nodes, Lines)
        self.assertEqual(len(nodes.lines), 3)
        mine = [line for line in nodes.lines if "myself" in line]
        self.assertEqual(mine[0].split()[:3], ["n1", "127.0.0.1:7000@7000", "myself,master"])
        self.assertTrue(all(line.endswith("connected") for line in nodes.lines))
        members = run(n1, b"MEMBERS")
        assert isinstance(members, Lines)
        line = [x for x in members.lines if x.startswith("member n2 ")][0]
        for part in ("addr=127.0.0.1:7001", "state=member", "link_out=up", "link_in=up",
                     "last_heard=", "outbox_writes=0", "lag_ms=0"):
            self.assertIn(part, line)
        self.assertIn(line, n1.status_lines())
        info = run(n1, b"INFO", b"replication")
        assert isinstance(info, Lines)
        self.assertIn("member1:id=n2,addr=127.0.0.1:7001,state=member,role=peer,"
                      "link_out=up,link_in=up", "\n".join(info.lines))
        self.assertEqual(run(n1, b"CLUSTER", b"MYID"), b"n1")

    def test_a_node_back_at_its_address_under_a_new_id_never_counts_its_old_id(self) -> None:
        """n1 comes back empty as n1-b while n2 and n3 cannot dial its address (only it
        can call them): the list it hears names n1 at its own address; every node,
        n1-b included, ends with n1 replaced and counts n1-b alone."""
        cluster = self.make(3)
        cluster.crash("n1")
        cluster.net.block("n2", "n1", oneway=True)
        cluster.net.block("n3", "n1", oneway=True)
        n1b = cluster.start("n1", None, new_id="n1-b")
        cluster.settle()
        self.assertEqual(n1b.membership.get("n1").state, REPLACED)  # type: ignore[union-attr]
        self.assertEqual(n1b.members(), ["n2", "n3"])
        for name in ("n2", "n3"):
            self.assertEqual(cluster.nodes[name].members(),
                             sorted({"n1-b", "n2", "n3"} - {name}))
