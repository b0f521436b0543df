"""A latency histogram cheap enough for the request path.

:class:`Latency` keeps a count per bucket and the sum of what it observed,
with fixed bounds in seconds from 1 µs to 10 s, as Prometheus histograms have
them; an observation is one bisection and two additions, no lock (everything
that observes runs in the reactor thread). The metrics module turns it into
a histogram family at scrape time (see :mod:`distkv.ops.metrics`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import List, Tuple

#: Upper bounds of the buckets, in seconds (an implicit +Inf bucket follows).
BOUNDS: Tuple[float, ...] = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)


class Latency:
    """Counts per bucket (the last one +Inf) and their sum, in seconds."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts: List[int] = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> List[Tuple[str, int]]:
        """Prometheus's buckets: ``(le, observations <= le)``, +Inf last."""
        out = []
        total = 0
        for bound, count in zip(BOUNDS + (float("inf"),), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out
