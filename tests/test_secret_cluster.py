"""The cluster secret in one process: a peer connection over ``StringTransport``
(nothing is vetted, applied or answered before the caller's proof holds;
injected records are refused), and whole clusters on a fake clock (the same
secret replicates; another secret, or none, never links)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.handshake import Dialling, Sealer, Secret, max_record
from distkv.cluster.peerproto import SILENT_TICKS, Acceptor
from distkv.node import Node
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.fakehost import FakeHost

SECRET = b"a cluster secret of 32 bytes...."
OTHER = b"another secret, also 32 bytes..."
MAX_FRAME = wire.max_frame(1 << 20)
CALLER = wire.Greeting(wire.Hello("them", "1"), 7001)


def acceptor(secret: bytes = SECRET) -> Tuple[Acceptor, FakeHost, StringTransport]:
    host = FakeHost(secret=secret)
    proto = Acceptor(host, Clock(), 5.0, MAX_FRAME)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, host, transport


def handshake(proto: Acceptor, transport: StringTransport, secret: bytes = SECRET) -> Dialling:
    """Run the caller's half of a good handshake against ``proto``."""
    dialling = Dialling(Secret(secret), CALLER, b"\x01" * 32, max_record(MAX_FRAME))
    proto.dataReceived(dialling.greeting_line())
    challenge = transport.value()
    transport.clear()
    proto.dataReceived(dialling.challenged(challenge))
    return dialling


class LogCapture:
    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self) -> str:
        return "\n".join(str(formatEvent(event)) for event in self.events)


class AcceptorTests(SynchronousTestCase):
    def test_nothing_is_vetted_or_answered_before_the_callers_proof(self) -> None:
        """The greeting gets only a challenge (our id and nonce); the node is not asked."""
        proto, host, transport = acceptor()
        proto.dataReceived(wire.greeting_line(CALLER._replace(nonce=b"\x01" * 32)))
        self.assertTrue(transport.value().startswith(b"DISTKV-PEER-CHALLENGE 6 me "))
        self.assertEqual(host.callers, [])
        self.assertIsNone(proto.remote)

    def test_a_caller_that_pipelines_frames_after_its_greeting_gets_nothing_applied(self) -> None:
        """Today's peer (greeting then frames at once) is refused: no write, heartbeat
        or offer reaches the node, and the failure is counted."""
        proto, host, transport = acceptor()
        forged = (wire.encode_write(1, b"owned", (b"x\n", 2**40, 0, "them"))
                  + wire.encode_heartbeat(Version(2**40, 0, "them"), Version(0, 0, ""))
                  + wire.encode_digest(1, b"\0" * 512))
        proto.dataReceived(wire.greeting_line(CALLER._replace(nonce=b"\x01" * 32)) + forged)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"DISTKV-PEER-ERR cluster-secret", transport.value())
        self.assertEqual((host.callers, host.applied_writes, host.heartbeats), ([], [], []))
        self.assertEqual(host.peer_auth.failures, 1)

    def test_a_caller_without_a_secret_is_refused_saying_why(self) -> None:
        logs = LogCapture(self)
        proto, host, transport = acceptor()
        proto.dataReceived(wire.greeting_line(CALLER))
        self.assertEqual(transport.value(),
                         b"DISTKV-PEER-ERR cluster-secret this node requires a cluster secret\r\n")
        self.assertEqual(host.callers, [])
        self.assertIn("has no cluster secret and this node requires one", logs.text())

    def test_another_secret_fails_the_proof_and_is_counted(self) -> None:
        proto, host, transport = acceptor()
        handshake(proto, transport, OTHER)
        self.assertEqual(transport.value(),
                         b"DISTKV-PEER-ERR cluster-secret cluster secret proof failed\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(host.callers, [])
        self.assertEqual(host.peer_auth.failures, 1)

    def test_admitted_connections_carry_records_and_refuse_injected_bytes(self) -> None:
        """A sealed write is applied; a plain frame injected afterwards drops the
        connection unapplied, and is counted as a bad record."""
        proto, host, transport = acceptor()
        dialling = handshake(proto, transport)
        line, _, rest = transport.value().partition(b"\n")
        reply = wire.parse_reply(line)
        assert isinstance(reply, wire.Accept)
        session = dialling.accepted(reply)
        assert session is not None
        self.assertEqual(len(host.callers), 1)
        # The member list follows the accept line, already sealed.
        [members] = wire.FrameDecoder(MAX_FRAME).feed(b"".join(session.opener.feed(rest)))
        self.assertIsInstance(members, wire.Members)
        transport.clear()
        proto.dataReceived(session.sealer.seal(wire.encode_write(1, b"k", (b"v", 5, 0, "them"))))
        self.assertEqual(host.applied_writes, [(b"k", (b"v", 5, 0, "them"))])
        # The ack went back sealed: the caller opens it.
        self.assertEqual(
            wire.FrameDecoder(MAX_FRAME).feed(b"".join(session.opener.feed(transport.value()))),
            [wire.Ack(1)],
        )
        proto.dataReceived(wire.encode_write(2, b"evil", (b"x", 9, 0, "them")))
        proto.dataReceived(Sealer(b"guess" * 7, 1 << 20).seal(b"more"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(host.applied_writes), 1)
        self.assertEqual(host.peer_auth.bad_records, 1)


class HandshakeDeadlineTests(SynchronousTestCase):
    def test_a_caller_dripping_its_greeting_is_dropped_after_a_few_heartbeats(self) -> None:
        """Bytes that never complete a handshake line are not progress: a caller
        sending one byte every 4 s (heartbeat 5 s) is cut off after SILENT_TICKS + 1
        heartbeats, with or without a secret, instead of holding the connection."""
        for secret in (SECRET, None):
            clock = Clock()
            proto = Acceptor(FakeHost(secret=secret), clock, 5.0, MAX_FRAME)
            transport = StringTransport()
            proto.makeConnection(transport)
            line = b"DISTKV-PEER 6 caller c0ffee 9001 " + b"a" * 64
            sent = 0
            while not transport.disconnecting and sent < len(line):
                proto.dataReceived(line[sent : sent + 1])
                sent += 1
                clock.advance(4.0)
            self.assertTrue(transport.disconnecting, secret)
            # Clock.advance runs a tick late (at most one tick per two bytes here).
            self.assertLessEqual(sent, 2 * (SILENT_TICKS + 1), secret)


class DiallerTests(SynchronousTestCase):
    def test_a_lasting_refusal_without_proof_changes_nothing(self) -> None:
        """With a secret, whoever answers at a peer's address cannot make the link
        think it is this node, or that its node was removed: such refusals without
        the acceptor's proof are counted and the link keeps its outbox and redials."""
        for line in (b"DISTKV-PEER-ERR self this is the connecting node itself\r\n",
                     b"DISTKV-PEER-ERR removed node a was removed\r\n",
                     b"DISTKV-PEER-ERR removed x proof=" + b"ab" * 32 + b"\r\n"):
            node = Node(MemoryReactorClock(), "a", listen_port=7000, cluster_secret=SECRET)
            link = node.add_peer("10.0.0.2", 7001)
            assert link is not None
            node.store.set(b"k", b"v")
            proto = link.buildProtocol(IPv4Address("TCP", "10.0.0.2", 7001))
            transport = StringTransport()
            proto.makeConnection(transport)
            proto.dataReceived(line)
            self.assertFalse(link.is_self, line)
            self.assertTrue(link.continueTrying, line)
            self.assertEqual(len(link.outbox), 1, line)
            self.assertEqual(node.peer_auth.failures, 1, line)
            self.assertTrue(transport.disconnecting, line)


def values(cluster: SimulatedCluster, node_id: str) -> Dict[bytes, bytes]:
    return {k: e[0] for k, e in cluster.nodes[node_id].store.items() if e[0] is not None}


class ClusterSecretTests(SynchronousTestCase):
    def test_nodes_with_the_same_secret_replicate(self) -> None:
        """Three nodes sharing a secret link up, replicate both ways and converge."""
        cluster = settled_cluster(self, 3, cluster_secret=SECRET)
        for node_id, node in cluster.nodes.items():
            node.store.set(node_id.encode(), b"from " + node_id.encode())
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(len(values(cluster, "n3")), 3)
        for node in cluster.nodes.values():
            self.assertTrue(all(link.up for link in node.replication.links.values()
                                if not link.is_self))
            self.assertEqual(node.peer_auth.failures, 0)
            self.assertIn("cluster_secret required", node.status_lines())

    def outsider_never_links(self, outsider_secret: Optional[bytes]) -> SimulatedCluster:
        cluster = SimulatedCluster(3, secrets={"n3": outsider_secret}, cluster_secret=SECRET)
        cluster.settle()
        for node in cluster.nodes.values():
            node.store.set(node.node_id.encode(), b"v")
        cluster.settle()
        self.addCleanup(cluster.stop)
        n3 = cluster.nodes["n3"]
        # No frame ever crossed: n3 heard of nobody's writes, completed no
        # round in either direction, and no link with it ever came up.
        self.assertEqual(values(cluster, "n3"), {b"n3": b"v"})
        self.assertEqual(set(values(cluster, "n1")), {b"n1", b"n2"})
        self.assertEqual((n3.seen, n3.synced_from), ({}, {}))
        self.assertNotIn("n3", cluster.nodes["n1"].synced_from)
        self.assertNotIn("n3", cluster.nodes["n1"].seen)
        for link in n3.replication.links.values():
            self.assertIsNone(link.remote)
        for node_id in ("n1", "n2"):
            node = cluster.nodes[node_id]
            for link in node.replication.links.values():
                self.assertTrue(link.remote is None or link.remote.node != "n3")
            self.assertGreater(node.peer_auth.failures, 0)
        self.assertGreater(n3.peer_auth.failures, 0)
        return cluster

    def test_a_node_with_another_secret_never_exchanges_a_frame(self) -> None:
        logs = LogCapture(self)
        self.outsider_never_links(OTHER)
        self.assertIn("failed to prove the cluster secret", logs.text())
        self.assertIn("refused our proof of the cluster secret", logs.text())

    def test_a_node_without_a_secret_and_nodes_with_one_refuse_each_other(self) -> None:
        """Each side logs why: one requires a secret the other lacks."""
        logs = LogCapture(self)
        cluster = self.outsider_never_links(None)
        self.assertIn("Cluster secret: peer 127.0.0.1:7000 requires a cluster secret and "
                      "this node has none", logs.text())
        self.assertIn("has no cluster secret and this node requires one", logs.text())
        self.assertIn("cluster_secret none", cluster.nodes["n3"].status_lines())

    def test_bytes_injected_into_a_cluster_link_drop_it_and_it_comes_back(self) -> None:
        """A forged record slipped into a live link between two nodes is detected:
        the connection is dropped and counted, nothing forged is applied, and the
        link reconnects and carries writes again."""
        cluster = settled_cluster(self, 2, cluster_secret=SECRET)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        live = [c for c in cluster.net.connections if not c.closed]
        self.assertTrue(live)
        forged = Sealer(b"no idea of the key" * 2, 1 << 20).seal(
            wire.encode_write(1, b"forged", (b"x", 2**41, 0, "n1")))
        for connection in live:  # as if each dialling side had sent it
            connection.pump.clientIO.write(forged)
        cluster.run()
        self.assertTrue(all(c.closed for c in live))
        self.assertEqual(n1.peer_auth.bad_records + n2.peer_auth.bad_records, len(live))
        n1.store.set(b"after", b"yes")
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertEqual(values(cluster, "n2"), {b"after": b"yes"})
