"""LINEARIZABLE against what a member may answer, and what Redis's commands keep.

A member that refuses a ballot names the version that beat it; one naming a
version far beyond the allowed clock skew (broken or hostile) must not drag
the coordinator's clock there (the node would then refuse every write as
ahead of its peers). INCR and its kin at LINEARIZABLE keep the key's expiry,
as Redis and DistKV at ONE do.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import paxoswire
from distkv.cluster.acceptor import LONGEST_KEY
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.test_levels import Client


class HostileMemberTests(SynchronousTestCase):
    def test_a_refusal_naming_a_far_future_version_does_not_move_the_clock(self) -> None:
        """n2 refuses every prepare naming a version 2**62 ms ahead, n3 is cut
        off: the LINEARIZABLE SET fails, n1's clock stays near its wall clock,
        the version is counted as refused, and writes at ONE still replicate."""
        cluster = SimulatedCluster(3, max_clock_skew=1.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        far = Version(1 << 62, 0, "n2")
        n2.consensus_prepare = (  # type: ignore[method-assign]
            lambda request: paxoswire.encode_promise(request.id, paxoswire.REFUSED, far))
        cluster.net.block("n1", "n3")
        client = Client(cluster, "n1")
        client.ask(b"CONSISTENCY", b"LINEARIZABLE")
        client.send(b"SET", b"k", b"v")
        cluster.net.advance_by(1.5, 0.05)
        self.assertTrue(client.answer().startswith(b"-"))
        self.assertLess(n1.clock.high_water() - n1.clock.wall_ms(), 5_000)
        self.assertGreater(n1.clock.refused, 0)
        cluster.net.heal()
        cluster.settle()
        self.assertEqual(Client(cluster, "n1").ask(b"SET", b"after", b"x"), b"+OK\r\n")
        cluster.settle()
        self.assertEqual(cluster.nodes["n3"].store.get(b"after"), b"x")


class ExpiryTests(SynchronousTestCase):
    def test_incr_and_its_kin_keep_the_expiry_and_set_clears_it(self) -> None:
        """A key set with EX 100 (at ONE: SET with an expiry is not offered at
        LINEARIZABLE), then INCR, DECR, INCRBY and DECRBY at LINEARIZABLE: the
        TTL is still there after each (as in Redis); a SET clears it."""
        cluster = SimulatedCluster(3, max_clock_skew=1.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        one = Client(cluster, "n1")
        linear = Client(cluster, "n1")
        linear.ask(b"CONSISTENCY", b"LINEARIZABLE")
        cluster.net.advance_by(2.0, 0.05)  # past the restart floor
        self.assertEqual(one.ask(b"SET", b"k", b"5", b"EX", b"100"), b"+OK\r\n")
        cluster.settle()
        for request, reply in (((b"INCR", b"k"), b":6\r\n"), ((b"DECR", b"k"), b":5\r\n"),
                               ((b"INCRBY", b"k", b"10"), b":15\r\n"),
                               ((b"DECRBY", b"k", b"3"), b":12\r\n")):
            self.assertEqual(linear.ask(*request), reply, request)
            ttl = int(one.ask(b"TTL", b"k")[1:])
            self.assertTrue(0 < ttl <= 100, (request, ttl))  # settling took fake time
        self.assertEqual(one.ask(b"GET", b"k"), b"$2\r\n12\r\n")  # plain bytes stored
        self.assertEqual(linear.ask(b"GET", b"k"), b"$2\r\n12\r\n")
        self.assertEqual(linear.ask(b"SET", b"k", b"1"), b"+OK\r\n")
        self.assertEqual(one.ask(b"TTL", b"k"), b":-1\r\n")


class BoundsTests(SynchronousTestCase):
    def test_reads_of_long_keys_hold_little_in_promises(self) -> None:
        """200 LINEARIZABLE GETs of missing 100 KB keys leave promises behind on
        every member (a read writes nothing), but no key's bytes: at most
        LONGEST_KEY bytes each (20 MB were held before)."""
        cluster = SimulatedCluster(3, max_clock_skew=1.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        client = Client(cluster, "n1")
        client.ask(b"CONSISTENCY", b"LINEARIZABLE")
        cluster.net.advance_by(2.0, 0.05)  # past the restart floor
        for i in range(200):
            self.assertEqual(client.ask(b"GET", b"%06d" % i + b"k" * 100_000), b"$-1\r\n")
        for node in cluster.nodes.values():
            promises = node.acceptor.promises
            self.assertGreater(len(promises), 0)
            self.assertLessEqual(sum(map(len, promises)), LONGEST_KEY * len(promises))

    def test_set_takes_repeated_options_as_redis_does(self) -> None:
        """SET k v NX NX and SET k v GET GET at LINEARIZABLE answer as Redis 7.0."""
        cluster = SimulatedCluster(3, max_clock_skew=1.0)
        self.addCleanup(cluster.stop)
        cluster.settle()
        client = Client(cluster, "n1")
        client.ask(b"CONSISTENCY", b"LINEARIZABLE")
        cluster.net.advance_by(2.0, 0.05)
        self.assertEqual(client.ask(b"SET", b"k", b"v", b"NX", b"NX"), b"+OK\r\n")
        self.assertEqual(client.ask(b"SET", b"k", b"w", b"GET", b"GET"), b"$1\r\nv\r\n")
        self.assertEqual(client.ask(b"SET", b"k", b"x", b"NX", b"XX"), b"-ERR syntax error\r\n")
