"""Reading a data dir back a step at a time, so a starting node serves meanwhile.

A node with a large data dir used to read all of it before it listened: for
seconds, clients and peers had their connections refused. :class:`DataLoad`
wraps :meth:`~distkv.disk.datafile.Disk.load_steps` so the node can listen at
once and read its data in steps, one or more records (a snapshot part, a log
row: a few thousand entries) per reactor turn, answering ``LOADING`` to data
commands in between, as Redis does while it reads its dump. It keeps the
progress that ``INFO persistence`` reports with Redis's field names. No
reactor here: the node schedules the steps, and a step's time budget is read
from an injected timer. The cyclic garbage collector is paused from the first
step to the last (:class:`CollectorPause`): reading makes millions of tuples
and no cycles, and CPython's collector, run every 700 of them and now and then
over the whole growing store, cost about a quarter of a restart's reading
(over a second for 1,000,000 keys, see ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import gc
import time
from typing import Callable, Generator, Optional

from distkv.disk.datafile import Disk, Loaded, Loader

#: How many pauses hold the collector off, and whether it was on before the first.
_pauses = 0
_was_enabled = False


class CollectorPause:
    """The cyclic garbage collector held off, and back as it was once no
    pause holds it (a process may run several nodes: the simulator, tests)."""

    def __init__(self) -> None:
        self.held = False

    def pause(self) -> None:
        global _pauses, _was_enabled
        if not self.held:
            self.held = True
            if _pauses == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _pauses += 1

    def resume(self) -> None:
        """Let the collector go; again: nothing."""
        global _pauses
        if self.held:
            self.held = False
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


class DataLoad:
    """The reading of ``disk`` into ``into`` (see :meth:`Disk.load`), in steps."""

    def __init__(self, disk: Disk, into: Loader, unacked_above: Optional[int],
                 started: float, timer: Callable[[], float] = time.perf_counter) -> None:
        self.disk = disk
        #: When loading began (the node's clock, in seconds), for Redis's
        #: ``loading_start_time`` and the estimate of the time left.
        self.started = started
        #: About how many bytes there are to read, and how many are read.
        self.total_bytes = disk.load_size()
        self.loaded_bytes = 0
        #: What was read, once every record is.
        self.result: Optional[Loaded] = None
        self._timer = timer
        self._steps: Generator[int, None, Loaded] = disk.load_steps(into, unacked_above)
        #: The collector, paused from the first step until everything is
        #: read, or, with ``resume_when_read`` False, until the caller
        #: resumes it (the node does once the digest has taken the data in:
        #: the collection that follows walks every entry read, once).
        self.collector = CollectorPause()
        self.resume_when_read = True

    @property
    def done(self) -> bool:
        return self.result is not None

    def step(self, budget: float) -> bool:
        """Read records for about ``budget`` seconds (at least one); True once
        everything is read. Raises :class:`~distkv.disk.datafile.DiskError`
        when the data cannot be read."""
        if self.result is not None:
            return True
        deadline = self._timer() + budget
        steps = self._steps
        self.collector.pause()
        try:
            while True:
                self.loaded_bytes = next(steps)
                if self._timer() >= deadline:
                    return False
        except StopIteration as finished:
            self.result = finished.value
            self.loaded_bytes = max(self.loaded_bytes, self.total_bytes)
            if self.resume_when_read:
                self.collector.resume()
            return True
        except BaseException:
            self.collector.resume()
            raise

    def run(self) -> Loaded:
        """Read everything now."""
        while not self.step(float("inf")):
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Stop reading (the node stops before its data is read)."""
        self.collector.resume()
        self._steps.close()

    def percent(self) -> float:
        """How much is read, in percent (Redis's ``loading_loaded_perc``)."""
        if self.result is not None:
            return 100.0
        if self.total_bytes <= 0:
            return 0.0
        return min(100.0, 100.0 * self.loaded_bytes / self.total_bytes)

    def eta_seconds(self, now: float) -> int:
        """Seconds left at the rate so far (Redis's ``loading_eta_seconds``);
        1 until something is read, as Redis says before it can tell."""
        if self.result is not None:
            return 0
        elapsed = now - self.started
        if self.loaded_bytes <= 0 or elapsed <= 0:
            return 1
        rate = self.loaded_bytes / elapsed
        return int(max(0, self.total_bytes - self.loaded_bytes) / rate)
