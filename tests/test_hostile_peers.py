"""A real node against hostile input on its peer port: garbage and oversized
frames drop the connection with a log line, and floods that make output
(digest offers, heartbeats) from a peer that never reads leave the node's
memory bounded while clients are answered throughout (issue 11, item 8)."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from distkv.cluster import wire
from distkv.store.digest import DIGEST_BYTES
from tests.realnodes import Client, Cluster, NodeProcess, wait_until
from tests.test_output_rss import rss_mib

pytestmark = pytest.mark.process

KEYS = 5000
#: What a peer that never reads may cost the node: the output it holds back
#: (peerproto.OUTPUT_PAUSE_BYTES, 8 MiB) and one answer being built, with room
#: for the interpreter's own growth.
BOUND_MIB = 48


@pytest.fixture
def node(cluster: Cluster) -> Iterator[NodeProcess]:
    (started,) = cluster.start(1)
    client = Client(started.port)
    for start in range(0, KEYS, 500):
        pairs = " ".join(f"key:{i:06d} value-{i}" for i in range(start, start + 500))
        assert client.command(f"MSET {pairs}") == "OK"
    client.close()
    yield started


def peer_socket(port: int, node_id: str = "intruder") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(wire.greeting_line(wire.Greeting(wire.Hello(node_id, "1"), None)))
    line = b""
    while not line.endswith(b"\n"):
        data = sock.recv(1)
        assert data, "closed during the handshake"
        line += data
    assert line.startswith(b"DISTKV-PEER-OK 6 "), line
    return sock


def closed_by_node(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_malformed_handshake_is_refused_with_a_reason(node: NodeProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(b"DISTKV-PEER 6 bad/id 1 - -\r\n")
    reply = sock.makefile("rb").readline()
    assert reply.startswith(b"DISTKV-PEER-ERR protocol"), reply
    sock.close()


@pytest.mark.parametrize("frame", [
    pytest.param(b"\x00\x00\x00\x05Zjunk", id="unknown kind"),
    pytest.param(b"\x7f\xff\xff\xff", id="2 GiB length"),
    pytest.param(wire.encode_write(1, b"k", (b"v", 1, 0, "intruder"))[:-3] + b"\x00\x00\x00\x00" * 3,
                 id="truncated write"),
])
def test_a_bad_frame_drops_the_connection_and_is_logged(node: NodeProcess, frame: bytes) -> None:
    sock = peer_socket(node.port)
    sock.sendall(frame)
    assert closed_by_node(sock)
    wait_until(lambda: "Dropping the connection with peer intruder" in node.log_text(),
               "the drop to be logged")
    assert Client(node.port).command("GET key:000001") == "value-1"


def flood_without_reading(port: int, frame: bytes, budget: int, watcher: Client) -> int:
    """Send ``frame`` again and again, never reading, until ``budget`` bytes went
    or the node stopped taking them for a second; the watcher gets PONG meanwhile."""
    sock = peer_socket(port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    burst = frame * max(1, (64 << 10) // len(frame))
    sent = 0
    blocked_since = None
    deadline = time.monotonic() + 60
    while sent < budget and time.monotonic() < deadline:
        try:
            sent += sock.send(burst)
            blocked_since = None
        except BlockingIOError:
            now = time.monotonic()
            blocked_since = blocked_since or now
            if now - blocked_since > 1.0:
                break
            assert watcher.command("PING") == "PONG"
    assert watcher.command("PING") == "PONG"
    sock.close()
    return sent


@pytest.mark.parametrize("frame", [
    pytest.param(wire.encode_digest(1, b"\x00" * DIGEST_BYTES), id="digest offers"),
    pytest.param(wire.encode_bare_heartbeat(), id="heartbeats"),
])
def test_a_flood_from_a_peer_that_never_reads_leaves_memory_bounded(
    node: NodeProcess, frame: bytes
) -> None:
    """Each offer would be answered with every key (about 150 KB) and each heartbeat
    with a reply: the node answers the newest offer only as the peer reads, stops
    reading a peer that leaves 8 MiB unread, and stays within a bound."""
    assert node.proc is not None
    watcher = Client(node.port)
    before = rss_mib(node.proc.pid, "VmRSS")
    flood_without_reading(node.port, frame, 40 << 20, watcher)
    peak = rss_mib(node.proc.pid, "VmHWM")
    assert peak - before < BOUND_MIB, (before, peak)
    assert watcher.command("GET key:004999") == "value-4999"
