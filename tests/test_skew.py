"""A node whose clock runs past --max-clock-skew ahead of a peer's refuses writes
(issue 11, item 12): its peers would refuse them for ever."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.peerproto import Acceptor
from distkv.cluster.skew import SkewGuard
from distkv.front.commands import OK, Error, Request
from distkv.testing import SimulatedCluster
from tests.fakehost import FakeHost


class SkewGuardTests(SynchronousTestCase):
    def test_the_peer_we_are_furthest_ahead_of_past_the_limit_is_named(self) -> None:
        """Bounds at or under the limit pass; the worst one over it is reported."""
        now = [0.0]
        guard = SkewGuard(60_000, lambda: now[0], fresh_for=20)
        guard.reading("a", 60_000)
        guard.reading("b", -5_000_000)  # we are behind b: not our writes' problem
        self.assertIsNone(guard.too_far_ahead())
        guard.reading("c", 61_000)
        guard.reading("d", 90_000)
        self.assertEqual(guard.too_far_ahead(), ("d", 90_000))
        guard.forget("d")
        self.assertEqual(guard.too_far_ahead(), ("c", 61_000))

    def test_old_readings_stop_counting(self) -> None:
        """A peer that went away cannot keep us refusing: its reading goes stale."""
        now = [0.0]
        guard = SkewGuard(60_000, lambda: now[0], fresh_for=20)
        guard.reading("a", 90_000)
        now[0] = 20.0
        self.assertEqual(guard.too_far_ahead(), ("a", 90_000))
        now[0] = 20.5
        self.assertIsNone(guard.too_far_ahead())


class HeartbeatClockTests(SynchronousTestCase):
    def test_answers_carry_the_clock_and_bound_how_far_ahead_we_are(self) -> None:
        """Each end answers a heartbeat with its wall clock; the asking end learns
        its send time minus that reading, and nothing from an unasked answer."""
        host = FakeHost()
        clock = Clock()
        proto = Acceptor(host, clock, 1.0, 1 << 20)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(wire.greeting_line(wire.Greeting(wire.Hello("them", "1"), 7001)))
        transport.clear()
        proto.dataReceived(wire.encode_bare_heartbeat())
        self.assertEqual(transport.value(), wire.encode_heartbeat_reply(host.clock_ms))
        proto.dataReceived(wire.encode_heartbeat_reply(5))  # never asked: ignored
        self.assertEqual(host.ahead, [])
        clock.advance(1.0)  # our heartbeat goes out, stamped with our clock
        proto.dataReceived(wire.encode_heartbeat_reply(host.clock_ms - 90_000))
        self.assertEqual(host.ahead, [("them", 90_000)])
        proto.connectionLost()


class ClockAheadClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_a_node_90s_ahead_refuses_writes_and_says_why_loudly(self) -> None:
        """n1 runs 90 s fast with --max-clock-skew 60: after a heartbeat it answers
        CLOCKSKEW to every write (none acknowledged, so none lost), logs it as critical,
        and the others keep accepting writes and converge."""
        cluster = SimulatedCluster(3, skew_ms={"n1": 90_000}, max_clock_skew=60.0,
                                   heartbeat=1.0)
        self.addCleanup(cluster.stop)
        cluster.advance(3)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        replies = [n1.dispatcher.execute(Request(b"SET", (b"k%d" % i, b"v"))) for i in range(200)]
        self.assertTrue(all(isinstance(r, Error) and r.message.startswith("CLOCKSKEW")
                            for r in replies), replies[0])
        self.assertIn("ahead of peer n", replies[0].message)  # type: ignore[union-attr]
        self.assertIsInstance(n1.dispatcher.execute(Request(b"DEL", (b"k",))), Error)
        self.assertIsInstance(n1.dispatcher.execute(Request(b"MSET", (b"k", b"v"))), Error)
        self.assertEqual(n2.dispatcher.execute(Request(b"SET", (b"from-n2", b"v"))), OK)
        cluster.settle()
        self.assertTrue(cluster.converged())
        self.assertIn("writes refused (clock ahead)", n1.status_lines())
        self.assertIn("writes accepted", n2.status_lines())
        critical = [e for e in self.events if e.get("log_level") is not None
                    and e["log_level"].name == "critical" and "clock" in e.get("log_format", "")]
        self.assertEqual(len(critical), 1)

    def test_a_node_within_the_limit_writes_as_usual(self) -> None:
        """A clock 30 s ahead with --max-clock-skew 60 refuses nothing."""
        cluster = SimulatedCluster(2, skew_ms={"n1": 30_000}, max_clock_skew=60.0,
                                   heartbeat=1.0)
        self.addCleanup(cluster.stop)
        cluster.advance(3)
        n1 = cluster.nodes["n1"]
        self.assertEqual(n1.dispatcher.execute(Request(b"SET", (b"k", b"v"))), OK)
        cluster.settle()
        self.assertTrue(cluster.converged())

    def test_refusal_ends_when_the_far_peer_is_gone(self) -> None:
        """Once the only peer it was too far ahead of is no longer heard, n1 writes again."""
        cluster = SimulatedCluster(2, skew_ms={"n1": 90_000}, max_clock_skew=60.0,
                                   heartbeat=1.0)
        self.addCleanup(cluster.stop)
        cluster.advance(3)
        n1 = cluster.nodes["n1"]
        self.assertIsInstance(n1.dispatcher.execute(Request(b"SET", (b"k", b"v"))), Error)
        cluster.crash("n2")
        cluster.advance(10)
        self.assertEqual(n1.dispatcher.execute(Request(b"SET", (b"k", b"v"))), OK)
