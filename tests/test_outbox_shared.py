"""One outbox log shared by the links, a cursor per link (issue 16): a write is
queued once; each link's outbox means what it did when each link had its own
(what it still has to send or have acknowledged); a slow, cut, new or removed
link holds memory for itself alone."""

from __future__ import annotations

import platform
import random
from typing import Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import OutboxLog, entry_size
from distkv.front.commands import OK, Request
from distkv.store.entries import Entry, make_entry
from distkv.store.hlc import Version
from tests.clusters import settled_cluster

PYPY = platform.python_implementation() == "PyPy"


def entry(value: bytes, ms: int = 1) -> Entry:
    return make_entry(value, Version(ms, 0, "a"))


def linked(log: OutboxLog, window: int = 1 << 20) -> Outbox:
    """A link's outbox on ``log``, connected."""
    box = Outbox(log.max_bytes, window, log)
    box.rewind()
    return box


class SharedLogTests(SynchronousTestCase):
    def test_a_write_is_queued_once_and_dropped_when_every_link_acknowledged_it(self) -> None:
        """Two links send one write as one frame object; the log holds it until
        the second link's peer acknowledged it too."""
        log = OutboxLog(1 << 20)
        a, b = linked(log), linked(log)
        log.add(1, b"k", entry(b"v"))
        sent = [a.take_frames(), b.take_frames()]
        self.assertIs(sent[0][0], sent[1][0])
        self.assertEqual(len(log), 1)
        a.ack(1)
        self.assertEqual((a.bytes, len(a), a.drained()), (0, 0, True))
        self.assertEqual((len(log), len(b)), (1, 1))
        b.ack(1)
        self.assertEqual((len(log), b.bytes), (0, 0))

    def test_one_slow_link_holds_writes_for_itself_alone(self) -> None:
        """A slow peer's window holds its writes back; the fast link is drained and
        sends what comes next at once, while the slow one catches up batch by batch."""
        size = entry_size(b"k0", entry(b"x" * 100))
        log = OutboxLog(1 << 20)
        fast, slow = linked(log), linked(log, window=3 * size)
        for i in range(10):
            log.add(i + 1, b"k%d" % i, entry(b"x" * 100))
        self.assertEqual(len(fast.take()), 10)
        fast.ack(10)
        first = slow.take()
        self.assertEqual([seq for seq, _, _ in first], [1, 2, 3])
        self.assertEqual(slow.take(), [])  # its window is full
        self.assertEqual((fast.bytes, slow.bytes), (0, 10 * size))
        log.add(11, b"k10", entry(b"x" * 100))
        self.assertEqual([seq for seq, _, _ in fast.take()], [11])
        slow.ack(3)
        self.assertEqual([seq for seq, _, _ in slow.take()], [4, 5, 6])
        self.assertEqual(slow.bytes, 7 * size + entry_size(b"k10", entry(b"x" * 100)))
        slow.ack(6)
        self.assertEqual([seq for seq, _, _ in slow.take()], [7, 8, 9])
        slow.ack(9)
        slow.take()
        slow.ack(11)
        self.assertEqual(len(log), 11)  # the fast link's peer has not acknowledged 11
        fast.ack(11)
        self.assertEqual((len(log), slow.bytes), (0, 0))  # nothing held once both have it

    def test_a_link_past_the_bound_is_cut_over_alone_and_releases_its_hold(self) -> None:
        """A link whose peer never acknowledges passes the bound: it alone is cut
        over (told once, flagged for a resync, holding nothing), the other link
        keeps its writes, and the log keeps nothing for the cut link."""
        size = entry_size(b"k0", entry(b"12345678"))
        log = OutboxLog(10 * size)
        ok, stuck = linked(log), linked(log)
        told: List[bool] = []
        stuck.on_overflow = told.append
        ok.on_overflow = lambda already: self.fail("the link that keeps up was cut")
        for i in range(10):
            log.add(i + 1, b"k%d" % i, entry(b"12345678"))
            ok.take()
            ok.ack(i + 1)
        self.assertEqual((stuck.bytes, stuck.needs_resync), (10 * size, False))
        log.add(11, b"k10", entry(b"12345678"))
        self.assertEqual(told, [False])
        self.assertEqual((stuck.bytes, len(stuck), stuck.needs_resync, stuck.overflows),
                         (0, 0, True, 1))
        self.assertEqual((ok.bytes, ok.needs_resync),
                         (entry_size(b"k10", entry(b"12345678")), False))
        ok.take()
        ok.ack(11)
        self.assertEqual(len(log), 0)
        log.add(12, b"k11", entry(b"v"))  # writes after the cut reach it again
        self.assertEqual([seq for seq, _, _ in stuck.take()], [12])

    def test_a_link_added_while_writes_are_queued_gets_only_later_writes(self) -> None:
        """A new link's outbox starts empty (a round covers what came before):
        the writes queued for the others are not its to send, count or wait for."""
        log = OutboxLog(1 << 20)
        old = linked(log)
        for i in range(3):
            log.add(i + 1, b"k%d" % i, entry(b"v"))
        new = linked(log)
        self.assertEqual((new.bytes, len(new), new.last_seq, new.drained()), (0, 0, 0, True))
        self.assertEqual(new.take(), [])
        new.ack(3)  # a number it never got: ignored
        self.assertEqual(new.acked, 0)
        log.add(4, b"k3", entry(b"v"))
        self.assertEqual([seq for seq, _, _ in new.take()], [4])
        self.assertEqual(list(new.owed()), [(b"k3", 4)])
        new.ack(4)
        self.assertTrue(new.drained())
        self.assertEqual((len(old), len(log)), (4, 4))

    def test_a_link_removed_releases_its_hold_and_gets_no_more_writes(self) -> None:
        """Detaching a link (its member forgotten, or found to be this node)
        drops what the log held for it alone; later writes skip it."""
        log = OutboxLog(1 << 20)
        kept, gone = linked(log), linked(log)
        for i in range(5):
            log.add(i + 1, b"k%d" % i, entry(b"v"))
        kept.take()
        kept.ack(5)
        self.assertEqual(len(log), 5)  # held for the other link
        gone.detach()
        self.assertEqual((len(log), gone.bytes, len(gone)), (0, 0, 0))
        log.add(6, b"k5", entry(b"v"))
        self.assertEqual((gone.bytes, gone.take()), (0, []))
        self.assertEqual(log.cursors, [kept])

    def test_a_rewritten_key_is_superseded_for_every_link_whatever_it_acknowledged(
            self) -> None:
        """A key written again: a link that had the old write acknowledged and one
        that had not both hold (and send) only the newest, counted once."""
        log = OutboxLog(1 << 20)
        acked, behind = linked(log), linked(log)
        old, new = entry(b"old", 1), entry(b"newer", 2)
        log.add(1, b"k", old)
        acked.take()
        acked.ack(1)
        log.add(2, b"k", new)
        self.assertEqual((acked.bytes, behind.bytes), (entry_size(b"k", new),) * 2)
        self.assertEqual([(seq, e) for seq, _, e in acked.take()], [(2, new)])
        self.assertEqual([(seq, e) for seq, _, e in behind.take()], [(2, new)])
        self.assertEqual(behind.oldest(), new)

    def test_a_backlog_goes_first_and_to_its_link_alone(self) -> None:
        """Writes one link owes alone (read back after a restart) go before the
        log's, as a transaction, to that link only; one ack releases both."""
        log = OutboxLog(1 << 20)
        restarted, other = linked(log), linked(log)
        writes = ((b"a", entry(b"1")), (b"b", entry(b"2")))
        restarted.add_backlog(3, writes)
        log.add(5, b"c", entry(b"3"))
        self.assertEqual(restarted.take_frames()[0], wire.encode_transaction(3, writes))
        self.assertEqual([seq for seq, _, _ in other.take()], [5])
        self.assertEqual((len(restarted), sorted(restarted.owed())),
                         (3, [(b"a", 3), (b"b", 3), (b"c", 5)]))
        restarted.ack(5)
        self.assertTrue(restarted.drained())

    def test_a_hot_key_behind_a_lagging_link_keeps_the_log_bounded(self) -> None:
        """A key rewritten 20,000 times while one link lags leaves the log short
        (superseded items compacted away) and both links right."""
        log = OutboxLog(1 << 30)
        lagging, current = linked(log, window=1), linked(log)
        log.add(1, b"first", entry(b"v"))
        lagging.take()  # its window is now full
        for i in range(20_000):
            log.add(i + 2, b"hot", entry(b"%d" % i, ms=i + 2))
            if i % 7 == 0 and i < 19_990:
                current.take()
                current.ack(i + 2)
        self.assertLess(len(log), 3000)
        self.assertEqual([(k, e[0]) for _, k, e in current.take()], [(b"hot", b"19999")])
        lagging.ack(1)
        self.assertEqual([(k, e[0]) for _, k, e in lagging.take()], [(b"hot", b"19999")])
        self.assertEqual(lagging.bytes, entry_size(b"hot", entry(b"19999")))

    def test_values_a_rewrite_superseded_are_not_kept_behind_a_down_link(self) -> None:
        """A 64 KiB value written 200 times to one key while one link is down
        (the other takes and acknowledges each): the down link owes one entry,
        and the log keeps about one value alive, not every value it was
        written with (12 MiB, none of it counted in --outbox-bytes)."""
        if PYPY:
            self.skipTest("PyPy has no tracemalloc")
        import tracemalloc

        log = OutboxLog(64 << 20)
        up = linked(log)
        down = Outbox(log.max_bytes, log=log)  # a peer that is down
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(1, 201):
                log.add(i, b"hot", entry(bytes([i % 256]) * (64 << 10), ms=i))
                up.take_frames()
                up.ack(i)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(down.bytes, entry_size(b"hot", entry(b"x" * (64 << 10))))
        self.assertLess(held, 1 << 20)


class Model:
    """One link's outbox as each link had its own before the log was shared."""

    def __init__(self) -> None:
        self.pending: Dict[object, Tuple[int, int, int]] = {}  # key -> (seq, size, writes)
        self.sent = 0
        self.acked = 0
        self.last_seq = 0
        self.resync = False

    def add(self, seq: int, key: object, size: int, writes: int, bound: int) -> bool:
        self.pending.pop(key, None)
        self.pending[key] = (seq, size, writes)
        self.last_seq = seq
        if self.bytes() > bound:
            self.pending.clear()
            self.resync = True
            return True
        return False

    def bytes(self) -> int:
        return sum(size for _, size, _ in self.pending.values())

    def take(self) -> List[int]:
        out = sorted(seq for seq, _, _ in self.pending.values() if seq > self.sent)
        if out:
            self.sent = out[-1]
        return out

    def ack(self, seq: int) -> None:
        if seq <= self.acked or seq > self.last_seq:
            return
        self.acked = seq
        self.pending = {k: v for k, v in self.pending.items() if v[0] > seq}


class AgainstPerLinkOutboxTests(SynchronousTestCase):
    def test_every_link_sees_what_its_own_outbox_would_have_held(self) -> None:
        """Random writes, rewrites, transactions, acks, reconnects, cuts and links
        coming and going: each link's bytes, count, resync flag, what it sends
        and what it owes are those of a per-link outbox given the same writes."""
        for seed in range(60):
            rng = random.Random(seed)
            bound = rng.choice([600, 2000, 1 << 20])
            log = OutboxLog(bound)
            links: List[Tuple[Outbox, Model]] = []
            seq = 0
            for _ in range(300):
                roll = rng.random()
                if roll < 0.08 or not links:
                    links.append((linked(log), Model()))
                elif roll < 0.12:
                    box, _ = links.pop(rng.randrange(len(links)))
                    box.detach()
                elif roll < 0.6:
                    seq += 1
                    key = b"k%d" % rng.randrange(12)
                    item = entry(b"x" * rng.randrange(40), seq)
                    cut = [m.add(seq, key, entry_size(key, item), 1, bound) for _, m in links]
                    log.add(seq, key, item)
                    self.assertEqual([b.needs_resync for b, _ in links], [m.resync for _, m in links])
                    self.assertTrue(all(b.overflows >= c for (b, _), c in zip(links, cut)))
                elif roll < 0.66:
                    seq += 2
                    writes = [(b"g%d" % i, entry(b"y", seq)) for i in range(rng.randrange(1, 4))]
                    size = sum(entry_size(k, e) for k, e in writes)
                    for _, m in links:
                        m.add(seq, seq, size, len(writes), bound)
                    log.add_group(seq, writes)
                else:
                    box, model = rng.choice(links)
                    action = rng.random()
                    if action < 0.4:
                        self.assertEqual([s for s, _, _ in box.take()], model.take())
                    elif action < 0.85:
                        upto = rng.randrange(model.sent + 1)  # what its peer got
                        box.ack(upto)
                        model.ack(upto)
                    else:
                        box.disconnect()
                        box.rewind()
                        model.sent = model.acked
                for box, model in links:
                    self.assertEqual(box.bytes, model.bytes(), f"seed {seed}")
                    self.assertEqual(len(box), sum(w for _, _, w in model.pending.values()))
                    self.assertEqual(box.drained(), not model.pending)
                    self.assertEqual(sorted(s for _, s in box.owed()),
                                     sorted(s for s, _, w in model.pending.values()
                                            for _ in range(w)))
                self.assertLessEqual(len(log), 4 * 300)


class ClusterLogTests(SynchronousTestCase):
    def test_a_down_peer_holds_the_log_until_it_is_forgotten(self) -> None:
        """n3 down: n1's shared log keeps n1's writes for it (n2 has them all
        acknowledged); once n3 is forgotten its link detaches and the log is empty."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        cluster.crash("n3")
        cluster.settle()
        for i in range(20):
            n1.store.set(b"k%d" % i, b"v")
        cluster.settle()
        links = {link.remote.node: link for link in n1.replication.links.values()
                 if link.remote is not None}
        self.assertTrue(links["n2"].outbox.drained())
        self.assertEqual(len(links["n3"].outbox), 20)
        self.assertGreaterEqual(len(n1.replication.outbox_log), 20)
        self.assertEqual(n1.dispatcher.execute(Request(b"CLUSTER", (b"FORGET", b"n3"))), OK)
        cluster.settle()
        self.assertEqual(len(n1.replication.outbox_log), 0)
        self.assertEqual([link.outbox.bytes for link in n1.replication.links.values()], [0])
