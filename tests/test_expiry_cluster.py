"""Expiry across nodes, in-process on a fake clock.

A key's expiry travels with its versioned write; each node judges it by its
own clock and reclaims an expired value locally, as the tombstone at the
value's own version, sending nothing. These tests show a key set with EX
expiring on every node, EXPIRE and PERSIST replicating as writes (the later
version wins), a partitioned node catching up, anti-entropy never bringing an
expired key (or an older value of it) back, expiry kept across a crash and
restart, transactions carrying expiries, and the active cycle reclaiming
without a single replicated write.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.node import Node
from distkv.store.digest import Digest
from distkv.store.entries import (
    EXPIRING_FIELDS,
    Entry,
    expires_of,
    is_expiring,
    make_entry,
    version_of,
)
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.respclient import ask, connect
from tests.scratch import scratch_dir


def say(node: Node, *request: bytes) -> bytes:
    proto, transport = connect(node)
    return ask(proto, transport, *request)


def now_ms(cluster: SimulatedCluster) -> int:
    return int(cluster.net.seconds() * 1000)


def reclaimed_snapshots(cluster: SimulatedCluster) -> List[dict]:  # type: ignore[type-arg]
    """Every node's entries once each has reclaimed what its clock says expired."""
    for node in cluster.nodes.values():
        node.store.reclaim_expired()
    return [node.store.snapshot() for node in cluster.nodes.values()]


class Recorder:
    """Every change a store tells its listeners of (local and replicated writes)."""

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.heard: List[Tuple[str, bytes, int]] = []
        for node_id, node in cluster.nodes.items():
            node.store.subscribe(
                lambda key, entry, seq, node_id=node_id: self.heard.append((node_id, key, seq)))


class StoreTests(SynchronousTestCase):
    def test_an_expiry_is_held_in_digits_every_entry_shares(self) -> None:
        """Every key with an expiry, whatever its TTL and however it was
        written (here, or by a peer, whose writes arrive by W frame), holds
        it in digit objects it shares with every other such key: no int
        object of its own. The absolute expiry reads back exactly, at the
        digits' edges and past the last year the top digit is shared."""
        wall = [1_700_000_000_000]
        store = Store(HybridClock("a", lambda: wall[0]))
        entries = []
        for i in range(300):
            wall[0] += 7 * i
            entries.append(store.set(b"k%d" % i, b"v", expires=wall[0] + 1000 + 13 * i * i))
        frame = wire.encode_write(1, b"r", make_entry(b"v", Version(wall[0] + 7, 0, "b"),
                                                      wall[0] + 12_345))
        entries.append(wire.decode_body(frame[4:]).entry)  # type: ignore[union-attr]
        self.assertEqual(len({expires_of(entry) for entry in entries}), len(entries))
        held: dict = {}  # type: ignore[type-arg]
        for entry in entries:
            self.assertEqual(len(entry), EXPIRING_FIELDS)
            self.assertEqual(version_of(entry), entry[-3:])
            for digit in entry[1:4]:
                self.assertIs(held.setdefault(digit, digit), digit)  # one object per digit
        self.assertEqual(expires_of(entries[-1]), wall[0] + 12_345)
        for expires in (1, (1 << 14) - 1, 1 << 14, (1 << 28) - 1, 1 << 28, (1 << 42) - 1,
                        1 << 42, 1 << 62, (1 << 64) - 1, 1_700_000_000_000):
            entry = make_entry(b"v", Version(5, 0, "a"), expires)
            self.assertEqual((expires_of(entry), version_of(entry)), (expires, (5, 0, "a")))
        self.assertEqual(make_entry(b"v", Version(5, 0, "a"), 0), (b"v", 5, 0, "a"))

    def test_an_expired_value_becomes_the_tombstone_at_its_version(self) -> None:
        """At its expiry a value reads as missing, and the store holds the
        tombstone at the same version: no new version, no listener told."""
        wall = [1000]
        store = Store(HybridClock("a", lambda: wall[0]))
        heard: List[bytes] = []
        store.subscribe(lambda key, entry, seq: heard.append(key))
        entry = store.set(b"k", b"v", expires=1500)
        self.assertEqual((expires_of(entry), store.get(b"k"), len(store)), (1500, b"v", 1))
        wall[0] = 1500
        self.assertIsNone(store.get(b"k"))
        self.assertNotIn(b"k", store)
        self.assertEqual(store.entry(b"k"), make_entry(None, version_of(entry)))
        self.assertEqual((len(store), store.tombstones, store.reclaimed, heard), (0, 1, 1, [b"k"]))

    def test_an_expired_write_from_a_peer_is_stored_as_its_tombstone(self) -> None:
        """A replicated write already expired by this node's clock replaces an
        older value (which must not live on) and is kept as a tombstone."""
        store = Store(HybridClock("a", lambda: 5000))
        store.apply(b"k", make_entry(b"old", Version(100, 0, "b")))
        self.assertTrue(store.apply(b"k", make_entry(b"new", Version(200, 0, "b"), expires=4000)))
        self.assertEqual(store.entry(b"k"), make_entry(None, Version(200, 0, "b")))
        self.assertIsNone(store.get(b"k"))

    def test_the_digest_sees_a_difference_in_expiry_alone(self) -> None:
        """Two replicas holding one value at one version, differing only in its
        expiry (or in having one), have different digests; the tie is settled
        the same way on both (:func:`newer`)."""
        version = Version(100, 0, "a")
        digests = []
        for expires in (0, 9000, 9001):
            data = {b"k": make_entry(b"v", version, expires)}
            digests.append(Digest(data).encode())
        self.assertEqual(len(set(digests)), 3)

    def test_expiring_writes_round_trip_through_w_and_t_frames(self) -> None:
        """W frames (peers and the data file) and T frames carry the expiry;
        a write without one is the same bytes as before."""
        writes: List[Tuple[bytes, Entry]] = [
            (b"a", make_entry(b"1", Version(5, 0, "n1"), 123456)),
            (b"b", make_entry(None, Version(5, 1, "n1"))),
            (b"c", make_entry(b"", Version(6, 0, "n-2"))),
        ]
        for key, entry in writes:
            frame = wire.encode_write(3, key, entry)
            self.assertEqual(wire.decode_body(frame[4:]), wire.Write(3, key, entry))
            self.assertEqual(list(wire.iter_writes(frame)), [(3, key, entry)])
        plain = wire.encode_write(3, b"c", writes[2][1])
        self.assertNotIn(bytes([2]), plain[25:26])  # flags byte: 0
        frame = wire.encode_transaction(9, writes)
        self.assertEqual(len(frame) - 4, wire.transaction_size(writes))
        self.assertEqual(wire.decode_body(frame[4:]), wire.Transaction(9, tuple(writes)))

    def test_a_frame_with_a_zero_expiry_or_unknown_flags_is_refused(self) -> None:
        """An expiry of 0 (which no write carries) and flags beyond 1 and 2 break
        the protocol."""
        frame = bytearray(wire.encode_write(3, b"a", make_entry(b"1", Version(5, 0, "n1"), 77)))
        flags_at = 4 + 1 + 8 + 8 + 4
        node_end = flags_at + 1 + 2 + 2
        zero = bytes(frame[:node_end]) + bytes(8) + bytes(frame[node_end + 8:])
        with self.assertRaises(wire.WireError):
            wire.decode_body(zero[4:])
        frame[flags_at] = 3
        with self.assertRaises(wire.WireError):
            wire.decode_body(bytes(frame[4:]))


class ClusterExpiryTests(SynchronousTestCase):
    def test_a_key_set_with_ex_expires_on_every_node(self) -> None:
        """SET k v EX 10 through one node: every node serves it, with its TTL,
        until ten seconds pass, then none does (GET, EXISTS, DBSIZE, KEYS)."""
        cluster = settled_cluster(self, 3)
        self.assertEqual(say(cluster.nodes["n1"], b"SET", b"k", b"v", b"EX", b"10"), b"+OK\r\n")
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", b"k"), b"$1\r\nv\r\n")
            self.assertEqual(say(node, b"TTL", b"k"), b":10\r\n")
        cluster.advance(9.5)
        self.assertTrue(all(node.store.get(b"k") == b"v" for node in cluster.nodes.values()))
        cluster.advance(0.5)
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", b"k"), b"$-1\r\n")
            self.assertEqual(say(node, b"EXISTS", b"k"), b":0\r\n")
            self.assertEqual(say(node, b"DBSIZE"), b":0\r\n")
            self.assertEqual(say(node, b"KEYS", b"*"), b"*0\r\n")
        snapshots = reclaimed_snapshots(cluster)
        self.assertTrue(all(snap == snapshots[0] for snap in snapshots))

    def test_expire_made_on_one_node_reaches_the_others(self) -> None:
        """EXPIRE on n2 of a key written on n1 is a new write: n3 gets the TTL,
        and the key goes everywhere at that time."""
        cluster = settled_cluster(self, 3)
        say(cluster.nodes["n1"], b"SET", b"k", b"v")
        cluster.run()
        self.assertEqual(say(cluster.nodes["n2"], b"EXPIRE", b"k", b"5"), b":1\r\n")
        cluster.run()
        self.assertEqual(say(cluster.nodes["n3"], b"TTL", b"k"), b":5\r\n")
        self.assertEqual(say(cluster.nodes["n1"], b"PEXPIRETIME", b"k"),
                         b":%d\r\n" % (now_ms(cluster) + 5000))
        cluster.advance(5)
        self.assertTrue(all(node.store.get(b"k") is None for node in cluster.nodes.values()))

    def test_persist_wins_by_version(self) -> None:
        """Partitioned, n1 sets a shorter expiry on k and n2 later removes it:
        once healed the later write (PERSIST's) holds everywhere and k outlives
        the expiry. On j the order is reversed (PERSIST, then a later EXPIRE)
        and the expiry holds everywhere."""
        cluster = settled_cluster(self, 2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        say(n1, b"SET", b"k", b"v", b"EX", b"100")
        say(n1, b"SET", b"j", b"v", b"EX", b"100")
        cluster.run()
        cluster.net.block("n1", "n2")
        cluster.advance(1)
        self.assertEqual(say(n1, b"EXPIRE", b"k", b"5"), b":1\r\n")
        self.assertEqual(say(n2, b"PERSIST", b"j"), b":1\r\n")
        cluster.advance(1)
        self.assertEqual(say(n2, b"PERSIST", b"k"), b":1\r\n")  # the later write of k
        self.assertEqual(say(n1, b"EXPIRE", b"j", b"5"), b":1\r\n")  # the later write of j
        cluster.net.unblock("n1", "n2")
        cluster.advance(10)
        for node in (n1, n2):
            self.assertEqual(say(node, b"GET", b"k"), b"$1\r\nv\r\n")
            self.assertEqual(say(node, b"TTL", b"k"), b":-1\r\n")
            self.assertEqual(say(node, b"GET", b"j"), b"$-1\r\n")
        self.assertEqual(n1.store.snapshot(), n2.store.snapshot())

    def test_a_partitioned_node_that_missed_an_expire_converges(self) -> None:
        """n3, cut off while EXPIRE is made on n1, gets the expiry once healed
        and drops the key at the same time as the others."""
        cluster = settled_cluster(self, 3)
        say(cluster.nodes["n1"], b"SET", b"k", b"v")
        cluster.run()
        for other in ("n1", "n2"):
            cluster.net.block("n3", other)
        say(cluster.nodes["n1"], b"EXPIRE", b"k", b"60")
        expiry = now_ms(cluster) + 60_000
        cluster.advance(5)
        self.assertEqual(say(cluster.nodes["n3"], b"TTL", b"k"), b":-1\r\n")
        cluster.net.heal()
        cluster.settle()
        for node in cluster.nodes.values():
            self.assertEqual(node.store.expires(b"k"), expiry)
        self.assertTrue(cluster.converged())
        cluster.advance(30)
        self.assertTrue(all(node.store.get(b"k") is None for node in cluster.nodes.values()))

    def test_an_expired_key_is_not_resurrected_by_anti_entropy(self) -> None:
        """n3 holds an old value of k (no expiry) while n1 writes k with PX 1000
        and n1, n2 reclaim it once expired: after healing and anti-entropy
        rounds k is missing on every node, and the nodes converge."""
        cluster = settled_cluster(self, 3, sync_interval=5.0)
        say(cluster.nodes["n1"], b"SET", b"k", b"old")
        cluster.run()
        for other in ("n1", "n2"):
            cluster.net.block("n3", other)
        say(cluster.nodes["n1"], b"SET", b"k", b"new", b"PX", b"1000")
        cluster.advance(3)  # n1 and n2 reclaim (active cycle): tombstones, nothing sent
        self.assertEqual(cluster.nodes["n1"].store.entry(b"k")[0], None)  # type: ignore[index]
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"old")
        cluster.net.heal()
        cluster.settle()
        cluster.advance(20)  # several anti-entropy rounds
        for node in cluster.nodes.values():
            self.assertEqual(say(node, b"GET", b"k"), b"$-1\r\n")
            self.assertEqual(say(node, b"EXISTS", b"k"), b":0\r\n")
        snapshots = reclaimed_snapshots(cluster)
        self.assertTrue(all(snap == snapshots[0] for snap in snapshots))

    def test_a_lagging_replica_holding_the_expired_value_settles_with_rounds(self) -> None:
        """One node holds the expired value unreclaimed, another the tombstone:
        a round reclaims it first, so digests agree and nothing comes back."""
        cluster = settled_cluster(self, 2, sync_interval=5.0)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        n1.store.set(b"k", b"v", expires=now_ms(cluster) + 500)
        cluster.run()
        n1.active_expiry.stop()
        n2.active_expiry.stop()
        cluster.advance(1)
        n1.store.reclaim_expired()
        self.assertTrue(is_expiring(n2.store.entry(b"k")))  # type: ignore[arg-type]
        cluster.advance(12)
        self.assertEqual(n1.store.snapshot(), n2.store.snapshot())
        self.assertIsNone(n2.store.entry(b"k")[0])  # type: ignore[index]
        n1.active_expiry.start()
        n2.active_expiry.start()

    def test_expiry_survives_a_crash_and_restart(self) -> None:
        """With a data dir, a committed write's expiry is read back after a
        crash: the TTL goes on counting down, and a key that expired while the
        node was down is missing when it comes back."""
        cluster = SimulatedCluster(1, data_root=scratch_dir(self))
        node = cluster.nodes["n1"]
        node.store.set(b"long", b"v", expires=now_ms(cluster) + 100_000)
        node.store.set(b"short", b"v", expires=now_ms(cluster) + 5_000)
        node.store.set(b"plain", b"v")
        assert node.journal is not None
        node.journal.commit()
        cluster.crash("n1")
        cluster.advance(10)
        again = cluster.start("n1")
        self.addCleanup(cluster.stop)
        self.assertEqual(say(again, b"TTL", b"long"), b":90\r\n")
        self.assertEqual(say(again, b"GET", b"short"), b"$-1\r\n")
        self.assertEqual(say(again, b"TTL", b"plain"), b":-1\r\n")
        self.assertEqual(say(again, b"DBSIZE"), b":2\r\n")

    def test_set_and_expire_inside_multi_replicate_with_their_expiry(self) -> None:
        """MULTI / SET EX / EXPIRE / EXEC on n1: the T frame carries both
        expiries, so n2 reports the same TTLs."""
        cluster = settled_cluster(self, 2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        say(n1, b"SET", b"j", b"v")
        cluster.run()
        proto, transport = connect(n1)
        ask(proto, transport, b"MULTI")
        ask(proto, transport, b"SET", b"k", b"v", b"EX", b"100")
        ask(proto, transport, b"EXPIRE", b"j", b"50")
        self.assertEqual(ask(proto, transport, b"EXEC"), b"*2\r\n+OK\r\n:1\r\n")
        cluster.run()
        self.assertEqual(say(n2, b"TTL", b"k"), b":100\r\n")
        self.assertEqual(say(n2, b"TTL", b"j"), b":50\r\n")

    def test_active_expiry_reclaims_without_sending_anything(self) -> None:
        """500 keys written with PX through n1 reach every node; once expired,
        each node's active cycle reclaims them all with no one reading, and no
        store hears a single write (no local delete, nothing replicated):
        the outboxes gain nothing."""
        cluster = settled_cluster(self, 3)
        n1 = cluster.nodes["n1"]
        for i in range(500):
            n1.store.set(b"k%d" % i, b"v", expires=now_ms(cluster) + 1000)
        n1.store.set(b"kept", b"v")
        cluster.run()
        recorder = Recorder(cluster)
        queued = {node_id: [link.outbox.last_seq for link in node.replication.links.values()]
                  for node_id, node in cluster.nodes.items()}
        cluster.advance(2)
        for node_id, node in cluster.nodes.items():
            self.assertEqual(node.store.reclaimed, 500)
            self.assertEqual(len(node.store), 1)
            self.assertEqual(node.store.with_expiry, 0)
            self.assertEqual([link.outbox.last_seq for link in node.replication.links.values()],
                             queued[node_id])
        self.assertEqual(recorder.heard, [])
        self.assertTrue(cluster.converged())

    def test_reclaimed_tombstones_are_purged_below_the_horizon(self) -> None:
        """A reclaimed key's tombstone is purged like a delete's once every
        node has the write, so nothing of the key stays anywhere."""
        cluster = settled_cluster(self, 3, heartbeat=1.0, tombstone_grace=5.0, sync_interval=10.0)
        cluster.nodes["n1"].store.set(b"k", b"v", expires=now_ms(cluster) + 1000)
        cluster.run()
        cluster.advance(30)
        for node in cluster.nodes.values():
            self.assertIsNone(node.store.entry(b"k"))
