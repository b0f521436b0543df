"""Counters in simulated runs: every INCRBY a client made, and what must hold of them.

Runs increment their own keys (``c0``, ``c1``...), never SET or DEL, by
positive amounts, so what each replica holds is checkable exactly, slot by
slot (see :mod:`distkv.store.counter`): a slot is written by one node, its
total only grows, and each INCRBY leaves it at a total the recorder notes.
After settling, on every replica:

* every slot's total is one that some INCRBY made (nothing invented);
* for every acknowledged INCRBY whose slot is not below the flush floor
  (a FLUSHALL drops the slots opened before it, with every increment in
  them) and that was not lost with a memory-only node or a replaced data
  dir, its slot's total is at least the one it made (*no acknowledged
  increment lost*); unacknowledged ones may count or not;
* the value read is the sum of the slots' totals.

Agreement between replicas is the convergence check's (:mod:`distkv.sim.checks`).
Plain data in, violations out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Set

from distkv.sim.history import ACKED, FAILED, INDETERMINATE, Violation
from distkv.store import counter as counters
from distkv.store.hlc import Version
from distkv.store.store import Entry

if TYPE_CHECKING:
    from distkv.node import Node

#: How many counter keys a run increments.
COUNTERS = 3


def key_of(number: int) -> bytes:
    return b"c%d" % number


def is_counter(key: bytes) -> bool:
    return key[:1] == b"c"


@dataclass
class Increment:
    """One INCRBY: its key, the slot it wrote and the total it left there."""

    step: int
    key: bytes
    slot: counters.Slot
    total: counters.Total
    outcome: str = INDETERMINATE
    #: Lost as documented (every copy was on a node that lost its data).
    lost: bool = False

    def settle(self, error: Optional[str]) -> None:
        self.outcome = ACKED if error is None else FAILED


def _slots(entry: Optional[Entry]) -> Dict[counters.Slot, counters.SlotState]:
    if entry is None or len(entry) != 6:
        return {}
    return counters.all_slots(entry[2])  # type: ignore[misc,arg-type]


@dataclass
class Counting:
    """Every INCRBY of a run."""

    made: List[Increment] = field(default_factory=list)

    def record(self, step: int, key: bytes, entry: Entry) -> Increment:
        """The INCRBY just made, from the entry it left (its newest slot is the one written)."""
        state: counters.CounterState = entry[2]  # type: ignore[misc,assignment]
        slot = state[counters.LAST]
        assert slot is not None, "an INCRBY left no slot of its own"
        increment = Increment(step, key, slot, state[counters.LAST_TOTAL])
        self.made.append(increment)
        return increment

    def lost_unless_held(self, nodes: Mapping[str, Node]) -> None:
        """Data was thrown away: an increment no running node holds is lost."""
        held: Dict[bytes, List[Dict[counters.Slot, counters.SlotState]]] = {}
        for increment in self.made:
            if increment.lost:
                continue
            if increment.key not in held:
                held[increment.key] = [_slots(node.store.entry(increment.key)) for node in nodes.values()]
            if not any(slots.get(increment.slot, (0,))[0] >= increment.total
                       for slots in held[increment.key]):
                increment.lost = True

    def check(self, replica: str, entries: Mapping[bytes, Entry], floor: Version) -> List[Violation]:
        """What ``replica``'s final ``entries`` break (see the module)."""
        out: List[Violation] = []
        totals: Dict[counters.Slot, Set[counters.Total]] = {}
        for increment in self.made:
            totals.setdefault(increment.slot, set()).add(increment.total)
        for key, entry in entries.items():
            if not is_counter(key):
                continue
            slots = _slots(entry)
            for slot, (total, _, _) in slots.items():
                if (slot[1], slot[2], slot[0]) < floor:
                    out.append(Violation("flush", f"{replica} holds {key!r} with slot {slot}, "
                                                  f"opened below the flush at {floor}"))
                if total not in totals.get(slot, ()):
                    out.append(Violation(
                        "counter", f"{replica} holds {key!r} with slot {slot} at {total}, "
                        f"a total no INCRBY made"))
            expected = b"%d" % sum(total for total, _, _ in slots.values()) if slots else None
            if entry[0] != expected:
                out.append(Violation(
                    "counter", f"{replica} reads {key!r} as {entry[0]!r}, its slots add up to {expected!r}"))
        for increment in self.made:
            if (increment.outcome != ACKED or increment.lost
                    or (increment.slot[1], increment.slot[2], increment.slot[0]) < floor):
                continue
            slots = _slots(entries.get(increment.key))
            held = slots.get(increment.slot, (None,))[0]
            if held is None or held < increment.total:
                out.append(Violation(
                    "counter", f"{replica} lost the acknowledged INCRBY of {increment.key!r} at step "
                    f"{increment.step}: slot {increment.slot} holds {held}, below {increment.total}"))
        return out
