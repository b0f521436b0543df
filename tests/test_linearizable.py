"""The linearizability checker (distkv.sim.linearizable) on hand-made histories that are
and are not linearizable, on random histories of one real register, and on where it
says a failing history fails."""

from __future__ import annotations

import random
from typing import List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from distkv.sim.linearizable import (
    NOT_INTEGER,
    UNKNOWN,
    Op,
    check,
    fails_from_any,
    linearizable,
    step,
)
from tests.proptest import examples

K = b"k"


def op(client: int, kind: str, args: tuple, call: float, ret: Optional[float], out: object,
       key: bytes = K) -> Op:
    return Op(client, kind, key, args, call, ret, out)


def get(c: int, call: float, ret: Optional[float], out: object, key: bytes = K) -> Op:
    return op(c, "get", (), call, ret, out, key)


def put(c: int, value: bytes, call: float, ret: Optional[float], key: bytes = K) -> Op:
    return op(c, "set", (value,), call, ret, None if ret is not None else UNKNOWN, key)


def test_a_sequential_history_that_one_copy_would_give_is_linearizable() -> None:
    """set a, get a, delete (1), get nil, delete (0), one after another."""
    history = [put(1, b"a", 0, 1), get(1, 2, 3, b"a"), op(1, "delete", (), 4, 5, 1),
               get(2, 6, 7, None), op(2, "delete", (), 8, 9, 0)]
    assert check(history) == []


def test_a_stale_read_after_a_completed_overwrite_is_not() -> None:
    """set a; set b returns; a later get still reads a: no order explains it, and the
    window names the overwrite and the read, not the first write."""
    history = [put(1, b"a", 0, 1), put(1, b"b", 2, 3), get(2, 4, 5, b"a")]
    [failure] = check(history)
    assert failure.culprit == history[2]
    assert failure.from_any
    assert set(failure.window) == {history[1], history[2]}
    assert "no linearization explains client 2: get" in failure.describe()


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    """A get that overlaps a set may read the old value or the new one, but two
    reads after each other cannot go new, then old."""
    for seen in (b"a", b"b"):
        assert check([put(1, b"a", 0, 1), put(1, b"b", 2, 6), get(2, 3, 4, seen)]) == []
    flip = [put(1, b"a", 0, 1), put(1, b"b", 2, 9), get(2, 3, 4, b"b"), get(2, 5, 6, b"a")]
    [failure] = check(flip)
    assert failure.culprit == flip[3]


def test_calls_and_returns_at_the_same_instant_count_as_concurrent() -> None:
    """An operation invoked at the instant another returned may be ordered before it."""
    assert check([put(1, b"a", 0, 5), get(2, 5, 6, None)]) == []


def test_a_timed_out_write_may_take_effect_later_or_never_but_only_once() -> None:
    """A set that timed out may show up long after, or never; but a value cannot
    come back after it was overwritten with no write of it in between."""
    lost = put(1, b"b", 2, None)
    assert check([put(1, b"a", 0, 1), lost, get(2, 10, 11, b"a"), get(2, 20, 21, b"b")]) == []
    assert check([put(1, b"a", 0, 1), lost, get(2, 10, 11, b"a")]) == []
    back = [put(1, b"a", 0, 1), lost, get(2, 10, 11, b"b"), get(2, 12, 13, b"a")]
    [failure] = check(back)
    assert failure.culprit == back[3]


def test_two_compare_and_sets_from_absent_cannot_both_win() -> None:
    """SET NX from two clients at once: one wins, or the history is not linearizable."""
    one = [op(1, "cas", (None, b"x"), 0, 3, True), op(2, "cas", (None, b"y"), 1, 2, False),
           get(3, 4, 5, b"x")]
    assert check(one) == []
    both = [op(1, "cas", (None, b"x"), 0, 3, True), op(2, "cas", (None, b"y"), 1, 2, True)]
    assert len(check(both)) == 1
    lost = [op(1, "cas", (None, b"x"), 0, 3, True), get(3, 4, 5, None)]
    assert len(check(lost)) == 1


def test_concurrent_increments_each_count_once() -> None:
    """Two concurrent INCRs answer 1 and 2 (in either order), never 1 and 1; INCR of a
    non-integer is an error that changes nothing."""
    assert check([op(1, "incr", (1,), 0, 5, 2), op(2, "incr", (1,), 1, 4, 1)]) == []
    assert len(check([op(1, "incr", (1,), 0, 5, 1), op(2, "incr", (1,), 1, 4, 1)])) == 1
    text = [put(1, b"abc", 0, 1), op(1, "incr", (5,), 2, 3, NOT_INTEGER), get(1, 4, 5, b"abc")]
    assert check(text) == []
    assert step(b"41", op(1, "incr", (1,), 0, 1, 42)) == (True, b"42")


def test_deletes_answer_what_they_removed() -> None:
    """DEL answers 1 only when the key was there."""
    assert len(check([op(1, "delete", (), 0, 1, 1)])) == 1
    assert check([put(1, b"a", 0, 1), op(1, "delete", (), 2, 3, 1),
                  op(2, "delete", (), 4, 5, 0)]) == []


def test_keys_are_checked_apart_and_start_from_what_they_held() -> None:
    """A failure on one key names that key only; ``initial`` is what keys held."""
    history = [get(1, 0, 1, b"x", key=b"a"), get(1, 0, 1, b"y", key=b"b")]
    failures = check(history, {b"a": b"x"})
    assert [f.key for f in failures] == [b"b"]


def test_the_window_is_short_in_a_long_history() -> None:
    """After 300 good operations from 3 clients, one stale read: the report shows the
    few operations that conflict, not the whole run."""
    rng = random.Random(7)
    history: List[Op] = []
    now = 0.0
    value = None
    for i in range(300):
        client = i % 3
        if rng.random() < 0.5:
            value = b"v%d" % i
            history.append(put(client, value, now, now + 1))
        else:
            history.append(get(client, now, now + 1, value))
        now += 2
    history.append(put(0, b"new", now, now + 1))
    history.append(get(1, now + 2, now + 3, value))
    [failure] = check(history)
    assert failure.culprit == history[-1]
    assert len(failure.window) <= 3
    assert history[-2] in failure.window


def test_an_unknown_starting_state_covers_what_increments_started_from() -> None:
    """A window that begins with an increment still in flight and reads its result
    does not fail from every starting state (it started from 5)."""
    history = [put(1, b"5", 0, 1), op(1, "incr", (1,), 2, None, UNKNOWN), get(2, 3, 4, b"6")]
    assert not fails_from_any(history, history[1:])
    stale = [put(1, b"a", 0, 1), put(1, b"b", 2, 3), get(2, 4, 5, b"a")]
    assert fails_from_any(stale, stale[1:])
    assert not fails_from_any(stale, stale[2:])


def test_an_operation_that_returns_before_it_starts_is_refused() -> None:
    try:
        check([get(1, 5, 4, None)])
    except ValueError as e:
        assert "returns before it is invoked" in str(e)
    else:
        raise AssertionError("accepted an operation that returns before it starts")


def _register_history(seed: int, clients: int, count: int) -> List[Op]:
    """A history of one real register: each operation takes effect at a random
    instant inside its own interval, so some linearization always exists."""
    rng = random.Random(seed)
    planned = []
    for i in range(count):
        call = rng.uniform(0, count)
        ret = call + rng.uniform(0, 5)
        effect = rng.uniform(call, ret)
        kind = rng.choice(["get", "set", "set", "delete", "cas", "incr"])
        args: tuple = {"get": (), "delete": (), "set": (b"v%d" % rng.randrange(4),),
                       "cas": (rng.choice([None, b"v1", b"3"]), b"v%d" % i),
                       "incr": (rng.choice([1, 2]),)}[kind]
        timed_out = rng.random() < 0.1
        planned.append((effect, i % clients, kind, args, call, None if timed_out else ret,
                        timed_out))
    planned.sort()
    state = None
    history = []
    for _effect, client, kind, args, call, ret, timed_out in planned:
        probe = Op(client, kind, K, args, call, ret, UNKNOWN)
        out: object = UNKNOWN
        if kind == "get":
            out = state
        elif kind == "delete":
            out = 0 if state is None else 1
        elif kind == "cas":
            out = state == args[0]
        elif kind == "incr":
            _, after = step(state, probe)
            out = NOT_INTEGER if after == state else int(after)  # type: ignore[arg-type]
        elif kind == "set":
            out = None
        _, state = step(state, probe)
        history.append(probe._replace(out=UNKNOWN if timed_out else out))
    return history


@settings(max_examples=examples(150), deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 40))
def test_every_history_of_a_real_register_is_linearizable(seed: int, clients: int,
                                                          count: int) -> None:
    """Operations that really ran against one register, each at an instant inside
    its interval (some timed out), always have a linearization."""
    assert check(_register_history(seed, clients, count)) == []


@settings(max_examples=examples(150), deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(2, 40))
def test_a_read_of_a_value_never_written_is_always_caught(seed: int, clients: int,
                                                          count: int) -> None:
    """The same histories with one read's answer replaced by a value nobody wrote
    never pass, and the culprit is that read, in a window that fails whatever the
    key held (nothing ever held that value)."""
    history = _register_history(seed, clients, count)
    reads = [i for i, o in enumerate(history) if o.kind == "get" and o.ret is not None]
    if not reads:
        return
    i = reads[seed % len(reads)]
    history[i] = history[i]._replace(out=b"never written")
    [failure] = check(history)
    assert failure.culprit == history[i]
    assert failure.from_any
    assert history[i] in failure.window


def test_a_long_concurrent_history_is_checked() -> None:
    """Four clients, 2,000 overlapping operations on one key: the cache keeps the
    search from exploring the same (placed, state) twice, so it finishes."""
    assert linearizable(_register_history(11, 4, 2000))
