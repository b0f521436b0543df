"""The node's outbox log: every local write some peer link still owes, once, sans-IO.

One :class:`OutboxLog` per node (held by :mod:`distkv.cluster.replication`)
holds each local write once, with its encoded frame, in sequence order; each
peer link's :class:`~distkv.cluster.outbox.Outbox` is a cursor into it (the
rules, bounds and guarantees are told there). The log appends, marks a write
superseded when its key is written again, cuts over a link that passed the
bound, and drops what every cursor is past; compacting superseded items
away when a hot key leaves many behind a lagging link.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from distkv.cluster import wire
from distkv.store.entries import Entry

if TYPE_CHECKING:
    from distkv.cluster.outbox import Outbox

#: Rough per-entry overhead (frame header, version, bookkeeping) in bytes.
ENTRY_OVERHEAD = 64
#: Items dropped from the log's front at once, at least (list deletes shift the rest).
TRIM_AT_LEAST = 1024


def entry_size(key: bytes, entry: Entry) -> int:
    value = entry[0]
    return ENTRY_OVERHEAD + len(key) + (0 if value is None else len(value))


class OutboxLog:
    """Every write some link still owes its peer, in sequence order, once.

    Positions are absolute (``_base`` is the first held); an item superseded
    by a newer write of its key keeps its place with no frame and no size.
    A link's bytes are ``live_bytes`` (every live item's size ever appended)
    less what it has released (the sizes it had acknowledged, or skipped
    when it joined or was cut over), plus its backlog's.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.cursors: List[Outbox] = []
        self._base = 0
        self._seqs: List[int] = []
        self._keys: List[Union[bytes, int]] = []
        self._payloads: List[Any] = []
        self._frames: List[Optional[bytes]] = []  # None: superseded
        self._sizes: List[int] = []  # 0: superseded
        self._latest: Dict[bytes, int] = {}  # key -> position of its newest write
        self._groups: Dict[int, int] = {}  # a transaction's position -> its writes less one
        self._dead = 0
        self.live_bytes = 0
        self.last_seq = 0
        self.appended = 0
        # min(released - backlog bytes) over the cursors: the largest outbox
        # is live_bytes less this, so one comparison per write checks them all.
        self._floor = 0

    def __len__(self) -> int:
        """The items held (superseded ones included)."""
        return len(self._seqs)

    def add(self, seq: int, key: bytes, entry: Entry, frame: Optional[bytes] = None,
            size: Optional[int] = None) -> None:
        """Queue local write number ``seq`` (numbers only ever grow) for every
        link; ``frame``: its ``W`` frame, if already encoded; ``size``: its
        :func:`entry_size`, if known."""
        self.last_seq = seq
        if not self.cursors:
            return
        if size is None:
            size = entry_size(key, entry)
        if frame is None:
            frame = wire.encode_write(seq, key, entry)
        latest = self._latest
        old = latest.get(key)
        if old is not None and old >= self._base:
            self._supersede(old, seq)
        seqs = self._seqs
        self._latest[key] = self._base + len(seqs)
        seqs.append(seq)
        self._keys.append(key)
        self._payloads.append(entry)
        self._frames.append(frame)
        self._sizes.append(size)
        self.appended += 1
        self.live_bytes += size
        if self.live_bytes - self._floor > self.max_bytes:
            self._cut_over()
        if len(self._latest) > 2 * len(self._seqs) + TRIM_AT_LEAST:  # _cut_over may replace it
            self._rekey()

    def add_group(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue the writes of one transaction, the last numbered ``seq``, for
        every link: they go, and are dropped, only together."""
        self.last_seq = seq
        if not self.cursors:
            return
        group = tuple(writes)
        size = sum([entry_size(key, entry) for key, entry in group])
        self._groups[self._base + len(self._seqs)] = len(group) - 1
        self._seqs.append(seq)
        self._keys.append(seq)
        self._payloads.append(group)
        self._frames.append(wire.encode_transaction(seq, group))
        self._sizes.append(size)
        self.appended += 1
        self.live_bytes += size
        if self.live_bytes - self._floor > self.max_bytes:
            self._cut_over()

    def _supersede(self, at: int, by: int) -> None:
        i = at - self._base
        size = self._sizes[i]
        self._sizes[i] = 0
        self._frames[i] = None
        self._payloads[i] = None  # its value is owed to no link: not kept alive
        self._dead += 1
        self.live_bytes -= size
        for cursor in self.cursors:
            if cursor._ack > at:  # released it already: its bytes stay as they were
                cursor._released -= size
            else:  # not acknowledged: the peer may get write ``by`` only
                cursor.superseded(self._seqs[i], by, cursor._send > at)
        self.refloor()
        if self._dead > len(self._seqs) - self._dead + TRIM_AT_LEAST:
            self._compact()

    def _cut_over(self) -> None:
        for cursor in list(self.cursors):
            if cursor.bytes > self.max_bytes:
                already = cursor.needs_resync
                cursor.overflow()
                cursor.on_overflow(already)

    def refloor(self) -> None:
        floor = self.live_bytes  # no cursor holds more than every live byte
        for cursor in self.cursors:
            held = cursor._released - cursor._own
            if held < floor:
                floor = held
        self._floor = floor

    def released(self) -> None:
        """A cursor moved on: drop what every cursor is past."""
        base = self._base
        low = end = base + len(self._seqs)
        floor = self.live_bytes
        for cursor in self.cursors:
            if cursor._ack < low:
                low = cursor._ack
            held = cursor._released - cursor._own
            if held < floor:
                floor = held
        self._floor = floor
        count = low - base
        if count <= 0:
            return
        if low == end:
            self._seqs, self._keys, self._payloads, self._frames, self._sizes = [], [], [], [], []
            self._latest.clear()
            if self._groups:
                self._groups.clear()
            self._dead = 0
            self._base = low
        elif count >= TRIM_AT_LEAST and 2 * count >= len(self._seqs):
            self._dead -= self._frames[:count].count(None)
            for held_list in (self._seqs, self._keys, self._payloads, self._frames, self._sizes):
                del held_list[:count]
            self._groups = {at: n for at, n in self._groups.items() if at >= low}
            self._base = low

    def _rekey(self) -> None:
        # Keys whose writes were dropped linger in _latest: keep it near the log's size.
        base, frames = self._base, self._frames
        self._latest = {key: base + i for i, key in enumerate(self._keys)
                        if type(key) is bytes and frames[i] is not None}

    def _compact(self) -> None:
        # A hot key rewritten while a link lags leaves superseded items
        # behind: rebuild the log from the live ones, moving every cursor.
        base, frames = self._base, self._frames
        moved: List[int] = []
        live: List[int] = []
        for i, frame in enumerate(frames):
            moved.append(base + len(live))
            if frame is not None:
                live.append(i)
        moved.append(base + len(live))
        self._seqs = [self._seqs[i] for i in live]
        self._keys = [self._keys[i] for i in live]
        self._payloads = [self._payloads[i] for i in live]
        self._frames = [frames[i] for i in live]
        self._sizes = [self._sizes[i] for i in live]
        self._groups = {moved[at - base]: n for at, n in self._groups.items()}
        self._dead = 0
        for cursor in self.cursors:
            cursor._ack = moved[cursor._ack - base]
            cursor._send = moved[cursor._send - base]
            cursor._fly = deque((moved[at - base], size) for at, size in cursor._fly)
        self._rekey()
