"""The command layer shared by every front end: requests in, replies out.

Front ends (the text protocol now, RESP later) parse bytes into a
:class:`Request` and format the :class:`Reply` they get back; this module
decides what each command means and holds no data and no networking of its
own. A reply may also be a Deferred-like object for commands that must wait
(for a disk commit or a quorum); front ends keep replies in request order.
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

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

OK = Status(b"OK")
PONG = Status(b"PONG")
GOODBYE = Status(b"OK", close=True)
NIL = Bulk(None)


def wrong_arity(name: bytes) -> Error:
    return Error(
        "ERR wrong number of arguments for '{}' command".format(
            name.decode("ascii", "replace").lower()
        )
    )


class Dispatcher:
    """Runs requests against a store.

    ``status`` returns the lines of the STATUS report; the node supplies it so
    this module needs to know nothing about peers.
    """

    def __init__(self, store: Store, status: Callable[[], List[str]]) -> None:
        self._store = store
        self._status = status
        # name -> (handler, minimum args, maximum args or -1 for no limit)
        self._table: Dict[bytes, Tuple[Callable[[Tuple[bytes, ...]], Reply], int, int]] = {
            b"GET": (self._get, 1, 1),
            b"SET": (self._set, 2, 2),
            b"DEL": (self._del, 1, -1),
            b"PING": (self._ping, 0, 1),
            b"QUIT": (self._quit, 0, 0),
            b"STATUS": (self._status_report, 0, 0),
        }

    def execute(self, request: Request) -> Reply:
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

    def _get(self, args: Tuple[bytes, ...]) -> Reply:
        return Bulk(self._store.get(args[0]))

    def _set(self, args: Tuple[bytes, ...]) -> Reply:
        key = args[0]
        if not key:
            return Error("ERR empty key")
        self._store.set(key, args[1])
        return OK

    def _del(self, args: Tuple[bytes, ...]) -> Reply:
        deleted = 0
        for key in args:
            if key:
                deleted += self._store.delete(key)
        return Integer(deleted)

    def _ping(self, args: Tuple[bytes, ...]) -> Reply:
        return Bulk(args[0]) if args else PONG

    def _quit(self, args: Tuple[bytes, ...]) -> Reply:
        return GOODBYE

    def _status_report(self, args: Tuple[bytes, ...]) -> Reply:
        return Lines(tuple(self._status()))
