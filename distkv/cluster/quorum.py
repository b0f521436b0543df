"""Consistency levels: how many members a write or a read waits for.

A level is ``ONE`` (this node alone: the default), ``QUORUM`` (a majority of
the members, this node included) or ``ALL`` (every member); ``LINEARIZABLE``
is :mod:`distkv.cluster.consensus`'s. :class:`Coordinator` does
the waiting for the node that a client talks to, with no network code of its
own: the node hands it, through :class:`Cluster`, the member count, one way to
send to each other member, the peers' acknowledgements of this node's writes
and its store. A write at a level is answered once this node has committed
it and enough peers acknowledged its sequence number (they acknowledge only
what they applied and committed: see :mod:`distkv.cluster.outbox`). A read at
a level asks the other members for their entries of its keys (``R`` frames,
see :mod:`distkv.cluster.wire`), merges every answer into the local store
(last writer wins, so a merge is always safe) and lets the command run
locally once enough members, this node included, hold the newest entries:
members whose answers were older are sent the newest (the write-back) and
asked again, so that a value a read returned is on a quorum before the
read answers and no later read at that level can return an older one. The
members that answer after the read was answered are repaired too (in the
background). A flush at a level waits for an ``R``
with no keys sent after it (a barrier). What cannot be met within the timeout
ends with an error message: for a write, one that says its outcome is
indeterminate (it was applied here and may still reach the others).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Protocol, Sequence, Set, Tuple, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from distkv.cluster import wire
from distkv.disk.journal import Batch
from distkv.store.entries import Entry, Mark, is_counter, mark_of, version_of
from distkv.store.hlc import Version

log = Logger()

ONE = "ONE"
QUORUM = "QUORUM"
ALL = "ALL"
LINEARIZABLE = "LINEARIZABLE"
#: Every level's name.
LEVELS = (ONE, QUORUM, ALL, LINEARIZABLE)

#: ``done(error)``: None once the level was met, else the error message.
Done = Callable[[Optional[str]], None]
Send = Callable[[bytes], None]


def parse_level(text: Union[str, bytes]) -> Optional[str]:
    """The level named ``text`` in any case, or None for no level."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    name = text.upper()
    return name if name in LEVELS else None


def needed(level: str, members: int) -> int:
    """How many members, this node included, ``level`` waits for."""
    if level == ALL:
        return members
    if level == ONE:
        return 1
    return members // 2 + 1


class Cluster(Protocol):
    """What the coordinator needs from its node (see :class:`distkv.node.Node`)."""

    def quorum_members(self) -> int:
        """How many members exist, this node included (an address that never
        answered counts as one)."""

    def member_senders(self) -> Dict[str, Send]:
        """One live connection's ``send`` for each other member linked now."""

    def member_acks(self) -> List[int]:
        """For each other member linked, up to which sequence number it
        applied and committed our writes."""

    def local_entry(self, key: bytes) -> Optional[Entry]:
        """This node's entry of ``key``, tombstones included."""

    def merge(self, key: bytes, entry: Entry) -> object:
        """Merge an entry another member holds into the local store."""

    def restored(self) -> bool:
        """Whether this node holds every write a majority acknowledged before
        it started (False for a node back empty, until it synced from enough
        members): until then its own entries do not count for a read."""


class _Write:
    __slots__ = ("seq", "level", "need", "done", "local", "over")

    def __init__(self, seq: int, level: str, need: int, done: Done) -> None:
        self.seq = seq
        self.level = level
        self.need = need
        self.done = done
        self.local = False  # committed here
        self.over = False  # answered


class _Read:
    __slots__ = ("keys", "ids", "chunks", "level", "need", "size", "done", "write", "asked",
                 "parts", "versions", "answered", "finished", "ended", "stale", "rounds",
                 "what", "spare", "repair", "seen", "links", "fresh")

    def __init__(self, keys: Sequence[bytes], level: str, need: int, size: int,
                 done: Done, write: bool) -> None:
        self.keys = keys
        self.ids: List[int] = []
        self.chunks: List[Sequence[bytes]] = []
        self.level = level
        self.need = need
        self.size = size
        self.done = done
        #: A barrier after a flush: its failure is a write's (indeterminate).
        self.write = write
        self.asked: Dict[str, Send] = {}
        #: node -> how many of our requests it has answered whole
        self.parts: Dict[str, int] = {}
        #: node -> key -> the mark of the entry it holds (keys it lacks absent)
        self.versions: Dict[str, Dict[bytes, Mark]] = {}
        self.answered: Set[str] = set()
        self.finished = False
        #: Forgotten: no more answers are taken, no timeout applies.
        self.ended = False
        #: Members asked again after a repair, and how often each was.
        self.stale: List[str] = []
        self.rounds: Dict[str, int] = {}
        self.what = "read"
        #: Members linked but not asked yet.
        self.spare: Dict[str, Send] = {}
        #: Whether members that answered older entries are sent the newest
        #: (False: the versions are only looked at; see Coordinator.read).
        self.repair = True
        #: Where the newest version each member answered of each key is kept, if anywhere.
        self.seen: Optional[Dict[bytes, Version]] = None
        #: Too few members were linked when it began: it asks each one that
        #: links before its timeout (see Coordinator.linked).
        self.links = False
        #: Members whose answer held the newest entries when it was checked:
        #: nothing to repair on them as it ends.
        self.fresh: Set[str] = set()


#: How many times one read repairs and asks again a member whose answer was
#: stale before it counts it out (a member that cannot keep the entry, say
#: one below its flush floor, is not asked for ever).
WRITE_BACKS = 2


def holding(acks: List[int], seq: int) -> int:
    """How many members hold our write ``seq``, from ``acks``: up to which of
    our writes each member holds every one (see ``Outbox.vouched``)."""
    return sum([1 for ack in acks if ack >= seq])


class Coordinator:
    """Waits for the members a level needs; ``timeout`` in seconds."""

    def __init__(self, cluster: Cluster, clock: IReactorTime, timeout: float,
                 max_frame: int) -> None:
        self.cluster = cluster
        self.clock = clock
        self.timeout = timeout
        self.max_frame = max_frame
        self._writes: Dict[_Write, None] = {}
        self._reads: Dict[int, _Read] = {}
        #: Reads waiting for more members to link (see linked).
        self._link_waits: List[_Read] = []
        self._ids = itertools.count(1)
        #: Frames for each member's connection, sent at the end of the turn.
        self._out: Dict[Send, List[bytes]] = {}
        self._flush_call: Optional[IDelayedCall] = None
        self._turn = 0
        self._cached: Optional[Tuple[int, Dict[str, Send]]] = None
        #: The members of the view last looked up, in order.
        self._senders: Dict[str, Send] = {}
        self._order: List[str] = []
        #: When each write and read times out, and when each read asks its
        #: spare members, in the order they began (one timer for them all:
        #: they share one timeout, so the order is that of their ends).
        self._expiry: Deque[Tuple[float, Union[_Write, _Read]]] = deque()
        self._hedging: Deque[Tuple[float, _Read]] = deque()
        self._timer: Optional[IDelayedCall] = None
        self._timer_at = 0.0
        #: The node stopped: waits end at once (see cancel_all).
        self.stopped = False
        #: Seconds before a read asks the members it did not ask first.
        self.hedge = min(0.2, timeout / 4)
        #: Counters for INFO.
        self.writes_met = 0
        self.writes_indeterminate = 0
        self.reads_met = 0
        self.reads_failed = 0
        self.repairs = 0

    def pending(self) -> int:
        """Writes and reads waiting for members."""
        return len(self._writes) + sum(1 for read in self._reads.values() if not read.finished)

    # -- writes -----------------------------------------------------------------

    def write(self, seq: int, level: str, batch: Optional[Batch], done: Done,
              deadline: Optional[float] = None) -> None:
        """Call ``done`` once this node committed write ``seq`` (``batch``:
        the commit it waits for, if any) and ``level``'s members hold it;
        the timeout runs until ``deadline`` (by default, from now)."""
        size = self._view()[0]
        waiter = _Write(seq, level, needed(level, size), done)
        if self.stopped:
            done(indeterminate(1, waiter.need, size, level, 0.0))
            return
        self._writes[waiter] = None
        self._at(self.clock.seconds() + self.timeout if deadline is None else deadline, waiter)
        if batch is None:
            waiter.local = True
            self.acked()
        else:
            batch.when_done(lambda error: self._committed(waiter, error))

    def _committed(self, waiter: _Write, error: Optional[str]) -> None:
        if waiter not in self._writes:
            return
        if error is not None:
            self._end_write(waiter, error)  # not persisted here: as at ONE
            return
        waiter.local = True
        self.acked()

    def acked(self) -> None:
        """A peer acknowledged our writes: answer the writes now met."""
        if not self._writes:
            return
        acks = self.cluster.member_acks()  # once for every write waiting
        for waiter in list(self._writes):
            if waiter.local:
                seq = waiter.seq
                if holding(acks, seq) + 1 >= waiter.need:
                    self.writes_met += 1
                    self._end_write(waiter, None)

    def _write_expired(self, waiter: _Write) -> None:
        if waiter.over:
            return
        got = holding(self.cluster.member_acks(), waiter.seq) + (1 if waiter.local else 0)
        self.writes_indeterminate += 1
        self._end_write(waiter, indeterminate(got, waiter.need, self.cluster.quorum_members(),
                                              waiter.level, self.timeout))

    def _end_write(self, waiter: _Write, error: Optional[str]) -> None:
        del self._writes[waiter]
        waiter.over = True
        waiter.done(error)

    # -- reads and barriers -----------------------------------------------------

    def read(self, keys: Sequence[bytes], level: str, done: Done, what: str = "read",
             repair: bool = True, seen: Optional[Dict[bytes, Version]] = None,
             wait: bool = False) -> None:
        """Merge the newest entries of ``keys`` that ``level``'s members hold
        into the local store, then call ``done(None)``; or ``done(error)``
        (which names the command a ``what``: ``read`` or ``write``).

        ``repair=False`` only looks: ``done(None)`` once enough members
        answered, whatever they held, and none is sent the newest entries.
        A blind write uses it for the versions its keys had on its members
        (see :meth:`distkv.front.levelcmds.Levels._leveled`): what it wrote
        itself is on its way to them, so a write-back would only repeat it.
        ``seen``, if given, gets the newest version any member answered of
        each key (keys nobody holds absent). With too few members linked, a
        read fails at once (UNAVAILABLE), or with ``wait`` asks the members
        that link before its timeout (a blind write's fetch: the write ran,
        and waits for its members that long anyway)."""
        self._ask(keys, level, done, write=False, what=what, repair=repair, seen=seen,
                  wait=wait)

    def barrier(self, level: str, done: Done) -> None:
        """``done(None)`` once ``level``'s members have applied every frame
        sent to them so far (a flush among them); an indeterminate error if
        that cannot be known in time."""
        self._ask((), level, done, write=True)

    def _ask(self, keys: Sequence[bytes], level: str, done: Done, write: bool,
             what: str = "read", repair: bool = True,
             seen: Optional[Dict[bytes, Version]] = None, wait: bool = False) -> None:
        size, senders = self._view()
        need = needed(level, size)
        if need <= 1:
            done(None)
            return
        if need < size and not self.cluster.restored():
            # Our entries may lack a write we helped acknowledge before we
            # came back empty: the members asked must be a quorum without us.
            need += 1
        if self.stopped:
            senders = {}
            wait = False
        short = len(senders) + 1 < need
        if not write and short and not wait:
            # Nobody to ask in time: say so at once rather than after the timeout.
            self.reads_failed += 1
            done(f"UNAVAILABLE {what} at {level} needs {need} of {size} members and "
                 f"{len(senders) + 1} are reachable; the command did not run")
            return
        if self.stopped:  # a flush while stopping: nobody is asked
            done(indeterminate(1, need, size, level, 0.0, what="flush"))
            return
        read = _Read(keys, level, need, size, done, write)
        read.what = what
        read.repair = repair
        read.seen = seen
        if short:
            read.links = True
            self._link_waits.append(read)
        chunks = read.chunks = self._chunks(keys)
        ids = read.ids
        for _ in chunks:
            number = next(self._ids)
            ids.append(number)
            self._reads[number] = read
        # Ask just enough members (taking turns), and the others only if
        # those have not all answered after a while: half the work for a
        # QUORUM of three, with little more latency when one is slow.
        order = self._order if senders is self._senders else sorted(senders)
        turn = self._turn % max(1, len(order))
        self._turn += 1
        if turn:
            order = order[turn:] + order[:turn]
        read.spare = {node: senders[node] for node in order[need - 1:]}
        for node in order[: need - 1]:
            self._ask_member(read, node, senders[node])
        now = self.clock.seconds()
        self._at(now + self.timeout, read)
        if read.spare:
            self._hedging.append((now + self.hedge, read))
            self._schedule(now + self.hedge)

    def linked(self) -> None:
        """A member linked: the reads waiting for members ask the ones they
        have not asked."""
        waits = self._link_waits
        if not waits:
            return
        self._cached = None
        senders = self._view()[1]
        for read in list(waits):
            if not read.finished and not read.ended:
                for node, send in senders.items():
                    if node not in read.asked and node not in read.spare:
                        self._ask_member(read, node, send)
                if len(read.asked) + 1 < read.need:
                    continue
            read.links = False
            waits.remove(read)

    def _ask_member(self, read: _Read, node: str, send: Send) -> None:
        read.asked[node] = send
        read.parts[node] = 0
        read.versions[node] = {}
        for number, chunk in zip(read.ids, read.chunks):
            self._queue(send, wire.encode_read_request(number, chunk))

    def _ask_spares(self, read: _Read) -> None:
        """The members asked first are slow: ask the others too."""
        spare, read.spare = read.spare, {}
        if not read.finished:
            for node, send in spare.items():
                self._ask_member(read, node, send)

    def _at(self, when: float, what: Union[_Write, _Read]) -> None:
        self._expiry.append((when, what))
        self._schedule(when)

    def _schedule(self, when: float) -> None:
        timer = self._timer
        if timer is None or not timer.active():
            self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._tick)
            self._timer_at = when
        elif when < self._timer_at:
            timer.reset(max(0.0, when - self.clock.seconds()))
            self._timer_at = when

    def _tick(self) -> None:
        """Ask the spare members of reads whose first ones are slow; time out
        what waited too long."""
        self._timer = None
        now = self.clock.seconds()
        hedging, expiry = self._hedging, self._expiry
        while hedging and hedging[0][0] <= now:
            read = hedging.popleft()[1]
            if read.spare and not read.finished and not read.ended:
                self._ask_spares(read)
        while expiry and expiry[0][0] <= now:
            what = expiry.popleft()[1]
            if isinstance(what, _Write):
                self._write_expired(what)
            else:
                self._read_expired(what)
        upcoming = [queue[0][0] for queue in (hedging, expiry) if queue]
        if upcoming:
            self._schedule(min(upcoming))

    def _view(self) -> Tuple[int, Dict[str, Send]]:
        """The member count and the members linked, as of this reactor turn:
        kept while the turn's requests wait to be sent (see _flush), so a
        turn with many reads looks them up once."""
        view = self._cached
        if view is None or self._flush_call is None:
            cluster = self.cluster
            view = self._cached = (cluster.quorum_members(), cluster.member_senders())
            self._senders = view[1]
            self._order = sorted(view[1])
        return view

    def _chunks(self, keys: Sequence[bytes]) -> List[Sequence[bytes]]:
        """``keys`` cut into requests that stay within a frame and MAX_READ_KEYS."""
        if not keys:
            return [()]
        if len(keys) == 1 and len(keys[0]) < self.max_frame - 64:
            return [keys]
        limit = self.max_frame - 64
        chunks: List[Sequence[bytes]] = []
        chunk: List[bytes] = []
        size = 0
        for key in keys:
            grown = size + 4 + len(key)
            if chunk and (grown > limit or len(chunk) >= wire.MAX_READ_KEYS):
                chunks.append(chunk)
                chunk, grown = [], 4 + len(key)
            chunk.append(key)
            size = grown
        chunks.append(chunk)
        return chunks

    def answered(self, node: str, reply: wire.ReadReply) -> None:
        """Member ``node`` answered one of our requests (part of it, if ``more``)."""
        read = self._reads.get(reply.id)
        if read is None or node not in read.asked or node in read.answered:
            return  # late (the read is over), or not asked: nothing to do
        if reply.loading:  # it cannot vouch for its data: ask another
            self._declined(read, node)
            return
        versions = read.versions[node]
        keys = read.keys
        wanted = keys if len(keys) <= 4 else set(keys)
        cluster = self.cluster
        local = cluster.local_entry
        seen = read.seen
        for key, entry in reply.entries:
            if key not in wanted:
                continue  # not asked for: ignored
            if local(key) != entry:  # the same entry (the usual answer): nothing to merge
                cluster.merge(key, entry)
                read.fresh.clear()  # what the members found fresh held may be older now
            versions[key] = mark_of(entry)
            if seen is not None:
                version = version_of(entry)
                if key not in seen or version > seen[key]:
                    seen[key] = version
        if reply.more:
            return
        read.parts[node] += 1
        if read.parts[node] < len(read.ids):
            return
        read.answered.add(node)
        if not read.finished:
            self._check(read)
        self._all_answered(read)

    def _all_answered(self, read: _Read) -> None:
        if len(read.answered) == len(read.asked):
            if read.finished:
                self._end_read(read)
            elif read.spare:
                self._ask_spares(read)
            elif not read.stale and not read.links:
                # Every member answered, too few can hold it.
                self._read_expired(read)

    def _declined(self, read: _Read, node: str) -> None:
        """``node`` is loading: it does not count, as if it were not linked."""
        read.asked.pop(node, None)
        read.versions.pop(node, None)
        read.parts.pop(node, None)
        if not read.finished:
            self._all_answered(read)

    def _check(self, read: _Read) -> None:
        """Done once enough members hold the newest entries (this node does:
        it merged every answer); members that answered older ones are sent
        the newest and asked again (the write-back), so a value one read
        returned is held by a quorum before any later read begins."""
        local = self.cluster.local_entry
        newest = {key: local(key) for key in dict.fromkeys(read.keys)}
        fresh = 1
        read.stale = []
        read.fresh.clear()
        for node in sorted(read.answered):
            frames = _repairs(newest, read.versions[node]) if read.repair else None
            if not frames:
                fresh += 1
                read.fresh.add(node)
            elif read.rounds.get(node, 0) < WRITE_BACKS:
                read.stale.append(node)
                read.rounds[node] = read.rounds.get(node, 0) + 1
                self.repairs += len(frames)
                self._send(read, node, b"".join(frames))
        if fresh >= read.need:
            read.finished = True
            read.stale = []
            if read.write:
                self.writes_met += 1
            else:
                self.reads_met += 1
            read.done(None)
            return
        for node in read.stale:  # ask again: its answer shows the repair applied
            read.answered.discard(node)
            read.parts[node] = 0
            read.versions[node] = {}
            for number, chunk in zip(read.ids, read.chunks):
                self._send(read, node, wire.encode_read_request(number, chunk))

    def _send(self, read: _Read, node: str, data: bytes) -> None:
        self._queue(read.asked[node], data)

    def _queue(self, send: Send, data: bytes) -> None:
        """Send ``data`` at the end of this reactor turn, with whatever else
        the turn sends to that member: one write for many reads."""
        waiting = self._out.get(send)
        if waiting is None:
            self._out[send] = [data]
        else:
            waiting.append(data)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self._cached = None
        out, self._out = self._out, {}
        for send, frames in out.items():
            try:
                send(b"".join(frames))
            except Exception:
                log.failure("Sending to a member failed")

    def _read_expired(self, read: _Read) -> None:
        if read.ended:
            return
        if not read.finished:
            read.finished = True
            got = len(read.answered) + 1
            if read.write:
                self.writes_indeterminate += 1
                read.done(indeterminate(got, read.need, read.size, read.level, self.timeout,
                                        what="flush"))
            else:
                self.reads_failed += 1
                read.done(f"TIMEOUT {read.what} at {read.level} answered by {got} of {read.size} "
                          f"members within {self.timeout:g}s ({read.need} needed); "
                          "the command did not run")
        self._end_read(read)

    def _end_read(self, read: _Read) -> None:
        """Repair the members that answered with older entries; forget the read."""
        for number in read.ids:
            self._reads.pop(number, None)
        read.ended = True
        if read.links:
            read.links = False
            self._link_waits.remove(read)
        if not read.repair:
            return
        # Members found fresh hold the newest, unless an answer merged since
        # changed it (which empties fresh).
        stale = read.answered - read.fresh
        if not stale:
            return
        local = self.cluster.local_entry
        newest = {key: local(key) for key in dict.fromkeys(read.keys)}
        for node in sorted(stale):
            frames = _repairs(newest, read.versions[node])
            if frames:
                self.repairs += len(frames)
                self._send(read, node, b"".join(frames))

    def cancel_all(self) -> None:
        """The node stops: every wait ends now, with its error, and nothing
        waits from now on."""
        self.stopped = True
        for waiter in list(self._writes):
            self._write_expired(waiter)
        for read in list({id(read): read for read in self._reads.values()}.values()):
            self._read_expired(read)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._expiry.clear()
        self._hedging.clear()
        self._link_waits.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._out = {}


def _repairs(newest: Dict[bytes, Optional[Entry]], held: Dict[bytes, Mark]) -> List[bytes]:
    """``W`` frames (sequence number 0, as anti-entropy sends) carrying the
    newest entries a member's answer showed it lacks. A member lacking a
    key whose newest entry is a tombstone lacks nothing a read would see.
    The newest entries merged every answer, so a member holding a counter
    state other than the newest lacks part of it."""
    frames = []
    for key, entry in newest.items():
        if entry is None:
            continue
        seen = held.get(key)
        if seen is None and entry[0] is None:
            continue
        if is_counter(entry):
            lacks = seen != mark_of(entry)
        else:
            lacks = seen is None or seen < entry[-3:]  # type: ignore[operator]
        if lacks:
            frames.append(wire.encode_write(0, key, entry))
    return frames


def indeterminate(got: int, need: int, size: int, level: str, timeout: float,
                  what: str = "write") -> str:
    """The error of a write whose level was not met in time."""
    return (f"TIMEOUT {what} acknowledged by {got} of {size} members within {timeout:g}s "
            f"({need} needed for {level}); outcome indeterminate: it was applied on this "
            "node and may still reach the others")
