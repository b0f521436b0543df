"""One DistKV node: its identity, store, clock, command layer and replication.

:class:`Node` puts the pieces together around an injected reactor, so the same
node runs under ``twistd`` on the real reactor and inside a test on a fake
clock. It decides which peer entries are this node itself, answers peer
handshakes, and reports its state for the STATUS command.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, List, Optional, Union

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from distkv import wire
from distkv.antientropy import answer_offer
from distkv.commands import Dispatcher
from distkv.frontdoor import FrontDoorFactory
from distkv.hlc import HybridClock
from distkv.peerproto import ApplyProtocol, Refusal
from distkv.peers import PeerLink, Replication
from distkv.store import Store
from distkv.textproto import TextProtocol

log = Logger()

#: Host names that mean "this machine" in a peer list.
LOCAL_HOSTS = frozenset(["127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""])

#: Bytes a peer frame may add around the largest request a client may send.
FRAME_OVERHEAD = 4096


class Listener(StreamServerEndpointService):
    """The client-and-peer port; a port that cannot be opened stops the node plainly."""

    def privilegedStartService(self) -> None:
        self._raiseSynchronously = True
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            log.critical("Cannot listen for clients and peers: {why}", why=e)
            raise SystemExit(1) from None


def new_node_id() -> str:
    return "n" + uuid.uuid4().hex[:11]


class Node:
    """A DistKV node, wired around ``reactor``.

    ``now_ms`` overrides the wall clock (tests use it to skew one node).
    """

    def __init__(
        self,
        reactor: Any,
        node_id: Optional[str] = None,
        *,
        listen_port: Optional[int] = None,
        max_request: int = 1 << 20,
        outbox_bytes: int = 64 << 20,
        max_clock_skew: float = 60.0,
        heartbeat: float = 5.0,
        flush_timeout: float = 2.0,
        sync_interval: float = 60.0,
        now_ms: Optional[Callable[[], int]] = None,
    ) -> None:
        self.reactor = reactor
        self.node_id = node_id or new_node_id()
        self.incarnation = uuid.uuid4().hex[:16]
        self.listen_port = listen_port
        self.max_request = max_request
        self.hello = wire.Hello(self.node_id, self.incarnation)
        if now_ms is None:
            now_ms = self._wall_ms
        self.clock = HybridClock(self.node_id, now_ms, int(max_clock_skew * 1000))
        self.store = Store(self.clock)
        self.replication = Replication(
            self.store,
            self.hello,
            reactor,
            outbox_bytes,
            heartbeat=heartbeat,
            flush_timeout=flush_timeout,
            sync_interval=sync_interval,
            max_frame=max_request + FRAME_OVERHEAD,
        )
        self.dispatcher = Dispatcher(self.store, self.status_lines)
        #: node id -> when its last anti-entropy round into us completed
        self.synced_from: Dict[str, float] = {}

    def _wall_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def add_peer(self, host: str, port: int) -> Optional[PeerLink]:
        """Link to a peer, unless the address is plainly this node's own."""
        if port == self.listen_port and host in LOCAL_HOSTS:
            log.info("Skipping peer {host}:{port}: it is this node", host=host, port=port)
            return None
        return self.replication.add_peer(host, port)

    def factory(self) -> FrontDoorFactory:
        """The factory for the shared client-and-peer port."""
        return FrontDoorFactory(self._client_protocol, self._peer_protocol)

    def _client_protocol(self) -> TextProtocol:
        return TextProtocol(self.dispatcher, self.max_request)

    def _peer_protocol(self) -> ApplyProtocol:
        return ApplyProtocol(
            self._vet,
            self.store.apply,
            self._answer_offer,
            self._synced_from,
            self.max_request + FRAME_OVERHEAD,
        )

    def _answer_offer(self, offer: wire.DigestOffer) -> bytes:
        return answer_offer(self.store, offer)

    def _synced_from(self, peer: wire.Hello) -> None:
        self.synced_from[peer.node] = self.reactor.seconds()

    def _vet(self, caller: wire.Hello) -> Union[wire.Hello, Refusal]:
        if caller.node == self.node_id:
            if caller.incarnation == self.incarnation:
                return ("self", "this is the connecting node itself")
            log.error(
                "A peer connected with our own node id {node}; refusing it",
                node=caller.node,
            )
            return ("duplicate-node-id", f"node id {caller.node} is already in use")
        return self.hello

    def status_lines(self) -> List[str]:
        store = self.store
        lines = [
            f"node {self.node_id}",
            f"incarnation {self.incarnation}",
            f"keys {len(store)}",
            f"tombstones {store.tombstones}",
            f"refused_future_versions {self.clock.refused}",
            "synced_from {}".format(",".join(sorted(self.synced_from)) or "-"),
        ]
        lines.extend(link.status() for link in self.replication.links.values())
        return lines

    def service(self, endpoint: str) -> MultiService:
        """The node as a service listening on the server endpoint ``endpoint``."""
        top = MultiService()
        # Started first and stopped last: the listener stops taking clients
        # while replication still gets its moment to flush.
        self.replication.setServiceParent(top)
        Listener(serverFromString(self.reactor, endpoint), self.factory()).setServiceParent(top)
        return top
