"""The commands a connection runs at LINEARIZABLE, as functions of a key's value.

Each command below becomes an operation of :mod:`distkv.cluster.consensus`: a
function from the key's current value (None: absent) to its new value
(``KEEP``: unchanged; None: deleted) and the reply, run on the value a
majority agreed on and written back to a majority before the reply goes out::

    GET key           EXISTS key          SET key value [NX|XX] [GET]
    SETNX key value   GETSET key value    GETDEL key
    DEL key           UNLINK key          INCR key     DECR key
    INCRBY key n      DECRBY key n

A key's commands are atomic cluster-wide (``SET NX`` from two nodes: one
wins; concurrent ``INCR`` all count), and a connection's run in order: its
next request waits for the round (``session.waiting``, see
:mod:`distkv.front.levelcmds`). Other commands at that level (several keys,
expiries, transactions, flushes...) answer an error saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple, Union

from distkv.cluster.consensus import KEEP, Adjusted, Change, NewValue, Proposer
from distkv.front import blindwrites
from distkv.front.replcmds import Later
from distkv.front.replies import (
    NIL,
    NOT_INTEGER,
    OK,
    SYNTAX,
    Error,
    Integer,
    Reply,
    Session,
    bulk,
    strict_int,
    wrong_arity,
)

if TYPE_CHECKING:
    from distkv.front.commands import Command, Dispatcher, Outcome

OVERFLOW = "ERR increment or decrement would overflow"
_LOW, _HIGH = -(1 << 63), (1 << 63) - 1

#: ``parse(args) -> (change, writes)`` or an Error; args after the key.
Parsed = Union[Tuple[Change, bool], Error]


def _get(args: Sequence[bytes]) -> Parsed:
    return (lambda value: (KEEP, bulk(value))), False


def _exists(args: Sequence[bytes]) -> Parsed:
    return (lambda value: (KEEP, Integer(0 if value is None else 1))), False


def _set(args: Sequence[bytes]) -> Parsed:
    new = args[0]
    options = {arg.upper() for arg in args[1:]}  # repeated ones are fine, as in Redis
    if not options <= {b"NX", b"XX", b"GET"}:
        unknown = [arg for arg in args[1:] if arg.upper() not in (b"NX", b"XX", b"GET")]
        if unknown:
            shown = unknown[0][:40].decode("utf-8", "replace")
            return Error(f"ERR SET option '{shown}' is not available at LINEARIZABLE "
                         "(NX, XX and GET are)")
        return SYNTAX
    if {b"NX", b"XX"} <= options:
        return SYNTAX
    get = b"GET" in options

    def change(value: Optional[bytes]) -> Tuple[NewValue, object]:
        if (b"NX" in options and value is not None) or (b"XX" in options and value is None):
            return KEEP, bulk(value) if get else NIL
        return new, bulk(value) if get else OK

    return change, True


def _setnx(args: Sequence[bytes]) -> Parsed:
    new = args[0]
    return (lambda value: (KEEP, Integer(0)) if value is not None
            else (new, Integer(1))), True


def _getset(args: Sequence[bytes]) -> Parsed:
    new = args[0]
    return (lambda value: (new, bulk(value))), True


def _getdel(args: Sequence[bytes]) -> Parsed:
    return (lambda value: (KEEP if value is None else None, bulk(value))), True


def _del(args: Sequence[bytes]) -> Parsed:
    return (lambda value: (KEEP, Integer(0)) if value is None else (None, Integer(1))), True


def _adder(sign: int, fixed: Optional[int]) -> Callable[[Sequence[bytes]], Parsed]:
    def parse(args: Sequence[bytes]) -> Parsed:
        amount = fixed if fixed is not None else strict_int(args[0])
        if amount is None:
            return NOT_INTEGER
        if sign < 0 and amount == _LOW:
            return Error("ERR decrement would overflow")
        delta = sign * amount

        def change(value: Optional[bytes]) -> Tuple[NewValue, object]:
            number = 0 if value is None else strict_int(value)
            if number is None:
                return KEEP, NOT_INTEGER.message
            total = number + delta
            if not _LOW <= total <= _HIGH:
                return KEEP, OVERFLOW
            return Adjusted(b"%d" % total), Integer(total)  # the expiry stays

        return change, True

    return parse


#: name -> (arguments after the key, parse).
COMMANDS: Dict[bytes, Tuple[int, Callable[[Sequence[bytes]], Parsed]]] = {
    b"GET": (0, _get), b"EXISTS": (0, _exists), b"SETNX": (1, _setnx),
    b"GETSET": (1, _getset), b"GETDEL": (0, _getdel), b"DEL": (0, _del), b"UNLINK": (0, _del),
    b"INCR": (0, _adder(1, 1)), b"DECR": (0, _adder(-1, 1)),
    b"INCRBY": (1, _adder(1, None)), b"DECRBY": (1, _adder(-1, None)),
}
#: Commands with a variable count: SET takes options.
_SET_MOST = 4


def linearized(dispatcher: Dispatcher, proposer: Proposer, name: bytes,
               command: Command) -> Command:
    """``command`` run at LINEARIZABLE (or refused there, saying why)."""
    spec = COMMANDS.get(name)

    def run(request: Sequence[bytes], session: Session) -> Outcome:
        user = session.user
        if dispatcher.loading or user is None or dispatcher.store.group is not None:
            return command(request, session)  # refused anyway, or inside EXEC
        if name == b"SET":
            if len(request) < 3:
                return wrong_arity(name)
            if len(request) > 3 + _SET_MOST:
                return SYNTAX
            parsed = _set(request[2:])
        elif spec is None:
            return Error(f"ERR '{name.decode('ascii', 'replace').lower()}' is not available at "
                         "LINEARIZABLE (single-key GET, EXISTS, SET [NX|XX] [GET], SETNX, GETSET, "
                         "GETDEL, DEL, UNLINK, INCR, DECR, INCRBY and DECRBY are)")
        elif len(request) != 2 + spec[0]:
            if name in (b"DEL", b"UNLINK", b"EXISTS") and len(request) > 2:
                return Error(f"ERR {name.decode()} of several keys is not available at "
                             "LINEARIZABLE: one key per command")
            return wrong_arity(name)
        else:
            parsed = spec[1](request[2:])
        if isinstance(parsed, Error):
            return parsed
        change, writes = parsed
        if writes and not user.can_write:
            return command(request, session)  # NOPERM, as at any level
        refusal = dispatcher.refusal(writes)
        if refusal is not None:
            return refusal
        later = Later()

        def done(reply: object, error: Optional[str]) -> None:
            later.done_with(Error(error) if error is not None else reply)  # type: ignore[arg-type]

        key = request[1]
        # After the connection's blind writes at a level have settled, and
        # its next request only once this has run: in order.
        blindwrites.after_settled(session, lambda: proposer.run(key, change, writes, done))
        if not later.done:
            session.waiting = later
        from distkv.front.commands import Pending  # commands imports levelcmds, which imports us

        return Pending(later, later.reply)

    return run


def refused(name: bytes) -> Command:
    """What a command that cannot run at LINEARIZABLE answers there."""
    message = Error(f"ERR {name.decode('ascii', 'replace').upper()} is not available at "
                    "LINEARIZABLE (CONSISTENCY ONE, QUORUM or ALL for it)")

    def run(request: Sequence[bytes], session: Session) -> Reply:
        return message

    return run
