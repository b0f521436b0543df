"""The stable horizon survives a restart: a purged delete cannot come back
from an old copy of a data dir, even when the whole cluster restarts."""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.antientropy import Round, answer_offer
from distkv.disk.datafile import Disk
from distkv.store.entries import ZERO, make_entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster
from tests.scratch import DataDirCase, scratch_dir


def loaded_store(directory: str) -> Store:
    """A store filled from ``directory`` as a restarting node fills it."""
    store = Store(HybridClock("a", lambda: 1_000_000))
    disk = Disk(directory)
    try:
        disk.load(store, None)
    finally:
        disk.close()
    return store


class DiskHorizonTests(DataDirCase):
    def test_a_horizon_that_purged_something_is_committed_with_the_purge(self) -> None:
        """The purge's commit carries the horizon; a restart (after kill -9)
        starts from it, not from zero."""
        node = self.node()
        node.store.set(b"k", b"v")
        node.store.delete(b"k")
        self.clock.advance(0)
        horizon = Version(int(self.clock.seconds() * 1000) + 5, 0, "")
        self.assertEqual(node.store.purge(horizon), 1)
        self.clock.advance(0)  # the commit of the purge
        node.crash()
        restarted = self.node()
        self.assertEqual(restarted.store.horizon, horizon)
        self.assertEqual(restarted.store.tombstones, 0)

    def test_a_horizon_that_purged_nothing_is_saved_within_a_second(self) -> None:
        """The horizon rises on every heartbeat, mostly purging nothing: it is
        saved without a commit, as the clock's mark is."""
        node = self.node()
        node.store.set(b"k", b"v")
        self.clock.advance(0)
        horizon = Version(int(self.clock.seconds() * 1000) + 5, 3, "b")
        self.assertEqual(node.store.purge(horizon), 0)
        self.clock.advance(1.0)
        node.crash()
        self.assertEqual(self.node().store.horizon, horizon)

    def test_the_horizon_is_kept_across_snapshots_and_clean_stops(self) -> None:
        node = self.node()
        journal = node.journal
        assert journal is not None
        journal.compact_bytes = 500
        horizon = Version(int(self.clock.seconds() * 1000), 0, "")
        node.store.purge(horizon)
        for i in range(200):
            node.store.set(b"k%d" % i, b"v" * 20)
            self.clock.advance(0)
        self.assertGreater(journal.snapshots, 0)
        stopped = []
        node.stop().addBoth(stopped.append)
        self.clock.advance(5)
        self.assertTrue(stopped)
        self.assertEqual(loaded_store(self.dir).horizon, horizon)

    def test_the_saved_horizon_never_goes_back(self) -> None:
        """Whatever order the marks are saved in, the highest horizon stays."""
        disk = Disk(self.dir)
        high, low = Version(500, 2, "b"), Version(400, 0, "")
        disk.commit([], [], [], 10, 0, horizon=high)
        disk.save_marks(10, 0, horizon=low)
        disk.commit([], [], [], 10, 0, horizon=low)
        disk.close()
        self.assertEqual(loaded_store(self.dir).horizon, high)

    def test_a_data_dir_without_a_saved_horizon_loads_at_zero(self) -> None:
        disk = Disk(self.dir)
        disk.commit([(1, b"k", make_entry(b"v", Version(5, 0, "a")))], [], [], 5, 1)
        disk.close()
        store = loaded_store(self.dir)
        self.assertEqual((store.horizon, store.get(b"k")), (ZERO, b"v"))


class StaleReplicaTests(SynchronousTestCase):
    """Store-level: a replica that missed a delete and its purge meets a peer
    that restarted from its data dir."""

    def test_a_restarted_peer_refuses_the_dead_key_and_the_stale_side_drops_it(self) -> None:
        directory = scratch_dir(self)
        wall = [1_000_000]
        peer = Store(HybridClock("p", lambda: wall[0]))
        stale = Store(HybridClock("s", lambda: wall[0]))
        old = peer.set(b"k", b"old")
        stale.apply(b"k", old)
        peer.set(b"other", b"v")
        stale.apply(b"other", peer.entry(b"other"))  # type: ignore[arg-type]
        wall[0] += 10
        peer.delete(b"k")
        wall[0] += 10
        horizon = Version(wall[0], 0, "")
        self.assertEqual(peer.purge(horizon), 1)
        # The peer's data dir, as its journal leaves it; then the peer restarts.
        disk = Disk(directory)
        disk.commit([(0, b"other", peer.entry(b"other"))], [], [], wall[0], 0,  # type: ignore[list-item]
                    horizon=peer.horizon)
        disk.close()
        restarted = loaded_store(directory)
        self.assertEqual(restarted.horizon, horizon)
        # Its outbox or a round from the stale side may bring the old value: refused.
        self.assertFalse(restarted.apply(b"k", old))
        self.assertNotIn(b"k", restarted)
        # The stale side's own round to it: the answer's E mark carries the
        # horizon, and the stale side drops the key instead of sending it.
        round_ = Round(stale, 1)
        offer = wire.FrameDecoder(1 << 24).feed(round_.offer())[0]
        answer = wire.FrameDecoder(1 << 24).feed(answer_offer(restarted, offer))  # type: ignore[arg-type]
        mark = answer[-1]
        assert isinstance(mark, wire.RoundMark)
        self.assertEqual(mark.horizon, horizon)
        for frame in answer[:-1]:
            round_.key_list(frame)  # type: ignore[arg-type]
        sent = wire.FrameDecoder(1 << 24).feed(round_.keys_done(mark.horizon))
        self.assertEqual([f for f in sent if isinstance(f, wire.Write)], [])
        self.assertEqual(round_.dropped, 1)
        self.assertNotIn(b"k", stale)
        self.assertIsNone(stale.entry(b"k"))
        self.assertEqual(stale.snapshot(), restarted.snapshot())

    def test_a_tombstone_the_peer_purged_is_neither_sent_nor_dropped(self) -> None:
        """A replica holding the tombstone a peer has purged (below the peer's
        horizon) does not send it, and keeps it until its own horizon passes
        it: dropping it let nodes below that horizon pass it back and forth
        for ever (simulator seed 400335)."""
        wall = [1_000_000]
        peer = Store(HybridClock("p", lambda: wall[0]))
        holder = Store(HybridClock("s", lambda: wall[0]))
        peer.set(b"k", b"old")
        wall[0] += 10
        peer.delete(b"k")
        tombstone = peer.entry(b"k")
        assert tombstone is not None and tombstone[0] is None
        holder.apply(b"k", tombstone)
        wall[0] += 10
        horizon = Version(wall[0], 0, "")
        self.assertEqual(peer.purge(horizon), 1)
        round_ = Round(holder, 1)
        offer = wire.FrameDecoder(1 << 24).feed(round_.offer())[0]
        answer = wire.FrameDecoder(1 << 24).feed(answer_offer(peer, offer))  # type: ignore[arg-type]
        mark = answer[-1]
        assert isinstance(mark, wire.RoundMark)
        for frame in answer[:-1]:
            round_.key_list(frame)  # type: ignore[arg-type]
        sent = wire.FrameDecoder(1 << 24).feed(round_.keys_done(mark.horizon))
        self.assertEqual([f for f in sent if isinstance(f, wire.Write)], [])
        self.assertEqual(round_.dropped, 0)
        self.assertEqual(holder.entry(b"k"), tombstone)
        self.assertEqual((holder.tombstones, holder.stale_dropped), (1, 0))
        self.assertEqual(holder.purge(horizon), 1)
        self.assertEqual(holder.snapshot(), peer.snapshot())


class WholeClusterRestartTests(SynchronousTestCase):
    OPTIONS = {"heartbeat": 1.0, "tombstone_grace": 5.0, "sync_interval": 10.0}

    def test_an_old_copy_of_a_data_dir_cannot_resurrect_a_purged_delete(self) -> None:
        """k is written, then deleted and purged everywhere; every node restarts,
        n3 from a copy of its data dir taken before the delete (so it holds k
        alive): k stays absent on every node, n3 included, for good."""
        root = scratch_dir(self)
        cluster = SimulatedCluster(3, data_root=root, **self.OPTIONS)  # type: ignore[arg-type]
        self.addCleanup(lambda: cluster.stop())
        cluster.settle()
        cluster.nodes["n1"].store.set(b"k", b"v1")
        cluster.nodes["n1"].store.set(b"other", b"v")
        cluster.settle()
        # The older copy of n3's data dir, holding k alive.
        cluster.crash("n3")
        backup = os.path.join(root, "n3-backup")
        shutil.copytree(os.path.join(root, "n3"), backup)
        cluster.start("n3")
        cluster.settle()
        written = cluster.nodes["n1"].store.entry(b"k")
        assert written is not None
        cluster.nodes["n2"].store.delete(b"k")
        cluster.advance(30)
        for node in cluster.nodes.values():
            self.assertIsNone(node.store.entry(b"k"))
            self.assertGreater(node.store.horizon, Version(written[1], written[2], written[3]))
        # Everyone restarts; n3 from the old copy.
        for name in ("n1", "n2", "n3"):
            cluster.crash(name)
        cluster.start("n1")
        cluster.start("n2")
        n3 = cluster.start("n3", data_dir=backup)
        self.assertEqual(n3.store.get(b"k"), b"v1")  # stale, before any round
        for node in cluster.nodes.values():
            if node is not n3:
                self.assertGreater(node.store.horizon, Version(written[1], written[2], written[3]))
        cluster.settle()
        # n3 itself dropped k, in its own round: a peer's E mark carried the
        # peer's horizon, and n3 held k below it where the peer had nothing.
        self.assertGreater(n3.store.stale_dropped, 0)
        for _ in range(4):  # and it stays gone, round after round
            self.assertTrue(cluster.converged())
            for name, node in cluster.nodes.items():
                self.assertIsNone(node.store.entry(b"k"), name)
                self.assertEqual(node.store.get(b"other"), b"v", name)
            cluster.advance(15)
        # n3's drop was committed: its next restart does not bring k back.
        cluster.crash("n3")
        self.assertIsNone(cluster.start("n3", data_dir=backup).store.entry(b"k"))
