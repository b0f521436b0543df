"""The weaker promises, checked on recorded histories: read-your-writes,
monotonic reads and convergence.

A history is a list of :class:`~distkv.sim.linearizable.Op` (``get``,
``set`` and ``delete``), each value written once, so a read's answer names
the write it saw. Without the replicas' versions, "newer" is what real time
proves: a write that returned before another was invoked is older (under
last-writer-wins with clocks that move forward between the two, the
system stamps it lower). An operation that timed out (``ret`` None) may
have taken effect at any time after its call.

* **Read-your-writes** (a client's read, on any node, after its own write
  returned): the read answers that write's value, or that of a write which
  may be newer: one not known to have returned before that write was
  invoked, and invoked before the read returned.
* **Monotonic reads** (a client's two reads of a key, the second invoked
  after the first returned): the second never answers a write known to be
  older than the one the first answered.
* **Convergence** (after the run, every replica holds the same value for
  each key, and it is the value of a write no acknowledged write is known
  to have followed; a delete's is absence).

Each checker returns the violations it found (empty: the promise held).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from distkv.sim.linearizable import Op, Value


class Violation(NamedTuple):
    """A promise the history breaks, and the operations that show it."""

    promise: str
    key: bytes
    ops: Tuple[Op, ...]
    why: str

    def describe(self) -> str:
        lines = [f"{self.promise} broken on {self.key!r}: {self.why}"]
        lines.extend("  " + op.describe() for op in self.ops)
        return "\n".join(lines)


def _writes(history: Iterable[Op]) -> Dict[bytes, List[Op]]:
    """Every write (set, delete) by key, in call order."""
    found: Dict[bytes, List[Op]] = {}
    for op in history:
        if op.kind in ("set", "delete"):
            found.setdefault(op.key, []).append(op)
    for ops in found.values():
        ops.sort(key=lambda op: op.call)
    return found


def _written(op: Op) -> Value:
    return op.args[0] if op.kind == "set" else None  # type: ignore[return-value]


def _before(a: Op, b: Op) -> bool:
    """Whether ``a`` returned before ``b`` was invoked: real time orders them."""
    return a.ret is not None and a.ret < b.call


#: Where an absent key's value may come from besides a delete: before any write.
_INITIAL = Op(-1, "delete", b"", (), float("-inf"), float("-inf"), None)


def _sources(writes: List[Op], value: Value, initial: bool = False) -> List[Op]:
    """The writes that could have produced ``value`` (None: the deletes,
    and with ``initial`` the absence before any write)."""
    found = [w for w in writes if _written(w) == value]
    if initial and value is None:
        found.append(_INITIAL)
    return found


def _done(history: Iterable[Op], kind: str) -> List[Op]:
    return [op for op in history if op.kind == kind and op.ret is not None]


def read_your_writes(history: Iterable[Op]) -> List[Violation]:
    """Each client's reads after its own writes returned (see the module)."""
    history = list(history)
    writes = _writes(history)
    problems: List[Violation] = []
    for read in _done(history, "get"):
        own = [w for w in writes.get(read.key, []) if w.client == read.client and _before(w, read)]
        if not own:
            continue
        last = max(own, key=lambda w: w.ret)  # type: ignore[arg-type, return-value]
        if read.out == _written(last):
            continue
        later = [w for w in _sources(writes.get(read.key, []), read.out)  # type: ignore[arg-type]
                 if w is not last and not _before(w, last) and w.call < read.ret]  # type: ignore[operator]
        if not later:
            problems.append(Violation(
                "read-your-writes", read.key, (last, read),
                f"the read answered {read.out!r}, older than the client's own write"))
    return problems


def monotonic_reads(history: Iterable[Op]) -> List[Violation]:
    """Each client's successive reads of a key never go back (see the module)."""
    history = list(history)
    writes = _writes(history)
    reads: Dict[Tuple[int, bytes], List[Op]] = {}
    for op in _done(history, "get"):
        reads.setdefault((op.client, op.key), []).append(op)
    problems: List[Violation] = []
    for (_, key), ops in reads.items():
        ops.sort(key=lambda op: op.call)
        candidates = writes.get(key, [])
        for index, second in enumerate(ops):
            for first in ops[:index]:
                if not _before(first, second) or first.out == second.out:
                    continue
                seen = _sources(candidates, first.out, True)  # type: ignore[arg-type]
                now = _sources(candidates, second.out, True)  # type: ignore[arg-type]
                # Older for certain: every write that could explain the second
                # answer returned before every one that explains the first.
                if seen and now and all(_before(n, s) for n in now for s in seen):
                    problems.append(Violation(
                        "monotonic reads", key, (first, second, *now[:1], *seen[:1]),
                        f"read {first.out!r}, then the older {second.out!r}"))
                    break
    return problems


def converged(history: Iterable[Op], replicas: Mapping[str, Mapping[bytes, bytes]],
              keys: Optional[Iterable[bytes]] = None) -> List[Violation]:
    """Whether every replica (name -> its live values) holds the same value
    of each key the history wrote, a value no acknowledged write is known
    to have followed (see the module)."""
    writes = _writes(history)
    problems: List[Violation] = []
    names = sorted(replicas)
    for key in sorted(set(keys) if keys is not None else set(writes)):
        held = {name: replicas[name].get(key) for name in names}
        values = set(held.values())
        if len(values) > 1:
            problems.append(Violation(
                "convergence", key, (),
                "replicas differ: " + ", ".join(f"{n}={v!r}" for n, v in held.items())))
            continue
        value = next(iter(values)) if values else None
        candidates = writes.get(key, [])
        if not candidates:
            if value is not None:
                problems.append(Violation("convergence", key, (),
                                          f"holds {value!r}, which no write wrote"))
            continue
        sources = _sources(candidates, value)
        acknowledged = [w for w in candidates if w.ret is not None]
        if value is None and not acknowledged:
            continue  # only writes that timed out, none of which landed
        if not any(not any(_before(s, w) for w in acknowledged) for s in sources):
            last = max(acknowledged, key=lambda w: w.call) if acknowledged else None
            problems.append(Violation(
                "convergence", key, tuple(sources[:1]) + ((last,) if last else ()),
                f"every replica holds {value!r}, but a later acknowledged write exists"
                if sources else f"every replica holds {value!r}, which no write wrote"))
    return problems
