"""INCR, DECR, INCRBY, DECRBY and INCRBYFLOAT, with Redis 7.0's replies and errors.

The integer commands add to this node's own slot of the key's counter (see
:mod:`distkv.store.counter`), so increments made at once through different
nodes all count once replicated. ``INCRBYFLOAT`` computes as Redis does, in
x87 80-bit extended precision (``long double``: a 64-bit significand),
which Python emulates exactly with fractions (see
:mod:`distkv.store.longdouble`), and
formats the result as Redis's ``%.17Lf`` with trailing zeros cut; it then
adds the difference between that result and the value it read, exactly, to
this node's slot (see :meth:`~distkv.store.store.Store.incr_float`), so
that its reply is Redis's and sums made at once through several nodes all
count too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from distkv.front.access import WRITE
from distkv.front.replies import LOADING, NOT_INTEGER, Error, Session, strict_int, wrong_arity
from distkv.store.counter import INT64_MIN

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Outcome

DECREMENT_OVERFLOW = Error("ERR decrement would overflow")


def register(dispatcher: Dispatcher) -> None:
    """Add the counter commands to ``dispatcher``'s tables. Each checks its
    own arity (as GET and SET do), sparing INCR a call through
    :func:`~distkv.front.commands.checked`."""
    commands = CounterCommands(dispatcher)
    dispatcher.add(b"INCR", commands.incr, 1, 1, WRITE)
    dispatcher.add(b"DECR", commands.decr, 1, 1, WRITE)
    dispatcher.add(b"INCRBY", commands.incrby, 2, 2, WRITE)
    dispatcher.add(b"DECRBY", commands.decrby, 2, 2, WRITE)
    dispatcher.add(b"INCRBYFLOAT", commands.incrbyfloat, 2, 2, WRITE)


class CounterCommands:
    """The handlers; ``request`` is the whole request, its name first."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self._increment = dispatcher.store.increment

    def incr(self, request: Sequence[bytes], session: Session) -> Outcome:
        # The hot path: _add's steps for INCR, inlined.
        if len(request) != 2:
            return wrong_arity(request[0])
        dispatcher = self.dispatcher
        if dispatcher.loading:
            return LOADING
        if dispatcher.write_refusal is not None:
            return dispatcher.write_refusal
        result = self._increment(request[1], 1)
        if type(result) is not str:
            # The counter's entry, whose value is the new number's text: the
            # reply as it is (see replies.IntegerText).
            if dispatcher.durable is None:
                return result  # type: ignore[return-value]
            return dispatcher.after_commit(result)  # type: ignore[arg-type]
        return Error(result)  # type: ignore[arg-type]  # Redis's error text

    def _add(self, request: Sequence[bytes], length: int, amount: Optional[int]) -> Outcome:
        if len(request) != length:
            return wrong_arity(request[0])
        dispatcher = self.dispatcher
        refused = dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        if amount is None:  # INCRBY's or DECRBY's argument
            amount = strict_int(request[2])
            if amount is None:
                return NOT_INTEGER
            if request[0].upper() == b"DECRBY":
                if amount == INT64_MIN:
                    return DECREMENT_OVERFLOW
                amount = -amount
        result = self.store.increment(request[1], amount)
        if type(result) is not str:  # the counter's entry (see incr())
            return dispatcher.after_commit(result)  # type: ignore[arg-type]
        return Error(result)  # type: ignore[arg-type]

    def decr(self, request: Sequence[bytes], session: Session) -> Outcome:
        return self._add(request, 2, -1)

    def incrby(self, request: Sequence[bytes], session: Session) -> Outcome:
        return self._add(request, 3, None)

    def decrby(self, request: Sequence[bytes], session: Session) -> Outcome:
        return self._add(request, 3, None)

    def incrbyfloat(self, request: Sequence[bytes], session: Session) -> Outcome:
        if len(request) != 3:
            return wrong_arity(request[0])
        dispatcher = self.dispatcher
        refused = dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        result = self.store.incr_float(request[1], request[2])
        if type(result) is str:
            return Error(result)  # type: ignore[arg-type]
        return dispatcher.after_commit(result)  # type: ignore[arg-type]
