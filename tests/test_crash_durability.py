"""kill -9 against real nodes with a data dir: every write that got OK is there after.

A writer pipelines SETs and records each key whose OK it has read; the node is
killed with SIGKILL once a randomly chosen number of OKs has come back, so the
kill lands while further writes are in flight, at a different point each time.
"""

from __future__ import annotations

import random
import signal
import socket
import threading
from pathlib import Path
from typing import List, Sequence

import pytest

from tests.realnodes import Cluster, NodeProcess, ask, free_ports, status, wait_until

pytestmark = pytest.mark.process

BATCH = 40


class Writer(threading.Thread):
    """Pipelines SETs of ``prefix<n>`` to one node until the connection dies."""

    def __init__(self, port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.acked: List[str] = []
        self.sent = 0

    def run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            replies = sock.makefile("rb")
            while True:
                keys = [f"{self.prefix}{self.sent + i}" for i in range(BATCH)]
                self.sent += BATCH
                sock.sendall(b"".join(b"SET %s value-of-%s\r\n" % (k.encode(), k.encode())
                                      for k in keys))
                for key in keys:
                    line = replies.readline()
                    if not line:
                        return
                    assert line == b"OK\r\n", line
                    self.acked.append(key)
        except OSError:
            return


def missing(port: int, keys: Sequence[str]) -> List[str]:
    """The keys whose value is not what was written, asked in one pipelined batch."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"".join(b"GET %s\r\n" % k.encode() for k in keys))
        replies = sock.makefile("rb")
        return [k for k in keys if replies.readline() != b"value-of-%s\r\n" % k.encode()]
    finally:
        sock.close()


def kill_during_writes(node: NodeProcess, prefix: str, rnd: random.Random) -> List[str]:
    writer = Writer(node.port, prefix)
    writer.start()
    target = rnd.randrange(100, 3000)
    wait_until(lambda: len(writer.acked) >= target, f"{target} acknowledged writes")
    node.kill()
    writer.join(timeout=10)
    assert writer.sent > len(writer.acked), "the kill should land with writes in flight"
    return list(writer.acked)


@pytest.mark.parametrize("fsync", ["everysec", "always", "no"])
def test_every_acknowledged_write_survives_repeated_sigkill(tmp_path: Path, cluster: Cluster,
                                                            fsync: str) -> None:
    """Five kill -9 / restart cycles under a stream of writes: no OK'd write is lost."""
    rnd = random.Random(fsync)
    (port,) = free_ports(1)
    args = ["--data-dir", str(tmp_path / "data"), "--fsync", fsync]
    acked: List[str] = []
    for cycle in range(5):
        node = cluster.add(NodeProcess(tmp_path, port, [], "solo", args)).start().wait_ready()
        assert missing(port, acked) == [], f"lost acknowledged writes before cycle {cycle}"
        acked += kill_during_writes(node, f"c{cycle}-", rnd)
    node = cluster.add(NodeProcess(tmp_path, port, [], "solo", args)).start().wait_ready()
    assert missing(port, acked) == []
    # Writes in flight at a kill may have been committed without their OK being read.
    keys = int(next(line for line in status(port) if line.startswith("keys "))[5:])
    assert keys >= len(acked)


def test_whole_cluster_killed_and_restarted_keeps_acknowledged_data(tmp_path: Path,
                                                                   cluster: Cluster) -> None:
    """Writes through all three nodes, every node SIGKILLed at once, all restarted."""
    ports = free_ports(3)
    nodes = []
    for index, port in enumerate(ports):
        args = ["--data-dir", str(tmp_path / f"data{index}")]
        nodes.append(cluster.add(NodeProcess(tmp_path, port, ports, f"n{index}", args)).start())
    for node in nodes:
        node.wait_ready()
    writers = [Writer(node.port, f"w{index}-") for index, node in enumerate(nodes)]
    for writer in writers:
        writer.start()
    wait_until(lambda: all(len(w.acked) >= 500 for w in writers), "writes through every node")
    for node in nodes:
        node.signal(signal.SIGKILL)
    for node, writer in zip(nodes, writers):
        node.kill()
        writer.join(timeout=10)
    acked = [key for writer in writers for key in writer.acked]
    restarted = [cluster.add(NodeProcess(tmp_path, n.port, ports, n.node_id, n.extra)).start()
                 for n in nodes]
    for node in restarted:
        node.wait_ready()
    for node in restarted:
        wait_until(lambda node=node: missing(node.port, acked) == [],  # type: ignore[misc]
                   f"every acknowledged write on {node.node_id}")
    assert ask(restarted[0].port, "GET nothing-here") == "(nil)"
