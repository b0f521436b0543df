"""LINEARIZABLE reads against values that reached a majority without being
chosen: three acceptors and proposers in one process on a fake clock, every
peer frame encoded, decoded and delivered (or lost) by the test, so that a
coordinator can crash after its accept reached one acceptor, anti-entropy
can carry that value to a member that promised a higher ballot, and reads
through different nodes can meet it; the history checker judges each run."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import task

from distkv.cluster import paxoswire, wire
from distkv.cluster.acceptor import Acceptor
from distkv.cluster.consensus import KEEP, Change, Proposer
from distkv.sim import linearizable
from distkv.sim.linearizable import UNKNOWN, Op
from distkv.store.entries import version_of
from distkv.store.hlc import HybridClock
from distkv.store.store import Store

WALL = 1_700_000_000_000
NAMES = ("n1", "n2", "n3")
KEY = b"x"


class _Member:
    """One node's acceptor and proposer; its peer frames go to the net's queue."""

    def __init__(self, net: _Net, name: str) -> None:
        self.net = net
        self.name = name
        self.hlc = HybridClock(name, lambda: int(net.clock.seconds() * 1000), 1000)
        self.store = Store(self.hlc)
        self.acceptor = Acceptor(self.store, self.hlc.wall_ms, 1000, lambda: True)
        self.proposer = Proposer(self, self.acceptor, self.hlc, net.clock, 1.0)

    def quorum_members(self) -> int:
        return len(NAMES)

    def member_senders(self) -> Dict[str, Callable[[bytes], None]]:
        return {peer: (lambda data, peer=peer: self.net.queue.append(  # type: ignore[misc]
                    (self.name, peer, data)))
                for peer in NAMES if peer != self.name}

    def durable(self) -> None:
        return None


class _Net:
    """The members and the frames in flight between them, in order; answers
    to a delivered request go back at once."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(WALL / 1000)
        self.queue: List[Tuple[str, str, bytes]] = []
        self.members = {name: _Member(self, name) for name in NAMES}
        self.history: List[Op] = []

    def deliver(self, src: str, dst: str) -> int:
        """Deliver every frame queued from ``src`` to ``dst``; how many."""
        frames = [item for item in self.queue if item[:2] == (src, dst)]
        self.queue = [item for item in self.queue if item[:2] != (src, dst)]
        for _, _, data in frames:
            self._arrive(src, dst, data)
        return len(frames)

    def lose(self, src: str, dst: Optional[str] = None) -> None:
        """The frames in flight from ``src`` (to ``dst``, or anyone) are lost."""
        self.queue = [item for item in self.queue
                      if not (item[0] == src and dst in (None, item[1]))]

    def heal(self) -> None:
        """Deliver everything, and every frame that causes, until none is left."""
        while self.queue:
            src, dst, data = self.queue.pop(0)
            self._arrive(src, dst, data)

    def _arrive(self, src: str, dst: str, data: bytes) -> None:
        (frame,) = wire.FrameDecoder(1 << 20).feed(data)
        there, back = self.members[dst], self.members[src].proposer
        if isinstance(frame, paxoswire.Prepare):
            status, seen, entry = there.acceptor.prepare(frame.key, frame.ballot)
            floor = there.store.flushed if status == paxoswire.OK else paxoswire.ZERO
            answer = wire.FrameDecoder(1 << 20).feed(paxoswire.encode_promise(
                frame.id, status, seen, frame.key, entry, floor))[0]
            assert isinstance(answer, paxoswire.Promise)
            back.answered_prepare(dst, answer)
        elif isinstance(frame, paxoswire.Accept):
            status, seen, _ = there.acceptor.accept(frame.key, frame.entry)
            back.answered_accept(dst, paxoswire.Accepted(frame.id, status, seen))
        else:
            assert isinstance(frame, wire.Write)  # the chosen value sent on
            there.store.apply(frame.key, frame.entry)

    def anti_entropy(self, src: str, dst: str) -> None:
        """What an anti-entropy round from ``src`` does to ``dst``'s entry of
        the key: merged, newest version wins, no promise asked."""
        entry = self.members[src].store.entry(KEY)
        assert entry is not None
        self.members[dst].store.apply(KEY, entry)

    def run(self, client: int, node: str, kind: str, args: Tuple[object, ...],
            change: Change, writes: bool) -> List[object]:
        """Start an operation through ``node``; its history entry is added
        when it answers (or, if it never does, by :meth:`finish`)."""
        self.clock.advance(0.001)
        call = self.clock.seconds()
        answers: List[object] = []

        def done(reply: object, error: Optional[str]) -> None:
            answers.append(error if error is not None else reply)
            out: object = UNKNOWN
            if error is None:
                out = reply if kind == "get" else None
            elif not error.startswith("TIMEOUT linearizable write"):
                return  # did not run
            ret = None if out is UNKNOWN else self.clock.seconds()
            self.history.append(Op(client, kind, KEY, args, call, ret, out))

        self.members[node].proposer.run(KEY, change, writes, done)
        return answers

    def get(self, client: int, node: str) -> List[object]:
        return self.run(client, node, "get", (), lambda value: (KEEP, value), False)

    def set(self, client: int, node: str, value: bytes) -> List[object]:
        return self.run(client, node, "set", (value,), lambda old: (value, b"OK"), True)

    def finish(self) -> None:
        """Heal, and let every operation still running answer or time out."""
        for _ in range(200):
            self.heal()
            if not any(m.proposer.pending() for m in self.members.values()):
                return
            self.clock.advance(0.05)
        raise AssertionError("operations still running after 10 s of fake time")


def test_a_value_anti_entropy_spread_past_a_promise_is_written_back_before_it_is_read() -> None:
    """SET x 2 through n1 reaches n1's acceptor only (n1 is cut off); a GET
    through n3 (ballot above it, promised by n2 and n3) finds x=1 and starts
    writing it back; anti-entropy carries x=2 to n2. A GET through n2 then
    finds n1 and n2 agreeing on x=2, but n2 had promised n3's higher ballot
    before x=2 arrived: that is no chosen value, so the read writes x=2
    back at its own ballot before answering 2, and a later GET through n1
    (meeting n3, which accepted n3's x=1 at a ballot above x=2's) answers 2
    too, never 1. The recorded history passes the checker."""
    net = _Net()
    n1, n2, n3 = (net.members[name] for name in NAMES)
    # x=1 is chosen by n1 and n3; n2 lags (it never heard of it).
    first = net.set(1, "n1", b"1")
    net.deliver("n1", "n3")  # the prepare: n3 promises
    net.deliver("n1", "n3")  # the accept
    net.lose("n1")
    assert first == [b"OK"]
    # SET x 2 through n1: n3 promises, n1 accepts its own, then n1 is cut off.
    pending_set = net.set(2, "n1", b"2")
    net.deliver("n1", "n3")  # the prepare: n3 promises; n1 accepts locally
    net.lose("n1")  # the accepts to n2 and n3 (and the prepare to n2) are lost
    assert n1.store.get(KEY) == b"2" and n3.store.get(KEY) == b"1"
    assert pending_set == []
    # GET through n3 at a higher ballot: n2 (nothing) and n3 (x=1) disagree,
    # so it writes x=1 back at its ballot; only n3's own accept lands for now.
    slow_read = net.get(3, "n3")
    net.deliver("n3", "n2")  # the prepare: n2 promises the higher ballot
    held_on_n3 = n3.store.entry(KEY)
    assert held_on_n3 is not None and held_on_n3[0] == b"1"
    n3_ballot = version_of(held_on_n3)
    write_of_2 = n1.store.entry(KEY)
    assert write_of_2 is not None and version_of(write_of_2) < n3_ballot
    # Anti-entropy brings x=2 to n2, past its promise to n3's read.
    net.anti_entropy("n1", "n2")
    assert n2.store.get(KEY) == b"2"
    # GET through n2: n1 and n2 both answer x=2 at the same version.
    read_via_n2 = net.get(4, "n2")
    net.deliver("n2", "n1")  # prepare (and, being unsettled on n2, the accept)
    net.deliver("n2", "n1")
    net.lose("n2", "n3")
    # GET through n1, meeting n3 (which holds x=1 at a ballot above x=2's).
    read_via_n1 = net.get(5, "n1")
    net.deliver("n1", "n3")
    net.deliver("n1", "n3")
    net.finish()
    failures = linearizable.check(net.history, {KEY: None})
    assert failures == [], "\n".join(failure.describe() for failure in failures)
    assert (read_via_n2, read_via_n1) == ([b"2"], [b"2"])
    assert n2.proposer.fast_reads == 0  # it was written back, not read in one phase
    assert n2.proposer.unsettled_reads == 1  # because n2's entry was not settled
    assert pending_set and slow_read
    assert all(m.store.get(KEY) == b"2" for m in net.members.values())


def test_reads_of_a_chosen_value_stay_one_phase() -> None:
    """The fast path stays where it is safe: a value a majority accepted,
    read again and again through every node (each read leaving its promise
    behind), answers from the promises alone every time, and so does one
    that reached the third member only through anti-entropy."""
    net = _Net()
    assert net.set(1, "n1", b"v") == []
    net.deliver("n1", "n2")
    net.deliver("n1", "n2")
    net.lose("n1", "n3")
    reads = 0
    for node, peer in (("n1", "n2"), ("n2", "n1"), ("n1", "n2"), ("n2", "n1")):
        answers = net.get(2, node)
        net.deliver(node, peer)
        net.lose(node)
        reads += 1
        assert answers == [b"v"]
    net.anti_entropy("n1", "n3")
    for node, peer in (("n3", "n1"), ("n3", "n2"), ("n1", "n3")):
        answers = net.get(3, node)
        net.deliver(node, peer)
        net.lose(node)
        reads += 1
        assert answers == [b"v"]
    assert sum(m.proposer.fast_reads for m in net.members.values()) == reads
    assert sum(m.acceptor.accepted for m in net.members.values()) == 2  # the SET only
    assert linearizable.check(net.history, {KEY: None}) == []
