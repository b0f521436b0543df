"""--maxclients: clients past the limit get Redis's error and are closed; peers are never refused."""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path
from typing import List, Tuple

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.front import frontdoor
from distkv.front.frontdoor import FrontDoor, FrontDoorFactory
from distkv.node import Node
from distkv.tap import Options
from tests.realnodes import Client, NodeProcess, free_ports, wait_until

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
FULL_TEXT = b"ERR max number of clients reached\r\n"
FULL_RESP = b"-ERR max number of clients reached\r\n"


def connect(factory: FrontDoorFactory, first: bytes) -> Tuple[FrontDoor, StringTransport]:
    door = factory.buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    door.makeConnection(transport)
    door.dataReceived(first)
    return door, transport


def lose(door: FrontDoor, transport: StringTransport) -> None:
    """End the connection the way Twisted does: through the transport's protocol."""
    protocol = getattr(transport, "protocol", None) or door
    protocol.connectionLost(Failure(ConnectionError("closed")))


class MaxClientsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node(Clock(), "m", maxclients=2)
        self.factory = self.node.factory()

    def test_a_client_past_maxclients_gets_redis_error_and_is_closed(self) -> None:
        """With two clients in, a third (text) and a fourth (RESP) get Redis's error and are closed."""
        for _ in range(2):
            _, transport = connect(self.factory, b"PING\r\n")
            self.assertEqual(transport.value(), b"PONG\r\n")
        _, text = connect(self.factory, b"PING\r\n")
        self.assertEqual(text.value(), FULL_TEXT)
        self.assertTrue(text.disconnecting)
        _, resp = connect(self.factory, b"*1\r\n$4\r\nPING\r\n")
        self.assertEqual(resp.value(), FULL_RESP)
        self.assertTrue(resp.disconnecting)
        self.assertEqual((self.factory.clients, self.factory.refused), (2, 2))

    def test_a_closed_client_frees_its_place(self) -> None:
        """Once a client's connection is lost, a new client is served again."""
        doors = [connect(self.factory, b"PING\r\n") for _ in range(2)]
        lose(*doors[0])
        self.assertEqual(self.factory.clients, 1)
        _, transport = connect(self.factory, b"*1\r\n$4\r\nPING\r\n")
        self.assertEqual(transport.value(), b"+PONG\r\n")
        self.assertEqual(self.factory.clients, 2)

    def test_peers_are_neither_counted_nor_refused(self) -> None:
        """A peer handshake on a node full of clients is handed to the peer side, not refused."""
        for _ in range(2):
            connect(self.factory, b"PING\r\n")
        door, transport = connect(self.factory, wire.MAGIC)
        self.assertNotIn(b"max number of clients", transport.value())
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.factory.clients, 2)
        lose(door, transport)
        self.assertEqual(self.factory.clients, 2)

    def test_silent_connections_are_bounded_and_refused_at_accept_past_the_bound(self) -> None:
        """Connections that have sent nothing count towards maxclients plus half the reserve;
        one more is refused at once, and a silent one that leaves or speaks frees its place."""
        room = 2 + frontdoor.RESERVED_FILES // 2
        silent = []
        for _ in range(room):
            door = self.factory.buildProtocol(ADDRESS)
            transport = StringTransport(peerAddress=ADDRESS)
            door.makeConnection(transport)
            silent.append((door, transport))
        self.assertEqual(self.factory.pending, room)
        self.assertFalse(any(t.disconnecting for _, t in silent))
        _, refused = connect(self.factory, b"PING\r\n")
        self.assertEqual(refused.value(), FULL_RESP)
        self.assertTrue(refused.disconnecting)
        lose(*silent[0])
        silent[1][0].dataReceived(b"PING\r\n")
        self.assertEqual(silent[1][1].value(), b"PONG\r\n")
        self.assertEqual((self.factory.pending, self.factory.clients), (room - 2, 1))
        _, admitted = connect(self.factory, b"PING\r\n")
        self.assertEqual(admitted.value(), b"PONG\r\n")

    def test_maxclients_option_is_checked_and_passed_to_the_node(self) -> None:
        """--maxclients defaults to Redis's 10000, must be positive, and reaches the front door."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["maxclients"], 10000)
        options = Options()
        options.parseOptions(["--maxclients", "50"])
        self.assertEqual(options["maxclients"], 50)
        for bad in ("0", "-1", "many"):
            with self.assertRaises(usage.UsageError):
                Options().parseOptions(["--maxclients", bad])


class OpenFilesTests(SynchronousTestCase):
    def test_start_raises_the_soft_open_files_limit_for_maxclients(self) -> None:
        """Starting the factory raises a low soft RLIMIT_NOFILE to maxclients plus the reserve."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        wanted = 600 + frontdoor.RESERVED_FILES
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise pytest.skip.Exception(f"hard open files limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        factory = FrontDoorFactory(lambda: None, lambda: None, maxclients=600)  # type: ignore[arg-type, return-value]
        factory.doStart()
        self.addCleanup(factory.doStop)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], wanted)
        self.assertEqual(factory.maxclients, 600)

    def test_a_hard_limit_below_maxclients_lowers_maxclients(self) -> None:
        """When the limit cannot be raised far enough, the enforced maxclients is lowered to fit."""
        calls: List[Tuple[int, Tuple[int, int]]] = []

        def getrlimit(which: int) -> Tuple[int, int]:
            return (256, 1000)

        def setrlimit(which: int, limits: Tuple[int, int]) -> None:
            calls.append((which, limits))

        self.patch(frontdoor.resource, "getrlimit", getrlimit)
        self.patch(frontdoor.resource, "setrlimit", setrlimit)
        self.assertEqual(frontdoor.raise_open_files(10000), 1000 - frontdoor.RESERVED_FILES)
        self.assertEqual(calls, [(resource.RLIMIT_NOFILE, (1000, 1000))])


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(100)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_server(sock: socket.socket) -> bool:
    return sock.recv(100) == b""


@pytest.mark.process
def test_real_node_refuses_clients_past_maxclients(tmp_path: Path) -> None:
    """--maxclients 50, 60 connections: 50 served, 10 get the error and are closed, the node serves on."""
    (port,) = free_ports(1)
    node = NodeProcess(tmp_path, port, [], "full", ["--maxclients", "50"]).start()
    socks: List[socket.socket] = []
    try:
        node.wait_ready()
        replies = []
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(b"PING\r\n")
            replies.append(read_reply(sock))
        assert replies.count(b"PONG\r\n") == 50
        assert replies.count(FULL_TEXT) == 10
        refused = [s for s, r in zip(socks, replies) if r == FULL_TEXT]
        assert all(closed_by_server(s) for s in refused)
        for sock in socks[:5]:
            sock.close()
        wait_until(lambda: Client(port).command("PING") == "PONG", "a place to free up")
        assert node.proc is not None and node.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        node.kill()


@pytest.mark.process
def test_five_thousand_connections_leave_the_node_up_and_refuse_cleanly(tmp_path: Path) -> None:
    """5,000 connections against --maxclients 4000: the node stays up, answers another client
    throughout, serves 4,000 and refuses the rest with the error."""
    connections, limit = 5000, 4000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 200
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            message = f"hard open files limit {hard} is below the {needed} this test needs"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    (port,) = free_ports(1)
    node = NodeProcess(tmp_path, port, [], "many", ["--maxclients", str(limit)]).start()
    socks: List[socket.socket] = []
    try:
        node.wait_ready()
        watcher = Client(port)
        for index in range(connections):  # all open at once, silent at first
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            if index % 250 == 0:
                assert watcher.command("PING") == "PONG"
        served = refused = 0
        for index, sock in enumerate(socks):
            sock.sendall(b"PING\r\n")
            reply = read_reply(sock)
            if reply == b"PONG\r\n":
                served += 1
            else:
                # past maxclients, or (past maxclients plus the reserve) at accept
                assert reply in (FULL_TEXT, FULL_RESP), reply
                assert closed_by_server(sock)
                refused += 1
            if index % 250 == 0:
                assert watcher.command("PING") == "PONG"
        assert (served, refused) == (limit - 1, connections - limit + 1)  # the watcher is a client
        assert watcher.command("SET still up") == "OK"
        assert node.proc is not None and node.proc.poll() is None
        watcher.close()
    finally:
        for sock in socks:
            sock.close()
        node.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
