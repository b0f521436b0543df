"""Real twistd processes on loopback ports: what a user running DistKV would check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realnodes import (
    Client,
    Cluster,
    NodeProcess,
    ask,
    free_ports,
    require_tool,
    status,
    twistd_for,
    wait_until,
)

pytestmark = pytest.mark.process


def converged(nodes: list, keys: dict) -> bool:  # type: ignore[type-arg]
    return all(ask(node.port, "GET " + key) == value for node in nodes for key, value in keys.items())


def test_seed_scenario_two_nodes_peering_with_each_other(cluster: Cluster) -> None:
    """The original two-node scenario: writes on either node are read on the other."""
    a, b = cluster.start(2)
    ca, cb = Client(a.port), Client(b.port)
    for i in range(5):
        assert ca.command(f"SET a{i} value from a {i}") == "OK"
        assert cb.command(f"SET b{i} value from b {i}") == "OK"
    wait_until(lambda: cb.command("GET a4") == "value from a 4", "a's keys on b")
    wait_until(lambda: ca.command("GET b4") == "value from b 4", "b's keys on a")
    for i in range(5):
        assert cb.command(f"GET a{i}") == f"value from a {i}"
        assert ca.command(f"GET b{i}") == f"value from b {i}"
    assert ca.command("SET a0 overwritten") == "OK"
    wait_until(lambda: cb.command("GET a0") == "overwritten", "the overwrite on b")
    for i in range(30):
        assert ca.command(f"SET bulk{i} v{i}") == "OK"
    wait_until(lambda: cb.command("GET bulk29") == "v29", "30 keys on b")
    assert [cb.command(f"GET bulk{i}") for i in range(30)] == [
        f"v{i}" for i in range(30)
    ]
    assert ca.command("GET missing") == "(nil)"
    assert cb.command("GET missing") == "(nil)"
    ca.close()
    cb.close()


def test_three_nodes_with_writes_through_every_node_converge(cluster: Cluster) -> None:
    """Sets and deletes made through each of three nodes end the same on all of them."""
    nodes = cluster.start(3)
    expected = {}
    for index, node in enumerate(nodes):
        client = Client(node.port)
        for i in range(20):
            key = f"n{index}k{i}"
            assert client.command(f"SET {key} {i}") == "OK"
            expected[key] = str(i)
        assert client.command(f"DEL n{index}k0") == "1"
        expected[f"n{index}k0"] = "(nil)"
        client.close()
    wait_until(lambda: converged(nodes, expected), "all three nodes to agree")


def test_stopped_peer_receives_what_it_missed(cluster: Cluster) -> None:
    """A peer frozen with SIGSTOP while others write gets every write after SIGCONT."""
    a, b, c = cluster.start(3)
    c.signal(signal.SIGSTOP)
    client = Client(a.port)
    for i in range(50):
        assert client.command(f"SET frozen{i} v{i}") == "OK"
    client.close()
    assert "outbox_writes=0 " not in a.peer_line(c.port)  # held for c
    c.signal(signal.SIGCONT)
    expected = {f"frozen{i}": f"v{i}" for i in range(50)}
    wait_until(lambda: converged([b, c], expected), "the thawed peer to catch up")


def test_killed_memory_node_restarts_empty_and_converges(cluster: Cluster) -> None:
    """kill -9 a memory-only node, write and delete meanwhile, restart it: it gets everything."""
    a, b, c = cluster.start(3)
    client = Client(a.port)
    for i in range(20):
        assert client.command(f"SET old{i} v{i}") == "OK"
    wait_until(lambda: ask(c.port, "GET old19") == "v19", "c to have the old keys")
    wait_until(lambda: "link=up" in a.peer_line(c.port), "a's link to c")
    c.kill()
    for i in range(10):
        assert client.command(f"SET during{i} x") == "OK"
        assert client.command(f"DEL old{i}") == "1"
    client.close()
    restarted = cluster.add(NodeProcess(c.workdir, c.port, c.peers, c.node_id)).start()
    restarted.wait_ready(serving=False)
    # While it loads it says so; it never answers (nil) for a key it has yet to receive.
    answers = []
    wait_until(lambda: answers.append(ask(restarted.port, "GET old15")) or answers[-1] == "v15",
               "the restarted node to serve old15")
    assert set(answers) <= {"v15"} | {a for a in answers if a.startswith("ERR LOADING")}, answers
    expected = {"during9": "x", "old0": "(nil)", "old9": "(nil)", "old10": "v10", "old19": "v19"}
    wait_until(lambda: converged([a, b, restarted], expected), "the restarted node to converge")
    # Its empty start deleted nothing elsewhere, and its peers resynced it once.
    assert ask(a.port, "GET old15") == "v15"
    wait_until(lambda: "resync=no resyncs=1 " in a.peer_line(c.port), "a to finish the resync")


def test_half_close_with_real_netcat(cluster: Cluster) -> None:
    """echo "GET k" | nc -N prints the value and exits."""
    nc = require_tool("nc")
    (node,) = cluster.start(1)
    assert ask(node.port, "SET k hello there") == "OK"
    done = subprocess.run([nc, "-N", "127.0.0.1", str(node.port)], input=b"GET k\n",
                          capture_output=True, timeout=10)
    assert done.returncode == 0
    assert done.stdout == b"hello there\r\n"


def _exchange(port: int, data: bytes, step: int) -> bytes:
    """Send ``data`` in ``step``-byte writes, half-close, and read until the node closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, len(data), step):
            sock.sendall(data[at : at + step])
        sock.shutdown(socket.SHUT_WR)
        replies = []
        while True:
            got = sock.recv(1 << 16)
            if not got:
                return b"".join(replies)
            replies.append(got)


def test_a_4_mib_text_line_sent_in_small_writes_is_stored(cluster: Cluster) -> None:
    """A text SET of 4 MiB, sent in 1,460-byte writes to a node started with
    --max-request 4194304, is answered OK and reads back whole; one byte more
    gets the limit's ERR."""
    (node,) = cluster.start(1, ["--max-request", str(4 << 20)])
    line = (b"SET k " + bytes(range(97, 123)) * ((4 << 20) // 26 + 1))[: 4 << 20]
    assert _exchange(node.port, line + b"\r\n", 1460) == b"OK\r\n"
    assert _exchange(node.port, b"GET k\n", 1460) == line[6:] + b"\r\n"
    assert _exchange(node.port, line + b"x\r\n", 1460) == \
        b"ERR request exceeds the limit of 4194304 bytes; closing\r\n"


def test_bad_options_and_help(tmp_path: Path) -> None:
    """Malformed peers and a busy port stop twistd non-zero with a clear message; --help lists all."""
    twistd = twistd_for(sys.executable)
    bad = subprocess.run([twistd, "-n", "--pidfile=", "distkv", "--peers", "nonsense"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "bad peer address 'nonsense'" in bad.stdout + bad.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        taken = subprocess.run(
            [twistd, "-n", "--pidfile=", "distkv", "--port", f"tcp:{port}:interface=127.0.0.1"],
            cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert taken.returncode != 0
    assert "Cannot listen for clients and peers" in taken.stdout + taken.stderr
    assert "Address already in use" in taken.stdout + taken.stderr
    helped = subprocess.run([twistd, "distkv", "--help"], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    for option in ("--port", "--peers", "--node-id", "--max-request", "--outbox-bytes",
                   "--max-clock-skew", "--heartbeat", "--flush-timeout", "--sync-interval",
                   "--data-dir", "--fsync", "--loading-wait", "--tombstone-grace"):
        assert option in helped.stdout


def test_bad_state_on_disk_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    """A corrupt database, or another node's data dir: exit 1 with one clear line."""
    twistd = twistd_for(sys.executable)
    (port,) = free_ports(1)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([twistd, "-n", "--pidfile=", "distkv", "--port",
                               f"tcp:{port}:interface=127.0.0.1", *args],
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=30)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "distkv.sqlite3").write_bytes(b"this is not a database" * 500)
    done = run("--data-dir", str(corrupt))
    assert done.returncode == 1
    assert "distkv.sqlite3 is unreadable or corrupt: file is not a database" in done.stderr
    owned = tmp_path / "owned"
    node = NodeProcess(tmp_path, port, [], "first", ["--data-dir", str(owned)]).start()
    node.wait_ready()
    assert node.terminate() == 0
    done = run("--data-dir", str(owned), "--node-id", "second")
    assert done.returncode == 1
    assert "belongs to node id first, not second" in done.stderr


def test_sigterm_flushes_to_peers_and_exits_zero(cluster: Cluster) -> None:
    """SIGTERM after writes: the node exits 0 and its peer has every write."""
    a, b = cluster.start(2)
    client = Client(a.port)
    for i in range(100):
        assert client.command(f"SET t{i} v{i}") == "OK"
    client.close()
    assert a.terminate() == 0
    assert "Server Shut Down" in a.log_text()
    wait_until(lambda: ask(b.port, "GET t99") == "v99", "b to hold the last write")
    assert [ask(b.port, f"GET t{i}") for i in (0, 50)] == ["v0", "v50"]


def test_two_nodes_with_one_id_refuse_to_link(tmp_path: Path, cluster: Cluster) -> None:
    """Nodes sharing a node id never link, never exchange writes, and both log why."""
    p1, p2 = free_ports(2)
    # They can never sync from each other: no waiting to load either.
    patience = ["--loading-wait", "0"]
    one = cluster.add(NodeProcess(tmp_path, p1, [p2], "twin", patience)).start()
    two = cluster.add(NodeProcess(tmp_path, p2, [p1], "twin", patience)).start()
    one.wait_ready()
    two.wait_ready()
    assert ask(one.port, "SET k v") == "OK"
    for node in (one, two):
        wait_until(lambda node=node: "our own node id" in node.log_text()  # type: ignore[misc]
                   or "uses our node id" in node.log_text(), "the refusal in the log")
        wait_until(lambda node=node: "refused=duplicate-node-id" in " ".join(status(node.port)),  # type: ignore[misc]
                   "the refusal in STATUS")
    assert ask(two.port, "GET k") == "(nil)"


def test_own_address_in_peers_is_skipped(cluster: Cluster) -> None:
    """A node listed in its own --peers works and never links to itself."""
    (node,) = cluster.start(1)  # its peer list is exactly its own address
    assert ask(node.port, "SET k v") == "OK"
    assert ask(node.port, "GET k") == "v"
    assert not any(line.startswith("peer ") for line in status(node.port))


def test_cpython_and_pypy_nodes_replicate_both_ways(cluster: Cluster) -> None:
    """One node under PyPy and one under CPython exchange writes in both directions."""
    pypy = os.environ.get("DISTKV_PYPY")
    if not pypy:
        message = "DISTKV_PYPY is not set: point it at a PyPy venv's python with txdistkv installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    require_tool("pypy", pypy)
    a, b = cluster.start(2, pythons=[pypy, sys.executable])
    assert "PyPy" in a.log_text() or "pypy" in a.log_text()
    assert ask(a.port, "SET from-pypy 1") == "OK"
    assert ask(b.port, "SET from-cpython 2") == "OK"
    wait_until(lambda: ask(b.port, "GET from-pypy") == "1", "the PyPy write on CPython")
    wait_until(lambda: ask(a.port, "GET from-cpython") == "2", "the CPython write on PyPy")
