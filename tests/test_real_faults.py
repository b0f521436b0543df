"""Three real nodes whose peer traffic runs through proxies the test controls.

Each node reaches each other node through its own :class:`~tests.tcpproxy.TcpProxy`
(six in all), so the test can partition a node off, stall a link briefly and
past the heartbeat timeout, delay a link and block one direction of another,
while one writer per node runs SETs (unique values) and DELs on keys shared by
all writers and on keys of its own. Every node keeps its data in a data dir with
``--fsync always``; one node is cut off and killed with SIGKILL in the middle
of its writer's stream, another while linked over slow links, and each is
restarted on its dir. Once everything is healed, all three nodes must end with
identical data, and that data must keep every acknowledged write under
last-writer-wins (see :func:`violations`). The first tests check the proxy
itself against plain sockets. Each run writes its history (phases and every
operation) to ``history.txt`` beside the node logs.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from tests.realnodes import Client, Cluster, NodeProcess, dump, free_ports, status, wait_until
from tests.tcpproxy import BACKWARD, FORWARD, ProxyMesh, TcpProxy

pytestmark = pytest.mark.process

# -- the proxy on its own ---------------------------------------------------


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listening socket on loopback, to stand behind a proxy."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(5)
    try:
        yield listener
    finally:
        listener.close()


def connect_through(proxy: TcpProxy, server: socket.socket) -> Tuple[socket.socket, socket.socket]:
    """A client connected through ``proxy`` and the server's end of it."""
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    accepted, _ = server.accept()
    accepted.settimeout(5)
    return client, accepted


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def nothing_arrived(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def proxy_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tcpproxy")]


def test_proxy_partition_closes_connections_and_refuses_new_ones_until_healed(
        server: socket.socket) -> None:
    """Partitioned both ways, the proxy closes what is open and accepts nothing until the heal."""
    proxy = TcpProxy(server.getsockname()[1])
    try:
        client, accepted = connect_through(proxy, server)
        client.sendall(b"ping")
        assert receive(accepted, 4) == b"ping"
        accepted.sendall(b"pong")
        assert receive(client, 4) == b"pong"
        proxy.partition()
        assert is_closed(client) and is_closed(accepted)
        refused = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert is_closed(refused)
        assert proxy.stats()["refused"] == 1
        proxy.heal()
        client, accepted = connect_through(proxy, server)
        client.sendall(b"again")
        assert receive(accepted, 5) == b"again"
    finally:
        proxy.close()


def test_proxy_one_way_block_holds_bytes_while_the_other_way_flows(server: socket.socket) -> None:
    """A blocked direction holds its bytes (in order, delivered at the heal); the other flows."""
    proxy = TcpProxy(server.getsockname()[1])
    try:
        client, accepted = connect_through(proxy, server)
        proxy.block(frozenset({FORWARD}))
        client.sendall(b"abc")
        wait_until(lambda: proxy.stats()["held"] == 3, "the proxy to hold 3 bytes")
        accepted.sendall(b"xyz")
        assert receive(client, 3) == b"xyz"
        assert nothing_arrived(accepted)
        client.sendall(b"def")
        proxy.heal()
        assert receive(accepted, 6) == b"abcdef"
        proxy.block(frozenset({BACKWARD}))
        accepted.sendall(b"held")
        client.sendall(b"flows")
        assert receive(accepted, 5) == b"flows"
        wait_until(lambda: proxy.stats()["held"] == 4, "the proxy to hold 4 bytes")
        assert nothing_arrived(client)
        proxy.heal()
        assert receive(client, 4) == b"held"
    finally:
        proxy.close()


def test_proxy_stall_holds_both_ways_and_delay_holds_each_chunk(server: socket.socket) -> None:
    """A stall holds both directions without closing; a delay forwards no sooner than asked."""
    proxy = TcpProxy(server.getsockname()[1])
    try:
        client, accepted = connect_through(proxy, server)
        proxy.stall()
        client.sendall(b"up")
        accepted.sendall(b"down")
        wait_until(lambda: proxy.stats()["held"] == 6, "the proxy to hold 6 bytes")
        assert nothing_arrived(client) and nothing_arrived(accepted)
        assert proxy.stats()["open"] == 1
        proxy.heal()
        assert receive(accepted, 2) == b"up" and receive(client, 4) == b"down"
        proxy.delay(0.2)
        sent = time.monotonic()
        client.sendall(b"late")
        assert receive(accepted, 4) == b"late"
        assert time.monotonic() - sent >= 0.2
        client.close()
        assert is_closed(accepted), "a close is passed on"
    finally:
        proxy.close()


def test_proxy_close_stops_its_thread_and_its_port(server: socket.socket) -> None:
    """close() closes every connection and the listening port and leaves no thread behind."""
    mesh = ProxyMesh([server.getsockname()[1]] * 3)
    proxy = mesh.proxies[0, 1]
    client, accepted = connect_through(proxy, server)
    assert len(proxy_threads()) >= 6
    mesh.close()
    assert proxy_threads() == []
    assert is_closed(client) and is_closed(accepted)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


# -- writers and the history they record ------------------------------------------

ACKED = "acked"
FAILED = "failed"  # refused before it ran (ERR LOADING): it has no effect
UNKNOWN = "indeterminate"  # no answer, or an error after it may have run

#: Some operations go to keys every writer shares in every phase (conflicts
#: across nodes, decided by last-writer-wins); the rest to keys of their
#: writer and phase only, which nothing later overwrites: their final state
#: must be the last acknowledged operation on them, whatever the faults did.
SHARED_SHARE = 0.4
SHARED_KEYS = 16
OWN_KEYS = 64
DELETE_SHARE = 0.15
#: Versions are hybrid-clock milliseconds with a counter, and node ids break
#: ties: two writes through two nodes within one millisecond, before either
#: saw the other, may be ordered either way. A node restarted from its data
#: dir stamps one millisecond past its saved mark. So an operation counts as
#: following another in real time only if it began this much after the other
#: ended (all processes read the same wall clock).
SLACK = 0.005


@dataclass
class Op:
    """One SET (``value``) or DEL (``value`` None) by a writer, and how it ended."""

    node: int
    key: str
    value: Optional[str]
    start: float
    end: float = math.inf
    outcome: str = UNKNOWN
    reply: str = ""

    def __str__(self) -> str:
        what = f"SET {self.value}" if self.value is not None else "DEL"
        return (f"{what} via node {self.node + 1} [{self.start:.4f}, {self.end:.4f}] "
                f"{self.outcome} {self.reply!r}")


class Writer(threading.Thread):
    """Sends SETs (unique values) and DELs to one node, one at a time, as allowed.

    The test allows a number of operations per phase (:meth:`allow`); the
    writer reconnects, polling, when its node goes away, and waits for it to
    serve again after an ``ERR LOADING``. Every operation is recorded with
    the wall-clock times it was sent and answered.
    """

    def __init__(self, index: int, node: Callable[[], NodeProcess]) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.index = index
        self.node = node
        self.rnd = random.Random(f"writer {index}")
        self.ops: List[Op] = []
        self.finished = 0
        self.connections_lost = 0
        self.error: Optional[BaseException] = None
        self._allowed = 0
        self._phases: List[Tuple[int, str]] = []  # (operations allowed, phase), growing
        self._stopped = False
        self._cond = threading.Condition()
        self._client: Optional[Client] = None

    def allow(self, more: int, phase: str) -> int:
        """Let the writer run ``more`` operations on its keys of ``phase`` and
        the shared keys; returns the count to wait for."""
        with self._cond:
            self._allowed += more
            self._phases.append((self._allowed, phase))
            self._cond.notify_all()
            return self._allowed

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.join(30)
        assert not self.is_alive(), f"{self.name} did not stop"
        if self._client is not None:
            self._client.close()

    def run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self.finished >= self._allowed and not self._stopped:
                        self._cond.wait(1.0)
                    if self._stopped:
                        return
                self._one()
                with self._cond:
                    self.finished += 1
                    self._cond.notify_all()
        except BaseException as e:  # reported by the test's polling
            self.error = e

    def _one(self) -> None:
        with self._cond:
            phase = next(name for end, name in self._phases if len(self.ops) < end)
        # The same draws for every operation: a seed gives the same sequence
        # whatever the faults did to earlier ones.
        shared, number = self.rnd.random() < SHARED_SHARE, self.rnd.randrange(OWN_KEYS)
        key = f"k{number % SHARED_KEYS}" if shared else f"{phase}-n{self.index + 1}-k{number}"
        if self.rnd.random() < DELETE_SHARE:
            value: Optional[str] = None
            line = f"DEL {key}"
        else:
            value = f"n{self.index + 1}-{len(self.ops)}"
            line = f"SET {key} {value}"
        if self._client is None:
            self._client = self._connect()
        op = Op(self.index, key, value, time.time())
        self.ops.append(op)
        try:
            op.reply = self._client.command(line)
        except socket.timeout:
            # The node may still run it at any later time: op.end stays infinite.
            self._lost()
            return
        except OSError:
            # The node is gone: whatever it ran, it ran before now.
            op.end = time.time()
            self._lost()
            return
        op.end = time.time()
        if op.reply == "OK" if value is not None else op.reply in ("0", "1"):
            op.outcome = ACKED
        elif op.reply.startswith("ERR LOADING"):
            op.outcome = FAILED
            port = self.node().port
            wait_until(lambda: "state serving" in status(port),
                       f"node {self.index + 1} to serve its writer again")

    def _lost(self) -> None:
        assert self._client is not None
        self._client.close()
        self._client = None
        self.connections_lost += 1

    def _connect(self) -> Client:
        clients: List[Client] = []

        def connected() -> bool:
            clients.append(Client(self.node().port))
            return True

        wait_until(connected, f"node {self.index + 1} to accept its writer again")
        return clients[0]


def violations(ops: Sequence[Op], final: Dict[str, str]) -> List[str]:
    """What the agreed final data breaks of the recorded history.

    Values are unique, so a key's final value names the SET that wrote it.
    For each key, the final state (a value, or absent) must be the effect of
    some SET or DEL that was acknowledged or may have run (no answer), and
    that no *acknowledged* operation on the key strictly followed in real
    time (began more than :data:`SLACK` after it ended): a later acknowledged
    operation carries a higher version and must win under last-writer-wins.
    So every acknowledged write is present or superseded by a later one, and
    no acknowledged delete is undone. A key with no acknowledged operation
    may hold any value written to it, or none.
    """
    by_key: Dict[str, List[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    out = [f"{key}={value!r}: the key was never written" for key, value in sorted(final.items())
           if key not in by_key]
    for key, key_ops in sorted(by_key.items()):
        value = final.get(key)
        acked = [op for op in key_ops if op.outcome == ACKED]
        candidates = [op for op in key_ops if op.outcome != FAILED and op.value == value]
        if value is None and not acked:
            continue
        if not candidates:
            out.append(f"{key}={value!r}: no SET that may have run wrote it" if value is not None
                       else f"{key} ends absent with no delete, but acknowledged: "
                       + "; ".join(map(str, acked[:3])))
            continue
        survivors = [c for c in candidates
                     if not any(o is not c and o.start > c.end + SLACK for o in acked)]
        if not survivors:
            # The newest candidate, and the acknowledged operations that followed it.
            last = max(candidates, key=lambda op: op.end)
            later = [o for o in acked if o.start > last.end + SLACK]
            out.append(f"{key} ends {'absent' if value is None else repr(value)}, from {last}, "
                       f"but acknowledged later: " + "; ".join(map(str, later[:3])))
    return out


def test_violations_flags_lost_resurrected_and_phantom_values_only() -> None:
    """The checker flags a lost acknowledged write, an undone delete and a value no
    write that may have run wrote; it accepts concurrent and unanswered writes."""
    first = Op(0, "k", "a", 1.0, 1.1, ACKED)
    later = Op(1, "k", "b", 2.0, 2.1, ACKED)
    overlapping = Op(2, "k", "c", 1.05, 2.05, ACKED)
    deleted = Op(0, "k", None, 3.0, 3.1, ACKED)
    assert violations([first, later], {"k": "b"}) == []
    assert violations([first, later], {"k": "a"}) != []  # b, acknowledged after a, is lost
    assert violations([first, later], {}) != []
    assert violations([first, later, overlapping], {"k": "c"}) == []
    assert violations([first, later, deleted], {}) == []
    assert violations([first, later, deleted], {"k": "b"}) != []  # resurrection
    unanswered = Op(1, "k", "d", 2.5, math.inf, UNKNOWN)
    assert violations([first, later, unanswered], {"k": "d"}) == []
    assert violations([first], {"k": "zzz"}) != []
    assert violations([first], {"other": "a"}) != []
    refused = Op(1, "k", "e", 2.5, 2.6, FAILED)
    assert violations([first, refused], {"k": "e"}) != []
    assert violations([refused], {}) == []


# -- the faults ------------------------------------------------------------------


def node_args(tmp_path: Path, index: int, mesh: ProxyMesh) -> List[str]:
    return ["--data-dir", str(tmp_path / f"data{index + 1}"), "--fsync", "always",
            "--sync-interval", "2"] + mesh.node_args(index)


class Phases:
    """Runs the writers phase by phase and notes when each phase ran."""

    def __init__(self, writers: Sequence[Writer]) -> None:
        self.writers = writers
        self.log: List[str] = []

    def run(self, phase: str, each: int, until: Callable[[], bool] = lambda: True,
            timeout: float = 15.0,
            meanwhile: Callable[[List[int]], None] = lambda targets: None) -> None:
        """Let every writer run ``each`` operations at a time until ``until``
        holds after a round (for at most ``timeout`` seconds); ``meanwhile``
        runs during the first round, given the counts the writers will reach."""
        started = time.time()
        deadline = time.monotonic() + timeout
        rounds = 0
        while True:
            targets = [writer.allow(each, phase) for writer in self.writers]
            if rounds == 0:
                meanwhile(targets)
            rounds += 1
            wait_until(lambda targets=targets: self._reached(targets),  # type: ignore[misc]
                       f"the writers' operations in phase {phase}", timeout=20)
            if until():
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"phase {phase}: the fault did not show in {timeout}s")
        self.log.append(f"phase {phase}: {rounds} rounds of {each} operations, "
                        f"{started:.4f} to {time.time():.4f}")

    def _reached(self, targets: Sequence[int]) -> bool:
        for writer in self.writers:
            if writer.error is not None:
                raise AssertionError(f"{writer.name} failed") from writer.error
        return all(w.finished >= t for w, t in zip(self.writers, targets))


def held(proxies: Sequence[TcpProxy]) -> int:
    return sum(proxy.stats()["held"] for proxy in proxies)


def hung_up(proxies: Sequence[TcpProxy]) -> int:
    """How many times a node closed a connection through these proxies."""
    return sum(proxy.stats()["hung_up"] for proxy in proxies)


def test_partitions_stalls_delays_and_kill_9_lose_no_acknowledged_write(
        tmp_path: Path, cluster: Cluster) -> None:
    """Three nodes, writers on each, through a partition, a stall, a delay, a one-way
    block and a kill -9 of an isolated node: identical data after healing, every
    acknowledged write kept under last-writer-wins."""
    ports = free_ports(3)
    mesh = ProxyMesh(ports)
    writers: List[Writer] = []
    phases = Phases(writers)
    try:
        nodes = [cluster.add(NodeProcess(tmp_path, port, mesh.peer_ports(i), f"n{i + 1}",
                                         node_args(tmp_path, i, mesh))).start()
                 for i, port in enumerate(ports)]
        for node in nodes:
            node.wait_ready()
        writers += [Writer(i, lambda i=i: nodes[i]) for i in range(3)]  # type: ignore[misc]
        for writer in writers:
            writer.start()

        phases.run("warm", 40)

        # n3 alone: the others' reconnections are refused, the two sides diverge.
        mesh.isolate(2)
        phases.run("isolated", 50,
                   until=lambda: sum(p.stats()["refused"] for p in mesh.touching(2)) >= 2)
        assert dump(nodes[2].port) != dump(nodes[0].port), "n3 should have been cut off"
        mesh.heal()

        # A stall shorter than the heartbeat timeout: held bytes go through on resume.
        mesh.stall(0, 1)
        phases.run("stalled", 25, until=lambda: held(mesh.between(0, 1)) > 0)
        mesh.heal()

        # A stall that outlasts it: a side hangs up, its redial stalls too.
        mesh.stall(1, 2)
        before = hung_up(mesh.between(1, 2))
        phases.run("long-stall", 25, until=lambda: hung_up(mesh.between(1, 2)) > before)
        mesh.heal()

        # Slow n2-n3, and n3 -> n1 blocked until a side gives the silent link up.
        mesh.delay(1, 2, 0.08)
        mesh.block_one_way(2, 0)
        before = hung_up(mesh.between(0, 2))
        phases.run("one-way", 25, until=lambda: hung_up(mesh.between(0, 2)) > before)
        mesh.heal()

        def kill_and_restart(index: int, then: Callable[[], None] = lambda: None
                             ) -> Callable[[List[int]], None]:
            """SIGKILL node ``index`` 30 operations before its writer's target,
            restart it on its data dir, run ``then`` once it answers PING, and
            wait until it serves."""
            def run(targets: List[int]) -> None:
                writer = writers[index]
                wait_until(lambda: writer.finished >= targets[index] - 30,
                           f"n{index + 1}'s writer halfway")
                nodes[index].kill()
                nodes[index] = cluster.add(NodeProcess(
                    tmp_path, ports[index], mesh.peer_ports(index), f"n{index + 1}",
                    node_args(tmp_path, index, mesh))).start()
                nodes[index].wait_ready(serving=False)
                then()
                nodes[index].wait_ready()
            return run

        # n1 alone, killed in the middle of its writer's stream: what it
        # acknowledged is on its disk and nowhere else. Healed as it restarts
        # (a node back from its data dir may wait for a peer to vouch for it).
        mesh.isolate(0)
        lost = writers[0].connections_lost
        phases.run("killed", 60, meanwhile=kill_and_restart(0, then=mesh.heal))
        assert writers[0].connections_lost > lost, "the kill should cut n1's writer off"

        # n2 killed while linked, over slow links: its outboxes are not empty.
        for other in (0, 2):
            mesh.delay(1, other, 0.03)
        lost = writers[1].connections_lost
        phases.run("killed-linked", 60, meanwhile=kill_and_restart(1))
        assert writers[1].connections_lost > lost, "the kill should cut n2's writer off"
        mesh.heal()

        phases.run("healed", 30)
        for writer in writers:
            writer.stop()

        dumps: List[Dict[str, str]] = []

        def identical() -> bool:
            dumps[:] = [dump(node.port) for node in nodes]
            return dumps[0] == dumps[1] == dumps[2]

        healed = time.time()
        try:
            wait_until(identical, "all three nodes to hold identical data", timeout=30)
            phases.log.append(f"identical {time.time() - healed:.2f}s after the writers stopped")
        except AssertionError:
            differ = {k: [d.get(k) for d in dumps] for k in sorted(set().union(*dumps))
                      if len({d.get(k) for d in dumps}) > 1}
            raise AssertionError(f"nodes still differ on {len(differ)} keys: {differ}")
        ops = [op for writer in writers for op in writer.ops]
        acked = sum(op.outcome == ACKED for op in ops)
        assert acked >= 0.9 * len(ops), [str(op) for op in ops if op.outcome != ACKED]
        bad = violations(ops, dumps[0])
        assert bad == [], "\n".join(bad)
        for node in nodes:
            assert "Traceback" not in node.log_text(), f"{node.log}: an error was logged"
    finally:
        for writer in writers:
            if writer.is_alive():
                writer.stop()
        mesh.close()
        history = phases.log + [str(op) + f" {op.key}" for w in writers for op in w.ops]
        (tmp_path / "history.txt").write_text("\n".join(history) + "\n")
