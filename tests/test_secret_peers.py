"""Real nodes with ``--cluster-secret-file`` against fake peers on 127.0.0.1.

A stranger without the secret speaks the peer handshake as the previous
release did, then as an attacker who knows the new lines would: it tries to
inject a write, forge a heartbeat (a floor far ahead, a low of 0), send a
digest offer and read the keys back. Each time the node closes the
connection: the key it sent does not exist, purging goes on and the horizon
is not moved, and no byte it got back holds a key or a value. A caller that
does hold the secret is admitted, but bytes injected into its connection
are detected. Nodes with the same secret replicate; a node without one, or
with another, never links with them, and each side logs why.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from distkv.cluster import wire
from distkv.cluster.handshake import Dialling, Secret, max_record
from distkv.store.digest import DIGEST_BYTES
from distkv.store.hlc import Version
from tests.realnodes import (
    DEADLINE,
    Client,
    Cluster,
    NodeProcess,
    ask,
    free_ports,
    status,
    wait_until,
)

pytestmark = pytest.mark.process

SECRET = b"0f4b7c1e9a2d4e6f8a0b1c2d3e4f5a6b"
#: A version far ahead of any clock (the year 2096): what a forged write or
#: floor would carry to win everywhere.
FAR_MS = 4_000_000_000_000
KEYS = 50
MAX_FRAME = wire.max_frame(1 << 20)


def secret_file(directory: Path, secret: bytes, name: str = "cluster.secret") -> str:
    path = directory / name
    path.write_bytes(secret + b"\n")
    os.chmod(path, 0o600)
    return str(path)


def secret_options(path: str) -> List[str]:
    return ["--cluster-secret-file", path, "--sync-interval", "1",
            "--max-clock-skew", "1", "--tombstone-grace", "2"]


@pytest.fixture
def nodes(cluster: Cluster, tmp_path: Path) -> Iterator[List[NodeProcess]]:
    """Two nodes sharing a secret, holding KEYS keys."""
    started = cluster.start(2, secret_options(secret_file(tmp_path, SECRET)))
    client = Client(started[0].port)
    pairs = " ".join(f"secret-key-{i} secret-value-{i}" for i in range(KEYS))
    assert client.command(f"MSET {pairs}") == "OK"
    client.close()
    wait_until(lambda: ask(started[1].port, f"GET secret-key-{KEYS - 1}")
               == f"secret-value-{KEYS - 1}", "the keys to replicate")
    yield started


def forged_frames(node_id: str) -> bytes:
    """A write that would win everywhere, a heartbeat whose floor is far
    ahead and whose low is 0, and a digest offer that every key answers."""
    return (wire.encode_write(1, b"injected", (b"owned", FAR_MS, 0, node_id))
            + wire.encode_heartbeat(Version(FAR_MS, 0, node_id), Version(0, 0, ""))
            + wire.encode_digest(1, b"\0" * DIGEST_BYTES))


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        data = sock.recv(1)
        assert data, f"closed during the handshake after {line!r}"
        line += data
    return line


def read_until_closed(sock: socket.socket) -> Tuple[bytes, str]:
    """Everything the node sends until it closes: ("eof" or "reset"); a node
    that keeps the connection open past the deadline fails the test."""
    got = []
    stop = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < stop:
            sock.settimeout(max(0.01, stop - time.monotonic()))
            try:
                data = sock.recv(1 << 16)
            except ConnectionResetError:
                return b"".join(got), "reset"
            except socket.timeout:
                break
            if not data:
                return b"".join(got), "eof"
            got.append(data)
    finally:
        sock.close()
    raise AssertionError(f"the node kept the connection open; it sent {b''.join(got)[:200]!r}")


def greeting(node_id: str, nonce: bool) -> bytes:
    return wire.greeting_line(wire.Greeting(wire.Hello(node_id, "1"), None,
                                            os.urandom(32) if nonce else None))


def assert_unharmed(node: NodeProcess, received: List[bytes]) -> None:
    """Nothing the attackers sent took effect, and nothing they got leaks data."""
    assert ask(node.port, "GET injected") == "(nil)"
    assert ask(node.port, "GET secret-key-7") == "secret-value-7"
    for data in received:
        assert b"secret-key" not in data and b"secret-value" not in data, data[:200]
    lines = status(node.port)
    horizon = [line for line in lines if line.startswith("stable_horizon ")]
    assert horizon and str(FAR_MS) not in horizon[0], horizon


def failures(node: NodeProcess) -> int:
    line = [x for x in status(node.port) if x.startswith("peer_auth_failures ")]
    return int(line[0].split()[1])


def test_nodes_with_the_same_secret_replicate_and_report_it(
        nodes: List[NodeProcess]) -> None:
    """Writes go both ways; STATUS and INFO say a secret is required, none failed."""
    first, second = nodes
    assert ask(second.port, "SET from-second yes") == "OK"
    wait_until(lambda: ask(first.port, "GET from-second") == "yes", "the write to replicate")
    assert "cluster_secret required" in status(first.port)
    assert failures(first) == 0
    client = Client(first.port)
    info = client.report("INFO")
    client.close()
    assert "peer_auth_failures:0" in info and "cluster_secret:required" in info


def test_a_stranger_speaking_the_old_handshake_changes_and_reads_nothing(
        nodes: List[NodeProcess]) -> None:
    """The previous release's greeting, or this release's without a nonce, each
    followed at once by a forged write, heartbeat and offer: the connection is
    closed and nothing took effect."""
    node = nodes[0]
    received = []
    for hello in (b"DISTKV-PEER 2 node2 1 -\r\n", greeting("node2", nonce=False)):
        sock = connect(node.port)
        sock.sendall(hello + forged_frames("node2"))
        data, _ = read_until_closed(sock)
        received.append(data)
    assert received[1] in (b"", b"DISTKV-PEER-ERR cluster-secret this node requires a "
                                b"cluster secret\r\n"), received[1]
    # Without pipelined frames, the refusal always arrives and says why.
    sock = connect(node.port)
    sock.sendall(greeting("intruder", nonce=False))
    data, _ = read_until_closed(sock)
    assert data == b"DISTKV-PEER-ERR cluster-secret this node requires a cluster secret\r\n"
    received.append(data)
    assert_unharmed(node, received)
    assert failures(node) >= 2
    wait_until(lambda: "Cluster secret: peer 127.0.0.1:- (calling as node2) has no "
                       "cluster secret and this node requires one" in node.log_text(),
               "the refusal to be logged")
    assert SECRET.decode() not in node.log_text()


def test_an_attacker_who_knows_the_new_lines_cannot_prove_or_skip_the_secret(
        nodes: List[NodeProcess]) -> None:
    """A guessed proof, a proof of another secret, or frames instead of a proof:
    the node sends only its challenge (its id and a nonce) and closes."""
    node = nodes[0]
    other = Secret(b"a guess at the cluster secret....")
    received = []
    for attempt in ("random proof", "other secret", "no proof"):
        dialling = Dialling(other, wire.Greeting(wire.Hello("node2", "1"), None),
                            os.urandom(32), max_record(MAX_FRAME))
        sock = connect(node.port)
        sock.sendall(dialling.greeting_line())
        challenge = read_line(sock)
        assert challenge.startswith(b"DISTKV-PEER-CHALLENGE 6 node1 "), challenge
        if attempt == "random proof":
            sock.sendall(wire.proof_line(os.urandom(32)) + forged_frames("node2"))
        elif attempt == "other secret":
            sock.sendall(dialling.challenged(challenge) + forged_frames("node2"))
        else:
            sock.sendall(forged_frames("node2") * 2)
        data, end = read_until_closed(sock)
        assert end in ("eof", "reset")
        assert b"DISTKV-PEER-OK" not in data, data
        received.append(challenge + data)
    assert_unharmed(node, received)
    assert failures(node) >= 2
    wait_until(lambda: "failed to prove the cluster secret" in node.log_text(),
               "the failed proof to be logged")


def test_purging_goes_on_after_forged_heartbeats(nodes: List[NodeProcess]) -> None:
    """A forged low of 0 (which would hold every tombstone back) and a floor far
    ahead (which would purge too early) never reach the node: a delete made
    after them is purged as usual and the horizon stays behind the clock."""
    node = nodes[0]
    for _ in range(3):
        sock = connect(node.port)
        sock.sendall(greeting("node2", nonce=True))
        read_line(sock)
        sock.sendall(forged_frames("node2"))
        read_until_closed(sock)
    assert ask(node.port, "DEL secret-key-3") == "1"
    assert "tombstones 1" in status(node.port)

    def purged() -> bool:
        # By this node's purge, or dropped in a round once its peer purged it.
        return all("tombstones 0" in status(each.port) for each in nodes)

    wait_until(purged, "the delete's tombstone to be purged everywhere", timeout=2 * DEADLINE)
    assert_unharmed(node, [])


def test_bytes_injected_into_an_admitted_connection_are_detected(
        nodes: List[NodeProcess]) -> None:
    """A caller with the secret is admitted and its sealed write is applied; a
    plain frame injected into the same connection closes it, unapplied, and is
    counted as a bad record."""
    node = nodes[0]
    dialling = Dialling(Secret(SECRET), wire.Greeting(wire.Hello("insider", "1"), None),
                        os.urandom(32), max_record(MAX_FRAME))
    sock = connect(node.port)
    sock.sendall(dialling.greeting_line())
    sock.sendall(dialling.challenged(read_line(sock)))
    reply = wire.parse_reply(read_line(sock))
    assert isinstance(reply, wire.Accept), reply
    session = dialling.accepted(reply)
    assert session is not None
    now_ms = int(time.time() * 1000)
    sock.sendall(session.sealer.seal(
        wire.encode_write(1, b"sealed-key", (b"sealed", now_ms, 0, "insider"))))
    wait_until(lambda: ask(node.port, "GET sealed-key") == "sealed", "the sealed write")
    sock.sendall(wire.encode_write(2, b"injected", (b"owned", FAR_MS, 0, "insider")) * 3)
    read_until_closed(sock)
    assert ask(node.port, "GET injected") == "(nil)"
    bad = [x for x in status(node.port) if x.startswith("peer_bad_records ")]
    assert bad == ["peer_bad_records 1"], bad
    wait_until(lambda: "failed authentication" in node.log_text()
               or "refused (at most" in node.log_text(), "the bad record to be logged")


def test_nodes_without_the_secret_or_with_another_never_link_and_say_why(
        cluster: Cluster, tmp_path: Path) -> None:
    """node1 has the secret, node2 none, node3 another: every pair refuses the
    other with a log line that says why, and no write crosses."""
    ports = free_ports(3)
    fast = ["--loading-wait", "1"]
    extras = [
        ["--cluster-secret-file", secret_file(tmp_path, SECRET)] + fast,
        fast,
        ["--cluster-secret-file", secret_file(tmp_path, b"x" * 32, "other.secret")] + fast,
    ]
    started = [cluster.add(NodeProcess(tmp_path, port, ports, f"node{i + 1}", extra).start())
               for i, (port, extra) in enumerate(zip(ports, extras))]
    for node in started:
        node.wait_ready()
    for node in started:
        assert ask(node.port, f"SET only-on-{node.node_id} 1") == "OK"
    one, two, three = started
    wait_until(lambda: f"Cluster secret: peer 127.0.0.1:{one.port} requires a cluster secret "
                       "and this node has none" in two.log_text(), "node2's reason")
    wait_until(lambda: f"Cluster secret: peer 127.0.0.1:{two.port} has no cluster secret "
                       "and this node requires one" in one.log_text(), "node1's reason")
    wait_until(lambda: "refused our proof of the cluster secret (another secret?)"
                       in three.log_text(), "node3's reason")
    wait_until(lambda: "failed to prove the cluster secret" in one.log_text(),
               "node1 refusing node3")
    for node in started:
        for other in started:
            if other is not node:
                assert ask(node.port, f"GET only-on-{other.node_id}") == "(nil)"
                assert " link=down " in node.peer_line(other.port) + " "
        assert failures(node) > 0
