"""Protected mode at the front door, over StringTransport with made-up remote
addresses (tests reach only loopback): clients and peers from other machines
are refused, in the protocol they spoke, unless the node can tell who they are
(a client password, peer authentication), listens on one chosen interface
(clients), or runs with protected mode off; loopback is always let in."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.front.auth import parse_users
from distkv.front.frontdoor import (
    DENIED_PEER,
    DENIED_RESP,
    DENIED_TEXT,
    FrontDoor,
    FrontDoorFactory,
    is_loopback,
    one_interface,
)
from distkv.node import Node

REMOTE = IPv4Address("TCP", "192.0.2.7", 40000)
REMOTE6 = IPv6Address("TCP", "2001:db8::7", 40000, 0, 0)
LOOPBACKS = [
    IPv4Address("TCP", "127.0.0.1", 40000),
    IPv4Address("TCP", "127.9.8.7", 40000),
    IPv6Address("TCP", "::1", 40000, 0, 0),
    IPv6Address("TCP", "::ffff:127.0.0.1", 40000, 0, 0),
]
PING_RESP = b"*1\r\n$4\r\nPING\r\n"
GREETING = wire.greeting_line(wire.Greeting(wire.Hello("caller", "0123456789abcdef"), 9001))


def open_from(factory: FrontDoorFactory, address: Any) -> Tuple[FrontDoor, StringTransport]:
    door = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    door.makeConnection(transport)
    return door, transport


def node(**options: Any) -> Node:
    return Node(Clock(), "n", protected_mode=True, **options)


class ProtectedClientTests(SynchronousTestCase):
    def test_remote_resp_client_gets_redis_denied_and_is_closed(self) -> None:
        """A RESP client from another machine gets -DENIED (how to fix it included)
        and the connection closes; nothing it sent runs."""
        n = node()
        factory = n.factory()
        for address in (REMOTE, REMOTE6):
            door, transport = open_from(factory, address)
            door.dataReceived(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            self.assertEqual(transport.value(), DENIED_RESP)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(len(n.store), 0)
        self.assertTrue(DENIED_RESP.startswith(b"-DENIED DistKV is running in protected mode"))
        for fix in (b"--requirepass-file", b"interface=", b"'--protected-mode no'"):
            self.assertIn(fix, DENIED_RESP)
        self.assertEqual((factory.denied, factory.clients, factory.pending), (2, 0, 0))
        self.assertIn("protected_mode_denied 2", n.status_lines())

    def test_remote_text_client_gets_the_error_as_a_text_line(self) -> None:
        """A text client, or one that half-closes before sending anything, gets
        ``ERR DENIED ...`` and is closed."""
        factory = node().factory()
        door, transport = open_from(factory, REMOTE)
        door.dataReceived(b"SET k v\r\n")
        self.assertEqual(transport.value(), DENIED_TEXT)
        self.assertTrue(transport.disconnecting)
        door, transport = open_from(factory, REMOTE)
        door.readConnectionLost()
        self.assertEqual(transport.value(), DENIED_TEXT)
        self.assertEqual(factory.pending, 0)

    def test_loopback_clients_are_always_served(self) -> None:
        """127.0.0.0/8, ::1 and ::ffff:127.0.0.1 are this machine: served as ever."""
        factory = node().factory()
        for address in LOOPBACKS:
            door, transport = open_from(factory, address)
            door.dataReceived(PING_RESP)
            self.assertEqual(transport.value(), b"+PONG\r\n", address)

    def test_a_password_an_interface_or_protected_mode_off_lets_remote_clients_in(self) -> None:
        """Each of the three fixes the refusal names lets a remote client in (one
        with a password is then asked to AUTH)."""
        with_password = node(users=parse_users(b"default readwrite >pw\n")).factory()
        door, transport = open_from(with_password, REMOTE)
        door.dataReceived(PING_RESP)
        self.assertEqual(transport.value(), b"-NOAUTH Authentication required.\r\n")
        for factory in (node().factory(bound_interface=True),
                        Node(Clock(), "n", protected_mode=False).factory()):
            door, transport = open_from(factory, REMOTE)
            door.dataReceived(b"PING\r\n")
            self.assertEqual(transport.value(), b"PONG\r\n")

    def test_one_interface_is_an_endpoint_naming_a_real_address(self) -> None:
        """interface=<address> chooses an interface; none, or a wildcard, does not."""
        self.assertTrue(one_interface("tcp:9000:interface=192.0.2.10"))
        self.assertTrue(one_interface("tcp6:port=9000:interface=2001\\:db8\\:\\:1:backlog=5"))
        self.assertFalse(one_interface("tcp:9000:backlog=1024"))
        self.assertFalse(one_interface("tcp:9000:interface=0.0.0.0"))
        self.assertFalse(one_interface("tcp6:9000:interface=\\:\\:"))

    def test_loopback_addresses(self) -> None:
        for address in LOOPBACKS:
            self.assertTrue(is_loopback(address), address)
        for address in (REMOTE, REMOTE6, IPv6Address("TCP", "fe80::1%eth0", 1, 0, 0)):
            self.assertFalse(is_loopback(address), address)


class ProtectedPeerTests(SynchronousTestCase):
    def handshake(self, factory: FrontDoorFactory, address: Any) -> Tuple[StringTransport, bytes]:
        door, transport = open_from(factory, address)
        door.dataReceived(GREETING)
        return transport, transport.value()

    def test_remote_peer_is_refused_with_a_peer_refusal(self) -> None:
        """A peer handshake from another machine, on a node that cannot authenticate
        peers, gets a DISTKV-PEER-ERR protected-mode line and is closed before
        anything it sends is acted on."""
        n = node()
        transport, reply = self.handshake(n.factory(), REMOTE)
        self.assertEqual(reply, DENIED_PEER)
        self.assertTrue(transport.disconnecting)
        code, message = wire.parse_reply(reply)  # type: ignore[misc]
        self.assertEqual(code, "protected-mode")
        self.assertIn("--protected-mode no", message)
        self.assertEqual(n.replication.links, {})

    def test_password_for_clients_does_not_let_remote_peers_in(self) -> None:
        """Client passwords say nothing of peers: a remote peer is still refused."""
        factory = node(users=parse_users(b"default readwrite >pw\n")).factory()
        self.assertEqual(self.handshake(factory, REMOTE)[1], DENIED_PEER)
        factory = node().factory(bound_interface=True)
        self.assertEqual(self.handshake(factory, REMOTE)[1], DENIED_PEER)

    def test_a_cluster_secret_lets_remote_peers_reach_its_challenge(self) -> None:
        """A node with a cluster secret authenticates peers, so protected mode lets a
        remote caller reach the secret's handshake, which challenges it (and admits
        nothing until it proves the secret)."""
        n = node(cluster_secret=b"s" * 32)
        self.assertTrue(n.peers_authenticated)
        greeting = wire.greeting_line(
            wire.Greeting(wire.Hello("caller", "0123456789abcdef"), 9001, b"\x01" * 32))
        door, transport = open_from(n.factory(), REMOTE)
        door.dataReceived(greeting)
        self.assertTrue(wire.is_challenge(transport.value()), transport.value())
        self.assertEqual(n.replication.links, {})

    def test_loopback_authenticated_or_unprotected_peers_get_the_handshake(self) -> None:
        """From loopback, with peers_authenticated, or with protected mode off, the
        handshake reaches the peer layer, which accepts it."""
        cases: list = [(node(), address) for address in LOOPBACKS]  # type: ignore[type-arg]
        cases += [(node(peers_authenticated=True), REMOTE),
                  (Node(Clock(), "n", protected_mode=False), REMOTE)]
        for n, address in cases:
            transport, reply = self.handshake(n.factory(), address)
            accepted: Optional[object] = wire.parse_reply(reply.split(b"\r\n")[0] + b"\r\n")
            self.assertIsInstance(accepted, wire.Accept, (address, reply))
            transport.loseConnection()
