"""The CONSISTENCY command, and the commands run at a connection's levels.

Each connection reads and writes at a level (see :mod:`distkv.cluster.quorum`):
the node's ``--read-level`` and ``--write-level`` until it says otherwise::

    CONSISTENCY                             the levels in force
    CONSISTENCY <level>                     both
    CONSISTENCY READ <level> [WRITE <level>]
    CONSISTENCY WRITE <level> [READ <level>]
    CONSISTENCY DEFAULT                     back to the node's

and the reply lists the levels in force (``read QUORUM write ALL``). A
connection whose levels are both ``ONE`` runs the plain command table; one
at another level runs a table whose commands are wrapped here, so ``ONE``
costs nothing. A read command, and a write command that reads its keys
first (``GETSET``, ``SET ... NX``, ``DEL``'s count...), first merges the
newest entries the read level's members hold of its keys, then runs as
usual on the local store; a write waits, after running, until the write
level's members hold it (a flush: until they applied it). The replies are
deferred (a :class:`~distkv.front.replcmds.Later`), so nothing blocks.
Inside ``EXEC`` the queued commands run as they are (at ONE, reading this
node's data); ``EXEC`` itself waits for its writes at the write level.
At ``LINEARIZABLE`` a command runs as :mod:`distkv.front.lincmds` says: the
single-key commands it lists (reads at the read level, writes and
read-modify-writes when either level is LINEARIZABLE), and an error for
the others (``MULTI`` and ``WATCH`` too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

from distkv.cluster.consensus import Proposer
from distkv.cluster.quorum import ALL, LINEARIZABLE, ONE, QUORUM, Coordinator, parse_level
from distkv.front import lincmds
from distkv.front.replcmds import Later
from distkv.front.replies import SYNTAX, Error, Reply, Session, Status
from distkv.store.hlc import Version
from distkv.store.store import Entry, version_of

if TYPE_CHECKING:
    from distkv.front.commands import Command, Dispatcher, Outcome

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
        #: (see :meth:`_blind`), by the reply it will answer.
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
        indeterminate rather than refused); and it runs at once, with the
        fetch alongside its replication rather than before it (see
        :meth:`_blind`). A command that reads its keys
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
            if not keys:
                return self._then_write(command, request, session, write)
            later = Later()
            deadline = coordinator.clock.seconds() + coordinator.timeout

            # A command whose reply or effect depends on what its keys held
            # does not run on what this node alone holds.
            gate = write == ONE or reads_first or (name == b"SET" and _set_reads(request))
            if not gate:
                return self._blind(command, request, session, write, keys, fetch, what,
                                   deadline)

            def fetched(error: Optional[str]) -> None:
                if error is not None and gate:
                    later.done_with(Error(error))
                    return
                self._finish(self._then_write(command, request, session, write, deadline),
                             later)

            coordinator.read(keys, fetch, fetched, what)
            return _pending(later)

        return leveled

    def _blind(self, command: Command, request: Sequence[bytes], session: Session,
               write: str, keys: Sequence[bytes], fetch: str, what: str,
               deadline: float) -> Outcome:
        """A blind write at a write level, in one round trip rather than two:
        it runs now, and the versions its keys have on the fetch level's
        members are asked for as it is replicated (no write-back: see
        :meth:`Coordinator.read`). When a member answered a newer version of
        a key than the one just written (a node whose clock is ahead wrote
        it), the write runs again, stamped above what was fetched, and its
        answer waits for that one's level; unless later writes here to that
        key come after it: a later blind write whose fetch is out (it orders
        itself the same way, so the last one run is the one that stays: a
        pipeline keeps its order) or one already stamped above the fetched
        entry, and then it answers once those are on their members too.

        Why this keeps the promise: a write acknowledged before this one
        began is on a quorum of the write level's members; the fetch asks a
        quorum of the fetch level's (at least as strong), so one member in
        both answers with that write or a newer entry, merged here. The
        reply waits for the fetch, so what is on enough members when it
        answers is above that entry: the first run, when it already was;
        else the second run, or the later writes, stamped above every
        entry held here. The first run's entry, if it lost, is an
        unacknowledged write that a newer entry beats on every member: no
        read can return it after one that returned the newer. Acknowledged
        still means applied and committed on that many members."""
        store = self.dispatcher.store
        coordinator = self.coordinator
        assert coordinator is not None
        seq = store.seq
        outcome = self._then_write(command, request, session, write, deadline)
        if store.seq == seq:
            return outcome  # wrote nothing (an error): nothing to order
        wrote = {key: _version(store.entry(key)) for key in keys}
        seen: Dict[bytes, Version] = {}
        later = Later()
        latest = self._latest
        for key in keys:
            latest[key] = later
        me = store.clock.node

        def fetched(error: Optional[str]) -> None:
            followers = {}
            for key in keys:
                follower = latest.get(key)
                if follower is later:
                    del latest[key]
                elif follower is not None:
                    followers[key] = follower
            beaten = [key for key, mine in wrote.items()
                      if key in seen and (mine is None or seen[key] > mine)]
            if error is not None or not beaten:  # ours is the newest (or best effort)
                self._finish(outcome, later)
                return
            after = {key for key in beaten if key in followers}
            if len(after) == len(beaten):
                # Later writes here to those keys, which run after this one,
                # are ordered above the fetched entries as this one would be:
                # answered once the last of them is.
                waits = list({id(f): f for f in followers.values()}.values())
                self._after(outcome, waits, later)
                return
            for key in beaten:
                version = _version(store.entry(key))
                if key not in after and not (version is not None and version > seen[key]
                                              and version[2] == me):
                    # Written again, above every entry held here.
                    self._finish(self._then_write(command, request, session, write,
                                                  deadline), later)
                    return
            # Later writes of ours beat the fetched entries: once they are
            # on enough members (and any later blind writes answered).
            done = Later()
            coordinator.write(store.seq, write, None, lambda error: done.done_with(
                Error(error) if error is not None else later.reply), deadline)
            self._after(outcome, [done] + list({id(f): f for f in followers.values()}.values()),
                        later)

        coordinator.read(keys, fetch, fetched, what, repair=False, seen=seen)
        return _pending(later)

    def _after(self, outcome: Outcome, waits: List[Later], later: Later) -> None:
        """Finish ``later`` with ``outcome`` once every one of ``waits`` is
        done, or with the first of their errors."""
        if not waits:
            self._finish(outcome, later)
            return
        first, rest = waits[0], waits[1:]

        def then(error: Optional[str]) -> None:
            if isinstance(first.reply, Error):
                later.done_with(first.reply)
            else:
                self._after(outcome, rest, later)

        first.when_done(then)

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
        return self._then_write(lambda request, session: run(), (), session, write)

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

    # -- the CONSISTENCY command ------------------------------------------------

    def command(self, args: Sequence[bytes], session: Session) -> Reply:
        if args:
            if session.multi is not None:
                return Error("ERR CONSISTENCY inside MULTI is not allowed")
            parsed = parse_levels(args)
            if isinstance(parsed, Error):
                return parsed
            read, write = parsed
            if args[0].upper() == b"DEFAULT":
                session.read_level = session.write_level = None
            else:
                session.read_level = read or session.read_level
                session.write_level = write or session.write_level
            base = self.dispatcher.base_table(session)
            session.commands = self.table(base, session)
        read, write = self.levels(session)
        return Status(b"read %s write %s" % (read.encode(), write.encode()))


Chosen = Tuple[Optional[str], Optional[str]]


def parse_levels(args: Sequence[bytes]) -> Union[Chosen, Error]:
    """CONSISTENCY's arguments: (read, write) levels (None: unchanged), or an Error."""
    words = [arg.upper() for arg in args]
    if words == [b"DEFAULT"]:
        return (None, None)
    if len(words) == 1 and words[0] not in (b"READ", b"WRITE"):
        level = _level(words[0])
        return level if isinstance(level, Error) else (level, level)
    if len(words) not in (2, 4):
        return SYNTAX
    chosen: Dict[bytes, str] = {}
    for index in range(0, len(words), 2):
        which = words[index]
        if which not in (b"READ", b"WRITE") or which in chosen:
            return SYNTAX
        level = _level(words[index + 1])
        if isinstance(level, Error):
            return level
        chosen[which] = level
    return (chosen.get(b"READ"), chosen.get(b"WRITE"))


def _level(word: bytes) -> Union[str, Error]:
    level = parse_level(word)
    if level is None:
        shown = word[:40].decode("ascii", "replace")
        return Error(f"ERR unknown consistency level '{shown}' "
                     "(ONE, QUORUM, ALL or LINEARIZABLE)")
    return level


def _set_reads(request: Sequence[bytes]) -> bool:
    return len(request) > 3 and any(arg.upper() in _SET_READS for arg in request[3:])


def _version(entry: Optional[Entry]) -> Optional[Version]:
    return None if entry is None else version_of(entry)


def _pending(later: Later) -> Outcome:
    from distkv.front.commands import Pending

    return Pending(later, later.reply)


#: ``table(dispatcher)``'s entries: handler, least and most arguments, access.
def table(levels: Levels) -> Dict[bytes, Tuple[Callable[..., Reply], int, int, str]]:
    return {b"CONSISTENCY": (levels.command, 0, 4, "read")}
