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


def fill_data_dir(path: str, keys: int, per_row: int = 1000, node_id: str = "a",
                  ms: int = 1_700_000_000_000) -> None:
    """Write ``keys`` keys (``k<n>`` -> ``v<n>``, stamped by ``node_id``) into a
    data dir at ``path``, ``per_row`` to a log row, as a node's commits would."""
    from distkv.disk.datafile import Disk

    disk = Disk(path)
    try:
        disk.claim(node_id, node_id)
        for first in range(0, keys, per_row):
            rows = [(0, b"k%d" % i, (b"v%d" % i, ms + i, 0, node_id))
                    for i in range(first, min(keys, first + per_row))]
            disk.commit(rows, [], [], ms + first + per_row, 0)  # type: ignore[arg-type]
    finally:
        disk.close()
