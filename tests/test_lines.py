"""The text protocol's line reader on its own (no reactor): the lines of a stream
however it is cut into reads, the limit with either line ending, and work and
memory linear in the bytes received."""

from __future__ import annotations

from typing import List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.lines import LineReader, LineTooLongError
from tests.proptest import PYPY, examples


def whole(stream: bytes, limit: int) -> Tuple[List[bytes], bool]:
    """What splitting the whole stream at once gives: its complete lines up to
    the first one over the limit, and whether there was one (a line still
    arriving is over once it holds limit + 2 bytes)."""
    *lines, rest = stream.split(b"\n")
    out = []
    for line in lines:
        line = line[:-1] if line.endswith(b"\r") else line
        if len(line) > limit:
            return out, True
        out.append(line)
    return out, len(rest) > limit + 1


def read(reader: LineReader, reads: List[bytes]) -> Tuple[List[bytes], bool]:
    """Feed ``reads`` one at a time, taking every line after each."""
    got: List[bytes] = []
    for data in reads:
        reader.feed(data)
        while True:
            try:
                line: Optional[bytes] = reader.next_line()
            except LineTooLongError:
                return got, True
            if line is None:
                break
            got.append(line)
    return got, False


def cut(stream: bytes, sizes: List[int]) -> List[bytes]:
    reads = []
    at = 0
    while at < len(stream):
        for size in sizes:
            reads.append(stream[at : at + size])
            at += size
    return [data for data in reads if data]


class LineReaderTests(SynchronousTestCase):
    @settings(max_examples=examples(300), deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=30),
                st.sampled_from([b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\r", b"x" * 63]),
            ),
            max_size=30,
        ),
        st.lists(st.integers(1, 70), min_size=1, max_size=10),
        st.sampled_from([0, 1, 20, 64, 1 << 20]),
    )
    def test_the_lines_are_what_splitting_the_whole_stream_gives(
        self, pieces: List[bytes], sizes: List[int], limit: int
    ) -> None:
        """However a stream is cut into reads (a "\\r\\n" split between its bytes
        included), the reader gives the lines, and refuses the first line over
        the limit, that splitting the whole stream gives."""
        stream = b"".join(pieces)
        self.assertEqual(read(LineReader(limit), cut(stream, sizes)), whole(stream, limit))

    def test_a_line_at_the_limit_passes_with_either_ending_split_anywhere(self) -> None:
        """A line of exactly ``limit`` bytes passes with "\\n" or "\\r\\n" wherever the
        stream is cut; one byte more is refused, and everything held is let go."""
        for ending in (b"\n", b"\r\n"):
            for extra, refused in ((0, False), (1, True)):
                stream = b"a" * (64 + extra) + ending + b"PING\n"
                for at in range(len(stream) + 1):
                    reader = LineReader(64)
                    got = read(reader, [stream[:at], stream[at:]])
                    expected = ([], True) if refused else ([b"a" * 64, b"PING"], False)
                    self.assertEqual(got, expected, (ending, extra, at))
                    if refused:
                        self.assertEqual(reader.held(), 0)

    def test_an_unfinished_line_is_refused_once_it_is_certainly_over(self) -> None:
        """limit + 1 bytes without a line end may still be the line and its "\\r":
        held; the next byte makes it too long, and the refusal names its start."""
        reader = LineReader(64)
        self.assertEqual(read(reader, [b"SET k ", b"v" * 59]), ([], False))
        self.assertEqual(reader.held(), 65)
        reader.feed(b"v")
        with self.assertRaises(LineTooLongError) as caught:
            reader.next_line()
        self.assertEqual(caught.exception.start, b"SET k " + b"v" * 60)
        self.assertEqual(reader.held(), 0)

    def test_rest_is_the_unterminated_last_line(self) -> None:
        """At the end of the stream, what is held is the last line without its "\\n"."""
        reader = LineReader(64)
        self.assertEqual(read(reader, [b"PING\nGET", b" k\r"]), ([b"PING"], False))
        self.assertEqual(reader.rest(), b"GET k\r")
        self.assertEqual(reader.held(), 0)

    def test_a_4_mib_line_in_1460_byte_reads_is_searched_once_and_copied_at_most_twice(
        self,
    ) -> None:
        """Each byte of a 4 MiB line arriving in 1,460-byte reads is searched for
        the line end once, and copied at most twice (into a block, then into the
        line), not once per read as Twisted's LineReceiver did."""
        stream = b"SET k " + b"v" * ((4 << 20) - 6) + b"\r\n"
        reader = LineReader(4 << 20)
        got = read(reader, cut(stream, [1460]))
        self.assertEqual(got, ([stream[:-2]], False))
        self.assertEqual(reader.scanned, len(stream))
        self.assertLessEqual(reader.copied, 2 * len(stream))

    def test_a_line_sent_a_byte_per_read_is_held_in_about_its_size(self) -> None:
        """256 KiB of a line that arrives one byte per read is held in blocks, in
        about its own size, not as a quarter of a million small objects (~10 MB)."""
        if PYPY:
            self.skipTest("PyPy has no tracemalloc")
        import tracemalloc

        reader = LineReader(1 << 20)
        data = [bytes([97 + i % 26]) for i in range(256 << 10)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for byte in data:
                reader.feed(byte)
                self.assertIsNone(reader.next_line())
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(reader.held(), 256 << 10)
        self.assertLess(held, 2 * (256 << 10))
        reader.feed(b"\n")
        self.assertEqual(reader.next_line(), b"".join(data))
