"""Is this node's clock so far ahead of a peer's that its writes cannot replicate?

A peer refuses a version more than ``--max-clock-skew`` ahead of its own
clock (see :mod:`distkv.store.hlc`), so a node whose clock runs that far ahead would
acknowledge writes that never reach that peer. Each heartbeat answer carries
the answering peer's wall clock; the answer was made after we sent the
heartbeat, so ``sent - reading`` is a lower bound on how far our clock is
ahead of the peer's, whatever the network delayed (delay only lowers it).
:class:`SkewGuard` keeps the latest bound from each peer and names the peer
we are furthest ahead of while that passes the limit; the node then refuses
writes (as CockroachDB stops a node past its maximum offset) until the clocks
agree again. A node that is behind is not at fault here: its writes are
accepted everywhere. Readings older than ``fresh_for`` seconds are ignored, so
a peer that went away cannot hold the refusal. No networking here.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple


class SkewGuard:
    """The latest clock readings from peers, and whether we are too far ahead."""

    def __init__(self, max_skew_ms: int, seconds: Callable[[], float], fresh_for: float) -> None:
        self.max_skew_ms = max_skew_ms
        self._seconds = seconds
        self._fresh_for = fresh_for
        # node id -> (how far ahead we are at least, in ms; when it was read)
        self._readings: Dict[str, Tuple[int, float]] = {}

    def reading(self, node: str, ahead_ms: int) -> None:
        """A heartbeat answer from ``node``: our clock is ``ahead_ms`` ahead at least."""
        self._readings[node] = (ahead_ms, self._seconds())

    def forget(self, node: str) -> None:
        self._readings.pop(node, None)

    def too_far_ahead(self) -> Optional[Tuple[str, int]]:
        """``(peer, ms)`` for the peer we are furthest ahead of, past the limit; else None."""
        oldest = self._seconds() - self._fresh_for
        worst: Optional[Tuple[str, int]] = None
        for node, (ahead, at) in self._readings.items():
            if at >= oldest and ahead > self.max_skew_ms and (worst is None or ahead > worst[1]):
                worst = (node, ahead)
        return worst
