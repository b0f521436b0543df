"""The command layer shared by every front end: requests in, replies out.

Front ends (the text protocol now, RESP later) parse bytes into a
:class:`Request` and format the :class:`Reply` they get back; this module
decides what each command means and holds no data and no networking of its
own. A write's reply may be a Deferred that fires once the write is
committed to disk (see :mod:`distkv.journal`); front ends keep replies in
request order. While a node that started without its data is still loading
it from its peers, reads and deletes are refused with ``LOADING`` (as Redis
does while it loads its dump); ``SET`` is accepted, since a new version wins
or loses by the same rule whenever the older data arrives.
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from distkv.store import Store


class Request(NamedTuple):
    """One parsed command: its upper-cased name and its arguments."""

    name: bytes
    args: Tuple[bytes, ...]


class Status(NamedTuple):
    """A simple success line such as ``OK`` or ``PONG``."""

    text: bytes
    close: bool = False


class Bulk(NamedTuple):
    """A value, or ``None`` for a missing key."""

    value: Optional[bytes]


class Integer(NamedTuple):
    number: int


class Error(NamedTuple):
    """A refusal; ``message`` starts with its code word, e.g. ``ERR ...``."""

    message: str


class Lines(NamedTuple):
    """A multi-line report (status); the text protocol ends it with ``END``."""

    lines: Tuple[str, ...]


Reply = Union[Status, Bulk, Integer, Error, Lines]
#: What a command returns: a reply now, or one once the write is durable.
Outcome = Union[Reply, "Deferred[Reply]"]
Durable = Callable[[], Optional["Deferred[None]"]]

OK = Status(b"OK")
PONG = Status(b"PONG")
GOODBYE = Status(b"OK", close=True)
NIL = Bulk(None)
LOADING = Error("LOADING this node started without its data and is still syncing it from its peers")


def _no_wait() -> Optional[Deferred[None]]:
    return None


def _never() -> bool:
    return False


def _not_persisted(failure: Failure) -> Reply:
    return Error(str(failure.value))


def wrong_arity(name: bytes) -> Error:
    return Error(
        "ERR wrong number of arguments for '{}' command".format(
            name.decode("ascii", "replace").lower()
        )
    )


class Dispatcher:
    """Runs requests against a store.

    ``status`` returns the lines of the STATUS report; the node supplies it so
    this module needs to know nothing about peers. ``durable`` returns None
    when every change is already committed, or a Deferred that fires once it
    is. ``loading`` is true while the node must not answer reads.
    """

    def __init__(
        self,
        store: Store,
        status: Callable[[], List[str]],
        durable: Durable = _no_wait,
        loading: Callable[[], bool] = _never,
    ) -> None:
        self._store = store
        self._status = status
        self._durable = durable
        self._loading = loading
        # name -> (handler, minimum args, maximum args or -1 for no limit)
        self._table: Dict[bytes, Tuple[Callable[[Tuple[bytes, ...]], Outcome], int, int]] = {
            b"GET": (self._get, 1, 1),
            b"SET": (self._set, 2, 2),
            b"DEL": (self._del, 1, -1),
            b"PING": (self._ping, 0, 1),
            b"QUIT": (self._quit, 0, 0),
            b"STATUS": (self._status_report, 0, 0),
        }

    def execute(self, request: Request) -> Outcome:
        spec = self._table.get(request.name)
        if spec is None:
            return Error(
                "ERR unknown command '{}'".format(
                    request.name[:64].decode("utf-8", "replace")
                )
            )
        handler, least, most = spec
        count = len(request.args)
        if count < least or (most >= 0 and count > most):
            return wrong_arity(request.name)
        return handler(request.args)

    def _after_commit(self, reply: Reply) -> Outcome:
        waiting = self._durable()
        if waiting is None:
            return reply
        return waiting.addCallbacks(lambda _: reply, _not_persisted)

    def _get(self, args: Tuple[bytes, ...]) -> Outcome:
        if self._loading():
            return LOADING
        return Bulk(self._store.get(args[0]))

    def _set(self, args: Tuple[bytes, ...]) -> Outcome:
        key = args[0]
        if not key:
            return Error("ERR empty key")
        self._store.set(key, args[1])
        return self._after_commit(OK)

    def _del(self, args: Tuple[bytes, ...]) -> Outcome:
        if self._loading():
            return LOADING
        deleted = 0
        for key in args:
            if key:
                deleted += self._store.delete(key)
        return self._after_commit(Integer(deleted))

    def _ping(self, args: Tuple[bytes, ...]) -> Reply:
        return Bulk(args[0]) if args else PONG

    def _quit(self, args: Tuple[bytes, ...]) -> Reply:
        return GOODBYE

    def _status_report(self, args: Tuple[bytes, ...]) -> Reply:
        return Lines(tuple(self._status()))
