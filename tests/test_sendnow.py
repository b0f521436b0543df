"""distkv.front.sendnow: replies sent at once, over real loopback sockets, never reordered."""

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional

import pytest_twisted
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from distkv.front.sendnow import writer
from distkv.testing import wait_for


class Server(Protocol):
    """Hands its connection to the test through ``made``."""

    def __init__(self, made: Deferred[Server]) -> None:
        self._made = made
        self.write: Callable[[bytes], None] = lambda data: None
        self.lost: Optional[Failure] = None

    def connectionMade(self) -> None:
        self.write = writer(self.transport)
        self._made.callback(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class Reader(Protocol):
    def __init__(self) -> None:
        self.received: List[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def total(self) -> int:
        return sum(len(chunk) for chunk in self.received)


class ServerFactory(Factory):
    def __init__(self) -> None:
        self.made: Deferred[Server] = Deferred()

    def buildProtocol(self, addr: Any) -> Server:
        return Server(self.made)


@inlineCallbacks
def _connected(reactor: Any) -> Any:
    """(listening port, client Reader, Server) over one loopback connection."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    factory = ServerFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Reader()
    )
    server = yield factory.made
    return port, client, server


@pytest_twisted.inlineCallbacks
def test_a_reply_goes_out_without_waiting_for_the_reactor() -> Any:
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        server.write(b"+OK\r\n")
        # Sent by the call itself: Twisted holds nothing and watches nothing.
        assert server.transport not in reactor.getWriters()
        yield wait_for(reactor, lambda: client.total() == 5)
        assert b"".join(client.received) == b"+OK\r\n"
        client.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_what_the_kernel_does_not_take_waits_and_nothing_is_reordered() -> Any:
    """A client that stops reading fills the socket buffers: the rest of a
    write, and every write after it, wait in Twisted's buffer, in order."""
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        client.transport.pauseProducing()
        server.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent: List[bytes] = []
        for i in range(200):  # far beyond the socket buffers of both ends
            chunk = (b"%06d" % i) * 5000
            sent.append(chunk)
            server.write(chunk)
        sent.append(b"x" * (3 << 20))  # over Twisted's send limit: buffered whole
        server.write(sent[-1])
        for i in range(50):
            sent.append(b"tail%d," % i)
            server.write(sent[-1])
        assert server.transport in reactor.getWriters()  # the rest waits for Twisted
        server.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        client.transport.resumeProducing()
        expected = b"".join(sent)
        yield wait_for(reactor, lambda: client.total() >= len(expected), timeout=30)
        assert b"".join(client.received) == expected
        yield wait_for(reactor, lambda: server.transport not in reactor.getWriters())
        server.write(b"again")  # the buffer is empty once more: sent at once
        assert server.transport not in reactor.getWriters()
        yield wait_for(reactor, lambda: b"".join(client.received).endswith(b"again"))
        client.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_write_never_overtakes_bytes_twisted_still_holds() -> Any:
    """The socket has room again but Twisted has not yet flushed its buffer:
    a new write must queue behind it, not go out first."""
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        client.transport.pauseProducing()
        transport = server.transport
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        first = b"".join(b"%07d," % i for i in range(200_000))
        server.write(first)
        # Hold Twisted's flush back, then let the client drain the kernel.
        reactor.removeWriter(transport)
        held = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        assert held > 0
        client.transport.resumeProducing()
        yield wait_for(reactor, lambda: client.total() == len(first) - held)
        server.write(b"late")
        reactor.addWriter(transport)
        yield wait_for(reactor, lambda: client.total() == len(first) + 4)
        assert b"".join(client.received) == first + b"late"
        client.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_writing_to_a_reset_connection_loses_it_quietly() -> Any:
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        # SO_LINGER 0: the close sends a reset, not a FIN.
        client.transport.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        client.transport.abortConnection()
        for _ in range(20):
            server.write(b"+OK\r\n" * 1000)
        yield wait_for(reactor, lambda: server.lost is not None)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_after_lose_connection_writes_are_left_to_twisted() -> Any:
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        server.write(b"first,")
        server.transport.loseConnection()
        server.write(b"second")  # Twisted's own rule: still sent before the close
        yield wait_for(reactor, lambda: server.lost is not None)
        yield wait_for(reactor, lambda: client.total() == 12)
        assert b"".join(client.received) == b"first,second"
    finally:
        yield port.stopListening()


def test_other_transports_get_their_own_write() -> None:
    transport = StringTransport()
    write = writer(transport)
    write(b"hello")
    assert transport.value() == b"hello"
    assert write == transport.write


@pytest_twisted.inlineCallbacks
def test_after_abort_connection_nothing_more_is_sent() -> Any:
    """abortConnection drops what is unsent; a write after it must not slip out."""
    from twisted.internet import reactor

    port, client, server = yield _connected(reactor)
    try:
        server.write(b"before,")
        yield wait_for(reactor, lambda: client.total() == 7)
        server.transport.abortConnection()
        server.write(b"LATE")
        yield wait_for(reactor, lambda: server.lost is not None)
        assert b"".join(client.received) == b"before,"
    finally:
        yield port.stopListening()
