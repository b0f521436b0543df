"""Fixtures shared by the process-tier tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.realnodes import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Real nodes started by the test, every one killed at the end."""
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()
