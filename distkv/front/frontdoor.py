"""The front door: one listening port for clients and peers alike.

Each new connection is sniffed on its first bytes. A peer announces itself
with the peer handshake (``DISTKV-PEER ...``) and is handed to the apply side
of replication; a first byte ``*`` starts a RESP2 (Redis protocol) client;
everything else is a client speaking the text protocol. The choice is made
once per connection, after which the chosen protocol gets the transport and
every byte, including the ones already read; a client protocol (text or RESP)
also becomes the transport's protocol, so Twisted calls it directly from then on.

At most ``maxclients`` clients are served at once, as in Redis: a connection
counts as a client once its first bytes have chosen the text protocol or RESP,
and one past the limit gets Redis's ``max number of clients reached`` error (in
its protocol) and is closed. Peers are never counted nor refused, so a node
full of clients still hears its cluster. A connection that has sent nothing yet
may be either, so it is let in while clients and such connections together
number fewer than ``maxclients`` plus half of :data:`RESERVED_FILES`, and
refused at once (with the RESP form of the error, as Redis does on accept)
past that: connections never outnumber the open files. When it starts listening, the
factory raises the process's soft limit on open files towards what
``maxclients`` needs, as Redis does, and lowers the limit it enforces if the
system allows fewer.

Protected mode, as in Redis: a node that cannot tell who connects refuses
connections from other machines. With ``protect_clients`` a client (text or
RESP) from an address outside the loopback interface (127.0.0.0/8, ``::1``)
gets an error that says how to let it in (Redis's ``-DENIED ...`` in RESP,
``ERR DENIED ...`` in text) and is closed; with ``protect_peers`` a peer
handshake from there gets a ``DISTKV-PEER-ERR protected-mode ...`` refusal.
The node decides which holds (clients: no password and no interface chosen;
peers: no peer authentication); the check is made once per connection, here,
where the address and the kind of connection are both known.
"""

from __future__ import annotations

import ipaddress
import re
import resource
import time
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv.cluster import wire
from distkv.cluster.peerproto import no_delay
from distkv.ratelog import RateLimit

log = Logger()

#: Redis's default ``maxclients``.
MAXCLIENTS = 10000

#: Open files kept beyond ``maxclients`` (Redis keeps 32): the listening
#: socket, peer links, the data dir's files, connections not yet identified.
RESERVED_FILES = 128

TOO_MANY_RESP = b"-ERR max number of clients reached\r\n"
TOO_MANY_TEXT = b"ERR max number of clients reached\r\n"

#: Protected mode's refusal of a client, after Redis's own (``-DENIED ...``).
DENIED = (
    "DENIED DistKV is running in protected mode because protected mode is enabled and no "
    "password is set for clients. In this mode connections are only accepted from the "
    "loopback interface. If you want to connect from external computers to DistKV you "
    "may adopt one of the following solutions: 1) Set a password for clients with "
    "--requirepass-file (or users with --users-file) and restart the node. 2) Listen on "
    "one chosen interface, e.g. --port tcp:9000:interface=192.0.2.10, and restart the "
    "node; MAKE SURE only trusted computers reach it if you do so. 3) If you started the "
    "node on a trusted network just for testing, restart it with the '--protected-mode "
    "no' option; MAKE SURE the node is not publicly accessible from internet if you do "
    "so. NOTE: You only need to do one of the above things in order for the node to "
    "start accepting connections from the outside."
)
DENIED_RESP = b"-" + DENIED.encode("ascii") + b"\r\n"
DENIED_TEXT = b"ERR " + DENIED.encode("ascii") + b"\r\n"
#: Protected mode's refusal of a peer.
DENIED_PEER = wire.refusal_line(
    "protected-mode",
    "this node accepts peers only from the loopback interface, as it cannot "
    "authenticate them; give every node the cluster's --cluster-secret-file (or peer "
    "TLS), or restart this node with --protected-mode no on a trusted network",
)

_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\.|[^:\\])*)")
_EVERY_INTERFACE = ("", "0.0.0.0", "::", "0:0:0:0:0:0:0:0")


def one_interface(endpoint: str) -> bool:
    """Whether the server endpoint string ``endpoint`` listens on one chosen
    interface (``interface=...``, not a wildcard address)."""
    match = _INTERFACE.search(endpoint)
    if match is None:
        return False
    return match.group(1).replace("\\", "") not in _EVERY_INTERFACE


def bound_address(endpoint: str) -> str:
    """The interface the server endpoint string ``endpoint`` listens on, as
    Redis's ``bind`` setting writes it (``* -::*`` for every interface)."""
    match = _INTERFACE.search(endpoint)
    if match is None or match.group(1).replace("\\", "") in _EVERY_INTERFACE:
        return "* -::*"
    return match.group(1).replace("\\", "")


def is_loopback(address: object) -> bool:
    """Whether a connection from ``address`` comes from this machine: the
    loopback interface, or a UNIX socket."""
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return True  # a UNIX socket (no host): only this machine reaches it
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


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
        self._counted = False
        self._pending = False

    def connectionMade(self) -> None:
        factory = self.factory
        if isinstance(factory, FrontDoorFactory):
            if factory.clients + factory.pending >= factory.maxclients + RESERVED_FILES // 2:
                self._refuse(factory, TOO_MANY_RESP)
                return
            factory.pending += 1
            self._pending = True
        no_delay(self.transport)

    def _unpend(self) -> None:
        if self._pending:
            self._pending = False
            self.factory.pending -= 1  # type: ignore[union-attr]

    def _refuse(self, factory: FrontDoorFactory, refusal: bytes) -> None:
        factory.refused += 1
        transport = self.transport
        assert transport is not None
        transport.write(refusal)
        transport.loseConnection()
        self.inner = _REFUSED

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        buffer = self._buffer + data
        if buffer[:1] == b"*":
            if self._allowed(False, DENIED_RESP) and self._admit(TOO_MANY_RESP):
                self._choose(self._resp).dataReceived(buffer)
            return
        magic = wire.MAGIC
        if len(buffer) < len(magic) and magic.startswith(buffer):
            self._buffer = buffer  # could still become a peer handshake
            return
        self._buffer = b""
        if buffer.startswith(magic):
            if self._allowed(True, DENIED_PEER):
                self._choose(self._peer).dataReceived(buffer)
        elif self._allowed(False, DENIED_TEXT) and self._admit(TOO_MANY_TEXT):
            self._choose(self._client).dataReceived(buffer)

    def _allowed(self, peer: bool, refusal: bytes) -> bool:
        """Protected mode: refuse (with ``refusal``) a client or peer from
        another machine when the node says so."""
        factory = self.factory
        if not isinstance(factory, FrontDoorFactory):
            return True
        if not (factory.protect_peers if peer else factory.protect_clients):
            return True
        transport = self.transport
        assert transport is not None
        address = transport.getPeer()
        if is_loopback(address):
            return True
        self._unpend()
        factory.denied += 1
        held = factory.denials_logged.allow()
        if held >= 0:
            log.warn(
                "Protected mode: refused a {kind} connection from {address}{held}; see "
                "--protected-mode",
                kind="peer" if peer else "client", address=getattr(address, "host", "?"),
                held=f" ({held} similar refusals not logged)" if held else "",
            )
        transport.write(refusal)
        transport.loseConnection()
        self.inner = _REFUSED
        return False

    def _admit(self, refusal: bytes) -> bool:
        """Count a new client, or refuse it with ``refusal`` when the node is full."""
        self._unpend()
        factory = self.factory
        if not isinstance(factory, FrontDoorFactory):
            return True
        if factory.clients >= factory.maxclients:
            self._refuse(factory, refusal)
            return False
        factory.clients += 1
        self._counted = True
        return True

    def _choose(self, make: Callable[[], IProtocol]) -> IProtocol:
        self._unpend()
        inner = make()
        self.inner = inner
        transport = self.transport
        assert transport is not None
        if self._counted:
            # The client protocol may become the transport's protocol, and
            # then its connectionLost is what Twisted calls: uncount there.
            _uncount_on_loss(inner, self.factory)
        inner.makeConnection(transport)
        if IHalfCloseableProtocol.providedBy(inner):
            # A client protocol takes over the transport: Twisted then calls it
            # directly (one call less per read), the same calls the door made.
            # A TLS transport calls its wrappedProtocol instead.
            if getattr(transport, "protocol", None) is self:
                transport.protocol = inner  # type: ignore[attr-defined]
            elif getattr(transport, "wrappedProtocol", None) is self:
                transport.wrappedProtocol = inner  # type: ignore[attr-defined]
        return inner

    def readConnectionLost(self) -> None:
        if self.inner is None:
            if not (self._allowed(False, DENIED_TEXT) and self._admit(TOO_MANY_TEXT)):
                return
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
        self._unpend()
        if self.inner is not None:
            self.inner.connectionLost(reason)
        else:
            early = getattr(self.factory, "on_early_loss", None)
            if early is not None:
                early(self.transport, reason)


class FrontDoorFactory(Factory):
    """Builds a front door per connection."""

    noisy = False

    def __init__(
        self,
        client: Callable[[], IProtocol],
        peer: Callable[[], IProtocol],
        resp: Optional[Callable[[], IProtocol]] = None,
        maxclients: int = MAXCLIENTS,
        protect_clients: bool = False,
        protect_peers: bool = False,
    ) -> None:
        self._client = client
        self._peer = peer
        self._resp = resp
        #: The most clients served at once; peers are not counted.
        self.maxclients = maxclients
        #: Clients connected now, connections not yet known to be clients
        #: or peers, and connections refused since the start.
        self.clients = 0
        self.pending = 0
        self.refused = 0
        #: Protected mode: refuse clients, and peers, from other machines.
        self.protect_clients = protect_clients
        self.protect_peers = protect_peers
        #: Connections protected mode refused since the start.
        self.denied = 0
        self.denials_logged = RateLimit(time.monotonic)
        #: Told of a connection lost before its first bytes chose a protocol,
        #: with the reason (a TLS listener's failed handshakes end so).
        self.on_early_loss: Optional[Callable[[Any, Failure], None]] = None

    def startFactory(self) -> None:
        self.maxclients = raise_open_files(self.maxclients)

    def buildProtocol(self, addr: Optional[IAddress]) -> FrontDoor:
        door = FrontDoor(self._client, self._peer, self._resp)
        door.factory = self
        return door


class _Refused(Protocol):
    """What a refused connection's bytes go to until it closes: nowhere."""

    def dataReceived(self, data: bytes) -> None:
        pass


_REFUSED = _Refused()


def _uncount_on_loss(inner: IProtocol, factory: Any) -> None:
    lost = inner.connectionLost

    def connectionLost(reason: Failure = connectionDone) -> None:
        factory.clients -= 1
        lost(reason)

    inner.connectionLost = connectionLost  # type: ignore[method-assign]


def raise_open_files(maxclients: int) -> int:
    """Raise the soft limit on open files to what ``maxclients`` clients need
    (up to the hard limit), as Redis does at start; return how many clients
    the limit got allows."""
    wanted = maxclients + RESERVED_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return maxclients
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        log.info("Open files limit {soft}: enough for maxclients {maxclients}",
                 soft=soft, maxclients=maxclients)
        return maxclients
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (OSError, ValueError) as e:
        log.warn("Cannot raise the open files limit from {soft} to {target}: {why}",
                 soft=soft, target=target, why=str(e))
    if soft >= wanted:
        log.info("Raised the open files limit to {soft} for maxclients {maxclients}",
                 soft=soft, maxclients=maxclients)
        return maxclients
    allowed = max(1, soft - RESERVED_FILES)
    log.warn(
        "Open files limit is {soft} (hard limit {hard}): maxclients lowered from "
        "{maxclients} to {allowed}; raise it with ulimit -n",
        soft=soft, hard=hard, maxclients=maxclients, allowed=allowed,
    )
    return allowed
