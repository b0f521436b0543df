"""The log-structured data dir: snapshots that compact the log, crashes halfway
through one, what each fsync policy flushes, and data dirs of the old format."""

from __future__ import annotations

import os
import sqlite3
from typing import List
from unittest import mock

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.disk import datafile as disk_module
from distkv.disk.datafile import FILENAME, Disk
from distkv.front.commands import Pending, Request
from distkv.node import Node
from distkv.store.entries import make_entry, version_of
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.scratch import DataDirCase, scratch_dir


def count_rows(path: str, table: str) -> int:
    db = sqlite3.connect(os.path.join(path, FILENAME))
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


class KilledError(Exception):
    """Stands for kill -9 in the middle of a reactor turn."""


class SnapshotTests(DataDirCase):
    def restarted(self, node: Node) -> Node:
        node.crash()
        return self.node()

    def test_a_snapshot_replaces_the_log_and_a_restart_reads_it_back(self) -> None:
        """Values, overwrites, tombstones and purges, across several snapshots."""
        node = self.node()
        journal = node.journal
        assert journal is not None
        journal.compact_bytes = 2_000
        for turn in range(30):
            for i in range(20):
                node.store.set(b"k%d" % (turn * 7 + i), b"v%d" % turn)
            node.store.delete(b"k%d" % turn)
            self.clock.advance(0)  # the commit, and a whole snapshot when one is due
        node.store.purge(Version(2_000_000_000_000, 0, ""))  # every tombstone goes
        self.clock.advance(0)
        self.assertGreaterEqual(journal.snapshots, 2)
        self.assertLess(count_rows(self.dir, "log"), journal.commits)
        before = node.store.snapshot()
        self.assertEqual(node.store.tombstones, 0)
        seq, stamped = node.store.seq, max(version_of(entry) for entry in before.values())
        again = self.restarted(node)
        self.assertEqual(again.store.snapshot(), before)
        self.assertEqual(again.store.digest.encode(), node.store.digest.encode())
        # The clock's mark and the sequence number outlive the log rows that held them.
        self.assertEqual(again.store.seq, seq)
        self.assertGreater(version_of(again.store.set(b"new", b"v")), stamped)

    def test_a_crash_halfway_through_a_snapshot_loses_nothing(self) -> None:
        """Parts of an unfinished snapshot are ignored; the old state stays whole,
        and the next snapshot clears them."""
        node = self.node()
        journal = node.journal
        assert journal is not None
        for i in range(100):
            node.store.set(b"k%d" % i, b"v")
        self.clock.advance(0)
        journal.compact_bytes = 0
        real = journal.disk.write_snapshot_part
        written: List[int] = []

        def killed_after_one_part(*args: object) -> int:
            if written:
                raise KilledError()
            written.append(1)
            return real(*args)  # type: ignore[arg-type]

        with mock.patch("distkv.disk.journal.SNAPSHOT_PART", 10):
            node.store.set(b"k0", b"new")
            before = node.store.snapshot()
            with mock.patch.object(journal.disk, "write_snapshot_part", killed_after_one_part):
                self.assertRaises(KilledError, self.clock.advance, 0)  # commit, then part 1 of 10
            self.assertEqual(count_rows(self.dir, "snapshot"), 1)
            self.assertEqual(journal.snapshots, 0)
            self.assertIn(("aof_rewrite_in_progress", 1), node.info_sections()["persistence"])
            again = self.restarted(node)
            self.assertEqual(again.store.snapshot(), before)
            journal = again.journal
            assert journal is not None
            journal.compact_bytes = 0
            again.store.set(b"k1", b"newer")
            self.clock.advance(0)
        self.assertEqual(journal.snapshots, 1)
        self.assertEqual(count_rows(self.dir, "snapshot"), 10)
        self.assertEqual(self.restarted(again).store.get(b"k1"), b"newer")

    def test_a_failed_snapshot_keeps_the_log_and_is_tried_again_later(self) -> None:
        node = self.node()
        journal = node.journal
        assert journal is not None
        journal.compact_bytes = 100
        calls: List[int] = []

        def broken(*args: object) -> int:
            calls.append(1)
            raise sqlite3.OperationalError("disk I/O error")

        with mock.patch.object(journal.disk, "write_snapshot_part", broken):
            node.store.set(b"k", b"v" * 200)  # past 100 bytes of log: a snapshot, which fails
            self.clock.advance(0)
            self.assertEqual(calls, [1])
            node.store.set(b"j", b"v")  # the log has not grown by 100 bytes more: no new try
            self.clock.advance(0)
            self.assertEqual(calls, [1])
            node.store.set(b"i", b"v" * 200)
            self.clock.advance(0)
            self.assertEqual(calls, [1, 1])
        self.assertEqual(journal.snapshots, 0)
        self.assertIsNone(journal.failure)  # writes go on
        node.store.set(b"h", b"v" * 1_000)  # the disk works again: the next try succeeds
        self.clock.advance(0)
        self.assertEqual(journal.snapshots, 1)
        self.assertEqual(journal._compact_after, 0)  # and the usual threshold is back
        info = dict(node.info_sections()["persistence"])
        self.assertEqual(
            (info["aof_enabled"], info["aof_rewrites"], info["aof_rewrite_in_progress"],
             info["aof_last_write_status"]),
            (1, 1, 0, "ok"),
        )
        self.assertEqual(info["aof_base_size"], journal.disk.snapshot_bytes)
        self.assertGreaterEqual(info["aof_current_size"], info["aof_base_size"])  # type: ignore[operator]
        again = self.restarted(node)
        self.assertEqual((again.store.get(b"j"), len(again.store)), (b"v", 4))


    def test_a_clock_moved_by_heartbeats_alone_is_saved_within_a_second(self) -> None:
        """No write, but the clock observed a peer 30 s ahead: after a crash the
        node still stamps above what it had seen."""
        node = self.node()
        node.store.set(b"k", b"v")
        self.clock.advance(0)
        seen = Version(int(self.clock.seconds() * 1000) + 30_000, 7, "peer")
        self.assertTrue(node.clock.observe(seen, count=False))  # as a heartbeat's floor does
        self.clock.advance(1)  # the journal's once-a-second tick
        again = self.restarted(node)
        self.assertGreater(version_of(again.store.set(b"j", b"w")), seen)
        again.crash()
        journal = self.node().journal
        assert journal is not None
        saves: List[object] = []
        with mock.patch.object(journal.disk, "save_marks", lambda *args: saves.append(args)):
            self.clock.advance(1)  # a restart alone moves nothing worth writing
        self.assertEqual((saves, journal.commits), ([], 0))

    def test_large_values_make_smaller_parts(self) -> None:
        """Parts are cut by bytes too, so large values never make one huge blob."""
        node = self.node()
        journal = node.journal
        assert journal is not None
        journal.compact_bytes = 0
        with mock.patch("distkv.disk.journal.SNAPSHOT_PART_BYTES", 1_000):
            for i in range(9):
                node.store.set(b"k%d" % i, b"v" * 600)
            self.clock.advance(0)
        self.assertEqual(journal.snapshots, 1)
        self.assertEqual(count_rows(self.dir, "snapshot"), 5)  # two entries a part, then one
        self.assertEqual(len(self.restarted(node).store), 9)

    def test_a_failed_flush_stops_writes(self) -> None:
        """everysec: when the write-ahead log cannot be flushed, what was
        acknowledged may not survive a power cut; later writes get ERR."""
        node = self.node()
        node.store.set(b"k", b"v")
        self.clock.advance(0)

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        with mock.patch("distkv.disk.datafile.os.fsync", failing):
            self.clock.advance(1)
        journal = node.journal
        assert journal is not None
        self.assertIn("cannot flush to disk", journal.failure or "")
        reply = node.dispatcher.execute(Request(b"SET", (b"j", b"v")))
        self.assertIsInstance(reply, Pending)
        got: List[object] = []
        reply.batch.when_done(got.append)  # type: ignore[union-attr]
        self.assertIn("cannot flush to disk", str(got[0]))


class GarbageTests(SynchronousTestCase):
    def test_what_a_snapshot_replaced_is_deleted_a_few_rows_at_a_time(self) -> None:
        """finish_snapshot only switches; the replaced log rows, then the older
        generation's parts, are deleted in short steps; a load in between gives
        the same data and does not count them as log."""
        path = scratch_dir(self)
        disk = Disk(path)
        entries = [(i + 1, b"k%d" % i, make_entry(b"v%d" % i, Version(10, i, "a"))) for i in range(5)]
        for seq, key, entry in entries:
            disk.commit([(seq, key, entry)], [], [], 10, seq)
        for generation in (1, 2):
            number, covers = disk.start_snapshot()
            self.assertEqual(number, generation)
            size = disk.write_snapshot_part(number, 0, entries)
            disk.finish_snapshot(number, covers, size)
        late = [(6, b"late", make_entry(b"x", Version(11, 0, "a")))]
        disk.commit(late, [], [], 11, 6)
        self.assertEqual((count_rows(path, "log"), count_rows(path, "snapshot")), (6, 2))
        self.assertEqual(disk.log_bytes, len(disk_module.encode_rows(late)))  # replaced rows not counted
        disk.close()

        def load() -> Node:
            node = Node(Clock(), "a", data_dir=path)
            self.addCleanup(lambda: None if node.journal is None or node.journal.closed else node.crash())
            return node

        before = load()  # replaced rows still there: read as if they were not
        self.assertEqual(len(before.store), 6)
        self.assertEqual(before.store.seq, 6)
        assert before.journal is not None
        garbage = before.journal.disk
        with mock.patch.object(disk_module, "GARBAGE_ROWS", 2):
            self.assertTrue(garbage.collect_garbage())
            self.assertEqual(count_rows(path, "log"), 4)
            self.assertTrue(garbage.collect_garbage())
            self.assertEqual(count_rows(path, "log"), 2)
        with mock.patch.object(disk_module, "GARBAGE_BYTES", 1):  # one row a call
            self.assertTrue(garbage.collect_garbage())
        self.assertEqual((count_rows(path, "log"), count_rows(path, "snapshot")), (1, 2))
        self.assertTrue(garbage.collect_garbage())  # then one old part per call
        self.assertEqual(count_rows(path, "snapshot"), 1)
        before.crash()
        after = load()
        after.start()  # a started journal finishes the job left over
        assert after.journal is not None
        after.journal._reactor.advance(0)  # type: ignore[attr-defined]
        self.assertEqual((count_rows(path, "log"), count_rows(path, "snapshot")), (1, 1))
        self.assertEqual(after.store.snapshot(), before.store.snapshot())


class SnapshotOutboxTests(SynchronousTestCase):
    def test_a_snapshot_keeps_the_writes_a_down_peer_still_waits_for(self) -> None:
        cluster = SimulatedCluster(2, data_root=scratch_dir(self))
        cluster.settle()
        self.addCleanup(cluster.stop)
        cluster.crash("n2")
        n1 = cluster.nodes["n1"]
        assert n1.journal is not None
        n1.journal.compact_bytes = 0
        for i in range(50):
            n1.store.set(b"k%d" % i, b"v")
        cluster.net.advance(0)
        self.assertEqual(n1.journal.snapshots, 1)
        self.assertEqual(count_rows(os.path.join(cluster.data_root or "", "n1"), "log"), 0)
        cluster.crash("n1")
        n1 = cluster.start("n1")
        self.assertEqual(len(next(iter(n1.replication.links.values())).outbox), 50)
        cluster.start("n2")
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(cluster.nodes["n2"].store), 50)


    def test_a_peer_write_over_an_owed_one_is_not_resent_as_ours(self) -> None:
        """n1's write is owed to n3 (down) when n2 overwrites the key; after a
        snapshot and a restart n1 does not count n2's value among its own writes."""
        cluster = SimulatedCluster(3, data_root=scratch_dir(self))
        cluster.settle()
        self.addCleanup(cluster.stop)
        cluster.crash("n3")
        n1 = cluster.nodes["n1"]
        n1.store.set(b"k", b"from n1")
        n1.store.set(b"mine", b"from n1")
        cluster.run()
        cluster.nodes["n2"].store.set(b"k", b"from n2")
        cluster.run()
        self.assertEqual(n1.store.get(b"k"), b"from n2")
        assert n1.journal is not None
        n1.journal.compact_bytes = 0
        n1.store.set(b"other", b"x")
        cluster.net.advance(0)
        self.assertEqual(n1.journal.snapshots, 1)
        cluster.crash("n1")
        n1 = cluster.start("n1")
        to_n3 = n1.replication.links[("127.0.0.1", cluster.ports["n3"])].outbox
        self.assertEqual(sorted(key for key, _ in to_n3.owed()), [b"mine", b"other"])


class SyncPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = scratch_dir(self)

    def synced_files(self, policy: str) -> List[str]:
        """The files ``Disk.sync`` flushes after one commit."""
        node = Node(Clock(), "a", data_dir=os.path.join(self.dir, policy), fsync=policy)
        self.addCleanup(node.crash)
        node.store.set(b"k", b"v")
        assert node.journal is not None
        node.journal.commit()
        flushed: List[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        with mock.patch("distkv.disk.datafile.os.fsync", fsync):
            node.journal.disk.sync()
        return flushed

    def test_everysec_flushes_the_write_ahead_log_file(self) -> None:
        flushed = self.synced_files("everysec")
        self.assertEqual(len(flushed), 2)
        self.assertTrue(flushed[0].endswith(FILENAME + "-wal"), flushed)
        self.assertEqual(flushed[1], os.path.realpath(os.path.join(self.dir, "everysec")))

    def test_no_and_always_leave_the_flushing_to_others(self) -> None:
        """``no``: the operating system; ``always``: SQLite, at every commit."""
        self.assertEqual(self.synced_files("no"), [])
        self.assertEqual(self.synced_files("always"), [])

    def test_the_log_is_checkpointed_into_the_database_once_it_is_large(self) -> None:
        disk = Disk(self.dir)
        self.addCleanup(disk.close)
        disk.commit([(1, b"k", make_entry(b"v" * 50_000, Version(1, 0, "a")))], [], [], 1, 1)
        size = os.path.getsize(os.path.join(self.dir, FILENAME))
        disk.sync()
        self.assertEqual(os.path.getsize(os.path.join(self.dir, FILENAME)), size)
        with mock.patch.object(disk_module, "CHECKPOINT_BYTES", 1):
            disk.sync()
        self.assertGreater(os.path.getsize(os.path.join(self.dir, FILENAME)), size + 50_000)


    def test_the_log_file_is_cut_back_after_a_checkpoint(self) -> None:
        """Once checkpointed, the log file starts over and shrinks, so its size
        keeps telling when the next checkpoint is due."""
        disk = Disk(self.dir)
        self.addCleanup(disk.close)
        wal = os.path.join(self.dir, FILENAME + "-wal")
        for i in range(12):
            disk.commit([(i + 1, b"k%d" % i, make_entry(b"v" * 500_000, Version(1, i, "a")))],
                        [], [], 1, i + 1)
        self.assertGreater(os.path.getsize(wal), disk_module.WAL_KEEP_BYTES + 1_000_000)
        with mock.patch.object(disk_module, "CHECKPOINT_BYTES", disk_module.WAL_KEEP_BYTES):
            disk.sync()
        disk.commit([(13, b"k", make_entry(b"v", Version(2, 0, "a")))], [], [], 2, 13)
        self.assertLessEqual(os.path.getsize(wal), disk_module.WAL_KEEP_BYTES)


class FormatOneTests(SynchronousTestCase):
    def test_a_data_dir_of_format_1_is_converted(self) -> None:
        """The one-row-per-key table of earlier versions is read, written as a
        snapshot, and dropped; values, tombstones, the id and the outbox stay."""
        path = scratch_dir(self)
        os.makedirs(path)
        db = sqlite3.connect(os.path.join(path, FILENAME))
        db.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE entries (key BLOB PRIMARY KEY, value BLOB, ms INTEGER NOT NULL,
                                  counter INTEGER NOT NULL, node TEXT NOT NULL, seq INTEGER);
            CREATE TABLE peers (address TEXT PRIMARY KEY, acked INTEGER NOT NULL, node TEXT);
            INSERT INTO meta VALUES ('format', '1'), ('node_id', 'old'),
                                    ('clock_ms', '1700000000900'), ('seq', '3');
            INSERT INTO entries VALUES (x'6b31', x'7631', 1700000000100, 0, 'old', 1);
            INSERT INTO entries VALUES (x'6b32', NULL, 1700000000200, 0, 'old', 2);
            INSERT INTO entries VALUES (x'6b33', x'7633', 1700000000300, 1, 'peer', NULL);
            INSERT INTO peers VALUES ('127.0.0.1:7002', 1, 'peer');
        """)
        db.commit()
        db.close()
        clock = Clock()
        clock.advance(1_700_000_000)
        for _ in range(2):  # converted, then read as format 2
            node = Node(clock, None, data_dir=path)
            node.add_peer("127.0.0.1", 7002)
            self.assertEqual(node.node_id, "old")
            self.assertEqual(node.store.get(b"k1"), b"v1")
            tombstone = make_entry(None, Version(1_700_000_000_200, 0, "old"))
            self.assertEqual(node.store.entry(b"k2"), tombstone)
            self.assertEqual(node.store.get(b"k3"), b"v3")
            self.assertEqual(node.store.seq, 3)
            self.assertEqual([key for _, key, _ in node._unacked], [b"k2"])
            node.crash()
        db = sqlite3.connect(os.path.join(path, FILENAME))
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        fmt = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()[0]
        db.close()
        self.assertNotIn("entries", tables)
        self.assertEqual(fmt, disk_module.FORMAT)

    def test_a_data_dir_of_format_2_gets_the_columns_it_lacks(self) -> None:
        """Format 2 kept the clock mark and sequence number in meta only."""
        path = scratch_dir(self)
        os.makedirs(path)
        entry = make_entry(b"v", Version(1_700_000_000_100, 0, "two"))
        write = disk_module.encode_rows([(4, b"k", entry)])
        db = sqlite3.connect(os.path.join(path, FILENAME))
        db.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE log (id INTEGER PRIMARY KEY, writes BLOB NOT NULL, forgets BLOB);
            INSERT INTO meta VALUES ('format', '2'), ('node_id', 'two'),
                                    ('clock_ms', '1700000000900'), ('seq', '4');
        """)
        db.execute("INSERT INTO log VALUES (1, ?, NULL)", (write,))
        db.commit()
        db.close()
        clock = Clock()
        clock.advance(1_700_000_000)
        node = Node(clock, None, data_dir=path)
        self.assertEqual((node.node_id, node.store.get(b"k"), node.store.seq), ("two", b"v", 4))
        self.assertGreater(node.clock.now(), Version(1_700_000_000_900, 0, "two"))
        node.store.set(b"j", b"w")
        assert node.journal is not None
        node.journal.commit()
        node.crash()
        again = Node(clock, None, data_dir=path)  # now format 3, with the new row's marks
        self.addCleanup(again.crash)
        self.assertEqual((again.store.get(b"k"), again.store.get(b"j"), again.store.seq), (b"v", b"w", 5))


class ClosedJournalTests(DataDirCase):
    """Writes that reach a node after its journal closed (it is stopping, and a
    client or peer connection is still open) are answered with an error, never
    left waiting for a commit that will not come."""

    def stopped_node(self) -> Node:
        node = self.node()
        node.store.set(b"before", b"v")
        done: List[object] = []
        node.stop().addBoth(done.append)
        self.clock.advance(0)
        assert node.journal is not None
        self.assertTrue(done and node.journal.closed)
        return node

    def test_a_client_write_after_the_close_gets_an_error(self) -> None:
        """SET and DEL get ERR write not persisted, at once; reads still answer."""
        from tests.test_textproto import connect

        node = Node(self.clock, "a", data_dir=self.dir)
        node.start()
        proto, transport = connect(node)  # connected before the node stops
        done: List[object] = []
        node.stop().addBoth(done.append)
        self.clock.advance(0)
        self.assertTrue(done)
        proto.dataReceived(b"SET k v\r\nDEL k\r\nPING\r\n")
        self.clock.advance(1)
        lines = transport.value().split(b"\r\n")
        self.assertEqual(len(lines), 4, lines)
        for line in lines[:2]:
            self.assertTrue(line.startswith(b"ERR write not persisted: "), line)
            self.assertIn(b"stopping", line)
        self.assertEqual(lines[2:], [b"PONG", b""])
        reply = node.dispatcher.execute(Request(b"SET", (b"j", b"v")))
        assert isinstance(reply, Pending)
        got: List[object] = []
        reply.batch.when_done(got.append)
        self.assertEqual(len(got), 1)
        self.assertIn("stopping", str(got[0]))

    def test_a_peer_write_after_the_close_is_refused_at_once_and_never_saved(self) -> None:
        """The batch a peer's acknowledgement would wait for has already
        failed: the peer is never acknowledged (it keeps the write), and no
        waiter is left behind."""
        node = self.stopped_node()
        journal = node.journal
        assert journal is not None
        self.assertTrue(node.store.apply(b"late", make_entry(b"v", node.clock.now())))
        batch = journal.durable()
        assert batch is not None
        self.assertTrue(batch.done)
        told: List[object] = []
        batch.when_done(told.append)
        self.assertEqual(len(told), 1)
        self.assertIn("stopping", str(told[0]))
        again = Node(self.clock, "a", data_dir=self.dir)
        self.addCleanup(again.crash)
        self.assertEqual((again.store.get(b"before"), again.store.get(b"late")), (b"v", None))

    def test_nothing_changed_since_the_close_needs_no_commit(self) -> None:
        """A stale peer write changes nothing: it may be acknowledged as usual."""
        node = self.stopped_node()
        assert node.journal is not None
        self.assertIsNone(node.journal.durable())

    def test_a_peer_keeps_what_a_stopping_node_applied_but_never_committed(self) -> None:
        """n2 has stopped, but n1 still reaches it (its port is still attached
        here): n1's next write reaches n2's memory only, is not acknowledged,
        and reaches n2 after its restart."""
        root = scratch_dir(self)
        cluster = SimulatedCluster(2, data_root=root, heartbeat=1.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        done: List[object] = []
        n2.stop().addBoth(done.append)
        cluster.run()
        self.assertTrue(done)
        n1.store.set(b"late", b"v")
        cluster.advance(3)
        link = next(iter(n1.replication.links.values()))
        self.assertEqual(n2.store.get(b"late"), b"v")  # applied in memory
        self.assertEqual(len(link.outbox), 1)  # but never acknowledged
        cluster.crash("n2")
        cluster.start("n2")
        cluster.settle()
        self.assertEqual(cluster.nodes["n2"].store.get(b"late"), b"v")
        self.assertEqual(len(link.outbox), 0)
