"""What an outbox vouches for (see :meth:`distkv.cluster.outbox.Outbox.vouched`):
the writes a peer's acknowledgement shows it holds, never one the link did
not send before the acknowledged write."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import OutboxLog
from distkv.store.entries import Entry, make_entry
from distkv.store.hlc import Version


def entry(value: bytes, ms: int = 1) -> Entry:
    return make_entry(value, Version(ms, 0, "a"))


def linked(log: OutboxLog, window: int = 1 << 20) -> Outbox:
    box = Outbox(log.max_bytes, window, log)
    box.rewind()
    return box


class VouchedTests(SynchronousTestCase):
    def test_acknowledged_writes_sent_in_order_are_vouched_for(self) -> None:
        log = OutboxLog(1 << 20)
        box = linked(log)
        for seq in (1, 2, 3):
            log.add(seq, b"k%d" % seq, entry(b"v"))
        box.take()
        box.ack(2)
        self.assertEqual(box.vouched(), 2)
        box.ack(3)
        self.assertEqual(box.vouched(), 3)

    def test_a_link_that_joined_after_writes_vouches_for_none_of_them_until_a_resync(self) -> None:
        """Writes 1-2 went to another link only; this one joins, sends 3 and
        has it acknowledged: that shows nothing of 1-2. A resync round that
        began after the join closes the gap; one that began before cannot."""
        log = OutboxLog(1 << 20)
        linked(log)
        log.add(1, b"a", entry(b"1"))
        log.add(2, b"b", entry(b"2"))
        late = linked(log)
        gaps = late.gaps
        log.add(3, b"c", entry(b"3"))
        self.assertEqual([item[0] for item in late.take()], [3])
        late.ack(3)
        self.assertEqual(late.acked, 3)
        self.assertEqual(late.vouched(), 0)
        self.assertFalse(late.resynced(gaps - 1, 0))  # a round from before the join
        self.assertEqual(late.vouched(), 0)
        self.assertTrue(late.resynced(gaps, 2))
        self.assertEqual(late.vouched(), 3)

    def test_a_cut_over_link_vouches_only_for_what_it_had_acknowledged(self) -> None:
        """Write 1 is acknowledged; 2-3 pass the bound and are cut over; 4 is
        sent and acknowledged: the link vouches for 1 alone until a round
        that began after the cut completes."""
        log = OutboxLog(300)
        box = linked(log, window=100)
        log.add(1, b"a", entry(b"1"))
        box.take()
        box.ack(1)
        log.add(2, b"b", entry(b"x" * 150))
        gaps = box.gaps
        log.add(3, b"c", entry(b"y" * 150))
        self.assertTrue(box.needs_resync)
        self.assertNotEqual(box.gaps, gaps)
        gaps = box.gaps
        log.add(4, b"d", entry(b"4"))
        self.assertEqual([item[0] for item in box.take()], [4])
        box.ack(4)
        self.assertEqual(box.vouched(), 1)
        self.assertTrue(box.resynced(gaps, 3))
        self.assertEqual(box.vouched(), 4)

    def test_a_second_cut_over_during_a_round_keeps_the_gap_open(self) -> None:
        """A round begins after the first cut-over; a second cut-over comes
        while it runs (the gap looks the same): that round cannot close the
        gap, since what the second cut dropped came after it began."""
        log = OutboxLog(300)
        box = linked(log, window=100)
        log.add(1, b"a", entry(b"x" * 150))
        log.add(2, b"b", entry(b"y" * 150))
        self.assertTrue(box.needs_resync)
        round_began = box.gaps
        log.add(3, b"c", entry(b"x" * 150))
        log.add(4, b"d", entry(b"y" * 150))
        self.assertEqual(box.overflows, 2)
        box.resynced(round_began, 2)
        self.assertEqual(box.vouched(), 2)  # what the round covered, not 3 or 4
        log.add(5, b"e", entry(b"5"))
        box.take()
        box.ack(5)
        self.assertEqual(box.vouched(), 2)
        self.assertTrue(box.resynced(box.gaps, 4))
        self.assertEqual(box.vouched(), 5)

    def test_a_completed_round_vouches_for_every_write_before_it_began(self) -> None:
        """Writes 1-3 are cut over and nothing is acknowledged after them: a
        round that began after write 3 vouches for 1-3 once it completes."""
        log = OutboxLog(300)
        box = linked(log, window=100)
        log.add(1, b"a", entry(b"x" * 150))
        log.add(2, b"b", entry(b"y" * 150))
        log.add(3, b"c", entry(b"3"))
        self.assertTrue(box.needs_resync)
        self.assertEqual(box.vouched(), 0)
        self.assertTrue(box.resynced(box.gaps, 3))
        self.assertEqual(box.vouched(), 3)

    def test_a_write_superseded_before_it_was_sent_counts_once_its_successor_is_acked(self) -> None:
        """Write 1 of ``k`` waits (the link is down); 2 is another key; 3
        rewrites ``k``, so 1 is never sent. An acknowledgement of 2 vouches
        for nothing from 1 on; one of 3 vouches for all three."""
        log = OutboxLog(1 << 20)
        box = Outbox(log.max_bytes, 1 << 20, log)
        log.add(1, b"k", entry(b"old"))
        log.add(2, b"other", entry(b"x"))
        log.add(3, b"k", entry(b"new", 2))
        box.rewind()
        self.assertEqual([item[0] for item in box.take()], [2, 3])
        box.ack(2)
        self.assertEqual(box.vouched(), 0)
        box.ack(3)
        self.assertEqual(box.vouched(), 3)

    def test_a_write_superseded_after_it_was_sent_leaves_no_gap(self) -> None:
        """Write 1 of ``k`` was sent before 3 rewrote it: the peer applies it
        before 2, so an acknowledgement of 2 vouches for 1 and 2."""
        log = OutboxLog(1 << 20)
        box = linked(log)
        log.add(1, b"k", entry(b"old"))
        log.add(2, b"other", entry(b"x"))
        box.take()
        log.add(3, b"k", entry(b"new", 2))
        box.ack(2)
        self.assertEqual(box.vouched(), 2)
