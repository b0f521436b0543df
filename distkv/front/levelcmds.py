"""The commands run at a connection's consistency levels.

Each connection reads and writes at a level (see :mod:`distkv.cluster.quorum`):
the node's ``--read-level`` and ``--write-level`` until it says otherwise
(the CONSISTENCY command, :mod:`distkv.front.consistencycmd`). A
connection whose levels are both ``ONE`` runs the plain command table; one
at another level runs a table whose commands are wrapped here, so ``ONE``
costs nothing. A read command, and a write command that reads its keys
first (``GETSET``, ``SET ... NX``, ``DEL``'s count...), first merges the
newest entries the read level's members hold of its keys, then runs as
usual on the local store; a write waits, after running, until the write
level's members hold it (a flush: until they applied it). The replies are
deferred (a :class:`~distkv.front.replcmds.Later`), so nothing blocks; but
a command that fetches before it runs sets ``session.waiting`` until it has
run, and the connection runs its next request only then (a pipeline runs
in order, one fetch at a time; waiting for the members to hold a write does
not hold the next request back).
Inside ``EXEC`` the queued commands run as they are (at ONE, reading this
node's data); ``EXEC`` itself waits for its writes at the write level.
At ``LINEARIZABLE`` a command runs as :mod:`distkv.front.lincmds` says: the
single-key commands it lists (reads at the read level, writes and
read-modify-writes when either level is LINEARIZABLE), and an error for
the others (``MULTI`` and ``WATCH`` too).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple

from twisted.logger import Logger

from distkv.cluster.consensus import Proposer
from distkv.cluster.quorum import ALL, LINEARIZABLE, ONE, QUORUM, Coordinator
from distkv.disk.journal import Batch
from distkv.front import blindwrites, consistencycmd, lincmds
from distkv.front.replcmds import Later
from distkv.front.replies import Error, Reply, Session, Status

if TYPE_CHECKING:
    from distkv.front.commands import Command, Dispatcher, Outcome

log = Logger()

#: How a command's keys are found: (first argument, last (-1: every one
#: to the end), step), as Redis's key specs say.
KeySpec = Tuple[int, int, int]
_FIRST: KeySpec = (1, 1, 1)
_ALL: KeySpec = (1, -1, 1)
_TWO: KeySpec = (1, 2, 1)
_PAIRS: KeySpec = (1, -1, 2)

#: The read commands that honour the read level, and their keys.
READS: Dict[bytes, KeySpec] = {
    b"GET": _FIRST, b"STRLEN": _FIRST, b"GETRANGE": _FIRST, b"SUBSTR": _FIRST,
    b"TTL": _FIRST, b"PTTL": _FIRST, b"EXPIRETIME": _FIRST, b"PEXPIRETIME": _FIRST,
    b"TYPE": _FIRST, b"MGET": _ALL, b"EXISTS": _ALL, b"TOUCH": _ALL,
}
#: Write commands whose reply or effect depends on what their keys held:
#: they read at the read level first.
READ_FIRST: Dict[bytes, KeySpec] = {
    b"APPEND": _FIRST, b"GETDEL": _FIRST, b"GETEX": _FIRST, b"GETSET": _FIRST,
    b"SETNX": _FIRST, b"SETRANGE": _FIRST, b"EXPIRE": _FIRST, b"PEXPIRE": _FIRST,
    b"EXPIREAT": _FIRST, b"PEXPIREAT": _FIRST, b"PERSIST": _FIRST,
    b"INCR": _FIRST, b"DECR": _FIRST, b"INCRBY": _FIRST, b"DECRBY": _FIRST,
    b"INCRBYFLOAT": _FIRST,
    b"DEL": _ALL, b"UNLINK": _ALL, b"MSETNX": _PAIRS,
    b"COPY": _TWO, b"RENAME": _TWO, b"RENAMENX": _TWO,
}
#: The keys each write command writes: fetched from the write level's
#: members before it runs (see :meth:`Levels._leveled`).
WRITE_KEYS: Dict[bytes, KeySpec] = dict(READ_FIRST)
WRITE_KEYS.update({b"SET": _FIRST, b"SETEX": _FIRST, b"PSETEX": _FIRST, b"MSET": _PAIRS})
_STRENGTH = {ONE: 0, QUORUM: 1, ALL: 2, LINEARIZABLE: 3}
#: SET reads first only with an option that looks at the old value.
_SET_READS = (b"NX", b"XX", b"GET", b"KEEPTTL")
#: Never wrapped: they change no key, or act on membership.
_NOT_LEVELED = (b"LEAVE",)
#: Refused while either level is LINEARIZABLE.
_NOT_LINEARIZABLE = (b"MULTI", b"WATCH")


def keys_of(spec: KeySpec, request: Sequence[bytes]) -> Sequence[bytes]:
    first, last, step = spec
    end = len(request) if last < 0 else min(len(request), last + 1)
    return request[first:end:step]


class Levels:
    """The node's levels, the CONSISTENCY command, and the leveled tables."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.read = ONE
        self.write = ONE
        self.coordinator: Optional[Coordinator] = None
        #: Runs LINEARIZABLE operations (set by the node).
        self.proposer: Optional[Proposer] = None
        self._tables: Dict[Tuple[int, str, str], Dict[bytes, Command]] = {}
        #: The base tables those were made from, by id.
        self._bases: Dict[int, Dict[bytes, Command]] = {}
        #: While a table is made: whether reads, writes are at LINEARIZABLE,
        #: and the write level of what is not.
        self._lin = (False, False)
        self._other_write = ONE
        #: The newest blind write at a level of each key whose fetch is out
        #: (see :mod:`distkv.front.blindwrites`), by the reply it will answer.
        self._latest: Dict[bytes, Later] = {}

    def use(self, coordinator: Coordinator, read: str, write: str) -> None:
        """The node's coordinator and default levels."""
        self.coordinator = coordinator
        self.read = read
        self.write = write
        self._tables.clear()
        self._bases.clear()

    def levels(self, session: Session) -> Tuple[str, str]:
        return (session.read_level or self.read, session.write_level or self.write)

    def table(self, base: Dict[bytes, Command], session: Session) -> Dict[bytes, Command]:
        """``base`` (a user's table) as ``session``'s levels run it."""
        read, write = self.levels(session)
        if (read == ONE and write == ONE) or self.coordinator is None or (
                self.proposer is None and LINEARIZABLE in (read, write)):
            return base
        key = (id(base), read, write)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = self._wrap(base, read, write)
            self._bases[id(base)] = base
        elif len(table) != len(base):
            table.clear()
            table.update(self._wrap(base, read, write))
        return table

    def rewrap(self) -> None:
        """Rebuild every leveled table in place from its base table, which
        changed in place (:meth:`~distkv.front.commands.Dispatcher.hold` and
        ``release``): connections hold these tables, so they see the change."""
        for (base_id, read, write), table in self._tables.items():
            fresh = self._wrap(self._bases[base_id], read, write)
            table.clear()
            table.update(fresh)

    def _wrap(self, base: Dict[bytes, Command], read: str, write: str) -> Dict[bytes, Command]:
        self._lin = (read == LINEARIZABLE, write == LINEARIZABLE)
        table = dict(base)
        if self.dispatcher.holding:  # reading the data dir: LOADING, asking nobody
            return table
        access = self.dispatcher.access
        lin = LINEARIZABLE in (read, write)
        self._other_write = write
        if lin:  # the other level, for what does not run at LINEARIZABLE
            read = ONE if read == LINEARIZABLE else read
            write = ONE if write == LINEARIZABLE else write
            self._other_write = write
        for name, command in base.items():
            if name in _NOT_LEVELED:
                continue
            if lin:
                linear = self._linear(name, command, access.get(name) == "write")
                if linear is not None:
                    table[name] = linear
                    continue
            writes = write != ONE and access.get(name) == "write"
            reads = read != ONE and (name in READS or name in READ_FIRST or name == b"SET")
            if writes or reads:
                table[name] = self._leveled(name, command, read if reads else ONE,
                                            write if writes else ONE)
        return table

    def _linear(self, name: bytes, command: Command, writes: bool) -> Optional[Command]:
        """``name`` as the LINEARIZABLE level runs it (see :mod:`distkv.front.lincmds`),
        or None when it runs at the other level."""
        lin_read, lin_write = self._lin
        proposer = self.proposer
        assert proposer is not None
        if name in _NOT_LINEARIZABLE:
            return lincmds.refused(name)
        reads_first = name in READ_FIRST
        if not ((writes and lin_write) or (name in READS and lin_read)
                or (reads_first and lin_read) or (name == b"SET" and lin_read)):
            return None
        linear = lincmds.linearized(self.dispatcher, proposer, name, command)
        if name != b"SET" or lin_write:
            return linear
        # Only a SET that reads (NX, XX, GET) reads at LINEARIZABLE.
        plain = self._leveled(name, command, ONE, self._other_write) \
            if self._other_write != ONE else command

        def set_at(request: Sequence[bytes], session: Session) -> Outcome:
            return (linear if _set_reads(request) else plain)(request, session)

        return set_at

    def _leveled(self, name: bytes, command: Command, read: str, write: str) -> Command:
        """``command`` at these levels (ONE: not at that level).

        Before a write at a level runs, its keys' entries are fetched from
        the write level's members (at the read level, if stronger, for a
        command that reads them): merged here, they make the write's
        version higher than any those members hold, so a write made after
        another was acknowledged is the newer one even when this node never
        heard of it. For a blind write (SET without options that read,
        SETEX, PSETEX, MSET) that fetch is a best effort: when it fails the
        write runs anyway (and waits for its level as usual, so it is
        indeterminate rather than refused); and one of a single key runs at
        once, with the fetch alongside its replication rather than before
        it (see :mod:`distkv.front.blindwrites`). A command that reads its keys
        (a read, ``GETSET``, ``DEL``'s count, ``SET ... NX``...) does not run
        when its fetch fails: it answers the error, and nothing changed.
        """
        dispatcher = self.dispatcher
        store = dispatcher.store
        coordinator = self.coordinator
        assert coordinator is not None
        spec = READS.get(name) or READ_FIRST.get(name)
        if write != ONE:
            spec = WRITE_KEYS.get(name, spec)
            fetch = write if _STRENGTH[write] >= _STRENGTH[read] else read
        else:
            fetch = read
        plain_set = name == b"SET" and write == ONE  # SET reads only with options
        reads_first = name in READ_FIRST
        what = "read" if write == ONE else "write"

        def leveled(request: Sequence[bytes], session: Session) -> Outcome:
            user = session.user
            if (store.group is not None or dispatcher.loading or user is None
                    or (write != ONE and not user.can_write)):
                return command(request, session)  # inside EXEC; refused anyway
            keys: Sequence[bytes] = ()
            if spec is not None and not (plain_set and not _set_reads(request)):
                keys = keys_of(spec, request)
            if not keys:  # a flush, say: after the blind writes before it
                return self.in_order(session, lambda: self._then_write(
                    command, request, session, write))
            later = Later()
            deadline = coordinator.clock.seconds() + coordinator.timeout

            # A command whose reply or effect depends on what its keys held
            # does not run on what this node alone holds.
            gate = write == ONE or reads_first or (name == b"SET" and _set_reads(request))
            if not gate and len(keys) == 1:
                # One key only: run again, a write of several keys would
                # overwrite a later write here to one of them.
                return blindwrites.run(self, command, request, session, write, keys, fetch,
                                       what, deadline)

            ran = Batch()  # the connection's later commands wait for it to run

            def fetched(error: Optional[str]) -> None:
                if error is not None and gate:
                    later.done_with(Error(error))
                    ran.finish(None)
                    return

                blindwrites.after_settled(session, lambda: self._run(lambda: self._then_write(
                    command, request, session, write, deadline), later, ran))

            # A blind write's fetch waits for members to link (it runs
            # anyway, and waits for them as long); a read's fails at once.
            coordinator.read(keys, fetch, fetched, what, wait=not gate)
            if not ran.done:
                session.waiting = ran
            return _pending(later)

        return leveled

    def _then_write(self, command: Command, request: Sequence[bytes], session: Session,
                    write: str, deadline: Optional[float] = None) -> Outcome:
        """Run ``command``; at a write level, answer once its members hold what it wrote."""
        store = self.dispatcher.store
        seq, floor = store.seq, store.flushed
        outcome = command(request, session)
        if write == ONE or (store.seq == seq and store.flushed == floor):
            return outcome
        coordinator = self.coordinator
        assert coordinator is not None
        from distkv.front.commands import Pending  # commands imports this module

        batch, reply = (outcome.batch, outcome.reply) if isinstance(outcome, Pending) \
            else (None, outcome)
        if isinstance(batch, Later):
            return outcome  # decided elsewhere (WAIT in a transaction never blocks)
        later = Later()

        def met(error: Optional[str]) -> None:
            later.done_with(reply if error is None else Error(error))

        if store.flushed != floor:
            flushed = store.seq == seq

            def barrier(error: Optional[str]) -> None:
                if error is not None or flushed:
                    met(error)
                else:  # a transaction that also wrote: its writes too
                    coordinator.write(store.seq, write, None, met)

            if batch is None:
                coordinator.barrier(write, barrier)
            else:
                batch.when_done(lambda error: met(error) if error is not None
                                else coordinator.barrier(write, barrier))
        else:
            coordinator.write(store.seq, write, batch, met, deadline)
        return _pending(later)

    def transaction(self, session: Session, run: Callable[[], Outcome]) -> Outcome:
        """EXEC's queued commands, run by ``run``, at ``session``'s write level
        (they run as they are inside it: see :meth:`_leveled`)."""
        write = self.levels(session)[1]
        if write == ONE or self.coordinator is None:
            return run()
        return self.in_order(session, lambda: self._then_write(
            lambda request, session: run(), (), session, write))

    def in_order(self, session: Session, run: Callable[[], Outcome]) -> Outcome:
        """``run()`` now, or, while blind writes of ``session`` have not
        settled (one may run again), once they have: the connection's next
        requests wait for it (``session.waiting``)."""
        if not session.settling:
            return run()
        later = Later()
        ran = Batch()
        blindwrites.after_settled(session, lambda: self._run(run, later, ran))
        if not ran.done:
            session.waiting = ran
        return _pending(later)

    def _run(self, run: Callable[[], Outcome], later: Later, ran: Batch) -> None:
        """``later`` gets what ``run()`` answers, and ``ran`` (the connection's
        next requests wait for it) finishes whatever happens: a command that
        raises answers an error and is logged."""
        try:
            self._finish(run(), later)
        except Exception:
            log.failure("A command run at a consistency level failed")
            if not later.done:
                later.done_with(Error(blindwrites.failed("running the command")))
        finally:
            ran.finish(None)

    def _finish(self, outcome: Outcome, later: Later) -> None:
        from distkv.front.commands import Pending

        if isinstance(outcome, Pending):
            batch = outcome.batch
            reply = outcome.reply
            batch.when_done(lambda error: later.done_with(
                Error(error) if error is not None
                else (batch.reply if isinstance(batch, Later) else reply)))
        else:
            later.done_with(outcome)

    def in_force(self, session: Session) -> Reply:
        """The CONSISTENCY reply: the levels in force on ``session``."""
        read, write = self.levels(session)
        return Status(b"read %s write %s" % (read.encode(), write.encode()))


def _set_reads(request: Sequence[bytes]) -> bool:
    return len(request) > 3 and any(arg.upper() in _SET_READS for arg in request[3:])


def _pending(later: Later) -> Outcome:
    from distkv.front.commands import Pending

    return Pending(later, later.reply)


#: ``table(dispatcher)``'s entries: handler, least and most arguments, access.
def table(levels: Levels) -> Dict[bytes, Tuple[Callable[..., Outcome], int, int, str]]:
    return {b"CONSISTENCY": (partial(consistencycmd.command, levels), 0, 4, "read")}
