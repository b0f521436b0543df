"""The per-peer outbox: writes a peer has not yet acknowledged, bounded by bytes.

Every local write carries the node's local write sequence number (the same
for every peer, and persisted with the write, so an outbox can be rebuilt
from disk after a restart). Writes stay until the peer acknowledges a sequence number at or above theirs, so a
link that drops and comes back sends again from the first unacknowledged write
(the peer merges duplicates harmlessly). A key written again before the peer
acknowledged it keeps only its newest entry: under last-writer-wins the older
one can never matter, and a hot key cannot fill the outbox. When the pending
bytes pass the bound the outbox empties itself and records that the peer needs
a full resync (anti-entropy), rather than growing without limit. At most
``window`` bytes are sent ahead of the acknowledgements, so a slow peer holds
writes here, where they are counted, not in socket buffers.

The writes of one transaction are one item, under the sequence number of
their last write (:meth:`Outbox.add_group`): taken, sent (as one ``T``
frame), acknowledged and dropped together. A later write to one of its keys
does not replace the item (the transaction must still reach the peer whole);
it queues behind it, and wins there by its newer version.

A write may come with its ``W`` frame already encoded (replication encodes
each write once for every link): a connected outbox keeps it and sends it as
is; one that is down keeps the entry alone, and encodes it when it is sent.
The frame is one object shared by every link, so no outbox counts it: an
outbox's bytes are its entries' (:func:`entry_size`, whose overhead stands
for a frame's head), the same whether the link is up or down, and the bound
(``--outbox-bytes``) and STATUS's ``outbox_bytes`` mean the same either way.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Deque, Iterator, List, Optional, Sequence, Tuple, Union

from distkv.cluster import batchwire, wire
from distkv.store.entries import Entry

#: The writes of one transaction, as one outbox item.
Group = Tuple[Tuple[bytes, Entry], ...]
#: What :meth:`Outbox.take` hands out: ``(seq, key, entry)`` for a single
#: write, ``(seq, seq, group)`` for a transaction (its key is an int).
Item = Tuple[int, Union[bytes, int], Any]

#: Rough per-entry overhead (frame header, version, bookkeeping) in bytes.
ENTRY_OVERHEAD = 64


def entry_size(key: bytes, entry: Entry) -> int:
    value = entry[0]
    return ENTRY_OVERHEAD + len(key) + (0 if value is None else len(value))


class Outbox:
    """Unacknowledged writes for one peer, in sequence order."""

    def __init__(self, max_bytes: int, window: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.window = window
        # key (or, for a transaction, its seq) -> (seq, entry or group, size,
        # the write's encoded frame or None)
        self._pending: OrderedDict[
            Union[bytes, int], Tuple[int, Any, int, Optional[bytes]]
        ] = OrderedDict()
        self._unsent: Deque[Tuple[int, Union[bytes, int]]] = deque()
        self._in_flight: Deque[Tuple[int, int]] = deque()
        self._in_flight_bytes = 0
        self.bytes = 0
        self.last_seq = 0
        self.acked = 0
        self.needs_resync = False
        self.overflows = 0
        self._connected = False
        self._sent_seq = 0
        #: Writes pending in transactions beyond one per transaction.
        self._grouped = 0

    def __len__(self) -> int:
        """The writes pending (a transaction counts each of its writes)."""
        return len(self._pending) + self._grouped

    def add(self, seq: int, key: bytes, entry: Entry, frame: Optional[bytes] = None,
            size: Optional[int] = None) -> None:
        """Queue local write number ``seq`` (numbers only ever grow);
        ``frame``: its ``W`` frame, encoded once for every link. It is kept
        only while connected (a link that is down holds the entry alone, and
        its writes are encoded again when they are sent), and never counted:
        every link shares it. ``size``: its :func:`entry_size`, if known."""
        self.last_seq = seq
        if size is None:
            size = entry_size(key, entry)
        pending = self._pending
        old = pending.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        if self._connected:
            pending[key] = (seq, entry, size, frame)
            unsent = self._unsent
            unsent.append((seq, key))
            if len(unsent) > 2 * len(pending) + 1024:
                self._compact()
        else:
            pending[key] = (seq, entry, size, None)
        self.bytes += size
        if self.bytes > self.max_bytes:
            self.overflow()

    def add_group(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue the writes of one transaction, the last numbered ``seq``:
        they go, and are dropped, only together."""
        self.last_seq = seq
        size = sum([entry_size(key, entry) for key, entry in writes])
        self._pending[seq] = (seq, tuple(writes), size, None)
        self._grouped += len(writes) - 1
        self.bytes += size
        if self._connected:
            self._unsent.append((seq, seq))
        if self.bytes > self.max_bytes:
            self.overflow()

    def overflow(self) -> None:
        """Drop everything pending and ask for a full resync instead."""
        self._pending.clear()
        self._unsent.clear()
        self.bytes = 0
        self._grouped = 0
        self.needs_resync = True
        self.overflows += 1

    def ack(self, seq: int) -> None:
        """The peer applied everything up to ``seq``."""
        if seq <= self.acked or seq > self.last_seq:
            return  # old news, or a number we never sent
        self.acked = seq
        pending = self._pending
        pop = pending.popitem
        freed = 0
        while pending:
            key, item = pop(False)  # the oldest
            if item[0] > seq:  # not acknowledged: back in front
                pending[key] = item
                pending.move_to_end(key, False)
                break
            freed += item[2]
            if type(key) is int:
                self._grouped -= len(item[1]) - 1
        self.bytes -= freed
        in_flight = self._in_flight
        flying = self._in_flight_bytes
        while in_flight and in_flight[0][0] <= seq:
            flying -= in_flight.popleft()[1]
        self._in_flight_bytes = flying

    def _compact(self) -> None:
        # Superseded writes of a hot key pile up in the unsent queue while the
        # window is full; rebuild it from what is really pending and unsent.
        sent = self._sent_seq
        self._unsent = deque(
            (item[0], key) for key, item in self._pending.items() if item[0] > sent
        )

    def rewind(self) -> None:
        """A new connection: everything unacknowledged must be sent again."""
        self._connected = True
        self._sent_seq = 0
        self._compact()
        self._in_flight.clear()
        self._in_flight_bytes = 0

    def disconnect(self) -> None:
        """The connection is gone; keep what is pending for the next one."""
        self._connected = False
        self._unsent.clear()
        self._in_flight.clear()
        self._in_flight_bytes = 0

    def take(self) -> List[Item]:
        """The next writes to send, as many as the window allows: ``(seq,
        key, entry)``, or ``(seq, seq, writes)`` for a transaction."""
        return [(seq, key, item[1]) for seq, key, item in self._taken()]

    def take_frames(self) -> List[bytes]:
        """What :meth:`take` gives, as the frames that carry it: each write's
        own frame when it came with one (see :meth:`add`), else encoded now;
        runs of writes joined into ``B`` frames (see :mod:`distkv.cluster.batchwire`)."""
        out = []
        only_writes = True
        for seq, key, item in self._taken():
            frame = item[3]
            if frame is None:
                if isinstance(key, int):
                    frame = wire.encode_transaction(seq, item[1])
                    only_writes = False
                else:
                    frame = wire.encode_write(seq, key, item[1])
            out.append(frame)
        return batchwire.batched(out, only_writes)

    def _taken(self) -> List[Tuple[int, Union[bytes, int], Tuple[int, Any, int, Optional[bytes]]]]:
        """Take the next pending items the window allows, marking them in flight."""
        out = []
        unsent = self._unsent
        take = unsent.popleft
        get = self._pending.get
        fly = self._in_flight.append
        window = self.window
        flying = self._in_flight_bytes
        sent = self._sent_seq
        while unsent and flying < window:
            seq, key = take()
            item = get(key)
            if item is None or item[0] != seq:
                continue  # acknowledged, superseded or dropped since queued
            out.append((seq, key, item))
            sent = seq
            fly((seq, item[2]))
            flying += item[2]
        self._sent_seq = sent
        self._in_flight_bytes = flying
        return out

    def owed(self) -> Iterator[Tuple[bytes, int]]:
        """``(key, seq)`` of every write still waiting for the peer's ack."""
        for key, item in self._pending.items():
            if isinstance(key, int):
                for written, _ in item[1]:
                    yield written, item[0]
            else:
                yield key, item[0]

    def oldest(self) -> Optional[Entry]:
        """The pending write the peer has waited for longest, if any."""
        if not self._pending:
            return None
        key, item = next(iter(self._pending.items()))
        return item[1][0][1] if isinstance(key, int) else item[1]  # type: ignore[no-any-return]

    def drained(self) -> bool:
        """True when the peer has acknowledged every write given to us."""
        return not self._pending
