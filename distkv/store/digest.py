"""Bucketed digests of a store, kept up to date as it changes, for anti-entropy.

Keys fall into a fixed number of buckets by CRC-32. A bucket's digest is the
XOR of one 64-bit hash per stored entry, taken over the key's CRC-32, its
version and its value's CRC-32 (a tombstone's is a number no CRC-32 takes;
for a value with an expiry, the hash of that CRC and the expiry, so replicas
differing only in a key's expiry see it; for a counter, the CRC-32 of its
whole encoded state, since two replicas can hold one version of a counter
with different slots: see :mod:`distkv.store.counter`).
A version should name one write, but a node restarted with its clock behind
(memory only, or from an older copy of its data dir) can stamp a version it
already used, for another value; hashing the value as well lets two such
replicas see their difference, which every replica then settles the same way
(:func:`distkv.store.entries.newer`), so equal digests mean (up to a 2**-64 chance,
and a 2**-32 one for two values of one version) equal entries. XOR lets a
write update its bucket in constant time by removing the old entry's hash and
adding the new one (done lazily, for every key changed since the hashes were
last read). Two replicas compare their digest vectors, then exchange the keys
and versions of the buckets that differ, never the whole data set.

The entry hash is taken twice for every key written (its old entry out, its
new one in), so it is the interpreter's own tuple
hash over five integers (the xxHash-based one CPython has used since 3.8 and
PyPy shares; integers hash to themselves modulo 2**61-1, with no per-process
seed), not a cryptographic hash: it costs a fraction of a microsecond on
CPython and next to nothing on PyPy, against microseconds for ``blake2b``. The
node id, a string (whose hash is seeded per process), enters as a 62-bit
integer derived from it once (small enough to be a machine integer on PyPy);
the value, as its CRC-32 (zlib's, a few hundred bytes per microsecond at
worst, taken when the entry is noted, so no old value is kept until the
fold).
``tests/test_store.py`` pins the values, and the suite runs under both
interpreters, so a mixed cluster agrees; were some
interpreter to hash differently, its digests would differ in every bucket,
which costs a full key exchange per round, never a wrong result (the node
warns at start when it finds itself on such an interpreter: see
``PORTABLE``). Unlike ``blake2b`` this hash can be inverted, so the 2**-64
holds for keys nobody crafted to collide; a crafted collision could hide a
difference from one round, not corrupt data.
"""

from __future__ import annotations

import struct
from binascii import crc32 as _crc32  # zlib's CRC-32; PyPy calls this one faster
from hashlib import blake2b
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from distkv.store.counter import digest as crc32_of_counter
from distkv.store.entries import COUNTER_FIELDS, EXPIRING_FIELDS, expires_of
from distkv.store.hlc import Stamped, Version

BUCKETS = 1024
# Signed: each bucket's hash is kept as the interpreter's signed 64-bit hash
# value (XOR keeps it in range), a machine integer on PyPy; packed as "q" it is
# the same 8 bytes as its unsigned twin.
_HASHES = struct.Struct(f">{BUCKETS}q")


def bucket_of(key: bytes) -> int:
    return _crc32(key) & (BUCKETS - 1)


_MASK = (1 << 64) - 1
_node_numbers: Dict[str, int] = {}

#: What a tombstone (or a bare version, with no value) hashes as in place of
#: a value's CRC-32: outside the range of CRC-32, so no value shares it.
NO_VALUE = 1 << 32


def value_crc(value: Optional[bytes]) -> int:
    """What a value contributes to its entry's hash."""
    return NO_VALUE if value is None else _crc32(value)


def _value_part(stamped: Stamped) -> int:
    """What an entry's value and expiry contribute to its hash: the value's
    CRC-32 (:data:`NO_VALUE` for a tombstone or a bare version), mixed with
    the expiry when it has one, so two replicas that differ only in a key's
    expiry see their difference."""
    if len(stamped) < 4:
        return NO_VALUE
    if len(stamped) == COUNTER_FIELDS:  # a counter: its whole state, read or not
        return crc32_of_counter(stamped)  # type: ignore[arg-type]
    value = stamped[0]
    if value is None:
        return NO_VALUE
    if len(stamped) == EXPIRING_FIELDS:
        return hash((_crc32(value), expires_of(stamped)))  # type: ignore[arg-type]
    return _crc32(value)  # type: ignore[arg-type]


def node_number(node: str) -> int:
    """A node id as a 62-bit integer, the same in every process."""
    number = _node_numbers.get(node)
    if number is None:
        digest = blake2b(node.encode("utf-8"), digest_size=8).digest()
        # 62 bits: a machine-sized integer on PyPy, where a larger one is a
        # heap-allocated long and makes every entry hash several times slower.
        number = _node_numbers[node] = int.from_bytes(digest, "big") >> 2
    return number


def entry_hash(key: bytes, version: Version, value: Optional[bytes] = None) -> int:
    """The 64-bit hash of one entry, unsigned (``value`` None: a tombstone)."""
    return _hash(_crc32(key), version, value_crc(value)) & _MASK


def _hash(crc: int, version: Version, value: int) -> int:
    return hash((crc, version.ms, version.counter, node_number(version.node), value))


#: ``entry_hash(b"k", Version(5, 1, "a"), b"v")`` on 64-bit CPython and PyPy.
PINNED_HASH = 8716148940400064446

#: False on an interpreter whose tuple hash differs from CPython's 64-bit one
#: (a 32-bit build, say); the node warns, since its digests then never match.
PORTABLE = entry_hash(b"k", Version(5, 1, "a"), b"v") == PINNED_HASH


#: A digest folds its noted changes in once this many keys have changed,
FOLD_AT = 1024
#: or once the keys noted add up to this many bytes (the notes hold the keys).
FOLD_BYTES = 256 * 1024


class Digest:
    """One XOR hash per bucket over every (key, version, value) in ``entries``.

    ``entries`` is the store's own mapping of keys to entries (or bare
    versions, hashed as tombstones: see :data:`~distkv.store.hlc.Stamped`);
    whatever it holds when the digest is made is counted. A change to it is
    not hashed when it is made: the caller first notes the key (:meth:`note`)
    with the entry the digest still counts for it, and the hashes take in
    every noted key at once, from the entry then
    held, when they are next read, or once ``fold_at`` keys (or
    :data:`FOLD_BYTES` of keys) are noted. XOR is commutative, so the result
    is the same as hashing every change in turn, but a key written many
    times between two reads (a hot key, or a pipeline of writes to it) is
    hashed twice in all rather than twice per write.
    """

    def __init__(self, entries: Mapping[bytes, Stamped], fold_at: int = FOLD_AT) -> None:
        self._entries = entries
        #: Fold once this many keys are noted.
        self.fold_at = fold_at
        self._key_bytes = 0
        self._hashes = [0] * BUCKETS
        #: Key -> what the hashes still count for it: ``(value CRC, ms,
        #: counter, node)``, or None for no entry. The store reads it (never
        #: writes it) to call note() only once per key; it is cleared in
        #: place, never replaced.
        self.changed: Dict[bytes, Optional[Stamped]] = dict.fromkeys(entries)
        #: Whether anything was ever folded. Until then every key ever held
        #: is noted, as None (what a store reading its data dir back relies
        #: on, see :meth:`~distkv.store.store.Store.load_columns`).
        self.folded = False

    def note(self, key: bytes, old: Optional[Stamped]) -> None:
        """Call before changing ``key``'s entry; ``old`` is the entry it holds now."""
        changed = self.changed
        if key not in changed:
            if len(changed) >= self.fold_at or self._key_bytes >= FOLD_BYTES:
                # Now, not after the new key is noted: every change noted so
                # far has been made, and this key's is still to come. At most
                # fold_at of them: after a restart a million keys wait, folded
                # a part at a time (see fold_some), never all in one write.
                self.fold_some(self.fold_at)
            if old is None:
                changed[key] = None
            else:
                # The value's CRC, not the value: an old value must not stay
                # in memory until the next fold.
                changed[key] = (_value_part(old), old[-3], old[-2], old[-1])
            self._key_bytes += len(key)

    def fold(self) -> None:
        """Hash every noted change into its bucket."""
        changed = self.changed
        if not changed:
            return
        self._fold(changed.items())
        changed.clear()
        self._key_bytes = 0

    def fold_some(self, limit: int) -> bool:
        """Hash up to ``limit`` noted changes into their buckets (any of them:
        XOR does not mind the order); True while some remain."""
        changed = self.changed
        if len(changed) <= limit:
            self.fold()
            return False
        pop = changed.popitem  # from the end: no hole left for the next call to skip
        items = [pop() for _ in range(limit)]
        self._fold(items)
        self._key_bytes = max(0, self._key_bytes - sum(len(key) for key, _ in items))
        return True

    @property
    def pending(self) -> int:
        """How many noted changes wait for a fold."""
        return len(self.changed)

    def _fold(self, changed: Iterable[Tuple[bytes, Optional[Stamped]]]) -> None:
        self.folded = True
        hashes = self._hashes
        get = self._entries.get
        # _hash()'s formula inlined, with the last node id's number kept:
        # consecutive versions mostly share one.
        last, number = "", node_number("")
        for key, old in changed:
            crc = _crc32(key)
            bucket = crc & (BUCKETS - 1)
            value = hashes[bucket]
            new = get(key)
            if new is not None:
                if new[-1] is not last:
                    last = new[-1]
                    number = node_number(last)
                value ^= hash((crc, new[-3], new[-2], number, _value_part(new)))
            if old is not None:  # (value CRC, ms, counter, node): see note()
                if old[-1] is not last:
                    last = old[-1]
                    number = node_number(last)
                value ^= hash((crc, old[-3], old[-2], number, old[0]))
            hashes[bucket] = value

    @property
    def hashes(self) -> List[int]:
        """Each bucket's hash (a signed 64-bit integer), up to date."""
        self.fold()
        return self._hashes

    def encode(self) -> bytes:
        return _HASHES.pack(*self.hashes)

    def differing(self, encoded: bytes) -> List[int]:
        """The buckets whose hash differs from the encoded digest of a peer."""
        theirs = _HASHES.unpack(encoded)
        return [i for i, (a, b) in enumerate(zip(self.hashes, theirs)) if a != b]


T = TypeVar("T")


def select(items: Iterable[Tuple[bytes, T]], buckets: Sequence[int]) -> Dict[int, List[Tuple[bytes, T]]]:
    """Group the items whose key falls in one of ``buckets``, by bucket."""
    wanted: Dict[int, List[Tuple[bytes, T]]] = {b: [] for b in buckets}
    for key, item in items:
        group = wanted.get(bucket_of(key))
        if group is not None:
            group.append((key, item))
    return wanted


DIGEST_BYTES = _HASHES.size
