"""Scratch directories for tests, removed afterwards (trial's mktemp() would
leave them in the working directory when the suite runs under pytest), and a
base for tests of one node on such a directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.node import Node


def scratch_dir(case: SynchronousTestCase) -> str:
    """A path that does not exist yet, inside a temporary directory cleaned up after ``case``."""
    parent = tempfile.mkdtemp(prefix="distkv-test-")
    case.addCleanup(shutil.rmtree, parent, True)
    return os.path.join(parent, "data")


class DataDirCase(SynchronousTestCase):
    """Tests of one node on a fake clock with a scratch data dir."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.dir = scratch_dir(self)

    def node(self, node_id: Optional[str] = "a", **options: object) -> Node:
        """A started node on the data dir, crashed after the test unless it stopped."""
        node = Node(self.clock, node_id, data_dir=self.dir, **options)  # type: ignore[arg-type]
        node.start()
        self.addCleanup(lambda: None if node.journal is None or node.journal.closed else node.crash())
        return node
