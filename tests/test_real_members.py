"""Real twistd processes: a node joins a running cluster through one member, and
a forgotten member no longer holds tombstones back (issue 12, item 4)."""

from __future__ import annotations

import threading
from typing import Dict, List

import pytest
import redis

from tests.realnodes import Client, Cluster, NodeProcess, ask, free_ports, status, wait_until

pytestmark = pytest.mark.process

FAST = ["--sync-interval", "2", "--tombstone-grace", "3", "--max-clock-skew", "1"]


def key_count(port: int) -> int:
    return int(ask(port, "DBSIZE"))


def members_lines(port: int) -> List[str]:
    client = Client(port)
    try:
        return client.report("MEMBERS")
    finally:
        client.close()


def stat(port: int, name: str) -> str:
    return [line for line in status(port) if line.startswith(name + " ")][0].split()[1]


def test_a_fourth_node_joins_a_running_cluster_through_one_member(cluster: Cluster) -> None:
    """node4 is started with node2's address only while a client writes through
    node1: it learns every member, ends with every key, and every old node lists
    it as a member and links to it."""
    old = cluster.start(3, FAST)
    client = Client(old[0].port)
    for i in range(500):
        assert client.command(f"SET before{i} v{i}") == "OK"
    written: Dict[str, str] = {}
    stop = threading.Event()

    def write() -> None:
        writer = Client(old[0].port)
        i = 0
        while not stop.is_set():
            assert writer.command(f"SET during{i} w{i}") == "OK"
            written[f"during{i}"] = f"w{i}"
            i += 1
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        port = free_ports(1)[0]
        fourth = cluster.add(NodeProcess(cluster.workdir, port, [old[1].port], "node4",
                                         FAST)).start()
        fourth.wait_ready()
        wait_until(lambda: len(written) > 200, "writes to go on while node4 joins")
    finally:
        stop.set()
        thread.join()
    client.close()
    total = 500 + len(written)
    for node in old + [fourth]:
        wait_until(lambda p=node.port: key_count(p) == total,  # type: ignore[misc]
                   f"{node.node_id} to hold every key")
    assert ask(fourth.port, "GET before0") == "v0"
    last = max(written, key=lambda k: int(k[len("during"):]))
    assert ask(fourth.port, f"GET {last}") == written[last]
    for node in old:
        lines = members_lines(node.port)
        row = [line for line in lines if line.startswith("member node4 ")]
        assert row and f"addr=127.0.0.1:{port}" in row[0] and "state=member" in row[0], lines
        wait_until(lambda p=node.port: "link_out=up" in [  # type: ignore[misc]
                       x for x in members_lines(p) if x.startswith("member node4 ")][0],
                   f"{node.node_id} to dial node4")
    nodes = Client(old[0].port).report("CLUSTER NODES")
    assert sorted(line.split()[0] for line in nodes) == ["node1", "node2", "node3", "node4"]
    # redis-py parses the RESP reply as it parses Redis's own.
    parsed = redis.Redis(port=old[2].port).execute_command("CLUSTER NODES")
    assert sorted(entry["node_id"] for entry in parsed.values()) == [
        "node1", "node2", "node3", "node4"]
    assert all(entry["connected"] for entry in parsed.values())


def test_a_forgotten_killed_member_no_longer_holds_tombstones_back(cluster: Cluster) -> None:
    """node3 is killed for good; a DEL's tombstone stays while it is a member, and
    is purged on node1 and node2 once CLUSTER FORGET node3 was sent to node2."""
    a, b, c = cluster.start(3, FAST)
    assert ask(a.port, "SET k v") == "OK"
    wait_until(lambda: ask(c.port, "GET k") == "v", "node3 to have k")
    c.kill()
    assert ask(a.port, "DEL k") == "1"
    wait_until(lambda: stat(b.port, "tombstones") == "1", "node2 to hold the tombstone")
    # Three more rounds (2 s apart) outlast the 3 s grace: node3's absence holds it back.
    def rounds() -> int:
        return int(a.peer_line(b.port).split("sync_rounds=")[1].split()[0])

    start = rounds()
    wait_until(lambda: rounds() >= start + 3, "three more anti-entropy rounds")
    assert (stat(a.port, "tombstones_purged"), stat(b.port, "tombstones_purged")) == ("0", "0")
    assert ask(b.port, "CLUSTER FORGET node3") == "OK"
    for node in (a, b):
        wait_until(lambda p=node.port: stat(p, "tombstones_purged") == "1",  # type: ignore[misc]
                   f"{node.node_id} to purge the tombstone")
        assert stat(node.port, "tombstones") == "0"
        assert any(line.startswith("member node3 ") and "state=removed" in line
                   for line in members_lines(node.port))


def test_asymmetric_peer_lists_converge(cluster: Cluster) -> None:
    """node1 lists nobody, node2 lists node1, node3 lists node2: each learns every
    member, links to it, and writes through any node reach all three."""
    ports = free_ports(3)
    nodes = [cluster.add(NodeProcess(cluster.workdir, port, ports[:i][-1:], f"node{i + 1}",
                                     FAST)).start() for i, port in enumerate(ports)]
    for node in nodes:
        node.wait_ready()
    for node in nodes:
        assert ask(node.port, f"SET from-{node.node_id} v") == "OK"
    for node in nodes:
        wait_until(lambda p=node.port: key_count(p) == 3,  # type: ignore[misc]
                   f"{node.node_id} to hold every node's write")
        others = {f"node{i + 1}" for i in range(3)} - {node.node_id}
        wait_until(lambda n=node, o=others: all(  # type: ignore[misc]
            any(line.startswith(f"member {name} ") and "link_out=up" in line
                for line in members_lines(n.port)) for name in o),
            f"{node.node_id} to dial every other member")
