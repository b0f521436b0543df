"""A member counts as holding a write at a level only if the link that
acknowledged it carried that write: an acknowledgement of a later write says
nothing of one the link never sent (its outbox was cut over to a resync, or it
was made after the write). On a fake-clock cluster in one process."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.node import Node
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.respclient import command
from tests.test_levels import Client, quorum_client


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


def cut_off_writer(case: SynchronousTestCase, **options: object) -> Tuple[SimulatedCluster, Watched]:
    """A settled cluster with n1 cut off from n2 and n3, and a QUORUM client
    of n1 that notes n2's value of ``k`` as each answer is written."""
    cluster = settled_cluster(case, quorum_timeout=5.0, **options)
    for other in ("n2", "n3"):
        cluster.net.block("n1", other)
    cluster.net.run()
    n2 = cluster.nodes["n2"]
    return cluster, watched_client(cluster.nodes["n1"], lambda: n2.store.get(b"k"))


def answered(cluster: SimulatedCluster, writer: Watched, seconds: float = 4.0,
             meanwhile: Callable[[], None] = lambda: None) -> bytes:
    """``writer``'s answer, once written or after ``seconds`` (``meanwhile``
    called every 50 ms until then)."""
    deadline = cluster.net.seconds() + seconds
    while not writer.value() and cluster.net.seconds() < deadline:
        meanwhile()
        cluster.advance(0.05)
    return bytes(writer.value())


class OverflowGapTests(SynchronousTestCase):
    def test_a_write_cut_from_an_overflowed_outbox_is_not_counted_by_later_acks(self) -> None:
        """n1 is cut off from both peers when a QUORUM SET of ``k`` runs there;
        ONE writes then overflow n1's outboxes (a resync is due). n1 links
        with n2 again: n2 acknowledges n1's next writes, which says nothing
        of ``k``, cut from the outbox unsent. So the SET answers OK only once
        n2 holds ``k`` (the resync round carried it), never before."""
        cluster, writer = cut_off_writer(self, outbox_bytes=4096)
        n1 = cluster.nodes["n1"]
        writer.proto.dataReceived(command(b"SET", b"k", b"v"))  # type: ignore[attr-defined]
        cluster.net.run()
        filler = Client(cluster, "n1", 6000)
        for i in range(8):
            self.assertEqual(filler.ask(b"SET", b"fill%d" % i, b"x" * 1000), b"+OK\r\n")
        self.assertTrue(all(link.outbox.needs_resync for link in n1.replication.links.values()))
        cluster.net.unblock("n1", "n2")
        later = lambda: filler.send(b"SET", b"later", b"%f" % cluster.net.seconds())  # noqa: E731
        self.assertEqual(answered(cluster, writer, meanwhile=later), b"+OK\r\n")
        self.assertEqual(writer.seen, [b"v"])  # n2 held k when the SET answered
        cluster.net.heal()

    def test_with_no_later_write_the_resync_round_alone_lets_the_write_answer(self) -> None:
        """The same cut-over with no write after it: nothing is acknowledged
        again, yet the SET answers OK once the resync round completed (that
        round carried ``k``), well before its timeout."""
        cluster, writer = cut_off_writer(self, outbox_bytes=4096)
        writer.proto.dataReceived(command(b"SET", b"k", b"v"))  # type: ignore[attr-defined]
        filler = Client(cluster, "n1", 6000)
        for i in range(8):
            self.assertEqual(filler.ask(b"SET", b"fill%d" % i, b"x" * 1000), b"+OK\r\n")
        cluster.net.unblock("n1", "n2")
        self.assertEqual(answered(cluster, writer), b"+OK\r\n")
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
        cluster, writer = cut_off_writer(self, max_request=4 << 20)
        writer.proto.dataReceived(command(b"SET", b"k", b"v1"))  # type: ignore[attr-defined]
        other = Client(cluster, "n1", 6000)
        self.assertEqual(other.ask(b"SET", b"big", b"x" * (1 << 20)), b"+OK\r\n")
        self.assertEqual(other.ask(b"SET", b"k", b"v2"), b"+OK\r\n")
        cluster.net.unblock("n1", "n2")
        self.assertEqual(answered(cluster, writer), b"+OK\r\n")
        self.assertIn(writer.seen, ([b"v1"], [b"v2"]))
        cluster.net.heal()


class InFlightSupersedeTests(SynchronousTestCase):
    def test_a_write_superseded_in_flight_then_lost_with_its_connection_is_not_counted(
            self) -> None:
        """n3 is cut off and ``k`` is ``v0`` everywhere. A QUORUM ``SET k v1
        XX`` runs on n1; a 1 MiB ONE write follows and the pump writes both
        to n2; ``SET k v2`` at ONE supersedes ``v1`` while it is on the wire,
        and the connection drops with both. The next one resends the large
        write alone first (it fills the window, and ``v1`` is never sent
        again); n2 acknowledges it, which says nothing of ``k``: the QUORUM
        SET answers OK only once n2 holds ``k`` at ``v1`` or newer."""
        cluster = settled_cluster(self, quorum_timeout=30.0, max_request=4 << 20)
        net = cluster.net
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        other = Client(cluster, "n1", 6000)
        self.assertEqual(other.ask(b"SET", b"k", b"v0"), b"+OK\r\n")
        cluster.advance(1.0)
        net.block("n1", "n3")
        net.run()
        writer = watched_client(n1, lambda: n2.store.get(b"k"))
        writer.proto.dataReceived(command(b"SET", b"k", b"v1", b"XX"))  # type: ignore[attr-defined]
        for _ in range(1000):  # one connection step at a time, until v1 runs on n1
            if n1.store.get(b"k") == b"v1":
                break
            net.advance(0)
            for connection in list(net.connections):
                if not connection.closed:
                    connection.step()
        self.assertEqual(n1.store.get(b"k"), b"v1")
        other.send(b"SET", b"big", b"x" * (1 << 20))
        net.advance(0)  # the pump writes v1 and big to n2; nothing is delivered
        other.send(b"SET", b"k", b"v2")  # supersedes v1 on the wire
        net.cut("n1", "n2")  # and the bytes on the wire are lost
        deadline = net.seconds() + 20.0
        while not writer.value() and net.seconds() < deadline:
            cluster.advance(0.05)
        self.assertEqual(writer.value(), b"+OK\r\n")
        self.assertIn(writer.seen, ([b"v1"], [b"v2"]))
        net.heal()


class IncarnationTests(SynchronousTestCase):
    def test_a_peer_back_empty_counts_for_nothing_until_a_round_with_it(self) -> None:
        """n2 acknowledged n1's write of ``k``, then crashes and comes back
        memory-only, holding nothing. As n1's link to it comes up, neither
        WAIT's count nor a level's counts n2 for that write."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        client = Client(cluster, "n1", 6000)
        self.assertEqual(client.ask(b"SET", b"k", b"v"), b"+OK\r\n")
        cluster.advance(1.0)
        seq = n1.store.seq
        self.assertEqual(n1.peers_holding(seq), 2)
        cluster.crash("n2")
        seen = []
        inner = n1.replication.on_linked

        def look(link: Any, remote: Any, accept: Any) -> None:
            inner(link, remote, accept)
            if remote.node == "n2":
                seen.append((n1.peers_holding(seq), cluster.nodes["n2"].store.get(b"k")))

        n1.replication.on_linked = look  # type: ignore[method-assign]
        cluster.start("n2", None)
        cluster.advance(5.0)
        self.assertEqual(seen[0], (1, None))  # only n3 holds it as n2 links
        self.assertEqual(n1.peers_holding(seq), 2)  # and n2 again once a round ran
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"v")


class HotKeyTests(SynchronousTestCase):
    def test_a_quorum_set_answers_while_a_hot_key_is_rewritten_every_turn(self) -> None:
        """A ONE client on n1 pipelines two SETs of one key every 2 ms (the
        first is always superseded before it is acknowledged), and the
        network delivers one step at a time. A QUORUM SET of another key on
        n1 answers OK well within its timeout: the holes the hot key leaves
        close as the acknowledgements reach each one's end."""
        cluster = settled_cluster(self, quorum_timeout=1.0)
        net = cluster.net
        hot = Client(cluster, "n1", 6000)
        levelled = quorum_client(cluster, "n1")
        for i in range(200):
            if i == 20:
                levelled.send(b"SET", b"x", b"1")
            hot.proto.dataReceived(command(b"SET", b"hot", b"a%d" % i)
                                   + command(b"SET", b"hot", b"b%d" % i))
            net.advance(0.002)
            for connection in list(net.connections):
                if not connection.closed:
                    connection.step()
            if i > 20 and levelled.answer():
                break
        self.assertEqual(levelled.answer(), b"+OK\r\n")
        self.assertLess(i, 200)
        net.run()


class RoundNumberTests(SynchronousTestCase):
    def test_no_two_links_of_a_node_run_rounds_under_one_number(self) -> None:
        """A round's end closes a link's gaps; after ``hand_over`` a link can
        hear, on a connection it inherited, the end of another link's round:
        numbers unique across the links keep it from passing for its own."""
        cluster = settled_cluster(self)
        links = list(cluster.nodes["n1"].replication.links.values())
        numbers = []
        for link in links:
            link._sync_tick()
            assert link._round is not None
            numbers.append(link._round.number)
        self.assertEqual(len(set(numbers)), len(links))
        cluster.net.run()


class CoveredHoleTests(SynchronousTestCase):
    def test_a_key_rewritten_behind_another_keys_hole_is_not_counted_early(self) -> None:
        """n1 is cut off: ``SET a a1`` (ONE), ``SET k v1`` (QUORUM), ``SET k
        v2``, a 1 MiB ``SET a``, ``SET k v3``. Linked with n2 again, n1 sends
        the 1 MiB write alone (it fills the window) and n2 acknowledges it,
        which says nothing of ``k``: the QUORUM SET answers OK only once n2
        holds ``k``."""
        cluster, writer = cut_off_writer(self, max_request=4 << 20)
        other = Client(cluster, "n1", 6000)
        self.assertEqual(other.ask(b"SET", b"a", b"a1"), b"+OK\r\n")
        writer.proto.dataReceived(command(b"SET", b"k", b"v1"))  # type: ignore[attr-defined]
        self.assertEqual(other.ask(b"SET", b"k", b"v2"), b"+OK\r\n")
        self.assertEqual(other.ask(b"SET", b"a", b"x" * (1 << 20)), b"+OK\r\n")
        self.assertEqual(other.ask(b"SET", b"k", b"v3"), b"+OK\r\n")
        cluster.net.unblock("n1", "n2")
        self.assertEqual(answered(cluster, writer), b"+OK\r\n")
        self.assertIn(writer.seen, ([b"v1"], [b"v2"], [b"v3"]))
        cluster.net.heal()


class HeldBackTests(SynchronousTestCase):
    def test_an_ack_that_finds_a_hole_holding_writes_back_starts_a_round(self) -> None:
        """A link whose hole keeps acknowledged writes from counting (a hot
        key rewritten before the link sends it) starts a round on the next
        acknowledgement, rather than waiting up to ``--sync-interval``."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        for i in range(3):
            self.assertEqual(Client(cluster, "n1").ask(b"SET", b"k%d" % i, b"v"), b"+OK\r\n")
        link = next(link for link in n1.replication.links.values()
                    if link.remote is not None and link.remote.node == "n2")
        cluster.net.run()
        self.assertIsNone(link._round)
        outbox = link.outbox
        outbox.acked = n1.store.seq
        outbox._holes.append((1, n1.store.seq + 10))  # as a hot key's would be
        outbox._hole_ends[n1.store.seq + 10] = 1
        started = link._rounds_started
        link.acked(n1.store.seq)
        self.assertEqual(link._rounds_started, started + 1)
        cluster.net.run()
        self.assertFalse(outbox.held_back())
