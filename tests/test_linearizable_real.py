"""LINEARIZABLE on real ``twistd -n distkv`` nodes through redis-py, as a user
would: INCR and SET NX through every node survive a ``kill -9`` and a
restart, the recorded history is linearizable, and a lone node refuses."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import List

import pytest

from distkv.sim import linearizable
from distkv.sim.linearizable import Op
from tests.realnodes import Cluster, NodeProcess, free_ports, wait_until

pytestmark = pytest.mark.process

# A second of accepted skew: a (re)started node takes part in ballots a second after it starts.
OPTIONS = ["--write-level", "linearizable", "--read-level", "LINEARIZABLE",
           "--quorum-timeout", "2", "--max-clock-skew", "1"]


def _ready(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port).info("consistency")["acceptor_ready"] == "yes"
    except redis.ConnectionError:
        return False


def test_linearizable_through_every_node_survives_kill_9_and_restart(
        cluster: Cluster, tmp_path: Path) -> None:
    """Three nodes with data dirs at LINEARIZABLE (the options); redis-py
    INCRs a counter and SET NX a lock through every node in turn; one node
    is killed with SIGKILL midway and later restarted from its data dir:
    every INCR answers the next number, exactly one SET NX per lock wins,
    the history passes the linearizability checker, every node ends with
    the same values, and with two nodes down the last refuses."""
    import redis

    ports = free_ports(3)
    nodes: List[NodeProcess] = []
    for index, port in enumerate(ports):
        data = tmp_path / f"data{index + 1}"
        node = NodeProcess(tmp_path, port, ports, f"node{index + 1}",
                           OPTIONS + ["--data-dir", str(data)])
        nodes.append(cluster.add(node.start()))
    for node in nodes:
        node.wait_ready()
        wait_until(lambda port=node.port: _ready(port),
                   f"{node.node_id}'s acceptor to be ready")
    clients = [redis.Redis(port=node.port) for node in nodes]
    assert clients[0].execute_command("CONSISTENCY") == b"read LINEARIZABLE write LINEARIZABLE"
    history: List[Op] = []
    turn = itertools.count()
    expected = 0
    for round_ in range(3):
        if round_ == 1:
            nodes[2].kill()
            live = clients[:2]
        elif round_ == 2:
            nodes[2].start().wait_ready()
            wait_until(lambda: _ready(nodes[2].port), "the restarted node's acceptor")
            live = clients
        else:
            live = clients
        for i in range(20):
            client = live[next(turn) % len(live)]
            call = time.monotonic()
            number = client.incr("counter")
            history.append(Op(0, "incr", b"counter", (1,), call, time.monotonic(), number))
            expected += 1
            assert number == expected
            lock = f"lock{round_}-{i}"
            winners = [c.set(lock, f"by{n}", nx=True) for n, c in enumerate(live)]
            assert winners.count(True) == 1 and winners[0] is True, winners
    for client in clients:
        assert client.get("counter") == b"%d" % expected
        assert client.get("lock2-19") == b"by0"
    history.append(Op(1, "get", b"counter", (), time.monotonic(), time.monotonic() + 1,
                      b"%d" % expected))
    assert linearizable.check(history) == []
    nodes[1].kill()
    nodes[2].kill()
    with pytest.raises(redis.ResponseError,
                       match="^(UNAVAILABLE|TIMEOUT) linearizable .*did not run"):
        clients[0].get("counter")
