"""Writes that go to the socket at once when nothing is waiting to be sent.

Twisted's ``transport.write`` never sends: it appends to the transport's
buffer and registers the socket for writability, and the reactor sends on its
next turn, then unregisters it. For a request-reply server that is two
``epoll_ctl`` calls and one more reactor event per reply, which on CPython is
about a quarter of the cost of a pipelined-by-one request. :func:`writer`
returns a write function that, while the transport's buffer is empty, sends
straight away and only hands what the kernel did not take (a full socket
buffer, a reply over Twisted's send limit) to ``transport.write``. Bytes are
therefore never reordered: once anything is buffered, every later write is
buffered behind it until Twisted has flushed it.

This reads five of Twisted's own (non-public) attributes of a TCP or UNIX
socket transport (``twisted.internet.tcp.Connection`` and its subclasses),
``dataBuffer``, ``_tempDataLen``, ``disconnecting``, ``_writeDisconnected`` and
``_aborting``, each there for over a decade; on any other transport (TLS,
a test's fake) it returns plain ``transport.write``. After ``loseConnection``,
a half-close or ``abortConnection`` every write goes to ``transport.write``,
which keeps Twisted's own rules for them (sent before the close; dropped).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.protocol import Protocol


def writer(transport: Any) -> Callable[[bytes], None]:
    """``transport.write``, sending at once while nothing is buffered."""
    queue: Callable[[bytes], None] = transport.write
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", True)
        or not hasattr(transport, "_tempDataLen")
        or not hasattr(transport, "dataBuffer")
        or not hasattr(transport, "_writeDisconnected")
        or not hasattr(transport, "_aborting")
    ):
        return queue
    send = transport.socket.send
    limit = transport.SEND_LIMIT

    def write(data: bytes) -> None:
        if (
            transport.dataBuffer
            or transport._tempDataLen
            or transport.disconnecting
            or transport._writeDisconnected
            or transport._aborting
            or not transport.connected
            or len(data) > limit
        ):
            queue(data)
            return
        try:
            sent = send(data)
        except OSError:
            # Would block: Twisted sends it once the socket has room. Any other
            # error: Twisted's own send meets it too and closes the usual way.
            sent = 0
        if sent < len(data):
            queue(data[sent:] if sent else data)

    return write


class SendingProtocol(Protocol):
    """A protocol whose :attr:`write` goes through :func:`writer` once connected.

    The base of every DistKV connection that answers or pushes (client front
    ends and both ends of a peer link); subclasses call ``super()`` in
    ``__init__`` and ``connectionMade``.
    """

    def __init__(self) -> None:
        #: Writes to the connection: at once while nothing is buffered.
        self.write: Callable[[bytes], None] = self._buffered

    def _buffered(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionMade(self) -> None:
        self.write = writer(self.transport)


def buffered(transport: Any) -> int:
    """Bytes waiting in a TCP transport's buffer (Twisted's own, not the
    kernel's); -1 for a transport whose buffer cannot be seen."""
    try:
        return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)
    except (AttributeError, TypeError):
        return -1
