"""A member counts as holding a write at a level only if the link that
acknowledged it carried that write: an acknowledgement of a later write says
nothing of one the link never sent (its outbox was cut over to a resync, or it
was made after the write). On a fake-clock cluster in one process."""

from __future__ import annotations

from typing import Callable, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.node import Node
from tests.clusters import settled_cluster
from tests.respclient import command
from tests.test_levels import Client


class Watched(StringTransport):
    """A client's transport that notes, as each reply is written, what
    ``look()`` says then."""

    def __init__(self, look: Callable[[], Optional[bytes]]) -> None:
        address = IPv4Address("TCP", "127.0.0.1", 6100)
        super().__init__(peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.1", 9000))
        self.look = look
        self.seen: List[Optional[bytes]] = []

    def write(self, data: bytes) -> None:
        self.seen.append(self.look())
        super().write(data)

    def writeSequence(self, data: object) -> None:
        self.seen.append(self.look())
        super().writeSequence(data)  # type: ignore[arg-type]


def watched_client(node: Node, look: Callable[[], Optional[bytes]]) -> Watched:
    proto = node.factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 6100))
    transport = Watched(look)
    proto.makeConnection(transport)
    proto.dataReceived(command(b"CONSISTENCY", b"QUORUM"))
    assert transport.value().startswith(b"+read "), transport.value()
    transport.clear()
    transport.seen.clear()
    transport.proto = proto  # type: ignore[attr-defined]
    return transport


class OverflowGapTests(SynchronousTestCase):
    def test_a_write_cut_from_an_overflowed_outbox_is_not_counted_by_later_acks(self) -> None:
        """n1 is cut off from both peers when a QUORUM SET of ``k`` runs there;
        ONE writes then overflow n1's outboxes (a resync is due). n1 links
        with n2 again: n2 acknowledges n1's next writes, which says nothing
        of ``k``, cut from the outbox unsent. So the SET answers OK only once
        n2 holds ``k`` (the resync round carried it), never before."""
        cluster = settled_cluster(self, quorum_timeout=5.0, outbox_bytes=4096)
        for other in ("n2", "n3"):
            cluster.net.block("n1", other)
        cluster.net.run()
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        writer = watched_client(n1, lambda: n2.store.get(b"k"))
        writer.proto.dataReceived(command(b"SET", b"k", b"v"))  # type: ignore[attr-defined]
        cluster.net.run()
        filler = Client(cluster, "n1", 6000)
        for i in range(8):
            self.assertEqual(filler.ask(b"SET", b"fill%d" % i, b"x" * 1000), b"+OK\r\n")
        self.assertTrue(all(link.outbox.needs_resync for link in n1.replication.links.values()))
        cluster.net.unblock("n1", "n2")
        deadline = cluster.net.seconds() + 4.0
        while not writer.value() and cluster.net.seconds() < deadline:
            filler.send(b"SET", b"later", b"%f" % cluster.net.seconds())
            cluster.advance(0.05)
        self.assertEqual(writer.value(), b"+OK\r\n")
        self.assertEqual(writer.seen, [b"v"])  # n2 held k when the SET answered
        cluster.net.heal()

    def test_with_no_later_write_the_resync_round_alone_lets_the_write_answer(self) -> None:
        """The same cut-over with no write after it: nothing is acknowledged
        again, yet the SET answers OK once the resync round completed (that
        round carried ``k``), well before its timeout."""
        cluster = settled_cluster(self, quorum_timeout=5.0, outbox_bytes=4096)
        for other in ("n2", "n3"):
            cluster.net.block("n1", other)
        cluster.net.run()
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        writer = watched_client(n1, lambda: n2.store.get(b"k"))
        writer.proto.dataReceived(command(b"SET", b"k", b"v"))  # type: ignore[attr-defined]
        filler = Client(cluster, "n1", 6000)
        for i in range(8):
            self.assertEqual(filler.ask(b"SET", b"fill%d" % i, b"x" * 1000), b"+OK\r\n")
        cluster.net.unblock("n1", "n2")
        deadline = cluster.net.seconds() + 4.0
        while not writer.value() and cluster.net.seconds() < deadline:
            cluster.advance(0.05)
        self.assertEqual(writer.value(), b"+OK\r\n")
        self.assertEqual(writer.seen, [b"v"])
        cluster.net.heal()


class SupersedeGapTests(SynchronousTestCase):
    def test_an_ack_between_a_superseded_write_and_its_successor_does_not_count(self) -> None:
        """n1 is cut off when a QUORUM SET of ``k`` runs there; then a ONE write
        of a large value, then ``k`` again at ONE, which supersedes the first
        before it was sent. Linked again, n1 sends the large write alone (it
        fills the send window) and n2 acknowledges it: that says nothing of
        ``k``, whose newer write is still to come. The SET answers OK only
        once n2 holds ``k``."""
        cluster = settled_cluster(self, quorum_timeout=5.0, max_request=4 << 20)
        for other in ("n2", "n3"):
            cluster.net.block("n1", other)
        cluster.net.run()
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        writer = watched_client(n1, lambda: n2.store.get(b"k"))
        writer.proto.dataReceived(command(b"SET", b"k", b"v1"))  # type: ignore[attr-defined]
        other = Client(cluster, "n1", 6000)
        self.assertEqual(other.ask(b"SET", b"big", b"x" * (1 << 20)), b"+OK\r\n")
        self.assertEqual(other.ask(b"SET", b"k", b"v2"), b"+OK\r\n")
        cluster.net.unblock("n1", "n2")
        deadline = cluster.net.seconds() + 4.0
        while not writer.value() and cluster.net.seconds() < deadline:
            cluster.advance(0.05)
        self.assertEqual(writer.value(), b"+OK\r\n")
        self.assertIn(writer.seen, ([b"v1"], [b"v2"]))
        cluster.net.heal()
