"""Warnings that repeat while a peer stays unreachable or keeps refusing us are
rate-limited: the first is logged at once, then one a minute, each with the
count of the attempts held back since the last one."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.peers import FAILURE_LOG_INTERVAL
from distkv.node import Node


class _Connector:
    """What ReconnectingClientFactory retries: connecting does nothing here."""

    def connect(self) -> None:
        pass

    def stopConnecting(self) -> None:
        pass


class PeerWarningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        node = Node(self.clock, "a")
        link = node.add_peer("127.0.0.1", 9)
        assert link is not None
        self.link = link
        self.addCleanup(link.stopTrying)

    def lines(self, start: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if e.get("log_format", "").startswith(start)]

    def test_an_unreachable_peer_is_logged_once_a_minute_with_a_count(self) -> None:
        """Twelve failed attempts five seconds apart: one warning at the first,
        the next a minute later saying eleven more failed meanwhile."""
        for _ in range(12):
            self.link.clientConnectionFailed(_Connector(), Failure(ConnectionRefusedError()))
            self.clock.advance(5)
        warned = self.lines("Cannot reach peer")
        self.assertEqual([e["held"] for e in warned], [0])
        self.assertEqual(warned[0]["log_level"].name, "warn")
        self.clock.advance(FAILURE_LOG_INTERVAL)
        self.link.clientConnectionFailed(_Connector(), Failure(ConnectionRefusedError()))
        self.assertEqual([e["held"] for e in self.lines("Cannot reach peer")], [0, 11])

    def test_a_peer_refusing_us_is_logged_once_a_minute_with_a_count(self) -> None:
        """A peer that keeps refusing (another cluster secret, say): one error,
        then one a minute with the count; a peer reading its data dir is info."""
        for _ in range(5):
            self.link.refused(("bad-secret", "prove the secret"))
        self.assertEqual([e["held"] for e in self.lines("Peer {peer} refused our link")], [0])
        self.clock.advance(FAILURE_LOG_INTERVAL)
        self.link.refused(("bad-secret", "prove the secret"))
        self.assertEqual([e["held"] for e in self.lines("Peer {peer} refused our link")], [0, 4])
        self.clock.advance(FAILURE_LOG_INTERVAL)
        self.link.refused(("loading", "reading its data dir"))
        loading = self.lines("Peer {peer} is reading its data dir")
        self.assertEqual([e["held"] for e in loading], [0])
        self.assertEqual(loading[0]["log_level"].name, "info")

    def test_a_new_kind_of_failure_is_logged_at_once(self) -> None:
        """A peer unreachable at first (not started yet) that then refuses our
        link (it requires TLS, say) gets the refusal logged at once, within
        the minute, and the count of what was held back."""
        for _ in range(3):
            self.link.clientConnectionFailed(_Connector(), Failure(ConnectionRefusedError()))
            self.clock.advance(5)
        self.link.refused(("tls-required", "this cluster's peers use TLS"))
        self.link.refused(("tls-required", "this cluster's peers use TLS"))
        self.assertEqual([e["held"] for e in self.lines("Cannot reach peer")], [0])
        self.assertEqual([e["held"] for e in self.lines("Peer {peer} refused our link")], [2])
