"""The node's links to its peers, in one Service: who is who, and fan-out.

:class:`Replication` keeps one :class:`~distkv.cluster.peers.PeerLink` per peer node and
hands every local write to each (the writes of one transaction together, as
one frame); writes that arrived from peers are never
sent on, since each node pushes its own writes to everyone. Links for the
addresses in the peer list dial them. A node that calls us is matched to a
link by its node id, or else by its place (its address and the port it says
it listens on), so a node that came back there under a new id replaces the
old one instead of lingering as a member that never answers; a caller that
matches no link gets one that pushes over the connections it makes. When a
dialling link finds that its address is a node that already has such a link,
the two become one. Given a TLS context (``tls``, see
:mod:`distkv.cluster.tlsconfig`), links dial over TLS with it, and only so.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IConnector, IDelayedCall, IReactorSSL, IReactorTCP
from twisted.logger import Logger

from distkv.cluster import wire
from distkv.cluster.outbox import Outbox
from distkv.cluster.outboxlog import OutboxLog, entry_size
from distkv.cluster.peerproto import PeerConnection, PeerHost
from distkv.cluster.peers import PeerLink
from distkv.store.entries import Entry
from distkv.store.store import Store

log = Logger()

#: Host names that mean "this machine" in a peer list.
LOCAL_HOSTS = frozenset(["127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""])

#: How links are keyed: the address a link dials, or for a link that only
#: answers, the caller's address and listening port (or node id, when the
#: caller named no port).
Place = Tuple[str, Optional[int]]


def same_host(a: str, b: str) -> bool:
    return a == b or (a in LOCAL_HOSTS and b in LOCAL_HOSTS)


class Replication(Service):
    """Keeps a link to every peer and pushes every local write to each."""

    name = "replication"

    def __init__(
        self,
        store: Store,
        local: wire.Greeting,
        reactor: IReactorTCP,
        outbox_bytes: int,
        heartbeat: float = 5.0,
        flush_timeout: float = 2.0,
        sync_interval: float = 60.0,
        max_frame: int = 1 << 24,
        peer_host: Optional[PeerHost] = None,
        tls: Optional[Any] = None,
    ) -> None:
        self.local = local
        self._tls = tls
        self._store = store
        self._sync_interval = sync_interval
        self._max_frame = max_frame
        self._reactor = reactor
        self._outbox_bytes = outbox_bytes
        self._heartbeat = heartbeat
        self._flush_timeout = flush_timeout
        self._peer_host = peer_host
        self.links: Dict[Place, PeerLink] = {}
        #: Every local write the links still owe their peers, once: each
        #: link's outbox is a cursor into it (see :mod:`distkv.cluster.outbox`).
        self.outbox_log = OutboxLog(outbox_bytes)
        self._subscribed = False
        self._connectors: List[IConnector] = []
        self._pump_call: Optional[IDelayedCall] = None
        #: Told of every new link, so the node can hook it up.
        self.on_new_link: Callable[[PeerLink], None] = lambda link: None
        #: Told of a link closed for good (see :meth:`drop`).
        self.on_dropped: Callable[[PeerLink], None] = lambda link: None
        #: Told when a connection with a peer came up (see PeerLink.on_linked).
        self.on_linked: Callable[[PeerLink, wire.Hello, Optional[wire.Accept]], None] = (
            lambda link, remote, accept: None
        )

    def add_peer(self, host: str, port: int) -> PeerLink:
        """The link that dials ``host:port`` (made if need be)."""
        link = self.links.get((host, port))
        if link is None:
            link = self._new_link((host, port), host, port, dials=True)
            if self.running:
                self._connect(link)
        elif not link.dials:  # a node that called us, listed or learned of since
            link.dials = True
            if self.running:
                self._connect(link)
        return link

    def _new_link(self, place: Place, host: str, port: Optional[int], dials: bool) -> PeerLink:
        link = PeerLink(
            host,
            port,
            self.local,
            self._reactor,  # type: ignore[arg-type]
            Outbox(self._outbox_bytes, log=self.outbox_log),
            self._heartbeat,
            self._store,
            self._sync_interval,
            self._max_frame,
            self._peer_host,
            dials,
        )
        if not self._subscribed:  # a node without peers has nothing to fan out
            # Once, ever: links can all be dropped (removed members) and come
            # again, and a second subscription would send every write twice.
            self._subscribed = True
            self._store.subscribe(self._changed)
            self._store.on_group(self._group)
        self.links[place] = link
        link.on_linked = self._linked
        self.on_new_link(link)
        return link

    def accepted(self, proto: PeerConnection, caller: wire.Greeting, host: str) -> None:
        """A peer called us: the link for that node pushes over the connection."""
        node = caller.hello.node
        link = self._by_node(node)
        if link is None and caller.port is not None:
            link = self._at(host, caller.port)
        if link is None:
            place: Place = (host, caller.port) if caller.port is not None else (node, None)
            link = self._new_link(place, host, caller.port, dials=False)
        link.linked(proto, caller.hello)

    def _by_node(self, node: str) -> Optional[PeerLink]:
        found = None
        for link in self.links.values():
            if link.remote is not None and link.remote.node == node and not link.is_self:
                if link.dials:
                    return link
                found = link
        return found

    def _at(self, host: str, port: int) -> Optional[PeerLink]:
        for link in self.links.values():
            if link.port == port and same_host(link.host, host) and not link.is_self:
                return link
        return None

    def _linked(self, link: PeerLink, remote: wire.Hello, accept: Optional[wire.Accept]) -> None:
        if link.dials:
            # A link that only answered this node is not needed any more.
            for place, other in list(self.links.items()):
                if (other is not link and not other.dials and other.remote is not None
                        and other.remote.node == remote.node):
                    other.hand_over(link)
                    other.outbox.detach()
                    del self.links[place]
        self.on_linked(link, remote, accept)

    def drop(self, link: PeerLink) -> None:
        """Close ``link`` for good and forget it (its node was removed)."""
        link.close()
        link.outbox.detach()
        for place, other in list(self.links.items()):
            if other is link:
                del self.links[place]
        self.on_dropped(link)

    def _connect(self, link: PeerLink) -> None:
        assert link.port is not None
        if self._tls is not None:
            reactor = cast(IReactorSSL, self._reactor)
            connector = reactor.connectSSL(link.host, link.port, link, self._tls, 5, None)
        else:
            connector = self._reactor.connectTCP(link.host, link.port, link, timeout=5)
        self._connectors.append(connector)

    def _changed(self, key: bytes, entry: Entry, seq: int) -> None:
        if seq:  # our own write, not one merged from a peer
            if self._store.group is not None:
                return  # a transaction's: sent whole by _group
            # Encoded, sized and queued once for every link, not once per
            # link; and one call in the next reactor turn pumps every link.
            self.outbox_log.add(seq, key, entry, wire.encode_write(seq, key, entry),
                                entry_size(key, entry))
            if self._pump_call is None:
                self._pump_soon()
        else:  # merged: every peer may lack it until a round (see PeerLink.floor)
            # The entry's version fields, compared as they are: a Version is
            # made only when one lowers a link's floor (rarely: merged writes
            # are mostly newer than the last round's cut).
            tail = entry[-3:]
            for link in self.links.values():
                link.merged(tail)

    def _pump_soon(self) -> None:
        self._pump_call = self._reactor.callLater(0, self._pump_all)  # type: ignore[attr-defined]

    def _pump_all(self) -> None:
        """Every link sends what its outbox lets go: the writes of one turn
        travel as one frame batch per link."""
        self._pump_call = None
        for link in list(self.links.values()):
            link.pump()

    def _group(self, writes: List[Tuple[int, bytes, Entry]]) -> None:
        """A transaction's writes: to every peer as one frame (a key written
        twice in it travels once, at its last entry)."""
        latest: Dict[bytes, Entry] = {}
        for _, key, entry in writes:
            latest.pop(key, None)
            latest[key] = entry
        last = writes[-1][0]
        items = list(latest.items())
        if wire.transaction_size(items) > self._max_frame:
            # EXEC bounds what a transaction queues so that this cannot
            # happen; a command whose stored value outgrows its arguments
            # could still get here: its writes go one by one (not atomic
            # on peers) rather than in a frame peers would refuse.
            log.warn("A transaction of {count} writes is too large for one peer frame; "
                     "replicating its writes one by one", count=len(items))
            for seq, key, entry in writes:
                self.outbox_log.add(seq, key, entry)
        else:
            self.outbox_log.add_group(last, items)
        if self._pump_call is None:
            self._pump_soon()

    def startService(self) -> None:
        super().startService()
        for link in self.links.values():
            if link.dials:
                self._connect(link)

    def stopService(self) -> Deferred[object]:
        """Give links a moment to flush what they hold, then hang up."""
        super().stopService()
        waiting = [link.flush() for link in self.links.values()]
        done: Deferred[object] = DeferredList(waiting)  # type: ignore[assignment]
        timer = self._reactor.callLater(  # type: ignore[attr-defined]
            self._flush_timeout, self._close_links
        )

        def hang_up(result: object) -> object:
            if timer.active():
                timer.cancel()
            self._close_links()
            return result

        return done.addBoth(hang_up)

    def _close_links(self) -> None:
        for link in self.links.values():
            link.close()
