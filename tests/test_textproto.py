"""The text protocol over StringTransport: every reply and error, whole and in chunks."""

from __future__ import annotations

from typing import Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.frontdoor import FrontDoor
from distkv.front.textproto import parse_line
from distkv.node import Node

ADDRESS = IPv4Address("TCP", "127.0.0.1", 5555)


def connect(node: Node) -> Tuple[FrontDoor, StringTransport]:
    proto = node.factory().buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    proto.makeConnection(transport)
    return proto, transport


def converse(node: Node, data: bytes, chunk: int = 0) -> bytes:
    proto, transport = connect(node)
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        proto.dataReceived(data[i : i + step])
    return transport.value()


SCRIPT = [
    (b"SET k hello world\r\n", b"OK\r\n"),
    (b"GET k\r\n", b"hello world\r\n"),
    (b"get k\n", b"hello world\r\n"),
    (b"SET  spaced  two  spaces \n", b"OK\r\n"),
    (b"GET spaced\n", b" two  spaces \r\n"),
    (b"SET empty \n", b"OK\r\n"),
    (b"GET empty\n", b"\r\n"),
    (b"SET utf8 caf\xc3\xa9 \xe2\x9c\x93\n", b"OK\r\n"),
    (b"GET utf8\n", b"caf\xc3\xa9 \xe2\x9c\x93\r\n"),
    (b"GET missing\n", b"(nil)\r\n"),
    (b"DEL k\n", b"1\r\n"),
    (b"DEL k\n", b"0\r\n"),
    (b"GET k\n", b"(nil)\r\n"),
    (b"PING\r\n", b"PONG\r\n"),
    (b"PiNg\n", b"PONG\r\n"),
    (b"\r\n", b""),
    (b"FLY me\n", b"ERR unknown command 'FLY', with args beginning with: 'me' \r\n"),
    (b"GET\n", b"ERR wrong number of arguments for 'get' command\r\n"),
    (b"GET a b\n", b"ERR wrong number of arguments for 'get' command\r\n"),
    (b"SET onlykey\n", b"ERR wrong number of arguments for 'set' command\r\n"),
    (b"SET\n", b"ERR wrong number of arguments for 'set' command\r\n"),
    (b"DEL\n", b"ERR wrong number of arguments for 'del' command\r\n"),
    (b"DIS\n", b"ERR unknown command 'DIS', with args beginning with: \r\n"),
    (b"PING still-usable\n", b"still-usable\r\n"),
]


class TextProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node(Clock(), "t1")

    def test_every_command_and_error_reply(self) -> None:
        """Each request gets exactly its documented reply, and errors keep the connection."""
        proto, transport = connect(self.node)
        for request, reply in SCRIPT:
            transport.clear()
            proto.dataReceived(request)
            self.assertEqual(transport.value(), reply, request)
        self.assertFalse(transport.disconnecting)

    def test_arrays_holding_integers_are_answered(self) -> None:
        """Replies that are arrays or maps with integers in them (EXEC of an
        INCR or a DEL, HELLO, COMMAND INFO) are written out over the text
        protocol; an integer reply is a plain int since INCR's speed-up, and
        sizing one used to raise and drop the connection."""
        self.assertEqual(converse(self.node, b"MULTI\nINCR x\nDEL y\nEXEC\n"),
                         b"OK\r\nQUEUED\r\nQUEUED\r\n1\r\n0\r\nEND\r\n")
        self.assertIn(b"proto\r\n2\r\n", converse(self.node, b"HELLO\n"))
        self.assertEqual(converse(self.node, b"COMMAND INFO GET\n"),
                         b"get\r\n2\r\n1\r\n1\r\n1\r\nEND\r\n")

    def test_pipelined_script_in_any_chunk_size(self) -> None:
        """The whole script pipelined, fed in chunks of 1..N bytes, gives the same replies in order."""
        data = b"".join(request for request, _ in SCRIPT)
        expected = b"".join(reply for _, reply in SCRIPT)
        for chunk in range(1, 40):
            node = Node(Clock(), "t1")
            self.assertEqual(converse(node, data, chunk), expected, chunk)

    def test_quit_answers_ok_then_closes_and_ignores_the_rest(self) -> None:
        """QUIT replies OK, closes, and commands pipelined after it are not run."""
        proto, transport = connect(self.node)
        proto.dataReceived(b"PING\nQUIT\nSET after 1\n")
        self.assertEqual(transport.value(), b"PONG\r\nOK\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(self.node.store.get(b"after"))

    def test_half_close_answers_everything_then_closes(self) -> None:
        """After the client half-closes, every request (even an unterminated last one) is answered."""
        self.node.store.set(b"k", b"v")
        for chunk in (1, 3, 100):
            proto, transport = connect(self.node)
            data = b"PING\nGET k"
            for i in range(0, len(data), chunk):
                proto.dataReceived(data[i : i + chunk])
            self.assertFalse(transport.disconnecting)
            proto.readConnectionLost()
            self.assertEqual(transport.value(), b"PONG\r\nv\r\n")
            self.assertTrue(transport.disconnecting)

    def test_half_close_before_any_byte_just_closes(self) -> None:
        """A client that half-closes without sending anything is closed cleanly."""
        proto, transport = connect(self.node)
        proto.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_oversized_request_gets_err_closes_and_changes_nothing(self) -> None:
        """A line over the limit, whole or unterminated, gets ERR and a close; stored data stays."""
        for tail in (b"\n", b""):
            node = Node(Clock(), "t1", max_request=64)
            node.store.set(b"k", b"before")
            for chunk in (1, 7, 1000):
                proto, transport = connect(node)
                data = b"SET k " + b"x" * 100 + tail
                for i in range(0, len(data), chunk):
                    if transport.disconnecting:
                        break
                    proto.dataReceived(data[i : i + chunk])
                self.assertTrue(transport.value().startswith(b"ERR request exceeds"))
                self.assertEqual(transport.value().count(b"\n"), 1)
                self.assertTrue(transport.disconnecting)
                self.assertEqual(node.store.get(b"k"), b"before")
                # The buffer was dropped: memory does not grow with what follows.
                proto.dataReceived(b"y" * 10_000)
                inner = proto.inner
                self.assertLessEqual(inner._reader.held(), 64)  # type: ignore[union-attr]

    def test_request_at_the_limit_is_accepted(self) -> None:
        """A request exactly at the size limit is served."""
        node = Node(Clock(), "t1", max_request=64)
        line = b"SET k " + b"v" * (64 - 6)
        self.assertEqual(len(line), 64)
        self.assertEqual(converse(node, line + b"\n"), b"OK\r\n")
        self.assertEqual(node.store.get(b"k"), b"v" * 58)

    def test_a_line_at_the_limit_passes_with_either_line_ending(self) -> None:
        """A line of exactly --max-request bytes is served whether it ends in \\n or
        \\r\\n, fed whole or in chunks; one byte more is refused either way."""
        for ending in (b"\n", b"\r\n"):
            for chunk in (0, 1, 7):
                node = Node(Clock(), "t1", max_request=64)
                line = b"SET k " + b"v" * 58
                self.assertEqual(converse(node, line + ending, chunk), b"OK\r\n", (ending, chunk))
                over = Node(Clock(), "t1", max_request=64)
                reply = converse(over, line + b"v" + ending, chunk)
                self.assertTrue(reply.startswith(b"ERR request exceeds the limit of 64 bytes"))
                self.assertIsNone(over.store.get(b"k"))

    def test_keys_split_on_spaces_and_tabs_only_for_every_command(self) -> None:
        """A form feed or vertical tab is part of a key for DEL, GET and EXISTS as for SET."""
        converse(self.node, b"SET k\x0cx one\nSET k two\nSET x three\n")
        self.assertEqual(converse(self.node, b"GET k\x0cx\n"), b"one\r\n")
        self.assertEqual(converse(self.node, b"EXISTS k\x0bx k\t x\n"), b"2\r\n")
        self.assertEqual(converse(self.node, b"DEL k\x0cx\n"), b"1\r\n")
        self.assertEqual((self.node.store.get(b"k"), self.node.store.get(b"x")), (b"two", b"three"))
        self.assertEqual(parse_line(b"DEL a\x0cb \t c").args, (b"a\x0cb", b"c"))

    def test_status_report_ends_with_end(self) -> None:
        """STATUS lists node id, key and tombstone counts, and ends with END."""
        self.node.store.set(b"a", b"1")
        self.node.store.delete(b"b")
        lines = converse(self.node, b"STATUS\n").split(b"\r\n")
        self.assertIn(b"node t1", lines)
        self.assertIn(b"keys 1", lines)
        self.assertIn(b"tombstones 1", lines)
        self.assertEqual(lines[-2:], [b"END", b""])


class ParseLineTests(SynchronousTestCase):
    def test_set_value_is_the_rest_of_the_line_after_one_space(self) -> None:
        """SET keeps the value's own spaces and tabs; other commands split on whitespace."""
        self.assertEqual(parse_line(b"SET k  a\tb ").args, (b"k", b" a\tb "))
        self.assertEqual(parse_line(b"set\tk\tv").args, (b"k", b"v"))
        self.assertEqual(parse_line(b"DEL a  b\tc").args, (b"a", b"b", b"c"))
        self.assertEqual(parse_line(b"  get k").name, b"GET")


class BackpressureTests(SynchronousTestCase):
    def test_paused_by_a_full_write_buffer_reads_nothing_more(self) -> None:
        """While the transport is paused, no request is run; resuming answers them all, in order."""
        node = Node(Clock(), "t1")
        proto, transport = connect(node)
        inner = proto.inner
        self.assertIsNone(inner)
        proto.dataReceived(b"SET k v\n")
        inner = proto.inner
        assert inner is not None
        self.assertIs(transport.producer, inner)
        inner.pauseProducing()  # what a TCP transport does when its buffer is full
        self.assertEqual(transport.producerState, "paused")
        proto.dataReceived(b"GET k\nSET k w\nGET k\n")
        self.assertEqual(transport.value(), b"OK\r\n")
        self.assertEqual(node.store.get(b"k"), b"v")
        inner.resumeProducing()
        self.assertEqual(transport.value(), b"OK\r\nv\r\nOK\r\nw\r\n")
        self.assertEqual(transport.producerState, "producing")

    def test_half_close_while_paused_is_answered_after_resuming(self) -> None:
        """A client that half-closes while paused still gets every reply, then the close."""
        node = Node(Clock(), "t1")
        node.store.set(b"k", b"v")
        proto, transport = connect(node)
        proto.dataReceived(b"PING\n")
        inner = proto.inner
        assert inner is not None
        inner.pauseProducing()
        proto.dataReceived(b"GET k\nGET k\nGET k")
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        inner.resumeProducing()
        self.assertEqual(transport.value(), b"PONG\r\n" + b"v\r\n" * 3)
        self.assertTrue(transport.disconnecting)


#: Lines whose replies must not depend on where the stream is cut: both line
#: endings, a "\r" inside a value, one more "\r" before the ending (kept in
#: the value, as before), an empty line and a blank one.
SPLIT_SCRIPT = [
    (b"SET a one\r\n", b"OK\r\n"),
    (b"SET b x\ry\n", b"OK\r\n"),
    (b"SET c z\r\r\n", b"OK\r\n"),
    (b"\r\n", b""),
    (b" \t\n", b""),
    (b"GET a\n", b"one\r\n"),
    (b"GET b\r\n", b"x\ry\r\n"),
    (b"GET c\n", b"z\r\r\n"),
    (b"MGET a missing\r\n", b"one\r\n(nil)\r\nEND\r\n"),
]


class LineSplitTests(SynchronousTestCase):
    def test_every_split_point_gives_the_unsplit_replies(self) -> None:
        """The script cut into two reads at every byte (between a "\\r" and its
        "\\n" too) is answered exactly as when it arrives in one read."""
        data = b"".join(request for request, _ in SPLIT_SCRIPT)
        expected = b"".join(reply for _, reply in SPLIT_SCRIPT)
        self.assertEqual(converse(Node(Clock(), "t1"), data), expected)
        for at in range(1, len(data)):
            node = Node(Clock(), "t1")
            proto, transport = connect(node)
            proto.dataReceived(data[:at])
            proto.dataReceived(data[at:])
            self.assertEqual(transport.value(), expected, at)

    def test_a_line_at_the_limit_split_at_every_byte(self) -> None:
        """A line of exactly --max-request bytes ending in "\\r\\n", then a PING, cut at
        every byte: served; one byte longer: refused and closed, the PING not run."""
        line = b"SET k " + b"v" * 58
        for extra, expected in ((b"", b"OK\r\nPONG\r\n"),
                                (b"v", b"ERR request exceeds the limit of 64 bytes; closing\r\n")):
            data = line + extra + b"\r\nPING\n"
            for at in range(1, len(data)):
                node = Node(Clock(), "t1", max_request=64)
                proto, transport = connect(node)
                proto.dataReceived(data[:at])
                proto.dataReceived(data[at:])
                self.assertEqual(transport.value(), expected, (extra, at))
                self.assertEqual(transport.disconnecting, bool(extra))

    def test_half_close_after_a_last_line_at_the_limit_and_its_cr(self) -> None:
        """An unterminated last line of --max-request bytes and a "\\r" is run at the
        half-close; one of --max-request + 1 bytes without it is refused."""
        node = Node(Clock(), "t1", max_request=64)
        line = b"SET k " + b"v" * 58
        for last, expected in ((line + b"\r", b"OK\r\n"), (line + b"w", b"ERR request exceeds")):
            proto, transport = connect(node)
            proto.dataReceived(last)
            self.assertEqual(transport.value(), b"")
            proto.readConnectionLost()
            self.assertTrue(transport.value().startswith(expected), transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(node.store.get(b"k"), b"v" * 58)

    def test_a_line_completed_while_paused_runs_in_order_after_resuming(self) -> None:
        """Reads that arrive while the transport has paused the connection are kept,
        a line spread over them included, and run in order once it resumes."""
        node = Node(Clock(), "t1")
        proto, transport = connect(node)
        proto.dataReceived(b"SET k v\nGET ")
        inner = proto.inner
        assert inner is not None
        inner.pauseProducing()
        proto.dataReceived(b"k\r")
        proto.dataReceived(b"\nSET k w\r\nGE")
        proto.dataReceived(b"T k\n")
        self.assertEqual(transport.value(), b"OK\r\n")
        inner.resumeProducing()
        self.assertEqual(transport.value(), b"OK\r\nv\r\nOK\r\nw\r\n")


class LineWorkTests(SynchronousTestCase):
    def test_a_set_at_the_limit_in_1460_byte_reads_is_read_in_work_linear_in_its_bytes(
        self,
    ) -> None:
        """A text SET filling --max-request (1 MiB, and 4 MiB) arriving in 1,460-byte
        reads is stored, and the connection searched each byte for the line end
        once and copied it at most twice (Twisted's LineReceiver joined and split
        its whole buffer at every read: about 720 and 2,900 times the line)."""
        for limit in (1 << 20, 4 << 20):
            node = Node(Clock(), "t1", max_request=limit)
            value = b"v" * (limit - 6)
            stream = b"SET k " + value + b"\r\n"
            self.assertEqual(converse(node, stream, 1460), b"OK\r\n")
            self.assertEqual(node.store.get(b"k"), value)
            proto, transport = connect(node)
            for at in range(0, len(stream), 1460):
                proto.dataReceived(stream[at : at + 1460])
            self.assertEqual(transport.value(), b"OK\r\n")
            reader = proto.inner._reader  # type: ignore[union-attr]
            self.assertEqual(reader.scanned, len(stream), limit)
            self.assertLessEqual(reader.copied, 2 * len(stream), limit)

    def test_a_pipeline_of_short_lines_in_small_reads_is_read_in_linear_work(self) -> None:
        """20,000 pipelined SETs in 1,460-byte reads (lines straddling reads) are all
        answered, each byte searched for a line end at most twice (a read that may
        be one whole line is searched up to its first line end first) and copied
        at most twice."""
        node = Node(Clock(), "t1")
        stream = b"".join(b"SET key:%05d value-%d\r\n" % (i, i) for i in range(20000))
        proto, transport = connect(node)
        for at in range(0, len(stream), 1460):
            proto.dataReceived(stream[at : at + 1460])
        self.assertEqual(transport.value(), b"OK\r\n" * 20000)
        self.assertEqual(node.store.get(b"key:19999"), b"value-19999")
        reader = proto.inner._reader  # type: ignore[union-attr]
        self.assertLessEqual(reader.scanned, 2 * len(stream))
        self.assertLessEqual(reader.copied, 2 * len(stream))
