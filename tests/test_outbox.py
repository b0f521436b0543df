"""The per-peer outbox: resend from the first unacknowledged write, bounded by bytes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import ENTRY_OVERHEAD
from distkv.store.entries import Entry, make_entry
from distkv.store.hlc import Version


def entry(value: bytes, ms: int = 1) -> Entry:
    return make_entry(value, Version(ms, 0, "a"))


def push(box: Outbox, key: bytes, item: Entry) -> None:
    """Queue a write under the next local sequence number, as the store numbers them."""
    box.add(box.last_seq + 1, key, item)


def keys(batch: list) -> list:  # type: ignore[type-arg]
    return [key for _, key, _ in batch]


class OutboxTests(SynchronousTestCase):
    def test_writes_are_sent_in_order_and_released_by_acks(self) -> None:
        """take() yields queued writes in order; ack(seq) releases everything up to seq."""
        box = Outbox(1 << 20)
        box.rewind()
        for i in range(5):
            push(box, b"k%d" % i, entry(b"v"))
        batch = box.take()
        self.assertEqual(keys(batch), [b"k0", b"k1", b"k2", b"k3", b"k4"])
        self.assertEqual(box.take(), [])
        box.ack(batch[2][0])
        self.assertEqual(len(box), 2)
        box.ack(batch[4][0])
        self.assertTrue(box.drained())
        self.assertEqual(box.bytes, 0)

    def test_reconnect_resends_from_the_first_unacknowledged_write(self) -> None:
        """After a lost connection, a new one resends exactly the unacknowledged writes."""
        box = Outbox(1 << 20)
        box.rewind()
        for i in range(4):
            push(box, b"k%d" % i, entry(b"v"))
        batch = box.take()
        box.ack(batch[1][0])
        box.disconnect()
        push(box, b"k9", entry(b"v"))  # written while the peer is away
        box.rewind()
        self.assertEqual(keys(box.take()), [b"k2", b"k3", b"k9"])

    def test_rewritten_key_keeps_only_its_newest_entry(self) -> None:
        """A key written again before the peer acknowledged it is sent once, newest value."""
        box = Outbox(1 << 20)
        for i in range(100):
            push(box, b"hot", entry(b"%d" % i, ms=i))
        box.rewind()
        batch = box.take()
        self.assertEqual(len(batch), 1)
        self.assertEqual(batch[0][2][0], b"99")

    def test_overflow_empties_the_outbox_and_flags_a_resync(self) -> None:
        """Passing the byte bound drops the pending writes and marks the peer for resync."""
        box = Outbox(max_bytes=10 * (ENTRY_OVERHEAD + 10))
        for i in range(9):
            push(box, b"k%d" % i, entry(b"12345678"))
        self.assertFalse(box.needs_resync)
        push(box, b"big", entry(b"x" * 200))
        self.assertTrue(box.needs_resync)
        self.assertEqual((len(box), box.bytes, box.overflows), (0, 0, 1))

    def test_window_limits_bytes_in_flight_until_acked(self) -> None:
        """No more than the window is sent ahead of acknowledgements."""
        size = ENTRY_OVERHEAD + 2 + 100
        box = Outbox(1 << 20, window=3 * size)
        box.rewind()
        for i in range(10):
            push(box, b"k%d" % i, entry(b"x" * 100))
        first = box.take()
        self.assertEqual(len(first), 3)
        self.assertEqual(box.take(), [])
        box.ack(first[-1][0])
        self.assertEqual(keys(box.take()), [b"k3", b"k4", b"k5"])

    def test_hot_key_under_a_full_window_keeps_the_queue_bounded(self) -> None:
        """Rewriting one key a million times while the window is full keeps memory bounded."""
        box = Outbox(1 << 30, window=1)
        box.rewind()
        push(box, b"first", entry(b"v"))
        box.take()  # window now full
        for i in range(20_000):
            push(box, b"hot", entry(b"%d" % i, ms=i))
        self.assertLess(len(box._log), 3000)
        box.ack(1)
        batch = box.take()
        self.assertEqual([(k, e[0]) for _, k, e in batch], [(b"hot", b"19999")])
