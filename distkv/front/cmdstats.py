"""Per-command counts and sampled latencies, kept on the request path.

With metrics on (see :mod:`distkv.ops.service`), the dispatcher holds a
:class:`CommandStats` and the front ends count each request they run by its
command's upper-case name (a name that is no command counts as ``UNKNOWN``,
so what clients send cannot grow the table), and each error reply. RESP
counts a run of requests of one command at once and adds nothing per request:
the next request of the command just run takes the one test a node without
metrics makes too, and a run's length is read off the requests left when the
next command begins (see :mod:`distkv.front.resp`). Timing every request
would cost two clock reads and a histogram update each (about 4,000
instructions under callgrind, against 14,000 for a whole SET), so latency
is sampled: a read at most every
:data:`SPACING` seconds (no clock is read to decide: a reactor timer arms the
next one) has each of its requests timed around its command's run (as Redis
times ``call()``), and the histograms count those sampled requests only
(every request, while requests come more slowly). A write's
wait for its commit is not in it: that is the journal's commit latency.
"""

from __future__ import annotations

from time import perf_counter
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from distkv.ops.latency import Latency

#: At most one read in this many seconds has its requests timed.
SPACING = 0.01
UNKNOWN = b"UNKNOWN"

#: (command name, seconds its run took), per timed request of a read.
Samples = List[Tuple[bytes, float]]


class CommandStats:
    """Requests run and errors replied, by command name; sampled latencies.

    Sampling costs a read no clock: ``armed`` says whether to time the next
    read; a timed read disarms it, and ``call_later`` (the reactor's) arms it
    again ``spacing`` seconds later. With no ``call_later``, every read is timed.
    """

    __slots__ = ("calls", "failed", "latency", "timer", "spacing", "armed", "_call_later",
                 "_known")

    def __init__(self, names: Iterable[bytes], spacing: float = SPACING,
                 call_later: Optional[Callable[[float, Callable[[], None]], object]] = None,
                 timer: Callable[[], float] = perf_counter) -> None:
        self._known = frozenset(names)
        #: Requests run, by name; every command starts at 0, so that the
        #: request path only ever adds to an existing entry.
        self.calls: Dict[bytes, int] = dict.fromkeys(self._known | {UNKNOWN}, 0)
        #: Error replies, by name.
        self.failed: Dict[bytes, int] = {}
        self.latency: Dict[bytes, Latency] = {}
        self.timer = timer
        self.spacing = spacing
        #: Whether the next read is timed.
        self.armed = True
        self._call_later = call_later

    def name(self, sent: bytes) -> bytes:
        """The name a request is counted under: its command's, or UNKNOWN."""
        upper = sent.upper()
        return upper if upper in self._known else UNKNOWN

    def sample(self) -> Optional[Samples]:
        """Per read: a list to time its requests into while armed; else None."""
        return [] if self.armed else None

    def _arm(self) -> None:
        self.armed = True

    def count(self, name: bytes, run: int) -> None:
        """``run`` requests of the command ``name`` were run."""
        try:
            self.calls[name] += run
        except KeyError:  # a name in a table made after this tally
            self.calls[self.name(name)] += run

    def failure(self, name: bytes) -> None:
        self.failed[name] = self.failed.get(name, 0) + 1

    def ran(self, name: bytes, run: int, samples: Optional[Samples]) -> None:
        """The end of a read: its last run of requests, and its timings."""
        if run:
            self.count(name, run)
        if samples is not None:
            self.timed(samples)

    def timed(self, samples: Samples) -> None:
        """A timed read's samples: kept, and the next read timed ``spacing`` seconds on."""
        latency = self.latency
        for name, seconds in samples:
            histogram = latency.get(name)
            if histogram is None:
                histogram = latency[name] = Latency()
            histogram.observe(seconds)
        if self._call_later is not None and self.armed:
            self.armed = False
            self._call_later(self.spacing, self._arm)
