"""Is a recorded history linearizable? The Wing-Gong search with Lowe's cache, per key.

A history is what clients saw: each :class:`Op` names its client, what it
asked (``get``, ``set``, ``delete``, ``cas`` or ``incr`` on one key), when it
was invoked and when its answer came back, and the answer. An operation that
timed out is *indeterminate*: its ``ret`` is None and its answer unknown; it
may have taken effect at any moment after it was invoked, or never. The
history is linearizable if the operations can be put in one order that keeps
real time (an operation that returned before another was invoked comes first)
and in which every answer is what one copy of the data would have given.

Operations on different keys never constrain each other, so each key's
history is checked alone (linearizability is local; Porcupine's
P-compositionality). Each key is searched as Wing and Gong, and Lowe, do:
walk the invocations in time order, linearize the first one the model
accepts next, and backtrack when an operation's return comes before it was
placed; a cache of (operations placed, state) pairs skips every state the
search has already explored, which keeps realistic histories fast.

When a key fails, :func:`check` also finds where: the earliest answer no
order can explain (the shortest failing prefix of the history) and, ending
there, the shortest window of operations that fails *whatever* the key held
when the window began (absent, or any value the history wrote), so the
report shows the few operations that conflict rather than the whole run.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple

#: The answer of an operation that timed out: unknown.
UNKNOWN = object()
#: The answer of ``incr`` on a value that is not an integer.
NOT_INTEGER = "not-integer"

Value = Optional[bytes]


class Op(NamedTuple):
    """One operation as a client saw it.

    ``args`` by ``kind``: ``set`` (value,); ``cas`` (expected, new), where an
    expected None means "only if absent" (``SET NX``); ``incr`` (delta,);
    ``get`` and ``delete`` (). ``out`` by ``kind``: ``get`` the value or
    None; ``set`` None; ``delete`` how many keys it removed (0 or 1); ``cas``
    whether it swapped; ``incr`` the new integer or :data:`NOT_INTEGER`; or
    :data:`UNKNOWN` when ``ret`` is None (it timed out).
    """

    client: int
    kind: str
    key: bytes
    args: Tuple[object, ...]
    call: float
    ret: Optional[float]
    out: object

    def describe(self) -> str:
        args = " ".join(repr(a) for a in self.args)
        shown = "?" if self.ret is None else repr(self.out)
        end = "timed out" if self.ret is None else f"{self.ret:g}"
        return f"client {self.client}: {self.kind} {self.key!r} {args} -> {shown} [{self.call:g}, {end}]"


def step(state: Value, op: Op) -> Tuple[bool, Value]:
    """One copy of the data: whether ``op``'s answer fits ``state``, and the state after it."""
    kind, out, unknown = op.kind, op.out, op.out is UNKNOWN
    if kind == "get":
        return unknown or out == state, state
    if kind == "set":
        return True, op.args[0]  # type: ignore[return-value]
    if kind == "delete":
        return unknown or out == (0 if state is None else 1), None
    if kind == "cas":
        expected, new = op.args
        swapped = state == expected
        return unknown or out == swapped, new if swapped else state  # type: ignore[return-value]
    if kind == "incr":
        try:
            number = 0 if state is None else int(state)
        except ValueError:
            return unknown or out == NOT_INTEGER, state
        after = number + op.args[0]  # type: ignore[operator]
        return unknown or out == after, b"%d" % after
    raise ValueError(f"unknown operation kind {kind!r}")


class _Entry:
    """A call or a return in the doubly linked list the search walks."""

    __slots__ = ("index", "is_call", "match", "prev", "next")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: Optional[_Entry] = None  # a call's return
        self.prev: Optional[_Entry] = None
        self.next: Optional[_Entry] = None


def _entries(ops: List[Op]) -> _Entry:
    """The list head (a sentinel) of every call and return in time order.

    At equal times calls come first, so operations that touch count as
    concurrent: the checker never fails a history on a tie. A timed-out
    operation returns after everything.
    """
    events: List[Tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((float("inf") if op.ret is None else op.ret, 1, i))
    events.sort()
    head = _Entry(-1, False)
    calls: Dict[int, _Entry] = {}
    last = head
    for _, is_return, i in events:
        entry = _Entry(i, not is_return)
        if is_return:
            calls[i].match = entry
        else:
            calls[i] = entry
        entry.prev, last.next = last, entry
        last = entry
    return head


def _lift(call: _Entry) -> None:
    for entry in (call, call.match):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry.next
        if entry.next is not None:
            entry.next.prev = entry.prev


def _unlift(call: _Entry) -> None:
    for entry in (call.match, call):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry
        if entry.next is not None:
            entry.next.prev = entry


def linearizable(ops: List[Op], initial: Value = None) -> bool:
    """Whether one key's operations have a linearization from ``initial``."""
    head = _entries(ops)
    state = initial
    placed = 0
    seen: Set[Tuple[int, Value]] = set()
    stack: List[Tuple[_Entry, Value]] = []
    entry = head.next
    while head.next is not None:
        assert entry is not None  # a return always ends the walk first
        if entry.is_call:
            ok, after = step(state, ops[entry.index])
            if ok:
                now = placed | (1 << entry.index)
                if (now, after) not in seen:
                    seen.add((now, after))
                    stack.append((entry, state))
                    state, placed = after, now
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False
            call, state = stack.pop()
            placed &= ~(1 << call.index)
            _unlift(call)
            entry = call.next
    return True


class Failure(NamedTuple):
    """Where one key's history fails."""

    key: bytes
    #: The operation whose answer no order explains, at the earliest such return.
    culprit: Op
    #: The shortest window ending there that fails whatever the key held
    #: when it began (see :func:`fails_from_any`) or, if none does, the whole
    #: history up to the culprit's return.
    window: Tuple[Op, ...]
    #: Whether ``window`` is such a window (not the whole history).
    from_any: bool

    def describe(self) -> str:
        before = ("whatever the key held before them" if self.from_any
                  else "from the key's starting state")
        lines = [f"key {self.key!r}: no linearization explains {self.culprit.describe()}",
                 f"  within these {len(self.window)} operations, {before}:"]
        lines += ["    " + op.describe() for op in sorted(self.window, key=lambda op: op.call)]
        return "\n".join(lines)


def _pending(op: Op, call: float) -> Op:
    return op._replace(call=call, ret=None, out=UNKNOWN)


def _prefix(ops: List[Op], cut: float) -> List[Op]:
    """The history as it stood at ``cut``: answers after it not yet known."""
    return [op if op.ret is not None and op.ret <= cut else _pending(op, op.call)
            for op in ops if op.call <= cut]


def _window(ops: List[Op], start: float, cut: float) -> List[Op]:
    """The operations that overlap [start, cut]; one invoked before ``start``
    may have taken effect before it (its effect then lies in the unknown
    starting state) or after it, so it becomes pending from ``start``."""
    found = []
    for op in _prefix(ops, cut):
        if op.ret is not None and op.ret < start:
            continue
        found.append(_pending(op, start) if op.call < start else op)
    return found


#: The most sums of ``incr`` deltas tried as offsets of a written integer.
MOST_SUMS = 4096


def _starting_states(history: List[Op], window: List[Op], initial: Value) -> FrozenSet[Value]:
    """What the key may have held when ``window`` began: absent, its value
    before ``history``, any value ``history`` writes, and any integer among
    those less a sum of the window's ``incr`` deltas (increments in flight
    may have started from it). A superset: a window that fails from each of
    these fails from wherever the history put the key."""
    written: Set[Value] = {None, initial}
    for op in history:
        if op.kind == "set":
            written.add(op.args[0])  # type: ignore[arg-type]
        elif op.kind == "cas":
            written.add(op.args[1])  # type: ignore[arg-type]
        elif op.kind == "incr" and isinstance(op.out, int):
            written.add(b"%d" % op.out)
        elif op.kind == "get" and isinstance(op.out, bytes) and op.out.lstrip(b"-").isdigit():
            written.add(op.out)  # an integer that increments may have made
    sums = {0}
    for op in window:
        if op.kind == "incr" and len(sums) < MOST_SUMS:
            delta = op.args[0]
            sums |= {s + delta for s in sums}  # type: ignore[operator]
    states = set(written)
    for value in written:
        if value is not None and value.lstrip(b"-").isdigit():
            states.update(b"%d" % (int(value) - s) for s in sums)
    return frozenset(states)


def fails_from_any(history: List[Op], window: List[Op], initial: Value = None) -> bool:
    """Whether ``window`` has no linearization from any state the key may have held."""
    return not any(linearizable(window, state)
                   for state in _starting_states(history, window, initial))


def explain(key: bytes, ops: List[Op], initial: Value = None) -> Failure:
    """Where a failing key's history (``linearizable(ops, initial)`` is False) fails."""
    cuts = sorted({op.ret for op in ops if op.ret is not None})
    low, high = 0, len(cuts) - 1  # the earliest cut whose prefix fails
    while low < high:
        middle = (low + high) // 2
        if linearizable(_prefix(ops, cuts[middle]), initial):
            low = middle + 1
        else:
            high = middle
    cut = cuts[low]
    culprit = next(op for op in ops if op.ret == cut)
    prefix = _prefix(ops, cut)
    for start in sorted({op.call for op in prefix}, reverse=True):
        window = _window(ops, start, cut)
        if fails_from_any(prefix, window, initial):
            return Failure(key, culprit, tuple(window), True)
    return Failure(key, culprit, tuple(prefix), False)


def check(history: Iterable[Op], initial: Optional[Dict[bytes, Value]] = None) -> List[Failure]:
    """Every key whose operations have no linearization (empty: the history
    is linearizable); ``initial`` is what keys held before it (absent by default)."""
    by_key: Dict[bytes, List[Op]] = {}
    for op in history:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before it is invoked: {op.describe()}")
        by_key.setdefault(op.key, []).append(op)
    start = initial or {}
    return [explain(key, ops, start.get(key)) for key, ops in sorted(by_key.items())
            if not linearizable(ops, start.get(key))]
