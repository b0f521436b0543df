"""What an outbox vouches for (see :meth:`distkv.cluster.outbox.Outbox.vouched`):
the writes a peer's acknowledgement shows it holds, never one the link did
not send before the acknowledged write."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import OutboxLog
from tests.test_outbox_shared import entry, linked


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
        cuts = late.cuts
        log.add(3, b"c", entry(b"3"))
        self.assertEqual([item[0] for item in late.take()], [3])
        late.ack(3)
        self.assertEqual(late.acked, 3)
        self.assertEqual(late.vouched(), 0)
        self.assertFalse(late.resynced(cuts - 1, 0))  # a round from before the join
        self.assertEqual(late.vouched(), 0)
        self.assertTrue(late.resynced(cuts, 2))
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
        cuts = box.cuts
        log.add(3, b"c", entry(b"y" * 150))
        self.assertTrue(box.needs_resync)
        self.assertNotEqual(box.cuts, cuts)
        cuts = box.cuts
        log.add(4, b"d", entry(b"4"))
        self.assertEqual([item[0] for item in box.take()], [4])
        box.ack(4)
        self.assertEqual(box.vouched(), 1)
        self.assertTrue(box.resynced(cuts, 3))
        self.assertEqual(box.vouched(), 4)

    def test_a_second_cut_over_during_a_round_keeps_the_gap_open(self) -> None:
        """A round begins after the first cut-over; a second cut-over comes
        while it runs: that round cannot close the cut, since what the second
        one dropped came after it began."""
        log = OutboxLog(300)
        box = linked(log, window=100)
        log.add(1, b"a", entry(b"x" * 150))
        log.add(2, b"b", entry(b"y" * 150))
        self.assertTrue(box.needs_resync)
        round_began = box.cuts
        log.add(3, b"c", entry(b"x" * 150))
        log.add(4, b"d", entry(b"y" * 150))
        self.assertEqual(box.overflows, 2)
        self.assertFalse(box.resynced(round_began, 2))  # a cut overtook it: it counts for nothing
        self.assertEqual(box.vouched(), 0)
        log.add(5, b"e", entry(b"5"))
        box.take()
        box.ack(5)
        self.assertEqual(box.vouched(), 0)
        self.assertTrue(box.resynced(box.cuts, 4))
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
        self.assertTrue(box.resynced(box.cuts, 3))
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

    def test_a_write_superseded_on_the_wire_then_lost_with_its_connection_counts_after_a_round(
            self) -> None:
        """Write 1 of ``k`` was sent before 3 rewrote it; the connection drops
        and the peer never got it; on the next one 1 is not sent again (only
        its successor 3 is). So no acknowledgement vouches for it, whichever
        connection carried it: only a round that began after the drop."""
        log = OutboxLog(1 << 20)
        box = linked(log)
        log.add(1, b"k", entry(b"old"))
        log.add(2, b"other", entry(b"x"))
        self.assertEqual([item[0] for item in box.take()], [1, 2])
        log.add(3, b"k", entry(b"new", 2))
        box.disconnect()
        box.rewind()
        self.assertEqual([item[0] for item in box.take()], [2, 3])
        box.ack(2)
        self.assertEqual(box.vouched(), 0)
        box.ack(3)
        self.assertEqual(box.vouched(), 0)
        self.assertTrue(box.resynced(box.cuts, 3))
        self.assertEqual(box.vouched(), 3)

    def test_a_write_superseded_on_the_wire_that_arrives_leaves_nothing_behind(self) -> None:
        """The same with no drop: write 1 arrives before 2, so an
        acknowledgement of 2 vouches for both."""
        log = OutboxLog(1 << 20)
        box = linked(log)
        log.add(1, b"k", entry(b"old"))
        log.add(2, b"other", entry(b"x"))
        box.take()
        log.add(3, b"k", entry(b"new", 2))
        box.ack(2)
        self.assertEqual(box.vouched(), 2)
        box.disconnect()  # after the acknowledgement: nothing was lost
        self.assertEqual(box.vouched(), 2)

    def test_a_chain_of_unsent_rewrites_counts_once_the_last_is_acked(self) -> None:
        """Write 1 of ``k`` is superseded unsent by 3, and 3 unsent by 5; the
        link sends 2, 4 (other keys) and 5. An acknowledgement of 4 is past 3
        but the peer never got 3: nothing from 1 on counts until 5 is acked."""
        log = OutboxLog(1 << 20)
        box = Outbox(log.max_bytes, 1 << 20, log)
        log.add(1, b"k", entry(b"1"))
        log.add(2, b"a", entry(b"2"))
        log.add(3, b"k", entry(b"3", 2))
        log.add(4, b"b", entry(b"4"))
        log.add(5, b"k", entry(b"5", 3))
        box.rewind()
        self.assertEqual([item[0] for item in box.take()], [2, 4, 5])
        box.ack(4)
        self.assertEqual(box.vouched(), 0)
        box.ack(5)
        self.assertEqual(box.vouched(), 5)
        self.assertEqual((len(box._holes), box._hole_ends), (0, {}))

    def test_a_hot_key_rewritten_every_turn_leaves_the_acknowledged_writes_vouched(self) -> None:
        """A key written twice per reactor turn, the peer acknowledging each
        turn's writes a turn later: each hole ends at a write the next
        acknowledgement reaches, so what is vouched for keeps up with what
        is acknowledged (a write of another key made in turn ``n`` counts
        once the acknowledgement of turn ``n + 1`` comes)."""
        log = OutboxLog(1 << 20)
        box = linked(log)
        seq = 0
        last_turn = 0
        for turn in range(200):
            if last_turn:
                box.ack(last_turn)
            seq += 1
            log.add(seq, b"hot", entry(b"a%d" % seq, seq))
            seq += 1
            log.add(seq, b"hot", entry(b"b%d" % seq, seq))
            seq += 1
            log.add(seq, b"cold%d" % turn, entry(b"c", seq))
            box.take()
            last_turn = seq
        self.assertEqual(box.acked, seq - 3)
        self.assertGreaterEqual(box.vouched(), seq - 6)
        self.assertLessEqual(len(box._holes), 2)

    def test_a_peer_back_as_a_new_incarnation_is_vouched_for_only_after_a_round(self) -> None:
        """Writes 1-2 acknowledged; the peer comes back empty (``lost``): it is
        vouched for nothing, whatever it acknowledged before or acknowledges
        of the resent writes, until a round that began after it came back
        completes."""
        log = OutboxLog(1 << 20)
        box = linked(log)
        log.add(1, b"a", entry(b"1"))
        log.add(2, b"b", entry(b"2"))
        box.take()
        box.ack(2)
        box.resynced(box.cuts, 2)
        self.assertEqual(box.vouched(), 2)
        before = box.cuts
        box.lost()
        self.assertEqual(box.vouched(), 0)
        log.add(3, b"c", entry(b"3"))
        box.rewind()
        box.take()
        box.ack(3)
        self.assertEqual(box.vouched(), 0)
        self.assertFalse(box.resynced(before, 2))  # a round from before it came back
        self.assertTrue(box.resynced(box.cuts, 3))
        self.assertEqual(box.vouched(), 3)

    def test_a_covered_hole_keeps_its_key_chain(self) -> None:
        """Unsent: 2 (``k``) is superseded by 3, then 1 (``a``) by 4, whose hole
        covers the first; then 3 by 5. The link sends 4 alone (a one-byte
        window) and the peer acknowledges it: of ``k`` it holds nothing, so
        write 2 must not count; it does once 5 is acknowledged."""
        log = OutboxLog(1 << 20)
        box = Outbox(log.max_bytes, 1, log)
        log.add(1, b"a", entry(b"1"))
        log.add(2, b"k", entry(b"2"))
        log.add(3, b"k", entry(b"3", 2))
        log.add(4, b"a", entry(b"4", 2))
        log.add(5, b"k", entry(b"5", 3))
        box.rewind()
        self.assertEqual([item[0] for item in box.take()], [4])
        box.ack(4)
        self.assertLess(box.vouched(), 2)
        self.assertEqual([item[0] for item in box.take()], [5])
        box.ack(5)
        self.assertEqual(box.vouched(), 5)

    def test_holes_stay_few_while_the_peer_is_away(self) -> None:
        """No link to the peer; 20,000 keys are each written twice (the first
        superseded unsent): the outbox overflows again and again, and each
        cut drops the holes it covers, so they do not pile up."""
        log = OutboxLog(4096)
        box = Outbox(log.max_bytes, 1 << 20, log)
        seq = 0
        for i in range(20000):
            seq += 1
            log.add(seq, b"key%d" % i, entry(b"a"))
            seq += 1
            log.add(seq, b"key%d" % i, entry(b"b", 2))
        self.assertGreater(box.overflows, 100)
        self.assertLess(len(box._holes) + len(box._hole_ends), 200)

    def test_a_hot_key_a_window_behind_is_held_back_until_a_round(self) -> None:
        """Each turn writes a hot key and three others; the window lets three
        out and the peer acknowledges them: the hot key's newest write is
        superseded before it is ever sent, so its hole's end moves on for
        ever. ``held_back`` says so (the link then runs a round), and that
        round's end vouches for every write made before it began."""
        log = OutboxLog(1 << 30)
        box = linked(log, window=3 * 69)
        seq = 0
        for turn in range(400):
            seq += 1
            log.add(seq, b"hot", entry(b"h%d" % (turn % 10), seq))
            for j in range(3):
                seq += 1
                log.add(seq, b"c%d-%d" % (j, turn), entry(b"c", seq))
            taken = box.take()
            if taken:
                box.ack(taken[-1][0])
        self.assertLess(box.vouched(), box.acked - 100)
        self.assertTrue(box.held_back())
        began = seq
        self.assertTrue(box.resynced(box.cuts, began))
        self.assertGreaterEqual(box.vouched(), began)
