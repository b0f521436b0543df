"""The front door: one listening port for clients and peers alike.

Each new connection is sniffed on its first bytes. A peer announces itself
with the peer handshake (``DISTKV-PEER ...``) and is handed to the apply side
of replication; a first byte ``*`` starts a RESP2 (Redis protocol) client;
everything else is a client speaking the text protocol. The choice is made
once per connection, after which the chosen protocol gets the transport and
every byte, including the ones already read; a client protocol (text or RESP)
also becomes the transport's protocol, so Twisted calls it directly from then on.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv import wire
from distkv.peerproto import no_delay


@implementer(IHalfCloseableProtocol)
class FrontDoor(Protocol):
    """Chooses the protocol for a connection from its first bytes."""

    def __init__(
        self,
        client: Callable[[], IProtocol],
        peer: Callable[[], IProtocol],
        resp: Optional[Callable[[], IProtocol]] = None,
    ) -> None:
        self._client = client
        self._peer = peer
        self._resp = resp or client
        self._buffer = b""
        self.inner: Optional[IProtocol] = None

    def connectionMade(self) -> None:
        no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        buffer = self._buffer + data
        if buffer[:1] == b"*":
            self._choose(self._resp).dataReceived(buffer)
            return
        magic = wire.MAGIC
        if len(buffer) < len(magic) and magic.startswith(buffer):
            self._buffer = buffer  # could still become a peer handshake
            return
        self._buffer = b""
        self._choose(self._peer if buffer.startswith(magic) else self._client).dataReceived(
            buffer
        )

    def _choose(self, make: Callable[[], IProtocol]) -> IProtocol:
        inner = make()
        self.inner = inner
        transport = self.transport
        assert transport is not None
        inner.makeConnection(transport)
        if getattr(transport, "protocol", None) is self and IHalfCloseableProtocol.providedBy(
            inner
        ):
            # A client protocol takes over the transport: Twisted then calls it
            # directly (one call less per read), the same calls the door made.
            transport.protocol = inner  # type: ignore[attr-defined]
        return inner

    def readConnectionLost(self) -> None:
        if self.inner is None:
            inner = self._choose(self._client)
            if self._buffer:
                inner.dataReceived(self._buffer)
        half = IHalfCloseableProtocol(self.inner, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.inner, None)
        if half is not None:
            half.writeConnectionLost()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class FrontDoorFactory(Factory):
    """Builds a front door per connection."""

    noisy = False

    def __init__(
        self,
        client: Callable[[], IProtocol],
        peer: Callable[[], IProtocol],
        resp: Optional[Callable[[], IProtocol]] = None,
    ) -> None:
        self._client = client
        self._peer = peer
        self._resp = resp

    def buildProtocol(self, addr: Optional[IAddress]) -> FrontDoor:
        door = FrontDoor(self._client, self._peer, self._resp)
        door.factory = self
        return door
