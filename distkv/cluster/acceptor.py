"""The acceptor's rules of LINEARIZABLE's per-key consensus, sans-IO.

Every member is an acceptor for every key (see :mod:`distkv.cluster.consensus`
for the protocol and why it is safe). What an acceptor has *accepted* for a
key is simply its store entry: accepting ballot ``b`` for a value is merging
the entry ``(value, b)`` into the store, an ordinary versioned write that the
journal commits and anti-entropy spreads like any other. Its *promise* for a
key is a ballot kept in memory, dropped once the entry's version passes it;
the map is bounded, and a promise pushed out of it raises :attr:`dropped`,
a ballot every key is then held to (as if each had promised it: stricter,
never looser). A restarted acceptor has lost its promises: it takes no
ballot whose millisecond is not above ``floor_ms`` (its start time plus the
largest clock skew it accepts: every ballot it could have promised before is
at most that, because it refuses ballots further ahead of its wall clock
than the skew). ``ready()`` says whether it may answer at all (a node that
loads its data, or has not resynced since a restart without a data dir,
refuses). A ballot at or below the store's flush floor is refused with the
floor as what beat it (no entry below it could be stored, and the proposer
retries above it), and a promise's answer carries the floor (see
:meth:`distkv.node.Node.consensus_prepare`).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Callable, Dict, Optional, Tuple

from distkv.cluster.paxoswire import NOT_READY, OK, REFUSED
from distkv.store.hlc import Version
from distkv.store.store import ZERO, Entry, Store, mark_of, version_of

#: The most promises kept; past it the oldest is folded into ``dropped``.
MOST_PROMISES = 65536
#: Keys longer than this are promised under a 16-byte BLAKE2b digest of
#: them, so that the promises take at most about 65,536 x 150 bytes however
#: long the keys read at LINEARIZABLE (a read that finds its key chosen
#: already never writes, so its promise stays until pushed out). Two keys
#: sharing a digest share their promises: stricter, never looser.
LONGEST_KEY = 32


def _promised_as(key: bytes) -> bytes:
    return key if len(key) <= LONGEST_KEY else blake2b(key, digest_size=16).digest()

#: (status, the ballot or version that beat the one offered, the entry held).
Answer = Tuple[int, Version, Optional[Entry]]


class Acceptor:
    """One node's acceptor: promises in memory, accepted values in ``store``."""

    def __init__(self, store: Store, wall_ms: Callable[[], int], max_skew_ms: int,
                 ready: Callable[[], bool], floor_ms: Callable[[], int] = lambda: 0,
                 most: int = MOST_PROMISES) -> None:
        self.store = store
        self.wall_ms = wall_ms
        self.max_skew_ms = max_skew_ms
        self.ready = ready
        #: No ballot at or below this millisecond is taken (see the module's doc).
        self.floor_ms = floor_ms
        self.most = most
        self.promises: Dict[bytes, Version] = {}
        #: Every key counts as having promised this (see the module's doc).
        self.dropped = ZERO
        #: Counters for INFO.
        self.promised = 0
        self.accepted = 0
        self.refused = 0

    def serving(self) -> bool:
        """Whether a ballot made now (by a clock like ours) would be taken."""
        return self.ready() and self.wall_ms() > self.floor_ms()

    def _unfit(self, ballot: Version) -> Optional[Answer]:
        """Why no key could take ``ballot`` now, or None."""
        if not self.ready() or ballot[0] <= self.floor_ms():
            return (NOT_READY, ZERO, None)
        if ballot[0] > self.wall_ms() + self.max_skew_ms:
            # Promised, it could outlive a restart's floor: refused outright.
            self.refused += 1
            return (REFUSED, ZERO, None)
        return None

    def prepare(self, key: bytes, ballot: Version) -> Answer:
        """Promise ``ballot`` for ``key`` unless a ballot or version at or
        above it was seen; the answer carries the entry held (if promised)."""
        unfit = self._unfit(ballot)
        if unfit is not None:
            return unfit
        entry = self.store.entry(key)
        slot = _promised_as(key)
        # Below the flush floor nothing could be accepted: refused, naming
        # the floor, so that the proposer's next ballot is above it.
        beaten = max(self.promises.get(slot, ZERO), self.dropped, self.store.flushed,
                     ZERO if entry is None else version_of(entry))
        if ballot <= beaten:
            self.refused += 1
            return (REFUSED, beaten, None)
        promises = self.promises
        promises.pop(slot, None)  # re-inserted last: the dict's order is their age
        promises[slot] = ballot
        if len(promises) > self.most:
            oldest = next(iter(promises))
            self.dropped = max(self.dropped, promises.pop(oldest))
        self.promised += 1
        # This node's own next ballots start above it: fewer refusals.
        self.store.clock.observe(ballot, count=False)
        return (OK, ZERO, entry)

    def accept(self, key: bytes, entry: Entry) -> Answer:
        """Store ``entry`` (its version the ballot) unless a higher ballot was
        promised or a version at or above it is held. An answer of OK is to
        be sent once the store's change is committed."""
        ballot = version_of(entry)
        unfit = self._unfit(ballot)
        if unfit is not None:
            return unfit
        held = self.store.entry(key)
        promised = self.promises.get(_promised_as(key), ZERO)
        if (ballot < promised or ballot < self.dropped
                or (held is not None and ballot <= version_of(held))):
            self.refused += 1
            return (REFUSED, max(promised, self.dropped,
                                 ZERO if held is None else version_of(held)), None)
        self.store.apply(key, entry)
        now = self.store.entry(key)
        if now is None or mark_of(now) != mark_of(entry):
            # Refused by the store: below a flush, say, or expired on arrival;
            # ``seen`` names the floor too, so the proposer's retry is above it.
            self.refused += 1
            return (REFUSED, max(self.store.flushed, ZERO if now is None else version_of(now)),
                     None)
        if promised != ZERO and promised <= ballot:
            del self.promises[_promised_as(key)]  # the entry's version holds it from now on
        self.accepted += 1
        return (OK, ZERO, None)
