"""The outbox: local writes the peers have not yet acknowledged, one log shared by every link.

Every local write carries the node's local write sequence number (the same for
every peer, and persisted with the write, so an outbox can be rebuilt from
disk after a restart). A write is encoded and appended once, to the node's
:class:`~distkv.cluster.outboxlog.OutboxLog`; each link's :class:`Outbox` is a
cursor into it: the position of the next write to send and of the oldest not
acknowledged. An item is dropped when every link has had it acknowledged (or
was cut over). A link that drops and comes back sends again from its first
unacknowledged write (the peer merges duplicates harmlessly). A key written
again before a peer acknowledged it keeps only its newest entry: under last-
writer-wins the older one can never matter, and a hot key cannot fill an
outbox. A link's outbox is what it still has to send or have acknowledged: its
bytes are its entries' (:func:`~distkv.cluster.outboxlog.entry_size`, whose
overhead stands for a frame's head; the frame itself is shared by every link
and counted by none), the same whether the link is up or down. When they pass
the bound (``--outbox-bytes``) that link alone is cut over: its cursor jumps
to the end, releasing its hold, and it records that the peer needs a full
resync (anti-entropy). At most ``window`` bytes are sent ahead of a link's
acknowledgements, so a slow peer holds writes here, where they are counted,
not in socket buffers.

The writes of one transaction are one item, under the sequence number of their
last write (:meth:`~distkv.cluster.outboxlog.OutboxLog.add_group`): sent (as
one ``T`` frame), acknowledged and dropped together. A later write to one of
its keys does not replace the item (the transaction must still reach the peer
whole); it queues behind it, and wins there by its newer version. Writes one
link alone owes (those a restart reads back from the data dir, see
:meth:`Outbox.add_backlog`) wait in that link's own backlog, sent first.

A peer acknowledges the last write it applied, and applies a link's writes in
order; so an acknowledgement of write ``n`` says it holds every write up to
``n`` that reached it over the link. What a level or WAIT may count is
:meth:`Outbox.vouched`, which leaves out the writes that may not have: those
before the link joined a log that had writes, those an overflow cut over, every
one while the peer is a new incarnation (it may hold nothing: see
:meth:`Outbox.lost`), all until a round that began after them completes (see
:meth:`Outbox.resynced`); and a write superseded before the peer acknowledged
it: one not sent yet until the peer acknowledges the write that superseded it
(a hole, see :meth:`Outbox.superseded`), and one on the wire when its
connection drops (it is not sent again, only its successor) until a round
(it counts as a cut).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from distkv.cluster import batchwire, wire
from distkv.cluster.outboxlog import OutboxLog, entry_size
from distkv.store.entries import Entry

#: The writes of one transaction, as one outbox item.
Group = Tuple[Tuple[bytes, Entry], ...]
#: What :meth:`Outbox.take` hands out: ``(seq, key, entry)`` for a single
#: write, ``(seq, seq, group)`` for a transaction (its key is an int).
Item = Tuple[int, Union[bytes, int], Any]


class Outbox:
    """One link's cursor into an :class:`~distkv.cluster.outboxlog.OutboxLog`: what its peer has not
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
        # Writes from _cut_low on may not have reached the peer: only a round
        # that began after the cut vouches for them (0: no cut). ``cuts``
        # counts the cuts, so that a round can tell whether one came after
        # it began.
        self._cut_low = 0
        self.cuts = 0
        # (low, high): write ``low`` was superseded, unsent, by ``high``
        # (through a chain of such writes of its key); acknowledgements vouch
        # for it once one reaches ``high``. Highs grow along the deque, and so
        # do lows; _hole_ends maps each hole's high to its low.
        self._holes: Deque[Tuple[int, int]] = deque()
        self._hole_ends: Dict[int, int] = {}
        # The newest write superseded while on the wire and not acknowledged
        # (0: none): should the connection drop, the peer may lack it for good.
        self._dead_sent = 0
        # Every write up to this one reached the peer in a completed round.
        self._synced = 0
        self._join(log if log is not None else OutboxLog(max_bytes))

    def _join(self, log: OutboxLog) -> None:
        self._log = log
        self._ack = self._send = log._base + len(log._seqs)
        self._released = log.live_bytes
        self._joined = log.appended
        log.cursors.append(self)
        log.refloor()
        if log.last_seq:  # writes went to other links before this one
            self.skipped()

    def vouched(self) -> int:
        """Up to which sequence number the peer holds every write of ours
        (or a newer write of its key): what a consistency level or WAIT may
        count. The acknowledged number, less a cut's writes and the first
        hole's; or the last write a completed round covered, if higher."""
        acked = self.acked
        if self._cut_low and self._cut_low <= acked:
            acked = self._cut_low - 1
        holes = self._holes
        if holes and holes[0][0] <= acked:
            acked = holes[0][0] - 1
        synced = self._synced
        return synced if synced > acked else acked

    def superseded(self, seq: int, by: int, sent: bool) -> None:
        """Write ``seq``, not acknowledged yet, was superseded by write ``by``,
        the newest; ``sent``: it is on the wire. Unsent, the peer gets ``by``
        instead (or the write that supersedes that one in turn): a hole. On
        the wire, it arrives unless the connection drops (see :meth:`disconnect`)."""
        if sent:
            if seq > self._dead_sent:
                self._dead_sent = seq
            return
        holes, ends = self._holes, self._hole_ends
        low = ends.pop(seq, seq)  # a hole that ended at ``seq`` now ends at ``by``
        while holes and holes[-1][0] >= low:
            # A later hole, which this one covers; its end stays mapped, as
            # its key's chain may go on (and must keep its low).
            holes.pop()
        holes.append((low, by))
        ends[by] = low

    def held_back(self) -> bool:
        """Whether a hole keeps acknowledged writes from counting: a key
        rewritten faster than the link sends it (the link is a window
        behind) moves the hole's end on for ever; only a round ends it."""
        holes = self._holes
        return bool(holes) and holes[0][0] <= self.acked and self.vouched() < self.acked

    def _close_holes(self, through: int) -> None:
        holes, ends = self._holes, self._hole_ends
        while holes and holes[0][1] <= through:
            ends.pop(holes.popleft()[1], None)
        # The ends of covered holes linger: those at or below ``through``
        # are acknowledged (or were covered by a round), never superseded
        # unsent again, so never looked up.
        if not holes:
            ends.clear()
        elif len(ends) > 2 * len(holes) + 64:
            for high in [high for high in ends if high <= through]:
                del ends[high]

    def skipped(self) -> None:
        """Writes after the acknowledged ones were never given to this link,
        or were cut over: only a round that begins after this makes up for
        them (so one under way now cannot)."""
        if not self._cut_low:
            self._cut_low = self.acked + 1
        self.cuts += 1
        # Every hole begins past the acknowledged writes, so the cut covers
        # it, until a round that began after this: one that covers every
        # hole's end too. (Kept, they would pile up while a peer is away.)
        self._holes.clear()
        self._hole_ends.clear()

    def lost(self) -> None:
        """The peer is a new incarnation (or another node at its address),
        which may hold none of our writes: vouch for none until a round
        that begins after this completes."""
        self._cut_low = 1
        self._synced = 0
        self._holes.clear()
        self._hole_ends.clear()
        self._dead_sent = 0
        self.cuts += 1

    def resynced(self, cuts: int, through: int) -> bool:
        """A round that began when ``cuts`` was :attr:`cuts` and our last
        write was ``through`` completed: unless a cut came since (the peer
        may even be another incarnation now), the peer holds every write up
        to ``through`` (or a newer one of its key) and the link has given it
        every write after. True if that vouches for more writes."""
        if cuts != self.cuts:
            return False
        before = self.vouched()
        self._cut_low = 0
        if through > self._synced:
            self._synced = through
        self._close_holes(through)
        return self.vouched() > before

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
        base = log._base
        count = base + len(log._seqs) - self._ack - log._frames[self._ack - base:].count(None)
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
        self._ack = self._send = log._base + len(log._seqs)
        self._released = log.live_bytes
        self._drop_backlog()
        self._fly.clear()
        self._flying = 0
        self.needs_resync = True
        self.overflows += 1
        self.skipped()
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
        if seq <= self.acked:
            return  # old news
        log = self._log
        if seq > self._own_last and (log.appended == self._joined or seq > log.last_seq):
            return  # a number we never sent
        self.acked = seq
        if self._holes:
            self._close_holes(seq)
        if seq >= self._dead_sent:  # it arrived
            self._dead_sent = 0
        backlog = self._backlog
        moved = False
        while backlog and backlog[0][0] <= seq:
            size = backlog.popleft()[2]
            self._own -= size
            moved = True
            if self._backlog_sent:
                self._backlog_sent -= 1
                self._flying -= size
        base = log._base
        start = self._ack - base
        seqs = log._seqs
        if start < len(seqs) and seqs[start] <= seq:
            stop = bisect_right(seqs, seq, start)
            self._released += sum(log._sizes[start:stop])
            stop += base
            self._ack = stop
            if self._send < stop:
                self._send = stop
            fly = self._fly
            while fly and fly[0][0] <= stop:
                self._flying -= fly.popleft()[1]
            moved = True
        if moved:
            log.released()

    def rewind(self) -> None:
        """A new connection: everything unacknowledged must be sent again."""
        self.disconnect()
        self._connected = True

    def disconnect(self) -> None:
        """The connection is gone; keep what is pending for the next one. A
        write superseded while on the wire is not sent again (its successor
        is): the peer may lack it, as if cut over."""
        if self._dead_sent:
            self._dead_sent = 0
            self.skipped()
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
        log = self._log
        base = log._base
        if self._send - base == len(log._seqs) and self._backlog_sent == len(self._backlog):
            return []  # nothing new (an acknowledgement's pump, mostly)
        backlog, start, stop = self._advance()
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
        if self._backlog:
            while self._backlog_sent < len(self._backlog) and room > 0:
                item = self._backlog[self._backlog_sent]
                backlog.append(item)
                self._backlog_sent += 1
                self._flying += item[2]
                room -= item[2]
        log = self._log
        base = log._base
        sizes = log._sizes
        end = len(sizes)
        first = start - base
        if first >= end or room <= 0:
            return backlog, start, start
        taken = sum(sizes[first:])
        last = end
        if taken > room:  # a slow peer: up to the window
            taken, last = 0, first
            while taken < room and last < end:
                taken += sizes[last]
                last += 1
        self._send = stop = last + base
        if taken:
            frames = log._frames
            while frames[last - 1] is None:  # acknowledged as the last live one
                last -= 1
            self._fly.append((last + base, taken))
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
