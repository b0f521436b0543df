"""The last minutes of a node, for the cluster page's sparklines.

:class:`History` keeps ring buffers of the node's request rate and of each
member's replication lag, sampled every ``interval`` seconds by a
``LoopingCall`` on the injected reactor (see :mod:`distkv.ops.service`), so a
test drives it with a fake clock. The rate comes from the count INFO reports
(``total_commands_processed``), the lag from the member list's view
(:func:`distkv.front.report.member_facts`): nothing is counted twice.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Tuple

from twisted.logger import Logger

from distkv.front import report

if TYPE_CHECKING:
    from distkv.node import Node

log = Logger()

#: Samples kept: at the default 5 s interval, the last 10 minutes.
SAMPLES = 120


class History:
    """Ring buffers of ops/s and of each member's lag (seconds)."""

    def __init__(self, node: Node, clock: Any, interval: float = 5.0,
                 size: int = SAMPLES) -> None:
        self.node = node
        self.clock = clock
        self.interval = interval
        self.size = size
        #: Requests per second over each interval, oldest first.
        self.ops: Deque[float] = deque(maxlen=size)
        #: Member id -> its lag at each sample since it appeared, oldest first.
        self.lag: Dict[str, Deque[float]] = {}
        self._last: Optional[Tuple[float, int]] = None

    def sample(self) -> None:
        """Take one sample; a failure is logged and the next sample tried."""
        try:
            self._sample()
        except Exception:
            log.failure("Sampling the node for the cluster page failed")

    def _sample(self) -> None:
        node = self.node
        now = self.clock.seconds()
        count = node.dispatcher.stats.commands_processed
        if self._last is not None:
            then, before = self._last
            elapsed = now - then
            # CONFIG RESETSTAT may have set the count back: no negative rate.
            self.ops.append(max(0, count - before) / elapsed if elapsed > 0 else 0.0)
        self._last = (now, count)
        facts = report.member_facts(node)
        for fact in facts:
            series = self.lag.get(fact.id)
            if series is None:
                series = self.lag[fact.id] = deque(maxlen=self.size)
            series.append(fact.lag_ms / 1000)
        current = {fact.id for fact in facts}
        for gone in [member for member in self.lag if member not in current]:
            del self.lag[gone]
