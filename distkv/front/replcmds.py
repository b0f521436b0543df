"""FLUSHDB, FLUSHALL and WAIT: the commands that act on the whole cluster's data.

A flush is a versioned cluster-wide event (see
:meth:`distkv.store.store.Store.raise_floor`): the node stamps it with its
clock, drops every entry below, and tells every peer, which drop theirs and
refuse every write below it from then on, however late it arrives; writes
made after it (above it) survive. There is one database, so ``FLUSHDB`` and
``FLUSHALL`` are the same, and ``ASYNC``/``SYNC`` change nothing.

``WAIT numreplicas timeout`` answers how many peers have applied, and
committed, every write this node had made when WAIT ran (the connection's own
among them): each peer acknowledges the sequence numbers of this node's writes
only once they are committed there (see :mod:`distkv.cluster.outbox`). Its
reply is deferred (a :class:`Later`, sent in order by the connection's reply
queue), so nothing blocks while it waits; ``timeout`` is in milliseconds, 0
waiting for ever, as Redis's. Inside a transaction it answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from distkv.disk.journal import Batch
from distkv.front.replies import LOADING, NOT_INTEGER, OK, SYNTAX, Error, Integer, Reply, Session, strict_int

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry, Outcome

#: Redis's error for writes while too few replicas are good (min-replicas-to-write).
NOREPLICAS = Error("NOREPLICAS Not enough good replicas to write.")
_TIMEOUT_NOT_INTEGER = Error("ERR timeout is not an integer or out of range")
_TIMEOUT_NEGATIVE = Error("ERR timeout is negative")


class Later(Batch):
    """A reply decided when it is done (WAIT's count): the reply queue sends
    :attr:`reply` once :meth:`done_with` finishes it."""

    __slots__ = ("reply",)

    def __init__(self) -> None:
        super().__init__()
        self.reply: Reply = Integer(0)

    def done_with(self, reply: Reply) -> None:
        self.reply = reply
        self.finish(None)


class _Waiter:
    __slots__ = ("seq", "wanted", "later", "timer")

    def __init__(self, seq: int, wanted: int, later: Later) -> None:
        self.seq = seq
        self.wanted = wanted
        self.later = later
        self.timer: Optional[IDelayedCall] = None


class Replicas:
    """WAIT's waiters: ``acked(seq)`` counts the peers that acknowledged this
    node's writes up to ``seq``; :meth:`changed` is called on every
    acknowledgement."""

    def __init__(self, acked: Callable[[int], int], clock: IReactorTime) -> None:
        self.acked = acked
        self._clock = clock
        self._waiters: List[_Waiter] = []

    def __len__(self) -> int:
        """How many WAITs are blocked."""
        return len(self._waiters)

    def wait(self, seq: int, wanted: int, timeout_ms: int) -> Later:
        """A reply: the count once ``wanted`` peers hold ``seq``, or at the timeout."""
        waiter = _Waiter(seq, wanted, Later())
        if timeout_ms:
            waiter.timer = self._clock.callLater(timeout_ms / 1000, self._expired, waiter)
        self._waiters.append(waiter)
        return waiter.later

    def changed(self) -> None:
        """An acknowledgement came: answer every WAIT it satisfies."""
        if not self._waiters:
            return
        still = []
        for waiter in self._waiters:
            count = self.acked(waiter.seq)
            if count >= waiter.wanted:
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                waiter.later.done_with(Integer(count))
            else:
                still.append(waiter)
        self._waiters = still

    def _expired(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter.later.done_with(Integer(self.acked(waiter.seq)))

    def cancel_all(self) -> None:
        """The node stops: answer every WAIT with the count it has."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.later.done_with(Integer(self.acked(waiter.seq)))


def table(dispatcher: Dispatcher) -> Dict[bytes, Entry]:
    """FLUSHDB, FLUSHALL and WAIT, bound to ``dispatcher``."""
    commands = ReplicationCommands(dispatcher)
    return {
        b"FLUSHDB": (commands.flush, 0, -1, "write"),
        b"FLUSHALL": (commands.flush, 0, -1, "write"),
        b"WAIT": (commands.wait, 2, 2, "read"),
    }


class ReplicationCommands:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store

    def flush(self, args: Sequence[bytes], session: Session) -> Outcome:
        if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
            return SYNTAX
        dispatcher = self.dispatcher
        if dispatcher.loading:
            return LOADING
        if dispatcher.write_refusal is not None:
            return dispatcher.write_refusal
        self.store.flush()
        return dispatcher.after_commit(OK)

    def wait(self, args: Sequence[bytes], session: Session) -> Outcome:
        wanted = strict_int(args[0])
        if wanted is None:
            return NOT_INTEGER
        timeout = strict_int(args[1])
        if timeout is None:
            return _TIMEOUT_NOT_INTEGER
        if timeout < 0:
            return _TIMEOUT_NEGATIVE
        replicas = self.dispatcher.replicas
        if replicas is None:
            return Integer(0)
        seq = self.store.seq
        count = replicas.acked(seq)
        if count >= wanted or self.store.group is not None:
            return Integer(count)  # enough already, or inside EXEC: never block
        from distkv.front.commands import Pending  # commands imports this module

        later = replicas.wait(seq, wanted, timeout)
        return Pending(later, later.reply)
