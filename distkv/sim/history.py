"""A recorded history of client writes and deletes, checked under last-writer-wins.

The fault simulator (:mod:`distkv.simulate`) records every write and delete a
client made through some node: the key, the value (None for a delete), the
version the node stamped (an expiry change that wrote, ``PEXPIRE``,
``PERSIST``, ``GETEX``..., is the write of the value it left with its new
expiry, or a delete when its time had passed), and how it ended: *acknowledged* (``OK`` or the
delete count reached the client), *failed* (an error reply), or
*indeterminate* (never answered: the node crashed before its commit). An
acknowledged write whose only copies were lost with a memory-only node, or
with a data dir replaced by an older copy or an empty one, is documented as
lost (see the README's "What is not guaranteed"), so the simulator downgrades
it to indeterminate at that moment with :meth:`History.lost_unless_held`.

:func:`check` compares a replica's final entries with the history. Versions
are unique per write, and a replica keeps the highest one, so:

* every entry a replica holds must be one that some client wrote (value and
  version as recorded): nothing invented, nothing mixed up;
* for every key, the replica's version is at least the highest acknowledged
  one: an acknowledged write is present or superseded by a later write or
  delete (*no acknowledged write lost*), and an acknowledged delete is not
  undone by an older value (*no resurrection*);
* a key the replica lacks altogether was deleted (its tombstone purged) by a
  recorded delete above every acknowledged write of it, or its highest
  acknowledged write carried an expiry (checks run once every expiry has
  passed: an expired value is held as the tombstone at its own version, or
  purged like one);
* an acknowledged write below an acknowledged flush (``FLUSHALL``, see
  :meth:`distkv.store.store.Store.raise_floor`) is gone by design, and no
  replica may hold an entry below the latest such flush.

No networking and no reactor here: plain data in, violations out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from distkv.store.entries import Entry, expires_of, version_of
from distkv.store.hlc import Version

ACKED = "acked"
FAILED = "failed"
INDETERMINATE = "indeterminate"


@dataclass
class Op:
    """One client write (``value``) or delete (``value`` None) and its outcome."""

    step: int
    node: str
    key: bytes
    value: Optional[bytes]
    version: Version
    outcome: str = INDETERMINATE
    #: When the write's value expires (ms since the epoch), or 0.
    expires: int = 0


@dataclass(frozen=True)
class Violation:
    """An invariant that failed, and what showed it."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class History:
    """Every write and delete made in one run, by key."""

    ops: Dict[bytes, List[Op]] = field(default_factory=dict)
    #: The floors of the acknowledged flushes, and whether each is still
    #: held somewhere (see :meth:`flush_lost_unless_held`).
    flushes: List[Version] = field(default_factory=list)

    def flushed(self, floor: Version) -> None:
        """A FLUSHALL at ``floor`` was acknowledged."""
        self.flushes.append(floor)

    def flush_lost_unless_held(self, held: Version) -> int:
        """Forget the flushes above ``held``, the highest floor any node that
        keeps its data still holds: they went with a memory-only node before
        any peer heard of them, as its writes would (returns how many)."""
        before = len(self.flushes)
        self.flushes = [floor for floor in self.flushes if floor <= held]
        return before - len(self.flushes)

    @property
    def floor(self) -> Optional[Version]:
        """The latest acknowledged flush still held, if any."""
        return max(self.flushes, default=None)

    def invoked(self, step: int, node: str, key: bytes, value: Optional[bytes],
                entry: Entry) -> Op:
        op = Op(step, node, key, value, version_of(entry), expires=expires_of(entry))
        self.ops.setdefault(key, []).append(op)
        return op

    def lost_unless_held(self, held: Mapping[bytes, Version],
                         lost: Mapping[bytes, Version]) -> int:
        """Downgrade to indeterminate every acknowledged op that the data just
        thrown away held (``lost``: the highest version of each key in it)
        and that nothing still holds (``held``: the same, over the running
        nodes and the data dirs they come back on); returns how many. An op
        that the lost data did not hold either keeps its outcome: it was not
        lost with it, and the final check judges it."""
        count = 0
        for key, ops in self.ops.items():
            kept = held.get(key)
            gone = lost.get(key)
            for op in ops:
                if op.outcome == ACKED and (kept is None or kept < op.version) \
                        and gone is not None and gone >= op.version:
                    op.outcome = INDETERMINATE
                    count += 1
        return count


def _describe(op: Op) -> str:
    what = "DEL" if op.value is None else f"SET ({len(op.value)} bytes)"
    return f"{what} of {op.key!r} at step {op.step} via {op.node}, version {op.version}"


def check(history: History, replica: str, entries: Mapping[bytes, Entry]) -> List[Violation]:
    """What ``replica``'s final ``entries`` break of the history (see the module)."""
    out: List[Violation] = []
    written: Dict[Tuple[bytes, Version], Op] = {}
    for ops in history.ops.values():
        for each in ops:
            written[each.key, each.version] = each
    for key, entry in entries.items():
        version = version_of(entry)
        found = written.get((key, version))
        # A write with an expiry is held as written, or (once expired) as the
        # tombstone at its version.
        if found is None or (found.value, found.expires) != (entry[0], expires_of(entry)) and not (
            found.expires and entry[0] is None
        ):
            out.append(Violation(
                "phantom", f"{replica} holds {key!r} at {version}, which no client wrote"
            ))
    floor = history.floor
    if floor is not None:
        below = sorted(key for key, entry in entries.items() if entry[-3:] < floor)
        if below:
            out.append(Violation(
                "flush", f"{replica} holds {below} below the flush at {floor}"
            ))
    for key, ops in history.ops.items():
        # A write the flush removed is gone by design.
        acked = [op for op in ops if op.outcome == ACKED
                 and (floor is None or op.version >= floor)]
        if not acked:
            continue
        top = max(acked, key=lambda op: op.version)
        held = entries.get(key)
        if held is None:
            # An expired write is gone like a delete (every run settles past
            # each expiry before it is checked): a later delete or write with
            # an expiry, acknowledged or not (one that landed wins), explains
            # a missing key.
            gone = [op for op in ops if (op.value is None or op.expires)
                    and op.version > top.version]
            if top.value is not None and not gone and not top.expires:
                out.append(Violation(
                    "lost-write", f"{replica} lacks {key!r}: acknowledged {_describe(top)}"
                ))
            continue
        version = version_of(held)
        if version < top.version:
            kind = "resurrection" if top.value is None else "lost-write"
            out.append(Violation(
                kind, f"{replica} holds {key!r} at {version} below acknowledged {_describe(top)}"
            ))
    return out
