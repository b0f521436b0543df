"""Two values under one version are found and repaired.

A version should name one write, but a node that restarts with its clock
behind (a memory-only node under the same ``--node-id``, or an older copy of
its data dir) can stamp a version it already used, for another value. Every
replica breaks such a tie the same way (:func:`distkv.store.store.newer`); the
digest hashes each value's CRC-32 as well, so anti-entropy sees the difference,
and a round sends the entries of a bucket that differs only by values.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.antientropy import Round, answer_offer
from distkv.store.digest import Digest, bucket_of, entry_hash
from distkv.store.entries import Entry, make_entry, newer
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster

V = Version(1_000_000, 0, "n1")


def store(node: str) -> Store:
    return Store(HybridClock(node, lambda: 1_000_500))


def run_round(pusher: Store, peer: Store, number: int = 1) -> Round:
    """One anti-entropy round from ``pusher`` to ``peer``, as the two protocol
    ends run it, with every frame through the codec."""
    decode = wire.FrameDecoder(1 << 24).feed
    round_ = Round(pusher, number)
    (offer,) = decode(round_.offer())
    answer = decode(answer_offer(peer, offer))  # type: ignore[arg-type]
    mark = answer.pop()
    assert isinstance(mark, wire.RoundMark)
    for frame in answer:
        round_.key_list(frame)  # type: ignore[arg-type]
    for frame in decode(round_.keys_done(mark.horizon)):
        if isinstance(frame, wire.Write):
            peer.apply(frame.key, frame.entry)
    return round_


def same_bucket_keys(count: int, bucket: int = 7) -> List[bytes]:
    keys = []
    i = 0
    while len(keys) < count:
        key = b"key%d" % i
        if bucket_of(key) == bucket:
            keys.append(key)
        i += 1
    return keys


class TieTests(SynchronousTestCase):
    def test_one_version_two_values_is_broken_the_same_way_everywhere(self) -> None:
        """The higher value wins, whichever arrives first; a value beats a tombstone."""
        low, high, gone = make_entry(b"a", V), make_entry(b"b", V), make_entry(None, V)
        self.assertTrue(newer(high, low))
        self.assertFalse(newer(low, high))
        self.assertFalse(newer(low, low))
        self.assertTrue(newer(low, gone))
        for order in ([low, high, gone], [gone, high, low], [high, low, gone]):
            replica = store("r")
            for entry in order:
                replica.apply(b"k", entry)
            self.assertEqual(replica.entry(b"k"), high)

    def test_the_digest_tells_two_values_of_one_version_apart(self) -> None:
        a, b = store("a"), store("b")
        a.apply(b"k", make_entry(b"one", V))
        b.apply(b"k", make_entry(b"two", V))
        self.assertEqual(a.digest.differing(b.digest.encode()), [bucket_of(b"k")])
        self.assertNotEqual(entry_hash(b"k", V, b"one"), entry_hash(b"k", V, b"two"))
        # A tombstone, an empty value and a bare version are three different things
        # to the hash, and a tombstone hashes as a bare version does.
        self.assertEqual(
            len({entry_hash(b"k", V, None), entry_hash(b"k", V, b""), entry_hash(b"k", V, b"\0")}), 3
        )
        self.assertEqual(entry_hash(b"k", V), entry_hash(b"k", V, None))

    def test_rounds_both_ways_repair_a_tie(self) -> None:
        """Whichever side holds the winning value, a round each way converges."""
        for first, second in ((b"one", b"two"), (b"two", b"one")):
            a, b = store("a"), store("b")
            for i in range(50):  # agreement everywhere else
                entry = a.set(b"x%d" % i, b"v")
                b.apply(b"x%d" % i, entry)
            a.apply(b"k", make_entry(first, V))
            b.apply(b"k", make_entry(second, V))
            run_round(a, b)
            run_round(b, a, 2)
            self.assertEqual(a.snapshot(), b.snapshot())
            self.assertEqual(a.get(b"k"), b"two")
            self.assertEqual(a.digest.differing(b.digest.encode()), [])

    def test_a_tie_between_a_value_and_a_tombstone_is_repaired(self) -> None:
        a, b = store("a"), store("b")
        a.apply(b"k", make_entry(None, V))
        b.apply(b"k", make_entry(b"v", V))
        run_round(a, b)
        run_round(b, a, 2)
        self.assertEqual((a.get(b"k"), b.get(b"k")), (b"v", b"v"))

    def test_only_a_bucket_that_differs_by_values_alone_sends_its_ties(self) -> None:
        """Where some key's version differs, only the newer entries go, as
        before; a tie is sent once nothing but values can explain the bucket."""
        keys = same_bucket_keys(6)
        a, b = store("a"), store("b")
        for key in keys[1:]:
            entry = a.set(key, b"same")
            b.apply(key, entry)
        a.apply(keys[0], make_entry(b"mine", V))
        b.apply(keys[0], make_entry(b"theirs", V))
        newest = a.set(keys[1], b"newer")
        first = run_round(a, b)
        self.assertEqual(first.sent, 1)
        self.assertEqual(b.entry(keys[1]), newest)
        second = run_round(a, b, 2)
        self.assertEqual(second.sent, len(keys))  # the bucket's ties: which one differs is unknown
        self.assertEqual(b.get(keys[0]), b"theirs")  # the higher value stays
        third = run_round(b, a, 3)
        self.assertEqual(third.sent, len(keys))
        self.assertEqual(a.snapshot(), b.snapshot())
        self.assertEqual(run_round(a, b, 4).sent, 0)

    def test_a_bucket_that_changed_since_the_offer_sends_no_ties(self) -> None:
        """The peer's key list shows the same versions because a write landed
        here after our offer, not because values differ: nothing extra is sent."""
        a, b = store("a"), store("b")
        for i in range(20):
            entry = a.set(b"x%d" % i, b"v")
            b.apply(b"x%d" % i, entry)
        written = b.set(b"x3", b"newer")
        decode = wire.FrameDecoder(1 << 24).feed
        round_ = Round(a, 1)
        (offer,) = decode(round_.offer())
        answer = decode(answer_offer(b, offer))  # type: ignore[arg-type]
        mark = answer.pop()
        for frame in answer:
            round_.key_list(frame)  # type: ignore[arg-type]
        a.apply(b"x3", written)  # b's own push arrives meanwhile
        sent = [f for f in decode(round_.keys_done(mark.horizon)) if isinstance(f, wire.Write)]  # type: ignore[union-attr]
        self.assertEqual(sent, [])

    def test_a_digest_over_entries_hashes_the_values(self) -> None:
        entries: Dict[bytes, Entry] = {b"k": make_entry(b"x", V)}
        self.assertNotEqual(Digest(entries).hashes, Digest({b"k": V}).hashes)
        self.assertEqual(Digest({b"k": make_entry(None, V)}).hashes, Digest({b"k": V}).hashes)


class ReusedVersionClusterTests(SynchronousTestCase):
    def test_a_node_restarted_with_its_clock_behind_cannot_leave_two_values_behind(self) -> None:
        """n1 writes k=b, which reaches n2 only, and restarts memory-only under
        the same id, cut off, with its clock back at the moment of that write;
        once it serves it writes k=a, stamped with the very same version, which
        reaches n3 only. Every node ends with one value (the higher, b)."""
        options = {"heartbeat": 1.0, "sync_interval": 10.0, "loading_wait": 5.0}
        cluster = SimulatedCluster(3, **options)  # type: ignore[arg-type]
        self.addCleanup(cluster.stop)
        cluster.settle()
        cluster.net.block("n1", "n3")
        cluster.run()
        written = cluster.nodes["n1"].store.set(b"k", b"b")
        cluster.run()
        self.assertEqual(cluster.nodes["n2"].store.entry(b"k"), written)
        cluster.crash("n1")
        cluster.net.block("n1", "n2")
        cluster.advance(1)
        # Back as n1, memory only, unreachable; its clock reads the write's ms
        # once it serves (after loading_wait), which is when it stamps.
        skew = written[1] - int((cluster.net.seconds() + 5.0) * 1000)
        cluster.advance(0.0)
        n1 = cluster.start("n1", data_dir=None, skew_ms=skew)
        cluster.net.advance(5.0)
        cluster.run()
        self.assertFalse(n1.loading)
        for _ in range(written[2]):  # the counter the first write had reached
            n1.store.set(b"pad", b"x")
        again = n1.store.set(b"k", b"a")
        self.assertEqual(again[1:], written[1:])  # one version, two values
        cluster.net.unblock("n1", "n3")
        cluster.settle()
        cluster.net.heal()
        cluster.settle()
        cluster.advance(30)
        values: Dict[str, Tuple[object, ...]] = {
            name: tuple(node.store.entry(b"k") or ()) for name, node in cluster.nodes.items()
        }
        self.assertEqual(set(values.values()), {written}, values)
        self.assertTrue(cluster.converged())


class TieBoundTests(SynchronousTestCase):
    def test_ties_in_many_buckets_go_a_few_buckets_per_round(self) -> None:
        """A peer whose every bucket differs by values alone (say, one that hashes
        differently) gets at most TIE_BUCKETS buckets' entries per round; real
        ties in more buckets are all settled over enough rounds, even by
        rounds one way only, and whichever side holds the winners."""
        from distkv.cluster.antientropy import TIE_BUCKETS

        keys = [b"t%d" % i for i in range(400)]
        per_bucket: Dict[int, int] = {}
        for key in keys:
            per_bucket[bucket_of(key)] = per_bucket.get(bucket_of(key), 0) + 1
        self.assertGreater(len(per_bucket), 4 * TIE_BUCKETS)
        most = sum(sorted(per_bucket.values())[-TIE_BUCKETS:])
        for parity in (0, 1):
            a, b = store("a"), store("b")
            for i, key in enumerate(keys):
                # Half the ties won by each side, in one and the same bucket order.
                ours, theirs = (b"win", b"lose") if i % 2 == parity else (b"lose", b"win")
                a.apply(key, make_entry(ours, V))
                b.apply(key, make_entry(theirs, V))
            rounds = 0
            while a.digest.differing(b.digest.encode()):
                rounds += 1
                self.assertLess(rounds, 4 * len(per_bucket) // TIE_BUCKETS)
                self.assertLessEqual(run_round(a, b, rounds).sent, most)
                run_round(b, a, rounds)
            self.assertEqual({a.get(key) for key in keys}, {b"win"})
            self.assertEqual(a.snapshot(), b.snapshot())
        # One way only: the pushing side's winners all reach the peer in time.
        a, b = store("a"), store("b")
        for key in keys:
            a.apply(key, make_entry(b"win", V))
            b.apply(key, make_entry(b"lose", V))
        for number in range(1, 4 * len(per_bucket) // TIE_BUCKETS):
            run_round(a, b, number)
        self.assertEqual({b.get(key) for key in keys}, {b"win"})
