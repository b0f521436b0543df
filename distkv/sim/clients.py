"""Simulated client connections: pipelines through a node's real front door.

The other steps of a simulated run call a node's command layer directly. A
:class:`~distkv.sim.schedule.Pipeline` step instead connects a client to
the node's front door (the factory its port serves) and sends, in one read, a
``SET`` then a run of ``GET`` s of the same key, in RESP or the text protocol
(a :class:`~distkv.sim.schedule.Transaction` step: ``MULTI``, two ``SET`` s,
``EXEC``).
The client reads nothing until the node has taken the whole read, so the
node's client output limits come into play: replies to a write on a data dir
node wait for its commit, and the replies behind it are held in the
connection's reply queue; replies the client has not read wait in the
transport, which, like Twisted's TCP transport, pauses the node's protocol
once they pass its buffer size (the soft limit). :class:`ClientTransport`
records the most bytes ever queued for the client (in the transport, plus
ready replies held behind a commit) for the *bounded* invariant; then the
client reads until nothing more comes, and the first reply says how the write
ended.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


class ClientTransport(StringTransport):
    """A client's connection as the node sees it.

    Bytes written wait until the client reads them; past ``bufferSize`` the
    registered producer (the node's client protocol) is paused, and reading
    resumes it, as ``twisted.internet.abstract.FileDescriptor`` does. The
    node's protocol sees what waits here as a TCP transport's buffer
    (:func:`distkv.front.sendnow.buffered`).
    """

    bufferSize = 64 << 10
    offset = 0
    _tempDataLen = 0

    def __init__(self, port: int) -> None:
        super().__init__(
            IPv4Address("TCP", "127.0.0.1", port), IPv4Address("TCP", "127.0.0.1", 50000)
        )
        self.protocol: Any = None
        self.paused = False

    @property
    def dataBuffer(self) -> bytes:
        return bytes(self.value())

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.paused and self.producer is not None and len(self.value()) > self.bufferSize:
            self.paused = True
            self.producer.pauseProducing()

    def read(self) -> bytes:
        """Everything waiting for the client; a paused producer resumes."""
        data = bytes(self.value())
        self.clear()
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()
        return data


class Client:
    """One client connection to a node, through its front door."""

    def __init__(self, factory: Any, port: int) -> None:
        self.transport = ClientTransport(port)
        self.door = factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.door
        self.door.makeConnection(self.transport)
        self.received = b""
        #: The most bytes ever queued for this client: unread in the
        #: transport, plus ready replies held behind a commit.
        self.peak = 0

    def queued(self) -> int:
        inner = getattr(self.door, "inner", None)
        owed = getattr(inner, "_owed", None)
        return len(self.transport.value()) + int(getattr(owed, "held", 0))

    def _measure(self) -> None:
        self.peak = max(self.peak, self.queued())

    def send(self, data: bytes) -> None:
        """One read's worth of requests."""
        self.transport.protocol.dataReceived(data)
        self._measure()

    def read(self, run: Any) -> None:
        """Read replies, letting the node run between reads (``run``), until
        nothing more comes."""
        for _ in range(10_000):
            run()
            self._measure()
            data = self.transport.read()
            if not data:
                run()
                self._measure()
                if not self.transport.value():
                    return
                continue
            self.received += data

    def close(self) -> None:
        if not self.transport.disconnecting:
            self.transport.loseConnection()
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))

    def first_reply(self) -> Optional[bytes]:
        """The first line the node sent, if it sent a whole one."""
        line, found, _ = self.received.partition(b"\r\n")
        return line if found else None


def requests(resp: bool, key: bytes, value: bytes, gets: int) -> bytes:
    """``SET key value`` then ``gets`` ``GET key``, as one read."""
    if resp:
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(value), value
        ) + b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key) * gets
    return b"SET %s %s\r\n" % (key, value) + b"GET %s\r\n" % key * gets


def transaction(resp: bool, keys: Sequence[bytes], value: bytes) -> bytes:
    """``MULTI``, ``SET key value`` for each key, ``EXEC``, as one read."""
    if resp:
        sets = b"".join(
            b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
            for key in keys
        )
        return b"*1\r\n$5\r\nMULTI\r\n" + sets + b"*1\r\n$4\r\nEXEC\r\n"
    return b"MULTI\r\n" + b"".join(b"SET %s %s\r\n" % (key, value) for key in keys) + b"EXEC\r\n"


def exec_outcome(resp: bool, received: bytes, count: int) -> Optional[bool]:
    """Whether a transaction of ``count`` SETs was acknowledged (True: EXEC
    answered every one OK), failed to commit (False), or is unknown."""
    if resp:
        done = b"*%d\r\n" % count + b"+OK\r\n" * count
    else:
        done = b"OK\r\n" * count + b"END\r\n"
    if received.endswith(done):
        return True
    if b"write not persisted" in received:
        return False
    return None


def acknowledged(reply: Optional[bytes]) -> Optional[bool]:
    """Whether a ``SET`` reply is ``OK`` (True), an error (False), or missing."""
    if reply is None:
        return None
    return reply in (b"+OK", b"OK")
