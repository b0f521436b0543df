"""The peer wire format: frames survive any chunking; bad input is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv import wire
from distkv.hlc import Version
from distkv.store import make_entry

writes = st.builds(
    wire.Write,
    st.integers(1, 2**63),
    st.binary(min_size=1, max_size=40),
    st.builds(
        make_entry,
        st.one_of(st.none(), st.binary(max_size=60)),
        st.builds(
            Version,
            st.integers(0, 2**62),
            st.integers(0, 2**31),
            st.from_regex(r"\A[a-z0-9]{1,10}\Z"),
        ),
    ),
)


class WireTests(SynchronousTestCase):
    @given(st.lists(writes, max_size=20), st.lists(st.integers(1, 50), min_size=1))
    def test_frames_round_trip_through_any_chunking(self, frames: list, cuts: list) -> None:  # type: ignore[type-arg]
        """Write and ack frames decode to what was encoded however the stream is split."""
        stream = b"".join(wire.encode_write(*f) for f in frames) + wire.encode_ack(42)
        decoder = wire.FrameDecoder(1 << 20)
        got = []
        offset, i = 0, 0
        while offset < len(stream):
            size = cuts[i % len(cuts)]
            got.extend(decoder.feed(stream[offset : offset + size]))
            offset += size
            i += 1
        self.assertEqual(got, list(frames) + [wire.Ack(42)])

    @given(st.lists(writes, max_size=20))
    def test_bulk_write_reader_agrees_with_the_frame_decoder(self, frames: list) -> None:  # type: ignore[type-arg]
        """iter_writes (how a data dir is read back) gives what FrameDecoder gives."""
        stream = b"".join(wire.encode_write(*f) for f in frames)
        self.assertEqual([wire.Write(*w) for w in wire.iter_writes(stream)], list(frames))

    def test_bulk_write_reader_refuses_anything_but_whole_writes(self) -> None:
        write = wire.encode_write(1, b"k", make_entry(b"v", Version(1, 2, "n")))
        key_len_at = len(write) - len(b"kv") - 4
        overlong = write[:key_len_at] + (3).to_bytes(4, "big") + write[key_len_at + 4 :]
        for bad in (wire.encode_ack(3), write[:-1], write + b"\x00", write[:4] + b"W\x00",
                    overlong + write):  # a key running into the next frame
            with self.assertRaises(wire.WireError):
                list(wire.iter_writes(bad))

    def test_oversized_frame_is_refused(self) -> None:
        """A length prefix over the limit is a protocol error, before any body is buffered."""
        decoder = wire.FrameDecoder(100)
        with self.assertRaises(wire.WireError):
            decoder.feed(b"\x00\x00\x10\x00W")

    def test_garbage_frames_are_refused(self) -> None:
        """Unknown kinds and truncated writes raise WireError instead of storing anything."""
        for body in (b"Z", b"W\x00\x01", b"A\x00", b"Hx"):
            with self.assertRaises(wire.WireError):
                wire.FrameDecoder(1 << 10).feed(len(body).to_bytes(4, "big") + body)

    def test_handshake_round_trip_and_refusal(self) -> None:
        """Hello lines parse back; malformed ones and refusals are told apart."""
        hello = wire.Hello("node-1", "abc123")
        self.assertEqual(wire.parse_hello(wire.hello_line(wire.MAGIC, hello), wire.MAGIC), hello)
        self.assertEqual(wire.parse_reply(wire.hello_line(wire.OK_WORD, hello)), hello)
        self.assertEqual(
            wire.parse_reply(wire.refusal_line("self", "it is me")), ("self", "it is me")
        )
        for bad in (b"DISTKV-PEER 2 a b\r\n", b"DISTKV-PEER 1 bad/id ab\r\n", b"HELLO\r\n"):
            with self.assertRaises(wire.WireError):
                wire.parse_hello(bad, wire.MAGIC)


class AntiEntropyFrameTests(SynchronousTestCase):
    def test_digest_key_list_and_marks_round_trip(self) -> None:
        """Digest offers, key lists (empty or not) and round marks decode to what was sent."""
        from distkv.digest import Digest

        digest = Digest({b"k": Version(5, 1, "a")})
        versions = [(b"a", Version(1, 2, "n1")), (b"b" * 300, Version(3, 4, "n2"))]
        stream = (
            wire.encode_digest(7, digest.encode())
            + wire.encode_key_list(7, 1023, versions)
            + wire.encode_key_list(7, 0, [])
            + b"".join(wire.encode_mark(kind, 7) for kind in (b"E", b"S", b"s"))
        )
        frames = wire.FrameDecoder(1 << 20).feed(stream)
        self.assertEqual(
            frames,
            [
                wire.DigestOffer(7, digest.encode()),
                wire.KeyList(7, 1023, versions),
                wire.KeyList(7, 0, []),
                wire.RoundMark(b"E", 7),
                wire.RoundMark(b"S", 7),
                wire.RoundMark(b"s", 7),
            ],
        )

    def test_truncated_key_list_is_refused(self) -> None:
        """A key list whose entries run past the frame is a protocol error."""
        frame = wire.encode_key_list(1, 2, [(b"key", Version(1, 1, "n"))])
        body = frame[4:-2]
        with self.assertRaises(wire.WireError):
            wire.FrameDecoder(1 << 10).feed(len(body).to_bytes(4, "big") + body)
