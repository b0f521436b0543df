"""Recorded histories of real clients at a consistency level, checked.

Three real nodes (data dirs, ``--fsync always``) reach each other through
proxies the test controls (:class:`~tests.tcpproxy.ProxyMesh`). Client
threads, each holding a redis-py connection to every node, send one request
at a time through a node picked at random: each writes its own keys (unique
values) and reads everyone's. One node is partitioned off for a while, then
another is killed with SIGKILL and restarted on its data dir. Every request
is recorded as a :class:`~distkv.sim.linearizable.Op` (a write that timed
out, or whose connection died, is indeterminate; a read that got an error
returned nothing and is left out), and the history must pass the checkers
the fault simulator uses: linearizable per key (one writer per key, which
``QUORUM`` makes linearizable), read-your-writes and monotonic reads across
nodes, and convergence once healed. The node on the minority side must
refuse rather than answer: at least one of its requests is refused while it
is cut off, and no refused read counts as an answer.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from distkv.sim import linearizable, sessions
from distkv.sim.linearizable import UNKNOWN, Op
from tests.realnodes import Cluster, NodeProcess, free_ports, wait_until
from tests.tcpproxy import ProxyMesh

pytestmark = pytest.mark.process

CLIENTS = 4
KEYS_EACH = 2


class LevelClient(threading.Thread):
    """Requests one at a time, each through a node picked at random, recorded."""

    def __init__(self, index: int, ports: List[int], keys: List[bytes], seed: int) -> None:
        super().__init__(name=f"level client {index}", daemon=True)
        self.index = index
        self.ports = ports
        self.own = [b"c%d:k%d" % (index, j) for j in range(KEYS_EACH)]
        self.keys = keys
        self.rng = random.Random(seed)
        self.history: List[Op] = []
        #: Errors answered, by the index of the node that answered them.
        self.refused: Dict[int, int] = {}
        self.finished = 0
        self.allowed = 0
        self.error: Optional[BaseException] = None
        self._halt = threading.Event()
        self._more = threading.Condition()
        self._writes = 0
        self._connections: Dict[int, object] = {}

    def allow(self, more: int) -> int:
        with self._more:
            self.allowed += more
            self._more.notify()
            return self.allowed

    def stop(self) -> None:
        self._halt.set()
        with self._more:
            self._more.notify()
        self.join(timeout=30)

    def _client(self, node: int) -> object:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = self._connections.get(node)
        if client is None:
            client = self._connections[node] = redis.Redis(
                port=self.ports[node], socket_timeout=10, socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0), single_connection_client=True)
        return client

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                with self._more:
                    while self.finished >= self.allowed and not self._halt.is_set():
                        self._more.wait(0.5)
                if self._halt.is_set():
                    return
                self._one()
                self.finished += 1
        except BaseException as e:  # the test reports it
            self.error = e

    def _one(self) -> None:
        import redis

        node = self.rng.randrange(len(self.ports))
        write = self.rng.random() < 0.5
        key = self.rng.choice(self.own if write else self.keys)
        if write:
            self._writes += 1
            value = b"c%d-%d" % (self.index, self._writes)
        call = time.monotonic()
        try:
            client = self._client(node)  # redis-py connects here: a dead node refuses
            if write:
                assert client.set(key, value) is True  # type: ignore[attr-defined]
                self.history.append(Op(self.index, "set", key, (value,), call, time.monotonic(),
                                       None))
            else:
                got = client.get(key)  # type: ignore[attr-defined]
                self.history.append(Op(self.index, "get", key, (), call, time.monotonic(), got))
        except redis.ResponseError as e:
            self.refused[node] = self.refused.get(node, 0) + 1
            text = str(e)
            if write and text.startswith("TIMEOUT"):
                # Applied on that node, may reach the others: indeterminate.
                self.history.append(Op(self.index, "set", key, (value,), call, None, UNKNOWN))
            elif not text.startswith(("UNAVAILABLE", "TIMEOUT", "LOADING")):
                raise
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            # The node died or was cut off mid-request: a write may have landed.
            self._connections.pop(node, None)
            if write:
                self.history.append(Op(self.index, "set", key, (value,), call, None, UNKNOWN))


def run_phase(clients: List[LevelClient], each: int,
              until: Callable[[], bool] = lambda: True, timeout: float = 30.0) -> None:
    """Let every client run ``each`` more requests, again until ``until`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        targets = [client.allow(each) for client in clients]

        def reached(targets: List[int] = targets) -> bool:
            for client in clients:
                if client.error is not None:
                    raise AssertionError(f"{client.name} failed") from client.error
            return all(c.finished >= t for c, t in zip(clients, targets))

        wait_until(reached, "the clients' requests", timeout=60)
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the phase's condition did not hold within {timeout}s: "
                                 f"{[(c.refused, c.finished) for c in clients]}")


def values_on(port: int, keys: List[bytes]) -> Dict[bytes, bytes]:
    """What one node holds of ``keys``, read locally (level ONE)."""
    import redis

    client = redis.Redis(port=port, single_connection_client=True)
    try:
        client.execute_command("CONSISTENCY", "ONE")
        return {k: v for k, v in zip(keys, client.mget(keys)) if v is not None}
    finally:
        client.close()


def test_quorum_histories_through_a_partition_and_a_kill_9_pass_the_checkers(
        tmp_path: Path, cluster: Cluster) -> None:
    """QUORUM clients through every node, a node cut off, then one killed
    with SIGKILL and restarted: the recorded history is linearizable per key
    (one writer each), keeps read-your-writes and monotonic reads, converges,
    and the cut-off node refused requests instead of answering them."""
    pytest.importorskip("redis")
    level = "quorum"
    ports = free_ports(3)
    mesh = ProxyMesh(ports)
    extra = ["--write-level", level, "--read-level", level, "--quorum-timeout", "1",
             "--fsync", "always"]

    def node_args(i: int) -> List[str]:
        return extra + mesh.node_args(i) + ["--data-dir", str(tmp_path / f"data{i + 1}")]

    keys = [b"c%d:k%d" % (c, j) for c in range(CLIENTS) for j in range(KEYS_EACH)]
    clients = [LevelClient(i, ports, keys, seed=1000 + i) for i in range(CLIENTS)]
    try:
        nodes = [cluster.add(NodeProcess(tmp_path, port, mesh.peer_ports(i), f"n{i + 1}",
                                         node_args(i))).start() for i, port in enumerate(ports)]
        for node in nodes:
            node.wait_ready()
        for client in clients:
            client.start()
        run_phase(clients, 25)

        mesh.isolate(2)
        before = sum(c.refused.get(2, 0) for c in clients)
        run_phase(clients, 25, until=lambda: sum(c.refused.get(2, 0) for c in clients)
                  >= before + 3)
        mesh.heal()
        run_phase(clients, 20)

        nodes[0].kill()
        run_phase(clients, 15)
        nodes[0] = cluster.add(NodeProcess(tmp_path, ports[0], mesh.peer_ports(0), "n1",
                                           node_args(0))).start()
        nodes[0].wait_ready()
        run_phase(clients, 25)
    finally:
        for client in clients:
            client.stop()
        mesh.close()
    history = [op for client in clients for op in client.history]
    (tmp_path / "history.txt").write_text("\n".join(op.describe() for op in history) + "\n")
    assert sum(op.ret is not None for op in history) >= CLIENTS * 60, "too few answers to judge"

    replicas: Dict[str, Dict[bytes, bytes]] = {}

    def identical() -> bool:
        replicas.clear()
        replicas.update({node.node_id: values_on(node.port, keys) for node in nodes})
        return len({tuple(sorted(r.items())) for r in replicas.values()}) == 1

    wait_until(identical, "every node to hold the same values")
    failures = [f.describe() for f in linearizable.check(history)]
    failures += [v.why for v in sessions.read_your_writes(history)]
    failures += [v.why for v in sessions.monotonic_reads(history)]
    failures += [v.why for v in sessions.converged(history, replicas, keys)]
    assert failures == [], "\n".join(failures)
