"""The versioned key-value store: plain Python, no networking, no reactor.

Every key maps to an :class:`Entry`: a value (or ``None`` for a tombstone) and
the :class:`~distkv.hlc.Version` of the write that produced it. Local writes are
stamped by the injected :class:`~distkv.hlc.HybridClock`; remote writes are
merged by keeping the highest version, which makes merging commutative,
associative and idempotent, so replicas converge whatever order or duplication
their deliveries arrive in. Listeners hear about every change, tagged local or
remote, which is how replication and persistence hook in without the store
knowing about either.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from distkv.digest import Digest
from distkv.hlc import HybridClock, Version


class Entry(NamedTuple):
    """What a replica holds for one key: a value, or a tombstone (``None``)."""

    value: Optional[bytes]
    version: Version


Listener = Callable[[bytes, Entry, bool], None]


def newer(candidate: Entry, current: Entry) -> bool:
    """True when ``candidate`` beats ``current`` under last-writer-wins.

    Versions decide. Two writes can only share a version if a node restarted
    with its clock set back, so the value breaks that tie deterministically
    (a tombstone loses to any value) and every replica still picks the same.
    """
    if candidate.version != current.version:
        return candidate.version > current.version
    return _tiebreak(candidate.value) > _tiebreak(current.value)


def _tiebreak(value: Optional[bytes]) -> Tuple[int, bytes]:
    return (0, b"") if value is None else (1, value)


class Store:
    """Keys, values, tombstones and their versions for one node."""

    def __init__(self, clock: HybridClock) -> None:
        self.clock = clock
        self._data: Dict[bytes, Entry] = {}
        self._live = 0
        self._listeners: List[Listener] = []
        self.digest = Digest()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(key, entry, local)`` after every change."""
        self._listeners.append(listener)

    def get(self, key: bytes) -> Optional[bytes]:
        """The live value of ``key``, or ``None`` when absent or deleted."""
        entry = self._data.get(key)
        return None if entry is None else entry.value

    def entry(self, key: bytes) -> Optional[Entry]:
        """The stored entry for ``key``, tombstones included."""
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> Entry:
        """Write ``value`` locally with a version above anything seen."""
        return self._write(key, value)

    def delete(self, key: bytes) -> bool:
        """Write a tombstone for ``key``; True when a live value was removed.

        The tombstone is written even when the key is unknown here: a value
        for it may still be on its way from a peer, and the delete, being
        newer, must win over it.
        """
        current = self._data.get(key)
        self._write(key, None)
        return current is not None and current.value is not None

    def _write(self, key: bytes, value: Optional[bytes]) -> Entry:
        current = self._data.get(key)
        if current is None:
            entry = Entry(value, self.clock.now())
        else:
            entry = Entry(value, self.clock.now_above(current.version))
        self._put(key, entry, current, True)
        return entry

    def apply(self, key: bytes, entry: Entry) -> bool:
        """Merge a replicated write; True when it changed this replica.

        A version too far in the future (see ``HybridClock.observe``) is
        refused and counted by the clock, never stored.
        """
        if not self.clock.observe(entry.version):
            return False
        current = self._data.get(key)
        if current is not None and not newer(entry, current):
            return False
        self._put(key, entry, current, False)
        return True

    def load(self, key: bytes, entry: Entry) -> None:
        """Put back an entry read from disk, telling no listener."""
        current = self._data.get(key)
        if current is None or newer(entry, current):
            self._count(current, entry)
            self._data[key] = entry
            self.digest.replace(key, None if current is None else current.version, entry.version)

    def _put(
        self, key: bytes, entry: Entry, current: Optional[Entry], local: bool
    ) -> None:
        self._count(current, entry)
        self._data[key] = entry
        self.digest.replace(key, None if current is None else current.version, entry.version)
        for listener in self._listeners:
            listener(key, entry, local)

    def _count(self, current: Optional[Entry], entry: Entry) -> None:
        was_live = current is not None and current.value is not None
        self._live += (entry.value is not None) - was_live

    def __len__(self) -> int:
        """The number of live keys (tombstones excluded)."""
        return self._live

    def __contains__(self, key: object) -> bool:
        entry = self._data.get(key)  # type: ignore[call-overload]
        return entry is not None and entry.value is not None

    @property
    def tombstones(self) -> int:
        return len(self._data) - self._live

    def items(self) -> Iterator[Tuple[bytes, Entry]]:
        """Every stored key and entry, tombstones included."""
        return iter(list(self._data.items()))

    def snapshot(self) -> Dict[bytes, Entry]:
        """A copy of everything stored, for comparing replicas."""
        return dict(self._data)
