"""Scratch directories for tests, removed afterwards (trial's mktemp() would
leave them in the working directory when the suite runs under pytest)."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase


def scratch_dir(case: SynchronousTestCase) -> str:
    """A path that does not exist yet, inside a temporary directory cleaned up after ``case``."""
    parent = tempfile.mkdtemp(prefix="distkv-test-")
    case.addCleanup(shutil.rmtree, parent, True)
    return os.path.join(parent, "data")
