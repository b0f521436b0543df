"""The outbox: local writes the peers have not yet acknowledged, one log shared by every link.

Every local write carries the node's local write sequence number (the same
for every peer, and persisted with the write, so an outbox can be rebuilt
from disk after a restart). A write is encoded and appended once, to the
node's :class:`OutboxLog`; each link's :class:`Outbox` is a cursor into it:
the position of the next write to send and of the oldest not acknowledged.
An item is dropped when every link has had it acknowledged (or was cut over).
A link that drops and comes back sends again from its first unacknowledged
write (the peer merges duplicates harmlessly). A key written again before a
peer acknowledged it keeps only its newest entry: under last-writer-wins the
older one can never matter, and a hot key cannot fill an outbox. A link's
outbox is what it still has to send or have acknowledged: its bytes are its
entries' (:func:`entry_size`, whose overhead stands for a frame's head; the
frame itself is shared by every link and counted by none), the same whether
the link is up or down. When they pass the bound (``--outbox-bytes``) that
link alone is cut over: its cursor jumps to the end, releasing its hold, and
it records that the peer needs a full resync (anti-entropy). At most
``window`` bytes are sent ahead of a link's acknowledgements, so a slow peer
holds writes here, where they are counted, not in socket buffers.

The writes of one transaction are one item, under the sequence number of
their last write (:meth:`OutboxLog.add_group`): sent (as one ``T`` frame),
acknowledged and dropped together. A later write to one of its keys does
not replace the item (the transaction must still reach the peer whole); it
queues behind it, and wins there by its newer version. Writes one link alone
owes (those a restart reads back from the data dir, see
:meth:`Outbox.add_backlog`) wait in that link's own backlog, sent first.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from distkv.cluster import batchwire, wire
from distkv.store.entries import Entry

#: The writes of one transaction, as one outbox item.
Group = Tuple[Tuple[bytes, Entry], ...]
#: What :meth:`Outbox.take` hands out: ``(seq, key, entry)`` for a single
#: write, ``(seq, seq, group)`` for a transaction (its key is an int).
Item = Tuple[int, Union[bytes, int], Any]

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

    @property
    def end(self) -> int:
        return self._base + len(self._seqs)

    def __len__(self) -> int:
        """The items held (superseded ones included)."""
        return len(self._seqs)

    def cursor(self, window: int = 1 << 20) -> Outbox:
        return Outbox(self.max_bytes, window, self)

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
            self._supersede(old)
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
        if len(self._latest) > 2 * len(seqs) + TRIM_AT_LEAST:
            self._rekey()

    def add_group(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue the writes of one transaction, the last numbered ``seq``, for
        every link: they go, and are dropped, only together."""
        self.last_seq = seq
        if not self.cursors:
            return
        group = tuple(writes)
        size = sum([entry_size(key, entry) for key, entry in group])
        self._groups[self.end] = len(group) - 1
        self._seqs.append(seq)
        self._keys.append(seq)
        self._payloads.append(group)
        self._frames.append(wire.encode_transaction(seq, group))
        self._sizes.append(size)
        self.appended += 1
        self.live_bytes += size
        if self.live_bytes - self._floor > self.max_bytes:
            self._cut_over()

    def _supersede(self, at: int) -> None:
        i = at - self._base
        size = self._sizes[i]
        self._sizes[i] = 0
        self._frames[i] = None
        self._dead += 1
        self.live_bytes -= size
        for cursor in self.cursors:
            if cursor._ack > at:  # released it already: its bytes stay as they were
                cursor._released -= size
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
        self._floor = min([c._released - c._own for c in self.cursors], default=self.live_bytes)

    def released(self) -> None:
        """A cursor moved on: drop what every cursor is past."""
        self.refloor()
        low = min([cursor._ack for cursor in self.cursors], default=self.end)
        count = low - self._base
        if count <= 0:
            return
        if count == len(self._seqs):
            for held in (self._seqs, self._keys, self._payloads, self._frames, self._sizes):
                held.clear()
            self._latest.clear()
            self._groups.clear()
            self._dead = 0
            self._base = low
        elif count >= TRIM_AT_LEAST and 2 * count >= len(self._seqs):
            self._dead -= self._frames[:count].count(None)
            for held in (self._seqs, self._keys, self._payloads, self._frames, self._sizes):
                del held[:count]
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


class Outbox:
    """One link's cursor into an :class:`OutboxLog`: what its peer has not
    acknowledged. Made alone (``log`` None), it has a log of its own."""

    def __init__(self, max_bytes: int, window: int = 1 << 20,
                 log: Optional[OutboxLog] = None) -> None:
        self.window = window
        self.acked = 0
        self.needs_resync = False
        self.overflows = 0
        #: Told when the bound cut this link over (whether a resync was pending).
        self.on_overflow: Callable[[bool], None] = lambda already: None
        self._connected = False
        # This link's own writes, sent first: (seq, writes, size, frame).
        self._backlog: Deque[Tuple[int, Group, int, bytes]] = deque()
        self._backlog_sent = 0
        self._own = 0
        self._own_last = 0
        # (position after the last write of a batch sent, its bytes), in order.
        self._fly: Deque[Tuple[int, int]] = deque()
        self._flying = 0
        self._join(log if log is not None else OutboxLog(max_bytes))

    def _join(self, log: OutboxLog) -> None:
        self._log = log
        self._ack = self._send = log.end
        self._released = log.live_bytes
        self._joined = log.appended
        log.cursors.append(self)
        log.refloor()

    @property
    def max_bytes(self) -> int:
        return self._log.max_bytes

    @property
    def last_seq(self) -> int:
        log = self._log
        shared = log.last_seq if log.appended > self._joined else 0
        return shared if shared > self._own_last else self._own_last

    def __len__(self) -> int:
        """The writes pending (a transaction counts each of its writes)."""
        log = self._log
        base, end = log._base, log.end
        count = end - self._ack - log._frames[self._ack - base:].count(None)
        count += sum([n for at, n in log._groups.items() if at >= self._ack])
        return count + sum([len(item[1]) for item in self._backlog])

    def add(self, seq: int, key: bytes, entry: Entry, frame: Optional[bytes] = None,
            size: Optional[int] = None) -> None:
        """Queue a write for every link of this outbox's log (see :meth:`OutboxLog.add`)."""
        self._log.add(seq, key, entry, frame, size)

    def add_group(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue a transaction for every link of this outbox's log."""
        self._log.add_group(seq, writes)

    def add_backlog(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue writes for this link alone, as one transaction numbered
        ``seq``, to go before the log's: the writes a restart found its peer
        had not acknowledged, older than any the log holds for it."""
        group = tuple(writes)
        size = sum([entry_size(key, entry) for key, entry in group])
        self._backlog.append((seq, group, size, wire.encode_transaction(seq, group)))
        self._own += size
        if seq > self._own_last:
            self._own_last = seq
        log = self._log
        log.refloor()
        if self.bytes > log.max_bytes:
            already = self.needs_resync
            self.overflow()
            self.on_overflow(already)

    def overflow(self) -> None:
        """Drop everything pending for this link and ask for a full resync instead."""
        log = self._log
        self._ack = self._send = log.end
        self._released = log.live_bytes
        self._drop_backlog()
        self._fly.clear()
        self._flying = 0
        self.needs_resync = True
        self.overflows += 1
        log.released()

    def _drop_backlog(self) -> None:
        self._backlog.clear()
        self._backlog_sent = 0
        self._own = 0

    def detach(self) -> None:
        """The link is gone (or is this node itself): hold nothing in the log
        any more, and get no more writes."""
        log = self._log
        if self in log.cursors:
            log.cursors.remove(self)
            log.released()
        self._drop_backlog()
        self._fly.clear()
        self._flying = 0
        self._join(OutboxLog(log.max_bytes))

    def ack(self, seq: int) -> None:
        """The peer applied everything up to ``seq``."""
        if seq <= self.acked or seq > self.last_seq:
            return  # old news, or a number we never sent
        self.acked = seq
        backlog = self._backlog
        while backlog and backlog[0][0] <= seq:
            size = backlog.popleft()[2]
            self._own -= size
            if self._backlog_sent:
                self._backlog_sent -= 1
                self._flying -= size
        log = self._log
        base = log._base
        start = self._ack
        seqs = log._seqs
        if start < log.end and seqs[start - base] <= seq:
            stop = bisect_right(seqs, seq, start - base) + base
            self._released += sum(log._sizes[start - base:stop - base])
            self._ack = stop
            if self._send < stop:
                self._send = stop
            fly = self._fly
            while fly and fly[0][0] <= stop:
                self._flying -= fly.popleft()[1]
        log.released()

    def rewind(self) -> None:
        """A new connection: everything unacknowledged must be sent again."""
        self.disconnect()
        self._connected = True

    def disconnect(self) -> None:
        """The connection is gone; keep what is pending for the next one."""
        self._connected = False
        self._send = self._ack
        self._backlog_sent = 0
        self._fly.clear()
        self._flying = 0

    def take(self) -> List[Item]:
        """The next writes to send, as many as the window allows: ``(seq,
        key, entry)``, or ``(seq, seq, writes)`` for a transaction."""
        backlog, start, stop = self._advance()
        log = self._log
        base = log._base
        out: List[Item] = [(seq, seq, group) for seq, group, _, _ in backlog]
        for i in range(start - base, stop - base):
            if log._frames[i] is not None:
                out.append((log._seqs[i], log._keys[i], log._payloads[i]))
        return out

    def take_frames(self) -> List[bytes]:
        """What :meth:`take` gives, as the frames that carry it: each write's
        frame as the log holds it (one object for every link), runs of
        writes joined into ``B`` frames (see :mod:`distkv.cluster.batchwire`)."""
        backlog, start, stop = self._advance()
        log = self._log
        base = log._base
        frames = log._frames[start - base:stop - base]
        if log._dead and None in frames:
            frames = [frame for frame in frames if frame is not None]
        if backlog:
            frames[:0] = [item[3] for item in backlog]
        return batchwire.batched(frames, not backlog and not log._groups)  # type: ignore[arg-type]

    def _advance(self) -> Tuple[List[Tuple[int, Group, int, bytes]], int, int]:
        """Mark the next items the window allows as sent: the backlog's, then
        the log's positions ``start`` to ``stop``."""
        start = self._send
        if not self._connected:
            return [], start, start
        room = self.window - self._flying
        backlog: List[Tuple[int, Group, int, bytes]] = []
        while self._backlog_sent < len(self._backlog) and room > 0:
            item = self._backlog[self._backlog_sent]
            backlog.append(item)
            self._backlog_sent += 1
            self._flying += item[2]
            room -= item[2]
        log = self._log
        base = log._base
        stop = log.end
        if start >= stop or room <= 0:
            return backlog, start, start
        sizes = log._sizes
        taken = sum(sizes[start - base:])
        if taken > room:  # a slow peer: up to the window
            taken, stop = 0, start
            while taken < room and stop < log.end:
                taken += sizes[stop - base]
                stop += 1
        self._send = stop
        if taken:
            last = stop
            frames = log._frames
            while frames[last - 1 - base] is None:  # acknowledged as the last live one
                last -= 1
            self._fly.append((last, taken))
            self._flying += taken
        return backlog, start, stop

    def owed(self) -> Iterator[Tuple[bytes, int]]:
        """``(key, seq)`` of every write still waiting for the peer's ack."""
        for seq, group, _, _ in self._backlog:
            for written, _ in group:
                yield written, seq
        log = self._log
        base = log._base
        for i in range(self._ack - base, len(log._seqs)):
            if log._frames[i] is None:
                continue
            key = log._keys[i]
            if isinstance(key, int):
                for written, _ in log._payloads[i]:
                    yield written, key
            else:
                yield key, log._seqs[i]

    def oldest(self) -> Optional[Entry]:
        """The pending write the peer has waited for longest, if any."""
        if self._backlog:
            return self._backlog[0][1][0][1]
        log = self._log
        base = log._base
        for i in range(self._ack - base, len(log._seqs)):
            if log._frames[i] is not None:
                payload = log._payloads[i]
                return payload[0][1] if isinstance(log._keys[i], int) else payload  # type: ignore[no-any-return]
        return None

    def drained(self) -> bool:
        """True when the peer has acknowledged every write given to us."""
        return self.bytes == 0

    @property
    def bytes(self) -> int:  # last: the name would shadow the type in the class body
        """What this link's outbox holds: its pending entries' sizes."""
        return self._log.live_bytes - self._released + self._own
