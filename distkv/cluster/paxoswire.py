"""The peer frames of LINEARIZABLE's per-key consensus, sans-IO.

They ride on a peer connection like every frame of :mod:`distkv.cluster.wire`
(a 4-byte big-endian length, then a body whose first byte names its kind);
``version`` is ``ms:u64 counter:u32 node-len:u16 node`` and an entry is laid
out as in a ``T`` frame (see :mod:`distkv.cluster.consensus` for the rules)::

    P id:u64 ballot:version key-len:u32 key
                                  (prepare: promise ``ballot`` for ``key`` and
                                   answer what you hold of it)
    p id:u64 status:u8 seen:version floor:version count:u32 [entry]
                                  (status 0: promised, ``count`` 0 or 1 entry
                                   follows (none: the key is not held), and
                                   ``floor`` is the acceptor's flush floor
                                   (every entry below it was flushed); 1:
                                   refused, ``seen`` is the promise, version
                                   or flush floor that beat the ballot; 2: not
                                   ready (loading, or restarted too recently);
                                   promised, ``seen`` is the empty version if
                                   the entry is settled there, else a ballot
                                   promised above it (see
                                   :mod:`distkv.cluster.acceptor`); not ready,
                                   it is empty; ``floor`` is empty unless
                                   promised)
    V id:u64 count:u32 entry      (accept: store this entry, whose version is
                                   the ballot; ``count`` is 1; never a counter)
    v id:u64 status:u8 seen:version
                                  (accepted, once committed (0), refused (1)
                                   or not ready (2), as for ``p``)

Every field is checked: statuses, counts, versions and node ids, and no byte
is left over; a frame stays within :func:`distkv.cluster.wire.max_frame`
because a value does (the command that wrote it was within ``--max-request``).
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Optional, Tuple, Union

from distkv.cluster import wire
from distkv.store.entries import ZERO, Entry, is_counter
from distkv.store.hlc import Version

#: Answers' statuses.
OK = 0
REFUSED = 1
NOT_READY = 2
_STATUSES = (OK, REFUSED, NOT_READY)

_ID = struct.Struct(">Q")
_ID_STATUS = struct.Struct(">QB")
_COUNT = struct.Struct(">I")
KINDS = (b"P", b"p", b"V", b"v")


class Prepare(NamedTuple):
    """``P``: promise ``ballot`` for ``key``."""

    id: int
    key: bytes
    ballot: Version


class Promise(NamedTuple):
    """``p``: the answer to a prepare; ``entry`` the key's, when promised and held."""

    id: int
    status: int
    seen: Version
    entry: Optional[Entry]
    #: The acceptor's flush floor when it promised (ZERO otherwise).
    floor: Version = ZERO


class Accept(NamedTuple):
    """``V``: store ``entry`` (its version is the ballot) as ``key``'s."""

    id: int
    key: bytes
    entry: Entry


class Accepted(NamedTuple):
    """``v``: the answer to an accept."""

    id: int
    status: int
    seen: Version


Frame = Union[Prepare, Promise, Accept, Accepted]


def _entry_parts(key: bytes, entry: Entry) -> bytes:
    parts: List[bytes] = []
    wire._encode_entries([(key, entry)], parts)
    return b"".join(parts)


def encode_prepare(id_: int, key: bytes, ballot: Version) -> bytes:
    return wire._frame(b"P" + _ID.pack(id_) + wire._version(ballot)
                       + _COUNT.pack(len(key)) + key)


def encode_promise(id_: int, status: int, seen: Version = ZERO,
                   key: bytes = b"", entry: Optional[Entry] = None,
                   floor: Version = ZERO) -> bytes:
    body = [b"p", _ID_STATUS.pack(id_, status), wire._version(seen), wire._version(floor),
            _COUNT.pack(0 if entry is None else 1)]
    if entry is not None:
        body.append(_entry_parts(key, entry))
    return wire._frame(b"".join(body))


def encode_accept(id_: int, key: bytes, entry: Entry) -> bytes:
    if is_counter(entry):
        raise ValueError("a counter state is never proposed")
    return wire._frame(b"V" + _ID.pack(id_) + _COUNT.pack(1) + _entry_parts(key, entry))


def encode_accepted(id_: int, status: int, seen: Version = ZERO) -> bytes:
    return wire._frame(b"v" + _ID_STATUS.pack(id_, status) + wire._version(seen))


def _status(body: bytes) -> Tuple[int, int, Version, int]:
    id_, status = _ID_STATUS.unpack_from(body, 1)
    if status not in _STATUSES:
        raise wire.WireError("unknown status in consensus answer")
    seen, offset = wire._read_version(body, 1 + _ID_STATUS.size)
    if seen.ms > wire.MAX_SEQ:
        raise wire.WireError("malformed version in consensus answer")
    return id_, status, seen, offset


def decode(body: bytes) -> Frame:
    """One of this module's frames (``body[:1]`` in :data:`KINDS`); WireError if malformed."""
    kind = body[:1]
    if kind == b"P":
        (id_,) = _ID.unpack_from(body, 1)
        ballot, offset = wire._read_version(body, 1 + _ID.size)
        if not ballot.node or ballot.ms > wire.MAX_SEQ:
            raise wire.WireError("malformed ballot in prepare")
        (key_len,) = _COUNT.unpack_from(body, offset)
        offset += _COUNT.size
        if offset + key_len != len(body):
            raise wire.WireError("malformed key in prepare")
        return Prepare(id_, body[offset:], ballot)
    if kind == b"p":
        id_, status, seen, offset = _status(body)
        floor, offset = wire._read_version(body, offset)
        if floor.ms > wire.MAX_SEQ or (status != OK and floor != ZERO):
            raise wire.WireError("malformed flush floor in promise")
        (count,) = _COUNT.unpack_from(body, offset)
        if count > 1 or (count and status != OK):
            raise wire.WireError("malformed entry count in promise")
        entries = wire._decode_entries(body, offset + _COUNT.size, count, "promise")
        return Promise(id_, status, seen, entries[0][1] if entries else None, floor)
    if kind == b"V":
        (id_,) = _ID.unpack_from(body, 1)
        (count,) = _COUNT.unpack_from(body, 1 + _ID.size)
        if count != 1:
            raise wire.WireError("malformed entry count in accept")
        ((key, entry),) = wire._decode_entries(body, 1 + _ID.size + _COUNT.size, 1, "accept")
        if is_counter(entry):
            raise wire.WireError("a counter state in an accept")
        return Accept(id_, key, entry)
    if kind == b"v":
        id_, status, seen, offset = _status(body)
        if offset != len(body):
            raise wire.WireError("trailing bytes in accepted")
        return Accepted(id_, status, seen)
    raise wire.WireError(f"unknown frame kind {kind!r}")
