"""Links to peers: one per peer node, in one Service.

A :class:`PeerLink` owns a peer's :class:`~distkv.cluster.outbox.Outbox` and pushes it
over a connection to that peer: the one it dialled, or one the peer dialled
to us, whichever came last and is still up (a link fails over to another live
connection when its own drops). A link for an address in our peer list dials
it and reconnects with exponential backoff and jitter
(``ReconnectingClientFactory``); a node that calls us without being listed
gets a link that only pushes over the connections it makes, so writes flow
both ways whoever dialled. A link resumes from the first unacknowledged write
on every new connection, recognises itself when a peer list names this very node,
refuses a second node using our id, and marks the peer for a full resync when
its outbox overflowed or the peer came back as a new incarnation (having lost
what it had). While a link is up it runs anti-entropy rounds (see
:mod:`distkv.cluster.antientropy`): when it comes up (once the peer has acknowledged
the backlog the outbox resends, if there is one, so that the backlog is not
sent twice), every ``sync_interval`` seconds, and whenever a resync is
needed; a round that completes with no overflow in the meantime clears the
resync mark. :mod:`distkv.cluster.replication` holds the links and fans writes out.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IReactorTime,
)
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv.cluster import wire
from distkv.cluster.antientropy import Round
from distkv.cluster.outbox import Outbox
from distkv.cluster.peerproto import Dialer, PeerConnection, PeerHost
from distkv.ratelog import RateLimit
from distkv.store.entries import ZERO, Entry, version_of
from distkv.store.hlc import Version
from distkv.store.store import Store

log = Logger()

#: Seconds between two lines about one peer that cannot be reached or refuses us.
FAILURE_LOG_INTERVAL = 60.0

#: Round numbers, unique across the process's links: after ``hand_over`` a
#: link may answer on a connection another link ran a round over, and that
#: round's end must not pass for its own round's.
_round_numbers = itertools.count(1)


class PeerLink(ReconnectingClientFactory):
    """The link to one peer and its outbox; ``dials``: whether it connects
    to ``host:port`` itself, or only pushes over connections the peer made."""

    noisy = False
    initialDelay = 0.2
    factor = 2.0
    maxDelay = 10

    def __init__(
        self,
        host: str,
        port: Optional[int],
        local: wire.Greeting,
        reactor: IReactorTime,
        outbox: Outbox,
        heartbeat: float,
        store: Store,
        sync_interval: float,
        max_frame: int,
        peer_host: Optional[PeerHost] = None,
        dials: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}" if port is not None else host
        self.greeting = local
        self.local = local.hello
        self.dials = dials
        self._peer_host = peer_host
        self.clock = reactor  # type: ignore[assignment]
        self._reactor = reactor
        #: A peer that stays unreachable, or keeps refusing us, is retried
        #: every few seconds: one log line a minute says so, with a count.
        self._failures_logged = RateLimit(reactor.seconds, FAILURE_LOG_INTERVAL)
        #: What the last failure let through was: "unreachable" or a refusal's code.
        self._failure_kind = ""
        self.outbox = outbox
        outbox.on_overflow = self._overflowed
        self._heartbeat = heartbeat
        self._store = store
        self.sync_interval = sync_interval
        self._max_frame = max_frame
        self._sync_loop: Optional[LoopingCall] = None
        self._round: Optional[Round] = None
        self._round_heard = 0.0  # when the running round last heard from the peer
        self._round_streaming = False  # its entries are still being written
        # Whether our last round's end said we load, or cannot tell our members.
        self._told_stale = False
        self._round_again = False
        #: Told once a round has our own entries to send: the peer's horizon
        #: has dropped what it deleted and purged (see Round.newer).
        self.on_round_cut: Optional[Callable[[PeerLink], None]] = None
        self._rounds_started = 0
        self._round_overflows = 0
        self._round_cuts = 0
        self._round_through = 0
        self.rounds_completed = 0
        self.resyncs = 0
        self.last_round_sent = 0
        #: Entries our completed rounds sent the peer, in all.
        self.round_entries_sent = 0
        # The connection the outbox and rounds go over, and every live
        # connection with the peer (it may fail over to another).
        self._protocol: Optional[PeerConnection] = None
        self._connections: List[PeerConnection] = []
        self.remote: Optional[wire.Hello] = None
        #: The node the member list says answers at this address, if known.
        self.expect: Optional[str] = None
        #: Made for an address the member list gave, not the peer list.
        self.learned = False
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
        #: Told when a connection came up with the peer ``remote`` (the
        #: accepting side's answer, when we dialled).
        self.on_linked: Optional[Callable[[PeerLink, wire.Hello, Optional[wire.Accept]], None]] = None
        #: Our own low (see :mod:`distkv.cluster.stability`), sent with each heartbeat.
        self.our_low: Callable[[], Version] = lambda: ZERO
        #: Whether this node serves, and the members it knows (None while it
        #: cannot tell): our rounds say both (see :mod:`distkv.cluster.wire`).
        self.serving: Callable[[], bool] = lambda: True
        self.members: Callable[[], Optional[List[str]]] = lambda: None
        # Whether a full round has shown the peer everything we hold since it
        # came up as its present incarnation; until then we vouch for nothing.
        self._proven = False
        # Every entry we hold below this, whoever wrote it, the peer holds too
        # (or a newer version of its key): our clock when the last completed
        # round took its digest, lowered by every write we merged since (it
        # may have reached us and not the peer). See floor().
        self._held_floor = ZERO
        self._round_cut: Optional[Version] = None
        self._merged_since_cut: Optional[Version] = None
        # The link-up round waits until the peer acknowledged this write: the
        # backlog the outbox resends would otherwise be sent twice. Owed is
        # kept across links: a link that drops before its deferred round ran
        # runs one at once next time, so a flapping link still gets rounds.
        self._round_after: Optional[int] = None
        self._round_owed = False

    @property
    def up(self) -> bool:
        return self._protocol is not None

    def buildProtocol(self, addr: Optional[IAddress]) -> Dialer:
        assert self._peer_host is not None, "a link that dials needs its node"
        proto = Dialer(self, self._peer_host, self._reactor, self._heartbeat, self._max_frame)
        proto.factory = self  # type: ignore[assignment]
        return proto

    def linked(self, proto: PeerConnection, remote: wire.Hello,
               accept: Optional[wire.Accept] = None) -> bool:
        """A connection with the peer is up (``accept``: its answer, when we
        dialled); the link pushes over it unless it pushes over another. False
        when the peer is this node itself or uses our id: hang up."""
        if remote.node == self.local.node:
            if remote.incarnation == self.local.incarnation:
                log.info("Peer {peer} is this node itself; skipping it", peer=self.name)
                self._found_self()
            else:
                if self._failures_logged.allow() >= 0:  # it is dialled again and again
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
            # It may hold none of our writes (back empty, or another node),
            # and on a first link since we started we cannot tell.
            self.outbox.lost()
            self._proven = False
            self._held_floor = ZERO
            # Connections with the node's previous incarnation (or another
            # process that used its id) are hung up: left open, they would
            # answer heartbeats and keep the link from ever dialling again.
            for old in self._connections:
                old.link = None
                if old.transport is not None:
                    old.transport.loseConnection()
            self._connections = []
            self._stop_pushing()
        self.remote = remote
        self.refusal = None
        if isinstance(proto, Dialer):
            self.resetDelay()
        self.adopt(proto)
        if self.on_linked is not None:
            self.on_linked(self, remote, accept)
        return True

    def adopt(self, proto: PeerConnection) -> None:
        """Push over ``proto``, a live connection with our peer, unless we push
        over another already: then it is one to fail over to."""
        proto.link = self
        self._connections.append(proto)
        if self._protocol is None:
            self._push_over(proto)

    def connections(self) -> List[PeerConnection]:
        """The live connections with the peer."""
        return list(self._connections)

    def send_all(self, data: bytes) -> None:
        """Write ``data`` on every live connection with the peer (the member
        list goes to both ends of every connection, pushed over or not)."""
        for proto in self._connections:
            proto.send(data)

    def pushes_over(self, proto: PeerConnection) -> bool:
        """Whether ``proto`` carries our outbox and rounds: only its answers
        (acknowledgements, key lists, round marks) are ours to act on."""
        return self._protocol is proto

    def hand_over(self, to: PeerLink) -> None:
        """Give every connection to ``to`` (a link for the same node that dials
        it); this link pushes no more. Its outbox does not go along: writes
        it owes that ``to`` was never given (``to`` was made after them)
        reach the peer in ``to``'s link-up round, and until a round completes
        ``to`` vouches for none of them (see :meth:`Outbox.vouched`)."""
        connections, self._connections = self._connections, []
        self._stop_pushing()
        for proto in connections:
            to.adopt(proto)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _push_over(self, proto: PeerConnection) -> None:
        """Send the outbox, and run rounds, over ``proto`` from now on."""
        self._stop_pushing()
        self._protocol = proto
        self.outbox.rewind()
        log.info(
            "Peer {peer} ({node}) is up; {pending} writes to resend",
            peer=self.name,
            node=proto.name,
            pending=len(self.outbox),
        )
        self.pump()
        loop = LoopingCall(self._scheduled_round)
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

    def _failure_line(self, kind: str) -> int:
        """-1 to hold back a line about a failure of ``kind``, else how many
        were held back before it. A failure of another kind than the last
        one logged is news (a peer that was unreachable now refuses us for
        a reason an operator must fix) and is logged at once."""
        if kind != self._failure_kind:
            self._failure_kind = kind
            self._failures_logged.reset()
        return self._failures_logged.allow()

    def refused(self, refusal: Tuple[str, str]) -> None:
        code, message = refusal
        if code == "self":
            log.info("Peer {peer} is this node itself; skipping it", peer=self.name)
            self._found_self()
            return
        self.refusal = refusal
        if code == "removed":
            self.stopTrying()  # final: see distkv.cluster.membership
        held = self._failure_line(code)
        if held < 0:
            return
        if code == "loading":  # it links once its data dir is read
            log.info("Peer {peer} is reading its data dir; retrying ({held} more failed "
                     "attempts since the last line)", peer=self.name, held=held)
            return
        log.error(
            "Peer {peer} refused our link: {code} {message} ({held} more failed attempts "
            "since the last line)",
            peer=self.name,
            code=code,
            message=message,
            held=held,
        )

    def tls_failed(self, why: str) -> None:
        """A connection we dialled failed TLS (or met TLS we do not speak)."""
        refusal = ("tls", why)
        if self.refusal != refusal:
            log.error("TLS with peer {peer} failed: {why}", peer=self.name, why=why)
        self.refusal = refusal

    def _cancel_pump(self) -> None:
        call, self._pump_call = self._pump_call, None
        if call is not None and call.active():
            call.cancel()

    def _found_self(self) -> None:
        self.is_self = True
        self.stopTrying()
        self.outbox.overflow()  # nothing to hold for ourselves
        self.outbox.needs_resync = False
        self.outbox.detach()
        if self.on_self is not None:
            self.on_self(self)

    def _stop_pushing(self) -> None:
        if self._protocol is None:
            return
        self._protocol = None
        self._round = None
        self._round_after = None
        self._cancel_pump()
        if self._sync_loop is not None and self._sync_loop.running:
            self._sync_loop.stop()
        self._sync_loop = None
        self.outbox.disconnect()

    def unlinked(self, proto: PeerConnection) -> None:
        """A connection with the peer is gone; fail over to another if any."""
        if proto in self._connections:
            self._connections.remove(proto)
        if self._protocol is not proto:
            return
        self._stop_pushing()
        if self._connections:
            self._push_over(self._connections[-1])
            return
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

    def _scheduled_round(self) -> None:
        """Every ``sync_interval``: a round, unless one runs; one that has heard
        nothing back for a whole interval is given up (its answer or its end
        may never come) and a new one starts."""
        current = self._round
        if (current is not None and not self._round_streaming
                and self._reactor.seconds() - self._round_heard >= self.sync_interval):
            log.warn(
                "Anti-entropy round {number} with {peer} heard nothing for {seconds:g}s; "
                "starting another",
                number=current.number,
                peer=self.name,
                seconds=self.sync_interval,
            )
            self._round = None
        self._sync_tick()

    def _sync_tick(self) -> None:
        try:
            if self._protocol is not None and self._round is None:
                self._round_heard = self._reactor.seconds()
                self._round_streaming = False
                self._round_after = None
                self._round_owed = False
                self._rounds_started += 1
                self._round = Round(self._store, next(_round_numbers) & 0xFFFFFFFF)
                self._round_overflows = self.outbox.overflows
                self._round_cuts = self.outbox.cuts
                self._round_through = self._store.seq
                # The round covers what we hold as its digest is taken: a
                # bucket equal then is not looked at again, so what we merge
                # from now on may miss the peer (see floor()).
                self._round_cut = self._store.clock.now()
                self._merged_since_cut = None
                self._protocol.send(self._round.offer())
        except Exception:
            log.failure("Anti-entropy round with {peer} failed to start", peer=self.name)

    def key_list(self, frame: wire.KeyList) -> None:
        if self._round is not None and frame.round == self._round.number:
            self._round_heard = self._reactor.seconds()
            self._round.key_list(frame)

    def keys_done(self, number: int, horizon: Optional[Version] = None) -> None:
        if self._round is not None and number == self._round.number and self._protocol:
            if horizon is not None and horizon > self._store.clock.now():
                # A horizon lies below the peer's clock minus the grace, which
                # exceeds the skew we allow: one above our clock is not one.
                log.warn("Peer {peer} sent a horizon ahead of our clock; ignored", peer=self.name)
                horizon = None
            serving, members = self.serving(), self.members()
            self._told_stale = not serving or members is None
            self._round_streaming = True
            self._protocol.stream(self._round.round_frames(horizon, serving, members),
                                  partial(self._round_sent, number))
            if self._round.dropped:
                log.warn(
                    "Dropped {count} keys that peer {peer} deleted and purged long ago",
                    count=self._round.dropped,
                    peer=self.name,
                )
            if self.on_round_cut is not None:
                self.on_round_cut(self)

    def tell_again(self) -> None:
        """Our state changed (we serve now, or know every member): if the
        last round told the peer otherwise, run another soon, since a peer
        that is loading may be waiting for it."""
        if self._told_stale:
            self._told_stale = False
            if self._round is not None:
                self._round_again = True  # once the running one is applied
            elif self._protocol is not None:
                self._reactor.callLater(0, self._sync_tick)  # type: ignore[attr-defined]

    def _round_sent(self, number: int) -> None:
        if self._round is not None and self._round.number == number:
            self._round_streaming = False
            self._round_heard = self._reactor.seconds()

    def round_applied(self, number: int) -> None:
        """The peer applied everything our round sent it."""
        current = self._round
        if current is None or number != current.number:
            return
        self._round = None
        self.rounds_completed += 1
        if self._round_again:
            self._round_again = False
            self._reactor.callLater(0, self._sync_tick)  # type: ignore[attr-defined]
        self.last_round_sent = current.sent
        self.round_entries_sent += current.sent
        cut, self._round_cut = self._round_cut, None
        if self.outbox.resynced(self._round_cuts, self._round_through) \
                and self.on_acked is not None:
            self.on_acked(self)  # writes at a level may count this peer now
        if self.outbox.overflows == self._round_overflows and cut is not None:
            self._proven = True
            merged = self._merged_since_cut
            self._held_floor = cut if merged is None or cut < merged else merged
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

    def send_group(self, seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> None:
        """Queue writes for this peer alone, as one transaction numbered
        ``seq`` (the writes it had not acknowledged before a restart; every
        other write reaches the links through their shared log, see
        :mod:`distkv.cluster.outbox`), and send them if the link allows."""
        self.outbox.add_backlog(seq, writes)
        if self._protocol is not None and self._pump_call is None:
            self._pump_call = self._reactor.callLater(0, self._scheduled_pump)  # type: ignore[attr-defined]

    def _overflowed(self, already: bool) -> None:
        """The outbox passed its bound and cut this link over to a resync."""
        self.mark_resync(f"its outbox passed {self.outbox.max_bytes} bytes", already)

    def _scheduled_pump(self) -> None:
        self._pump_call = None
        self.pump()

    def pump(self) -> None:
        proto = self._protocol
        if proto is None:
            return
        frames = self.outbox.take_frames()
        if frames:
            proto.send(b"".join(frames))

    def merged(self, version: Tuple[int, int, str]) -> None:
        """We merged a write from elsewhere: the peer may not have it yet.
        ``version``: a Version, or the last three fields of an entry (a
        Version is made of them only when one is kept)."""
        if version < self._held_floor:
            self._held_floor = Version(*version)
        if self._round_cut is not None and (
            self._merged_since_cut is None or version < self._merged_since_cut
        ):
            self._merged_since_cut = Version(*version)

    def floor(self) -> Version:
        """The peer holds every entry we hold below this version, or a newer
        version of its key: every write of ours below it has been applied
        there, and every entry of anyone's that we hold below it too.

        Our own writes are vouched for by the outbox (nothing older waits in
        it); everyone else's by the last completed round, which sent the peer
        whatever we held and it lacked, and by the writes we merged since
        (which lower the floor until the next round). So a write of a node that
        crashed before sending it everywhere stays above the floor of any node
        that holds it until a round carried it on, and no horizon passes it.
        Zero until a full round has run since the peer came up as this
        incarnation, and while a resync is pending: then we cannot vouch.
        """
        outbox = self.outbox
        if not self._proven or outbox.needs_resync:
            return ZERO
        oldest = outbox.oldest()
        own = version_of(oldest) if oldest is not None else self._store.clock.now()
        return own if own < self._held_floor else self._held_floor

    def heartbeat(self) -> bytes:
        return wire.encode_heartbeat(self.floor(), self.our_low())

    def acked(self, seq: int) -> None:
        self.outbox.ack(seq)
        if self.on_acked is not None:
            self.on_acked(self)
        if self._round is None and self.outbox.held_back():
            self._sync_tick()  # its end vouches for what a hot key's hole holds back
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
        for proto in list(self._connections):
            if proto.transport is not None:
                proto.transport.loseConnection()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        held = self._failure_line("unreachable")
        if held >= 0:
            log.warn("Cannot reach peer {peer}: {why} (retrying; {held} more failed attempts "
                     "since the last line)", peer=self.name, why=reason.value, held=held)
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
