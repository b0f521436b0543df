"""Anti-entropy rounds: find what a peer lacks by digest, send only that.

A round runs over one peer connection, driven by the side whose link pushes
over it (either end may: links carry data both ways): it offers its digest,
the other side answers with the keys and versions of the buckets that differ,
and the pushing side sends each entry it holds newer than the peer's (or that
the peer lacks).
Entries the peer holds newer flow the other way in the peer's own round over
its own link, so each round only ever pushes. A bucket can also differ with
every key at the same version on both sides: the digest hashes values too,
and a version reused by a node restarted with its clock behind can name two
values. When the key lists show that, and our bucket has not changed since
the offer (so no write that landed meanwhile explains it), the pushing side
sends that bucket's entries, and the receiver keeps the one that every replica
prefers (:func:`distkv.store.store.newer`); the peer's round settles the other way.

A counter (see :mod:`distkv.store.counter`) in a differing bucket is sent
whatever its version: replicas merge counters, so each side's slots must
reach the other even where the other's newest version is higher.

Absence is never a delete: a key one side lacks is sent, never removed, with
one exception. The accepting side ends its answer with its stable horizon (see
:mod:`distkv.cluster.stability`); a key it lacks whose version lies below that horizon
was deleted and purged while this replica missed it (an old copy of a data
dir), so it is not sent, and a value of it is dropped here (a tombstone is
kept until our own horizon passes it: :meth:`Round.below_horizon`). Nothing here does I/O: the
functions return the bytes to write, as a stream of chunks a connection writes
as fast as the peer reads, so a round over a large store never sits in memory
as one block of bytes.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from distkv.cluster import wire
from distkv.store.digest import select
from distkv.store.entries import ZERO, Entry, is_counter, version_of
from distkv.store.hlc import Version
from distkv.store.store import Store

#: Bytes of write frames a round's stream yields at a time.
CHUNK_BYTES = 256 * 1024

#: At most this many buckets per round have their entries sent for differing
#: by values alone. A real tie (see :func:`distkv.store.store.newer`) is rare and
#: touches few buckets, and the rest go in later rounds; a peer whose digest
#: hashes differently (an older DistKV, during an upgrade) makes every bucket
#: look so, and must not get the whole store every round.
TIE_BUCKETS = 16


def answer_offer(store: Store, offer: wire.DigestOffer) -> bytes:
    """The answer to ``offer`` in one piece (see :func:`answer_frames`)."""
    return b"".join(answer_frames(store, offer))


def answer_frames(store: Store, offer: wire.DigestOffer) -> Iterator[bytes]:
    """The accepting side's answer, frame by frame: key lists for differing
    buckets, then ``E``. The differing keys are found at once; each frame is
    built only when the connection asks for it. Expired values are reclaimed
    first (on both sides: see :meth:`Round.offer`), so a key both replicas
    hold expired, one as its value and one already as its tombstone, is no
    difference to settle."""
    store.reclaim_expired()
    if store.flushed != ZERO:  # first, so the pusher drops what a flush removed
        yield wire.encode_flush(store.flushed)
    buckets = store.digest.differing(offer.digest)
    for bucket, items in select(store.items(), buckets).items():
        chunk: List[Tuple[bytes, Version]] = []
        size = 0
        for key, entry in items:
            # The bytes this key adds to the frame (see wire.encode_key_list);
            # the frame goes out before a key would take it past the bound.
            adds = len(key) + 18 + len(entry[-1])
            if chunk and size + adds > wire.KEY_LIST_BYTES:
                yield wire.encode_key_list(offer.round, bucket, chunk)
                chunk, size = [], 0
            chunk.append((key, version_of(entry)))
            size += adds
        if chunk or not items:
            yield wire.encode_key_list(offer.round, bucket, chunk)
    yield wire.encode_mark(b"E", offer.round, store.horizon)


class Round:
    """The pushing side's half of one round."""

    def __init__(self, store: Store, number: int) -> None:
        self.store = store
        self.number = number
        self._buckets: Set[int] = set()
        self._theirs: Dict[bytes, Version] = {}
        #: Keys the peer listed, per bucket.
        self._listed: Dict[int, int] = {}
        #: The digest we offered: a bucket that changed since has moved on.
        self._offered = b""
        self.sent = 0
        self.dropped = 0
        self.finished = False

    def offer(self) -> bytes:
        self.store.reclaim_expired()
        self._offered = self.store.digest.encode()
        offer = wire.encode_digest(self.number, self._offered)
        if self.store.flushed != ZERO:  # first, so the peer drops what a flush removed
            return wire.encode_flush(self.store.flushed) + offer
        return offer

    def key_list(self, frame: wire.KeyList) -> None:
        self._buckets.add(frame.bucket)
        self._listed[frame.bucket] = self._listed.get(frame.bucket, 0) + len(frame.versions)
        self._theirs.update(frame.versions)

    def newer(self, horizon: Optional[Version] = None) -> List[Tuple[bytes, Entry]]:
        """Entries in the differing buckets that the peer lacks or holds older;
        a key the peer lacks below its ``horizon`` is dropped, not sent. A
        bucket whose keys all have the version the peer listed, unchanged here
        since the offer, differs by values alone: its entries all go."""
        theirs = self._theirs
        store = self.store
        moved = set(store.digest.differing(self._offered)) if self._offered else None
        tied: List[List[Tuple[bytes, Entry]]] = []
        out = []
        for bucket, items in select(store.items(), sorted(self._buckets)).items():
            ties: List[Tuple[bytes, Entry]] = []
            for key, entry in items:
                seen = theirs.get(key)
                if seen is None and horizon is not None and entry[-3:] < horizon:
                    # Deleted and purged there (see below_horizon).
                    self.dropped += self.below_horizon(key, entry, horizon)
                elif seen is None or entry[-3:] > seen or is_counter(entry):
                    # A counter goes whatever its version: the peer's may be
                    # newer and still lack slots this one holds (a merge, not
                    # last-writer-wins, settles them: distkv.store.counter).
                    out.append((key, entry))
                elif entry[-3:] == seen:
                    ties.append((key, entry))
            if (
                ties
                and len(ties) == len(items) == self._listed.get(bucket, 0)
                and moved is not None
                and bucket not in moved
            ):
                tied.append(ties)
        if tied:
            # A different few each round, so that buckets whose ties we lose
            # (the peer's round settles those) never hold the others back.
            start = self.number * TIE_BUCKETS % len(tied)
            for ties in (tied[start:] + tied[:start])[:TIE_BUCKETS]:
                out.extend(ties)
        return out

    def below_horizon(self, key: bytes, entry: Entry, horizon: Version) -> bool:
        """The peer lacks ``key`` and had every write below its ``horizon``,
        which ``entry`` lies below: the key was deleted and its tombstone
        purged there. It is not sent. A value is dropped here (True): it was
        deleted while this replica missed it. A tombstone is kept: it says the
        same, and goes when our own horizon passes it. Dropping it would let
        a node whose horizon lies at or below it send it back, round after
        round (each round into the peer dropping it from the sender again):
        every node that merges it lowers its floors to its version, so their
        horizons would never pass it and purging would stop for good."""
        return entry[0] is not None and self.store.drop_dead(key, horizon)

    def keys_done(self, horizon: Optional[Version] = None, serving: bool = False,
                  members: Optional[Sequence[str]] = None) -> bytes:
        """Everything the peer needs from us, then the end-of-round mark, in one piece."""
        return b"".join(self.round_frames(horizon, serving, members))

    def round_frames(self, horizon: Optional[Version] = None, serving: bool = False,
                     members: Optional[Sequence[str]] = None) -> Iterator[bytes]:
        """Everything the peer needs from us in chunks of about
        :data:`CHUNK_BYTES`, then the end-of-round mark (which says whether we
        serve: a loading node's round ends nobody's loading, and which members
        we know). What to send is decided at once; each chunk is encoded when
        the connection asks."""
        newer = self.newer(horizon)
        self.sent = len(newer)
        self._theirs = {}
        self._listed = {}
        self._offered = b""
        return self._chunks(newer, serving, members)

    def _chunks(self, newer: List[Tuple[bytes, Entry]], serving: bool,
                members: Optional[Sequence[str]]) -> Iterator[bytes]:
        parts: List[bytes] = []
        size = 0
        for key, entry in newer:
            frame = wire.encode_write(0, key, entry)
            parts.append(frame)
            size += len(frame)
            if size >= CHUNK_BYTES:
                yield b"".join(parts)
                parts, size = [], 0
        parts.append(wire.encode_round_end(self.number, self.store.clock.now(), serving, members))
        yield b"".join(parts)
