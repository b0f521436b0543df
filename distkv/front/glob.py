"""Redis's glob patterns (``KEYS``, ``SCAN MATCH``), matched without backtracking.

The syntax and its edge cases are those of Redis's ``stringmatchlen``:
``*`` any run of bytes, ``?`` one byte, ``[abc]`` one of a set, ``[^abc]`` one
byte not in it, ``[a-z]`` a range (``[z-a]`` is the same range), ``\\x`` the
byte ``x`` (inside a set too), and anything else itself. A set ends at the
first ``]`` after ``[`` or ``[^`` (so ``[]`` matches nothing and ``[^]`` any
byte); ``a-]`` inside a set is the range from ``]`` to ``a``; a set with no
closing ``]`` runs to the end of the pattern; a trailing ``\\`` is itself.
As in Redis, an empty key matches only the empty pattern. A range compares
bytes as Redis on x86 does, as signed C ``char``s: bytes above 127 sort below
``\x00``, so ``[*-\xff]`` is the bytes from ``\xff`` up to ``*``. One
difference: there is no limit on the number of stars (Redis stops answering
"match" past 1,000).

No pattern can make matching slow (Redis's CVE-2022-36021 was one that could):
a pattern is cut at its stars into *segments*, runs of one-byte matchers; the
first must match at the start of the key, the last at its end, and each one in
between is placed at its leftmost match after the one before. Leftmost is
always right, since a segment placed further left leaves every later one more
room. Each segment is found by ``bytes.find`` or by a regular expression with
no repetition in it, so matching a key costs at most its length times the
pattern's, and nothing ever backtracks into an earlier segment. A pattern with
at most one star is one such expression around a single ``.*``, which costs
the same at most and runs in C.
"""

from __future__ import annotations

import re
from typing import FrozenSet, List, Optional, Pattern, Sequence, Tuple

__all__ = ["Glob", "compile_glob", "parse", "STAR"]

#: The token for ``*``; every other token is the set of bytes it matches.
STAR: Optional[FrozenSet[int]] = None

Token = Optional[FrozenSet[int]]

_EVERY_BYTE = frozenset(range(256))


def parse(pattern: bytes) -> List[Token]:
    """The pattern's tokens: :data:`STAR`, or the bytes one position matches.

    Runs of stars become one star. Never raises: every byte string is a
    pattern, as in Redis.
    """
    tokens: List[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            if not tokens or tokens[-1] is not STAR:
                tokens.append(STAR)
            i += 1
        elif c == 0x3F:  # ?
            tokens.append(_EVERY_BYTE)
            i += 1
        elif c == 0x5B:  # [
            allowed, i = _parse_set(pattern, i + 1)
            tokens.append(allowed)
        elif c == 0x5C and i + 1 < n:  # \x
            tokens.append(frozenset((pattern[i + 1],)))
            i += 2
        else:  # a lone trailing backslash is itself
            tokens.append(frozenset((c,)))
            i += 1
    return tokens


def _parse_set(pattern: bytes, i: int) -> Tuple[FrozenSet[int], int]:
    """The set opened by the ``[`` before ``i``, and where the pattern goes on."""
    n = len(pattern)
    negate = i < n and pattern[i] == 0x5E  # ^
    if negate:
        i += 1
    allowed = set()
    while i < n:
        c = pattern[i]
        if c == 0x5C and i + 1 < n:  # \x
            allowed.add(pattern[i + 1])
            i += 2
        elif c == 0x5D:  # ]
            i += 1
            break
        elif i + 2 < n and pattern[i + 1] == 0x2D:  # x-y, in either order
            low, high = sorted((_signed(c), _signed(pattern[i + 2])))
            allowed.update(byte & 0xFF for byte in range(low, high + 1))
            i += 3
        else:
            allowed.add(c)
            i += 1
    # Unterminated: the set is what was read, and the pattern ends there.
    return (_EVERY_BYTE - allowed if negate else frozenset(allowed)), i


def _signed(byte: int) -> int:
    """``byte`` as x86's signed C ``char``, the order Redis's ranges use."""
    return byte - 256 if byte > 127 else byte


class Segment:
    """A run of one-byte matchers between two stars (or an end of the pattern)."""

    __slots__ = ("length", "literal", "regex", "source")

    def __init__(self, tokens: Sequence[FrozenSet[int]]) -> None:
        self.length = len(tokens)
        #: The bytes themselves when every matcher is a single byte.
        self.literal: Optional[bytes] = None
        #: The segment as a regular expression, None if it can never match.
        self.source: Optional[bytes] = None
        if all(tokens):
            self.source = b"".join(_char_class(allowed) for allowed in tokens)
        #: Otherwise a regular expression of one character class per byte,
        #: with no repetition, so a search costs at most the window times
        #: the length. None for a segment that can never match (``[]``).
        self.regex: Optional[Pattern[bytes]] = None
        if all(len(allowed) == 1 for allowed in tokens):
            self.literal = bytes(next(iter(allowed)) for allowed in tokens)
        elif self.source is not None:
            self.regex = re.compile(self.source, re.DOTALL)

    def at(self, key: bytes, position: int) -> bool:
        """Whether the segment matches ``key`` at ``position`` (room checked by the caller)."""
        literal = self.literal
        if literal is not None:
            return key.startswith(literal, position)
        regex = self.regex
        return regex is not None and regex.match(key, position) is not None

    def find(self, key: bytes, start: int, end: int) -> int:
        """Where the segment first matches inside ``key[start:end]``, or -1."""
        literal = self.literal
        if literal is not None:
            return key.find(literal, start, end)
        regex = self.regex
        if regex is None:
            return -1
        found = regex.search(key, start, end)
        return -1 if found is None else found.start()


def _char_class(allowed: FrozenSet[int]) -> bytes:
    if len(allowed) == 256:
        return b"."
    if len(allowed) == 1:
        return re.escape(bytes(allowed))
    escaped = b"".join(re.escape(bytes((c,))) for c in sorted(allowed))
    return b"[" + escaped + b"]"


class Glob:
    """A compiled pattern; :meth:`match` says whether a key matches it.

    ``work``, when given a list, gets the number of key bytes each step of the
    match looked through (tests use it to show the cost stays linear).
    """

    __slots__ = ("everything", "first", "last", "middle", "shortest", "starred", "whole")

    def __init__(self, pattern: bytes) -> None:
        tokens = parse(pattern)
        #: True for ``*`` (any run of stars): every non-empty key matches.
        self.everything = tokens == [STAR]
        self.starred = STAR in tokens
        runs: List[List[FrozenSet[int]]] = [[]]
        for token in tokens:
            if token is None:  # STAR
                runs.append([])
            else:
                runs[-1].append(token)
        segments = [Segment(run) for run in runs]
        self.first = segments[0]
        self.last = segments[-1]
        self.middle = tuple(segment for segment in segments[1:-1] if segment.length)
        #: The fewest bytes a matching key has.
        self.shortest = sum(segment.length for segment in segments)
        #: With at most one star: the whole pattern as one expression, whose
        #: only repetition is that star (so at most key x pattern steps).
        self.whole: Optional[Pattern[bytes]] = None
        if len(segments) <= 2 and all(segment.source is not None for segment in segments):
            star = b".*" if self.starred else b""
            source = star.join(segment.source or b"" for segment in segments)
            self.whole = re.compile(source, re.DOTALL)

    def match(self, key: bytes, work: Optional[List[int]] = None) -> bool:
        size = len(key)
        if not size:
            return self.shortest == 0 and not self.starred  # Redis: only "" matches ""
        if self.everything:
            return True
        if size < self.shortest:
            return False
        whole = self.whole
        if whole is not None:
            if work is not None:
                work.append(size * (self.shortest + 1))
            return whole.fullmatch(key) is not None
        first = self.first
        if not self.starred:
            if work is not None:
                work.append(size)
            return size == first.length and first.at(key, 0)
        last = self.last
        end = size - last.length
        if work is not None:
            work.append(first.length + last.length)
        if not (first.at(key, 0) and last.at(key, end)):
            return False
        position = first.length
        for segment in self.middle:
            if work is not None:
                work.append(end - position)
            found = segment.find(key, position, end)
            if found < 0:
                return False
            position = found + segment.length
        return True


def compile_glob(pattern: bytes) -> Glob:
    """``pattern`` compiled for :meth:`Glob.match`."""
    return Glob(pattern)
