"""Counters on real ``twistd -n distkv`` nodes, through redis-py as a user would."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Sequence

import pytest

from tests.realnodes import Cluster, NodeProcess, free_ports, wait_until

pytestmark = pytest.mark.process


def at_once(ports: Sequence[int], batches: int, add: Callable[[Any], object]) -> None:
    """Through each port at once (a thread each), ``batches`` redis-py
    pipelines of ten commands that ``add`` puts in; fails on any error."""
    import redis

    errors: List[BaseException] = []

    def run(port: int) -> None:
        try:
            client = redis.Redis(port=port)
            for _ in range(batches):
                pipe = client.pipeline(transaction=False)
                for _ in range(10):
                    add(pipe)
                pipe.execute()
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(thread.is_alive() for thread in threads), errors


def test_incrs_through_three_nodes_at_once_add_up_on_every_node(cluster: Cluster) -> None:
    """200 INCRs through each of three nodes at once (redis-py, pipelined in
    tens), the third node killed with SIGKILL and restarted from its data
    dir: every node reads 600; a SET then resets it everywhere, and an INCR
    and a DECRBY through other nodes count on top; 50 INCRBYFLOAT 0.1s
    through each node at once then read exactly 15 more on every node."""
    import redis

    ports = free_ports(3)
    nodes = [cluster.add(NodeProcess(cluster.workdir, port, ports, f"node{index + 1}",
                                     ["--data-dir", str(cluster.workdir / f"data{index + 1}")]))
             for index, port in enumerate(ports)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()
    at_once([node.port for node in nodes], 20, lambda pipe: pipe.incr("hits"))
    nodes[2].kill()  # SIGKILL, and waited for
    nodes[2].start().wait_ready()
    wait_until(lambda: all(redis.Redis(port=n.port).get("hits") == b"600" for n in nodes),
               "every node to read 600")
    assert redis.Redis(port=nodes[0].port).set("hits", 10) is True
    wait_until(lambda: all(redis.Redis(port=n.port).get("hits") == b"10" for n in nodes),
               "the SET to reach every node")
    assert redis.Redis(port=nodes[1].port).incr("hits") == 11
    assert redis.Redis(port=nodes[2].port).decrby("hits", 5) == 6
    wait_until(lambda: all(redis.Redis(port=n.port).get("hits") == b"6" for n in nodes),
               "every node to read 6")
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        redis.Redis(port=nodes[0].port).incrby("hits", "x")
    assert redis.Redis(port=nodes[0].port).incrbyfloat("hits", 0.5) == 6.5
    at_once([node.port for node in nodes], 5, lambda pipe: pipe.incrbyfloat("hits", 0.1))
    wait_until(lambda: all(redis.Redis(port=n.port).get("hits") == b"21.5" for n in nodes),
               "every node to read 6.5 plus 150 tenths")
