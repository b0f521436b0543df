"""Log lines about hostile or broken input, escaped and rate-limited.

A client can make the node log a protocol error at every connection it
opens; with the raw bytes in each line it could flood the log or write
terminal escapes into it. :func:`printable` shows client bytes the way
``repr`` does, truncated; :class:`RateLimit` lets at most one line through
per interval and says, in the next line it lets through, how many it held
back. Time is read from an injected clock (``reactor.seconds`` in a node).
"""

from __future__ import annotations

from typing import Callable

#: Client bytes shown in a log line, at most.
SHOWN = 100


def printable(data: bytes, limit: int = SHOWN) -> str:
    """``data`` as an escaped, repr-like string of at most ``limit`` bytes."""
    text = repr(data[:limit])[2:-1]
    return text + ("..." if len(data) > limit else "")


class RateLimit:
    """At most one line per ``interval`` seconds; counts the rest."""

    def __init__(self, clock: Callable[[], float], interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        self._next = float("-inf")
        #: Lines held back since the last one let through.
        self.suppressed = 0

    def allow(self) -> int:
        """-1 to hold this line back; else how many were held back before it."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return -1
        self._next = now + self._interval
        held, self.suppressed = self.suppressed, 0
        return held

    def reset(self) -> None:
        """Let the next line through whenever it comes (with the count held back)."""
        self._next = float("-inf")
