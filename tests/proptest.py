"""The suite's Hypothesis settings, and how many examples a property test draws.

Hypothesis times how long it takes to generate inputs and fails a test whose
generation is "too slow"; on a loaded 2-core machine (real-process tests beside
it, PyPy warming up) that says nothing about the code, and the examples
themselves are never timed either. Under PyPy (``.ci/run``'s second run) a
property test draws a quarter of its examples: every strategy still runs on
PyPy, while the full counts run under CPython, where they take a fraction of
PyPy's time before its JIT has warmed up.
"""

from __future__ import annotations

import platform

from hypothesis import HealthCheck, settings

PYPY = platform.python_implementation() == "PyPy"


def examples(count: int) -> int:
    """The examples a property test that asks for ``count`` draws here."""
    return max(10, count // 4) if PYPY else count


settings.register_profile(
    "distkv", suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(100)
)
settings.load_profile("distkv")
