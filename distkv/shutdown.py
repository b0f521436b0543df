"""A clean exit on SIGTERM: stop the reactor (so every service flushes) and exit 0.

twistd's own handler also stops the reactor but then re-raises the signal, so
the process dies "killed by SIGTERM". A stop that was asked for and completed
cleanly is a success, as it is for Redis, so DistKV replaces that handler once
the reactor runs.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, Optional

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()


class ExitZeroOnTerm(Service):
    """Installs the SIGTERM handler when the reactor starts running."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info("Received SIGTERM; flushing to peers and shutting down")
        self._reactor.callFromThread(self._reactor.stop)


def stop_process(reactor: Any, code: int) -> None:
    """Stop the reactor (every service stops) and then exit with ``code``:
    how a node that cannot go on (its data dir turned out unreadable while
    it read it) tells its supervisor it failed."""
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, code)
    reactor.stop()
