"""Making a failing schedule small, and printing it as a replay.

:func:`shrink` removes steps, delta-debugging style, while the same invariant
still fails, so that what is left is what the failure needs; :func:`replay`
prints a schedule as Python to paste into a regression test.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, Optional

from distkv.sim.runner import run
from distkv.sim.schedule import NODE_OPTIONS, Schedule


def shrink(schedule: Schedule, invariant: str, budget: int = 200,
           fails: Optional[Callable[[Schedule], bool]] = None) -> Schedule:
    """A shorter schedule that still violates ``invariant``: delta debugging
    over its steps, at most ``budget`` runs."""
    if fails is None:
        def fails(candidate: Schedule) -> bool:
            return any(v.invariant == invariant for v in run(candidate))
    steps = list(schedule.steps)
    chunks = 2
    runs = 0
    while len(steps) >= 1 and runs < budget:
        size = max(1, -(-len(steps) // chunks))
        for start in range(0, len(steps), size):
            candidate = steps[:start] + steps[start + size:]
            runs += 1
            if fails(replace(schedule, steps=tuple(candidate))):
                steps = candidate
                chunks = max(chunks - 1, 2)
                break
            if runs >= budget:
                break
        else:
            if size == 1:
                break
            chunks = min(len(steps), chunks * 2)
    return replace(schedule, steps=tuple(steps))


def replay(schedule: Schedule, options: Optional[Dict[str, Any]] = None) -> str:
    """Python to paste into a regression test (``options``: the node options
    the run used, written out where they differ from the simulator's own)."""
    steps = ",\n        ".join(repr(step) for step in schedule.steps)
    changed = {k: v for k, v in (options or {}).items() if NODE_OPTIONS.get(k) != v}
    return (
        "from distkv.simulate import *  # noqa: F403\n"
        f"schedule = Schedule(\n    seed={schedule.seed}, size={schedule.size}, "
        f"disk={schedule.disk!r}, skew={schedule.skew!r}, unlisted={schedule.unlisted!r},\n"
        f"    steps=(\n        {steps},\n    ),\n)\n"
        + (f"assert run(schedule, {changed!r}) == []" if changed else "assert run(schedule) == []")
    )
