"""Redis transactions on one node: MULTI, EXEC, DISCARD, WATCH and UNWATCH.

``MULTI`` swaps the session's command table for a queueing one: every
command but ``EXEC``, ``DISCARD``, ``MULTI``, ``WATCH`` and ``QUIT`` is
checked as Redis 7.0 checks it at queue time (unknown name, arity, rights:
``NOAUTH``/``NOPERM``) and answered ``+QUEUED``, or with its error, which
dooms the transaction: ``EXEC`` then answers ``EXECABORT``. ``EXEC`` runs the
queued commands back to back in one call, so no other command of any client
runs between them on this node, and brackets them in a group of the store
(:meth:`distkv.store.store.Store.begin_group`): their writes fall in one
journal batch, commit together, and travel to each peer as one frame
applied in one call there. Runtime errors are entries of EXEC's array, as in
Redis. ``WATCH`` remembers the version each key held (with a counter's state's
checksum, see :func:`_version`), and whether it was readable;
``EXEC`` answers the nil array if any of them holds another version now, as
any write to the key makes it (a local write, a write merged from a peer or
by anti-entropy, a delete, a purge), or was readable and has expired since
(as in Redis). The queued bytes are bounded, so that a transaction's writes fit
in one peer frame (unless commands such as ``APPEND`` make values larger
than their arguments: such a group replicates write by write, logged), and
so are each connection's watched keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from distkv.front.access import OPEN, READ, WRITE
from distkv.front.auth import NOAUTH
from distkv.front.replies import (
    NIL_ARRAY,
    OK,
    QUEUED,
    Array,
    Error,
    Reply,
    Session,
    wrong_arity,
)
from distkv.store.entries import Entry, Mark, mark_of
from distkv.store.store import Store

if TYPE_CHECKING:
    from distkv.front.commands import Command, Dispatcher, Outcome

EXECABORT = Error("EXECABORT Transaction discarded because of previous errors.")
NESTED = Error("ERR MULTI calls can not be nested")
EXEC_WITHOUT = Error("ERR EXEC without MULTI")
DISCARD_WITHOUT = Error("ERR DISCARD without MULTI")
WATCH_INSIDE = Error("ERR WATCH inside MULTI is not allowed")

#: What a queued argument may cost in a peer frame beyond its own bytes (a
#: write's version, flags and lengths), rounded up.
ARGUMENT_OVERHEAD = 96

#: Commands that run at once inside MULTI rather than being queued.
_NOT_QUEUED = (b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT")


def queued_size(request: Sequence[bytes]) -> int:
    """What ``request`` counts against a transaction's bound: its bytes, and
    an overhead per argument and for the command itself, so that the bound
    holds memory (a queued ``PING`` is a tuple and a bytes object) as well as
    frame bytes."""
    return sum([len(arg) + ARGUMENT_OVERHEAD for arg in request])


class Transaction:
    """A transaction under way: what was queued, whether it is doomed, and
    the session's command table to go back to."""

    __slots__ = ("queued", "failed", "table", "size")

    def __init__(self, table: Dict[bytes, Command]) -> None:
        self.queued: List[Tuple[bytes, ...]] = []
        self.failed = False
        self.table = table
        self.size = 0


class _QueueTable(Dict[bytes, "Command"]):
    """The queueing commands by name; a name not in it is unknown, and
    dooms the transaction (front ends look names up with ``get``)."""

    unknown: Command

    def get(self, name: bytes, default: Optional[Command] = None) -> Command:  # type: ignore[override]
        found = dict.get(self, name)
        return self.unknown if found is None else found


class Transactions:
    """Puts the transaction commands in ``dispatcher``'s tables.

    ``max_bytes`` bounds what one transaction may queue (see
    :func:`queued_size`): the node gives the largest peer frame, so that a
    transaction's writes always travel in one.
    """

    def __init__(self, dispatcher: Dispatcher, store: Store, max_bytes: int) -> None:
        self._dispatcher = dispatcher
        self._store = store
        self.max_bytes = max_bytes
        self._queue_table: Optional[_QueueTable] = None
        self._built_from = 0
        for name, handler, least, most in (
            (b"MULTI", self._multi, 0, 0),
            (b"EXEC", self._exec, 0, 0),
            (b"DISCARD", self._discard, 0, 0),
            (b"WATCH", self._watch, 1, -1),
            (b"UNWATCH", self._unwatch, 0, 0),
        ):
            dispatcher.add(name, _checked(handler, least, most), least, most, READ)

    def _table(self) -> _QueueTable:
        full = self._dispatcher.commands
        table = self._queue_table
        if table is None or self._built_from != len(full):
            table = _QueueTable()
            table.unknown = self._queue_unknown
            tables = self._dispatcher.access
            for name, command in full.items():
                least, most = self._dispatcher_arity(name)
                if name in _NOT_QUEUED:
                    table[name] = _doomed_on_arity(name, command, least, most)
                else:
                    table[name] = self._queuer(name, least, most, tables[name])
            self._queue_table = table
            self._built_from = len(full)
        return table

    def _dispatcher_arity(self, name: bytes) -> Tuple[int, int]:
        arity = self._dispatcher.arity(name)
        return (arity - 1, arity - 1) if arity > 0 else (-arity - 1, -1)

    def _queuer(self, name: bytes, least: int, most: int, access: str) -> Command:
        accounts = self._dispatcher.accounts
        limit = self.max_bytes

        def queue(request: Sequence[bytes], session: Session) -> Outcome:
            transaction: Transaction = session.multi
            count = len(request) - 1
            if count < least or (most >= 0 and count > most):
                transaction.failed = True
                return wrong_arity(request[0])
            user = session.user
            if access != OPEN and user is None:
                transaction.failed = True
                return Error(NOAUTH)
            if access == WRITE and not user.can_write:
                transaction.failed = True
                return Error(accounts.refused(user, name, session.address))
            size = transaction.size + queued_size(request)
            if size > limit:
                transaction.failed = True
                return Error(
                    f"ERR transaction too large: over {limit} bytes queued, the most "
                    "one replication frame carries"
                )
            transaction.size = size
            transaction.queued.append(tuple(request))
            return QUEUED

        return queue

    def _queue_unknown(self, request: Sequence[bytes], session: Session) -> Outcome:
        session.multi.failed = True
        return self._dispatcher.unknown(request, session)

    def _multi(self, args: Sequence[bytes], session: Session) -> Outcome:
        if session.multi is not None:
            return NESTED
        session.multi = Transaction(session.commands)
        session.commands = self._table()
        return OK

    def _end(self, session: Session) -> Optional[Transaction]:
        transaction: Optional[Transaction] = session.multi
        if transaction is not None:
            session.multi = None
            session.commands = transaction.table
        return transaction

    def _discard(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self._end(session) is None:
            return DISCARD_WITHOUT
        session.watched = None
        return OK

    def _exec(self, args: Sequence[bytes], session: Session) -> Outcome:
        transaction = self._end(session)
        if transaction is None:
            return EXEC_WITHOUT
        watched, session.watched = session.watched, None
        if transaction.failed:
            return EXECABORT
        queued = transaction.queued

        def run() -> Outcome:  # at a level, maybe after the blind writes before it
            if watched and any(self._touched(key, held) for key, held in watched.items()):
                return NIL_ARRAY
            return self._run(queued, session)

        return self._dispatcher.levels.transaction(session, run)

    def _run(self, queued: List[Tuple[bytes, ...]], session: Session) -> Outcome:
        # Imported here: commands imports this module.
        from distkv.front.commands import Pending

        run = self._dispatcher.run
        replies: List[Reply] = []
        batch = None
        store = self._store
        store.begin_group()
        try:
            for request in queued:
                outcome = run(request, session)
                if isinstance(outcome, Pending):
                    batch = outcome.batch  # one turn: every write in one batch
                    outcome = outcome.reply
                replies.append(outcome)
        finally:
            store.end_group()
        if batch is None:
            return Array(tuple(replies))
        return Pending(batch, Array(tuple(replies)))

    def _watch(self, args: Sequence[bytes], session: Session) -> Outcome:
        if session.multi is not None:
            return WATCH_INSIDE
        if session.settling:  # it watches what they leave (one may run again)
            return self._dispatcher.levels.in_order(session, lambda: self._watch_now(args, session))
        return self._watch_now(args, session)

    def _watch_now(self, args: Sequence[bytes], session: Session) -> Outcome:
        watched = session.watched
        if watched is None:
            watched = session.watched = {}
            session.watched_bytes = 0
        live = self._store.live
        entry = self._store.entry
        for key in args:
            if key not in watched:
                size = session.watched_bytes + len(key) + ARGUMENT_OVERHEAD
                if size > self.max_bytes:
                    return Error(f"ERR too many watched keys: at most {self.max_bytes} bytes "
                                 f"of them, each key counting its length plus "
                                 f"{ARGUMENT_OVERHEAD}")
                session.watched_bytes = size
                watched[key] = (_version(entry(key)), live(key) is not None)
        return OK

    def _touched(self, key: bytes, held: Tuple[Optional[Mark], bool]) -> bool:
        """Whether ``key`` changed since WATCH saw it as ``held``: another
        version, or readable then and expired now. A key that had already
        expired when watched, and is reclaimed since, has not changed, as in
        Redis."""
        version, was_live = held
        if _version(self._store.entry(key)) != version:
            return True
        return was_live and self._store.live(key) is None

    def _unwatch(self, args: Sequence[bytes], session: Session) -> Outcome:
        session.watched = None
        return OK


def _version(entry: Optional[Entry]) -> Optional[Mark]:
    """What WATCH remembers of a key: its entry's mark (None: absent), not
    the entry, whose value it would keep alive."""
    return None if entry is None else mark_of(entry)


def _checked(handler: Callable[[Sequence[bytes], Session], Outcome],
             least: int, most: int) -> Command:
    def command(request: Sequence[bytes], session: Session) -> Outcome:
        count = len(request) - 1
        if count < least or (most >= 0 and count > most):
            return wrong_arity(request[0])
        return handler(request[1:], session)

    return command


def _doomed_on_arity(name: bytes, command: Command, least: int, most: int) -> Command:
    """``command`` inside MULTI: a wrong number of arguments dooms the
    transaction, as Redis checks arity before it looks at MULTI; an EXEC
    with arguments ends it then and there, as in Redis."""

    def inside(request: Sequence[bytes], session: Session) -> Outcome:
        count = len(request) - 1
        if count < least or (most >= 0 and count > most):
            error = wrong_arity(request[0])
            if session.multi is not None:
                session.multi.failed = True
                if name == b"EXEC":
                    session.commands = session.multi.table
                    session.multi = session.watched = None
                    return Error(
                        "EXECABORT Transaction discarded because of: " + error.message[4:]
                    )
            return error
        return command(request, session)

    return inside
