"""Bucketed digests of a store, kept up to date on every write, for anti-entropy.

Keys fall into a fixed number of buckets by CRC-32. A bucket's digest is the
XOR of one 64-bit hash per stored entry, taken over the key and its version;
since a version names one write, equal digests mean (up to a 2**-64 chance)
equal entries, and XOR lets a write update its bucket in constant time by
removing the old entry's hash and adding the new one. Two replicas compare
their digest vectors, then exchange the keys and versions of the buckets that
differ, never the whole data set.
"""

from __future__ import annotations

import struct
import zlib
from hashlib import blake2b
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

from distkv.hlc import Version

BUCKETS = 1024
_VERSION = struct.Struct(">QI")
_HASHES = struct.Struct(f">{BUCKETS}Q")


def bucket_of(key: bytes) -> int:
    return zlib.crc32(key) & (BUCKETS - 1)


_node_bytes: Dict[str, bytes] = {}


def entry_hash(key: bytes, version: Version) -> int:
    node = version.node
    tail = _node_bytes.get(node)
    if tail is None:
        tail = _node_bytes[node] = node.encode("ascii")
    data = key + _VERSION.pack(version.ms, version.counter) + tail
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class Digest:
    """One XOR hash per bucket over every (key, version) held."""

    def __init__(self) -> None:
        self.hashes = [0] * BUCKETS

    def replace(self, key: bytes, old: Optional[Version], new: Optional[Version]) -> None:
        bucket = bucket_of(key)
        value = self.hashes[bucket]
        if new is not None:
            value ^= entry_hash(key, new)
        if old is not None:
            value ^= entry_hash(key, old)
        self.hashes[bucket] = value

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
