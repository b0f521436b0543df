"""Per-command counts and sampled latencies, kept on the request path.

With metrics on (see :mod:`distkv.ops.service`), the dispatcher holds a
:class:`CommandStats` and the front ends count each request they run by its
command's upper-case name (a name that is no command counts as ``UNKNOWN``,
so what clients send cannot grow the table), and each error reply. That is
one dictionary addition per request, cheap enough for pipelined traffic.
Timing every request would cost several times that, so latency is sampled:
one read in :data:`EVERY` (every request of it, each timed around its
command's run, as Redis times ``call()``), and the histograms count those
sampled requests only. A write's wait for its commit is not in it: that is
the journal's commit latency.
"""

from __future__ import annotations

from time import perf_counter
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from distkv.ops.latency import Latency

#: One read in this many has its requests timed.
EVERY = 16
UNKNOWN = b"UNKNOWN"

#: (command name, seconds its run took), per timed request of a read.
Samples = List[Tuple[bytes, float]]


class CommandStats:
    """Requests run and errors replied, by command name; sampled latencies."""

    __slots__ = ("calls", "failed", "latency", "timer", "every", "_countdown", "_known")

    def __init__(self, names: Iterable[bytes], every: int = EVERY,
                 timer: Callable[[], float] = perf_counter) -> None:
        self._known = frozenset(names)
        #: Requests run, by name; every command starts at 0, so that the
        #: request path only ever adds to an existing entry.
        self.calls: Dict[bytes, int] = dict.fromkeys(self._known | {UNKNOWN}, 0)
        #: Error replies, by name.
        self.failed: Dict[bytes, int] = {}
        self.latency: Dict[bytes, Latency] = {}
        self.timer = timer
        self.every = every
        self._countdown = every

    def name(self, sent: bytes) -> bytes:
        """The name a request is counted under: its command's, or UNKNOWN."""
        upper = sent.upper()
        return upper if upper in self._known else UNKNOWN

    def sample(self) -> Optional[Samples]:
        """Per read: a list to time its requests into, one read in ``every``; else None."""
        self._countdown -= 1
        if self._countdown > 0:
            return None
        self._countdown = self.every
        return []

    def failure(self, name: bytes) -> None:
        self.failed[name] = self.failed.get(name, 0) + 1

    def timed(self, samples: Samples) -> None:
        latency = self.latency
        for name, seconds in samples:
            histogram = latency.get(name)
            if histogram is None:
                histogram = latency[name] = Latency()
            histogram.observe(seconds)
