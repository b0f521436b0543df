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
:meth:`distkv.node.Node.consensus_prepare`). A promise's ``seen`` (unused
by a refusal's meaning) says whether the entry it answers is *settled*: ZERO
if so, else a ballot promised here above it (see :meth:`Acceptor._unsettled`);
only settled entries let a read finish in one phase.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Callable, Dict, Optional, Tuple

from distkv.cluster.paxoswire import NOT_READY, OK, REFUSED
from distkv.store.entries import ZERO, Entry, mark_of, version_of
from distkv.store.hlc import Version
from distkv.store.store import Store

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
        #: The version each key (its promise slot) held when it was last known
        #: *settled* here (see :meth:`prepare`); bounded like the promises.
        self.settled: Dict[bytes, Version] = {}
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
        prior = max(self.promises.get(slot, ZERO), self.dropped)
        # Below the flush floor nothing could be accepted: refused, naming
        # the floor, so that the proposer's next ballot is above it.
        beaten = max(prior, self.store.flushed, ZERO if entry is None else version_of(entry))
        if ballot <= beaten:
            self.refused += 1
            return (REFUSED, beaten, None)
        unsettled = self._unsettled(slot, entry, prior)
        promises = self.promises
        promises.pop(slot, None)  # re-inserted last: the dict's order is their age
        promises[slot] = ballot
        if len(promises) > self.most:
            oldest = next(iter(promises))
            self.dropped = max(self.dropped, promises.pop(oldest))
        self.promised += 1
        # This node's own next ballots start above it: fewer refusals.
        self.store.clock.observe(ballot, count=False)
        return (OK, unsettled, entry)

    def _unsettled(self, slot: bytes, entry: Optional[Entry], prior: Version) -> Version:
        """ZERO if ``entry`` is *settled* here, else a ballot promised above it.

        An entry is settled when no ballot above its version was promised
        here before it arrived. Replication, anti-entropy and read repair
        merge entries without asking the promises, so an entry a coordinator
        got accepted by one acceptor only can reach a majority that had
        promised a higher ballot to a coordinator who computed its value from
        an older one (and may still get it accepted somewhere): that entry is
        on a majority yet not chosen, and a read must write it back rather
        than answer it in one phase (see :mod:`distkv.cluster.consensus`).
        Settled: absent (nothing is older), no promise above the version now
        (a promise leaves only once the version reaches it, or into
        ``dropped``, which counts), or known settled before (an accept taken
        here, or an earlier prepare that found it so). Promises lost in a
        restart were at most ``floor_ms``: an entry not above it is settled
        only once known so since the restart.
        """
        if entry is None:
            return ZERO
        version = version_of(entry)
        if self.settled.get(slot) == version:
            self._remember(slot, version)
            return ZERO
        floor = self.floor_ms()
        forgotten = Version(floor + 1, 0, "") if floor > 0 else ZERO
        above = max(prior, forgotten)
        if above > version:
            return above
        self._remember(slot, version)
        return ZERO

    def _remember(self, slot: bytes, version: Version) -> None:
        """``slot``'s entry of ``version`` is settled here."""
        settled = self.settled
        settled.pop(slot, None)  # re-inserted last: the dict's order is their age
        settled[slot] = version
        if len(settled) > self.most:
            del settled[next(iter(settled))]

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
        slot = _promised_as(key)
        if promised != ZERO and promised <= ballot:
            del self.promises[slot]  # the entry's version holds it from now on
        # Taken at or above every promise (and above the restart floor): settled.
        self._remember(slot, ballot)
        self.accepted += 1
        return (OK, ZERO, None)
