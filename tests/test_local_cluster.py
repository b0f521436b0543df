"""distkv.testing.start_local_cluster: a real-socket cluster inside a user's own test suite."""

from __future__ import annotations

from typing import Any, List

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver

from distkv.testing import identical, start_local_cluster, wait_for


class LineClient(LineReceiver):
    """A minimal text-protocol client: send a line, get the next reply line."""

    delimiter = b"\r\n"

    def __init__(self) -> None:
        self._waiting: List[Deferred[bytes]] = []

    def lineReceived(self, line: bytes) -> None:
        self._waiting.pop(0).callback(line)

    def command(self, line: bytes) -> Deferred[bytes]:
        waiter: Deferred[bytes] = Deferred()
        self._waiting.append(waiter)
        self.sendLine(line)
        return waiter


@pytest_twisted.inlineCallbacks
def test_local_cluster_replicates_over_real_sockets() -> Any:
    """Three nodes on free loopback ports: a write through one is read through another."""
    from twisted.internet import reactor

    cluster = yield start_local_cluster(reactor, 3, heartbeat=1.0)
    try:
        (host1, port1), (host2, port2), _ = cluster.addresses
        one = yield connectProtocol(TCP4ClientEndpoint(reactor, host1, port1), LineClient())
        two = yield connectProtocol(TCP4ClientEndpoint(reactor, host2, port2), LineClient())
        reply = yield one.command(b"SET greeting hello there")
        assert reply == b"OK"
        yield wait_for(reactor, lambda: cluster.nodes[1].store.get(b"greeting") is not None)
        assert (yield two.command(b"GET greeting")) == b"hello there"
        assert (yield two.command(b"DEL greeting")) == b"1"
        yield wait_for(reactor, lambda: identical(cluster.nodes))
        assert (yield one.command(b"GET greeting")) == b"(nil)"
        one.transport.loseConnection()
        two.transport.loseConnection()
    finally:
        yield cluster.stop()
