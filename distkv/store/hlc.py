"""Versions and the hybrid logical clock that stamps them.

A :class:`Version` orders every write in the cluster: wall-clock milliseconds
first, then a logical counter for writes within one millisecond (or made while
the wall clock lags what this node has already seen), then the node id to break
exact ties. The clock never hands out a version below one it has observed, so a
write made after reading a value always wins over that value, whatever the
skew between the machines' clocks. Time is passed in as a callable; nothing
here touches a reactor.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple


class Version(NamedTuple):
    """A write's place in the cluster-wide last-writer-wins order."""

    ms: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.ms}.{self.counter}@{self.node}"


_new_tuple = tuple.__new__

#: What the clock and the digest take as a version: a :class:`Version`, or a
#: store entry, whose last three fields are a version's (ms, counter, node).
Stamped = Tuple[Any, ...]

#: The largest logical counter: versions travel and are stored with 32 bits for
#: it, so past it the clock moves to the next millisecond instead.
MAX_COUNTER = 0xFFFFFFFF


class HybridClock:
    """Stamps local writes and observes remote versions.

    ``now_ms`` returns the wall clock in milliseconds. ``max_drift_ms`` bounds
    how far a remote version may lie ahead of our wall clock before
    :meth:`observe` refuses it: a peer whose clock runs years ahead must not
    drag every future version of ours along with it.
    """

    def __init__(
        self,
        node: str,
        now_ms: Callable[[], int],
        max_drift_ms: int = 60_000,
    ) -> None:
        self.node = node
        self._now_ms = now_ms
        self.max_drift_ms = max_drift_ms
        self._ms = 0
        self._counter = 0
        self.refused = 0
        # None, or the wall reading held for a batch (-1 until its first stamp).
        self._held: Optional[int] = None

    def now(self) -> Version:
        """Return a fresh version above every version stamped or observed."""
        return self.now_above(None)

    def now_above(self, version: Optional[Stamped]) -> Version:
        """Return a fresh version that is also strictly above ``version``.

        Used for an overwrite: the new write must beat the value it replaces
        even if that value came from a peer whose clock runs ahead of ours.
        None (nothing to beat) is the same as :meth:`now`. ``version`` may be
        a store entry too (see :data:`Stamped`).
        """
        return _new_tuple(Version, self.stamp(None, version)[1:])

    def stamp(
        self, value: Optional[bytes], above: Optional[Stamped]
    ) -> Tuple[Optional[bytes], int, int, str]:
        """``(value, ms, counter, node)``: ``value`` with a fresh version,
        strictly above ``above`` (as :meth:`now_above`).

        The store's entries are made this way, with no :class:`Version` built
        only to be taken apart.
        """
        # Every local write comes here: locals and tuple indexes (above[-3]
        # is its ms, above[-2] its counter) rather than attributes, for CPython.
        held = self._held
        if held is None:
            wall = self._now_ms()
        elif held < 0:  # the first stamp of a held batch
            wall = self._held = self._now_ms()
        else:
            wall = held
        ms = self._ms
        if wall > ms:
            ms = wall
            counter = 0
        else:
            counter = self._counter + 1
            if counter > MAX_COUNTER:  # the wire has 32 bits for it
                ms += 1
                counter = 0
        if above is not None and (
            above[-3] > ms or (above[-3] == ms and above[-2] >= counter)
        ):
            # Equal (ms, counter) loses to nothing here: node ids break such
            # ties, but an overwrite must win outright, so step past it.
            if above[-2] >= MAX_COUNTER:
                ms = above[-3] + 1
                counter = 0
            else:
                ms = above[-3]
                counter = above[-2] + 1
        self._ms = ms
        self._counter = counter
        return (value, ms, counter, self.node)

    def hold(self) -> None:
        """Stamp with one wall-clock reading, the next stamp's, until :meth:`release`.

        A front end holds the clock over the requests that arrived in one
        read: they arrived together, so their writes are stamped with the
        time the first of them was run, and reading the wall clock is a good
        part of a write's cost on CPython. Versions still rise (the counter
        orders writes within one reading) and still beat every version
        observed; only their millisecond may lag the wall by as long as the
        read's requests take to run. A front end must release it once the
        batch is done, whatever happens in between: a reading held for longer
        would fall ever further behind the wall. Holds do not nest: the first
        release ends the hold.
        """
        self._held = -1

    @property
    def holding(self) -> bool:
        """Whether a hold (see :meth:`hold`) is on."""
        return self._held is not None

    def release(self) -> None:
        """Read the wall clock for every stamp again (see :meth:`hold`)."""
        self._held = None

    def observe(self, version: Stamped, count: bool = True) -> bool:
        """Move the clock past ``version``; refuse it when it is too far ahead.

        Returns False, and counts the refusal (unless ``count`` is false: a
        peer's clock reading rather than a write), when ``version`` lies more
        than ``max_drift_ms`` beyond our wall clock; the caller must not store it.
        """
        if version[-3] > self._ms or (
            version[-3] == self._ms and version[-2] > self._counter
        ):
            if version[-3] - self._now_ms() > self.max_drift_ms:
                self.refused += count
                return False
            self._ms = version[-3]
            self._counter = version[-2]
        return True

    def wall_ms(self) -> int:
        """The wall clock now (ms since the epoch): what expiry is judged by."""
        return self._now_ms()

    def high_water(self) -> int:
        """The highest millisecond stamped or observed, for persisting."""
        return self._ms

    def restore(self, high_water_ms: int) -> None:
        """Never stamp below ``high_water_ms`` (a value saved before a restart)."""
        # One past the mark: the counter reached within that millisecond before
        # the restart is not saved, so stamping inside it could go backwards.
        if high_water_ms >= self._ms:
            self._ms = high_water_ms + 1
            self._counter = 0
