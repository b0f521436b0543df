"""Fixtures shared by the process-tier tests, the suite's Hypothesis profile
(:mod:`tests.proptest`), and the ``cpython_enough`` marker on modules whose
subject is interpreter-independent."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import tests.proptest  # noqa: F401  (loads the suite's Hypothesis profile)
from tests.realnodes import Cluster

#: Modules whose subject is logic on a fake clock in one process (no real
#: processes, no memory or size bounds, no speed paths): PyPy runs the same
#: code there and adds only JIT warm-up (its seed tier alone ran 5 times
#: CPython's time). They are marked ``cpython_enough``, and ``.ci/run`` leaves
#: them out of its PyPy run (they all run under CPython). What PyPy proves is
#: kept: every real-process test runs its nodes under PyPy there, with the
#: data file, journal, parsers, front door and TLS modules' own tests.
CPYTHON_ENOUGH: Dict[str, str] = {
    "test_cluster.py": "whole clusters in one process on a fake clock",
    "test_counters_cluster.py": "counters across in-process nodes on a fake clock",
    "test_expiry_cluster.py": "expiry across in-process nodes on a fake clock",
    "test_members_cluster.py": "membership changes in an in-process cluster on a fake clock",
    "test_purge.py": "tombstone purging rules in an in-process cluster on a fake clock",
    "test_skew.py": "the clock-skew guard against a fake clock",
    "test_links.py": "link and loading rules in an in-process cluster on a fake clock",
    "test_levels.py": "consistency levels in an in-process cluster on a fake clock",
    "test_levelrun.py": "the level-history simulator's seeds (fake clock, one process)",
    "test_linearizable_cluster.py": "LINEARIZABLE rules in an in-process cluster on a fake clock",
    "test_simulate.py": "the seeded fault simulator and its checker (fake clock, one process)",
}


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Mark every test of a CPYTHON_ENOUGH module ``cpython_enough``."""
    for item in items:
        if item.path.name in CPYTHON_ENOUGH:
            item.add_marker(pytest.mark.cpython_enough)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Real nodes started by the test, every one killed at the end."""
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()
