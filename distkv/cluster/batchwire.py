"""The ``B`` frame: many replicated writes in one frame, read in one pass, sans-IO.

A link sends the writes it pushes in one reactor turn as whole ``W`` frames,
each encoded once for every link (see :mod:`distkv.cluster.replication`);
since protocol version 6 it joins runs of them into one frame::

    B (length:u32 W-body)+        the W frames as they are, length prefix
                                  and all, in sequence order; applied one by
                                  one, in order, and acknowledged as the
                                  last one's ``seq``

A batch holds at least one write and at most :data:`BATCH_BYTES` of body,
which is below :func:`distkv.cluster.wire.max_frame` for every option value,
so a peer with the same options accepts every batch; a write larger than
that travels alone as its ``W`` frame. A transaction's ``T`` frame is never
in a batch: it ends one, and the next write starts another. The receiving
side reads a batch in one loop, without a frame object per write, checking
each write as :func:`distkv.cluster.wire.decode_body` checks a ``W`` frame:
sequence numbers, clocks and expiries in range, node ids well formed, flags
known, a tombstone without value, a counter's state its version's, and no
byte left over.
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Sequence, Tuple

from distkv.cluster import wire
from distkv.store.entries import Entry, expiring_entry

#: The most body bytes one batch holds: within every node's frame limit.
BATCH_BYTES = wire.KEY_LIST_BYTES

_WRITE_FRAME = wire._WRITE_FRAME
_HEAD = _WRITE_FRAME.size
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class Batch(NamedTuple):
    """The writes of a ``B`` frame, in order; ``seq``: the last one's."""

    seq: int
    writes: List[Tuple[bytes, Entry]]


def batched(frames: Sequence[bytes], only_writes: bool = False) -> List[bytes]:
    """``frames`` (``W`` and ``T`` frames, in order) with each run of ``W``
    frames joined into ``B`` frames of at most :data:`BATCH_BYTES` body; a
    run of one, and a frame too large to share one, stays as it is.
    ``only_writes``: the caller knows there is no ``T`` frame among them."""
    if len(frames) < 2:
        return list(frames)
    if only_writes:
        size = 1 + sum(map(len, frames))
        if size <= BATCH_BYTES:  # the common case: one turn's writes, one frame
            return [b"".join([_U32.pack(size), b"B", *frames])]
    out: List[bytes] = []
    run: List[bytes] = []
    size = 1
    for frame in frames:
        if frame[4:5] != b"W" or size + len(frame) > BATCH_BYTES:
            _flush(run, size, out)
            run, size = [], 1
            if frame[4:5] != b"W" or 1 + len(frame) > BATCH_BYTES:
                out.append(frame)
                continue
        run.append(frame)
        size += len(frame)
    _flush(run, size, out)
    return out


def _flush(run: List[bytes], size: int, out: List[bytes]) -> None:
    if len(run) == 1:
        out.append(run[0])
    elif run:
        out.append(b"".join([_U32.pack(size), b"B", *run]))


def decode(body: bytes) -> Batch:
    """The writes of a ``B`` frame's ``body``; :class:`~distkv.cluster.wire.WireError`
    unless every one of them is a well-formed ``W`` frame and nothing is left over."""
    head = _WRITE_FRAME.unpack_from
    node_of = wire._node
    max_seq = wire.MAX_SEQ
    plain, tombstone, expiring, counter_flag = 0, wire._TOMBSTONE, wire._EXPIRES, wire._COUNTER
    writes: List[Tuple[bytes, Entry]] = []
    append = writes.append
    end = len(body)
    offset = 1
    seq = 0
    try:
        while offset < end:
            length, kind, seq, ms, counter, flags, node_len = head(body, offset)
            stop = offset + 4 + length
            at = offset + _HEAD
            if kind != b"W" or stop > end or at + node_len + 4 > stop:
                raise wire.WireError(f"not a whole write frame at byte {offset} of a batch")
            if seq > max_seq or ms > max_seq:
                raise wire.WireError("sequence number or clock out of range in write frame")
            node = node_of(body[at : at + node_len])
            at += node_len
            expires = 0
            if flags == expiring:
                (expires,) = _U64.unpack_from(body, at)
                at += 8
                if not 0 < expires <= max_seq:
                    raise wire.WireError("expiry out of range in write frame")
            (key_len,) = _U32.unpack_from(body, at)
            at += 4
            if at + key_len > stop:
                raise wire.WireError("truncated key in write frame")
            key = body[at : at + key_len]
            at += key_len
            offset = stop
            if flags == plain:
                append((key, (body[at:stop], ms, counter, node)))
            elif flags == tombstone:
                if at != stop:
                    raise wire.WireError("malformed flags in write frame")
                append((key, (None, ms, counter, node)))
            elif flags == expiring:
                append((key, expiring_entry(body[at:stop], expires, ms, counter, node)))
            elif flags == counter_flag:
                append((key, wire._counter(body[at:stop], ms, counter, node)))
            else:
                raise wire.WireError("malformed flags in write frame")
    except (struct.error, UnicodeDecodeError) as e:
        raise wire.WireError(f"malformed frame: {e}") from e
    if not writes:
        raise wire.WireError("an empty batch frame")
    return Batch(seq, writes)

