"""The command layer shared by every front end: requests in, replies out.

Front ends (the text protocol and RESP2) parse bytes into a
:class:`~distkv.front.replies.Request` and encode the reply they get back; this
module decides what each command means and holds no data and no networking of
its own. The data commands live here; the server commands that clients send
on connect (INFO, COMMAND, CONFIG, CLIENT, HELLO) are in
:mod:`distkv.front.servercmds`.

A write's reply may be :class:`Pending`: the reply, and the journal batch
(see :mod:`distkv.disk.journal`) whose commit it must wait for; front ends keep
replies in request order.
While a node that started without its data is still loading it from its
peers, data commands are refused with ``LOADING`` (as Redis does while it
loads its dump): reads, because the data is not there yet, and writes, because
until a peer has synced it the node's clock may lag the cluster's.

Every command declares the access it needs (open, read or write) where it
enters the table, and each connection runs its requests from the table for
its rights (see :mod:`distkv.front.access`).
"""

from __future__ import annotations

import bisect
import time
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from distkv.disk.journal import Batch
from distkv.front import backupcmd, countercmds, expirecmds, keycmds, levelcmds, replcmds, servercmds
from distkv.front.access import OPEN, READ, WRITE, CommandTables
from distkv.front.auth import Accounts, User
from distkv.front.cmdstats import CommandStats
from distkv.front.glob import Glob, compile_glob
from distkv.front.replies import (
    GOODBYE,
    LOADING,
    NIL,
    NOT_INTEGER,
    OK,
    PONG,
    SYNTAX,
    Array,
    Error,
    Integer,
    Lines,
    Map,
    Reply,
    Request,
    Session,
    Stats,
    Status,
    bulk,
    c_string,
    int32,
    raw_text,
    strict_int,
    wrong_arity,
)
from distkv.front.transactions import Transactions
from distkv.store.store import Store

__all__ = [
    "GOODBYE", "LOADING", "NIL", "OK", "PONG", "Array", "Dispatcher", "Error",
    "Integer", "Lines", "Map", "Outcome", "Pending", "Reply", "Request", "Session", "Status", "wrong_arity",
]


class Pending(NamedTuple):
    """A reply to send once ``batch`` is committed (an error instead if it fails)."""

    batch: Batch
    reply: Reply


#: What a command returns: a reply now, or one once the write is durable.
Outcome = Union[Reply, Pending]
Durable = Callable[[], Optional[Batch]]
#: ``handler(args, session)``: runs a command given its arguments, once the
#: dispatcher has checked how many there are.
Handler = Callable[[Sequence[bytes], Session], Outcome]
#: ``command(request, session)``: runs a whole request, ``request[0]`` being
#: the command's name, and refuses a wrong number of arguments itself.
Command = Callable[[Sequence[bytes], Session], Outcome]

#: A command's entry in the table: handler, least and most arguments, and
#: the access it needs (see :mod:`distkv.front.access`).
Entry = Tuple[Handler, int, int, str]


def checked(handler: Handler, least: int, most: int) -> Command:
    """``handler`` as a :data:`Command`: Redis's arity error when the request
    has fewer than ``least`` arguments or (``most`` >= 0) more than ``most``."""

    def command(request: Sequence[bytes], session: Session) -> Outcome:
        count = len(request) - 1
        if count < least or (most >= 0 and count > most):
            return wrong_arity(request[0])
        return handler(request[1:], session)

    return command


def scan_cursor(text: bytes) -> Optional[int]:
    """A SCAN cursor read as Redis reads one (``strtoul``): decimal digits,
    an optional sign first; a negative one wraps around 2**64; nothing at
    all is 0. None for anything else."""
    if not text:
        return 0  # strtoul reads nothing, and Redis takes that as 0
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits.isdigit() or not digits.isascii():
        return None
    value = int(digits)
    if value >= 1 << 64:
        return None
    return (1 << 64) - value if text[:1] == b"-" and value else value


def glob_regex(pattern: bytes) -> Glob:
    """Redis's glob (``* ? [abc] [^a] [a-z] \\x``), compiled; its ``match(key)``
    says whether a key matches, in time linear in the key (see :mod:`distkv.front.glob`)."""
    return compile_glob(pattern)


#: What a node answers while it reads its data dir: the connection's own
#: commands (Redis's commands flagged ``loading``, and CONSISTENCY; and PING, which Redis refuses
#: then but which DistKV answers, so a liveness check sees the process up), and
#: the reports that show the reading's progress. Everything that touches the
#: data, or the member list read with it, answers ``LOADING``.
WHILE_READING = frozenset([
    b"AUTH", b"HELLO", b"QUIT", b"PING", b"ECHO", b"SELECT", b"TIME", b"INFO", b"STATUS",
    b"COMMAND", b"CLIENT", b"CONFIG", b"CONSISTENCY",
])


class Dispatcher:
    """Runs requests against a store.

    ``status`` returns the lines of the STATUS report and ``info`` the node's
    own INFO sections; the node supplies both, so this module needs to know
    nothing about peers. ``durable`` returns None when every change is already
    committed, or the journal batch that will hold it. ``loading`` is true while
    the node must not answer reads.
    """

    def __init__(
        self,
        store: Store,
        status: Callable[[], List[str]],
        durable: Optional[Durable] = None,
        info: Callable[[], Dict[str, List[Tuple[str, object]]]] = dict,
        stats: Optional[Stats] = None,
        accounts: Optional[Accounts] = None,
        max_transaction: int = 1 << 20,
    ) -> None:
        self._store = self.store = store
        #: The largest request, hence the largest key and value together,
        #: that a command may store (the node's --max-request).
        self.max_request = 1 << 20
        #: The wall clock, in seconds (TIME); the node passes its reactor's.
        self.seconds: Callable[[], float] = time.time
        #: Who may connect, and the authentication counters.
        self.accounts = accounts if accounts is not None else Accounts()
        #: The store's clock: a front end holds it over a batch of requests
        #: (see HybridClock.hold).
        self.clock = store.clock
        self._status = status
        #: The journal's batch for the writes just made (None: no data dir).
        self.durable = self._durable = durable
        #: True while data commands must be refused with LOADING.
        self.loading = False
        #: The error every write gets while the node must not write (its
        #: clock is too far ahead of a peer's: see :mod:`distkv.cluster.skew`).
        self.write_refusal: Optional[Error] = None
        #: WAIT's signal: the peers' acknowledgements of this node's writes
        #: (the node sets it); None: no peers, WAIT answers 0.
        self.replicas: Optional[replcmds.Replicas] = None
        self.info = info
        self.stats = stats if stats is not None else Stats(0.0)
        #: Requests by command name, with metrics on (see
        #: :mod:`distkv.front.cmdstats`); None: not counted.
        self.tally: Optional[CommandStats] = None
        #: The member commands' way to the node (CLUSTER, LEAVE, MEMBERS);
        #: None: they answer that there is no cluster.
        self.cluster: Optional[servercmds.ClusterControl] = None
        #: BACKUP's runner (the node sets it when it has a data dir).
        self.backups: Optional[backupcmd.Backups] = None
        #: SET's options and the expiry commands (set by expirecmds.table).
        self.expiry: expirecmds.ExpiryCommands
        #: What CONFIG GET reports (lower-case names); the node fills it in.
        self.config: Dict[bytes, bytes] = dict(servercmds.DEFAULT_CONFIG)
        self._scan: Tuple[int, List[Tuple[int, bytes]]] = (-1, [])
        self._pending_ok: Optional[Pending] = None
        self._tables = CommandTables(self.accounts)
        #: Every command by its upper-case name. A front end may look a name
        #: up here itself (see :meth:`run`).
        self.commands: Dict[bytes, Command] = self._tables.full
        # name -> (minimum args, maximum args or -1 for no limit), for COMMAND
        self._arity = self._tables.arity
        #: The access each command needs (see :mod:`distkv.front.access`), by name.
        self.access = self._tables.access
        # Nearly every request: these two check their own arity, which
        # spares them a call through checked() on CPython.
        self.add(b"GET", self._get, 1, 1, READ)
        self.add(b"SET", self._set, 2, -1, WRITE)
        handlers: Dict[bytes, Entry] = {
            b"DEL": (self._del, 1, -1, WRITE),
            b"EXISTS": (self._exists, 1, -1, READ),
            b"MGET": (self._mget, 1, -1, READ),
            b"MSET": (self._mset, 2, -1, WRITE),
            b"DBSIZE": (self._dbsize, 0, 0, READ),
            b"KEYS": (self._keys, 1, 1, READ),
            b"SCAN": (self._scan_command, 1, -1, READ),
            b"PING": (self._ping, 0, 1, READ),
            b"ECHO": (self._echo, 1, 1, READ),
            b"QUIT": (self._quit, 0, 0, OPEN),
            b"SELECT": (self._select, 1, 1, READ),
            b"STATUS": (self._status_report, 0, 0, READ),
        }
        handlers.update(servercmds.table(self))
        handlers.update(keycmds.table(self))
        handlers.update(replcmds.table(self))
        handlers.update(expirecmds.table(self))
        handlers.update(backupcmd.table(self))
        #: The consistency levels: the node's, and each connection's
        #: (see :mod:`distkv.front.levelcmds`).
        self.levels = levelcmds.Levels(self)
        handlers.update(levelcmds.table(self.levels))
        for name, (handler, least, most, access) in handlers.items():
            self.add(name, checked(handler, least, most), least, most, access)
        countercmds.register(self)
        #: MULTI, EXEC, DISCARD, WATCH, UNWATCH; ``max_transaction`` bounds
        #: what one transaction may queue (see :mod:`distkv.front.transactions`).
        self.transactions = Transactions(self, store, max_transaction)

    def add(self, name: bytes, command: Command, least: int, most: int, access: str) -> None:
        """Put ``command`` in the tables under the upper-case ``name``: it
        takes ``least`` to ``most`` (-1: any number of) arguments, which it
        checks itself (see :func:`checked`), and needs ``access``."""
        self._tables.add(name, command, least, most, access)

    def session(self, kind: str) -> Session:
        """A new client connection's session: who it is before any AUTH, and
        the command table for that."""
        session = Session(kind)
        self._become(session, self.accounts.first_user())
        return session

    def _become(self, session: Session, user: Optional[User]) -> None:
        session.user = user
        session.commands = self.levels.table(self._tables.for_user(user), session)

    def base_table(self, session: Session) -> Dict[bytes, Command]:
        """``session``'s command table for its rights, at level ONE."""
        return self._tables.for_user(session.user)

    def login(self, session: Session, name: Optional[bytes], password: bytes) -> Reply:
        """AUTH: ``session`` becomes the user ``name`` (None: ``default``) if
        ``password`` is theirs; a failure leaves it as it was."""
        user = self.accounts.login(name, password, session.address)
        if isinstance(user, str):
            return Error(user)
        self._become(session, user)
        return OK

    def hold(self, reply: Error) -> None:
        """Answer ``reply`` to every command but :data:`WHILE_READING`'s
        until :meth:`release` (the node is reading its data dir)."""
        self._tables.hold(WHILE_READING, reply)
        self.levels.rewrap()

    def release(self) -> None:
        self._tables.release()
        self.levels.rewrap()

    @property
    def holding(self) -> bool:
        """True between :meth:`hold` and :meth:`release`."""
        return self._tables.held

    def persist_with(self, durable: Durable) -> None:
        """Writes are answered once ``durable`` says they are committed (the
        node's journal, opened once its data dir is read)."""
        # Both names: INCR's handler reads the public one (see countercmds).
        self.durable = self._durable = durable

    def refusal(self, write: bool) -> Optional[Error]:
        """Why a command (a ``write`` or not) cannot run now, or None: the
        node is loading, or its clock is too far ahead to stamp writes. The
        hot paths (SET, INCR) make these checks inline."""
        if self.loading:
            return LOADING
        if write and self.write_refusal is not None:
            return self.write_refusal
        return None

    def store_size(self) -> int:
        return len(self._store)

    def names(self) -> List[bytes]:
        return sorted(self.commands)

    def arity(self, name: bytes) -> int:
        """Redis's arity: the count with the name, negative for "at least"."""
        least, most = self._arity[name]
        return least + 1 if most == least else -(least + 1)

    def execute(self, request: Request, session: Optional[Session] = None) -> Outcome:
        """Run one request and count it (the text protocol's way; RESP runs
        a read's requests itself, with the same counting)."""
        self.stats.commands_processed += 1
        tally = self.tally
        if tally is None:
            return self.run((request.name, *request.args), session or _INTERNAL)
        name = tally.name(request.name)
        samples = tally.sample()
        began = tally.timer() if samples is not None else 0.0
        outcome = self.run((request.name, *request.args), session or _INTERNAL)
        if samples is not None:
            samples.append((name, tally.timer() - began))
        tally.ran(name, 1, samples)
        if type(outcome) is Error:
            tally.failure(name)
        return outcome

    def run(self, request: Sequence[bytes], session: Session) -> Outcome:
        """Run ``request``, its command's name (any case) and then its
        arguments, for ``session``.

        The caller counts it in ``stats.commands_processed`` (a front end
        counts a whole read's requests at once). A front end may instead look
        the name up in :attr:`commands` itself, falling back on
        :meth:`command`, and call what it finds: the same thing, with one
        Python call fewer per request.
        """
        table = session.commands or self.commands
        try:
            command = table[request[0]]
        except KeyError:  # clients mostly send upper case already
            command = self.command(request[0], table)
        return command(request, session)

    def command(self, name: bytes, table: Optional[Dict[bytes, Command]] = None) -> Command:
        """The command called ``name``, in any case, from ``table`` (a
        session's; by default the full one); for a name that is no command,
        one that answers so."""
        return (table or self.commands).get(name.upper(), self.unknown)

    def unknown(self, request: Sequence[bytes], session: Session) -> Outcome:
        """Redis's echo of an unknown command: its name and the start of its
        arguments, 128 bytes of each at most, as C strings (cut at a NUL)."""
        listed = b""
        for arg in request[1:]:
            if len(listed) >= 128:
                break
            listed += b"'" + c_string(arg)[: 128 - len(listed)] + b"' "
        name = raw_text(c_string(request[0])[:128])
        return Error(f"ERR unknown command '{name}', with args beginning with: {raw_text(listed)}")

    def after_commit(self, reply: Reply) -> Outcome:
        """``reply``, sent once the writes just made are committed."""
        return self._after_commit(reply)

    def _after_commit(self, reply: Reply) -> Outcome:
        durable = self._durable
        if durable is None:
            return reply
        batch = durable()
        if batch is None:
            return reply
        if reply is OK:  # most writes of a turn: one shared Pending per batch
            pending = self._pending_ok
            if pending is None or pending.batch is not batch:
                pending = self._pending_ok = Pending(batch, OK)
            return pending
        return Pending(batch, reply)

    def _get(self, request: Sequence[bytes], session: Session) -> Outcome:
        if len(request) != 2:
            return wrong_arity(request[0])
        if self.loading:
            return LOADING
        value = self._store.get(request[1])
        return NIL if value is None else value  # bulk(value), without the call

    def _set(self, request: Sequence[bytes], session: Session) -> Outcome:
        if len(request) != 3:
            if len(request) < 3:
                return wrong_arity(request[0])
            return self.expiry.set(request, session)  # NX, XX, EX, GET...
        if self.loading:
            return LOADING
        if self.write_refusal is not None:
            return self.write_refusal
        self._store.set(request[1], request[2])
        if self._durable is None:
            return OK
        return self._after_commit(OK)

    def _del(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self.loading:
            return LOADING
        if self.write_refusal is not None:
            return self.write_refusal
        deleted = 0
        for key in args:
            deleted += self._store.delete(key)
        return self._after_commit(Integer(deleted))

    def _exists(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self.loading:
            return LOADING
        store = self._store
        return Integer(sum(1 for key in args if key in store))

    def _mget(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self.loading:
            return LOADING
        get = self._store.get
        return Array(tuple(bulk(get(key)) for key in args))

    def _mset(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self.loading:
            return LOADING
        if len(args) % 2:
            return wrong_arity(b"mset")
        if self.write_refusal is not None:
            return self.write_refusal
        for index in range(0, len(args), 2):
            self._store.set(args[index], args[index + 1])
        return self._after_commit(OK)

    def _dbsize(self, args: Sequence[bytes], session: Session) -> Outcome:
        return Integer(self._store.live_count())

    def _keys(self, args: Sequence[bytes], session: Session) -> Outcome:
        if self.loading:
            return LOADING
        keys = self._store.live_keys()
        if args[0] == b"*":  # Redis's shortcut: every key, the empty one included
            return Array(tuple(keys))
        pattern = compile_glob(args[0])
        match = pattern.match
        return Array(tuple(key for key in keys if match(key)))

    def _scan_command(self, args: Sequence[bytes], session: Session) -> Outcome:
        """SCAN cursor [MATCH pattern] [COUNT n], in CRC-32 order of the keys.

        The cursor is the next hash to visit, so every key present for the
        whole iteration is returned (new ones may or may not be), as Redis
        promises. A snapshot of the hashes is reused while nothing changed.
        """
        if self.loading:
            return LOADING
        cursor = scan_cursor(args[0])
        if cursor is None:
            return Error("ERR invalid cursor")
        count = 10
        match: Optional[Glob] = None
        strings = True
        options = args[1:]
        # In Redis's order: each option in turn, the first bad one refused.
        for index in range(0, len(options), 2):
            if index + 1 >= len(options):
                return SYNTAX
            option, value = options[index].upper(), options[index + 1]
            if option == b"MATCH":
                # "*" is every key, the empty one included, as in Redis
                match = None if value == b"*" else compile_glob(value)
            elif option == b"COUNT":
                number = strict_int(value)
                if number is None:
                    return NOT_INTEGER
                if number < 1:
                    return SYNTAX
                count = number
            elif option == b"TYPE":
                strings = value.lower() == b"string"  # the one type DistKV has
            else:
                return SYNTAX
        order = self._scan_order(fresh=cursor == 0)
        start = position = bisect.bisect_left(order, (cursor, b""))
        found: List[Reply] = []
        store = self._store
        while position < len(order):
            # Stop after COUNT keys, but never between two keys of one hash.
            if position - start >= count and order[position][0] != order[position - 1][0]:
                break
            key = order[position][1]
            if strings and key in store and (match is None or match.match(key)):
                found.append(key)
            position += 1
        if position >= len(order):
            following = 0
            self._scan = (-1, [])  # done: let the snapshot go
        else:
            following = order[position - 1][0] + 1
        return Array((b"%d" % following, Array(tuple(found))))

    def _scan_order(self, fresh: bool) -> List[Tuple[int, bytes]]:
        changed = self._store.changes
        built, order = self._scan
        if built != changed and (fresh or not order):
            order = sorted((zlib.crc32(key), key) for key in self._store.live_keys())
            self._scan = (changed, order)
        return order

    def _ping(self, args: Sequence[bytes], session: Session) -> Outcome:
        return args[0] if args else PONG

    def _echo(self, args: Sequence[bytes], session: Session) -> Outcome:
        return args[0]

    def _quit(self, args: Sequence[bytes], session: Session) -> Outcome:
        return GOODBYE

    def _select(self, args: Sequence[bytes], session: Session) -> Outcome:
        index = int32(args[0])
        if isinstance(index, Error):
            return index
        return OK if index == 0 else Error("ERR DB index is out of range")

    def _status_report(self, args: Sequence[bytes], session: Session) -> Outcome:
        return Lines(tuple(self._status()))


#: The session of requests the node runs itself: every right.
_INTERNAL = Session("internal")

