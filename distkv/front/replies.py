"""What commands answer, independent of any wire format, and per-connection state.

The command layer returns these values; each front end encodes them its own
way (the text protocol as lines, RESP2 with Redis's reply types). Errors carry
their code word first (``ERR ...``, ``LOADING ...``), as Redis's do.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple, Union

from distkv.front.auth import OPEN_DEFAULT
from distkv.store.counter import integer


class Request(NamedTuple):
    """One parsed command: its upper-cased name and its arguments."""

    name: bytes
    args: Tuple[bytes, ...]


class Status(NamedTuple):
    """A simple success line such as ``OK`` or ``PONG``."""

    text: bytes
    close: bool = False


class Nil:
    """No value: a missing key (RESP's nil, ``(nil)`` in the text protocol).

    A value that is there, or any other bulk string (a key, a name), is
    replied as the ``bytes`` themselves: no object to build for a GET's reply.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "NIL"


class NilArray:
    """No array: what ``EXEC`` answers when a watched key was touched
    (RESP2's ``*-1``, RESP3's ``_``, ``(nil)`` in the text protocol)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NIL_ARRAY"


#: An integer reply (RESP's ``:``) is a plain ``int``, as a bulk string is
#: plain ``bytes``: no reply object to build (INCR's reply is its result).
#: ``Integer(n)`` names it where that reads better; a ``bool`` is no reply.
Integer = int


#: An integer reply already written out in decimal: a plain ``tuple`` (never
#: a subclass: the reply types below are NamedTuples) whose first field is
#: the integer's text. INCR answers the counter entry it wrote, whose value
#: GET reads is the new number's text (see
#: :meth:`~distkv.store.store.Store.increment`), so RESP writes ``:``, that
#: text and CR LF as they are rather than formatting the number a second
#: time. RESP (its fast path, :func:`~distkv.front.resp.encode`, arrays, so
#: EXEC's replies), the text protocol and :func:`~distkv.front.replyqueue.reply_size`
#: know it; :func:`integer_text` reads it.
IntegerText = Tuple[Any, ...]


def integer_text(reply: IntegerText) -> bytes:
    """The decimal text of an :data:`IntegerText` reply."""
    text: bytes = reply[0]
    return text


class Error(NamedTuple):
    """A refusal; ``message`` starts with its code word, e.g. ``ERR ...``."""

    message: str


class Lines(NamedTuple):
    """A multi-line report (STATUS, INFO): text lines, or a RESP bulk string."""

    lines: Tuple[str, ...]


class Array(NamedTuple):
    """Several replies (MGET, KEYS, SCAN): RESP arrays; lines then ``END`` in text."""

    items: Tuple[Reply, ...]


class Map(NamedTuple):
    """Key-value pairs, flat (HELLO, CONFIG GET): a RESP3 map, a RESP2 array."""

    items: Tuple[Reply, ...]


Reply = Union[bytes, Nil, NilArray, Status, int, Error, Lines, Array, Map, IntegerText]

OK = Status(b"OK")
PONG = Status(b"PONG")
GOODBYE = Status(b"OK", close=True)
NIL = Nil()
NIL_ARRAY = NilArray()
QUEUED = Status(b"QUEUED")

LOADING = Error(
    "LOADING this node is syncing its data from its peers and serves once it is current"
)
#: What data commands get while the node reads its data dir: Redis's words.
READING = Error("LOADING Redis is loading the dataset in memory")
SYNTAX = Error("ERR syntax error")
NOT_INTEGER = Error("ERR value is not an integer or out of range")


def strict_int(text: bytes) -> Optional[int]:
    """``text`` read as Redis reads an integer argument (``string2ll``): a
    decimal number of at most 20 characters written the one usual way, with
    no ``+``, space, ``_`` or leading zero (``-`` for a negative one, never
    ``-0``), that fits a signed 64-bit integer; None for anything else.
    Python's ``int`` alone would take ``+4``, `` 4``, ``04`` and ``0_4``,
    which Redis refuses."""
    return integer(text)  # the store reads a counter's value the same way


def int32(text: bytes) -> Union[int, Error]:
    """``text`` as Redis reads an ``int`` argument (``getIntFromObject``):
    the number, or the error Redis gives."""
    value = strict_int(text)
    if value is None:
        return NOT_INTEGER
    if not -(1 << 31) <= value < 1 << 31:
        return Error("ERR value is out of range, value must between -2147483648 and 2147483647")
    return value


def c_string(text: bytes) -> bytes:
    """``text`` as C's ``%s`` prints it in Redis's errors: up to its first NUL."""
    end = text.find(b"\0")
    return text if end < 0 else text[:end]


def raw_text(text: bytes) -> str:
    """Client bytes to quote in an :class:`Error`: they go back to the client
    as they came (the front ends encode errors with ``surrogateescape``)."""
    return text.decode("utf-8", "surrogateescape")


def bulk(value: Optional[bytes]) -> Union[bytes, Nil]:
    """``value`` as a reply: the bytes themselves, or :data:`NIL` for None."""
    return NIL if value is None else value


def wrong_arity(name: bytes) -> Error:
    return Error(
        "ERR wrong number of arguments for '{}' command".format(
            name.decode("ascii", "replace").lower()
        )
    )


_ids: Iterator[int] = itertools.count(1)


class Session:
    """One client connection as the command layer sees it."""

    __slots__ = ("id", "name", "kind", "address", "protocol", "user", "commands", "multi",
                 "watched", "watched_bytes", "peer", "local", "since", "hang_up",
                 "read_level", "write_level", "waiting", "settling")

    def __init__(self, kind: str, address: str = "") -> None:
        self.id = next(_ids)
        self.name = b""
        self.kind = kind
        self.address = address
        #: The client's and our end as ``host:port`` (CLIENT LIST, CLIENT KILL).
        self.peer = ""
        self.local = ""
        #: When the client connected (the node's clock), for CLIENT LIST's age.
        self.since = 0.0
        #: Closes the client's connection (CLIENT KILL); None for a session
        #: with no connection.
        self.hang_up: Optional[Callable[[], None]] = None
        #: The RESP version this client asked for with HELLO (2 until then).
        self.protocol = 2
        #: Who the client is (a :class:`distkv.front.auth.User`); None until
        #: it authenticates on a node that requires a password. A session
        #: made here is the node's own (or a test's): every right.
        self.user: Any = OPEN_DEFAULT
        #: The command table this client runs its requests from, by
        #: upper-case name (:meth:`distkv.front.commands.Dispatcher.session`
        #: fills it in: the table for its rights). Empty: the dispatcher's
        #: own, every command allowed (sessions of the node itself, of tests).
        self.commands: Dict[bytes, Any] = {}
        #: The transaction under way since MULTI (a
        #: :class:`distkv.front.transactions.Transaction`), or None.
        self.multi: Any = None
        #: The keys WATCHed, each with the version it held then (None: absent).
        self.watched: Optional[Dict[bytes, Any]] = None
        #: What the watched keys count against the transaction bound.
        self.watched_bytes = 0
        #: The connection's consistency levels (CONSISTENCY); None: the node's.
        self.read_level: Optional[str] = None
        self.write_level: Optional[str] = None
        #: A command of this connection that has not run yet (a level's
        #: fetch, a LINEARIZABLE round): done once it has. The front end
        #: takes it and runs no further request until then, so a
        #: connection's commands run in the order it sent them.
        self.waiting: Any = None
        #: The connection's blind writes at a level whose fetch is not
        #: settled yet, oldest first (see :mod:`distkv.front.blindwrites`).
        self.settling: Any = None


class Stats:
    """Counters for INFO, shared by every connection of a node."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.connected_clients = 0
        self.connections_received = 0
        self.commands_processed = 0
        #: The client sessions connected now, by id (CLIENT LIST, CLIENT KILL).
        self.clients: Dict[int, Session] = {}
        #: The highest resident size INFO has seen (used_memory_peak).
        self.peak_memory = 0

    def reset(self) -> None:
        """CONFIG RESETSTAT: the totals and the peak start again."""
        self.connections_received = 0
        self.commands_processed = 0
        self.peak_memory = 0

    def connected(self) -> None:
        self.connected_clients += 1
        self.connections_received += 1

    def disconnected(self) -> None:
        self.connected_clients -= 1
