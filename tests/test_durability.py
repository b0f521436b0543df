"""Persistence on a fake clock: what is committed, when writes are answered, what a
restart brings back, and the bad states on disk that must stop a node."""

from __future__ import annotations

import os
import shutil
import sqlite3
from typing import List, Optional

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.peerproto import Acceptor
from distkv.disk.datafile import FILENAME, Disk, DiskError
from distkv.disk.journal import Batch
from distkv.front.commands import NIL, OK, Error, Pending, Request
from distkv.node import Node
from distkv.store.entries import make_entry, version_of
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.fakehost import FakeHost
from tests.scratch import DataDirCase, scratch_dir
from tests.test_textproto import connect


def results(outcome: object) -> List[object]:
    """What a command's outcome has produced so far (a write may still wait for its commit)."""
    got: List[object] = []
    if isinstance(outcome, Pending):
        reply = outcome.reply
        outcome.batch.when_done(lambda error: got.append(reply if error is None else Error(error)))
    else:
        got.append(outcome)
    return got


class DiskNodeTests(DataDirCase):
    def test_a_write_is_answered_only_after_its_commit(self) -> None:
        """SET and DEL replies wait for the commit at the end of the reactor turn."""
        node = self.node()
        set_reply = results(node.dispatcher.execute(Request(b"SET", (b"k", b"v"))))
        del_reply = results(node.dispatcher.execute(Request(b"DEL", (b"k",))))
        self.assertEqual((set_reply, del_reply), ([], []))
        self.assertEqual(node.journal.commits, 0)  # type: ignore[union-attr]
        self.clock.advance(0)
        self.assertEqual(set_reply, [OK])
        self.assertEqual(del_reply, [1])

    def test_writes_of_one_turn_share_one_commit(self) -> None:
        """A burst of pipelined writes from many clients costs one transaction."""
        node = self.node()
        replies = [results(node.dispatcher.execute(Request(b"SET", (b"k%d" % i, b"v"))))
                   for i in range(500)]
        self.clock.advance(0)
        self.assertEqual(node.journal.commits, 1)  # type: ignore[union-attr]
        self.assertTrue(all(reply == [OK] for reply in replies))

    def test_pipelined_replies_stay_in_order_around_commits(self) -> None:
        """Over the text protocol a GET after a SET waits its turn behind the SET's OK."""
        node = self.node()
        node.dispatcher.execute(Request(b"SET", (b"k", b"old")))
        self.clock.advance(0)
        proto, transport = connect(node)
        proto.dataReceived(b"SET k new\r\nGET k\r\nPING\r\nQUIT\r\nGET k\r\n")
        self.assertEqual(transport.value(), b"")  # nothing overtakes the uncommitted SET
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"OK\r\nnew\r\nPONG\r\nOK\r\n")
        self.assertTrue(transport.disconnecting)

    def test_restart_brings_back_data_tombstones_id_and_clock(self) -> None:
        """Committed values and tombstones survive a crash; the id is kept and the
        clock never stamps below what it had stamped before."""
        node = self.node(node_id=None)
        node.store.set(b"a", b"1")
        node.store.set(b"b", b"two words")
        node.store.delete(b"a")
        node.store.apply(b"c", make_entry(b"remote", Version(1_700_000_000_500, 0, "x")))
        self.clock.advance(0)
        last = version_of(node.store.entry(b"b"))  # type: ignore[union-attr]
        before = node.store.snapshot()
        node_id = node.node_id
        node.crash()
        again = Node(self.clock, None, data_dir=self.dir, now_ms=lambda: 1_000)
        self.addCleanup(again.crash)
        self.assertEqual(again.node_id, node_id)
        self.assertEqual(again.store.snapshot(), before)
        self.assertEqual(again.store.get(b"b"), b"two words")
        self.assertIsNone(again.store.get(b"a"))
        self.assertEqual(again.store.tombstones, 1)
        self.assertGreater(version_of(again.store.set(b"d", b"x")), last)
        self.assertGreater(version_of(again.store.set(b"e", b"x")), Version(1_700_000_000_500, 0, "x"))

    def test_uncommitted_writes_are_lost_but_were_never_acknowledged(self) -> None:
        """A crash before the commit loses the write, and its client never got OK."""
        node = self.node()
        reply = results(node.dispatcher.execute(Request(b"SET", (b"k", b"v"))))
        node.crash()
        self.assertEqual(reply, [])
        again = Node(self.clock, "a", data_dir=self.dir)
        self.addCleanup(again.crash)
        self.assertIsNone(again.store.get(b"k"))

    def test_a_failed_commit_never_answers_ok(self) -> None:
        """When the disk refuses a commit, waiting writes and later writes get ERR."""
        node = self.node()
        journal = node.journal
        assert journal is not None

        def broken(*args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        journal.disk.commit = broken  # type: ignore[method-assign]
        reply = results(node.dispatcher.execute(Request(b"SET", (b"k", b"v"))))
        self.clock.advance(0)
        self.assertIsInstance(reply[0], Error)
        self.assertIn("not persisted", reply[0].message)  # type: ignore[union-attr]
        later = results(node.dispatcher.execute(Request(b"SET", (b"j", b"v"))))
        self.assertIsInstance(later[0], Error)
        self.assertEqual(node.dispatcher.execute(Request(b"GET", (b"nothing",))), NIL)

    def test_a_commit_failing_with_any_error_answers_err_not_silence(self) -> None:
        """Not only SQLite's errors: whatever keeps a batch from disk, its
        clients are answered (with an error), never left waiting."""
        node = self.node()
        journal = node.journal
        assert journal is not None

        def broken(*args: object) -> None:
            raise OverflowError("int too big to convert")

        journal.disk.commit = broken  # type: ignore[method-assign]
        reply = results(node.dispatcher.execute(Request(b"SET", (b"k", b"v"))))
        self.clock.advance(0)
        self.assertIsInstance(reply[0], Error)
        self.assertIn("not persisted", reply[0].message)  # type: ignore[union-attr]

    def test_each_fsync_policy_sets_wal_and_its_synchronous_level(self) -> None:
        """always -> FULL (2), everysec -> NORMAL (1), no -> OFF (0), all in WAL mode."""
        for policy, level in (("always", 2), ("everysec", 1), ("no", 0)):
            disk = Disk(os.path.join(self.dir, policy), policy)
            self.assertEqual(disk._run("PRAGMA synchronous"), [(level,)])
            self.assertEqual(disk._run("PRAGMA journal_mode"), [("wal",)])
            disk.close()

    def test_everysec_syncs_once_a_second_when_something_was_committed(self) -> None:
        node = self.node()
        journal = node.journal
        assert journal is not None
        synced: List[int] = []
        real = journal.disk.sync
        journal.disk.sync = lambda: (synced.append(1), real())  # type: ignore[method-assign, func-returns-value]
        self.clock.advance(1.0)
        self.assertEqual(synced, [])  # nothing to sync
        node.store.set(b"k", b"v")
        self.clock.advance(0)
        self.clock.advance(1.0)
        self.assertEqual(synced, [1])

    def test_corrupt_database_stops_the_node_with_a_clear_message(self) -> None:
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, FILENAME), "wb") as f:
            f.write(b"\x00garbage" * 1000)
        with self.assertRaises(DiskError) as caught:
            Node(self.clock, "a", data_dir=self.dir)
        self.assertIn("unreadable or corrupt", str(caught.exception))

    def test_data_dir_of_another_node_is_refused(self) -> None:
        self.node("first").crash()
        with self.assertRaises(DiskError) as caught:
            Node(self.clock, "second", data_dir=self.dir)
        self.assertIn("belongs to node id first", str(caught.exception))

    def test_data_dir_that_is_a_file_is_refused(self) -> None:
        with open(self.dir, "w") as f:
            f.write("not a directory")
        self.assertRaises(DiskError, Node, self.clock, "a", data_dir=self.dir)

    def test_malformed_peer_sequence_numbers_are_refused(self) -> None:
        """What peers' writes were seen is checked when read back, like the rest."""
        self.node().crash()
        db = sqlite3.connect(os.path.join(self.dir, FILENAME))
        for bad in ('{"n2": -1}', '[1, 2]', 'not json', '{"n2": "7"}'):
            db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('seen', ?)", (bad,))
            db.commit()
            with self.assertRaises(DiskError) as caught:
                Node(self.clock, "a", data_dir=self.dir)
            self.assertIn("malformed peer sequence numbers", str(caught.exception))
        db.close()

    def test_unknown_data_format_is_refused(self) -> None:
        self.node().crash()
        db = sqlite3.connect(os.path.join(self.dir, FILENAME))
        db.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
        db.commit()
        db.close()
        with self.assertRaises(DiskError) as caught:
            Node(self.clock, "a", data_dir=self.dir)
        self.assertIn("format 99", str(caught.exception))


class ApplyAfterCommitTests(SynchronousTestCase):
    def test_peer_acknowledgements_wait_for_the_commit(self) -> None:
        """The accepting side acks a replicated write only after it is durable."""
        pending: List[Batch] = []

        def durable() -> Optional[Batch]:
            pending.append(Batch())
            return pending[-1]

        host = FakeHost()
        host.durable = durable  # type: ignore[method-assign]
        clock = Clock()
        proto = Acceptor(host, clock, 5.0, 1 << 20)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(wire.greeting_line(wire.Greeting(wire.Hello("them", "2"), 7001)))
        transport.clear()
        proto.dataReceived(wire.encode_write(7, b"k", make_entry(b"v", Version(1, 0, "them"))))
        self.assertEqual(([key for key, _ in host.applied_writes], transport.value()), ([b"k"], b""))
        self.assertEqual(host.acknowledged, [])
        pending[0].finish(None)
        self.assertEqual(transport.value(), wire.encode_ack(7))
        self.assertEqual(host.acknowledged, [("them", 7)])
        proto.connectionLost()


class DurableClusterTests(SynchronousTestCase):
    def make(self, size: int = 3, **options: object) -> SimulatedCluster:
        cluster = SimulatedCluster(size, data_root=scratch_dir(self), **options)  # type: ignore[arg-type]
        cluster.settle()
        self.addCleanup(cluster.stop)
        return cluster

    def test_every_node_crashed_and_restarted_keeps_all_acknowledged_data(self) -> None:
        """Crash all nodes at once after writes were committed: all of it comes back."""
        cluster = self.make(3)
        for index, node_id in enumerate(cluster.ports):
            for i in range(50):
                cluster.nodes[node_id].store.set(b"%d-%d" % (index, i), b"v%d" % i)
            cluster.nodes[node_id].store.delete(b"%d-0" % index)
        cluster.net.advance(0)  # one commit per node: everything acknowledged
        expected = cluster.nodes["n1"].store.snapshot()
        for node_id in list(cluster.nodes):
            cluster.crash(node_id)
        for node_id in cluster.ports:
            cluster.start(node_id)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(cluster.nodes["n2"].store), 147)
        for key, entry in expected.items():
            if version_of(entry).node == "n1":
                self.assertEqual(cluster.nodes["n3"].store.entry(key), entry)

    def test_outbox_survives_a_crash_and_reaches_the_peer_after_restart(self) -> None:
        """Writes for a peer that was down stay queued across the writer's own crash."""
        cluster = self.make(2)
        cluster.crash("n2")
        for i in range(20):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"v")
        cluster.net.advance(0)
        cluster.crash("n1")
        n1 = cluster.start("n1")
        queued = next(iter(n1.replication.links.values())).outbox
        self.assertEqual(len(queued), 20)
        cluster.start("n2")
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(cluster.nodes["n2"].store), 20)
        self.assertTrue(queued.drained())

    def test_acknowledged_peers_are_not_resent_everything_after_a_restart(self) -> None:
        """What a peer acknowledged before the crash is remembered on disk."""
        cluster = self.make(2)
        for i in range(30):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"v")
        cluster.run()
        cluster.net.advance(0)
        cluster.nodes["n1"].store.set(b"late", b"v")
        cluster.net.advance(0)
        cluster.crash("n2")
        cluster.crash("n1")
        n1 = cluster.start("n1")
        outbox = next(iter(n1.replication.links.values())).outbox
        self.assertEqual(len(outbox), 1)

    def test_a_new_node_with_an_empty_data_dir_loads_before_it_serves(self) -> None:
        """An empty data dir is a node without its data: LOADING until synced."""
        cluster = self.make(3)
        for i in range(40):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"v")
        cluster.settle()
        cluster.crash("n3")
        shutil.rmtree(os.path.join(cluster.data_root, "n3"))  # type: ignore[arg-type]
        n3 = cluster.start("n3")
        self.assertTrue(n3.loading)
        reply = n3.dispatcher.execute(Request(b"GET", (b"k1",)))
        self.assertTrue(reply.message.startswith("LOADING"))  # type: ignore[union-attr]
        cluster.settle()
        self.assertFalse(n3.loading)
        self.assertEqual(n3.dispatcher.execute(Request(b"GET", (b"k1",))), b"v")
        self.assertTrue(cluster.converged())


class LoadingTests(SynchronousTestCase):
    def test_with_no_peer_reachable_a_node_serves_after_the_loading_wait(self) -> None:
        """Reads and writes get LOADING while no peer can sync the node, then it serves anyway."""
        cluster = SimulatedCluster(2, loading_wait=12.0)
        cluster.settle()
        self.addCleanup(cluster.stop)
        cluster.crash("n2")
        cluster.crash("n1")
        n1 = cluster.start("n1")
        cluster.advance(11)
        self.assertEqual(n1.status_lines()[2], "state loading (empty)")
        self.assertEqual(
            n1.dispatcher.execute(Request(b"DEL", (b"k",))),
            Error("LOADING this node is syncing its data from its peers and serves once "
                  "it is current"),
        )
        self.assertIsInstance(n1.dispatcher.execute(Request(b"SET", (b"k", b"v"))), Error)
        cluster.advance(2)
        self.assertEqual(n1.status_lines()[2], "state serving")
        self.assertEqual(n1.dispatcher.execute(Request(b"SET", (b"k", b"v"))), OK)
        self.assertEqual(n1.dispatcher.execute(Request(b"GET", (b"k",))), b"v")

    def test_a_node_without_peers_serves_at_once(self) -> None:
        node = Node(Clock(), "alone")
        node.start()
        self.addCleanup(node.stop)
        self.assertFalse(node.loading)
        self.assertEqual(node.dispatcher.execute(Request(b"GET", (b"k",))), NIL)


class RestartEdgeTests(SynchronousTestCase):
    def test_sequence_numbers_never_go_back_after_a_restart(self) -> None:
        """n1's writes are all overwritten by n2 (their rows lose their numbers), n1
        restarts: its new writes get numbers above what n2 acknowledged, so they flow."""
        cluster = SimulatedCluster(2, data_root=scratch_dir(self))
        cluster.settle()
        self.addCleanup(cluster.stop)
        for i in range(300):
            cluster.nodes["n1"].store.set(b"k%d" % i, b"one")
        cluster.settle()
        for i in range(300):
            cluster.nodes["n2"].store.set(b"k%d" % i, b"two")
        cluster.settle()
        cluster.crash("n1")
        n1 = cluster.start("n1")
        self.assertGreaterEqual(n1.store.seq, 300)
        for i in range(400):
            n1.store.set(b"new%d" % i, b"x" * 10_000)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(cluster.nodes["n2"].store), 700)
        self.assertTrue(next(iter(n1.replication.links.values())).outbox.drained())

    def test_an_address_that_is_this_node_keeps_no_outbox_on_disk(self) -> None:
        cluster = SimulatedCluster(2, data_root=scratch_dir(self))
        cluster.settle()
        self.addCleanup(cluster.stop)
        n1 = cluster.nodes["n1"]
        alias = n1.add_peer("n1.example", cluster.ports["n1"])
        cluster.settle()
        self.assertTrue(alias is not None and alias.is_self)
        n1.store.set(b"k", b"v")
        cluster.settle()
        cluster.crash("n1")
        again = cluster.start("n1")
        self.assertEqual(sorted(again._saved_peers), ["127.0.0.1:7001"])

    def test_a_node_restarted_with_a_slow_clock_writes_above_what_others_hold(self) -> None:
        """A memory node whose wall clock is 20 s behind restarts; its first writes
        after loading still win and survive, though the others' stable horizon is
        ahead of its wall clock."""
        cluster = SimulatedCluster(3, skew_ms={"n1": -20_000}, heartbeat=1.0,
                                   tombstone_grace=5.0, sync_interval=10.0)
        cluster.settle()
        self.addCleanup(cluster.stop)
        for i in range(20):
            cluster.nodes["n2"].store.set(b"k%d" % i, b"v")
            cluster.advance(1)
        cluster.nodes["n2"].store.delete(b"k0")
        cluster.advance(20)
        self.assertGreater(cluster.nodes["n2"].store.horizon.ms,
                           int(cluster.net.seconds() * 1000) - 20_000)
        cluster.crash("n1")
        n1 = cluster.start("n1")
        cluster.settle()
        self.assertFalse(n1.loading)
        self.assertEqual(n1.dispatcher.execute(Request(b"SET", (b"fresh", b"acked"))), OK)
        cluster.settle()
        for node in cluster.nodes.values():
            self.assertEqual(node.store.get(b"fresh"), b"acked")
            self.assertEqual(node.store.stale_dropped, 0)
