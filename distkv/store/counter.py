"""Counters that add up across nodes: the state a counter key holds, and its merge.

A key that was ever INCRed (or DECRed...) holds a :data:`CounterState`
instead of plain bytes, made of three parts, each merged on its own:

* the *base*: the value the last SET wrote (``None`` after a DEL, or for a
  counter INCR created; it counts as 0), with its expiry and version, kept
  by last-writer-wins like a plain value;
* the *slots*: each node's own contributions, ``slot -> (total, ms,
  counter)``; a total is an int, or once INCRBYFLOAT added to it a decimal
  fraction (whole units of 10**-17, see :data:`SCALE`). A slot is named by
  its node and the version of its first increment (``(node, ms,
  counter)``), and only that node ever writes it, so its states are ordered
  by version and replicas keep the newest one;
* the *observed* slot states: for each slot, the newest state of it that
  any SET, DEL or expiry saw (merged the same way, newest wins).

The value is the base plus, for each slot, its total less its observed total
(0 when no reset saw it); a ``None`` base with no slot changed since it was
observed reads as a missing key. So a SET or DEL cancels exactly the
increments it saw (and they stay cancelled, even if a concurrent SET that
did not see them wins the base), increments no reset saw always count, and
each part is a join (last-writer-wins, per-slot newest, per-slot newest),
which makes the merge commutative, associative and idempotent: replicas
converge whatever the order or duplication of delivery. The value is
written out exactly in decimal; a base that is not a number INCRBYFLOAT
reads reads as itself whatever increments no reset saw (the SET wins).
A plain value or tombstone meeting a counter is a base that saw nothing.

A node writes only slots it opened since it started, and opens one the first
time it increments the key (again if a flush dropped it): a slot's totals
never restart, so an old state of the key still held elsewhere is never
mistaken for a newer one, and a node restarted from an older copy of its
data (or none) never builds on an old total of its own. The entry's version
is the newest of every part, so horizons, purges and WAIT work as for plain
keys; the digest hashes the whole encoded state, since two replicas can hold
one version with different parts. A flush at floor ``f`` drops the base if
older than ``f`` and every slot opened below ``f`` (its increments go with
it, even ones racing the flush): no increment older than the flush survives.
"""

from __future__ import annotations

import struct
from binascii import crc32
from fractions import Fraction
from typing import Callable, Dict, Final, Optional, Tuple, Union

from distkv.store import longdouble
from distkv.store.hlc import Version
from distkv.store.longdouble import decimal_text, whole

#: A slot: the node that writes it and the version (ms, counter) of its first increment.
Slot = Tuple[str, int, int]
#: A slot's total: an int, or once INCRBYFLOAT added to it, a whole number
#: of units of :data:`SCALE` (a Fraction; an int whenever it is whole).
Total = Union[int, Fraction]
#: A slot's state: its total and the version (ms, counter) of its last change.
SlotState = Tuple[Total, int, int]

ZERO = Version(0, 0, "")
#: Slot totals stay within +-2**126 (an INCR that would take one further is
#: refused as an overflow), so each travels in at most 16 bytes.
TOTAL_LIMIT = 1 << 126
#: A fractional total is kept (and sent) as a whole number of these units,
#: within +-TOTAL_LIMIT of them: INCRBYFLOAT prints at most 17 decimals.
SCALE = 10**17
#: At most this many slots (and as many observed) in one state on the wire;
#: INCR opens no slot past half of it (:data:`OPEN_SLOTS`), so that the
#: slots several nodes open at once still fit.
MAX_SLOTS = 1024
OPEN_SLOTS = MAX_SLOTS // 2
#: The most bytes a state's slots and observed slots take encoded (node ids
#: of 64 bytes, totals of 16), beyond its base's value: what a counter's
#: write frame may carry besides a plain write's key and value.
STATE_BYTES = 2 * MAX_SLOTS * (2 + 8 + 4 + 8 + 4 + 1 + 64 + 16) + 64
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_BASE = struct.Struct(">BQQIH")
_SLOT = struct.Struct(">HQIQIb")
_COUNT = struct.Struct(">H")


class CounterError(ValueError):
    """A counter state that cannot be decoded."""


def _newest(a: Dict[Slot, SlotState], b: Dict[Slot, SlotState]) -> Dict[Slot, SlotState]:
    if not a:
        return b
    if not b or a is b:
        return a
    merged = dict(a)
    for slot, state in b.items():
        mine = merged.get(slot)
        if mine is None or (state[1], state[2], state[0]) > (mine[1], mine[2], mine[0]):
            merged[slot] = state
    return merged


def fits(total: Total) -> bool:
    """True when ``total`` can be a slot's: an int within +-TOTAL_LIMIT, or
    a fraction that is a whole number of units of 10**-17 within as many."""
    if type(total) is int:
        return -TOTAL_LIMIT < total < TOTAL_LIMIT
    units, rest = divmod(total * SCALE, 1)
    return not rest and -TOTAL_LIMIT < units < TOTAL_LIMIT


def integer(value: Optional[bytes]) -> Optional[int]:
    """``value`` read as Redis reads a stored integer (``string2ll``), or None."""
    if value is None:
        return 0
    negative = value[:1] == b"-"
    digits = value[1:] if negative else value
    if (len(value) > 20 or not digits.isdigit() or not digits.isascii()
            or (digits[0] == 48 and (negative or len(digits) > 1))):
        return None
    number = int(value)
    return number if INT64_MIN <= number <= INT64_MAX else None


#: A counter's state, a plain tuple, which is also the key's entry (see
#: :data:`~distkv.store.entries.Entry`): INCR builds this one tuple per call
#: (any class costs several times as much to build). Its fields, by the
#: indexes below: what GET reads off it (None when the key reads as missing:
#: a tombstone, for counting and purging), the base's expiry, the base and
#: its version, the slots, the observed slot states; then what is read off
#: those once: what the slots add to the base, the value as an integer for
#: INCR (None when it is not one), the slot whose last change is the newest
#: version (None when the newest change was not an increment) with its total;
#: last, the newest version of any part as three fields (ms, counter, node),
#: where an entry holds its version, so ``state[-3:]`` is the entry's version
#: and :func:`version` gives it as a Version. That slot is kept out of the
#: ``SLOTS`` dict (its state is its total and the state's version), so INCR
#: in its own slot builds one tuple and shares the dict; :func:`all_slots`
#: gives every slot. A slot whose total is fractional (INCRBYFLOAT's) is never
#: kept aside, so a kept-aside total is always an int (INCR's fast path needs
#: no check: a fraction's bound, about 2**69 units, is within INCRBY's
#: reach). Every field follows from the logical state, so two equal states
#: are equal tuples. Readers outside this module and
#: :mod:`distkv.store.entries` go through their functions, never an index.
CounterState = Tuple[Optional[bytes], int, Optional[bytes], Version, Dict[Slot, SlotState],
                     Dict[Slot, SlotState], Total, Optional[int], Optional[Slot], Total, int, int, str]
VALUE: Final = 0
EXPIRES: Final = 1
BASE: Final = 2
BASE_VERSION: Final = 3
SLOTS: Final = 4
OBSERVED: Final = 5
DELTA: Final = 6
NUMBER: Final = 7
LAST: Final = 8
LAST_TOTAL: Final = 9
MS: Final = 10
COUNTER: Final = 11
NODE: Final = 12
#: How many fields a state has: what tells a counter's entry from a plain one.
FIELDS: Final = 13


def make(base: Optional[bytes], expires: int, base_version: Version,
         slots: Dict[Slot, SlotState], observed: Dict[Slot, SlotState]) -> CounterState:
    """The state of these parts (``slots``: every slot), with what is read off them."""
    delta: Total = sum([total - observed[slot][0] if slot in observed else total
                        for slot, (total, _, _) in slots.items()])
    if type(delta) is not int:
        delta = whole(delta)
    newest: Tuple[int, int, str] = base_version
    last: Optional[Slot] = None
    for parts in (observed, slots):  # slots last: a tie goes to the slot
        for slot, (_, ms, counter) in parts.items():
            if (ms, counter, slot[0]) >= newest:
                newest = (ms, counter, slot[0])
                last = slot if parts is slots else None
    last_total: Total = 0
    if last is not None:
        if slots[last][1:] != newest[:2] or type(slots[last][0]) is not int:
            last = None
        else:
            last_total = slots[last][0]
            slots = {slot: part for slot, part in slots.items() if slot != last}
    number = integer(base)
    if number is not None and type(delta) is int:
        number += delta
        if not INT64_MIN <= number <= INT64_MAX:
            number = None
    else:
        number = None
    state: CounterState = (None, expires, base, base_version, slots, observed, delta, number, last,
                           last_total, newest[0], newest[1], newest[2])
    text = value(state)
    if number is None and text is not None:
        # A fractional sum, or a base that is not an integer: INCR reads the
        # value as it is written (``5.0e3`` is not an integer; 5000 is).
        number = integer(text)
    return (text, expires, base, base_version, slots, observed, delta, number, last, last_total,
            newest[0], newest[1], newest[2])


def oversized(state: CounterState) -> bool:
    """True when ``state`` holds more slots, or observed slots, than
    :data:`MAX_SLOTS`: more than a frame or the data file may carry."""
    return len(all_slots(state)) > MAX_SLOTS or len(state[OBSERVED]) > MAX_SLOTS


def version(state: CounterState) -> Version:
    """The newest version of any part of ``state``: its entry's."""
    return Version(state[MS], state[COUNTER], state[NODE])


def number_of(state: CounterState) -> Optional[int]:
    """``state``'s value as an integer (INCR's reply), None when it is not one."""
    return state[NUMBER]


def all_slots(state: CounterState) -> Dict[Slot, SlotState]:
    """Every slot of ``state`` (a new dict when one is kept aside)."""
    last = state[LAST]
    if last is None:
        return state[SLOTS]
    slots = state[SLOTS].copy()
    slots[last] = (state[LAST_TOTAL], state[MS], state[COUNTER])
    return slots



def moved(state: CounterState) -> bool:
    """True when some slot changed since the last reset that saw it."""
    observed = state[OBSERVED]
    for slot, (_, ms, counter) in all_slots(state).items():
        seen = observed.get(slot)
        if seen is None or (seen[1], seen[2]) != (ms, counter):
            return True
    return False


def value(state: CounterState) -> Optional[bytes]:
    """What GET reads: the base plus the increments no reset saw, written
    out exactly (see :func:`~distkv.store.longdouble.decimal_text`); the
    base itself when nothing moved since it was set, or when it is not a
    number INCRBYFLOAT reads (the SET wins); None when the key reads as
    missing."""
    base, delta = state[BASE], state[DELTA]
    if base is None:
        if not moved(state):
            return None
        return b"%d" % delta if type(delta) is int else decimal_text(delta)
    held = integer(base)
    if held is not None:
        if not delta:
            return base
        return b"%d" % (held + delta) if type(delta) is int else decimal_text(held + delta)
    if not delta and not moved(state):
        return base
    exact = longdouble.number(base)
    return base if exact is None else decimal_text(whole(exact + delta))


FRESH = make(None, 0, ZERO, {}, {})


def _base_rank(state: CounterState) -> Tuple[Version, bool, bytes, int]:
    # Versions decide; a tie (a node restarted with its clock behind, or a
    # value and its own expiry's reclaim) goes to the deleted base, then by
    # value and expiry, the same on every replica.
    return (state[BASE_VERSION], state[BASE] is None, state[BASE] or b"", state[EXPIRES])


def merge(one: CounterState, other: CounterState) -> CounterState:
    """The join of two states (see the module docstring)."""
    if one is other:
        return one
    top = one if _base_rank(one) >= _base_rank(other) else other
    return make(top[BASE], top[EXPIRES], top[BASE_VERSION],
                _newest(all_slots(one), all_slots(other)), _newest(one[OBSERVED], other[OBSERVED]))


def incremented(state: CounterState, slot: Slot, amount: int, ms: int, counter: int) -> CounterState:
    """``state`` with ``amount`` added to ``slot`` at version (ms, counter),
    newer than every part of it, built from its cached sums."""
    if state[LAST] == slot:  # the dict is shared: the slot is kept aside
        slots = state[SLOTS]
        total = state[LAST_TOTAL]
    else:  # the slot kept aside (if any) goes back in, this one comes out
        slots = all_slots(state)
        if slots is state[SLOTS]:
            slots = slots.copy()
        old = slots.pop(slot, None)
        total = 0 if old is None else old[0]
        if type(total) is not int:  # a fractional total stays in the dict (see CounterState)
            slots[slot] = (total + amount, ms, counter)
            return make(state[BASE], state[EXPIRES], state[BASE_VERSION], slots, state[OBSERVED])
    number = state[NUMBER]
    if number is not None:
        number += amount
        if not INT64_MIN <= number <= INT64_MAX:
            number = None
    new: CounterState = (
        None if number is None else b"%d" % number, state[EXPIRES], state[BASE], state[BASE_VERSION],
        slots, state[OBSERVED], state[DELTA] + amount, number, slot, total + amount, ms, counter, slot[0])
    if number is None:  # the value as value() writes it out (the slot moved: never None)
        return (value(new),) + new[1:]  # type: ignore[return-value]
    return new


def reset(state: CounterState, base: Optional[bytes], expires: int, version: Version) -> CounterState:
    """A SET (``base``) or DEL (None) written at ``version`` that saw
    ``state``: every slot it holds counts as observed."""
    slots = all_slots(state)
    return make(base, expires, version, slots, _newest(state[OBSERVED], slots))


def with_expiry(state: CounterState, expires: int, version: Version) -> CounterState:
    """EXPIRE or PERSIST at ``version``: the same base and observed slots, so
    no increment is cancelled."""
    return make(state[BASE], expires, version, all_slots(state), state[OBSERVED])


def reclaimed(state: CounterState) -> CounterState:
    """What an expired counter becomes on a node whose clock passed its
    expiry (not replicated): deleted at its own version, every slot seen."""
    slots = all_slots(state)
    return make(None, 0, version(state), slots, _newest(state[OBSERVED], slots))


def above(state: CounterState, floor: Version) -> Optional[CounterState]:
    """What a flush at ``floor`` leaves: the base if not older, the slots
    opened at or above it; None when nothing is left."""
    if version(state) < floor:
        return None

    def kept(parts: Dict[Slot, SlotState]) -> Dict[Slot, SlotState]:
        return {s: v for s, v in parts.items() if (s[1], s[2], s[0]) >= floor}

    keep_base = state[BASE_VERSION] >= floor
    every = all_slots(state)
    slots, observed = kept(every), kept(state[OBSERVED])
    if keep_base and len(slots) == len(every) and len(observed) == len(state[OBSERVED]):
        return state
    if not keep_base and not slots and not observed:
        return None
    if keep_base:
        return make(state[BASE], state[EXPIRES], state[BASE_VERSION], slots, observed)
    return make(None, 0, ZERO, slots, observed)


def digest(state: CounterState) -> int:
    """A CRC-32 of the whole encoded state (what the digest hashes)."""
    return crc32(encode(state))


def encode(state: CounterState) -> bytes:
    """The state as bytes (a ``W`` frame's value with the counter flag)."""
    base, expires, version = state[BASE], state[EXPIRES], state[BASE_VERSION]
    node = version[2].encode("ascii")
    parts = [_BASE.pack(base is not None, expires, version[0], version[1], len(node)), node]
    if base is not None:
        parts.append(struct.pack(">I", len(base)))
        parts.append(base)
    for group in (all_slots(state), state[OBSERVED]):
        parts.append(_COUNT.pack(len(group)))
        for (name, dot_ms, dot_counter), (total, ms, counter) in sorted(group.items()):
            raw = name.encode("ascii")
            # A fractional total travels as its units of 1/SCALE, its size negated.
            units = total if type(total) is int else total.numerator * (SCALE // total.denominator)
            size = (units.bit_length() + 8) // 8
            parts.append(_SLOT.pack(len(raw), dot_ms, dot_counter, ms, counter,
                                    size if type(total) is int else -size))
            parts.append(raw)
            parts.append(units.to_bytes(size, "big", signed=True))
    return b"".join(parts)


def decode(raw: bytes, valid_node: Callable[[str], bool]) -> CounterState:
    """The state encoded in ``raw``; raises :class:`CounterError` on anything
    malformed (a node id ``valid_node`` refuses, a total out of range, too
    many slots, trailing bytes). Linear in ``len(raw)``."""
    try:
        has_base, expires, ms, counter, node_len = _BASE.unpack_from(raw, 0)
        offset = _BASE.size
        node = _name(raw[offset : offset + node_len], node_len, valid_node, empty=True)
        offset += node_len
        base: Optional[bytes] = None
        if has_base not in (0, 1):
            raise CounterError("bad base flag")
        if has_base:
            (length,) = struct.unpack_from(">I", raw, offset)
            offset += 4
            base = raw[offset : offset + length]
            if len(base) != length:
                raise CounterError("truncated base")
            offset += length
        groups = []
        for _ in range(2):
            (count,) = _COUNT.unpack_from(raw, offset)
            offset += _COUNT.size
            if count > MAX_SLOTS:
                raise CounterError("too many slots")
            group: Dict[Slot, SlotState] = {}
            for _ in range(count):
                name_len, dot_ms, dot_counter, s_ms, s_counter, size = _SLOT.unpack_from(raw, offset)
                offset += _SLOT.size
                name = _name(raw[offset : offset + name_len], name_len, valid_node)
                offset += name_len
                if not 0 < abs(size) <= 16 or offset + abs(size) > len(raw):
                    raise CounterError("bad total")
                units = int.from_bytes(raw[offset : offset + abs(size)], "big", signed=True)
                offset += abs(size)
                if abs(units) >= TOTAL_LIMIT or (s_ms, s_counter) < (dot_ms, dot_counter):
                    raise CounterError("total or version out of range")
                total: Total = units if size > 0 else whole(Fraction(units, SCALE))
                group[(name, dot_ms, dot_counter)] = (total, s_ms, s_counter)
            groups.append(group)
        if offset != len(raw):
            raise CounterError("trailing bytes")
    except (struct.error, UnicodeDecodeError) as e:
        raise CounterError(f"malformed counter: {e}") from e
    if not node and (ms or counter or base is not None or expires):
        raise CounterError("malformed base")
    return make(base, expires, Version(ms, counter, node), groups[0], groups[1])


def _name(raw: bytes, length: int, valid_node: Callable[[str], bool], empty: bool = False) -> str:
    if len(raw) != length:
        raise CounterError("truncated node id")
    name = raw.decode("ascii")
    if not (empty and not name) and not valid_node(name):
        raise CounterError(f"malformed node id {raw[:80]!r}")
    return name
