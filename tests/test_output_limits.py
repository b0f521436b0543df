"""Client output limits (Redis's client-output-buffer-limit) over StringTransport:
a client that pipelines and does not read gets no more replies queued than the
soft limit plus one reply, on RESP and text alike, with requests held (not run)
until it reads; a reply over the hard limit is refused; and the RESP parser's
work and the request size limit, whatever the fragmentation."""

from __future__ import annotations

from typing import Any, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from distkv.front import resp
from distkv.front.frontdoor import FrontDoor
from distkv.front.replyqueue import OutputLimits
from distkv.node import Node
from tests.proptest import examples
from tests.scratch import scratch_dir
from tests.test_peer_backpressure import BufferedTransport

ADDRESS = IPv4Address("TCP", "127.0.0.1", 6001)
VALUE = bytes(range(256)) * 400  # 102,400 bytes
SOFT = 64 << 10


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class SlowReader(StringTransport):
    """A client that reads nothing until :meth:`drain`: like Twisted's TCP
    transport, it pauses its streaming producer once more than ``bufferSize``
    bytes wait, and resumes it when they have all been taken."""

    bufferSize = 1 << 16
    producerPaused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if (self.producer is not None and self.streaming and not self.producerPaused
                and len(self.value()) > self.bufferSize):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        taken = self.value()
        self.clear()
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return taken


def connect(node: Node) -> Tuple[FrontDoor, SlowReader]:
    proto = node.factory().buildProtocol(ADDRESS)
    transport = SlowReader(peerAddress=ADDRESS)
    proto.makeConnection(transport)
    return proto, transport


def feed(proto: Any, data: bytes, chunk: int) -> None:
    step = chunk or len(data)
    for i in range(0, len(data), step):
        proto.dataReceived(data[i : i + step])


def drain_all(transport: SlowReader, clock: Clock, most: int) -> Tuple[bytes, int]:
    """Read until nothing more comes; (everything read, the most queued at once)."""
    got: List[bytes] = []
    peak = 0
    while True:
        clock.advance(0)
        peak = max(peak, len(transport.value()))
        taken = transport.drain()
        if not taken:
            return b"".join(got), peak
        got.append(taken)
        assert len(got) < most, "never ends"


def held(proto: Any) -> int:
    """Bytes of the replies a connection holds back behind an earlier one."""
    return sum(len(slot[0]) for slot in proto.inner._owed.slots if slot[0] is not None)


def logged(case: SynchronousTestCase, needle: str) -> List[str]:
    """The log lines containing ``needle`` from now to the end of ``case``."""
    events: List[str] = []

    def observe(event: Any) -> None:
        text = formatEvent(event)
        if needle in text:
            events.append(text)

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def limited(clock: Clock, **kwargs: Any) -> Node:
    return Node(clock, "lim", client_output_limits=OutputLimits(soft=SOFT, hard=1 << 20),
                **kwargs)


class RespOutputLimitTests(SynchronousTestCase):
    def test_a_pipeline_of_large_gets_in_one_read_stops_at_the_soft_limit(self) -> None:
        """300 GETs of a 100 kB value in one read queue at most the soft limit and one
        reply; a SET behind them does not run until the client reads; all are then
        answered in order, and a half-close closes only after the last."""
        for chunk in (0, 1, 7, 1460):
            clock = Clock()
            node = limited(clock)
            node.store.set(b"big", VALUE)
            proto, transport = connect(node)
            stream = command(b"GET", b"big") * 300 + command(b"SET", b"after", b"1")
            feed(proto, stream, chunk)
            proto.readConnectionLost()
            self.assertLessEqual(len(transport.value()), SOFT + 2 * len(VALUE), chunk)
            self.assertIsNone(node.store.get(b"after"))
            self.assertFalse(transport.disconnecting)
            replies, peak = drain_all(transport, clock, 1000)
            self.assertLessEqual(peak, SOFT + 2 * len(VALUE))
            self.assertEqual(replies, b"$102400\r\n" + VALUE + b"\r\n" + (
                b"$102400\r\n" + VALUE + b"\r\n") * 299 + b"+OK\r\n", chunk)
            self.assertEqual(node.store.get(b"after"), b"1")
            self.assertTrue(transport.disconnecting)

    def test_replies_behind_a_commit_count_towards_the_soft_limit(self) -> None:
        """With a data dir, GETs behind a SET wait for its commit: no more than the soft
        limit and one reply of them are built before the commit sends them."""
        clock = Clock()
        node = limited(clock, data_dir=scratch_dir(self))
        node.start()
        self.addCleanup(node.crash)
        node.store.set(b"big", VALUE)
        clock.advance(0)
        proto, transport = connect(node)
        proto.dataReceived(command(b"SET", b"k", b"v") + command(b"GET", b"big") * 200)
        self.assertLessEqual(held(proto), SOFT + 2 * len(VALUE))
        replies, peak = drain_all(transport, clock, 1000)
        self.assertEqual(replies, b"+OK\r\n" + (b"$102400\r\n" + VALUE + b"\r\n") * 200)

    def test_an_array_reply_over_the_hard_limit_is_refused_and_closes(self) -> None:
        """An MGET whose reply would exceed the hard limit gets -ERR (after the replies
        before it) and the connection closes; the requests after it do not run."""
        clock = Clock()
        node = limited(clock)
        for i in range(20):
            node.store.set(b"k%d" % i, VALUE)
        proto, transport = connect(node)
        keys = [b"k%d" % i for i in range(20)]
        proto.dataReceived(command(b"PING") + command(b"MGET", *keys)
                           + command(b"SET", b"after", b"1"))
        replies, _ = drain_all(transport, clock, 100)
        self.assertTrue(replies.startswith(b"+PONG\r\n-ERR reply of "), replies[:100])
        self.assertIn(b"exceeds the client output hard limit of 1048576 bytes", replies)
        self.assertLess(len(replies), 1000)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(node.store.get(b"after"))
        proto, transport = connect(node)  # under the limit: answered whole
        proto.dataReceived(command(b"MGET", *keys[:5]))
        self.assertEqual(len(drain_all(transport, clock, 100)[0]), 4 + 5 * (9 + len(VALUE) + 2))


class HardLimitTests(SynchronousTestCase):
    def test_a_client_whose_queued_replies_pass_the_hard_limit_is_dropped_and_logged(
            self) -> None:
        """A connection whose transport buffers everything and never pauses it
        (the client reads nothing, and the node is not told to stop): 300 GETs
        of a 100 kB value in one read. Once the bytes queued for it pass the
        hard limit (1 MiB) the node aborts the connection, logs it once, and
        runs none of the requests after; other clients are served."""
        events = logged(self, "Disconnecting RESP client")
        clock = Clock()
        node = limited(clock)
        node.store.set(b"big", VALUE)
        proto = node.factory().buildProtocol(ADDRESS)
        transport = BufferedTransport(peerAddress=ADDRESS)
        proto.makeConnection(transport)
        proto.dataReceived(command(b"GET", b"big") * 300 + command(b"SET", b"after", b"1"))
        self.assertTrue(transport.disconnected)  # aborted, not closed after the replies
        self.assertGreater(len(transport.value()), 1 << 20)
        self.assertLess(len(transport.value()), (1 << 20) + SOFT + 2 * len(VALUE))
        self.assertIsNone(node.store.get(b"after"))
        self.assertEqual(len(events), 1)
        self.assertIn("over the client output hard limit of 1048576", events[0])
        other, other_transport = connect(node)
        other.dataReceived(command(b"GET", b"big"))
        self.assertEqual(len(drain_all(other_transport, clock, 100)[0]), 9 + len(VALUE) + 2)


class ReadSizeTests(SynchronousTestCase):
    def test_a_client_transport_keeps_its_read_size_unless_the_soft_limit_is_lower(self) -> None:
        """Twisted reads up to ``bufferSize`` bytes at once and pauses its producer past it;
        a connection lowers it to a smaller soft limit but never raises it (under PyPy a
        1 MiB read size allocated 1 MiB per recv and cost ~150 us per request), on RESP
        and text alike."""
        for soft, expected in ((1 << 20, 1 << 16), (SOFT, 1 << 16), (4096, 4096)):
            node = Node(Clock(), "rs", client_output_limits=OutputLimits(soft=soft, hard=1 << 21))
            for first in (b"*1\r\n$4\r\nPING\r\n", b"PING\r\n"):
                proto = node.factory().buildProtocol(ADDRESS)
                transport = SlowReader(peerAddress=ADDRESS)
                proto.makeConnection(transport)
                proto.dataReceived(first)
                self.assertIn(b"PONG", transport.value())
                self.assertEqual(transport.bufferSize, expected, (soft, first))


class TextOutputLimitTests(SynchronousTestCase):
    def test_replies_behind_a_commit_count_towards_the_soft_limit(self) -> None:
        """Text GETs behind a SET waiting for its commit stop at the soft limit."""
        clock = Clock()
        node = limited(clock, data_dir=scratch_dir(self))
        node.start()
        self.addCleanup(node.crash)
        node.store.set(b"big", VALUE)
        clock.advance(0)
        proto, transport = connect(node)
        proto.dataReceived(b"SET k v\n" + b"GET big\n" * 200)
        self.assertLessEqual(held(proto), SOFT + 2 * len(VALUE))
        replies, _ = drain_all(transport, clock, 1000)
        self.assertEqual(replies, b"OK\r\n" + (VALUE + b"\r\n") * 200)

    def test_an_array_reply_over_the_hard_limit_is_refused_and_closes(self) -> None:
        """A text MGET whose reply would exceed the hard limit gets ERR and a close."""
        clock = Clock()
        node = limited(clock)
        for i in range(20):
            node.store.set(b"k%d" % i, VALUE)
        proto, transport = connect(node)
        proto.dataReceived(b"MGET " + b" ".join(b"k%d" % i for i in range(20)) + b"\nPING\n")
        replies, _ = drain_all(transport, clock, 100)
        self.assertTrue(replies.startswith(b"ERR reply of about "), replies[:100])
        self.assertLess(len(replies), 1000)
        self.assertTrue(transport.disconnecting)


class RequestLimitTests(SynchronousTestCase):
    def test_an_mset_whose_arguments_sum_past_the_limit_is_refused_before_it_runs(self) -> None:
        """RESP: each argument under --max-request but their sum over it: -ERR Protocol
        error and a close, nothing stored, whole or in chunks; at the limit it is taken."""
        for chunk in (0, 1, 5, 1460):
            node = Node(Clock(), "n", max_request=1000)
            proto, transport = connect(node)
            feed(proto, command(b"MSET", b"a", b"x" * 400, b"b", b"y" * 400, b"c", b"z" * 200),
                 chunk)
            self.assertEqual(transport.value(),
                             b"-ERR Protocol error: request exceeds the size limit\r\n", chunk)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(len(node.store), 0)
            proto, transport = connect(node)
            feed(proto, command(b"SET", b"k", b"v" * 999), chunk)  # key + value: 1000 bytes
            self.assertEqual(transport.value(), b"+OK\r\n")


class ParserWorkTests(SynchronousTestCase):
    def test_a_fragmented_mset_is_parsed_in_work_linear_in_its_bytes(self) -> None:
        """A 980 kB MSET arriving in 1,460-byte reads: every length header is parsed
        once (not again at every read), and the bytes scanned stay within twice the input."""
        pairs = [(b"key:%06d" % i, b"v" * 40) for i in range(15000)]
        args = [b"MSET"] + [part for pair in pairs for part in pair]
        stream = command(*args)
        self.assertGreater(len(stream), 900_000)
        calls = [0]

        def counting_int(*a: Any) -> int:
            calls[0] += 1
            return int(*a)

        resp.int = counting_int  # type: ignore[attr-defined]
        self.addCleanup(delattr, resp, "int")
        node = Node(Clock(), "n", max_request=2 << 20)
        proto, transport = connect(node)
        feed(proto, stream, 1460)
        self.assertEqual(transport.value(), b"+OK\r\n")
        self.assertEqual(node.store.get(b"key:014999"), b"v" * 40)
        self.assertLessEqual(calls[0], 2 * len(args))
        reader = proto.inner._reader  # type: ignore[attr-defined]
        self.assertLessEqual(reader.scanned, 2 * len(stream))

    def test_a_large_value_in_small_reads_is_joined_once(self) -> None:
        """A 1 MB bulk string arriving in 1,460-byte reads is scanned about once, not once per read."""
        reader = resp.RequestReader(2 << 20)
        stream = command(b"SET", b"k", b"x" * 1_000_000)
        requests: List[List[bytes]] = []
        for i in range(0, len(stream), 1460):
            self.assertIsNone(reader.feed(stream[i : i + 1460], requests))
        self.assertEqual(requests, [[b"SET", b"k", b"x" * 1_000_000]])
        self.assertLessEqual(reader.scanned, 2 * len(stream))


class ReaderSplitTests(SynchronousTestCase):
    @settings(max_examples=examples(200), deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.lists(st.binary(max_size=40) | st.sampled_from([b"\r\n", b"$3", b"*2"]),
                         min_size=1, max_size=6).map(lambda args: command(*args)),
                st.sampled_from([b"PING\r\n", b"GET k\n", b"*0\r\n", b"\r\n"]),
                st.binary(min_size=5000, max_size=6000).map(lambda v: command(b"SET", b"k", v)),
            ),
            max_size=6,
        ),
        st.lists(st.integers(1, 3000), min_size=1, max_size=20),
        st.sampled_from([100, 1 << 20]),
    )
    def test_the_reader_gives_what_parsing_the_whole_stream_gives(
        self, pieces: List[bytes], cuts: List[int], limit: int
    ) -> None:
        """However a stream is cut into reads, the reader that keeps its place
        returns the requests (or the error) that parsing it whole returns."""
        stream = b"".join(pieces)
        whole, _, whole_error = resp.parse(stream, limit, fast=False)
        for fast in (True, False):
            reader = resp.RequestReader(limit, fast)
            got: List[List[bytes]] = []
            error = None
            at = 0
            for cut in cuts * (len(stream) // sum(cuts) + 1):
                if at >= len(stream) or error is not None:
                    break
                error = reader.feed(stream[at : at + cut], got)
                at += cut
            self.assertEqual((got, error), (whole, whole_error))


class ProtocolErrorLogTests(SynchronousTestCase):
    def test_protocol_errors_are_logged_escaped_and_rate_limited(self) -> None:
        """Raw client bytes in a protocol-error warning are escaped, and many errors
        in a moment give one line."""
        events = logged(self, "Closing RESP client")
        node = Node(Clock(), "n")
        for _ in range(20):
            proto, transport = connect(node)
            proto.dataReceived(b"*1\r\n\x1b[2J\r\n")
            self.assertTrue(transport.disconnecting)
        self.assertEqual(len(events), 1)
        self.assertNotIn("\x1b", events[0])
        self.assertIn("\\x1b", events[0])
