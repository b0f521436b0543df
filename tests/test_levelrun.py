"""Recorded histories of random clients at a level through every node, with
partitions coming and going (distkv.sim.levelrun), checked against the
promises of the level."""

from __future__ import annotations

import pytest

from distkv.sim import levelrun


@pytest.mark.parametrize("seed", range(12))
def test_quorum_histories_keep_read_your_writes_monotonic_reads_and_converge(seed: int) -> None:
    """Four clients at QUORUM, each request through a random node, under
    partitions: read-your-writes and monotonic reads across nodes hold, and
    every node ends with the same value, one no acknowledged write followed."""
    recorded = levelrun.run(seed)
    assert len(recorded.history) > 60
    assert levelrun.check(recorded) == []


@pytest.mark.parametrize("seed", range(12))
def test_a_single_writer_register_at_quorum_is_linearizable(seed: int) -> None:
    """One client writes, three read, all at QUORUM through random nodes
    under partitions: the history is linearizable (quorum reads write back
    what they return, so no reader sees an older value after a newer one)."""
    recorded = levelrun.run(1000 + seed, writers=1)
    assert levelrun.check(recorded, linear=True) == []


@pytest.mark.parametrize("seed", range(4005, 4013))
def test_quorum_histories_keep_the_promises_when_outboxes_are_cut_over(seed: int) -> None:
    """The same at QUORUM over six keys with an outbox bound so small that
    partitions cut links over to resyncs (each of these seeds does): a peer's
    acknowledgement of later writes never counts it as holding one its link
    dropped unsent, and every SET answered OK is on a majority as it answers."""
    single = seed % 2 == 0
    recorded = levelrun.run(seed, writers=1 if single else None, ops=60,
                            outbox_bytes=levelrun.SMALL_OUTBOX, keys=levelrun.MANY_KEYS)
    assert recorded.overflows > 0
    assert levelrun.check(recorded, linear=single) == []


def test_the_at_answer_check_finds_writes_answered_before_enough_members_held_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes that send no write to their peers yet count every linked member
    as holding every write: the check made as each QUORUM write is answered
    finds writes answered OK while only their node held them."""
    from distkv.cluster.peers import PeerLink
    from distkv.node import Node

    acks = Node.member_acks
    monkeypatch.setattr(Node, "member_acks", lambda self: [1 << 62 for _ in acks(self)])
    monkeypatch.setattr(PeerLink, "pump", lambda self: None)
    recorded = levelrun.run(0)
    assert recorded.underheld
    assert "fewer than the 2 its level needs" in recorded.underheld[0]
    assert levelrun.check(recorded)


@pytest.mark.parametrize("seed", range(4))
def test_all_histories_keep_the_promises_too(seed: int) -> None:
    """At ALL (writes time out whenever a node is cut off) the same promises hold."""
    assert levelrun.check(levelrun.run(2000 + seed, level=b"ALL", writers=1), linear=True) == []


def test_at_one_the_checkers_find_stale_reads_across_nodes() -> None:
    """The same runs at ONE break read-your-writes or monotonic reads in some
    seed: reads through a node that missed a write are not hidden."""
    broken = [seed for seed in range(12) if levelrun.check(levelrun.run(seed, level=b"ONE"))]
    assert broken


@pytest.mark.parametrize("seed", range(16))
def test_linearizable_histories_are_linearizable_under_faults(seed: int) -> None:
    """Four clients at LINEARIZABLE, all writing (set, delete, INCR, SET NX
    as a compare-and-set), each request through a random node, under
    partitions, crashes and empty restarts, and skewed clocks: every history
    is linearizable and the replicas agree once the faults heal."""
    recorded = levelrun.run(3000 + seed, level=b"LINEARIZABLE")
    kinds = {op.kind for op in recorded.history if op.ret is not None}
    assert len(recorded.history) > 30 and {"get", "set", "incr", "cas"} <= kinds
    assert levelrun.check_linearizable(recorded) == []


def test_the_linearizable_check_finds_an_acceptor_that_ignores_its_promises() -> None:
    """The same runs with acceptors that take any accept (their promises
    ignored) break linearizability in some seed: the check is not blind."""
    from distkv.cluster import acceptor

    accept = acceptor.Acceptor.accept

    def careless(self: acceptor.Acceptor, key: bytes, entry: object) -> object:
        self.promises.pop(key, None)
        self.dropped = acceptor.ZERO
        return accept(self, key, entry)  # type: ignore[arg-type]

    acceptor.Acceptor.accept = careless  # type: ignore[assignment]
    try:
        broken = [seed for seed in range(40)
                  if levelrun.check_linearizable(levelrun.run(seed, level=b"LINEARIZABLE"))]
    finally:
        acceptor.Acceptor.accept = accept  # type: ignore[method-assign]
    assert broken
