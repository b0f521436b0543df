"""RESP2 (and RESP3 after HELLO 3) over StringTransport: parsing fed whole and in
1..N-byte chunks, Redis's reply types and error wording, binary safety, the size
limit and protocol errors, ordering behind commits, and the Redis glob."""

from __future__ import annotations

import gc
import sys
from typing import Iterator, List, Sequence, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from distkv.front.commands import Outcome, glob_regex
from distkv.front.frontdoor import FrontDoor
from distkv.front.replies import LOADING, Error, Session
from distkv.front.resp import GROUP, PackedArguments, RequestReader, parse
from distkv.node import Node
from distkv.store.entries import version_of
from tests.proptest import examples
from tests.scratch import scratch_dir

ADDRESS = IPv4Address("TCP", "127.0.0.1", 6000)


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def connect(node: Node) -> Tuple[FrontDoor, StringTransport]:
    proto = node.factory().buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    proto.makeConnection(transport)
    return proto, transport


def decode(data: bytes) -> object:
    """A RESP2 reply (bulk strings, nil and arrays) as Python values."""
    value, rest = _decode(data)
    assert rest == b"", rest
    return value


def _decode(data: bytes) -> Tuple[object, bytes]:
    line, _, rest = data.partition(b"\r\n")
    kind, body = line[:1], line[1:]
    if kind == b"$":
        size = int(body)
        return (None, rest) if size < 0 else (rest[:size], rest[size + 2 :])
    if kind == b"*":
        items = []
        for _ in range(int(body)):
            item, rest = _decode(rest)
            items.append(item)
        return items, rest
    return line, rest


def converse(node: Node, data: bytes, chunk: int = 0) -> bytes:
    proto, transport = connect(node)
    step = chunk or len(data)
    for i in range(0, len(data), step):
        proto.dataReceived(data[i : i + step])
    return transport.value()


SCRIPT: Sequence[Tuple[Tuple[bytes, ...], bytes]] = [
    ((b"PING",), b"+PONG\r\n"),
    ((b"ping", b"hi there"), b"$8\r\nhi there\r\n"),
    ((b"ECHO", b"a\r\nb"), b"$4\r\na\r\nb\r\n"),
    ((b"SET", b"k", b"v\x00\r\n"), b"+OK\r\n"),
    ((b"GET", b"k"), b"$4\r\nv\x00\r\n\r\n"),
    ((b"GET", b"missing"), b"$-1\r\n"),
    ((b"SET", b"key with space", b""), b"+OK\r\n"),
    ((b"GET", b"key with space"), b"$0\r\n\r\n"),
    ((b"MGET", b"key with space", b"missing"), b"*2\r\n$0\r\n\r\n$-1\r\n"),  # empty, not nil
    ((b"SET", b"", b"v"), b"+OK\r\n"),  # Redis allows the empty key
    ((b"GET", b""), b"$1\r\nv\r\n"),
    ((b"DEL", b""), b":1\r\n"),
    ((b"SET", b"", b"v", b"XX"), b"$-1\r\n"),  # SET's options: see test_expiry_replies.py
    ((b"SET", b"k", b"v", b"EX", b"10", b"NX"), b"$-1\r\n"),
    ((b"SET", b"k", b"v", b"NX", b"XX"), b"-ERR syntax error\r\n"),
    ((b"SET", b"k"), b"-ERR wrong number of arguments for 'set' command\r\n"),
    ((b"MSET", b"a", b"1", b"b", b"2"), b"+OK\r\n"),
    ((b"MSET", b"a", b"1", b"b"), b"-ERR wrong number of arguments for 'mset' command\r\n"),
    ((b"MGET", b"a", b"nope", b"b"), b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"),
    ((b"EXISTS", b"a", b"nope", b"a"), b":2\r\n"),
    ((b"DEL", b"a", b"nope", b"b"), b":2\r\n"),
    ((b"DEL", b"a"), b":0\r\n"),
    ((b"DBSIZE",), b":2\r\n"),
    ((b"KEYS", b"k"), b"*1\r\n$1\r\nk\r\n"),
    ((b"KEYS", b"k*"), b"*2\r\n$1\r\nk\r\n$14\r\nkey with space\r\n"),
    ((b"SELECT", b"0"), b"+OK\r\n"),
    ((b"SELECT", b"1"), b"-ERR DB index is out of range\r\n"),
    ((b"SELECT", b"x"), b"-ERR value is not an integer or out of range\r\n"),
    ((b"CONFIG", b"GET", b"save"), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
    ((b"CONFIG", b"GET", b"appendonly"), b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"),
    ((b"CONFIG", b"SET", b"save", b""), b"-ERR CONFIG SET is not supported: DistKV is "
     b"configured by its command line\r\n"),
    ((b"CLIENT", b"GETNAME"), b"$-1\r\n"),  # no name yet
    ((b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"), b"+OK\r\n"),
    ((b"CLIENT", b"SETNAME", b"app"), b"+OK\r\n"),
    ((b"CLIENT", b"GETNAME"), b"$3\r\napp\r\n"),
    ((b"CLIENT", b"SETNAME", b"a b"), b"-ERR Client names cannot contain spaces, newlines "
     b"or special characters.\r\n"),
    ((b"CLIENT", b"KILL"), b"-ERR wrong number of arguments for 'client|kill' command\r\n"),
    ((b"CLIENT", b"NOPE"), b"-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"),
    ((b"COMMAND", b"DOCS"), b"*0\r\n"),
    ((b"COMMAND", b"COUNT"), b":68\r\n"),
    ((b"COMMAND", b"INFO", b"get", b"nosuch"),
     b"*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n$-1\r\n"),
    ((b"HELLO", b"4"), b"-NOPROTO unsupported protocol version\r\n"),
    ((b"HELLO", b"x"), b"-ERR Protocol version is not an integer or out of range\r\n"),
    ((b"FLY", b"me"), b"-ERR unknown command 'FLY', with args beginning with: 'me' \r\n"),
    ((b"GET",), b"-ERR wrong number of arguments for 'get' command\r\n"),
]


class RespParserTests(SynchronousTestCase):
    def test_complete_requests_and_the_rest(self) -> None:
        data = command(b"SET", b"k", b"v") + command(b"GET", b"k") + b"*2\r\n$3\r\nGET"
        requests, used, error = parse(data, 1 << 20)
        self.assertEqual((requests, error), ([[b"SET", b"k", b"v"], [b"GET", b"k"]], None))
        self.assertEqual(data[used:], b"*2\r\n$3\r\nGET")

    def test_inline_commands_are_accepted_too(self) -> None:
        self.assertEqual(parse(b"PING\r\nGET k\n\r\n", 100),
                         ([[b"PING"], [b"GET", b"k"]], 14, None))

    def test_malformed_input_is_a_protocol_error_in_redis_words(self) -> None:
        for data, words in (
            (b"*x\r\n", "invalid multibulk length"),
            (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$200\r\n", "invalid bulk length"),
            (b"*1\r\n$1" + b"0" * 40, "invalid bulk length"),
        ):
            requests, used, error = parse(command(b"PING") + data, 100)
            self.assertEqual((requests, used), ([[b"PING"]], len(data) + 14))
            self.assertIn(words, str(error))

    @settings(max_examples=examples(100), deadline=None)
    @given(st.lists(st.lists(st.binary(max_size=30), min_size=1, max_size=5), max_size=8),
           st.integers(1, 40))
    def test_any_split_of_the_stream_parses_the_same(self, requests: List[List[bytes]],
                                                     step: int) -> None:
        stream = b"".join(command(*args) for args in requests)
        got: List[List[bytes]] = []
        buffer = b""
        for i in range(0, len(stream), step):
            buffer += stream[i : i + step]
            done, used, error = parse(buffer, 1 << 20)
            self.assertIsNone(error)
            got.extend(done)
            buffer = buffer[used:]
        self.assertEqual((got, buffer), (requests, b""))

    @settings(max_examples=examples(200), deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.lists(
                    st.binary(max_size=12)
                    | st.sampled_from([b"\r\n", b"a\r\nb", b"$3", b"*2", b"\r", b"\n"]),
                    min_size=1,
                    max_size=5,
                ).map(lambda args: command(*args)),
                st.sampled_from([
                    b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",  # a length not written the usual way
                    b"*0\r\n", b"*-1\r\n", b"*1\r\n$-1\r\n", b"*1\r\n+x\r\n",
                    b"*1\r\n$2\r\nabc\r\n", b"*x\r\n", b"PING\r\n", b"\r\n",
                ]),
                st.binary(max_size=8),
            ),
            max_size=8,
        ),
        st.sampled_from([4, 10, 1 << 20]),
    )
    def test_the_fast_path_agrees_with_the_careful_parser(
        self, pieces: List[bytes], limit: int
    ) -> None:
        """Whatever the bytes (CR LF inside arguments, odd headers, garbage, a
        request cut short anywhere, a tiny limit), the fast path changes nothing."""
        stream = b"".join(pieces)
        for cut in range(len(stream) + 1):
            data = stream[:cut]
            self.assertEqual(parse(data, limit, fast=True), parse(data, limit, fast=False))

    @settings(max_examples=examples(200), deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(1, 6),  # how many in a row
                st.one_of(
                    st.lists(st.binary(max_size=6), min_size=2, max_size=3),
                    st.lists(st.sampled_from([b"k", b"\r\n", b"a\r\nb", b"$1", b"*3", b""]),
                             min_size=2, max_size=3),
                    st.lists(st.binary(min_size=9, max_size=12), min_size=1, max_size=4),
                ).map(lambda args: command(*args)),
            ),
            min_size=1,
            max_size=4,
        ),
        st.sampled_from([10, 1 << 20]),
    )
    def test_runs_of_one_shape_agree_with_the_careful_parser(
        self, runs: List[Tuple[int, bytes]], limit: int
    ) -> None:
        """Pipelines are runs of one shape (the fast path takes GETs and SETs a
        run at a time): a run cut short anywhere, ended by a request that is
        not plain or too long, or followed by another shape parses the same."""
        stream = b"".join(request * times for times, request in runs)
        for cut in range(len(stream) + 1):
            data = stream[:cut]
            self.assertEqual(parse(data, limit, fast=True), parse(data, limit, fast=False))

    def test_a_run_ended_by_a_long_argument_is_taken_up_to_it(self) -> None:
        sets = command(b"SET", b"k", b"v") * 3
        for long in (command(b"SET", b"k", b"v" * 5000), command(b"GET", b"k" * 5000)):
            gets = command(b"GET", b"k") * 2
            for before, n in ((sets, 3), (gets, 2), (sets + gets, 5), (gets + sets, 5)):
                data = before + long + sets
                requests, used, error = parse(data, 1 << 20, fast=True)
                self.assertEqual((requests, used, error), parse(data, 1 << 20, fast=False))
                self.assertEqual((len(requests), used, error), (n + 4, len(data), None))

    def test_long_arguments_and_large_buffers_leave_the_fast_path(self) -> None:
        for size in (4095, 4096, 4097, 70_000):
            value = bytes(range(256)) * (size // 256) + b"\r\n" * (size % 256 // 2) + b"x" * (size % 2)
            data = command(b"GET", b"k") + command(b"SET", b"k", value) + command(b"GET", b"k")
            for limit in (size - 1, size, 1 << 20):
                self.assertEqual(parse(data, limit, fast=True), parse(data, limit, fast=False))
            requests, used, error = parse(data, 1 << 20)
            self.assertEqual((requests, used, error),
                             ([[b"GET", b"k"], [b"SET", b"k", value], [b"GET", b"k"]], len(data), None))


def heap_size(root: object) -> int:
    """Bytes of heap of ``root`` and of every object it reaches (classes and
    modules aside), each counted once."""
    seen = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


#: What redis-server 7.0.15 answered to each request (sent alone on a fresh
#: connection; it closed the connection after each error).
LENGTHS_AS_REDIS_READS_THEM: Sequence[Tuple[bytes, bytes]] = [
    (b"*1\r\n$+4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$ 4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$4 \r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$\t4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$4\x0b\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$0_4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$04\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-0\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$\xd9\xa4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*+1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"* 1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1 \r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*0_1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*01\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*-0\r\n*1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*-01\r\n*1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*\r\n*1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*-\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*-9223372036854775809\r\n*1\r\n$4\r\nPING\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    # Counts of zero or less are ignored, down to the least 64-bit integer.
    (b"*-1\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
    (b"*0\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
    (b"*-9223372036854775808\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
]


class StrictLengthTests(SynchronousTestCase):
    def test_counts_and_lengths_are_read_as_redis_reads_them(self) -> None:
        """A sign, a space, a "_", a leading zero or "-0" in a bulk length or an
        argument count is a protocol error, as in Redis (Python's int() would
        take them); the reply and the close are Redis's, whole or byte by byte."""
        for data, reply in LENGTHS_AS_REDIS_READS_THEM:
            for chunk in (0, 1):
                node = Node(Clock(), "n")
                proto, transport = connect(node)
                for piece in chunks(data, chunk or len(data)):
                    proto.dataReceived(piece)
                self.assertEqual(transport.value(), reply, (data, chunk))
                self.assertEqual(transport.disconnecting, reply.startswith(b"-"), data)

    def test_lengths_of_up_to_20_characters_only(self) -> None:
        """Redis reads no number of more than 20 characters (a 64-bit one
        fits), and neither do we: a longer header is refused before ``int``
        reads it, a count of a million digits included."""
        for head, words in ((b"*-" + b"1" * 19, None),  # 20 characters, -1.1e18: ignored
                            (b"*-" + b"1" * 20, "invalid multibulk length"),
                            (b"*1" + b"0" * 1_000_000, "invalid multibulk length"),
                            (b"*1\r\n$" + b"0" * 21, "invalid bulk length"),
                            (b"*1\r\n$1" + b"0" * 1_000_000, "invalid bulk length")):
            requests, used, error = parse(head + b"\r\n" + command(b"PING"), 1 << 30)
            if words is None:
                self.assertEqual((requests, error), ([[b"PING"]], None))
            else:
                self.assertIn(words, str(error))

    def test_lengths_written_the_usual_way_still_parse(self) -> None:
        for length in (0, 1, 9, 10, 99, 100, 4095, 4096, 4097, 65536, 1 << 20):
            value = b"v" * length
            for fast in (True, False):
                data = command(b"SET", b"k", value)
                self.assertEqual(parse(data, 1 << 21, fast),
                                 ([[b"SET", b"k", value]], len(data), None))


class PartialRequestMemoryTests(SynchronousTestCase):
    """What an unfinished request costs the node: its parsed arguments are
    held packed, about their bytes plus one per argument, not a ``bytes``
    object each (about 44 bytes of heap for a 2-byte argument)."""

    #: The hostile case: MGET with 524,287 arguments of 2 bytes, 1 MiB by
    #: --max-request's count (4 MiB on the wire), sent but for the last.
    COUNT = (1 << 20) // 2 - 1

    def stream(self) -> Tuple[bytes, bytes]:
        head = b"*%d\r\n$4\r\nMGET\r\n" % (self.COUNT + 1)
        return head + b"$2\r\nab\r\n" * (self.COUNT - 1), b"$2\r\nab\r\n"

    def held_by_reader(self, data: bytes, step: int) -> Tuple[RequestReader, int]:
        """A reader fed ``data`` in reads of ``step`` bytes, and the bytes of
        heap it holds then: ``sys.getsizeof`` of every object it reaches
        (buffers with their spare room), which PyPy does not give."""
        if sys.implementation.name != "cpython":
            raise SkipTest("sys.getsizeof is CPython's")
        reader = RequestReader(1 << 20)
        requests: List[List[bytes]] = []
        for piece in chunks(data, step):
            self.assertIsNone(reader.feed(piece, requests))
        self.assertEqual(requests, [])
        return reader, heap_size(reader)

    def test_an_unfinished_request_of_tiny_arguments_costs_about_its_bytes(self) -> None:
        """524,286 arguments of 2 bytes held unfinished (1 MiB by the limit's
        count): the reader holds at most twice that (it was 27 times),
        whether they came in reads of 64 KiB, 1 MiB or 1,460 bytes, and the
        request is whole once its last argument comes."""
        data, last = self.stream()
        counted = 2 * (self.COUNT - 1)
        for step in (1 << 16, 1 << 20, 1460):
            reader, held = self.held_by_reader(data, step)
            self.assertLessEqual(held, 2 * counted, step)
            requests: List[List[bytes]] = []
            self.assertIsNone(reader.feed(last, requests))
            self.assertEqual(len(requests), 1)
            self.assertEqual(requests[0][:2], [b"MGET", b"ab"])
            self.assertEqual(len(requests[0]), self.COUNT + 1)
            self.assertEqual(set(requests[0][1:]), {b"ab"})
            self.assertFalse(reader.busy())

    def test_empty_arguments_cost_a_byte_each(self) -> None:
        """Arguments of no bytes count nothing against the limit; held
        unfinished they cost about a byte each (the most a request may have,
        a million, about 1 MiB)."""
        count = 500_000
        data = b"*%d\r\n$4\r\nMGET\r\n" % (count + 2) + b"$0\r\n\r\n" * count
        reader, held = self.held_by_reader(data, 1 << 16)
        self.assertLessEqual(held, 2 * count)

    def test_a_long_request_fed_in_any_reads_parses_as_a_whole(self) -> None:
        """Arguments of every size (empty, under and over 255 bytes, over 64 KiB),
        more than GROUP of them, cut into reads of any size, with requests before
        and after in the same reads: the requests are those of the whole stream."""
        args = [b"MSET"] + [bytes([i % 251]) * (i % 300) for i in range(3 * GROUP)]
        args[5000] = b"x" * 70_000
        args[9000] = b"\r\n" * 40_000
        stream = command(b"GET", b"k") + command(*args) + command(b"PING") + command(*args[:7])
        whole = parse(stream, 1 << 21, fast=False)
        self.assertEqual(whole[0][1], args)
        for step in (1, 7, 1460, 50_000, 1 << 16, 1 << 20):
            if step == 1:
                data = stream[:40_000]  # a byte at a time: the start is enough
                expected = parse(data, 1 << 21, fast=False)[0]
            else:
                data, expected = stream, whole[0]
            for fast in (True, False):
                reader = RequestReader(1 << 21, fast)
                requests: List[List[bytes]] = []
                for piece in chunks(data, step):
                    self.assertIsNone(reader.feed(piece, requests))
                self.assertEqual(requests, expected, (step, fast))

    def test_the_limit_counts_the_arguments_held_packed(self) -> None:
        """A request of many small arguments arriving over many reads is taken
        when they sum to the limit, and refused (before it runs) one byte past
        it, however it is cut."""
        limit = 100_000
        for extra, error in ((0, None), (1, "Protocol error: request exceeds the size limit")):
            args = [b"MGET"] + [b"ab"] * (limit // 2 - 1) + [b"ab"[: 2 + extra] + b"c" * extra]
            stream = command(*args)
            for step in (1460, 1 << 16):
                reader = RequestReader(limit)
                requests: List[List[bytes]] = []
                got = None
                for piece in chunks(stream, step):
                    got = got or reader.feed(piece, requests)
                self.assertEqual(got, error, (extra, step))
                self.assertEqual(requests, [] if error else [args])

    def test_packed_arguments_come_back_in_order(self) -> None:
        packed = PackedArguments()
        groups = [[b"a", b"", b"bc"], [b"x" * 300], [b"y" * 70_000, b"z"], [b"q"] * 70_000]
        for group in groups:
            packed.add(group)
        self.assertEqual(packed.count, sum(map(len, groups)))
        self.assertEqual(packed.take([b"last"]), [arg for group in groups for arg in group]
                         + [b"last"])
        self.assertEqual((packed.count, packed.take([])), (0, []))


class RespProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = Node(self.clock, "resp-node", max_request=1000)

    def test_every_command_reply_whole_and_in_chunks(self) -> None:
        """Each request gets Redis's reply, whether the stream comes whole or 1..7 bytes at a time."""
        for chunk in range(0, 8):
            node = Node(self.clock, "n", max_request=1000)
            stream = b"".join(command(*request) for request, _ in SCRIPT)
            expected = b"".join(reply for _, reply in SCRIPT)
            self.assertEqual(converse(node, stream, chunk), expected, f"chunk {chunk}")

    def test_one_by_one_each_reply_matches(self) -> None:
        proto, transport = connect(self.node)
        for request, reply in SCRIPT:
            transport.clear()
            proto.dataReceived(command(*request))
            self.assertEqual(transport.value(), reply, request)

    def test_every_command_refuses_the_argument_counts_its_arity_rules_out(self) -> None:
        """GET and SET count their own arguments, the rest are checked for them:
        either way a request with fewer (or, for a fixed arity, more) arguments
        than COMMAND reports gets Redis's arity error, whatever the case of
        its name, and one with the right count does not."""
        dispatcher = self.node.dispatcher
        session = Session("resp")
        checked = 0
        for name in dispatcher.names():
            arity = dispatcher.arity(name)
            wrong = [abs(arity) - 2] + ([arity] if arity > 0 else [])
            for spelled in (name, name.lower(), name.capitalize()):
                error = f"ERR wrong number of arguments for '{name.decode().lower()}' command"
                for count in wrong:
                    if count < 0:
                        continue
                    reply = dispatcher.run([spelled] + [b"0"] * count, session)
                    self.assertEqual(reply, Error(error), (spelled, count))
                    proto, transport = connect(Node(self.clock, "n"))
                    proto.dataReceived(command(spelled, *[b"0"] * count))
                    self.assertEqual(transport.value(), b"-" + error.encode() + b"\r\n")
                    checked += 1
                if name != b"QUIT":
                    reply = dispatcher.run([spelled] + [b"0"] * (abs(arity) - 1), session)
                    self.assertNotEqual(reply, Error(error), spelled)
        self.assertGreater(checked, 50)

    def test_while_loading_data_commands_are_refused_after_their_arity(self) -> None:
        """A node still loading refuses data commands with LOADING, but a
        request with the wrong number of arguments gets the arity error first,
        as before; SET with options gets LOADING (its syntax is judged later)."""
        self.node.dispatcher.loading = True
        proto, transport = connect(self.node)
        loading = b"-" + LOADING.message.encode() + b"\r\n"
        for request, reply in (
            ((b"GET", b"k"), loading),
            ((b"SET", b"k", b"v"), loading),
            ((b"SET", b"k", b"v", b"NX"), loading),
            ((b"MGET", b"k"), loading),
            ((b"GET",), b"-ERR wrong number of arguments for 'get' command\r\n"),
            ((b"GET", b"a", b"b"), b"-ERR wrong number of arguments for 'get' command\r\n"),
            ((b"SET", b"k"), b"-ERR wrong number of arguments for 'set' command\r\n"),
            ((b"MGET",), b"-ERR wrong number of arguments for 'mget' command\r\n"),
            ((b"PING",), b"+PONG\r\n"),
        ):
            transport.clear()
            proto.dataReceived(command(*request))
            self.assertEqual(transport.value(), reply, request)
        self.assertEqual(len(self.node.store), 0)

    def test_a_pipeline_of_hundreds_is_answered_in_order_in_one_write(self) -> None:
        proto, transport = connect(self.node)
        writes: List[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        stream = b"".join(command(b"SET", b"k%d" % i, b"%d" % i) for i in range(300))
        stream += b"".join(command(b"GET", b"k%d" % i) for i in range(300))
        proto.dataReceived(stream)
        self.assertEqual(len(writes), 1)
        self.assertEqual(writes[0], b"+OK\r\n" * 300 + b"".join(
            b"$%d\r\n%d\r\n" % (len(b"%d" % i), i) for i in range(300)))

    def test_the_writes_of_one_read_share_one_wall_clock_reading(self) -> None:
        """Pipelined writes that arrive in one read are stamped with one reading
        of the wall clock (their counters order them); the next read reads it
        again, and so does a write made outside any read."""
        readings: List[int] = []

        def wall() -> int:
            readings.append(1_000_000 + len(readings))  # moves on at every reading
            return readings[-1]

        node = Node(self.clock, "n", now_ms=wall)
        proto, transport = connect(node)
        sets = b"".join(command(b"SET", b"k%d" % i, b"v") for i in range(5))
        proto.dataReceived(sets + command(b"GET", b"k0"))
        versions = [version_of(node.store.entry(b"k%d" % i)) for i in range(5)]  # type: ignore[union-attr]
        self.assertEqual(len(readings), 1)
        self.assertEqual([(v.ms, v.counter) for v in versions], [(readings[0], i) for i in range(5)])
        proto.dataReceived(command(b"SET", b"k0", b"w") + command(b"SET", b"k1", b"w"))
        self.assertEqual(len(readings), 2)
        node.store.set(b"k9", b"direct")
        self.assertEqual(version_of(node.store.entry(b"k9")).ms, readings[2])  # type: ignore[union-attr]

    def test_the_clock_is_released_when_a_command_fails(self) -> None:
        """A command that raises in the middle of a read does not leave the clock
        held: later writes read the wall clock again."""
        readings: List[int] = []

        def wall() -> int:
            readings.append(2_000_000 + len(readings))
            return readings[-1]

        node = Node(self.clock, "n", now_ms=wall)
        proto, transport = connect(node)

        def boom(request: Sequence[bytes], session: Session) -> Outcome:
            raise RuntimeError("a bug in a command")

        node.dispatcher.commands[b"BOOM"] = boom
        with self.assertRaises(RuntimeError):
            proto.dataReceived(command(b"SET", b"a", b"1") + command(b"BOOM"))
        node.store.set(b"b", b"2")
        node.store.set(b"c", b"3")
        self.assertEqual(len(readings), 3)

    def test_protocol_error_answers_earlier_requests_then_closes(self) -> None:
        proto, transport = connect(self.node)
        proto.dataReceived(command(b"SET", b"k", b"v") + b"*1\r\n?oops\r\n" + command(b"PING"))
        self.assertEqual(transport.value(),
                         b"+OK\r\n-ERR Protocol error: expected '$', got '?'\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.node.store.get(b"k"), b"v")

    def test_a_request_over_the_limit_is_refused_and_nothing_changes(self) -> None:
        proto, transport = connect(self.node)
        proto.dataReceived(command(b"SET", b"big", b"x" * 2000))
        self.assertIn(b"-ERR Protocol error: invalid bulk length", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(self.node.store.get(b"big"))
        proto, transport = connect(self.node)
        many = b"*200\r\n" + b"$10\r\nvaluevalue\r\n" * 102  # never completes: bounded anyway
        proto.dataReceived(many)
        self.assertIn(b"request exceeds the size limit", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_quit_answers_then_closes_and_ignores_the_rest(self) -> None:
        proto, transport = connect(self.node)
        proto.dataReceived(command(b"QUIT") + command(b"SET", b"after", b"x"))
        self.assertEqual(transport.value(), b"+OK\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(self.node.store.get(b"after"))

    def test_command_names_in_any_case_and_unknown_ones_named_as_sent(self) -> None:
        stream = (command(b"set", b"k", b"1") + command(b"SeT", b"k", b"2") + command(b"get", b"k")
                  + command(b"fly", b"me") + command(b"gEt"))
        self.assertEqual(converse(self.node, stream), b"+OK\r\n+OK\r\n$1\r\n2\r\n"
                         b"-ERR unknown command 'fly', with args beginning with: 'me' \r\n"
                         b"-ERR wrong number of arguments for 'get' command\r\n")

    def test_total_commands_processed_counts_each_request_and_none_after_quit(self) -> None:
        stats = self.node.dispatcher.stats
        converse(self.node, command(b"SET", b"k", b"v") * 5 + command(b"GET", b"k") * 3)
        self.assertEqual(stats.commands_processed, 8)
        converse(self.node, command(b"PING") + command(b"QUIT") + command(b"SET", b"a", b"b") * 4)
        self.assertEqual(stats.commands_processed, 10)
        proto = self.node.factory().buildProtocol(ADDRESS)
        proto.makeConnection(StringTransport(peerAddress=ADDRESS))
        proto.dataReceived(b"SET t v\nGET t\n")  # the text protocol counts too
        self.assertEqual(stats.commands_processed, 12)

    def test_half_close_answers_everything_then_closes(self) -> None:
        proto, transport = connect(self.node)
        proto.dataReceived(command(b"SET", b"k", b"v") + command(b"GET", b"k"))
        proto.readConnectionLost()
        self.assertEqual(transport.value(), b"+OK\r\n$1\r\nv\r\n")
        self.assertTrue(transport.disconnecting)

    def test_hello_3_switches_to_resp3_nil_and_maps(self) -> None:
        proto, transport = connect(self.node)
        proto.dataReceived(command(b"HELLO", b"3"))
        self.assertTrue(transport.value().startswith(b"%8\r\n$6\r\nserver\r\n$5\r\nredis\r\n"))
        self.assertIn(b"$5\r\nproto\r\n:3\r\n", transport.value())
        transport.clear()
        proto.dataReceived(command(b"MGET", b"nope") + command(b"CONFIG", b"GET", b"save"))
        self.assertEqual(transport.value(), b"*1\r\n_\r\n%1\r\n$4\r\nsave\r\n$0\r\n\r\n")
        transport.clear()
        proto.dataReceived(command(b"SET", b"k", b"v\r\n") + command(b"GET", b"k")
                           + command(b"GET", b"no"))
        self.assertEqual(transport.value(), b"+OK\r\n$3\r\nv\r\n\r\n_\r\n")
        transport.clear()
        proto.dataReceived(command(b"GET", b"no"))  # alone in its read, too
        self.assertEqual(transport.value(), b"_\r\n")

    def test_info_has_redis_sections_and_the_peers(self) -> None:
        node = Node(self.clock, "info-node", max_request=1000)
        node.add_peer("127.0.0.1", 7999)
        node.store.set(b"k", b"v")
        proto, transport = connect(node)
        proto.dataReceived(command(b"INFO"))
        text = transport.value().decode()
        for needle in ("# Server\r\nredis_version:", "# Clients\r\nconnected_clients:1",
                       "# Replication\r\nrole:master\r\nnode_id:info-node",
                       "peer0:addr=127.0.0.1:7999,node=-,link=down",
                       "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"):
            self.assertIn(needle, text)
        transport.clear()
        proto.dataReceived(command(b"INFO", b"keyspace"))
        self.assertEqual(transport.value(),
                         b"$44\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n\r\n")

    def test_replies_wait_for_the_commit_and_keep_their_order(self) -> None:
        node = Node(self.clock, "disk", data_dir=scratch_dir(self))
        node.start()
        self.addCleanup(node.crash)
        proto, transport = connect(node)
        proto.dataReceived(command(b"GET", b"k") + command(b"SET", b"k", b"v")
                           + command(b"GET", b"k") + command(b"QUIT"))
        self.assertEqual(transport.value(), b"$-1\r\n")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"$-1\r\n+OK\r\n$1\r\nv\r\n+OK\r\n")
        self.assertTrue(transport.disconnecting)

    def test_a_failed_commit_answers_every_waiting_write_with_an_error(self) -> None:
        import sqlite3

        node = Node(self.clock, "disk", data_dir=scratch_dir(self))
        node.start()
        self.addCleanup(node.crash)

        def broken(*args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        node.journal.disk.commit = broken  # type: ignore[union-attr, method-assign]
        proto, transport = connect(node)
        proto.dataReceived(command(b"SET", b"a", b"1") + command(b"PING")
                           + command(b"SET", b"b", b"2") + command(b"SET", b"c", b"3"))
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0)
        error = b"-ERR write not persisted: disk I/O error\r\n"
        self.assertEqual(transport.value(), error + b"+PONG\r\n" + error * 2)

    def test_scan_visits_every_key_present_throughout(self) -> None:
        """Keys present for the whole iteration all come back, with writes and
        deletes going on meanwhile; deleted keys are not returned after their delete."""
        store = self.node.store
        for i in range(500):
            store.set(b"key%d" % i, b"v")
        proto, transport = connect(self.node)
        seen: List[bytes] = []
        cursor = b"0"
        for step in range(1000):
            transport.clear()
            proto.dataReceived(command(b"SCAN", cursor, b"COUNT", b"7"))
            cursor, keys = decode(transport.value())  # type: ignore[misc]
            seen.extend(keys)
            store.set(b"new%d" % step, b"v")
            if step < 10:
                store.delete(b"key%d" % (499 - step))
            if cursor == b"0":
                break
        self.assertEqual(cursor, b"0")
        kept = {b"key%d" % i for i in range(490)}
        self.assertEqual(kept - set(seen), set())
        self.assertEqual(len(seen), len(set(seen)))  # no key twice

    def test_scan_match_and_bad_arguments(self) -> None:
        for i in range(20):
            self.node.store.set(b"user:%d" % i, b"v")
            self.node.store.set(b"item:%d" % i, b"v")
        reply = converse(self.node, command(b"SCAN", b"0", b"MATCH", b"user:1?", b"COUNT", b"1000"))
        self.assertTrue(reply.startswith(b"*2\r\n$1\r\n0\r\n*10\r\n"))
        self.assertNotIn(b"item", reply)
        for args, error in (((b"SCAN", b"x"), b"-ERR invalid cursor\r\n"),
                            ((b"SCAN", b"0", b"COUNT", b"x"),
                             b"-ERR value is not an integer or out of range\r\n"),
                            ((b"SCAN", b"0", b"BOGUS", b"1"), b"-ERR syntax error\r\n"),
                            ((b"SCAN", b"0", b"COUNT"), b"-ERR syntax error\r\n")):
            self.assertEqual(converse(self.node, command(*args)), error)


class GlobTests(SynchronousTestCase):
    def test_redis_glob_syntax(self) -> None:
        cases = [
            (b"*", b"anything", True), (b"h?llo", b"hello", True), (b"h?llo", b"hllo", False),
            (b"h*llo", b"heeeello", True), (b"h[ae]llo", b"hallo", True),
            (b"h[ae]llo", b"hillo", False), (b"h[^e]llo", b"hallo", True),
            (b"h[^e]llo", b"hello", False), (b"h[a-b]llo", b"hbllo", True),
            (b"h[a-b]llo", b"hcllo", False), (b"h\\*llo", b"h*llo", True),
            (b"h\\*llo", b"hello", False), (b"user:*", b"user:\nx", True),
            (b"a.c", b"abc", False), (b"[", b"[", False),  # as Redis: an unterminated set
        ]
        for pattern, key, expected in cases:
            self.assertEqual(bool(glob_regex(pattern).match(key)), expected, (pattern, key))


class NoDelayTests(SynchronousTestCase):
    def test_client_and_peer_connections_switch_off_nagle(self) -> None:
        """TCP_NODELAY on every client connection and on the links to peers."""

        class Transport(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.nodelay = enabled

        node = Node(Clock(), "n")
        door = node.factory().buildProtocol(ADDRESS)
        transport = Transport()
        door.makeConnection(transport)
        self.assertTrue(transport.nodelay)
        link = node.add_peer("127.0.0.1", 7999)
        assert link is not None
        push = link.buildProtocol(None)
        transport = Transport()
        push.makeConnection(transport)
        self.assertTrue(transport.nodelay)
        push.connectionLost()
