"""The TLS listener's transport: the standard library's ``ssl`` over memory BIOs.

:class:`TlsServerFactory` wraps the front door's factory; each connection
is a :class:`TlsServer`, the TCP transport's protocol and the front door's
(then the client protocol's) transport. It does what Twisted's
``TLSMemoryBIOProtocol`` over pyOpenSSL did for this listener, with fewer
calls per request: bytes read go into an ``ssl.MemoryBIO``, and the
``SSLObject`` is read while the BIO or OpenSSL still holds bytes (so a
request costs one ``read``, not a second that ends in an exception); each
write is encrypted at once and its records sent at once
(:func:`distkv.front.sendnow.writer`). The per-request calls go straight to
the ``SSLObject``'s C object (its ``_sslobj``, there since Python 3.5, in
PyPy too; the ``SSLObject`` itself where it is missing), skipping one Python
frame each, and a read shorter than a whole record's worth is known to have
emptied OpenSSL, so ``pending()`` is asked only after a full-size read; under
a request-reply load each of those Python frames cost as much as the
encryption itself. Flow control is the TCP transport's:
a producer registered here is registered there, and pausing this transport
pauses reading from the socket. Client certificates are asked for and
verified by OpenSSL during the handshake against the context's CA only (see
:func:`distkv.cluster.tlsconfig.load`); :meth:`TlsServer.verified_peer`
says whether one was. A failed handshake or record closes the connection,
and its ``ssl.SSLError`` is the reason the wrapped protocol's
``connectionLost`` gets. A clean ``close_notify`` is answered and closes.
No renegotiation (TLS 1.3 has none; OpenSSL refuses TLS 1.2 client
renegotiation by default), no half-close.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable, List, Optional, cast

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv.front import sendnow

#: Plaintext asked for per ``read`` call: one TLS record holds at most 16 KiB, and
#: OpenSSL returns one record's at a time (a larger size only costs allocations).
READ_SIZE = 16 << 10


@implementer(ITransport, IPushProducer, IConsumer)
class TlsServer(Protocol):
    """One TLS connection: the TCP transport's protocol, ``wrappedProtocol``'s transport."""

    TLS = True
    disconnecting = False

    def __init__(self, factory: TlsServerFactory, wrapped: IProtocol) -> None:
        self.factory = factory
        #: The protocol over TLS; the front door replaces itself here with the
        #: client protocol it chooses.
        self.wrappedProtocol = wrapped
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = factory.context.wrap_bio(self._in, self._out, server_side=True)
        # The C object's methods, bound once: SSLObject's own are Python
        # wrappers around them (the same arguments, results and exceptions).
        c_tls = getattr(self._tls, "_sslobj", None) or self._tls
        self._tls_read = c_tls.read
        self._tls_write = c_tls.write
        self._tls_pending = c_tls.pending
        self._out_read = self._out.read
        self._handshaken = False
        #: Handshaken and neither closing, lost nor failed: records flow.
        self._open = False
        self._early: List[bytes] = []  # written before the handshake finished
        self._closing = False  # loseConnection called
        self._failure: Optional[Failure] = None
        self._lost = False

    # -- the TCP side --------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self._send = sendnow.writer(transport)
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        self.wrappedProtocol.makeConnection(cast(ITransport, self))

    def dataReceived(self, data: bytes) -> None:
        if self._open:  # the hot path: one request's record, one reply's
            self._in.write(data)
            self._decrypt()
            return
        if self._lost or self._failure is not None or (self._closing and self._handshaken):
            return
        self._in.write(data)
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as e:
            self._fail(Failure(e))
            return
        self._handshaken = True
        self._open = True  # for what was written before, even if closing since
        self._flush()
        early, self._early = self._early, []
        if early:
            self.write(b"".join(early))
        if self._failure is not None:
            return
        self._open = not self._closing
        if self._closing:
            self._shutdown()
            return
        if self._in.pending:  # records that came with the handshake's end
            self._decrypt()

    def _decrypt(self) -> None:
        """Hand the protocol what the records in the incoming BIO hold."""
        read, incoming, out = self._tls_read, self._in, self._out
        try:
            while True:
                try:
                    plain = read(READ_SIZE)
                except ssl.SSLWantReadError:
                    break  # part of a record: the rest comes later
                if not plain:  # the client's close_notify
                    self.loseConnection()
                    return
                self.wrappedProtocol.dataReceived(plain)
                if not self._open:
                    return
                # A read shorter than asked for emptied the record OpenSSL
                # held (a record holds at most READ_SIZE bytes of plaintext).
                if not incoming.pending and (
                        len(plain) < READ_SIZE or not self._tls_pending()):
                    break
        except ssl.SSLError as e:
            self._fail(Failure(e))
            return
        if out.pending:  # alerts, post-handshake messages
            self._send(self._out_read())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._open = False
        self.wrappedProtocol.connectionLost(self._failure or reason)

    def _flush(self) -> None:
        """Send what OpenSSL wrote (handshake messages, records, alerts)."""
        if self._out.pending:
            self._send(self._out.read())

    def _fail(self, failure: Failure) -> None:
        """A handshake or record failed: send the alert and close."""
        self._failure = failure
        self._open = False
        self._flush()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _shutdown(self) -> None:
        """Send our close_notify after what was written, then close."""
        try:
            self._tls.unwrap()
        except ssl.SSLError:
            pass  # the client's close_notify is not waited for
        self._flush()
        self.transport.loseConnection()  # type: ignore[union-attr]

    # -- the transport the wrapped protocol sees -----------------------

    def write(self, data: bytes) -> None:
        if self._open:  # the hot path: encrypt and send at once
            if data:
                try:
                    self._tls_write(data)
                except ssl.SSLError as e:
                    self._fail(Failure(e))
                    return
                self._send(self._out_read())
            return
        if self._closing or self._lost or self._failure is not None or not data:
            return
        self._early.append(bytes(data))  # before the handshake's end

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._open = False
        self.disconnecting = True
        if self._failure is not None:
            return
        if self._handshaken:
            self._shutdown()
        # else: the handshake's end sends what was written, then closes

    def abortConnection(self) -> None:
        self._closing = True
        self._lost = True  # nothing more is read, written or answered
        self._open = False
        self.disconnecting = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:
        return self.transport.getPeer()  # type: ignore[union-attr, no-any-return]

    def getHost(self) -> IAddress:
        return self.transport.getHost()  # type: ignore[union-attr, no-any-return]

    def setTcpNoDelay(self, enabled: bool) -> None:
        setter = getattr(self.transport, "setTcpNoDelay", None)
        if setter is not None:  # a TCP transport
            setter(enabled)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def verified_peer(self) -> bool:
        """Whether the client sent a certificate that verified against the CA
        in the handshake (OpenSSL fails the handshake on one that does not)."""
        if not self._handshaken or self.factory.context.verify_mode == ssl.CERT_NONE:
            return False
        return self._tls.getpeercert(binary_form=True) is not None


class TlsServerFactory(Factory):
    """Wraps ``wrapped``'s connections in TLS with ``context`` (a server-side
    ``ssl.SSLContext``)."""

    noisy = False

    def __init__(self, context: ssl.SSLContext, wrapped: IProtocolFactory) -> None:
        self.context = context
        self.wrappedFactory = wrapped

    def startFactory(self) -> None:
        self.wrappedFactory.doStart()

    def stopFactory(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[Protocol]:
        inner = self.wrappedFactory.buildProtocol(cast(IAddress, addr))
        if inner is None:
            return None
        return TlsServer(self, inner)
