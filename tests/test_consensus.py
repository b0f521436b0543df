"""LINEARIZABLE's pieces with no network: the acceptor's rules
(distkv.cluster.acceptor) and the consensus frames (distkv.cluster.paxoswire)."""

from __future__ import annotations

from typing import Callable, Dict, List

import pytest
from twisted.internet import task

from distkv.cluster import paxoswire, wire
from distkv.cluster.acceptor import Acceptor
from distkv.cluster.consensus import KEEP, Proposer
from distkv.cluster.paxoswire import NOT_READY, OK, REFUSED
from distkv.store.entries import ZERO, Entry, is_counter, make_entry, version_of
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store

WALL = 1_700_000_000_000


def acceptor(ready: bool = True, floor: int = 0, most: int = 100) -> Acceptor:
    clock = HybridClock("me", lambda: WALL)
    states: List[bool] = [ready]
    return Acceptor(Store(clock), clock.wall_ms, 1000, lambda: states[0], lambda: floor, most)


def ballot(ms: int, counter_: int = 0, node: str = "a") -> Version:
    return Version(WALL + ms, counter_, node)


def test_prepare_promises_a_higher_ballot_and_answers_the_entry_held() -> None:
    """A first prepare is promised with nothing held; once a value is
    accepted, a higher ballot's prepare answers that entry."""
    acc = acceptor()
    assert acc.prepare(b"k", ballot(1)) == (OK, ZERO, None)
    entry = make_entry(b"v", ballot(1))
    assert acc.accept(b"k", entry) == (OK, ZERO, None)
    assert acc.prepare(b"k", ballot(2)) == (OK, ZERO, entry)


def test_prepare_refuses_a_ballot_at_or_below_a_promise_or_the_version_held() -> None:
    """Prepare of a ballot at or below one promised, or at or below the
    entry's version, is refused, naming what beat it; other keys are free."""
    acc = acceptor()
    assert acc.prepare(b"k", ballot(5))[0] == OK
    assert acc.prepare(b"k", ballot(5)) == (REFUSED, ballot(5), None)
    assert acc.prepare(b"k", ballot(4, 9, "z")) == (REFUSED, ballot(5), None)
    assert acc.prepare(b"other", ballot(4))[0] == OK
    acc.accept(b"k", make_entry(b"v", ballot(7)))
    assert acc.prepare(b"k", ballot(6)) == (REFUSED, ballot(7), None)
    assert acc.prepare(b"k", ballot(7)) == (REFUSED, ballot(7), None)


def test_accept_refuses_below_the_promise_and_at_or_below_the_version_held() -> None:
    """An accept below the ballot promised, or at or below the version held,
    changes nothing; one at the promise is stored and the promise dropped."""
    acc = acceptor()
    acc.prepare(b"k", ballot(5))
    assert acc.accept(b"k", make_entry(b"old", ballot(4))) == (REFUSED, ballot(5), None)
    assert acc.store.entry(b"k") is None
    assert acc.accept(b"k", make_entry(b"new", ballot(5))) == (OK, ZERO, None)
    assert acc.store.get(b"k") == b"new"
    assert b"k" not in acc.promises  # the entry's version holds it now
    assert acc.accept(b"k", make_entry(b"again", ballot(5)))[0] == REFUSED
    assert acc.accept(b"k", make_entry(b"later", ballot(6)))[0] == OK
    assert acc.store.get(b"k") == b"later"


def test_a_restarted_acceptor_takes_no_ballot_up_to_its_floor() -> None:
    """Ballots at or below the floor (start plus the skew) get NOT_READY,
    above it they are served; an acceptor that is not ready refuses all."""
    acc = acceptor(floor=WALL + 500)
    assert acc.prepare(b"k", ballot(500, 7))[0] == NOT_READY
    assert acc.accept(b"k", make_entry(b"v", ballot(500)))[0] == NOT_READY
    assert acc.prepare(b"k", ballot(501))[0] == OK
    assert acceptor(ready=False).prepare(b"k", ballot(1))[0] == NOT_READY
    assert acceptor(ready=False).accept(b"k", make_entry(b"v", ballot(1)))[0] == NOT_READY


def test_a_ballot_further_ahead_than_the_skew_is_refused() -> None:
    """A ballot more than the accepted skew ahead of the wall clock is never
    promised (it could outlive a restart's floor)."""
    acc = acceptor()
    assert acc.prepare(b"k", ballot(1001))[0] == REFUSED
    assert acc.prepare(b"k", ballot(1000))[0] == OK


def test_promises_are_bounded_and_a_dropped_one_binds_every_key() -> None:
    """Past the bound the oldest promise is forgotten by raising the floor
    every key is held to: a ballot below it is refused for any key."""
    acc = acceptor(most=2)
    acc.prepare(b"a", ballot(10))
    acc.prepare(b"b", ballot(3))
    acc.prepare(b"c", ballot(4))
    assert len(acc.promises) == 2 and acc.dropped == ballot(10)
    assert acc.prepare(b"fresh", ballot(9))[0] == REFUSED
    assert acc.prepare(b"fresh", ballot(11))[0] == OK
    assert acc.accept(b"zzz", make_entry(b"v", ballot(9)))[0] == REFUSED


def test_a_promise_says_whether_the_entry_it_answers_is_settled() -> None:
    """An entry merged (as replication or anti-entropy do) past a higher
    promise is answered with that promise as ``seen``: not settled, so no
    one-phase read. Absent, merged with no higher promise, or taken by an
    accept, it is settled (``seen`` ZERO), and stays so under the promises
    later reads leave behind."""
    acc = acceptor()
    assert acc.prepare(b"k", ballot(20)) == (OK, ZERO, None)  # nothing held: settled
    merged = make_entry(b"2", ballot(15))
    acc.store.apply(b"k", merged)  # anti-entropy: no promise asked
    assert acc.prepare(b"k", ballot(30)) == (OK, ballot(20), merged)
    assert acc.prepare(b"k", ballot(40)) == (OK, ballot(30), merged)  # still not
    written_back = make_entry(b"2", ballot(40))
    assert acc.accept(b"k", written_back) == (OK, ZERO, None)
    assert acc.prepare(b"k", ballot(50)) == (OK, ZERO, written_back)
    assert acc.prepare(b"k", ballot(60)) == (OK, ZERO, written_back)  # read's promise left
    quiet = make_entry(b"q", ballot(5))
    acc.store.apply(b"q", quiet)  # no promise for it at all: settled
    assert acc.prepare(b"q", ballot(70)) == (OK, ZERO, quiet)
    assert acc.prepare(b"q", ballot(80)) == (OK, ZERO, quiet)  # remembered


def test_promises_a_restart_or_the_bound_forgot_unsettle_older_entries() -> None:
    """A restarted acceptor may have promised anything up to its floor
    before: an entry at or below it is not settled until written back; one
    above it is. A promise pushed out into ``dropped`` counts the same."""
    acc = acceptor(floor=WALL + 100)
    old, new = make_entry(b"o", ballot(100, 5, "z")), make_entry(b"n", ballot(101))
    acc.store.apply(b"old", old)
    acc.store.apply(b"new", new)
    assert acc.prepare(b"old", ballot(200)) == (OK, Version(WALL + 101, 0, ""), old)
    assert acc.prepare(b"new", ballot(200)) == (OK, ZERO, new)
    bounded = acceptor(most=1)
    bounded.prepare(b"a", ballot(10))
    bounded.prepare(b"b", ballot(3))  # pushes a's promise out: dropped is 10
    held = make_entry(b"v", ballot(8))
    bounded.store.apply(b"c", held)
    assert bounded.prepare(b"c", ballot(20)) == (OK, ballot(10), held)


def test_an_accept_the_store_refuses_is_refused() -> None:
    """An accept the store does not take (below a flush) is answered
    refused, never OK, naming the flush floor: the proposer's next ballot
    is above it (answering the empty version, it would retry below it)."""
    acc = acceptor()
    acc.prepare(b"k", ballot(20))
    acc.store.raise_floor(ballot(50, 0, ""))
    assert acc.accept(b"k", make_entry(b"v", ballot(20))) == (REFUSED, ballot(50, 0, ""), None)
    assert acc.store.entry(b"k") is None


def test_prepare_at_or_below_the_flush_floor_is_refused_naming_it() -> None:
    """No entry below the flush floor could be stored, so a ballot at or
    below it is refused with the floor as what beat it; one above it is
    promised."""
    acc = acceptor()
    acc.store.raise_floor(ballot(50, 0, ""))
    assert acc.prepare(b"k", ballot(49, 3, "z")) == (REFUSED, ballot(50, 0, ""), None)
    assert acc.prepare(b"k", ballot(50, 0, "a"))[0] == OK


def decode(frame: bytes) -> object:
    frames = wire.FrameDecoder(1 << 20).feed(frame)
    assert len(frames) == 1
    return frames[0]


def test_consensus_frames_round_trip() -> None:
    """Prepare, promise (with and without an entry, refused), accept and
    accepted decode to what was encoded, through the peer frame decoder."""
    entry = make_entry(b"value", ballot(3, 1, "n2"), expires=WALL + 60_000)
    tomb = make_entry(None, ballot(4))
    assert decode(paxoswire.encode_prepare(7, b"key", ballot(1))) == paxoswire.Prepare(
        7, b"key", ballot(1))
    assert decode(paxoswire.encode_promise(8, OK, ZERO, b"key", entry)) == paxoswire.Promise(
        8, OK, ZERO, entry)
    assert decode(paxoswire.encode_promise(8, OK)) == paxoswire.Promise(8, OK, ZERO, None)
    assert decode(paxoswire.encode_promise(9, REFUSED, ballot(9))) == paxoswire.Promise(
        9, REFUSED, ballot(9), None)
    floor = ballot(2, 0, "")
    assert decode(paxoswire.encode_promise(8, OK, ZERO, b"key", entry, floor)) == (
        paxoswire.Promise(8, OK, ZERO, entry, floor))
    assert decode(paxoswire.encode_promise(8, OK, floor=floor)).floor == floor
    assert decode(paxoswire.encode_accept(10, b"", tomb)) == paxoswire.Accept(10, b"", tomb)
    assert decode(paxoswire.encode_accepted(11, NOT_READY)) == paxoswire.Accepted(
        11, NOT_READY, ZERO)


def _body(frame: bytes) -> bytes:
    return frame[4:]


def _counter() -> Entry:
    """A counter key's entry, as INCR at ONE makes it."""
    store = Store(HybridClock("me", lambda: WALL))
    store.incr(b"c", 1)
    held = store.entry(b"c")
    assert held is not None and is_counter(held)
    return held


@pytest.mark.parametrize("body", [
    _body(paxoswire.encode_prepare(1, b"key", ballot(1)))[:-1],  # key cut short
    _body(paxoswire.encode_prepare(1, b"key", ballot(1))) + b"x",  # trailing byte
    _body(paxoswire.encode_prepare(1, b"k", Version(1, 0, ""))),  # no node in the ballot
    _body(paxoswire.encode_prepare(1, b"k", Version(1, 0, "bad/id"))),
    _body(paxoswire.encode_accepted(1, OK))[:9] + b"\x07" + _body(
        paxoswire.encode_accepted(1, OK))[10:],  # unknown status
    _body(paxoswire.encode_accepted(1, OK)) + b"\x00",
    _body(paxoswire.encode_promise(1, REFUSED, ballot(1)))[:-4] + b"\x00\x00\x00\x01",
    _body(paxoswire.encode_promise(1, OK, ZERO, b"k", make_entry(b"v", ballot(1))))[:-1],
    _body(paxoswire.encode_promise(1, REFUSED, ballot(1), floor=ballot(0, 0, ""))),  # floor in a refusal
    _body(paxoswire.encode_promise(1, OK, floor=Version(wire.MAX_SEQ + 1, 0, ""))),
    _body(paxoswire.encode_promise(1, OK, floor=Version(1, 0, "bad/id"))),
    _body(paxoswire.encode_promise(1, OK, floor=ballot(1)))[:-8],  # floor cut short
    _body(paxoswire.encode_accept(1, b"k", make_entry(b"v", ballot(1))))[:9]
    + b"\x00\x00\x00\x02" + _body(paxoswire.encode_accept(1, b"k", make_entry(b"v", ballot(1))))[13:],
    b"V" + b"\x00" * 8 + b"\x00\x00\x00\x01" + wire.encode_transaction(
        1, [(b"k", _counter())])[4 + 13:],
])
def test_malformed_consensus_frames_are_refused(body: bytes) -> None:
    """Truncated or trailing bytes, a ballot with no node or a bad one, an
    unknown status, an entry in a refusal, a promise's flush floor in a
    refusal, out of range, with a bad node id or cut short, two entries in
    an accept, and a counter state in an accept: each is a WireError, never
    a frame."""
    with pytest.raises(wire.WireError):
        wire.decode_body(body)


def test_a_counter_state_is_never_proposed() -> None:
    """Encoding an accept of a counter state is a bug: refused."""
    with pytest.raises(ValueError):
        paxoswire.encode_accept(1, b"k", _counter())


class _Members:
    """Two other members, linked, whose frames are kept; nothing durable."""

    def __init__(self) -> None:
        self.sent: Dict[str, List[object]] = {"n2": [], "n3": []}

    def quorum_members(self) -> int:
        return 3

    def member_senders(self) -> Dict[str, Callable[[bytes], None]]:
        return {node: (lambda data, node=node: self.sent[node].append(decode(data)))  # type: ignore[misc]
                for node in self.sent}

    def durable(self) -> None:
        return None


def test_a_proposer_treats_entries_below_the_flush_floor_as_absent() -> None:
    """A GET whose own promise answered the old value, then learnt a flush
    above its ballot before a majority promised: it prepares again above
    the floor; a lagging member answering the flushed value (with no floor)
    does not bring it back: the proposer writes "absent" above the floor
    and answers nil."""
    clock = task.Clock()
    clock.advance(WALL / 1000)
    hlc = HybridClock("n1", lambda: int(clock.seconds() * 1000), 1000)
    store = Store(hlc)
    old = make_entry(b"old", ballot(-5, 0, "n3"))
    store.apply(b"k", old)
    members = _Members()
    proposer = Proposer(members, Acceptor(store, hlc.wall_ms, 1000, lambda: True), hlc, clock, 5.0)
    answers: List[object] = []
    proposer.run(b"k", lambda value: (KEEP, value), False, lambda reply, error: answers.append(
        (reply, error)))
    (first,) = members.sent["n2"]
    assert isinstance(first, paxoswire.Prepare)
    floor = Version(first.ballot.ms + 10, 0, "")
    store.raise_floor(floor)  # the flush arrives after this node promised
    proposer.answered_prepare("n2", paxoswire.Promise(first.id, OK, ZERO, old, ZERO))
    again = members.sent["n2"][-1]
    assert isinstance(again, paxoswire.Prepare) and again.ballot > floor
    proposer.answered_prepare("n2", paxoswire.Promise(again.id, OK, ZERO, old, ZERO))
    accept = members.sent["n2"][-1]
    assert isinstance(accept, paxoswire.Accept)
    assert accept.entry[0] is None and version_of(accept.entry) == again.ballot
    assert answers == []  # a majority must hold "absent" first
    proposer.answered_accept("n2", paxoswire.Accepted(accept.id, OK, ZERO))
    assert answers == [(None, None)]
    assert store.entry(b"k") == accept.entry
