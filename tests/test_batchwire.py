"""Batched write frames (issue 16, protocol 6): runs of W frames travel as one B
frame, read back in one pass to the very writes, checked as a W frame is, within
every node's frame limit; outbox bytes count a write once, link up or down."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import batchwire, wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import entry_size
from distkv.front import report
from distkv.node import Node
from distkv.store.entries import Entry, expiring_entry, is_counter, make_entry
from distkv.store.hlc import Version
from tests.clusters import settled_cluster
from tests.test_wire import writes as write_frames


def entry(value: bytes, ms: int = 5) -> Entry:
    return make_entry(value, Version(ms, 1, "n1"))


def every_kind() -> list:  # type: ignore[type-arg]
    """(seq, key, entry) of a plain write, a tombstone, an expiring value and a counter."""
    node = Node(Clock(), "n1")
    node.store.incr(b"c", 5)
    counter = node.store.entry(b"c")
    assert counter is not None and is_counter(counter)
    return [(1, b"a", entry(b"1")), (2, b"b", make_entry(None, Version(5, 2, "n1"))),
            (3, b"e", expiring_entry(b"v", 9_000, 5, 3, "n1")), (4, b"c", counter)]


class BatchFrameTests(SynchronousTestCase):
    def test_a_run_of_writes_is_one_frame_that_decodes_to_them_in_order(self) -> None:
        """Four writes of every kind go as one B frame; it decodes to the same
        keys and entries, in order, acknowledged as the last one's seq."""
        items = every_kind()
        frames = batchwire.batched([wire.encode_write(*item) for item in items])
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0][4:5], b"B")
        [batch] = wire.FrameDecoder(1 << 20).feed(frames[0])
        self.assertEqual(batch, batchwire.Batch(4, [(key, e) for _, key, e in items]))

    @given(st.lists(write_frames, min_size=2, max_size=30))
    def test_any_writes_batch_to_what_their_own_frames_decode_to(self, frames: list) -> None:  # type: ignore[type-arg]
        """Whatever the writes, their batch carries exactly what their W frames do."""
        encoded = [wire.encode_write(*f) for f in frames]
        self.assertEqual(batchwire.batched(encoded, only_writes=True), batchwire.batched(encoded))
        [batch] = wire.FrameDecoder(1 << 20).feed(b"".join(batchwire.batched(encoded)))
        assert isinstance(batch, batchwire.Batch)
        self.assertEqual(batch.seq, frames[-1].seq)
        self.assertEqual(batch.writes, [(f.key, f.entry) for f in frames])

    def test_transactions_and_lone_writes_stay_as_they_are(self) -> None:
        """A T frame ends a run; a run of one stays a W frame; order is kept."""
        w = [wire.encode_write(i, b"k%d" % i, entry(b"v")) for i in range(1, 5)]
        t = wire.encode_transaction(5, [(b"x", entry(b"1")), (b"y", entry(b"2"))])
        out = batchwire.batched([w[0], t, w[1], w[2], t, w[3]])
        self.assertEqual([f[4:5] for f in out], [b"W", b"T", b"B", b"T", b"W"])
        self.assertEqual(out[0], w[0])
        self.assertEqual(out[-1], w[3])
        decoded = wire.FrameDecoder(1 << 20).feed(b"".join(out))
        self.assertEqual(decoded[2], batchwire.Batch(3, [(b"k2", entry(b"v")), (b"k3", entry(b"v"))]))

    def test_every_batch_fits_the_smallest_frame_limit(self) -> None:
        """Batches stop at BATCH_BYTES, below the frame limit of a node with the
        smallest --max-request; a write larger than a batch goes alone."""
        big = wire.encode_write(1, b"big", entry(b"x" * batchwire.BATCH_BYTES))
        small = [wire.encode_write(i, b"k%d" % i, entry(b"v" * 1000)) for i in range(2, 600)]
        out = batchwire.batched([*small[:300], big, *small[300:]])
        self.assertEqual(batchwire.batched([*small[:300], big, *small[300:]], True), out)
        self.assertIn(big, out)
        limit = wire.max_frame(1)
        for frame in out:
            if frame is not big:
                self.assertLessEqual(len(frame) - 4, batchwire.BATCH_BYTES)
                self.assertLessEqual(len(frame) - 4, limit)
        self.assertGreater(len(out), 4)  # the runs were split
        decoded = wire.FrameDecoder(wire.max_frame(batchwire.BATCH_BYTES + 10)).feed(b"".join(out))
        keys = [key for f in decoded for key, _ in (f.writes if isinstance(f, batchwire.Batch)
                                                    else [(f.key, f.entry)])]  # type: ignore[union-attr]
        self.assertEqual(keys, [b"k%d" % i for i in range(2, 302)] + [b"big"]
                         + [b"k%d" % i for i in range(302, 600)])

    def test_malformed_batches_are_refused(self) -> None:
        """A batch is refused unless it holds whole, well-formed W frames and nothing else."""
        one = wire.encode_write(1, b"k", entry(b"v"))
        gone = wire.encode_write(2, b"k", make_entry(None, Version(5, 1, "n1")))

        def body(*parts: bytes) -> bytes:
            return b"B" + b"".join(parts)

        flags_at = 4 + 1 + 8 + 8 + 4
        bad_flags = one[:flags_at] + b"\x09" + one[flags_at + 1:]
        with_value = gone[:flags_at] + b"\x01" + one[flags_at + 1:]  # a tombstone with a value
        bad_node = wire.encode_write(1, b"k", make_entry(b"v", Version(5, 1, "bad/id")))
        future = wire.encode_write(wire.MAX_SEQ, b"k", entry(b"v"))
        too_far = future[:5] + (wire.MAX_SEQ + 1).to_bytes(8, "big") + future[13:]
        ack = wire.encode_ack(3)
        for bad in (body(), body(one, one[:-1]), body(one, b"\x00"), body(one, ack),
                    body(one, bad_flags), body(one, with_value), body(one, bad_node),
                    body(one, too_far), body(one[:-1] + b"\x00\x00\x00\x00\x00\x00")):
            with self.assertRaises(wire.WireError, msg=repr(bad)):
                wire.decode_body(bad)


class BatchedReplicationTests(SynchronousTestCase):
    def test_writes_of_one_turn_reach_every_peer_in_one_frame(self) -> None:
        """A hundred writes made in one reactor turn leave n1 as one B frame per
        link; both peers apply them all and acknowledge the last."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        links = [link for link in n1.replication.links.values() if not link.is_self]
        sent: list = []  # type: ignore[type-arg]
        for link in links:
            proto = link._protocol
            assert proto is not None
            real = proto.send

            def send(data: bytes, real=real) -> None:  # type: ignore[no-untyped-def]
                sent.append(data)
                real(data)

            proto.send = send  # type: ignore[method-assign]
        for i in range(100):
            n1.store.set(b"key:%d" % i, b"v%d" % i)
        cluster.run()
        self.assertEqual(len(sent), 2)
        for data in sent:
            [frame] = wire.FrameDecoder(1 << 20).feed(data)
            assert isinstance(frame, batchwire.Batch)
            self.assertEqual(len(frame.writes), 100)
        for link in links:
            self.assertEqual(link.outbox.acked, n1.store.seq)
            self.assertTrue(link.outbox.drained())
        self.assertTrue(cluster.converged())
        self.assertEqual(cluster.nodes["n3"].store.get(b"key:99"), b"v99")


class OutboxBytesTests(SynchronousTestCase):
    def test_outbox_bytes_are_the_same_with_the_link_up_or_down(self) -> None:
        """The shared frame is counted by no outbox: a connected and a
        disconnected outbox given the same writes report the same bytes."""
        up, down = Outbox(1 << 20), Outbox(1 << 20)
        up.rewind()
        total = 0
        for i in range(1, 50):
            key, item = b"k%d" % i, entry(b"v" * i)
            frame = wire.encode_write(i, key, item)
            up.add(i, key, item, frame)
            down.add(i, key, item, frame)
            total += entry_size(key, item)
        self.assertEqual(up.bytes, total)
        self.assertEqual(down.bytes, total)

    def test_status_reports_each_links_bytes_once_per_write(self) -> None:
        """A write n1's two connected links both hold (one shared frame) counts
        as the entry's own bytes on each, as STATUS shows them, until acked."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        n1.store.set(b"k", b"value")
        links = [link for link in n1.replication.links.values() if not link.is_self]
        held = n1.store.entry(b"k")
        assert held is not None
        self.assertTrue(all(link.up for link in links))
        self.assertEqual([link.outbox.bytes for link in links], [entry_size(b"k", held)] * 2)
        peer_lines = [line for line in report.status_lines(n1) if "outbox_bytes=" in line]
        self.assertEqual(len(peer_lines), 2)
        for line in peer_lines:
            self.assertIn(f"outbox_bytes={entry_size(b'k', held)} ", line)
        cluster.run()
        self.assertEqual([link.outbox.bytes for link in links], [0, 0])
