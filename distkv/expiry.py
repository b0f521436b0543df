"""The active expiry cycle: expired values reclaimed even when nobody reads them.

Reads reclaim an expired value they meet (see :meth:`Store.get
<distkv.store.store.Store.get>`); this cycle, like Redis's ``activeExpireCycle``,
reclaims the rest. Ten times a second (on the injected reactor's clock) it
looks at a bounded batch of keys, continuing a pass over every key that
restarts once done (:meth:`Store.sweep <distkv.store.store.Store.sweep>`), and
looks at another batch while more than a quarter of the last one had expired,
up to :data:`ROUNDS` batches a tick. A store where no value has an expiry
costs nothing. Reclaiming is local to each node: the expired value becomes
the tombstone at its own version, no write is made, nothing is sent to
peers, and every other node does the same once its own clock passes the
expiry.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from distkv.store.store import Store

log = Logger()

#: Ticks per second (Redis's ``hz``).
HZ = 10
#: Keys looked at per batch.
BATCH = 200
#: Batches a tick at most.
ROUNDS = 16


class ActiveExpiry:
    """Runs the cycle over ``store`` on ``clock`` once :meth:`start` is called."""

    def __init__(self, store: Store, clock: IReactorTime, batch: int = BATCH,
                 rounds: int = ROUNDS) -> None:
        self.store = store
        self.batch = batch
        self.rounds = rounds
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    def tick(self) -> int:
        """One tick of the cycle; returns how many values it reclaimed."""
        store = self.store
        total = 0
        try:
            for _ in range(self.rounds):
                if not store.with_expiry:
                    break
                done = store.sweep(self.batch)
                total += done
                if done * 4 <= self.batch:
                    break
        except Exception:
            log.failure("The active expiry cycle failed")
        return total

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(1 / HZ, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
