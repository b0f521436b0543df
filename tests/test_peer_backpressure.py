"""Peer input cannot make a node buffer without bound, and rounds that stall
are given up (issue 11, item 8 and the suspected stuck round)."""

from __future__ import annotations

from typing import Any, Iterator, List

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import peerproto, wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.peers import PeerLink
from distkv.store.digest import DIGEST_BYTES
from distkv.store.hlc import HybridClock
from distkv.store.store import Store
from tests.fakehost import FakeHost

OFFER = wire.encode_digest(1, b"\0" * DIGEST_BYTES)


class CountingHost(FakeHost):
    """Answers each offer with ``chunks`` chunks of 100 KiB, counting the answers started."""

    def __init__(self, chunks: int = 3) -> None:
        super().__init__()
        self.chunks = chunks
        self.answers: List[int] = []

    def answer(self, offer: wire.DigestOffer) -> Iterator[bytes]:  # type: ignore[override]
        self.answers.append(offer.round)
        return iter([b"a" * (100 << 10)] * self.chunks)


class BufferedTransport(StringTransport):
    """A StringTransport that reports its written bytes as Twisted's TCP
    transport reports its buffer (what :func:`distkv.front.sendnow.buffered` reads)."""

    offset = 0
    _tempDataLen = 0

    @property
    def dataBuffer(self) -> bytes:  # type: ignore[override]
        return self.value()


def accepted(host: FakeHost, transport: StringTransport) -> peerproto.Acceptor:
    proto = peerproto.Acceptor(host, Clock(), 5.0, wire.max_frame(1 << 20))
    proto.makeConnection(transport)
    proto.dataReceived(wire.greeting_line(wire.Greeting(wire.Hello("them", "1"), 7001)))
    transport.clear()
    return proto


class OfferFloodTests(SynchronousTestCase):
    def test_offers_wait_while_the_transport_is_full_and_only_the_newest_is_kept(self) -> None:
        """1,000 offers while the peer reads nothing: one answer is under way, the
        999 others collapse into the newest; nothing more is written until the
        transport drains, then that newest one is answered."""
        host = CountingHost()
        transport = StringTransport()
        proto = accepted(host, transport)
        proto.pauseProducing()  # what the transport does once its buffer is full
        proto.dataReceived(b"".join(wire.encode_digest(n, b"\0" * DIGEST_BYTES)
                                    for n in range(1, 1001)))
        self.assertEqual(host.answers, [1])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(proto.offers_superseded, 998)
        proto.resumeProducing()
        self.assertEqual(host.answers, [1, 1000])
        self.assertEqual(len(transport.value()), 2 * 3 * (100 << 10))
        proto.connectionLost()

    def test_an_answer_is_written_chunk_by_chunk_as_the_transport_drains(self) -> None:
        """A paused transport gets no more chunks of a long answer until it resumes."""
        host = CountingHost(chunks=10)
        transport = StringTransport()
        proto = accepted(host, transport)
        original = proto.write

        def write_then_fill(data: bytes) -> None:
            original(data)
            proto.pauseProducing()

        proto.write = write_then_fill  # type: ignore[method-assign]
        proto.dataReceived(OFFER)
        for written in range(1, 11):
            self.assertEqual(len(transport.value()), written * (100 << 10))
            proto.resumeProducing()
        self.assertEqual(host.answers, [1])
        proto.connectionLost()

    def test_a_peer_that_sends_without_reading_has_its_input_paused(self) -> None:
        """Past OUTPUT_PAUSE_BYTES of unread output the connection stops reading the
        peer, and reads again once the transport has drained."""
        self.patch(peerproto, "OUTPUT_PAUSE_BYTES", 64 << 10)
        host = CountingHost(chunks=1)
        transport = BufferedTransport()
        proto = accepted(host, transport)
        proto.pauseProducing()
        heartbeat = wire.encode_heartbeat(wire.Version(1, 0, "them"), wire.Version(1, 0, "them"))
        flood = heartbeat * 1000
        while len(transport.value()) <= peerproto.OUTPUT_PAUSE_BYTES:
            self.assertEqual(transport.producerState, "producing")
            proto.dataReceived(flood)
        self.assertEqual(transport.producerState, "paused")
        transport.clear()
        proto.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        proto.connectionLost()


class FakeConnection:
    """Stands for a peer connection: records what a link sends and streams."""

    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.link: Any = None
        self.name = "b"
        self.then: List[Any] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def stream(self, chunks: Iterator[bytes], then: Any = None) -> None:
        self.sent.extend(chunks)
        self.then.append(then)


class StuckRoundTests(SynchronousTestCase):
    def link(self) -> tuple:  # type: ignore[type-arg]
        clock = Clock()
        store = Store(HybridClock("a", lambda: int(clock.seconds() * 1000)))
        local = wire.Greeting(wire.Hello("a", "1"), 7000)
        peer = PeerLink("127.0.0.1", 7001, local, clock, Outbox(1 << 20), 5.0, store, 60.0, 1 << 20)
        connection = FakeConnection()
        self.assertTrue(peer.linked(connection, wire.Hello("b", "1")))  # type: ignore[arg-type]
        self.addCleanup(peer.unlinked, connection)  # type: ignore[arg-type]
        return peer, clock, connection

    def test_a_round_that_hears_nothing_for_an_interval_is_given_up(self) -> None:
        """A round whose answer never comes stops blocking rounds: the next
        interval after a silent one starts another."""
        peer, clock, connection = self.link()
        self.assertEqual(peer._rounds_started, 1)
        clock.advance(60)
        self.assertEqual(peer._rounds_started, 2)
        self.assertEqual(sum(1 for data in connection.sent if data[4:5] == b"D"), 2)

    def test_a_round_still_sending_or_answered_lately_is_kept(self) -> None:
        """Key lists keep a round alive, and so does its own stream still being written."""
        peer, clock, connection = self.link()
        clock.advance(59)
        assert peer._round is not None
        peer.keys_done(peer._round.number, None)  # the answer came: now our entries go out
        clock.advance(60)
        self.assertEqual(peer._rounds_started, 1)  # the stream has not finished
        connection.then[-1]()  # ... now it has
        clock.advance(60)
        self.assertEqual(peer._rounds_started, 2)
