"""The front door over real loopback sockets: the chosen client protocol takes
over the transport, and a half-close still gets every reply before the close."""

from __future__ import annotations

from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from distkv.front.resp import RespProtocol
from distkv.front.textproto import TextProtocol
from distkv.node import Node
from distkv.testing import wait_for


class HalfCloser(Protocol):
    """Sends its bytes, and collects everything until the close."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.received: List[bytes] = []
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.closed.callback(b"".join(self.received))


@pytest.mark.parametrize(
    "request_bytes, kind, reply",
    [
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
         RespProtocol, b"+OK\r\n$1\r\nv\r\n"),
        (b"SET k v\nGET k\n", TextProtocol, b"OK\r\nv\r\n"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_client_protocol_takes_the_transport_and_answers_a_half_close(
    request_bytes: bytes, kind: type, reply: bytes
) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    node = Node(reactor, "door")
    node.start()
    servers: List[Any] = []
    factory = node.factory()
    build = factory.buildProtocol

    def remember(addr: Any) -> Any:
        door = build(addr)
        servers.append(door)
        return door

    factory.buildProtocol = remember  # type: ignore[method-assign]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            HalfCloser(request_bytes),
        )
        yield wait_for(reactor, lambda: b"".join(client.received) == reply)
        assert isinstance(servers[0].inner, kind)
        assert servers[0].transport.protocol is servers[0].inner
        client.transport.write(request_bytes)
        client.transport.loseWriteConnection()
        got = yield client.closed
        assert got == reply * 2  # answered after the half-close, then closed
    finally:
        yield port.stopListening()
        yield node.stop()
