"""The quorum read frames (``R`` and ``r``): round trips, answers split to fit
a frame, hostile or oversized requests refused, and answers nobody asked for
ignored."""

from __future__ import annotations

import struct

import pytest

from distkv.cluster import wire
from distkv.cluster.quorum import ALL, ONE, QUORUM, needed, parse_level
from distkv.store.entries import make_entry
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.test_levels import Client

ENTRIES = [
    (b"a", (b"v", 1, 2, "n1")),
    (b"gone", (None, 5, 0, "n2")),
    (b"ttl", make_entry(b"x" * 50, Version(7, 1, "n3"), 1_800_000_000_000)),
]


def decode(data: bytes, max_frame: int = 1 << 20) -> list:
    return wire.FrameDecoder(max_frame).feed(data)


def test_read_request_and_reply_round_trip() -> None:
    """A request's keys (none: a barrier) and a reply's entries (values,
    tombstones, expiries) decode as they were encoded."""
    assert decode(wire.encode_read_request(9, [b"a", b"", b"b c"])) == [
        wire.ReadRequest(9, (b"a", b"", b"b c"))]
    assert decode(wire.encode_read_request(1, [])) == [wire.ReadRequest(1, ())]
    frames = b"".join(wire.encode_read_reply(3, ENTRIES, 1 << 20))
    assert decode(frames) == [wire.ReadReply(3, tuple(ENTRIES), False)]
    assert decode(b"".join(wire.encode_read_reply(4, [], 100))) == [wire.ReadReply(4, (), False)]
    assert decode(wire.encode_read_refusal(6)) == [wire.ReadReply(6, (), False, True)]


def test_one_key_requests_and_one_entry_replies_round_trip() -> None:
    """The usual exchange, encoded and decoded on its own short path: a
    request for one key (empty too) and a reply of one entry of each kind
    decode as the general layout would, byte for byte the same frames."""
    for key in (b"k", b"", b"key:000042"):
        frame = wire.encode_read_request(7, [key])
        assert decode(frame) == [wire.ReadRequest(7, (key,))]
        general = wire._frame(b"R" + struct.pack(">QI", 7, 1) + struct.pack(">I", len(key)) + key)
        assert frame == general
    for entry in ENTRIES:
        frames = list(wire.encode_read_reply(8, [entry], 1 << 20))
        assert len(frames) == 1
        assert decode(frames[0]) == [wire.ReadReply(8, (entry,), False)]
    # One entry larger than the body allowed still goes out, alone, as before.
    big = (b"big", (b"v" * 2000, 1, 0, "n1"))
    frames = list(wire.encode_read_reply(9, [big], 1000))
    assert decode(b"".join(frames), 1 << 20) == [wire.ReadReply(9, (big,), False)]


def test_a_large_reply_is_split_into_frames_within_the_limit() -> None:
    """An answer larger than a frame goes in several ``r`` frames, each within
    the limit, all but the last marked ``more``; together they hold every entry."""
    entries = [(b"k%d" % i, (b"v" * 300, 1, i, "n1")) for i in range(20)]
    frames = list(wire.encode_read_reply(5, entries, 1000))
    assert len(frames) > 5
    assert all(len(frame) - 4 <= 1000 for frame in frames)
    replies = decode(b"".join(frames), 1000)
    assert [reply.more for reply in replies] == [True] * (len(replies) - 1) + [False]
    assert [e for reply in replies for e in reply.entries] == entries


@pytest.mark.parametrize("body", [
    b"R" + struct.pack(">QI", 1, wire.MAX_READ_KEYS + 1) + b"\0" * 4 * (wire.MAX_READ_KEYS + 1),
    b"R" + struct.pack(">QI", 1, 1000) + b"\0\0\0\1k",          # more keys than bytes
    b"R" + struct.pack(">QI", 1, 1) + b"\0\0\0\5ab",             # truncated key
    b"R" + struct.pack(">QI", 1, 1) + b"\0\0\0\1ab",             # trailing bytes
    b"r" + struct.pack(">QBI", 1, 3, 0),                         # bad flags
    b"r" + struct.pack(">QBI", 1, 0, 5),                         # count past the body
    b"r" + struct.pack(">QBI", 1, 0, 1) + b"\0" * 21 + b"n",     # garbage entry
    b"r" + struct.pack(">QBI", 1, 2, 1) + b"\0" * 30,            # loading, with entries
])
def test_malformed_or_oversized_read_frames_are_refused(body: bytes) -> None:
    """A request for more keys than allowed, counts the body cannot hold,
    truncated or trailing bytes, and bad flags are wire errors (the
    connection is dropped), never work."""
    with pytest.raises(wire.WireError):
        decode(struct.pack(">I", len(body)) + body, 1 << 20)


def test_levels_parse_in_any_case_and_count_members() -> None:
    """Level names in any case; QUORUM is a majority of the members, ALL every one."""
    assert [parse_level(t) for t in ("one", b"Quorum", "ALL", "linearizable", "most")] == [
        ONE, QUORUM, ALL, "LINEARIZABLE", None]
    assert [needed(QUORUM, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert (needed(ALL, 4), needed(ONE, 4)) == (4, 1)


def test_answers_nobody_asked_for_change_nothing() -> None:
    """An ``r`` for an unknown read, from a member not asked, or carrying keys
    not asked for, merges nothing into the store."""
    cluster = SimulatedCluster(3)
    cluster.settle()
    try:
        node = cluster.nodes["n1"]
        coordinator = node.quorum
        coordinator.answered("n2", wire.ReadReply(12345, ENTRIES[:1]))
        assert node.store.entry(b"a") is None
        client = Client(cluster, "n1")
        client.ask(b"CONSISTENCY", b"READ", b"ALL")
        cluster.net.stall("n1", "n2", 5.0)
        cluster.net.stall("n1", "n3", 5.0)
        client.send(b"GET", b"asked")
        (number,) = list(coordinator._reads)
        coordinator.answered("n9", wire.ReadReply(number, ((b"asked", (b"x", 1, 1, "n9")),)))
        coordinator.answered("n2", wire.ReadReply(number, ENTRIES[:1]))
        assert node.store.entry(b"asked") is None and node.store.entry(b"a") is None
        cluster.advance(6.0)
    finally:
        cluster.stop()
