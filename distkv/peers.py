"""Links to peers: one reconnecting client factory per peer, in one Service.

A :class:`PeerLink` owns a peer's :class:`~distkv.outbox.Outbox` and the
connection that drains it. It reconnects with exponential backoff and jitter
(``ReconnectingClientFactory``), resumes from the first unacknowledged write on
every new connection, recognises itself when a peer list names this very node,
refuses a second node using our id, and marks the peer for a full resync when
its outbox overflowed or the peer came back as a new incarnation (having lost
what it had). While a link is up it runs anti-entropy rounds (see
:mod:`distkv.antientropy`): when it comes up (once the peer has acknowledged
the backlog the outbox resends, if there is one, so that the backlog is not
sent twice), every ``sync_interval`` seconds, and whenever
a resync is needed; a round that completes with no overflow in the
meantime clears the resync mark. :class:`Replication` subscribes to the store and fans every
local write out to every link; writes that arrived from peers are never sent
on, since each node pushes its own writes to everyone.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv import wire
from distkv.antientropy import Round
from distkv.hlc import Version
from distkv.outbox import Outbox
from distkv.peerproto import PushProtocol
from distkv.store import ZERO, Entry, Store, version_of

log = Logger()


class PeerLink(ReconnectingClientFactory):
    """The outgoing link to one peer and its outbox."""

    noisy = False
    initialDelay = 0.2
    factor = 2.0
    maxDelay = 10

    def __init__(
        self,
        host: str,
        port: int,
        local: wire.Hello,
        reactor: IReactorTime,
        outbox: Outbox,
        heartbeat: float,
        store: Store,
        sync_interval: float,
        max_frame: int,
    ) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.local = local
        self.clock = reactor  # type: ignore[assignment]
        self._reactor = reactor
        self.outbox = outbox
        self._heartbeat = heartbeat
        self._store = store
        self.sync_interval = sync_interval
        self._max_frame = max_frame
        self._sync_loop: Optional[LoopingCall] = None
        self._round: Optional[Round] = None
        self._rounds_started = 0
        self._round_overflows = 0
        self.rounds_completed = 0
        self.resyncs = 0
        self.last_round_sent = 0
        self._protocol: Optional[PushProtocol] = None
        self.remote: Optional[wire.Hello] = None
        self.is_self = False
        self.refusal: Optional[Tuple[str, str]] = None
        self._drain_waiters: List[Deferred[None]] = []
        self._pump_call: Optional[IDelayedCall] = None
        #: Told after every acknowledgement (the journal saves it).
        self.on_acked: Optional[Callable[[PeerLink], None]] = None
        #: Told when the address turns out to be this very node.
        self.on_self: Optional[Callable[[PeerLink], None]] = None
        #: Told when the peer's address answers as a different node: (old, new).
        self.on_new_node: Optional[Callable[[str, str], None]] = None
        #: Our own low (see :mod:`distkv.stability`), sent with each heartbeat.
        self.our_low: Callable[[], Version] = lambda: ZERO
        # Whether a full round has shown the peer everything we hold since it
        # came up as its present incarnation; until then we vouch for nothing.
        self._proven = False
        # The link-up round waits until the peer acknowledged this write: the
        # backlog the outbox resends would otherwise be sent twice. Owed is
        # kept across links: a link that drops before its deferred round ran
        # runs one at once next time, so a flapping link still gets rounds.
        self._round_after: Optional[int] = None
        self._round_owed = False

    @property
    def up(self) -> bool:
        return self._protocol is not None

    def buildProtocol(self, addr: Optional[IAddress]) -> PushProtocol:
        proto = PushProtocol(self, self._reactor, self._heartbeat, self._max_frame)
        proto.factory = self  # type: ignore[assignment]
        return proto

    def linked(self, proto: PushProtocol, remote: wire.Hello) -> bool:
        """The peer accepted our handshake; False when we must hang up."""
        if remote.node == self.local.node:
            if remote.incarnation == self.local.incarnation:
                log.info("Peer {peer} is this node itself; skipping it", peer=self.name)
                self._found_self()
            else:
                log.error(
                    "Peer {peer} uses our node id {node}; refusing to link",
                    peer=self.name,
                    node=remote.node,
                )
                self.refusal = ("duplicate-node-id", remote.node)
            return False
        previous = self.remote
        if previous is not None and previous.node != remote.node:
            log.warn(
                "Peer {peer} is now node {node} (was {old})",
                peer=self.name,
                node=remote.node,
                old=previous.node,
            )
            if self.on_new_node is not None:
                self.on_new_node(previous.node, remote.node)
        if previous is not None and previous != remote:
            self.mark_resync("it restarted as a new incarnation")
        if previous != remote:
            self._proven = False
        self.remote = remote
        self.refusal = None
        self.resetDelay()
        self._protocol = proto
        self.outbox.rewind()
        log.info(
            "Peer {peer} ({node}) is up; {pending} writes to resend",
            peer=self.name,
            node=remote.node,
            pending=len(self.outbox),
        )
        self.pump()
        loop = LoopingCall(self._sync_tick)
        loop.clock = self._reactor
        self._sync_loop = loop
        loop.start(self.sync_interval, now=False)
        if len(self.outbox) and not self._round_owed:
            # The round would find the resent backlog's keys differing and send
            # them too: run it once the peer has applied that backlog (a peer
            # back empty, which needs a full resync, gets the rest from it then).
            self._round_after = self.outbox.last_seq
            self._round_owed = True
        else:
            self._round_after = None
            self._sync_tick()
        return True

    def refused(self, refusal: Tuple[str, str]) -> None:
        code, message = refusal
        if code == "self":
            log.info("Peer {peer} is this node itself; skipping it", peer=self.name)
            self._found_self()
            return
        self.refusal = refusal
        log.error(
            "Peer {peer} refused our link: {code} {message}",
            peer=self.name,
            code=code,
            message=message,
        )

    def _cancel_pump(self) -> None:
        call, self._pump_call = self._pump_call, None
        if call is not None and call.active():
            call.cancel()

    def _found_self(self) -> None:
        self.is_self = True
        self.stopTrying()
        self.outbox.overflow()  # nothing to hold for ourselves
        self.outbox.needs_resync = False
        if self.on_self is not None:
            self.on_self(self)

    def unlinked(self, proto: PushProtocol) -> None:
        if self._protocol is proto:
            self._protocol = None
            self._round = None
            self._round_after = None
            self._cancel_pump()
            if self._sync_loop is not None and self._sync_loop.running:
                self._sync_loop.stop()
            self._sync_loop = None
            self.outbox.disconnect()
            log.info(
                "Peer {peer} is down; {pending} writes held for it",
                peer=self.name,
                pending=len(self.outbox),
            )

    def mark_resync(self, why: str, already: Optional[bool] = None) -> None:
        """Flag the peer for a full resync; count and log it unless one was
        already pending (``already``: whether it was, when the caller's own
        step, such as an outbox overflow, has set the flag by now)."""
        if already is None:
            already = self.outbox.needs_resync
        if not already:
            self.resyncs += 1
            log.warn("Peer {peer} needs a full resync: {why}", peer=self.name, why=why)
        self.outbox.needs_resync = True
        if self._protocol is not None and self._round is None:
            self._reactor.callLater(0, self._sync_tick)  # type: ignore[attr-defined]

    def _sync_tick(self) -> None:
        try:
            if self._protocol is not None and self._round is None:
                self._round_after = None
                self._round_owed = False
                self._rounds_started += 1
                self._round = Round(self._store, self._rounds_started)
                self._round_overflows = self.outbox.overflows
                self._protocol.send(self._round.offer())
        except Exception:
            log.failure("Anti-entropy round with {peer} failed to start", peer=self.name)

    def key_list(self, frame: wire.KeyList) -> None:
        if self._round is not None and frame.round == self._round.number:
            self._round.key_list(frame)

    def keys_done(self, number: int, horizon: Optional[Version] = None) -> None:
        if self._round is not None and number == self._round.number and self._protocol:
            self._protocol.send(self._round.keys_done(horizon))
            if self._round.dropped:
                log.warn(
                    "Dropped {count} keys that peer {peer} deleted and purged long ago",
                    count=self._round.dropped,
                    peer=self.name,
                )

    def round_applied(self, number: int) -> None:
        """The peer applied everything our round sent it."""
        current = self._round
        if current is None or number != current.number:
            return
        self._round = None
        self.rounds_completed += 1
        self.last_round_sent = current.sent
        if self.outbox.overflows == self._round_overflows:
            self._proven = True
        if self.outbox.needs_resync:
            if self.outbox.overflows == self._round_overflows:
                self.outbox.needs_resync = False
                log.info(
                    "Resync of peer {peer} complete: {sent} entries sent",
                    peer=self.name,
                    sent=current.sent,
                )
            else:
                self._reactor.callLater(0, self._sync_tick)  # type: ignore[attr-defined]

    def send(self, seq: int, key: bytes, entry: Entry) -> None:
        """Queue local write ``seq`` for this peer and send it if the link allows."""
        outbox = self.outbox
        overflows = outbox.overflows
        already = outbox.needs_resync
        outbox.add(seq, key, entry)
        if outbox.overflows != overflows:  # the outbox set needs_resync itself
            self.mark_resync(f"its outbox passed {outbox.max_bytes} bytes", already)
        if self._protocol is not None and self._pump_call is None:
            # One frame batch per reactor turn, however many writes it holds.
            self._pump_call = self._reactor.callLater(0, self._scheduled_pump)  # type: ignore[attr-defined]

    def _scheduled_pump(self) -> None:
        self._pump_call = None
        self.pump()

    def pump(self) -> None:
        proto = self._protocol
        if proto is None:
            return
        batch = self.outbox.take()
        if batch:
            proto.send(b"".join([wire.encode_write(*item) for item in batch]))

    def floor(self) -> Version:
        """Every write of ours below this version has been applied by the peer.

        Zero until a full round has run since the peer came up as this
        incarnation, and while a resync is pending: then we cannot vouch.
        """
        outbox = self.outbox
        if not self._proven or outbox.needs_resync:
            return ZERO
        oldest = outbox.oldest()
        return version_of(oldest) if oldest is not None else self._store.clock.now()

    def heartbeat(self) -> bytes:
        return wire.encode_heartbeat(self.floor(), self.our_low())

    def acked(self, seq: int) -> None:
        self.outbox.ack(seq)
        if self.on_acked is not None:
            self.on_acked(self)
        self.pump()
        if self._round_after is not None and seq >= self._round_after:
            self._round_after = None
            self._sync_tick()
        if self._drain_waiters and self.outbox.drained():
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires once the peer has acknowledged everything queued so far."""
        if self.outbox.drained() or self.is_self:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def retry_now(self) -> None:
        """Reconnect at once if waiting out a backoff delay."""
        retry = self._callID
        if retry is not None and retry.active():
            self.resetDelay()
            retry.reset(0)

    def flush(self) -> Deferred[None]:
        """Fires once the peer has acknowledged everything; a link waiting out
        its backoff tries again at once, since the node is about to stop."""
        if not self.up and not self.outbox.drained():
            self.retry_now()
        return self.drained()

    def close(self) -> None:
        """Stop reconnecting and hang up."""
        self.stopTrying()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        log.debug("Cannot reach peer {peer}: {why}", peer=self.name, why=reason.value)
        super().clientConnectionFailed(connector, reason)

    def status(self) -> str:
        outbox = self.outbox
        return (
            "peer {} node={} link={} outbox_writes={} outbox_bytes={} acked_seq={} "
            "resync={} resyncs={} sync={} sync_rounds={} last_sync_sent={} floor={}{}"
        ).format(
            self.name,
            self.remote.node if self.remote else "-",
            "self" if self.is_self else ("up" if self.up else "down"),
            len(outbox),
            outbox.bytes,
            outbox.acked,
            "needed" if outbox.needs_resync else "no",
            self.resyncs,
            "running" if self._round is not None else (
                "waiting" if self._round_after is not None else "idle"
            ),
            self.rounds_completed,
            self.last_round_sent,
            self.floor() if self._proven else "-",
            f" refused={self.refusal[0]}" if self.refusal else "",
        )


class Replication(Service):
    """Keeps a link to every peer and pushes every local write to each."""

    name = "replication"

    def __init__(
        self,
        store: Store,
        local: wire.Hello,
        reactor: IReactorTCP,
        outbox_bytes: int,
        heartbeat: float = 5.0,
        flush_timeout: float = 2.0,
        sync_interval: float = 60.0,
        max_frame: int = 1 << 24,
    ) -> None:
        self.local = local
        self._store = store
        self._sync_interval = sync_interval
        self._max_frame = max_frame
        self._reactor = reactor
        self._outbox_bytes = outbox_bytes
        self._heartbeat = heartbeat
        self._flush_timeout = flush_timeout
        self.links: Dict[Tuple[str, int], PeerLink] = {}
        self._connectors: List[IConnector] = []

    def add_peer(self, host: str, port: int) -> PeerLink:
        key = (host, port)
        link = self.links.get(key)
        if link is None:
            link = PeerLink(
                host,
                port,
                self.local,
                self._reactor,  # type: ignore[arg-type]
                Outbox(self._outbox_bytes),
                self._heartbeat,
                self._store,
                self._sync_interval,
                self._max_frame,
            )
            if not self.links:  # a node without peers has nothing to fan out
                self._store.subscribe(self._changed)
            self.links[key] = link
            if self.running:
                self._connect(link)
        return link

    def _connect(self, link: PeerLink) -> None:
        self._connectors.append(
            self._reactor.connectTCP(link.host, link.port, link, timeout=5)
        )

    def _changed(self, key: bytes, entry: Entry, seq: int) -> None:
        if seq:  # our own write, not one merged from a peer
            for link in self.links.values():
                link.send(seq, key, entry)

    def startService(self) -> None:
        super().startService()
        for link in self.links.values():
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
