"""The versioned key-value store: plain Python, no networking, no reactor.

Every key maps to an :data:`Entry`: a value (or ``None`` for a tombstone) and
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

A flush (FLUSHALL) is a versioned event too: the store's *flush floor*
(:meth:`Store.raise_floor`). Every entry below it is dropped, and no write
below it is ever stored again, whichever node made it and however late it
arrives; the clock observes the floor, so every write made here after it
stamps above it and survives.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from distkv.store.digest import Digest
from distkv.store.hlc import HybridClock, Version

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
#: A key with an expiry holds a 5-tuple instead, ``(value, ttl, ms, counter,
#: node)``. Its expiry is the absolute wall-clock time (ms since the epoch)
#: ``ms + ttl`` at which the value stops being readable, carried with the
#: versioned write like the value, so changing it (EXPIRE, PERSIST) is a
#: write with a new version. It is kept relative to the version's ``ms``
#: because keys written with the same TTL then share one int object
#: (:func:`expiring_entry`): the fifth field is all an expiry costs them. A
#: key without one pays nothing for it; the version is always the last three
#: fields (``entry[-3:]``). Read the expiry with :func:`expires_of`.
Entry = Union[Tuple[Optional[bytes], int, int, str], Tuple[Optional[bytes], int, int, int, str]]


#: The TTL int objects entries share (see :data:`Entry`), bounded.
_TTLS: Dict[int, int] = {}
_MOST_TTLS = 4096


def _shared_ttl(ttl: int) -> int:
    shared = _TTLS.setdefault(ttl, ttl)
    if len(_TTLS) > _MOST_TTLS:
        _TTLS.clear()
    return shared


def expiring_entry(value: Optional[bytes], expires: int, ms: int, counter: int,
                   node: str) -> Entry:
    """The entry for ``value`` (None: a tombstone) at version ``(ms, counter,
    node)``, readable until ``expires`` (ms since the epoch; 0: for ever)."""
    if not expires or value is None:
        return (value, ms, counter, node)
    return (value, _shared_ttl(expires - ms), ms, counter, node)


def make_entry(value: Optional[bytes], version: Version, expires: int = 0) -> Entry:
    """The entry for ``value`` (None: a tombstone) written at ``version``,
    readable until ``expires`` (ms since the epoch; 0: for ever)."""
    if len(version) != 3:  # an entry passed for its version, say
        raise TypeError(f"not a version: {version!r}")
    return expiring_entry(value, expires, version[0], version[1], version[2])


def version_of(entry: Entry) -> Version:
    """The version of the write that produced ``entry``."""
    return _new_tuple(Version, entry[-3:])


def expires_of(entry: Entry) -> int:
    """When ``entry``'s value stops being readable (ms since the epoch), or 0."""
    return entry[1] + entry[-3] if len(entry) == 5 else 0  # type: ignore[misc,operator]


def with_expiry(entry: Entry, expires: int) -> Entry:
    """``entry`` (as the clock stamped it: a 4-tuple) readable until ``expires``."""
    return expiring_entry(entry[0], expires, entry[-3], entry[-2], entry[-1])  # type: ignore[arg-type]


def expired(entry: Entry, now_ms: int) -> bool:
    """True when ``entry`` holds a value whose expiry is at or before ``now_ms``."""
    return len(entry) == 5 and entry[1] + entry[-3] <= now_ms  # type: ignore[misc,operator]


def as_tombstone(entry: Entry) -> Entry:
    """The tombstone at ``entry``'s version: what an expired entry counts as."""
    return (None, entry[-3], entry[-2], entry[-1])  # type: ignore[return-value]


#: ``listener(key, entry, seq)``: ``seq`` numbers local writes from 1; 0 is a
#: write merged from a peer.
Listener = Callable[[bytes, Entry, int], None]
PurgeListener = Callable[[List[Tuple[bytes, Version]]], None]
#: ``listener(floor)``: the flush floor rose to ``floor``.
FlushListener = Callable[[Version], None]
#: ``listener([(seq, key, entry), ...])``: the local writes of one transaction.
GroupListener = Callable[[List[Tuple[int, bytes, Entry]]], None]

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


class Store:
    """Keys, values, tombstones and their versions for one node."""

    def __init__(self, clock: HybridClock) -> None:
        self.clock = clock
        self._data: Dict[bytes, Entry] = {}
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
        self._group_listeners: List[GroupListener] = []
        #: The flush floor: every entry below it was flushed (see
        #: :meth:`raise_floor`); ZERO until the first flush.
        self.flushed = ZERO
        #: Writes refused, and entries dropped, for being below the floor.
        self.flush_dropped = 0
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
        """Flush everything held here (FLUSHALL): a fresh version becomes the
        floor, above every entry stored; returns it."""
        floor = self.clock.now()
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
        gone = [(key, version_of(entry)) for key, entry in data.items() if entry[-3:] < floor]
        self._forget(gone)
        self.flush_dropped += len(gone)
        return True

    def restore_floor(self, floor: Version) -> None:
        """Take back the flush floor saved before a restart, telling no
        listener (called before the entries are read back)."""
        if floor > self.flushed:
            self.flushed = floor
            self.clock.restore(floor.ms)

    def begin_group(self) -> None:
        """The local writes from now to :meth:`end_group` are one transaction."""
        if self.group is not None:
            raise RuntimeError("a group of writes is already open")
        self.group = []
        self._listeners.append(self._collect)

    def end_group(self) -> List[Tuple[int, bytes, Entry]]:
        """Close the group: tell the group listeners, return its writes."""
        group = self.group
        if group is None:
            raise RuntimeError("no group of writes is open")
        self.group = None
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
        # expired() inlined here, in live(), apply() and load_many(): hot paths.
        if len(entry) == 5 and entry[1] + entry[-3] <= self._wall():  # type: ignore[misc,operator]
            self._reclaim(key, entry)
            return None
        return entry[0]

    def live(self, key: bytes) -> Optional[Entry]:
        """The entry of ``key`` when it holds a readable value (neither a
        tombstone nor expired), else None."""
        entry = self._data.get(key)
        if entry is None or entry[0] is None:
            return None
        if len(entry) == 5 and entry[1] + entry[-3] <= self._wall():  # type: ignore[misc,operator]
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
        entry: Entry = self.clock.stamp(value, current)
        if expires:
            ms = entry[-3]
            entry = (value, _shared_ttl(expires - ms), ms, entry[-2], entry[-1])  # type: ignore[assignment,operator]
            self._with_expiry += 1
        if current is None:
            self._live += 1
        elif current[0] is None:
            self._tombstones.discard(key)
            self._live += 1
        elif len(current) == 5:
            self._with_expiry -= 1
        if key not in self._changed:  # once per key between digest reads
            self.digest.note(key, current)
        data[key] = entry
        self.changes += 1
        self.seq = seq = self.seq + 1
        for listener in self._listeners:
            listener(key, entry, seq)
        return entry

    def delete(self, key: bytes) -> bool:
        """Write a tombstone for ``key``; True when a live (unexpired) value was removed.

        The tombstone is written even when the key is unknown here: a value
        for it may still be on its way from a peer, and the delete, being
        newer, must win over it.
        """
        current = self._data.get(key)
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
        if len(entry) == 5 and entry[1] + entry[-3] <= self._wall():  # type: ignore[misc,operator]
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
        elif not newer(entry, current):
            return False
        self._put(key, entry, current, 0)
        return True

    def load(self, key: bytes, entry: Entry, seq: int = 0) -> None:
        """Put back an entry read from disk, telling no listener (one below
        the flush floor stays out)."""
        current = self._data.get(key)
        if expired(entry, self._wall()):
            entry = as_tombstone(entry)  # expired while the node was down
        if entry[-3:] < self.flushed:
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
            if len(entry) == 5 and entry[1] + entry[-3] <= wall:  # type: ignore[misc,operator]
                entry = as_tombstone(entry)  # expired while the node was down
            if floored and entry[-3:] < floor:
                continue
            current = get(key)
            if current is None:
                if key not in changed:
                    changed[key] = None  # Digest.note(key, None), without its fold
                data[key] = entry
                if entry[0] is None:
                    tombstones.add(key)
                else:
                    live += 1
                    expiring += len(entry) == 5
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
        self.digest.note(key, entry)
        del self._data[key]
        if entry[0] is None:
            self._tombstones.discard(key)
        else:
            self._live -= 1
            self._with_expiry -= len(entry) == 5

    def _put(self, key: bytes, entry: Entry, current: Optional[Entry], seq: int) -> None:
        # The hot path of every write: _count() inlined.
        self.changes += 1
        if len(entry) == 5:
            self._with_expiry += 1
        if current is not None and len(current) == 5:
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
        self._with_expiry += (len(entry) == 5) - (current is not None and len(current) == 5)
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
