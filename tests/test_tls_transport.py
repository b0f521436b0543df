"""The TLS listener's transport (:mod:`distkv.front.tlstransport`) in process:
a standard-library TLS client over memory BIOs talks to a :class:`TlsServer`
whose TCP transport is a StringTransport. Requests and replies cross whole or
split, several records arriving in one read reach the protocol, client
certificates are verified against the CA, failed handshakes end the
connection with the TLS error, writes before the handshake wait for it,
close_notify is sent and answered, and pausing pauses the socket."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from distkv.cluster import tlsconfig
from distkv.front.tlstransport import TlsServer, TlsServerFactory
from tests.tlscerts import Authority, require_tls


class Recorder(Protocol):
    """The protocol over TLS: records what it is given."""

    def __init__(self) -> None:
        self.received: List[bytes] = []
        self.lost: Optional[Failure] = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class Client:
    """A TLS client over memory BIOs, pumping bytes to and from ``server``."""

    def __init__(self, server: TlsServer, tcp: StringTransport, ca: Path,
                 cert: Optional[Tuple[Path, Path]] = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cafile=str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing)
        self.server, self.tcp = server, tcp

    def take(self) -> None:
        """What the server sent goes into our BIO."""
        self.incoming.write(self.tcp.value())
        self.tcp.clear()

    def handshake(self) -> None:
        for _ in range(5):
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.server.dataReceived(self.outgoing.read())
                self.take()
        self.server.dataReceived(self.outgoing.read())  # our Finished (TLS 1.3)
        self.take()

    def hello(self) -> None:
        """Send the ClientHello and take the server's reply to it."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.server.dataReceived(self.outgoing.read())
        self.take()

    def records(self, *messages: bytes) -> bytes:
        for message in messages:
            self.tls.write(message)
        return self.outgoing.read()

    def read(self) -> bytes:
        self.take()
        out = b""
        while True:
            try:
                chunk = self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                return out
            if not chunk:
                return out
            out += chunk


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    require_tls()
    return Authority(tmp_path)


def serve(ca: Authority, with_ca: bool = True) -> Tuple[TlsServer, StringTransport, Recorder]:
    cert, key = ca.issue("node")
    config = tlsconfig.load(str(cert), str(key), str(ca.path) if with_ca else None, "tcp:0")
    recorder = Recorder()

    class One:
        def buildProtocol(self, addr: Any) -> Recorder:
            return recorder

        def doStart(self) -> None:
            pass

        def doStop(self) -> None:
            pass

    factory = config.listening(One())
    assert isinstance(factory, TlsServerFactory)
    server = factory.buildProtocol(None)
    assert isinstance(server, TlsServer)
    tcp = StringTransport()
    server.makeConnection(tcp)
    return server, tcp, recorder


def test_requests_and_replies_cross_and_several_records_in_one_read_all_arrive(
        ca: Authority) -> None:
    """After the handshake, three records sent in one TCP read all reach the
    protocol, in order, and its reply reaches the client encrypted."""
    server, tcp, inner = serve(ca)
    assert inner.made and inner.transport is server
    client = Client(server, tcp, ca.path)
    client.handshake()
    server.dataReceived(client.records(b"PING\r\n", b"GET a\r\n", b"GET b\r\n"))
    assert b"".join(inner.received) == b"PING\r\nGET a\r\nGET b\r\n"
    server.write(b"+PONG\r\n")
    server.writeSequence([b"$-1\r\n", b"$-1\r\n"])
    assert tcp.value() and b"PONG" not in tcp.value()
    assert client.read() == b"+PONG\r\n$-1\r\n$-1\r\n"


def test_a_record_split_across_reads_arrives_once_complete(ca: Authority) -> None:
    """A record cut into single bytes gives the protocol nothing until its last byte."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.handshake()
    record = client.records(b"SET k v\r\n")
    for i in range(len(record) - 1):
        server.dataReceived(record[i:i + 1])
    assert inner.received == []
    server.dataReceived(record[-1:])
    assert inner.received == [b"SET k v\r\n"]
    assert inner.lost is None


def test_a_client_certificate_from_the_ca_admits_a_peer_and_none_does_not(
        ca: Authority) -> None:
    """A client certificate signed by the CA is verified and lets the peer gate
    admit the connection; without one the gate refuses it as having none."""
    server, tcp, _ = serve(ca)
    Client(server, tcp, ca.path, ca.issue("peer")).handshake()
    assert server.verified_peer()
    gate = tlsconfig.PeerGate(tlsconfig.load(*map(str, ca.issue("n")), str(ca.path)),
                              lambda: 0.0)
    assert gate.refusal(server) is None

    bare, bare_tcp, _ = serve(ca)
    Client(bare, bare_tcp, ca.path).handshake()
    assert not bare.verified_peer()
    assert gate.refusal(bare) == (tlsconfig.REFUSAL_CODE, tlsconfig.NO_CERTIFICATE)


def test_without_a_ca_no_client_certificate_is_asked_for(ca: Authority) -> None:
    """A listener without --tls-ca serves clients and never counts one as a verified peer."""
    server, tcp, inner = serve(ca, with_ca=False)
    client = Client(server, tcp, ca.path, ca.issue("peer"))
    client.handshake()
    assert not server.verified_peer()
    server.dataReceived(client.records(b"PING\r\n"))
    assert inner.received == [b"PING\r\n"]


def test_a_certificate_from_another_ca_fails_the_handshake_with_the_reason(
        ca: Authority, tmp_path: Path) -> None:
    """A client certificate another CA signed fails the handshake: the
    connection closes and the protocol's connectionLost gets the TLS error,
    which tls_failure names as a failed certificate verification."""
    (tmp_path / "other").mkdir()
    other = Authority(tmp_path / "other", "other-ca")
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path, other.issue("stranger"))
    client.handshake()
    assert tcp.disconnecting
    server.connectionLost(Failure(ConnectionError("closed")))
    assert inner.lost is not None and inner.lost.check(ssl.SSLError)
    why = tlsconfig.tls_failure(inner.lost)
    assert why is not None and "certificate verify failed" in why
    assert "_ssl.c" not in why and not why.startswith("[")
    assert inner.received == []


def test_plaintext_on_the_tls_port_fails_the_handshake(ca: Authority) -> None:
    """A plaintext request is a failed handshake, reported as a TLS error, never data."""
    server, tcp, inner = serve(ca)
    server.dataReceived(b"GET k\r\n" * 20)
    assert tcp.disconnecting and inner.received == []
    server.connectionLost(Failure(ConnectionError("closed")))
    assert inner.lost is not None and tlsconfig.tls_failure(inner.lost)


def test_writes_and_a_close_before_the_handshake_are_sent_after_it(ca: Authority) -> None:
    """What the protocol writes, then closes, before the handshake ends (a
    refusal) reaches the client once it has, followed by close_notify."""
    server, tcp, _ = serve(ca)
    server.write(b"-ERR max number of clients reached\r\n")
    server.loseConnection()
    assert not tcp.disconnecting
    client = Client(server, tcp, ca.path)
    client.handshake()
    assert client.read() == b"-ERR max number of clients reached\r\n"
    assert client.tls.unwrap() is None  # the server's close_notify came
    assert tcp.disconnecting


def test_the_clients_close_notify_is_answered_and_closes(ca: Authority) -> None:
    """A client's close_notify gets ours back and closes the TCP connection."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.handshake()
    try:
        client.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    server.dataReceived(client.outgoing.read())
    assert tcp.disconnecting
    client.take()
    client.tls.unwrap()  # our close_notify answered it: no WantRead
    server.write(b"late")
    assert tcp.value() == b""
    assert inner.received == []


def test_producers_and_pausing_go_to_the_tcp_transport(ca: Authority) -> None:
    """A producer registers on the TCP transport, and pausing and resuming the
    TLS transport pauses and resumes reading from the socket."""
    server, tcp, inner = serve(ca)
    server.registerProducer(inner, True)
    assert tcp.producer is inner and tcp.streaming
    server.pauseProducing()
    assert tcp.producerState == "paused"
    server.resumeProducing()
    assert tcp.producerState == "producing"
    server.unregisterProducer()
    assert tcp.producer is None
    server.abortConnection()
    assert tcp.disconnecting


def test_the_front_door_hands_the_tls_transport_to_the_client_protocol(ca: Authority) -> None:
    """Over the TLS listener the front door picks RESP from the first bytes,
    answers, and then steps aside: the client protocol becomes the TLS
    transport's wrappedProtocol and gets later requests directly."""
    from twisted.internet.task import Clock

    from distkv.front.frontdoor import FrontDoor
    from distkv.node import Node

    cert, key = ca.issue("n")
    config = tlsconfig.load(str(cert), str(key), str(ca.path), "tcp:0")
    node = Node(Clock(), "n", tls=config)
    server = config.listening(node.factory()).buildProtocol(None)
    tcp = StringTransport()
    server.makeConnection(tcp)
    assert isinstance(server.wrappedProtocol, FrontDoor)
    client = Client(server, tcp, ca.path)
    client.handshake()
    server.dataReceived(client.records(b"*1\r\n$4\r\nPING\r\n"))
    assert client.read() == b"+PONG\r\n"
    assert not isinstance(server.wrappedProtocol, FrontDoor)
    server.dataReceived(client.records(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
                                       b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
    assert client.read() == b"+OK\r\n$1\r\nv\r\n"


def test_records_that_come_with_the_handshakes_end_reach_the_protocol(ca: Authority) -> None:
    """Requests the client sends in the same TCP read as its Finished message
    are delivered once the handshake completes, not left waiting for more bytes."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.hello()
    client.tls.do_handshake()  # TLS 1.3: the client is done after the server's flight
    server.dataReceived(client.outgoing.read() + client.records(b"PING\r\n", b"GET a\r\n"))
    assert b"".join(inner.received) == b"PING\r\nGET a\r\n"
    server.write(b"+PONG\r\n")
    assert client.read() == b"+PONG\r\n"


def test_requests_of_several_full_records_in_one_read_all_arrive(ca: Authority) -> None:
    """A request larger than one record (three full 16 KiB records and a short
    one) sent in one read reaches the protocol whole and in order, and so does
    an exactly 16 KiB one followed by a small one."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.handshake()
    big = bytes(range(256)) * 200 + b"end\r\n"  # 51,205 bytes
    server.dataReceived(client.records(big))
    assert b"".join(inner.received) == big
    del inner.received[:]
    exact = b"x" * (16 << 10)
    server.dataReceived(client.records(exact, b"PING\r\n"))
    assert b"".join(inner.received) == exact + b"PING\r\n"


def test_a_large_reply_and_pipelined_replies_arrive_whole_and_in_order(ca: Authority) -> None:
    """A 1 MiB reply and a hundred small replies written in turn reach the
    client complete and in order (each write is encrypted and sent at once)."""
    server, tcp, _ = serve(ca)
    client = Client(server, tcp, ca.path)
    client.handshake()
    big = b"$1048576\r\n" + b"v" * (1 << 20) + b"\r\n"
    server.write(big)
    for i in range(100):
        server.write(b":%d\r\n" % i)
    assert client.read() == big + b"".join(b":%d\r\n" % i for i in range(100))


def test_a_protocol_closing_mid_read_gets_no_more_requests(ca: Authority) -> None:
    """When the protocol closes while handling the first of several records
    in one read (a QUIT), the rest are not handed to it and its later writes
    are dropped; the close_notify follows what it wrote before closing."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.handshake()

    def quit_on_first(data: bytes) -> None:
        inner.received.append(data)
        server.write(b"+OK\r\n")
        server.loseConnection()

    inner.dataReceived = quit_on_first  # type: ignore[method-assign]
    server.dataReceived(client.records(b"QUIT\r\n", b"GET a\r\n"))
    assert inner.received == [b"QUIT\r\n"]
    server.write(b"late\r\n")
    assert client.read() == b"+OK\r\n"
    assert client.tls.unwrap() is None  # the close_notify came
    assert tcp.disconnecting


def test_a_connection_lost_during_the_handshake_ends_it_once(ca: Authority) -> None:
    """A client that goes away in the middle of the handshake: the protocol's
    connectionLost gets the TCP reason, bytes after it and writes are ignored,
    and nothing reaches the protocol as data."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.hello()
    server.write(b"-ERR early\r\n")
    server.connectionLost(Failure(ConnectionError("reset")))
    assert inner.lost is not None and inner.lost.check(ConnectionError)
    tcp.clear()
    client.tls.do_handshake()
    server.dataReceived(client.outgoing.read() + client.records(b"PING\r\n"))
    server.write(b"+PONG\r\n")
    assert inner.received == [] and tcp.value() == b""


def test_abort_during_the_handshake_aborts_the_tcp_connection(ca: Authority) -> None:
    """abortConnection before the handshake ends aborts the TCP connection at
    once and what was written before it is never encrypted or sent."""
    server, tcp, inner = serve(ca)
    client = Client(server, tcp, ca.path)
    client.hello()
    server.write(b"-ERR early\r\n")
    server.abortConnection()
    assert tcp.disconnecting
    client.tls.do_handshake()
    server.dataReceived(client.outgoing.read() + client.records(b"PING\r\n"))
    assert tcp.value() == b"" and inner.received == []


def test_the_hot_path_binds_the_ssl_objects_c_methods_and_the_public_ones_serve_too(
        ca: Authority) -> None:
    """The transport calls ``SSLObject._sslobj``'s read, write and pending (a
    private attribute of Python's ``ssl``, on CPython and PyPy alike) to skip
    the Python wrappers: this pins that it is there and used. Where it is
    missing the transport binds the public ``SSLObject`` methods, which take
    the same arguments and raise the same errors: requests and replies cross
    through them too."""
    server, tcp, inner = serve(ca)
    c_tls = getattr(server._tls, "_sslobj", None)
    assert c_tls is not None, "ssl.SSLObject has no _sslobj: the hot path falls back"
    assert [server._tls_read.__self__, server._tls_write.__self__,  # type: ignore[attr-defined]
            server._tls_pending.__self__] == [c_tls] * 3  # type: ignore[attr-defined]
    fallback, fallback_tcp, fallback_inner = serve(ca)
    public = fallback._tls
    fallback._tls_read, fallback._tls_write, fallback._tls_pending = (
        public.read, public.write, public.pending)
    client = Client(fallback, fallback_tcp, ca.path)
    client.handshake()
    fallback.dataReceived(client.records(b"PING\r\n", b"GET a\r\n"))
    assert b"".join(fallback_inner.received) == b"PING\r\nGET a\r\n"
    fallback.write(b"+PONG\r\n")
    assert client.read() == b"+PONG\r\n"
