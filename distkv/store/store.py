"""The versioned key-value store: plain Python, no networking, no reactor.

Every key maps to an :data:`~distkv.store.entries.Entry`: a value (or ``None`` for a tombstone) and
the :class:`~distkv.store.hlc.Version` of the write that produced it. Local writes are
stamped by the injected :class:`~distkv.store.hlc.HybridClock`; remote writes are
merged by keeping the highest version, which makes merging commutative,
associative and idempotent, so replicas converge whatever order or duplication
their deliveries arrive in. Listeners hear about every change, with the local
write sequence number (0 for a remote write), which is how replication and
persistence hook in without the store knowing about either.

Tombstones are purged below the *stable horizon*: a version such that every
node of the cluster has received every write at or below it (see
:mod:`distkv.cluster.stability`). Below that horizon nothing can still be on its way,
so a write for a key this replica does not hold is a leftover of a purged
delete and is dropped rather than resurrected.

A counter key (one that INCR and kin touched) merges by a join instead of
last-writer-wins: each node keeps its own slot of increments, a SET or DEL
is a last-writer-wins base that cancels the increments its node had seen,
and the value is the base plus every increment no reset saw (see
:mod:`distkv.store.counter` for the rule, and :meth:`Store.incr`). A plain
entry meeting a counter is a base that saw nothing; a key never incremented
pays nothing for it.

A flush (FLUSHALL) is a versioned event too: the store's *flush floor*
(:meth:`Store.raise_floor`). Every entry below it is dropped, and no write
below it is ever stored again, whichever node made it and however late it
arrives; the clock observes the floor, so every write made here after it
stamps above it and survives.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import is_
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from distkv.store import counter as counters
from distkv.store.counter import INT64_MAX, INT64_MIN, CounterState
from distkv.store.digest import Digest
from distkv.store.entries import (
    COUNTER_FIELDS,
    EXPIRING_FIELDS,
    ZERO,
    Entry,
    as_tombstone,
    counter_entry,
    counter_state,
    expired,
    expires_of,
    is_expiring,
    newer,
    value_of,
    version_of,
    with_expiry,
)
from distkv.store.hlc import HybridClock, Version
from distkv.store.longdouble import added, number, whole

#: ``listener(key, entry, seq)``: ``seq`` numbers local writes from 1; 0 is a
#: write merged from a peer.
Listener = Callable[[bytes, Entry, int], None]
PurgeListener = Callable[[List[Tuple[bytes, Version]]], None]
#: ``listener(floor)``: the flush floor rose to ``floor``.
FlushListener = Callable[[Version], None]
#: ``listener([(seq, key, entry), ...])``: the local writes of one transaction.
GroupListener = Callable[[List[Tuple[int, bytes, Entry]]], None]

#: A key INCR creates: no base (it counts as 0), no slot yet.
#: Redis's errors for INCR and kin.
NOT_INTEGER = "ERR value is not an integer or out of range"
OVERFLOW = "ERR increment or decrement would overflow"
TOO_MANY_SLOTS = "ERR too many nodes (or restarts of them) have incremented this counter"


class Store:
    """Keys, values, tombstones and their versions for one node."""

    def __init__(self, clock: HybridClock) -> None:
        self.clock = clock
        self._data: Dict[bytes, Entry] = {}
        #: The counter slot this store opened for a key (see incr). A node
        #: writes only slots it opened since it started: one of an earlier
        #: run may be newer elsewhere than here (it came back from an older
        #: copy of its data, or empty), and adding to what this node holds of
        #: it would take the newer total back. An old slot keeps its newest
        #: total wherever it is held, and a new one counts from zero.
        self._own: Dict[bytes, counters.Slot] = {}
        self._live = 0
        self._listeners: List[Listener] = []
        self._purge_listeners: List[PurgeListener] = []
        self._tombstones: Set[bytes] = set()
        self.digest = Digest(self._data)
        self._changed = self.digest.changed  # the keys the digest has noted
        #: The sequence number of the last local write.
        self.seq = 0
        #: Every node has received every write below this version.
        self.horizon = ZERO
        self.purged = 0
        self.stale_dropped = 0
        #: Counts every change, so a reader can tell whether anything changed.
        self.changes = 0
        #: While a transaction runs (see :meth:`begin_group`): its local
        #: writes so far, ``(seq, key, entry)``; None otherwise.
        self.group: Optional[List[Tuple[int, bytes, Entry]]] = None
        #: Whether begin_group held the clock (and end_group is to release it).
        self._group_holds = False
        self._group_listeners: List[GroupListener] = []
        #: The flush floor: every entry below it was flushed (see
        #: :meth:`raise_floor`); ZERO until the first flush.
        self.flushed = ZERO
        #: Writes refused, and entries dropped, for being below the floor.
        self.flush_dropped = 0
        #: Counter merges refused for holding more slots than a frame may carry.
        self.counters_refused = 0
        self._flush_listeners: List[FlushListener] = []
        #: Expiry is judged by this node's wall clock.
        self._wall = clock.wall_ms
        #: How many stored values carry an expiry, expired or not.
        self._with_expiry = 0
        #: Expired values turned into tombstones here (see :meth:`_reclaim`).
        self.reclaimed = 0
        #: The keys the active expiry cycle has still to look at in its pass.
        self._sweep: List[bytes] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(key, entry, seq)`` after every change."""
        self._listeners.append(listener)

    def on_purge(self, listener: PurgeListener) -> None:
        """Call ``listener([(key, version), ...])`` with the entries forgotten
        (purged tombstones, and dead keys dropped by :meth:`drop_dead`)."""
        self._purge_listeners.append(listener)

    def on_group(self, listener: GroupListener) -> None:
        """Call ``listener([(seq, key, entry), ...])`` at the end of every
        group of local writes (see :meth:`begin_group`) that wrote anything.
        Listeners of single changes still hear each write, as it happens;
        replication sends a group's writes together instead (it skips
        writes made while :attr:`group` is not None)."""
        self._group_listeners.append(listener)

    def on_flush(self, listener: FlushListener) -> None:
        """Call ``listener(floor)`` whenever the flush floor rises, before
        the entries below it are forgotten (persist it, tell the peers)."""
        self._flush_listeners.append(listener)

    def flush(self) -> Version:
        """Flush everything held here (FLUSHALL): the floor is the start of the
        millisecond after the clock's (the empty node id sorts below every
        node's), above every entry stored; returns it.

        On a millisecond's edge rather than at a fresh version, because a
        transaction is stamped within one millisecond (see :meth:`begin_group`):
        a floor made on another node at the same millisecond could otherwise
        fall between two of its writes' counters, and keep one and drop the
        other (simulator seed 100231).
        """
        floor = Version(self.clock.now().ms + 1, 0, "")
        self.raise_floor(floor)
        return floor

    def raise_floor(self, floor: Version) -> bool:
        """Learn a flush at ``floor``: drop every entry below it, refuse every
        later write below it; True when the floor rose.

        The clock observes the floor first, so every write made here from now
        on stamps above it. A floor too far in the future is refused and
        counted by the clock, as a write would be.
        """
        if floor <= self.flushed or not self.clock.observe(floor):
            return False
        self.flushed = floor
        for listener in self._flush_listeners:
            listener(floor)
        data = self._data
        gone = [
            (key, version_of(entry)) for key, entry in data.items()
            if entry[-3:] < floor
            or (len(entry) == COUNTER_FIELDS and counters.above(counter_state(entry), floor) is None)
        ]
        self._forget(gone)
        self.flush_dropped += len(gone)
        for key, entry in list(data.items()):
            if len(entry) == COUNTER_FIELDS:  # a counter: its slots opened below the floor go
                kept = counters.above(counter_state(entry), floor)
                if kept is not None and kept is not entry:
                    new = counter_entry(kept)
                    self._count(key, entry, new)
                    self.digest.note(key, entry)
                    data[key] = new
                    self.changes += 1
        return True

    def restore_floor(self, floor: Version) -> None:
        """Take back the flush floor saved before a restart, telling no
        listener (called before the entries are read back)."""
        if floor > self.flushed:
            self.flushed = floor
            self.clock.restore(floor.ms)

    def begin_group(self) -> None:
        """The local writes from now to :meth:`end_group` are one transaction.

        The clock is held over it (see :meth:`HybridClock.hold`), so that all
        its writes are stamped within one millisecond, apart only by their
        counters: a flush floor, always on a millisecond's edge (see
        :meth:`flush`), keeps all of them or none.
        """
        if self.group is not None:
            raise RuntimeError("a group of writes is already open")
        self.group = []
        # A front end's hold over a read's requests serves as well (and is
        # left for the front end to release).
        self._group_holds = not self.clock.holding
        if self._group_holds:
            self.clock.hold()
        self._listeners.append(self._collect)

    def end_group(self) -> List[Tuple[int, bytes, Entry]]:
        """Close the group: tell the group listeners, return its writes."""
        group = self.group
        if group is None:
            raise RuntimeError("no group of writes is open")
        self.group = None
        if self._group_holds:
            self.clock.release()
        self._listeners.remove(self._collect)
        if group:
            for listener in self._group_listeners:
                listener(group)
        return group

    def _collect(self, key: bytes, entry: Entry, seq: int) -> None:
        if seq and self.group is not None:
            self.group.append((seq, key, entry))

    def get(self, key: bytes) -> Optional[bytes]:
        """The live value of ``key``, or ``None`` when absent, deleted or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        # expired() called only for an entry that may expire: a hot path.
        if len(entry) > 4 and expired(entry, self._wall()):
            self._reclaim(key, entry)
            return None
        return entry[0]

    def live(self, key: bytes) -> Optional[Entry]:
        """The entry of ``key`` when it holds a readable value (neither a
        tombstone nor expired), else None."""
        entry = self._data.get(key)
        if entry is None or entry[0] is None:
            return None
        if len(entry) > 4 and expired(entry, self._wall()):
            self._reclaim(key, entry)
            return None
        return entry

    def expires(self, key: bytes) -> int:
        """When the live value of ``key`` expires (ms since the epoch); 0 for
        never, or for no live value."""
        entry = self.live(key)
        return 0 if entry is None else expires_of(entry)

    def _reclaim(self, key: bytes, entry: Entry) -> None:
        """Turn the expired ``entry`` of ``key`` into the tombstone at its
        version, here only: no listener hears it, nothing is replicated.

        Every node does the same once its own clock passes the expiry, and
        reaches the same tombstone (same version, no value), so their digests
        agree again; the tombstone still beats any older write of the key
        that anti-entropy might bring back, and is purged below the stable
        horizon like any other.
        """
        tombstone = as_tombstone(entry)
        self.digest.note(key, entry)  # note() keeps a key's first old entry only
        self._data[key] = tombstone
        self._live -= 1
        self._with_expiry -= 1
        self._tombstones.add(key)
        self.changes += 1
        self.reclaimed += 1

    def reclaim(self, keys: List[bytes]) -> int:
        """Reclaim whichever of ``keys`` hold an expired value; how many did."""
        now = self._wall()
        data = self._data
        done = 0
        for key in keys:
            entry = data.get(key)
            if entry is not None and expired(entry, now):
                self._reclaim(key, entry)
                done += 1
        return done

    def live_count(self) -> int:
        """The number of readable keys: :func:`len` less the expired values
        not reclaimed yet (reclaimed now; a scan of every key, only when some
        key has an expiry)."""
        self.reclaim_expired()
        return self._live

    def reclaim_expired(self) -> int:
        """Reclaim every expired value (a scan of every key, only when some
        value has an expiry); returns how many."""
        if not self._with_expiry:
            return 0
        now = self._wall()
        return self.reclaim([
            key for key, entry in self._data.items()
            if expired(entry, now)
        ])

    def entry(self, key: bytes) -> Optional[Entry]:
        """The stored entry for ``key``, tombstones included."""
        return self._data.get(key)

    def set(self, key: bytes, value: bytes, expires: int = 0) -> Entry:
        """Write ``value`` locally with a version above anything seen, readable
        until ``expires`` (ms since the epoch; 0: for ever)."""
        # The hot path of every SET: delete()'s steps, with _put() inlined, for
        # a value (never a tombstone), with tuple indexes: current[0] is the
        # value; the clock reads the version off the entry and makes the new one.
        data = self._data
        current = data.get(key)
        if current is not None and len(current) == COUNTER_FIELDS:
            return self._reset_counter(key, value, expires, current)
        entry: Entry = self.clock.stamp(value, current)
        if expires:
            entry = with_expiry(entry, expires)
            self._with_expiry += 1
        if current is None:
            self._live += 1
        elif current[0] is None:
            self._tombstones.discard(key)
            self._live += 1
        elif len(current) == EXPIRING_FIELDS:  # (a counter went to _reset_counter)
            self._with_expiry -= 1
        if key not in self._changed:  # once per key between digest reads
            self.digest.note(key, current)
        data[key] = entry
        self.changes += 1
        self.seq = seq = self.seq + 1
        for listener in self._listeners:
            listener(key, entry, seq)
        return entry

    def expire(self, key: bytes, value: bytes, expires: int) -> Entry:
        """Give the live ``value`` of ``key`` a new expiry (0: none): EXPIRE,
        PERSIST, GETEX. For a plain key, :meth:`set` again; a counter keeps
        its base and the increments it counts (see
        :func:`~distkv.store.counter.with_expiry`)."""
        current = self._data.get(key)
        if current is None or len(current) != COUNTER_FIELDS:
            return self.set(key, value, expires)
        state = counter_state(current)
        stamp = self.clock.stamp(None, current)
        return self._put_counter(key, counters.with_expiry(state, expires, Version(*stamp[1:])), current)

    def _reset_counter(self, key: bytes, value: Optional[bytes], expires: int,
                       current: Entry) -> Entry:
        """SET (or, for a None ``value``, DEL) over a counter: a new base that
        saw every increment held here."""
        state = counter_state(current)
        stamp = self.clock.stamp(None, current)
        return self._put_counter(key, counters.reset(state, value, expires if value is not None else 0,
                                                  Version(*stamp[1:])), current)

    def _put_counter(self, key: bytes, state: CounterState, current: Optional[Entry]) -> Entry:
        entry = counter_entry(state)
        self.seq += 1
        self._put(key, entry, current, self.seq)
        return entry

    def incr(self, key: bytes, amount: int) -> Union[int, str]:
        """INCRBY: add ``amount`` to ``key``'s integer value in this node's
        own slot; returns the new value, or Redis's error text (the value is
        not an integer, or the sum would overflow 64 bits)."""
        result = self.increment(key, amount)
        if type(result) is str:
            return result  # type: ignore[return-value]
        return counters.number_of(result)  # type: ignore[arg-type,return-value]

    def increment(self, key: bytes, amount: int) -> Union[CounterState, str]:
        """:meth:`incr`, answering the counter's new entry (its state, whose
        value, ``[0]``, is the new value's decimal text: see
        :func:`~distkv.front.replies.integer_text`) rather than the number."""
        data = self._data
        current = data.get(key)
        # The hot path: a live counter with no expiry whose newest change was
        # an INCR of this node's (_incr's steps for it, with incremented()'s
        # and _put()'s inlined, the state unpacked in
        # :data:`~distkv.store.counter.CounterState`'s order). A slot's total
        # is not bounded here: taking it past TOTAL_LIMIT (2**126) takes
        # 2**63 calls of INCRBY's largest (a fractional one, which
        # INCRBYFLOAT left, goes through _incr).
        if current is not None and len(current) == COUNTER_FIELDS and not current[1]:
            (held, _, base, base_version, slots, observed, delta, number, last, last_total,
             _, _, _) = current  # type: ignore[misc]
            # ``last``, the slot of its newest change if an increment's, is the
            # very object _incr() stored in _own once an INCR here made this
            # state (after a merge, an equal slot takes _incr() once).
            # Its total is an int (a fractional one is never kept aside).
            if last is not None and number is not None:
                try:  # cheaper than _own.get() while the key is there
                    mine = self._own[key] is last
                except KeyError:  # another node's slot, or one of an earlier run here
                    mine = False
            else:
                mine = False
            if mine:
                result = number + amount  # type: ignore[operator]  # not None: see above
                # One bound to check, the one ``amount``'s sign moves towards.
                if ((result <= INT64_MAX if amount > 0 else result >= INT64_MIN)
                        and held is not None):
                    _, ms, counter, node = self.clock.stamp(None, current)
                    # The slot stays out of the shared dict: see counters.CounterState.
                    entry: CounterState = (b"%d" % result, 0, base, base_version, slots, observed,
                                           delta + amount, result, last, last_total + amount,
                                           ms, counter, node)
                    self.changes += 1
                    if key not in self._changed:
                        self.digest.note(key, current)
                    data[key] = entry
                    self.seq = seq = self.seq + 1
                    for listener in self._listeners:
                        listener(key, entry, seq)
                    return entry
        return self._incr(key, amount, current)

    def _incr(self, key: bytes, amount: int, current: Optional[Entry]) -> Union[CounterState, str]:
        data = self._data
        if current is not None and len(current) > 4 and expired(current, self._wall()):
            self._reclaim(key, current)
            current = data[key]
        if current is None:
            state = counters.FRESH
        else:  # a plain value (or tombstone) becomes the base of a counter
            state = counter_state(current)
        number = state[counters.NUMBER] if current is None or current[0] is not None else 0
        if number is None:
            return NOT_INTEGER
        if ((amount < 0 and number < 0 and amount < INT64_MIN - number)
                or (amount > 0 and number > 0 and amount > INT64_MAX - number)):
            return OVERFLOW
        node = self.clock.node
        stamp = self.clock.stamp(None, current)
        ms, counter = stamp[1], stamp[2]
        slot = self._own.get(key)
        slots = counters.all_slots(state)
        if slot is None or slot not in slots:  # a new slot (see _own)
            if len(slots) >= counters.OPEN_SLOTS:
                return TOO_MANY_SLOTS
            slot = self._own[key] = (node, ms, counter)
        elif not counters.fits(slots[slot][0] + amount):
            return OVERFLOW
        entry = counters.incremented(state, slot, amount, ms, counter)
        self.seq += 1
        self._put(key, entry, current, self.seq)
        return entry

    def incr_float(self, key: bytes, amount: bytes) -> Union[bytes, str]:
        """INCRBYFLOAT: ``key``'s value plus ``amount`` as Redis computes and
        prints it (see :func:`~distkv.store.longdouble.added`), or Redis's
        error text. The key then reads that text: the difference from the
        value it read is added, exactly, to this node's own slot, so that
        sums made at once elsewhere add to it. When the slot cannot hold it
        (the value read has more than 17 decimals, the slot's total would
        pass :data:`~distkv.store.counter.TOTAL_LIMIT` units, or too many
        slots are open), the text is written as SET writes it, keeping the
        expiry: the later of two such writes wins."""
        data = self._data
        current = data.get(key)
        if current is not None and len(current) > 4 and expired(current, self._wall()):
            self._reclaim(key, current)
            current = data[key]
        held = None if current is None else current[0]
        text = added(held, amount)
        if type(text) is str:
            return text
        before = 0 if held is None else number(held)
        written = number(text)  # type: ignore[arg-type]
        if before is None or written is None:
            raise ValueError("INCRBYFLOAT reads and writes finite numbers")
        state = counters.FRESH if current is None else counter_state(current)
        slots = counters.all_slots(state)
        slot = self._own.get(key)
        opened = slot in slots
        total = whole((slots[slot][0] if opened else 0) + written - before)  # type: ignore[index]
        if not counters.fits(total) or (not opened and len(slots) >= counters.OPEN_SLOTS):
            # The expiry of the entry read (read again, it may have passed).
            kept = 0 if current is None or current[0] is None else expires_of(current)
            self.set(key, text, kept)  # type: ignore[arg-type]
            return text
        stamp = self.clock.stamp(None, current)
        if not opened:  # a new slot (see _own)
            slot = self._own[key] = (stamp[3], stamp[1], stamp[2])
        slots = dict(slots)
        slots[slot] = (total, stamp[1], stamp[2])  # type: ignore[index]
        self._put_counter(key, counters.make(state[counters.BASE], state[counters.EXPIRES],
                                             state[counters.BASE_VERSION], slots, state[counters.OBSERVED]),
                          current)
        return text

    def delete(self, key: bytes) -> bool:
        """Write a tombstone for ``key``; True when a live (unexpired) value was removed.

        The tombstone is written even when the key is unknown here: a value
        for it may still be on its way from a peer, and the delete, being
        newer, must win over it.
        """
        current = self._data.get(key)
        if current is not None and len(current) == COUNTER_FIELDS:
            self._reset_counter(key, None, 0, current)
        else:
            self.seq += 1
            self._put(key, self.clock.stamp(None, current), current, self.seq)
        if current is None or current[0] is None:
            return False
        return not expired(current, self._wall())

    def apply(self, key: bytes, entry: Entry) -> bool:
        """Merge a replicated write; True when it changed this replica.

        A version too far in the future (see ``HybridClock.observe``) is
        refused and counted by the clock, never stored. A write below the
        stable horizon for a key held nowhere here is the leftover of a purged
        delete (every node had it, and a newer tombstone, before the purge):
        it is dropped and counted.
        """
        if not self.clock.observe(entry):
            return False
        return self._merge(key, entry)

    def apply_all(self, writes: List[Tuple[bytes, Entry]]) -> int:
        """Merge replicated writes in order, as :meth:`apply` would one by
        one (a batch from a peer); returns how many changed this replica.

        The clock observes the newest version once: when that one is not
        too far ahead none is, and the clock ends where observing each would
        have left it (else each goes through :meth:`apply`, and the ones too
        far ahead are refused and counted). A plain entry meeting a plain
        entry or none, the common case, is merged here without a call per
        write; any other goes through the same rule as :meth:`apply`'s.
        """
        if not writes:
            return 0
        if not self.clock.observe(max([entry[-3:] for _, entry in writes]), count=False):
            return sum([self.apply(key, entry) for key, entry in writes])
        data = self._data
        get = data.get
        changed = self._changed
        note = self.digest.note
        listeners = self._listeners
        tombstones = self._tombstones
        merge = self._merge
        applied = 0
        for key, entry in writes:
            current = get(key)
            if len(entry) != 4 or (current is not None and len(current) != 4):
                applied += merge(key, entry)
                continue
            if current is None:
                if entry[1:] < self.flushed:  # older than a flush
                    self.flush_dropped += 1
                    continue
                if entry[1:] < self.horizon:  # a purged delete's leftover
                    self.stale_dropped += 1
                    continue
                if entry[0] is None:
                    tombstones.add(key)
                else:
                    self._live += 1
            elif not newer(entry, current):
                continue
            elif current[0] is None:
                if entry[0] is not None:
                    tombstones.discard(key)
                    self._live += 1
            elif entry[0] is None:
                tombstones.add(key)
                self._live -= 1
            # _put, for two plain entries (neither expires).
            self.changes += 1
            if key not in changed:
                note(key, current)
            data[key] = entry
            for listener in listeners:
                listener(key, entry, 0)
            applied += 1
        return applied

    def _merge(self, key: bytes, entry: Entry) -> bool:
        """:meth:`apply` once the clock has observed ``entry``."""
        if len(entry) > 4 and expired(entry, self._wall()):
            # Expired by this node's clock: it counts as the tombstone at its
            # version (see _reclaim), so an expired value is never stored.
            entry = as_tombstone(entry)
        current = self._data.get(key)
        if current is None:
            # A held entry is at or above the floor: below it, newer() says no.
            if entry[-3:] < self.flushed:  # older than a flush
                self.flush_dropped += 1
                return False
            if version_of(entry) < self.horizon:  # a purged delete's leftover
                self.stale_dropped += 1
                return False
        if len(entry) == COUNTER_FIELDS or (current is not None and len(current) == COUNTER_FIELDS):
            merged = self._merged(entry, current)
            if merged is None:
                return False
            entry = merged
        elif current is not None and not newer(entry, current):
            return False
        self._put(key, entry, current, 0)
        return True

    def _merged(self, entry: Entry, current: Optional[Entry]) -> Optional[Entry]:
        """The entry a counter key holds once ``entry`` is merged into
        ``current`` (either may be plain), or None when nothing changes."""
        state = counter_state(entry)
        if current is not None:
            held = counter_state(current)
            state = counters.merge(held, state)
            if state == held and len(current) == COUNTER_FIELDS:
                return None
            if counters.oversized(state):
                # Kept, it could not be sent to a peer nor read back from the
                # data file; refused, the key's replicas differ until a SET or
                # DEL of it (possible only with more than MAX_SLOTS slots
                # opened in all, by more than 512 restarts with INCRs).
                self.counters_refused += 1
                return None
        if self.flushed != ZERO:
            above = counters.above(state, self.flushed)
            if above is None:
                return None
            state = above
        merged = counter_entry(state)
        if expired(merged, self._wall()):
            merged = as_tombstone(merged)
        if current is not None and merged == current:
            return None
        return merged

    def load(self, key: bytes, entry: Entry, seq: int = 0) -> None:
        """Put back an entry read from disk, telling no listener (one below
        the flush floor stays out)."""
        current = self._data.get(key)
        if expired(entry, self._wall()):
            entry = as_tombstone(entry)  # expired while the node was down
        if len(entry) == COUNTER_FIELDS or (current is not None and len(current) == COUNTER_FIELDS):
            merged = self._merged(entry, current)
            if merged is not None:
                self._count(key, current, merged)
                self.digest.note(key, current)
                self._data[key] = merged
        elif entry[-3:] < self.flushed:
            pass
        elif current is None or newer(entry, current):
            self._count(key, current, entry)
            self.digest.note(key, current)
            self._data[key] = entry
        if seq > self.seq:
            self.seq = seq

    def load_many(self, records: Iterable[Tuple[int, bytes, Entry]]) -> int:
        """:meth:`load` for each ``(seq, key, entry)``, in order; returns how
        many were read. The bulk path of a restart: a key new to the store (most
        of a snapshot) costs a dict insert and a note for the digest, with no
        call per entry. The digest folds the noted keys later, in parts (the
        node does it a part per reactor turn once its data is read, see
        :meth:`~distkv.store.digest.Digest.fold_some`), or when it is read."""
        data = self._data
        get = data.get
        changed = self._changed
        tombstones = self._tombstones
        floor = self.flushed
        floored = floor != ZERO
        wall = self._wall()
        live = self._live
        expiring = 0
        high = self.seq
        count = 0
        for seq, key, entry in records:
            count += 1
            if seq > high:
                high = seq
            current = get(key)
            if len(entry) == COUNTER_FIELDS or (current is not None and len(current) == COUNTER_FIELDS):
                self._live = live  # a counter merges: load()'s way
                self.load(key, entry)
                live = self._live
                continue
            if len(entry) == EXPIRING_FIELDS and expired(entry, wall):
                entry = as_tombstone(entry)  # expired while the node was down
            if floored and entry[-3:] < floor:
                continue
            if current is None:
                if key not in changed:
                    changed[key] = None  # Digest.note(key, None), without its fold
                data[key] = entry
                if entry[0] is None:
                    tombstones.add(key)
                else:
                    live += 1
                    expiring += len(entry) == EXPIRING_FIELDS
            elif newer(entry, current):
                self._live = live
                self._count(key, current, entry)
                live = self._live
                self.digest.note(key, current)
                data[key] = entry
        self._live = live
        self._with_expiry += expiring
        self.seq = high
        return count

    def load_columns(self, seqs: Sequence[int], keys: Sequence[bytes],
                     entries: Sequence[Entry]) -> int:
        """:meth:`load_many` of ``zip(seqs, keys, entries)``; returns how many
        were read. When every key is new to the store and to the digest and
        appears once, and every entry is a plain value or a tombstone with no
        flush floor to pass (each part of a snapshot read into an empty store),
        they go in with a few dict operations and no Python code per entry;
        anything else goes through :meth:`load_many`."""
        count = len(keys)
        if count and self.flushed == ZERO and set(map(len, entries)) == {4}:
            batch = dict(zip(keys, entries))
            data = self._data
            changed = self._changed
            # Until the digest first folds, it has noted every key ever held
            # here, as None: noting one again as None changes nothing.
            if (len(batch) == count and data.keys().isdisjoint(batch)
                    and (not self.digest.folded or changed.keys().isdisjoint(batch))):
                data.update(batch)
                changed.update(dict.fromkeys(batch))  # Digest.note(key, None) of each
                dead = list(compress(keys, map(is_, map(value_of, entries), repeat(None))))
                if dead:
                    self._tombstones.update(dead)
                self._live += count - len(dead)
                high = max(seqs)
                if high > self.seq:
                    self.seq = high
                return count
        return self.load_many(zip(seqs, keys, entries))

    def unload(self, key: bytes, version: Version) -> None:
        """Forget ``key`` if it holds ``version``, telling no listener (replaying
        a purge read from disk)."""
        entry = self._data.get(key)
        if entry is not None and entry[-3:] == version:
            self._drop(key)

    def restore_horizon(self, horizon: Version) -> None:
        """Take back the horizon saved before a restart (it never goes back):
        every node had every write below it then, and still has."""
        if horizon > self.horizon:
            self.horizon = horizon

    def purge(self, horizon: Version) -> int:
        """Forget every tombstone below ``horizon``; returns how many went."""
        if horizon <= self.horizon:
            return 0
        self.horizon = horizon
        data = self._data
        gone = [(key, version_of(data[key])) for key in self._tombstones if data[key][-3:] < horizon]
        self._forget(gone)
        self.purged += len(gone)
        return len(gone)

    def drop_dead(self, key: bytes, horizon: Version) -> bool:
        """Forget ``key`` when a peer whose stable horizon is ``horizon`` lacks it.

        Below a horizon every node had every write, so a key a peer no longer
        holds was deleted and its tombstone purged; this replica missed that
        (say, its data dir came back from an old copy). Keeping the entry, or
        sending it, would bring the deleted key back.
        """
        entry = self._data.get(key)
        if entry is None or not entry[-3:] < horizon:
            return False
        self._forget([(key, version_of(entry))])
        self.stale_dropped += 1
        return True

    def _forget(self, gone: List[Tuple[bytes, Version]]) -> None:
        self.changes += 1
        for key, _ in gone:
            self._drop(key)
        if gone:
            for listener in self._purge_listeners:
                listener(gone)

    def _drop(self, key: bytes) -> None:
        entry = self._data[key]
        if len(entry) == COUNTER_FIELDS:
            self._own.pop(key, None)
        self.digest.note(key, entry)
        del self._data[key]
        if entry[0] is None:
            self._tombstones.discard(key)
        else:
            self._live -= 1
            self._with_expiry -= is_expiring(entry)

    def _put(self, key: bytes, entry: Entry, current: Optional[Entry], seq: int) -> None:
        # The hot path of every write: _count() inlined.
        self.changes += 1
        if len(entry) > 4 and is_expiring(entry):
            self._with_expiry += 1
        if current is not None and len(current) > 4 and is_expiring(current):
            self._with_expiry -= 1
        if current is None:
            if entry[0] is None:
                self._tombstones.add(key)
            else:
                self._live += 1
        else:
            if current[0] is None:
                if entry[0] is not None:
                    self._tombstones.discard(key)
                    self._live += 1
            elif entry[0] is None:
                self._tombstones.add(key)
                self._live -= 1
        if key not in self._changed:
            self.digest.note(key, current)
        self._data[key] = entry
        for listener in self._listeners:
            listener(key, entry, seq)

    def _count(self, key: bytes, current: Optional[Entry], entry: Entry) -> None:
        was_live = current is not None and current[0] is not None
        self._with_expiry += is_expiring(entry) - (current is not None and is_expiring(current))
        if entry[0] is None:
            self._tombstones.add(key)
        elif not was_live:
            self._tombstones.discard(key)
        self._live += (entry[0] is not None) - was_live

    def __len__(self) -> int:
        """The number of live keys (tombstones excluded)."""
        return self._live

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a readable value (not deleted, not expired)."""
        return self.live(key) is not None  # type: ignore[arg-type]

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def items(self) -> List[Tuple[bytes, Entry]]:
        """Every stored key and entry, tombstones included (a copy: the store
        may change while the caller goes through it)."""
        return list(self._data.items())

    def live_keys(self) -> List[bytes]:
        """Every key with a readable value (expired ones are reclaimed)."""
        self.reclaim_expired()
        return [key for key, entry in self._data.items() if entry[0] is not None]

    @property
    def with_expiry(self) -> int:
        """How many stored values carry an expiry (expired or not)."""
        return self._with_expiry

    def sweep(self, limit: int) -> int:
        """One step of the active expiry cycle: look at up to ``limit`` more
        keys, in a pass over every key that restarts once done, and reclaim
        the expired ones; returns how many were reclaimed. Nothing to do (no
        value has an expiry) costs nothing."""
        if not self._with_expiry:
            self._sweep = []
            return 0
        pending = self._sweep
        if not pending:
            pending = self._sweep = list(self._data)
            pending.reverse()  # popped from the end: oldest keys first
        batch = pending[-limit:]
        del pending[-limit:]
        return self.reclaim(batch)

    def snapshot(self) -> Dict[bytes, Entry]:
        """A copy of everything stored, for comparing replicas."""
        return dict(self._data)
