"""The weaker-promise checkers (read-your-writes, monotonic reads,
convergence) on hand-made histories that keep and break each promise."""

from __future__ import annotations

from typing import Optional

from distkv.sim.linearizable import UNKNOWN, Op
from distkv.sim.sessions import converged, monotonic_reads, read_your_writes


def put(client: int, value: bytes, call: float, ret: Optional[float], key: bytes = b"k") -> Op:
    return Op(client, "set", key, (value,), call, ret, None if ret is not None else UNKNOWN)


def delete(client: int, call: float, ret: Optional[float], key: bytes = b"k") -> Op:
    return Op(client, "delete", key, (), call, ret, 1 if ret is not None else UNKNOWN)


def get(client: int, out: Optional[bytes], call: float, ret: float, key: bytes = b"k") -> Op:
    return Op(client, "get", key, (), call, ret, out)


def test_reading_your_own_write_or_a_newer_one_passes() -> None:
    """A client that reads its own last write, or another client's write
    that may be newer, keeps read-your-writes."""
    history = [
        put(1, b"a", 0, 1),
        get(1, b"a", 2, 3),
        put(2, b"b", 0.5, 4),  # concurrent with client 1's write: may be newer
        get(1, b"b", 5, 6),
        delete(1, 7, 8),
        get(1, None, 9, 10),
    ]
    assert read_your_writes(history) == []


def test_reading_an_older_value_after_your_own_write_fails() -> None:
    """After its write of b returned, a client that reads a, written and
    acknowledged before b was even sent, breaks read-your-writes; so does a
    read that finds the key absent though nobody deleted it."""
    history = [put(2, b"a", 0, 1), put(1, b"b", 2, 3), get(1, b"a", 4, 5)]
    problems = read_your_writes(history)
    assert [p.promise for p in problems] == ["read-your-writes"]
    assert "older than the client's own write" in problems[0].describe()
    assert read_your_writes([put(1, b"b", 2, 3), get(1, None, 4, 5)]) != []


def test_another_clients_stale_read_is_not_read_your_writes() -> None:
    """A stale read by a client that did not write the key breaks nothing here."""
    history = [put(2, b"a", 0, 1), put(1, b"b", 2, 3), get(3, b"a", 4, 5)]
    assert read_your_writes(history) == []


def test_a_write_that_timed_out_may_be_newer() -> None:
    """A write that timed out may land after the client's own write: reading
    it keeps read-your-writes; one invoked after the read returned does not count."""
    history = [put(2, b"x", 2.5, None), put(1, b"b", 2, 3), get(1, b"x", 4, 5)]
    assert read_your_writes(history) == []
    history = [put(1, b"b", 2, 3), get(1, b"x", 4, 5), put(2, b"x", 6, 7)]
    assert read_your_writes(history) != []


def test_reads_that_move_forward_are_monotonic() -> None:
    """A client's reads that see a, then b (written after a), then b again pass."""
    history = [put(1, b"a", 0, 1), put(1, b"b", 2, 3),
               get(2, b"a", 1.5, 2.5), get(2, b"b", 4, 5), get(2, b"b", 6, 7)]
    assert monotonic_reads(history) == []


def test_a_read_that_goes_back_breaks_monotonic_reads() -> None:
    """Seeing b and then a, which was acknowledged before b was written,
    breaks monotonic reads; concurrent writes seen in either order do not."""
    history = [put(1, b"a", 0, 1), put(1, b"b", 2, 3),
               get(2, b"b", 4, 5), get(2, b"a", 6, 7)]
    problems = monotonic_reads(history)
    assert len(problems) == 1 and problems[0].promise == "monotonic reads"
    concurrent = [put(1, b"a", 0, 3), put(3, b"b", 1, 4),
                  get(2, b"b", 5, 6), get(2, b"a", 7, 8)]
    assert monotonic_reads(concurrent) == []


def test_replicas_holding_the_last_write_have_converged() -> None:
    """Every replica holding the last acknowledged write (or nothing after a
    delete) is convergence."""
    history = [put(1, b"a", 0, 1), put(2, b"b", 2, 3), put(1, b"x", 0, 1, key=b"gone"),
               delete(2, 2, 3, key=b"gone")]
    replicas = {"n1": {b"k": b"b"}, "n2": {b"k": b"b"}}
    assert converged(history, replicas) == []


def test_replicas_that_differ_or_hold_an_overwritten_value_have_not_converged() -> None:
    """Replicas that disagree fail; so do replicas that all hold a value a
    later acknowledged write replaced, or one nobody wrote."""
    history = [put(1, b"a", 0, 1), put(2, b"b", 2, 3)]
    assert converged(history, {"n1": {b"k": b"b"}, "n2": {b"k": b"a"}})[0].why.startswith(
        "replicas differ")
    assert "later acknowledged write" in converged(
        history, {"n1": {b"k": b"a"}, "n2": {b"k": b"a"}})[0].why
    assert "no write wrote" in converged(history, {"n1": {b"k": b"z"}})[0].why
    # Concurrent writes: either may win, as long as all agree.
    concurrent = [put(1, b"a", 0, 3), put(2, b"b", 1, 4)]
    assert converged(concurrent, {"n1": {b"k": b"a"}, "n2": {b"k": b"a"}}) == []


def test_reading_absent_before_the_first_write_then_its_value_is_monotonic() -> None:
    """An absent key read before its first write, then the write's value,
    moves forward (even if a delete follows later); a value then absence
    with no delete in between goes back."""
    history = [get(2, None, 0, 1), put(1, b"a", 2, 3), get(2, b"a", 4, 5), delete(1, 6, 7)]
    assert monotonic_reads(history) == []
    assert monotonic_reads([put(1, b"a", 0, 1), get(2, b"a", 2, 3), get(2, None, 4, 5)]) != []
