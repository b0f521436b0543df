"""Fixtures shared by the process-tier tests, and the suite's Hypothesis profile."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.realnodes import Cluster

# Hypothesis times how long it takes to generate inputs and fails a test
# whose generation is "too slow"; on a loaded 2-core machine (real-process
# tests beside it, PyPy warming up) that says nothing about the code. The
# examples themselves are never timed either.
settings.register_profile("distkv", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("distkv")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Real nodes started by the test, every one killed at the end."""
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()
