"""What a replica holds for one key (an :data:`Entry`), and the rules that read one.

An entry is a plain tuple: a value (or ``None`` for a tombstone), maybe an
expiry or a counter's state, and the version of the write that made it. This
module builds entries (:func:`make_entry`, :func:`expiring_entry`,
:func:`counter_entry`), reads them (:func:`version_of`, :func:`expires_of`,
:func:`expired`, :func:`mark_of`) and orders two of a key
(:func:`newer`, last-writer-wins); :mod:`distkv.store.store` keeps them.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Optional, Tuple, Union

from distkv.store import counter as counters
from distkv.store.counter import CounterState
from distkv.store.hlc import Version

_new_tuple = tuple.__new__


#: What a replica holds for one key: ``(value, ms, counter, node)``, a value
#: (or ``None`` for a tombstone) and the version of the write that produced
#: it. A plain tuple, not a class: one object per key (about 50 bytes less per
#: key than a value and a Version), and built by the clock with one
#: BUILD_TUPLE, where a tuple subclass would cost a call to ``tuple.__new__``
#: on every write (about 1,500 instructions on CPython 3.11). The last three
#: fields are where a ``Version``'s are counted from the end (``[-3]`` is
#: ``ms``), so the clock and the digest take either. :func:`make_entry` builds
#: one from a version, :func:`version_of` gives the version back.
#:
#: A key with an expiry holds a 7-tuple instead, ``(value, e2, e1, e0, ms,
#: counter, node)``. Its expiry is the absolute wall-clock time (ms since the
#: epoch) at which the value stops being readable, carried with the versioned
#: write like the value, so changing it (EXPIRE, PERSIST) is a write with a
#: new version. It is held as three 14-bit digits, ``e2 << 28 | e1 << 14 |
#: e0``, each an int object every entry shares (:data:`_DIGITS`; ``e2`` is
#: one until the year 2109 and stays exact past it): an expiry costs a key two
#: more tuple fields (a 7-tuple takes a 96-byte pymalloc block, a 4-tuple or
#: a 5-tuple an 80-byte one) and no object of its own, whatever its TTL. A
#: key without one pays nothing for it; the version is always the last three
#: fields (``entry[-3:]``).
#:
#: A counter key (see :mod:`distkv.store.counter`) holds its
#: :data:`~distkv.store.counter.CounterState` itself, a 13-tuple (one tuple
#: per INCR): its first field is the readable value GET reads off it (None
#: when it reads as missing: a tombstone, for counting and purging), its
#: second its base's expiry (absolute; 0: none; readable only while the value
#: is not None), its last three the version of its newest part. So
#: ``entry[0]`` is the readable value and ``entry[-3:]`` the version, whatever
#: the kind; an entry longer than 4 may have an expiry, which
#: :func:`expires_of` and :func:`expired` read (never ``entry[1]`` itself);
#: :func:`is_counter` tells a counter's entry, :func:`counter_state` gives
#: its state, and nothing else indexes one; merging is by
#: :func:`~distkv.store.counter.merge` once either side is a counter, by
#: :func:`newer` otherwise.
Entry = Union[
    Tuple[Optional[bytes], int, int, str],
    Tuple[Optional[bytes], int, int, int, int, int, str],
    CounterState,
]

#: How many fields a counter's entry has (no plain entry has as many).
COUNTER_FIELDS = counters.FIELDS

#: An entry's readable value (None: a tombstone), ``entry[0]``.
value_of = itemgetter(0)

#: How many fields an entry with an expiry has (see :data:`Entry`).
EXPIRING_FIELDS = 7

#: An expiry's digits: ``_DIGITS[d]`` is the one int object for digit ``d``
#: that every entry holds, made the first time an expiry is stored (16,384
#: ints, about 630 kB). A tuple, not a list: PyPy keeps a list of ints
#: unboxed and would make a new int object at every read.
_DIGIT_BITS = 14
_DIGIT_MASK = (1 << _DIGIT_BITS) - 1
_DIGITS: Tuple[int, ...] = ()


def _fill_digits() -> Tuple[int, ...]:
    global _DIGITS
    _DIGITS = tuple(range(1 << _DIGIT_BITS))
    return _DIGITS


def expiring_entry(value: Optional[bytes], expires: int, ms: int, counter: int,
                   node: str) -> Entry:
    """The entry for ``value`` (None: a tombstone) at version ``(ms, counter,
    node)``, readable until ``expires`` (ms since the epoch; 0: for ever)."""
    if not expires or value is None:
        return (value, ms, counter, node)
    digits = _DIGITS or _fill_digits()
    top = expires >> (2 * _DIGIT_BITS)
    return (value, digits[top] if 0 <= top <= _DIGIT_MASK else top,
            digits[(expires >> _DIGIT_BITS) & _DIGIT_MASK], digits[expires & _DIGIT_MASK],
            ms, counter, node)


def _joined(entry: Entry) -> int:
    """The expiry an entry of :data:`EXPIRING_FIELDS` fields holds in its digits."""
    return entry[1] << 2 * _DIGIT_BITS | entry[2] << _DIGIT_BITS | entry[3]  # type: ignore[operator]


def make_entry(value: Optional[bytes], version: Version, expires: int = 0) -> Entry:
    """The entry for ``value`` (None: a tombstone) written at ``version``,
    readable until ``expires`` (ms since the epoch; 0: for ever)."""
    if len(version) != 3:  # an entry passed for its version, say
        raise TypeError(f"not a version: {version!r}")
    return expiring_entry(value, expires, version[0], version[1], version[2])


def version_of(entry: Entry) -> Version:
    """The version of the write that produced ``entry``."""
    return _new_tuple(Version, entry[-3:])


#: What tells two entries of a key apart, cheaply (see :func:`mark_of`).
Mark = Union[Tuple[int, int, str], Tuple[Tuple[int, int, str], int]]


def mark_of(entry: Entry) -> Mark:
    """``entry``'s version (its last three fields) and, for a counter, its
    state's CRC-32 too: a counter's version is its newest change's, so two
    states of one version can differ (one lacks an older increment)."""
    if len(entry) == COUNTER_FIELDS:
        return (entry[-3:], counters.digest(entry))  # type: ignore[arg-type,return-value]
    return entry[-3:]  # type: ignore[return-value]


def expires_of(entry: Entry) -> int:
    """When ``entry``'s value stops being readable (ms since the epoch), or 0."""
    size = len(entry)
    if size == EXPIRING_FIELDS:  # (value, e2, e1, e0, ms, counter, node)
        return _joined(entry)
    # A counter: its base's expiry, while it reads as a value.
    return entry[1] if size == COUNTER_FIELDS and entry[0] is not None else 0  # type: ignore[misc,return-value]


def is_counter(entry: Entry) -> bool:
    """Whether ``entry`` is a counter's (its state: see :data:`Entry`)."""
    return len(entry) == COUNTER_FIELDS


def counter_entry(state: CounterState) -> Entry:
    """The entry of a counter key holding ``state``: the state itself."""
    return state


def counter_state(entry: Entry) -> CounterState:
    """``entry`` as a counter state: its own, or for a plain value or
    tombstone, a base that saw no increment."""
    if len(entry) == COUNTER_FIELDS:
        return entry  # type: ignore[return-value]
    return counters.make(entry[0], expires_of(entry), version_of(entry), {}, {})


def is_expiring(entry: Entry) -> bool:
    """Whether ``entry`` holds an expiry (counted in the store's ``with_expiry``)."""
    return len(entry) == EXPIRING_FIELDS or (len(entry) == COUNTER_FIELDS and entry[1] != 0
                                             and entry[0] is not None)


def with_expiry(entry: Entry, expires: int) -> Entry:
    """``entry`` (as the clock stamped it: a 4-tuple) readable until ``expires``."""
    return expiring_entry(entry[0], expires, entry[-3], entry[-2], entry[-1])  # type: ignore[arg-type]


def expired(entry: Entry, now_ms: int) -> bool:
    """True when ``entry`` holds a value whose expiry is at or before ``now_ms``."""
    size = len(entry)
    if size == EXPIRING_FIELDS:
        return _joined(entry) <= now_ms
    return size == COUNTER_FIELDS and 0 < entry[1] <= now_ms and entry[0] is not None  # type: ignore[operator]


def as_tombstone(entry: Entry) -> Entry:
    """The tombstone at ``entry``'s version: what an expired entry counts as
    (for a counter, its state deleted with every slot seen)."""
    if len(entry) == COUNTER_FIELDS:
        return counters.reclaimed(entry)  # type: ignore[arg-type]
    return (None, entry[-3], entry[-2], entry[-1])  # type: ignore[return-value]


#: Below every real version.
ZERO = Version(0, 0, "")

def newer(candidate: Entry, current: Entry) -> bool:
    """True when ``candidate`` beats ``current`` under last-writer-wins.

    Versions decide. Two writes can only share a version if a node restarted
    with its clock set back (memory only, or from an older copy of its data
    dir, under the same node id), so the value breaks that tie
    deterministically (a tombstone loses to any value) and every replica
    still picks the same. The digest hashes values too, so anti-entropy
    finds such a tie between replicas and settles it this way (see
    :mod:`distkv.cluster.antientropy`).
    """
    # Field by field (ms, counter, node), building no Version.
    if candidate[-3] != current[-3]:
        return candidate[-3] > current[-3]  # type: ignore[operator]
    if candidate[-2] != current[-2]:
        return candidate[-2] > current[-2]  # type: ignore[operator]
    if candidate[-1] != current[-1]:
        return candidate[-1] > current[-1]  # type: ignore[operator]
    return _tiebreak(candidate) > _tiebreak(current)


def _tiebreak(entry: Entry) -> Tuple[int, bytes, int]:
    value = entry[0]
    return (0, b"", 0) if value is None else (1, value, expires_of(entry))  # type: ignore[return-value]
