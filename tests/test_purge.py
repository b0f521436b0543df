"""Tombstone purging: only once every node has the delete, and never a resurrection."""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.stability import TOP, Stability
from distkv.store.entries import ZERO, make_entry, version_of
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.scratch import scratch_dir


def v(ms: int, node: str = "x") -> Version:
    return Version(ms, 0, node)


class StabilityTests(SynchronousTestCase):
    def test_horizon_is_the_least_that_every_member_has_vouched_for(self) -> None:
        s = Stability()
        s.heard("b", floor=v(50), low=v(40))
        s.heard("c", floor=v(30), low=v(70))
        self.assertEqual(s.low(["b", "c"]), v(30))
        self.assertEqual(s.horizon(["b", "c"]), v(30))
        s.heard("c", floor=v(90), low=v(70))
        self.assertEqual(s.horizon(["b", "c"]), v(40))

    def test_a_silent_or_unknown_member_holds_everything_back(self) -> None:
        s = Stability()
        s.heard("b", floor=v(50), low=v(50))
        self.assertEqual(s.horizon(["b", "c"]), ZERO)
        self.assertEqual(s.horizon(None), ZERO)
        self.assertEqual(s.low([]), TOP)

    def test_a_forgotten_node_no_longer_counts(self) -> None:
        s = Stability()
        s.heard("old", floor=v(10), low=v(10))
        s.forget("old")
        self.assertEqual(s.low(["old"]), ZERO)


class PurgeClusterTests(SynchronousTestCase):
    OPTIONS = {"heartbeat": 1.0, "tombstone_grace": 5.0, "sync_interval": 10.0}

    def make(self, size: int = 3, **options: object) -> SimulatedCluster:
        settings = dict(self.OPTIONS)
        settings.update(options)
        cluster = SimulatedCluster(size, **settings)  # type: ignore[arg-type]
        cluster.settle()
        self.addCleanup(cluster.stop)
        return cluster

    def tombstones(self, cluster: SimulatedCluster) -> dict:  # type: ignore[type-arg]
        return {node_id: node.store.tombstones for node_id, node in cluster.nodes.items()}

    def test_tombstones_go_once_every_node_has_them(self) -> None:
        """A delete known everywhere, past the grace period, is purged on every node."""
        cluster = self.make()
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.nodes["n2"].store.set(b"keep", b"v")
        cluster.settle()
        cluster.nodes["n2"].store.delete(b"k")
        cluster.run()
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1, "n3": 1})
        cluster.advance(20)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        self.assertTrue(cluster.converged())
        self.assertEqual(cluster.nodes["n3"].store.snapshot().keys(), {b"keep"})

    def test_a_node_that_is_down_holds_every_purge_back(self) -> None:
        """Until the missing node has the delete, nobody forgets it; then everybody does."""
        cluster = self.make()
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.settle()
        cluster.crash("n3")
        cluster.nodes["n1"].store.delete(b"k")
        cluster.advance(120)
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1})
        cluster.start("n3")
        cluster.advance(30)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        self.assertTrue(all(b"k" not in node.store for node in cluster.nodes.values()))

    def test_a_node_that_reaches_everyone_still_waits_for_the_others_to_have_it(self) -> None:
        """n1 hears from everyone, but n3 cannot hear from n2: n2's delete is not
        stable until n3 has it too, so n1 keeps the tombstone meanwhile (no periodic
        anti-entropy here to carry the delete to n3 through n1)."""
        cluster = self.make(sync_interval=10_000.0)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.settle()
        cluster.net.block("n2", "n3")
        cluster.nodes["n2"].store.delete(b"k")
        cluster.advance(60)
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1, "n3": 0})
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"v")
        cluster.net.unblock("n2", "n3")
        cluster.advance(30)
        # n2's outbox has delivered the delete to n3; n1 and n3 merged it from
        # n2, so each vouches for it to the others only after a round of its own.
        self.assertEqual(self.tombstones(cluster), {"n1": 1, "n2": 1, "n3": 1})
        for node in cluster.nodes.values():
            for peer_link in node.replication.links.values():
                peer_link.mark_resync("test: a round after the heal")
        cluster.advance(30)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        self.assertTrue(all(b"k" not in node.store for node in cluster.nodes.values()))

    def test_an_old_value_arriving_after_the_purge_is_dropped(self) -> None:
        """A write older than the stable horizon for a key held nowhere is a purged
        delete's leftover: it is not stored, so it cannot resurrect the key."""
        cluster = self.make()
        old = make_entry(b"zombie", cluster.nodes["n1"].clock.now())
        cluster.nodes["n1"].store.apply(b"k", old)
        cluster.settle()
        cluster.nodes["n1"].store.delete(b"k")
        cluster.advance(20)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        n2 = cluster.nodes["n2"].store
        self.assertFalse(n2.apply(b"k", old))
        self.assertFalse(n2.apply(b"k", make_entry(None, version_of(old))))
        self.assertNotIn(b"k", n2)
        self.assertTrue(n2.apply(b"fresh", make_entry(b"v", cluster.nodes["n1"].clock.now())))

    def test_a_peer_returning_with_data_from_before_a_purge_cannot_resurrect(self) -> None:
        """n3 comes back with an old copy of its data dir, holding a key that was
        deleted and purged since: the key stays deleted everywhere, n3 included."""
        root = scratch_dir(self)
        cluster = self.make(data_root=root)
        cluster.nodes["n1"].store.set(b"k", b"v1")
        cluster.nodes["n1"].store.set(b"other", b"v")
        cluster.settle()
        cluster.crash("n3")
        shutil.copytree(os.path.join(root, "n3"), os.path.join(root, "backup"))
        cluster.start("n3")
        cluster.settle()
        cluster.nodes["n2"].store.delete(b"k")
        cluster.advance(30)
        self.assertEqual(self.tombstones(cluster), {"n1": 0, "n2": 0, "n3": 0})
        cluster.crash("n3")
        shutil.rmtree(os.path.join(root, "n3"))
        shutil.move(os.path.join(root, "backup"), os.path.join(root, "n3"))
        n3 = cluster.start("n3")
        self.assertEqual(n3.store.get(b"k"), b"v1")  # the stale copy, before any round
        cluster.settle()
        self.assertTrue(cluster.converged())
        for node in cluster.nodes.values():
            self.assertNotIn(b"k", node.store)
            self.assertIn(b"other", node.store)

    def test_purged_tombstones_leave_the_disk_too(self) -> None:
        root = scratch_dir(self)
        cluster = self.make(data_root=root)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.settle()
        cluster.nodes["n1"].store.delete(b"k")
        cluster.advance(20)
        cluster.crash("n2")
        n2 = cluster.start("n2")
        self.assertEqual((n2.store.tombstones, len(n2.store)), (0, 0))
