"""LINEARIZABLE: a leaderless single-decree consensus per key (CASPaxos), sans-IO.

The node a client talks to coordinates (a *proposer*); every member is an
acceptor for every key (see :mod:`distkv.cluster.acceptor`). A ballot is a
fresh version of the proposer's hybrid clock, so ballots and entry versions
share one order; an acceptor's accepted state for a key is its store entry. An
operation is a function of the key's current value (GET: the identity; SET, SET
NX/XX/GET, GETSET, DEL, INCR...: see :mod:`distkv.front.lincmds`), run in two
phases. *Prepare*: the proposer sends ``P(key, b)`` to every member linked and
to itself; an acceptor promises ``b`` unless it promised a ballot at or above
it or holds a version at or above it, and answers its entry. Once a majority of
the members (itself included) promised, the newest entry among the answers is
the key's current value; the function gives the new value. *Accept*: ``V(key,
(new, b))`` to every member; an acceptor stores it unless it promised above
``b`` or holds ``b`` or newer, and answers once it is committed. A majority of
acceptances and the operation is done. A read whose majority answered one
identical version, each *settled* (below), returns it without the second
phase; any other read writes the value it read back at its own ballot (an
accept phase with the same value) before it answers. **Why it is safe**
(Paxos's argument, ballots being versions): say ``(v, b)`` was accepted by
a majority ``Q``. Any proposer with ``b' > b`` whose majority ``Q'`` promised meets ``Q`` in an
acceptor that accepted ``b`` before promising ``b'`` (after, it would have
refused ``b``), so it answers a version ``>= b`` (an entry's version never goes
down), and below ``b'`` (or it would have refused); by induction on ballots
every proposal at a ballot in ``[b, b')`` was computed from ``v`` or from a
value computed from it, so the newest answer ``b'`` sees is such a value and
``b'`` computes from it: no chosen value is ever lost or forked. An entry with
version ``c`` always holds the value proposed at ballot ``c`` (one proposal per
ballot: the node id is in it, and a restarted node proposes nothing until its
clock passes the acceptor's restart floor, above every ballot it made before),
which is why an accepted entry may also travel by replication and anti-entropy
without harm to that argument. But an entry merged that way skips the
acceptor's promises, so being on a majority does not make it chosen: say ``(2,
c)`` was accepted by A only (its coordinator died), B and C had promised ``d >
c`` to a coordinator that read the older ``(1, b)`` and has C accept ``(f(1),
d)``; anti-entropy brings ``(2, c)`` to B. A and B now agree on ``(2, c)``, and
a read that answered 2 from them in one phase could be followed by one through
A and C that finds ``(f(1), d)`` newest and answers it: 2 then 1 (with ``f``
the identity: a read's own write-back). So the one-phase read counts only
*settled* entries: an acceptor answers its entry as settled when no ballot
above its version was promised there before it arrived (absent; no promise
above it now; or known so since: an accept taken there, or an earlier prepare
that found it settled; promises a restart forgot were at most its restart
floor). **Why the one-phase read is safe:** say it read ``(w, c)`` settled from
a majority ``Q``; take any proposal at ``d > c``, prepared by a majority ``S``,
and ``X`` in ``Q`` and ``S``. ``X`` cannot have promised ``d`` before ``(w,
c)`` arrived (the entry would not be settled: a promise leaves only when the
version reaches it), so it promised ``d`` while holding ``(w, c)`` (its version
was ``c`` then and at the read) and answered it: by induction on ``d`` the
newest answer ``d`` saw is ``w`` or computed from it, as for a chosen value.
A flush raises a *floor* version below which every entry is gone
(see ``Store.raise_floor``): it acts as a write of "absent" at the floor to
every key, so each promise carries its acceptor's floor, the proposer learns
the highest one (raising its own store's) and counts every answered entry
below it as absent: a member the flush has not reached yet (or this node,
when it promised) still answers the old entry, and proposed again at a fresh
ballot it would sit above every floor and win everywhere. A floor that a
majority holds (a flush acknowledged at QUORUM) is in every later majority's
answers, so no value it dropped is read back. An absence that a promised
member contradicts with a flushed entry is no fast read: it is accepted at
the ballot first. Acceptors refuse (naming the floor) ballots at or below
their floor, and a proposer whose own floor rose past its ballot after it
promised prepares again, so accepts are above the floor. Writes at
ONE/QUORUM/ALL to a key (and counters) stamp versions that are no ballots
and void the guarantee for that key, as plain writes do to Cassandra's
lightweight transactions. A refusal in the prepare phase retries
with a higher ballot after a random pause, a bounded number of times, and so
does one in the accept phase once every acceptor asked refused it (none holds
it); once any acceptor took a write's accept, or some did not answer, a failure
can no longer say "did not run" (an acceptor may hold it and a later proposer
finish it), so it answers *indeterminate*; a read retries whenever it fails (it
changes nothing). A node that cannot reach a majority answers ``UNAVAILABLE``
at once: a minority never answers stale data. Once a value is chosen the
proposer merges it here and sends it to the members that may lack it (as a read
repair does), so every replica holds it without waiting for anti-entropy (which
brings it to the rest if the proposer crashed first).
"""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Callable, Dict, Optional, Protocol, Set, Tuple, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from distkv.cluster import paxoswire, wire
from distkv.cluster.acceptor import Acceptor
from distkv.disk.journal import Batch
from distkv.store.entries import (
    Entry,
    expired,
    expires_of,
    is_counter,
    make_entry,
    mark_of,
    newer,
    version_of,
)
from distkv.store.hlc import HybridClock, Version

log = Logger()


class _Keep:
    """What an operation returns to leave the key's value as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class Adjusted(bytes):
    """A new value that keeps the key's expiry (INCR and its kin), as Redis does."""


#: What an operation makes of the key's current value (None: absent): the
#: new value (None: delete it; KEEP: unchanged; Adjusted: a new value under
#: the old expiry) and the reply, or KEEP and an error message (``ERR ...``,
#: a str) to answer instead.
NewValue = Union[bytes, None, _Keep]
Change = Callable[[Optional[bytes]], Tuple[NewValue, object]]
#: ``done(reply, error)``: the reply, or None and the error message.
Done = Callable[[object, Optional[str]], None]
Send = Callable[[bytes], None]

#: How many times an operation runs its phases before it gives up on conflicts.
MOST_ATTEMPTS = 12


class Cluster(Protocol):
    """What the proposer needs from its node (see :class:`distkv.node.Node`)."""

    def quorum_members(self) -> int:
        """How many members exist, this node included."""

    def member_senders(self) -> Dict[str, Send]:
        """One live connection's ``send`` for each other member linked now."""

    def durable(self) -> Optional[Batch]:
        """The commit that covers everything applied so far, if any."""


class _Op:
    __slots__ = ("key", "change", "done", "writes", "ballot", "id", "accepting", "promises",
                 "refused", "absent", "accepted", "value", "reply", "attempts", "timer",
                 "sent_write", "beaten", "size", "need", "asked", "over", "retry", "writing",
                 "floor", "unsettled")

    def __init__(self, key: bytes, change: Change, done: Done, writes: bool) -> None:
        self.key = key
        self.change = change
        self.done = done
        #: A command that may change the key (a read never needs "indeterminate").
        self.writes = writes
        self.ballot = Version(0, 0, "")
        self.id = 0
        self.accepting = False
        self.promises: Dict[str, Optional[Entry]] = {}
        self.refused: Set[str] = set()
        self.absent: Set[str] = set()  # answered "not ready", or not linked
        self.accepted: Set[str] = set()
        self.value: Optional[Entry] = None
        self.reply: object = None
        self.attempts = 0
        self.timer: Optional[IDelayedCall] = None
        #: An accept that changes the key may be held by some acceptor: failing
        #: now is indeterminate (see _accepted).
        self.sent_write = False
        self.beaten = Version(0, 0, "")
        self.size = 0
        self.need = 0
        self.asked: Dict[str, Send] = {}
        self.over = False
        self.retry: Optional[IDelayedCall] = None
        #: This attempt's accept changes the key.
        self.writing = False
        #: The highest flush floor among this attempt's promises.
        self.floor = Version(0, 0, "")
        #: The members whose promise answered an entry not settled there.
        self.unsettled: Set[str] = set()


class Proposer:
    """Runs LINEARIZABLE operations for the node clients talk to; ``timeout`` in seconds."""

    def __init__(self, cluster: Cluster, acceptor: Acceptor, hlc: HybridClock,
                 clock: IReactorTime, timeout: float) -> None:
        self.cluster = cluster
        self.acceptor = acceptor
        self.hlc = hlc
        self.clock = clock
        self.timeout = timeout
        self._ids = itertools.count(1)
        #: The phase each operation waits in, by its messages' id.
        self._ops: Dict[int, _Op] = {}
        #: Every operation not yet answered.
        self._running: Dict[_Op, None] = {}
        # Jitter seeded by the node id: a seeded simulation replays exactly.
        self._random = random.Random(zlib.crc32(hlc.node.encode()))
        self.stopped = False
        #: Counters for INFO.
        self.met = 0
        self.fast_reads = 0
        #: Reads whose majority agreed on an entry some member held unsettled:
        #: written back rather than answered in one phase.
        self.unsettled_reads = 0
        self.conflicts = 0
        self.indeterminate = 0
        self.unavailable = 0

    def pending(self) -> int:
        return len(self._running)

    def run(self, key: bytes, change: Change, writes: bool, done: Done) -> None:
        """Run ``change`` on ``key`` linearizably; ``done(reply, None)`` or ``done(None, error)``."""
        op = _Op(key, change, done, writes)
        self._running[op] = None
        op.timer = self.clock.callLater(self.timeout, self._expired, op)
        self._attempt(op)

    # -- phase 1 ------------------------------------------------------------------

    def _attempt(self, op: _Op) -> None:
        op.retry = None
        if op.over:
            return
        op.attempts += 1
        size = self.cluster.quorum_members()
        senders = {} if self.stopped else self.cluster.member_senders()
        op.size, op.need = size, size // 2 + 1
        if len(senders) + 1 < op.need:
            self.unavailable += 1
            self._end(op, None, f"UNAVAILABLE linearizable needs {op.need} of {size} members and "
                                f"{len(senders) + 1} are reachable; the command did not run")
            return
        self._forget(op)
        op.ballot = self.hlc.now_above(op.beaten)
        if op.ballot.ms <= self.acceptor.floor_ms():
            # Restarted: a ballot this low may be one this node made before
            # (its clock may have run up to the skew ahead of the wall), and
            # two proposals must never share one.
            self.unavailable += 1
            self._end(op, None, "UNAVAILABLE this node restarted less than --max-clock-skew ago "
                                "and coordinates no linearizable operation yet; "
                                "the command did not run")
            return
        op.id = next(self._ids)
        op.accepting = op.writing = False
        op.promises, op.refused, op.absent, op.accepted = {}, set(), set(), set()
        op.floor = Version(0, 0, "")
        op.unsettled = set()
        op.asked = senders
        self._ops[op.id] = op
        frame = paxoswire.encode_prepare(op.id, op.key, op.ballot)
        for send in senders.values():
            self._send(send, frame)
        status, seen, entry = self.acceptor.prepare(op.key, op.ballot)
        self._promised(op, "", status, seen, entry, self.acceptor.store.flushed)

    def answered_prepare(self, node: str, answer: paxoswire.Promise) -> None:
        """Member ``node`` answered a prepare of ours."""
        op = self._ops.get(answer.id)
        if op is None or op.accepting or node not in op.asked:
            return
        if node in op.promises or node in op.refused or node in op.absent:
            return
        self._promised(op, node, answer.status, answer.seen, answer.entry, answer.floor)

    def _promised(self, op: _Op, node: str, status: int, seen: Version,
                  entry: Optional[Entry], floor: Version) -> None:
        if status == paxoswire.OK:
            op.promises[node] = entry
            if floor > op.floor:
                op.floor = floor
            if entry is not None and seen > version_of(entry):
                op.unsettled.add(node)  # merged past a higher promise: maybe not chosen
        else:
            _declined(op, node, status, seen)
        if len(op.promises) >= op.need:
            self._propose(op)
        elif _lost(op):
            self._failed(op)

    # -- phase 2 ------------------------------------------------------------------

    def _propose(self, op: _Op) -> None:
        store = self.acceptor.store
        # An entry below a flush floor was flushed, though a member that has
        # not heard of the flush yet (this one too, when it promised) still
        # answers it: it counts as absent, and this node learns the floor.
        floor = max(op.floor, store.flushed)
        if floor > store.flushed:
            store.raise_floor(floor)
        if op.ballot <= floor:
            # The flush reached this node after it promised: no acceptor would
            # take this ballot; prepare again above the floor.
            op.beaten = max(op.beaten, floor)
            self._attempt(op)
            return
        promises: Dict[str, Optional[Entry]] = {
            node: None if entry is None or entry[-3:] < floor else entry
            for node, entry in op.promises.items()}
        # Some member holds a flushed entry: "absent" is not chosen yet.
        stale = any(entry is not None and promises[node] is None
                    for node, entry in op.promises.items())
        newest: Optional[Entry] = None
        for entry in promises.values():
            if entry is not None and (newest is None or newer(entry, newest)):
                newest = entry
        if newest is not None and is_counter(newest):
            self._end(op, None, "ERR this key holds a counter (INCR, INCRBY or INCRBYFLOAT at "
                                "another level): LINEARIZABLE cannot read or change it; use "
                                "the key at the level that made it")
            return
        wall = self.hlc.wall_ms()
        current = None if newest is None or expired(newest, wall) else newest[0]
        try:
            value, reply = op.change(current)
        except Exception:  # a bug in an operation must not leave the client waiting
            log.failure("A LINEARIZABLE operation failed")
            self._end(op, None, "ERR internal error")
            return
        if isinstance(reply, str):
            # An error (INCR of a word, say): nothing changes, but the value
            # it read must be chosen too, so it goes the way of a read.
            value = KEEP
        op.reply = reply
        if isinstance(value, _Keep):
            mark = None if newest is None else mark_of(newest)
            held = [None if e is None else mark_of(e) for e in promises.values()]
            # One phase only on a majority agreeing on one settled entry
            # (see the module's doc); else the value read is written back.
            agreed = not stale and all(m == mark for m in held)
            if agreed and op.unsettled:
                self.unsettled_reads += 1
            if agreed and not op.unsettled:
                self.fast_reads += 1
                if newest is not None:  # the members that did not answer it: repaired
                    self._spread(op, newest, {node for node, entry in promises.items()
                                              if entry is not None and mark_of(entry) == mark})
                self._answer(op)  # chosen already: nothing to write
                return
            if newest is None or newest[0] is None:
                proposal = make_entry(None, op.ballot)
            else:
                proposal = make_entry(newest[0], op.ballot, expires_of(newest))
        else:
            if type(value) is Adjusted:  # stored as plain bytes, under the old expiry
                kept = 0 if newest is None else expires_of(newest)
                proposal = make_entry(bytes(value), op.ballot, kept)
            else:
                proposal = make_entry(value, op.ballot)
            op.writing = op.writes
        op.accepting = True
        op.value = proposal
        self._forget(op)
        op.id = next(self._ids)
        self._ops[op.id] = op
        op.refused, op.absent = set(), set()
        frame = paxoswire.encode_accept(op.id, op.key, proposal)
        for send in op.asked.values():
            self._send(send, frame)
        status, seen, _ = self.acceptor.accept(op.key, proposal)
        if status == paxoswire.OK and op.writing:
            op.sent_write = True  # held here already, though not yet committed
        if status != paxoswire.OK:
            self._accepted(op, "", status, seen)
            return
        batch = self.cluster.durable()
        if batch is None:
            self._accepted(op, "", status, seen)
        else:
            number = op.id
            batch.when_done(lambda error: self._accepted(
                op, "", status if error is None else paxoswire.NOT_READY, seen, number))

    def answered_accept(self, node: str, answer: paxoswire.Accepted) -> None:
        """Member ``node`` answered an accept of ours."""
        op = self._ops.get(answer.id)
        if op is None or not op.accepting or node not in op.asked:
            return
        self._accepted(op, node, answer.status, answer.seen)

    def _accepted(self, op: _Op, node: str, status: int, seen: Version,
                  number: Optional[int] = None) -> None:
        if op.over or (number is not None and number != op.id):
            return
        if node in op.accepted or node in op.refused or node in op.absent:
            return
        if status == paxoswire.OK:
            op.accepted.add(node)
        else:
            _declined(op, node, status, seen)
        if len(op.accepted) >= op.need:
            self.met += 1
            assert op.value is not None
            self._spread(op, op.value, op.accepted)
            self._answer(op)
        elif _lost(op):
            if op.writing:
                if op.accepted:  # held somewhere: a later proposer may finish it
                    op.sent_write = True
                elif len(op.refused) + len(op.absent) <= len(op.asked):
                    return  # wait: if nobody took it, it may run again
            self._failed(op)

    # -- ends ---------------------------------------------------------------------

    def _failed(self, op: _Op) -> None:
        """Too many refused or could not answer: retry, or say what happened."""
        self._forget(op)
        if not self.hlc.observe(op.beaten):
            # A member named a version further ahead of our wall clock than
            # the skew allows (a broken or hostile peer): counted as a refused
            # future version, never stamped above (the next ballot is fresh).
            op.beaten = Version(0, 0, "")
        if op.sent_write:
            self.indeterminate += 1
            self._end(op, None, self._indeterminate(op, "a concurrent operation on the key took over"))
            return
        if not op.refused:  # not ready, not linked: waiting will not help soon
            self.unavailable += 1
            self._end(op, None, f"UNAVAILABLE linearizable needs {op.need} of {op.size} members "
                                "and too few are ready (loading or just restarted); "
                                "the command did not run")
            return
        self.conflicts += 1
        if op.attempts >= MOST_ATTEMPTS:
            self._end(op, None, f"CONFLICT linearizable operation on this key lost to others "
                                f"{op.attempts} times; the command did not run")
            return
        pause = self._random.uniform(0, min(0.001 * (2 ** op.attempts), self.timeout / 8))
        op.retry = self.clock.callLater(pause, self._attempt, op)

    def _spread(self, op: _Op, chosen: Entry, holding: Set[str]) -> None:
        """Merge the chosen entry here, and send it to the members linked
        that may lack it, as a read repair does (a ``W`` frame with sequence number 0): an
        acceptor that refused it, or answered late, would otherwise wait for
        the next anti-entropy round."""
        if "" not in holding:  # this node's acceptor refused it, or was not ready
            self.acceptor.store.apply(op.key, chosen)
        frame = b""
        for node, send in op.asked.items():
            if node not in holding:
                frame = frame or wire.encode_write(0, op.key, chosen)
                self._send(send, frame)

    def _answer(self, op: _Op) -> None:
        reply = op.reply
        if isinstance(reply, str):
            self._end(op, None, reply)
        else:
            self._end(op, reply, None)

    def _expired(self, op: _Op) -> None:
        op.timer = None
        if op.over:
            return
        if op.sent_write or (op.accepting and op.writing):
            self.indeterminate += 1
            self._end(op, None, self._indeterminate(op, f"not met within {self.timeout:g}s"))
        else:
            self.unavailable += 1
            self._end(op, None, f"TIMEOUT linearizable operation not met by {op.need} of "
                                f"{op.size} members within {self.timeout:g}s; "
                                "the command did not run")

    def _indeterminate(self, op: _Op, why: str) -> str:
        return (f"TIMEOUT linearizable write accepted by {len(op.accepted)} of {op.size} members "
                f"({op.need} needed): {why}; outcome indeterminate: it may still take effect")

    def _end(self, op: _Op, reply: object, error: Optional[str]) -> None:
        if op.over:
            return
        op.over = True
        self._forget(op)
        self._running.pop(op, None)
        for call in (op.timer, op.retry):
            if call is not None and call.active():
                call.cancel()
        op.timer = op.retry = None
        op.done(reply, error)

    def _forget(self, op: _Op) -> None:
        if self._ops.get(op.id) is op:
            del self._ops[op.id]

    def _send(self, send: Send, data: bytes) -> None:
        try:
            send(data)
        except Exception:
            log.failure("Sending to a member failed")

    def cancel_all(self) -> None:
        """The node stops: every operation ends now, and none starts."""
        self.stopped = True
        for op in list(self._running):
            if op.sent_write or (op.accepting and op.writing):
                self._end(op, None, self._indeterminate(op, "the node stopped"))
            else:
                self._end(op, None, "UNAVAILABLE the node is stopping; the command did not run")


def _declined(op: _Op, node: str, status: int, seen: Version) -> None:
    """``node`` refused this phase (``seen``: what beat the ballot), or cannot answer."""
    if status == paxoswire.REFUSED:
        op.refused.add(node)
        if seen > op.beaten:
            op.beaten = seen
    else:
        op.absent.add(node)


def _lost(op: _Op) -> bool:
    """Too many members refused, cannot answer or are not linked for this
    phase to reach a majority."""
    return len(op.refused) + len(op.absent) + (op.size - 1 - len(op.asked)) > op.size - op.need
