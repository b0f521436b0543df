"""WAIT numreplicas timeout: the count of peers that applied and committed
this node's writes, answered without blocking the reactor."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.node import Node
from tests.clusters import settled_cluster
from tests.respclient import ask, connect


class WaitTests(SynchronousTestCase):
    def test_wait_returns_once_peers_acknowledge(self) -> None:
        """After a write, WAIT 2 0 answers nothing until both peers have
        acknowledged it, then :2; the connection keeps serving in order."""
        cluster = settled_cluster(self)
        n1 = cluster.nodes["n1"]
        proto, transport = connect(n1)
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"v"), b"+OK\r\n")
        transport.clear()
        proto.dataReceived(b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$1\r\n0\r\n*1\r\n$4\r\nPING\r\n")
        self.assertEqual(transport.value(), b"")  # the write is not acknowledged yet
        self.assertEqual(len(n1.replicas), 1)
        cluster.run()
        self.assertEqual(transport.value(), b":2\r\n+PONG\r\n")
        self.assertEqual(len(n1.replicas), 0)

    def test_wait_answers_at_once_when_enough_peers_have_everything(self) -> None:
        """Once the peers acknowledged every write, WAIT answers at once with
        how many did, even when asked for more."""
        cluster = settled_cluster(self)
        proto, transport = connect(cluster.nodes["n1"])
        ask(proto, transport, b"SET", b"k", b"v")
        cluster.run()
        self.assertEqual(ask(proto, transport, b"WAIT", b"1", b"100"), b":2\r\n")
        self.assertEqual(ask(proto, transport, b"WAIT", b"0", b"0"), b":2\r\n")

    def test_wait_gives_fewer_at_the_timeout_when_a_peer_is_cut_off(self) -> None:
        """With n3 cut off, WAIT 2 500 after a write answers :1 at the timeout."""
        cluster = settled_cluster(self)
        cluster.net.block("n1", "n3")
        proto, transport = connect(cluster.nodes["n1"])
        ask(proto, transport, b"SET", b"k", b"v")
        transport.clear()
        proto.dataReceived(b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$3\r\n500\r\n")
        cluster.run()
        self.assertEqual(transport.value(), b"")
        cluster.advance(0.6)
        self.assertEqual(transport.value(), b":1\r\n")

    def test_wait_inside_a_transaction_never_blocks(self) -> None:
        """In EXEC, WAIT answers the count it has at once (as Redis does)."""
        cluster = settled_cluster(self)
        cluster.net.block("n1", "n3")
        cluster.net.block("n1", "n2")
        proto, transport = connect(cluster.nodes["n1"])
        ask(proto, transport, b"MULTI")
        ask(proto, transport, b"SET", b"k", b"v")
        ask(proto, transport, b"WAIT", b"2", b"0")
        self.assertEqual(ask(proto, transport, b"EXEC"), b"*2\r\n+OK\r\n:0\r\n")

    def test_errors_as_redis(self) -> None:
        """Redis 7.0's replies for bad arguments, checked in its order; a node
        without peers answers 0."""
        proto, transport = connect(Node(Clock(), "n"))
        cases = {
            (b"WAIT",): b"-ERR wrong number of arguments for 'wait' command\r\n",
            (b"WAIT", b"1"): b"-ERR wrong number of arguments for 'wait' command\r\n",
            (b"WAIT", b"1", b"1", b"1"): b"-ERR wrong number of arguments for 'wait' command\r\n",
            (b"WAIT", b"x", b"x"): b"-ERR value is not an integer or out of range\r\n",
            (b"WAIT", b" 1", b"0"): b"-ERR value is not an integer or out of range\r\n",
            (b"WAIT", b"0", b"x"): b"-ERR timeout is not an integer or out of range\r\n",
            (b"WAIT", b"1", b"1.5"): b"-ERR timeout is not an integer or out of range\r\n",
            (b"WAIT", b"0", b"99999999999999999999"):
                b"-ERR timeout is not an integer or out of range\r\n",
            (b"WAIT", b"0", b"-1"): b"-ERR timeout is negative\r\n",
            (b"WAIT", b"-1", b"10"): b":0\r\n",
            (b"WAIT", b"0", b"9223372036854775807"): b":0\r\n",
        }
        for args, reply in cases.items():
            self.assertEqual(ask(proto, transport, *args), reply, args)


class MinReplicasTests(SynchronousTestCase):
    def test_writes_are_refused_while_too_few_peers_are_good(self) -> None:
        """With --min-replicas-to-write 2 and a lag of 3s, cutting n1 off from
        n3 makes its writes (SET, DEL, FLUSHALL) get NOREPLICAS, reads still
        answer; once n3 is back, writes are accepted again."""
        cluster = settled_cluster(self, min_replicas_to_write=2, min_replicas_max_lag=3.0,
                                  heartbeat=1.0)
        n1 = cluster.nodes["n1"]
        proto, transport = connect(n1)
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"v"), b"+OK\r\n")
        cluster.net.block("n1", "n3")
        cluster.advance(6)
        refused = b"-NOREPLICAS Not enough good replicas to write.\r\n"
        for request in ((b"SET", b"k", b"w"), (b"DEL", b"k"), (b"FLUSHALL",)):
            self.assertEqual(ask(proto, transport, *request), refused, request)
        self.assertEqual(ask(proto, transport, b"GET", b"k"), b"$1\r\nv\r\n")
        cluster.net.unblock("n1", "n3")
        cluster.settle()
        self.assertEqual(n1.good_replicas(), 2)
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"w"), b"+OK\r\n")

    def test_a_node_alone_refuses_writes_from_the_start(self) -> None:
        """A node whose peers never answered has no good replicas: NOREPLICAS."""
        cluster = settled_cluster(self, min_replicas_to_write=1, min_replicas_max_lag=3.0,
                                  heartbeat=1.0)
        cluster.crash("n2")
        cluster.crash("n3")
        cluster.advance(30)
        proto, transport = connect(cluster.nodes["n1"])
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"v"),
                         b"-NOREPLICAS Not enough good replicas to write.\r\n")
