"""The peer wire format: frames survive any chunking; bad input is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.store.entries import make_entry
from distkv.store.hlc import Version

writes = st.builds(
    wire.Write,
    st.integers(1, wire.MAX_SEQ),
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

    @given(st.lists(st.tuples(
        st.integers(0, wire.MAX_SEQ),
        st.binary(max_size=12),
        st.one_of(st.none(), st.binary(max_size=30)),
        st.integers(0, 2**62),
        st.sampled_from(["n1", "n2", "node-a", "node-b", "node-c", "x"]),
        st.sampled_from([0, 0, 0, 1, 2**41]),
    ), max_size=40))
    def test_bulk_write_reader_agrees_on_runs_of_one_node(self, rows: list) -> None:  # type: ignore[type-arg]
        """decode_writes reads a plain value written by the node of the frame
        before it in one go: runs of one node id, node ids of one length
        but different names (node-a, node-b), tombstones and expiries
        between them, all decode as FrameDecoder decodes them."""
        frames = [wire.Write(seq, key, make_entry(value, Version(ms, 7, node), expires))
                  for seq, key, value, ms, node, expires in rows]
        stream = b"".join(wire.encode_write(*f) for f in frames)
        seqs, keys, entries = wire.decode_writes(stream)
        self.assertEqual([wire.Write(*w) for w in zip(seqs, keys, entries)], frames)
        self.assertEqual(wire.FrameDecoder(1 << 20).feed(stream), frames)

    def test_bulk_write_reader_refuses_a_bad_frame_after_one_of_its_node(self) -> None:
        """A frame cut short, with a key running past its end, or of another
        kind, is refused when it follows a whole one of the same node (the
        one-struct path), as when it comes first."""
        first = wire.encode_write(1, b"a", make_entry(b"1", Version(1, 2, "n")))
        write = wire.encode_write(2, b"k", make_entry(b"v", Version(1, 3, "n")))
        key_len_at = len(write) - len(b"kv") - 4
        overlong = write[:key_len_at] + (3).to_bytes(4, "big") + write[key_len_at + 4 :]
        other_kind = write[:4] + b"X" + write[5:]
        for bad in (write[:-1], overlong, overlong + write, other_kind, write + write[:9]):
            with self.assertRaises(wire.WireError):
                wire.decode_writes(first + bad)
        self.assertEqual(len(wire.decode_writes(first + write + first)[0]), 3)

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
        """Greetings and answers parse back, with or without a port, a nonce or a
        proof, serving or loading; malformed ones and refusals are told apart."""
        hello = wire.Hello("node-1", "abc123")
        nonce = bytes(range(32))
        for greeting in (wire.Greeting(hello, 9001), wire.Greeting(hello, None),
                         wire.Greeting(hello, 9001, nonce)):
            self.assertEqual(wire.parse_greeting(wire.greeting_line(greeting)), greeting)
        for accept in (wire.Accept(hello, 0, True), wire.Accept(hello, 2**63 - 1, False),
                       wire.Accept(hello, 5, True, nonce)):
            self.assertEqual(wire.parse_reply(wire.accept_line(accept)), accept)
        self.assertEqual(wire.parse_challenge(wire.challenge_line("node-1", nonce)),
                         ("node-1", nonce))
        self.assertEqual(wire.parse_proof(wire.proof_line(nonce)), nonce)
        self.assertEqual(
            wire.parse_reply(wire.refusal_line("self", "it is me")), ("self", "it is me")
        )
        for bad in (b"DISTKV-PEER 6 a b -\r\n", b"DISTKV-PEER 6 bad/id ab 9000 -\r\n",
                    b"HELLO\r\n", b"DISTKV-PEER 6 a b 90000 -\r\n", b"DISTKV-PEER 6 a b -1 -\r\n",
                    b"DISTKV-PEER 6 a b 9000 - extra\r\n", b"DISTKV-PEER 6 a b 9000 abcd\r\n",
                    b"DISTKV-PEER 6 a b 9000 " + b"G" * 64 + b"\r\n"):
            with self.assertRaises(wire.WireError):
                wire.parse_greeting(bad)
        for bad in (b"DISTKV-PEER-OK 6 a b 1 -\r\n", b"DISTKV-PEER-OK 6 a b x serving -\r\n",
                    b"DISTKV-PEER-OK 6 a b 1 maybe -\r\n",
                    b"DISTKV-PEER-OK 6 a b %d serving -\r\n" % 2**63,
                    b"DISTKV-PEER-OK 6 a b 1 serving 00\r\n"):
            with self.assertRaises(wire.WireError):
                wire.parse_reply(bad)
        for bad in (b"DISTKV-PEER-CHALLENGE 6 a -\r\n", b"DISTKV-PEER-CHALLENGE 2 a " + b"0" * 64,
                    b"DISTKV-PEER-CHALLENGE 6 bad/id " + b"0" * 64):
            with self.assertRaises(wire.WireError):
                wire.parse_challenge(bad)
        # Nodes of the releases before (protocols 3 to 5) are refused with
        # both versions named, never linked and fed frames they cannot read.
        for old in ("3", "4", "5"):
            with self.assertRaisesRegex(wire.WireError, f"version b'{old}' .*speaks 6"):
                wire.parse_greeting(f"DISTKV-PEER {old} a b 9000 -\r\n".encode())
        for bad in (b"DISTKV-PEER-PROOF -\r\n", b"DISTKV-PEER-PROOF " + b"0" * 63, b"PROOF x"):
            with self.assertRaises(wire.WireError):
                wire.parse_proof(bad)

    def test_a_version_1_peer_is_told_to_run_the_same_release(self) -> None:
        """A node of the previous protocol is refused with a reason that says what to do."""
        with self.assertRaises(wire.WireError) as caught:
            wire.parse_greeting(b"DISTKV-PEER 1 a b\r\n")
        self.assertIn("same DistKV release", str(caught.exception))


class AntiEntropyFrameTests(SynchronousTestCase):
    def test_digest_key_list_and_marks_round_trip(self) -> None:
        """Digest offers, key lists (empty or not) and round marks decode to what was sent."""
        from distkv.store.digest import Digest

        digest = Digest({b"k": Version(5, 1, "a")})
        versions = [(b"a", Version(1, 2, "n1")), (b"b" * 300, Version(3, 4, "n2"))]
        stream = (
            wire.encode_digest(7, digest.encode())
            + wire.encode_key_list(7, 1023, versions)
            + wire.encode_key_list(7, 0, [])
            + wire.encode_mark(b"E", 7)
            + wire.encode_round_end(7, Version(9, 1, "n1"), True)
            + wire.encode_round_end(8, Version(9, 2, "n1"), False)
            + wire.encode_mark(b"s", 7)
        )
        frames = wire.FrameDecoder(1 << 20).feed(stream)
        self.assertEqual(
            frames,
            [
                wire.DigestOffer(7, digest.encode()),
                wire.KeyList(7, 1023, versions),
                wire.KeyList(7, 0, []),
                wire.RoundMark(b"E", 7),
                wire.RoundMark(b"S", 7, Version(9, 1, "n1"), True),
                wire.RoundMark(b"S", 8, Version(9, 2, "n1"), False),
                wire.RoundMark(b"s", 7),
            ],
        )

    def test_truncated_key_list_is_refused(self) -> None:
        """A key list whose entries run past the frame is a protocol error."""
        frame = wire.encode_key_list(1, 2, [(b"key", Version(1, 1, "n"))])
        body = frame[4:-2]
        with self.assertRaises(wire.WireError):
            wire.FrameDecoder(1 << 10).feed(len(body).to_bytes(4, "big") + body)


def _decode_all(max_request: int, stream: bytes) -> list:  # type: ignore[type-arg]
    return wire.FrameDecoder(wire.max_frame(max_request)).feed(stream)


class SequenceRangeTests(SynchronousTestCase):
    def test_numbers_sqlite_cannot_keep_are_refused(self) -> None:
        """A write or ack numbered 2**63 or more, or a write stamped that late, is a
        protocol error: stored, it would make every later commit fail."""
        entry = make_entry(b"v", Version(1, 0, "n"))
        for frame in (wire.encode_write(2**63, b"k", entry), wire.encode_ack(2**63),
                      wire.encode_write(1, b"k", make_entry(b"v", Version(2**63, 0, "n")))):
            with self.assertRaises(wire.WireError):
                wire.decode_body(frame[4:])


class RoundEndTests(SynchronousTestCase):
    def test_a_round_end_carries_whether_its_sender_serves_and_the_members_it_knows(self) -> None:
        """S marks round-trip with no member list (the sender cannot tell), an empty
        one, and the longest ids; a bad flag, a bad id or a truncated list is refused."""
        clock = Version(9, 1, "n1")
        for serving, members in ((True, None), (False, ()), (False, ("n2", "z" * 64))):
            frame = wire.encode_round_end(3, clock, serving, members)
            self.assertEqual(wire.decode_body(frame[4:]),
                             wire.RoundMark(b"S", 3, clock, serving, members))
        good = wire.encode_round_end(3, clock, False, ("n2",))[4:]
        for bad in (good[:5] + b"\x04" + good[6:], good.replace(b"n2", b"n/"), good[:-1],
                    good + b"x", wire.encode_round_end(3, clock, False, ["n"] * 1025)[4:]):
            with self.assertRaises(wire.WireError):
                wire.decode_body(bad)


class FragmentedStreamTests(SynchronousTestCase):
    def test_a_large_frame_in_many_small_reads_is_held_unjoined(self) -> None:
        """A 1 MiB write arriving 1,460 bytes at a time is collected as pieces, not
        joined again on every read (which made the work quadratic)."""
        frame = wire.encode_write(1, b"k", make_entry(b"x" * (1 << 20), Version(1, 0, "n")))
        decoder = wire.FrameDecoder(2 << 20)
        head, last = frame[:-10], frame[-10:]
        for offset in range(0, len(head), 1460):
            self.assertEqual(decoder.feed(head[offset : offset + 1460]), [])
        self.assertEqual(decoder.pending(), len(head))
        self.assertEqual(len(decoder._parts), (len(head) + 1459) // 1460)
        (write,) = decoder.feed(last)
        self.assertEqual(write.entry[0], b"x" * (1 << 20))  # type: ignore[union-attr]
        self.assertEqual(decoder.pending(), 0)

    def test_an_oversized_frame_is_refused_on_its_length_alone(self) -> None:
        """The length prefix of a frame over the limit is enough to refuse it."""
        with self.assertRaises(wire.WireError):
            wire.FrameDecoder(1000).feed((1001).to_bytes(4, "big"))


class FrameLimitTests(SynchronousTestCase):
    """Every frame a node can emit is accepted by a peer running the same options."""

    LIMITS = (1, 100, 4096, 8192, 300_000, 1 << 20)

    def test_the_largest_write_fits_every_limit(self) -> None:
        """A write whose key and value fill --max-request, by a 64-character node id, decodes."""
        for limit in self.LIMITS:
            key = b"k" * max(1, limit // 3)
            value = b"v" * (limit - len(key))
            entry = make_entry(value, Version(2**63 - 1, 2**32 - 1, "n" * 64))
            for item in (entry, make_entry(None, Version(1, 0, "n" * 64))):
                frame = wire.encode_write(2**63 - 1, key, item)
                self.assertEqual(_decode_all(limit, frame), [wire.Write(2**63 - 1, key, item)])

    def test_a_digest_offer_fits_a_small_request_limit(self) -> None:
        """The 8 KiB digest offer is accepted however small --max-request is (it stopped every round)."""
        from distkv.store.hlc import HybridClock
        from distkv.store.store import Store

        store = Store(HybridClock("n1", lambda: 1000))
        offer = wire.encode_digest(7, store.digest.encode())
        for limit in self.LIMITS:
            self.assertEqual(_decode_all(limit, offer)[0].round, 7)

    def test_key_lists_stay_within_the_limit_whatever_the_keys(self) -> None:
        """Keys near the request limit, after many small ones, never push a key list over it."""
        from distkv.cluster.antientropy import answer_offer
        from distkv.store.digest import bucket_of
        from distkv.store.hlc import HybridClock
        from distkv.store.store import Store

        for limit in (300_000, 1 << 20):
            store = Store(HybridClock("n" * 64, lambda: 1000))
            big = b"B" * limit
            target = bucket_of(big)
            small = [b"s%d" % i for i in range(200_000) if bucket_of(b"s%d" % i) == target]
            for key in small[:3000]:
                store.set(key + b"x" * 80, b"")
            store.set(big, b"")
            store.set(b"C" * (limit - 10), b"")
            empty = Store(HybridClock("other", lambda: 1000))
            answer = answer_offer(store, wire.DigestOffer(1, empty.digest.encode()))
            frames = _decode_all(limit, answer)
            keys = [key for frame in frames if isinstance(frame, wire.KeyList)
                    for key, _ in frame.versions]
            self.assertEqual(len(keys), len(store.items()))

    def test_heartbeats_and_round_marks_with_the_longest_ids_fit(self) -> None:
        """Heartbeats and round marks carrying 64-character node ids decode under the smallest limit."""
        top = Version(2**63, 2**32 - 1, "z" * 64)
        for frame in (wire.encode_heartbeat(top, top), wire.encode_mark(b"E", 1, top),
                      wire.encode_round_end(2, top, True)):
            self.assertEqual(len(_decode_all(1, frame)), 1)


class FrameValidationTests(SynchronousTestCase):
    """Every field of every frame is checked before anything acts on it."""

    def body(self, frame: bytes) -> bytes:
        return frame[4:]

    def test_a_write_with_an_empty_or_bad_node_id_is_refused(self) -> None:
        """A write whose version names no node, or a malformed one, is a protocol error."""
        for node in ("", "bad/id", "x" * 65, "sp ace"):
            frame = wire.encode_write(1, b"k", make_entry(b"v", Version(5, 0, node)))
            with self.assertRaises(wire.WireError):
                wire.decode_body(self.body(frame))

    def test_a_write_with_unknown_flags_or_a_tombstone_value_is_refused(self) -> None:
        """Flags other than the tombstone bit, or a tombstone carrying a value, are refused."""
        good = wire.encode_write(1, b"k", make_entry(b"v", Version(5, 0, "n1")))
        flags_at = 4 + 1 + 8 + 8 + 4
        bad_flags = good[:flags_at] + b"\x02" + good[flags_at + 1 :]
        tomb_with_value = good[:flags_at] + b"\x01" + good[flags_at + 1 :]
        for frame in (bad_flags, tomb_with_value):
            with self.assertRaises(wire.WireError):
                wire.decode_body(self.body(frame))
        tomb = wire.encode_write(1, b"k", make_entry(None, Version(5, 0, "n1")))
        self.assertIsNone(wire.decode_body(self.body(tomb)).entry[0])  # type: ignore[union-attr]

    def test_key_lists_with_bad_ids_or_buckets_are_refused(self) -> None:
        """A bad node id or a bucket past the digest's is refused."""
        for versions, bucket in (([(b"k", Version(1, 0, ""))], 0),
                                 ([(b"k", Version(1, 0, "n"))], 1024)):
            frame = wire.encode_key_list(1, bucket, versions)
            with self.assertRaises(wire.WireError):
                wire.decode_body(self.body(frame))

    def test_the_empty_key_travels_in_writes_and_key_lists(self) -> None:
        """Redis allows the empty key: a write of it and a key list holding it decode."""
        versions = [(b"", Version(1, 0, "n"))]
        self.assertEqual(
            wire.decode_body(self.body(wire.encode_key_list(1, 0, versions))),
            wire.KeyList(1, 0, versions))
        entry = (b"v", 5, 0, "n")
        frame = wire.encode_write(3, b"", entry)
        self.assertEqual(wire.decode_body(self.body(frame)), wire.Write(3, b"", entry))
        self.assertEqual(list(wire.iter_writes(frame)), [(3, b"", entry)])

    def test_bounds_may_be_empty_but_not_malformed(self) -> None:
        """A heartbeat's floor may be the zero version; a node id with bad characters is refused."""
        zero = Version(0, 0, "")
        self.assertEqual(wire.decode_body(self.body(wire.encode_heartbeat(zero, zero))),
                         wire.Heartbeat(False, zero, zero))
        with self.assertRaises(wire.WireError):
            wire.decode_body(self.body(wire.encode_heartbeat(Version(1, 0, "a\x00b"), zero)))
