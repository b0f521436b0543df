"""The replicated-write path's economies (issue 16): each write encoded once for
every peer link, merged writes compared without a Version per write, node ids
read off the wire checked once; every guarantee as before."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import entry_size
from distkv.store.entries import Entry, make_entry
from distkv.store.hlc import Version
from tests.clusters import settled_cluster


def entry(value: bytes, ms: int = 1) -> Entry:
    return make_entry(value, Version(ms, 0, "a"))


class OutboxFrameTests(SynchronousTestCase):
    def test_a_frame_given_while_connected_is_sent_as_is_and_not_counted(self) -> None:
        """A write queued with its encoded frame goes out as that very frame; the
        frame, shared by every link, is not counted: the outbox's bytes are the
        entry's, as for a link that is down, until the peer acknowledges it."""
        box = Outbox(1 << 20)
        box.rewind()
        item = entry(b"v")
        frame = wire.encode_write(1, b"k", item)
        box.add(1, b"k", item, frame)
        self.assertEqual(box.bytes, entry_size(b"k", item))
        sent = box.take_frames()
        self.assertEqual(len(sent), 1)
        self.assertIs(sent[0], frame)
        box.ack(1)
        self.assertEqual(box.bytes, 0)
        self.assertTrue(box.drained())

    def test_a_frame_given_while_disconnected_is_kept_once_and_sent_as_is(self) -> None:
        """A link that is down holds its place in the shared log, where the frame
        is held once for every link and counted by none: on the next connection
        that very frame goes out."""
        box = Outbox(1 << 20)
        item = entry(b"v")
        frame = wire.encode_write(7, b"k", item)
        box.add(7, b"k", item, frame)
        self.assertEqual(box.bytes, entry_size(b"k", item))
        self.assertEqual(box.take_frames(), [])  # not connected: nothing goes
        box.rewind()
        sent = box.take_frames()
        self.assertEqual(len(sent), 1)
        self.assertIs(sent[0], frame)

    def test_frames_follow_the_window_rewrites_and_transactions(self) -> None:
        """take_frames() sends what take() would: a rewritten key's newest write
        only, a transaction as its T frame, no more than the window allows."""
        box = Outbox(1 << 20, window=1)
        box.rewind()
        old, new = entry(b"old", 1), entry(b"new", 2)
        box.add(1, b"k", old, wire.encode_write(1, b"k", old))
        box.add(2, b"k", new, wire.encode_write(2, b"k", new))
        writes = ((b"a", entry(b"1", 3)), (b"b", entry(b"2", 3)))
        box.add_group(3, writes)
        self.assertEqual(box.take_frames(), [wire.encode_write(2, b"k", new)])
        self.assertEqual(box.take_frames(), [])  # the window is full
        box.ack(2)
        self.assertEqual(box.take_frames(), [wire.encode_transaction(3, writes)])
        self.assertEqual(box.take_frames(), [])


class FanOutTests(SynchronousTestCase):
    def test_a_write_is_encoded_once_for_every_peer(self) -> None:
        """Both of n1's links send one write as the same frame object, which
        decodes back to the write; the write then reaches both peers."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        written = n1.store.set(b"key", b"value")
        links = [link for link in n1.replication.links.values() if not link.is_self]
        self.assertEqual(len(links), 2)
        frames = [link.outbox.take_frames() for link in links]
        self.assertEqual([len(sent) for sent in frames], [1, 1])
        self.assertIs(frames[0][0], frames[1][0])
        decoded = wire.FrameDecoder(1 << 20).feed(frames[0][0])
        self.assertEqual(decoded, [wire.Write(n1.store.seq, b"key", written)])
        for link in links:
            link.outbox.rewind()  # as a new connection would: send it again
            link.pump()
        cluster.run()
        for node in cluster.nodes.values():
            self.assertEqual(node.store.entry(b"key"), written)

    def test_an_old_merged_write_lowers_every_floor_to_a_version(self) -> None:
        """A merged write older than what a link vouches for lowers that link's
        floor to the write's version, a Version its heartbeat can carry."""
        cluster = settled_cluster(self)
        n2 = cluster.nodes["n2"]
        links = [link for link in n2.replication.links.values() if not link.is_self]
        floors = [link.floor() for link in links]
        old = Version(min(floors).ms - 1, 0, "n3")
        self.assertLess(n2.store.horizon, old)  # not a purged delete's leftover
        self.assertTrue(n2.apply(b"late", make_entry(b"v", old)))
        for link in links:
            floor = link.floor()
            self.assertEqual(floor, old)
            self.assertIsInstance(floor, Version)
            heartbeat = wire.FrameDecoder(1 << 20).feed(link.heartbeat())[0]
            self.assertEqual(heartbeat.floor, old)  # type: ignore[union-attr]
        newer = Version(n2.clock.now().ms + 1, 0, "n3")
        self.assertTrue(n2.apply(b"later", make_entry(b"v", newer)))
        self.assertEqual([link.floor() for link in links], [old, old])


class NodeIdTests(SynchronousTestCase):
    def body(self, entry_: Entry) -> bytes:
        return wire.encode_write(1, b"k", entry_)[4:]

    def test_node_ids_read_once_stay_checked(self) -> None:
        """Once a valid id has been read, malformed ones are still refused, and the
        empty id passes in a bound but never in a write."""
        self.assertEqual(wire.decode_body(self.body(entry(b"v"))).entry[-1], "a")  # type: ignore[union-attr]
        for node in ("", "bad/id", "x" * 65, "a "):
            with self.assertRaises(wire.WireError):
                wire.decode_body(self.body(make_entry(b"v", Version(5, 0, node))))
        beat = wire.encode_heartbeat(Version(0, 0, ""), Version(0, 0, ""))[4:]
        self.assertEqual(wire.decode_body(beat).floor, Version(0, 0, ""))  # type: ignore[union-attr]
        with self.assertRaises(wire.WireError):
            wire.decode_body(self.body(make_entry(b"v", Version(5, 0, ""))))

    def test_a_peer_naming_ever_new_ids_cannot_grow_the_memo(self) -> None:
        """Ten thousand distinct node ids decode right, and the ids kept for
        reuse stay within their bound."""
        for i in range(10_000):
            node = f"node-{i}"
            decoded = wire.decode_body(self.body(make_entry(b"v", Version(5, 0, node))))
            self.assertEqual(decoded.entry[-1], node)  # type: ignore[union-attr]
        self.assertLessEqual(len(wire._valid_nodes), wire._VALID_NODES_MAX)
