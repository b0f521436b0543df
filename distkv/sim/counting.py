"""Counters in simulated runs: every INCRBY and INCRBYFLOAT a client made, and what must hold of them.

Runs increment their own keys (``c0``, ``c1``...), never SET or DEL, by
positive amounts (INCRBYFLOAT only the last two, by decimals), so what each
replica holds is checkable exactly, slot by slot (see
:mod:`distkv.store.counter`): a slot is written by one node, its total only
grows, and each increment leaves it at a total the recorder notes.
When it is made, an INCRBYFLOAT must answer the key's new value as its node
reads it, and have added to its slot the difference from the value before,
which is its amount up to the ``long double`` rounding Redis does (README,
*Counters*). After settling, on every replica:

* every slot's total is one that some increment made (nothing invented),
  and a whole number of units of 10^-17 (a fractional total is exact);
* for every acknowledged increment whose slot is not below the flush floor
  (a FLUSHALL drops the slots opened before it, with every increment in
  them) and that was not lost with a memory-only node or a replaced data
  dir, its slot's total is at least the one it made (*no acknowledged
  increment lost*); unacknowledged ones may count or not;
* the value read is the exact sum of the slots' totals, written out in
  decimal with no exponent and no trailing zeros.

Agreement between replicas is the convergence check's (:mod:`distkv.sim.checks`).
Plain data in, violations out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Set

from distkv.sim.history import ACKED, FAILED, INDETERMINATE, Violation
from distkv.store import counter as counters
from distkv.store import entries
from distkv.store.entries import Entry, counter_state
from distkv.store.hlc import Version

if TYPE_CHECKING:
    from distkv.store.store import Store

#: How many counter keys a run increments.
COUNTERS = 4


def key_of(number: int) -> bytes:
    return b"c%d" % number


def is_counter(key: bytes) -> bool:
    return key[:1] == b"c"


def decimal(total: counters.Total) -> bytes:
    """``total`` (an int, or a fraction of a power of ten) written out
    exactly, as GET reads a counter: no exponent, no trailing zeros."""
    fraction = Fraction(total)
    if fraction.denominator == 1:
        return b"%d" % fraction.numerator
    exact = Context(prec=200).divide(Decimal(fraction.numerator), Decimal(fraction.denominator))
    return format(exact, "f").rstrip("0").encode("ascii")


def exact_units(total: counters.Total) -> bool:
    """True when ``total`` is a whole number of units of 10^-17."""
    return (Fraction(total) * counters.SCALE).denominator == 1


def own_slot(entry: Entry, node_id: str) -> Optional[counters.Slot]:
    """The slot of ``node_id`` that ``entry``'s newest change wrote, if one did."""
    ms, counter = entry[-3], entry[-2]
    for slot, (_, slot_ms, slot_counter) in _slots(entry).items():
        if slot[0] == node_id and (slot_ms, slot_counter) == (ms, counter):
            return slot
    return None


@dataclass
class Increment:
    """One INCRBY or INCRBYFLOAT: its key, the slot it wrote and the total it left there."""

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
    if entry is None or not entries.is_counter(entry):
        return {}
    return counters.all_slots(counter_state(entry))


def _holds(stores: Sequence[Store], increment: Increment) -> bool:
    slot = increment.slot
    for store in stores:
        if (slot[1], slot[2], slot[0]) < store.flushed:
            return True
        total = _slots(store.entry(increment.key)).get(slot, (None,))[0]
        if total is not None and total >= increment.total:
            return True
    return False


@dataclass
class Counting:
    """Every INCRBY of a run."""

    made: List[Increment] = field(default_factory=list)

    def record(self, step: int, key: bytes, entry: Entry, node_id: str) -> Increment:
        """The increment just made through ``node_id``, from the entry it
        left (its newest change is the slot written)."""
        slot = own_slot(entry, node_id)
        assert slot is not None, "an increment left no slot of its own"
        increment = Increment(step, key, slot, _slots(entry)[slot][0])
        self.made.append(increment)
        return increment

    def float_made(self, step: int, node: str, key: bytes, amount: bytes, reply: bytes,
                   before: Optional[Entry], after: Entry) -> List[Violation]:
        """What an INCRBYFLOAT through ``node`` broke when it was made: its
        reply must be the value the key now reads, and its slot must have
        grown by the difference from the value read before (exactly), which
        is ``amount`` up to ``long double`` rounding."""
        out = []
        if after[0] != reply:
            out.append(Violation("counter", f"step {step}: INCRBYFLOAT {key!r} {amount!r} on {node} "
                                            f"answered {reply!r}, the key reads {after[0]!r}"))
        old = Fraction(before[0].decode()) if before is not None and before[0] is not None else Fraction(0)
        new = Fraction(reply.decode())
        made = self.made[-1]
        old_total = _slots(before).get(made.slot, (0,))[0] if before is not None else 0
        if Fraction(made.total) - Fraction(old_total) != new - old:
            out.append(Violation("counter", f"step {step}: INCRBYFLOAT {key!r} {amount!r} on {node} "
                                            f"took {old} to {new}, but its slot {made.slot} went from "
                                            f"{old_total} to {made.total}"))
        if abs(new - old - Fraction(amount.decode())) > Fraction(1, 10**12) * max(Fraction(1), abs(new)):
            out.append(Violation("counter", f"step {step}: INCRBYFLOAT {key!r} {amount!r} on {node} "
                                            f"took {old} to {new}"))
        return out

    def lost_unless_held(self, held: Sequence[Store], lost: Sequence[Store]) -> None:
        """Data was thrown away (``lost``): an increment it held that none of
        ``held`` (the running nodes', and the data dirs of nodes that are down)
        still holds is lost. One it did not hold either keeps counting: it was
        not lost with it. A store holds an increment whose slot it holds at
        that total or above, or whose slot lies below its flush floor."""
        for increment in self.made:
            if not increment.lost and not _holds(held, increment) and _holds(lost, increment):
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
                if not exact_units(total):
                    out.append(Violation("counter", f"{replica} holds {key!r} with slot {slot} at "
                                                    f"{total}, not a whole number of 10^-17 units"))
                if (slot[1], slot[2], slot[0]) < floor:
                    out.append(Violation("flush", f"{replica} holds {key!r} with slot {slot}, "
                                                  f"opened below the flush at {floor}"))
                if total not in totals.get(slot, ()):
                    out.append(Violation(
                        "counter", f"{replica} holds {key!r} with slot {slot} at {total}, "
                        f"a total no increment made"))
            expected = decimal(sum(total for total, _, _ in slots.values())) if slots else None
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
                    "counter", f"{replica} lost the acknowledged increment of {increment.key!r} at step "
                    f"{increment.step}: slot {increment.slot} holds {held}, below {increment.total}"))
        return out
