"""Redis's ``long double`` arithmetic, exactly: what ``INCRBYFLOAT`` reads, adds and prints.

Redis reads a value or an increment with ``strtold`` (x87 80-bit extended
precision: a 64-bit significand), adds in that precision and prints the sum
as ``%.17Lf`` with trailing zeros cut. Python emulates this exactly with
fractions: :func:`long_double` reads, :func:`round_long_double` rounds a sum
to the nearest long double, :func:`format_long_double` prints. Plain Python,
used by the counter commands and the counter state alike.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional, Union

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
#: Redis's errors for INCRBYFLOAT.
NOT_FLOAT = "ERR value is not a valid float"
NAN_OR_INFINITY = "ERR increment would produce NaN or Infinity"


def added(held: Optional[bytes], amount: bytes) -> Union[bytes, str]:
    """INCRBYFLOAT's result: the value ``held`` (None: a missing key) plus
    ``amount``, computed and printed as Redis does, or Redis's error text."""
    value: Union[Fraction, str, None] = Fraction(0) if held is None else long_double(held)
    increment = long_double(amount)
    if value is None or increment is None:
        return NOT_FLOAT
    if isinstance(value, str) or isinstance(increment, str):
        return NAN_OR_INFINITY  # an infinity parsed: the sum is one
    total = round_long_double(value + increment)
    if total is None:
        return NAN_OR_INFINITY
    return format_long_double(total)


def long_double(text: bytes) -> Union[Fraction, str, None]:
    """``text`` as Redis's ``string2ld`` reads it (``strtold`` in x87
    extended precision): the exact value as a fraction, ``"inf"`` for an
    infinity, or None for what Redis refuses (not a number, a NaN, spaces,
    a value too large or one that underflows to zero)."""
    value = _written(text)
    if value is None or isinstance(value, str):
        return value
    rounded = round_long_double(value)
    if rounded is None or (rounded == 0 and value != 0):
        return None  # ERANGE: overflow, or underflow to zero
    return rounded


def number(text: bytes) -> Union[int, Fraction, None]:
    """The value ``text`` writes exactly (an int when whole; a decimal or
    hexadecimal fraction otherwise), when Redis reads it as a finite long
    double; None when INCRBYFLOAT would refuse it or read an infinity."""
    read = long_double(text)
    if read is None or isinstance(read, str):
        return None
    return whole(_written(text))  # type: ignore[arg-type]


def whole(value: Union[int, Fraction]) -> Union[int, Fraction]:
    """``value``, as an int when it is a whole number."""
    if type(value) is int:
        return value
    return value.numerator if value.denominator == 1 else value


def _written(text: bytes) -> Union[Fraction, str, None]:
    """The exact value ``text`` writes in strtold's grammar (exponents
    clamped to +-20000, far past any finite long double), ``"inf"``, or
    None when it is not a number."""
    if not text or len(text) >= _MAX_CHARS:
        return None
    if _INFINITY.match(text):
        return "inf"
    decimal = _DECIMAL.match(text)
    if decimal:
        mantissa, exponent = decimal.group(1), decimal.group(2)
        units, _, fraction = mantissa.partition(b".")
        value = Fraction(_parse_int(units + fraction or b"0"), 10 ** len(fraction))
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
        units, _, fraction = mantissa.partition(b".")
        value = Fraction(int(units + fraction or b"0", 16), 16 ** len(fraction))
        if exponent:
            power = _parse_int(exponent[1:])
            value = value * Fraction(2) ** max(min(power, 20000), -20000)
    return -value if text[:1] == b"-" else value


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


def round_long_double(value: Fraction) -> Optional[Fraction]:
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


def decimal_text(value: Union[int, Fraction]) -> bytes:
    """``value``, an int or a fraction whose denominator divides a power of
    ten, written out exactly in decimal: no exponent, no trailing zeros
    after the point, ``-`` only before a non-zero value. For what
    :func:`format_long_double` writes, the same text."""
    value = whole(value)
    if type(value) is int:
        return _decimal(value).encode("ascii") if value >= 0 else b"-" + _decimal(-value).encode("ascii")
    denominator = value.denominator
    twos = (denominator & -denominator).bit_length() - 1
    fives = denominator >> twos
    places = round(fives.bit_length() / 2.321928094887362)  # log2(5)
    for guess in (places, places - 1, places + 1):
        if guess >= 0 and 5**guess == fives:
            places = max(twos, guess)
            break
    else:
        raise ValueError(f"not a decimal fraction: {value!r}")
    units = value.numerator * (10**places // denominator)
    digits = _decimal(abs(units)).rjust(places + 1, "0")
    text = (digits[:-places] + "." + digits[-places:]).rstrip("0").rstrip(".")
    return ("-" + text if units < 0 else text).encode("ascii")
