"""INCR, DECR, INCRBY, DECRBY and INCRBYFLOAT, with Redis 7.0's replies and errors.

The integer commands add to this node's own slot of the key's counter (see
:mod:`distkv.store.counter`), so increments made at once through different
nodes all count once replicated. ``INCRBYFLOAT`` computes as Redis does, in
x87 80-bit extended precision (``long double``: a 64-bit significand),
which Python emulates exactly with fractions (see :func:`long_double`), and
formats the result as Redis's ``%.17Lf`` with trailing zeros cut; it then
writes the result as ``SET`` would (a reset of the counter that saw every
increment held here), so two made at once through two nodes do not add up:
the later wins, as for ``APPEND``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import TYPE_CHECKING, Optional, Sequence, Union

from distkv.front.access import WRITE
from distkv.front.replies import LOADING, NOT_INTEGER, Error, Session, strict_int, wrong_arity
from distkv.store.counter import INT64_MIN

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Outcome

NOT_FLOAT = Error("ERR value is not a valid float")
NAN_OR_INFINITY = Error("ERR increment would produce NaN or Infinity")
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
        self._incr = dispatcher.store.incr

    def incr(self, request: Sequence[bytes], session: Session) -> Outcome:
        # The hot path: _add's steps for INCR, inlined.
        if len(request) != 2:
            return wrong_arity(request[0])
        dispatcher = self.dispatcher
        if dispatcher.loading:
            return LOADING
        if dispatcher.write_refusal is not None:
            return dispatcher.write_refusal
        result = self._incr(request[1], 1)
        if type(result) is int:  # the reply (see replies.Integer); else Redis's error text
            if dispatcher.durable is None:
                return result
            return dispatcher.after_commit(result)
        return Error(str(result))

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
        result = self.store.incr(request[1], amount)
        if type(result) is int:
            return dispatcher.after_commit(result)
        return Error(str(result))

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
        key = request[1]
        store = self.store
        current = store.get(key)
        held: Union[Fraction, str, None] = Fraction(0) if current is None else long_double(current)
        amount = long_double(request[2])
        if held is None or amount is None:
            return NOT_FLOAT
        if isinstance(held, str) or isinstance(amount, str):
            return NAN_OR_INFINITY  # an infinity parsed: the sum is one
        total = _round(held + amount)
        if total is None:
            return NAN_OR_INFINITY
        text = format_long_double(total)
        store.set(key, text, store.expires(key))  # keeps its expiry, as Redis
        return dispatcher.after_commit(text)


# strtold's input: optional sign, then a decimal or hexadecimal number, or
# an infinity or a NaN (any case).
_DECIMAL = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_HEX = re.compile(rb"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?\d+)?\Z")
_INFINITY = re.compile(rb"[+-]?(inf|infinity)\Z", re.IGNORECASE)
_MANTISSA = 64
_MIN_EXP = -16382  # the smallest normal exponent: 2**-16382
_MAX = Fraction(2**_MANTISSA - 1) * Fraction(2) ** (16383 - _MANTISSA + 1)
#: Redis's buffer for a long double read or written (MAX_LONG_DOUBLE_CHARS).
_MAX_CHARS = 5 * 1024


def long_double(text: bytes) -> Union[Fraction, str, None]:
    """``text`` as Redis's ``string2ld`` reads it (``strtold`` in x87
    extended precision): the exact value as a fraction, ``"inf"`` for an
    infinity, or None for what Redis refuses (not a number, a NaN, spaces,
    a value too large or one that underflows to zero)."""
    if not text or len(text) >= _MAX_CHARS:
        return None
    if _INFINITY.match(text):
        return "inf"
    decimal = _DECIMAL.match(text)
    if decimal:
        mantissa, exponent = decimal.group(1), decimal.group(2)
        whole, _, fraction = mantissa.partition(b".")
        value = Fraction(_parse_int(whole + fraction or b"0"), 10 ** len(fraction))
        if exponent:
            power = _parse_int(exponent[1:])
            if power > 20000:
                value = value * 0 if value == 0 else Fraction(10) ** 20000 * value
            elif power < -20000:
                value = Fraction(0) if value == 0 else value / Fraction(10) ** 20000
            else:
                value = value * Fraction(10) ** power
    else:
        hexa = _HEX.match(text)
        if not hexa:
            return None
        mantissa, exponent = hexa.group(1), hexa.group(2)
        whole, _, fraction = mantissa.partition(b".")
        value = Fraction(int(whole + fraction or b"0", 16), 16 ** len(fraction))
        if exponent:
            power = _parse_int(exponent[1:])
            value = value * Fraction(2) ** max(min(power, 20000), -20000)
    if text[:1] == b"-":
        value = -value
    rounded = _round(value)
    if rounded is None or (rounded == 0 and value != 0):
        return None  # ERANGE: overflow, or underflow to zero
    return rounded


#: Digits converted at once between int and text: CPython 3.11 refuses more
#: than 4,300 in one conversion (its guard against CVE-2020-10735), and a
#: long double written in full, or the text INCRBYFLOAT reads, can be longer.
_CHUNK = 4000


def _parse_int(text: bytes) -> int:
    """``int(text)`` for decimal digits after an optional sign, of any length."""
    sign = -1 if text[:1] == b"-" else 1
    digits = text[1:] if text[:1] in (b"-", b"+") else text
    value = 0
    for start in range(0, len(digits), _CHUNK):
        chunk = digits[start:start + _CHUNK]
        value = value * 10 ** len(chunk) + int(chunk)
    return sign * value


def _decimal(number: int) -> str:
    """``str(number)`` for a number >= 0 of any length."""
    if number < 10 ** _CHUNK:
        return str(number)
    high, low = divmod(number, 10 ** _CHUNK)
    return _decimal(high) + str(low).rjust(_CHUNK, "0")


def _round(value: Fraction) -> Optional[Fraction]:
    """``value`` rounded to the nearest long double (ties to even); None
    when it overflows to an infinity."""
    if value == 0:
        return Fraction(0)
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    # The value lies in [2**exponent, 2**(exponent+1)): keep 64 bits from there,
    # fewer below the normal range (subnormals).
    step_exp = max(exponent, _MIN_EXP) - (_MANTISSA - 1)
    step = Fraction(2) ** step_exp
    scaled = magnitude / step
    units = scaled.numerator // scaled.denominator
    rest = scaled - units
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and units % 2):
        units += 1
    result = units * step
    if result > _MAX:
        return None
    return sign * result


def format_long_double(value: Fraction) -> bytes:
    """``value`` as Redis's ``ld2string`` in human mode: ``%.17Lf`` (rounded
    to nearest, ties to even, as glibc does), trailing zeros and a bare
    ``.`` cut, ``-0`` written ``0``."""
    scaled = value * 10**17
    units = scaled.numerator // scaled.denominator
    rest = scaled - units
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and units % 2):
        units += 1
    negative = units < 0 or (units == 0 and value < 0)
    digits = _decimal(abs(units)).rjust(18, "0")
    text = digits[:-17] + "." + digits[-17:]
    text = text.rstrip("0").rstrip(".")
    if negative and text != "0":
        text = "-" + text
    return text.encode("ascii")
