"""The two ends of a peer connection, which carry data both ways.

:class:`Dialer` runs on the connecting side: it introduces this node and hands
the connection to the :class:`~distkv.cluster.peers.PeerLink` that dialled. An
:class:`Acceptor` runs on the accepting side, reached through the front door:
it checks who is calling and asks the node which link may push over the
connection, so a node that does not list a caller still sends it its writes.
After the handshake both ends are the same :class:`PeerConnection`: each
merges the writes it receives into the store and acknowledges them, answers
digest offers and heartbeats, and, when a link pushes over it, hands the
link the acknowledgements, key lists and round marks meant for it. Each end
sends a heartbeat every tick and drops a connection that left four unanswered,
so a frozen process or a network that carries one way only lets the link fail
over to another connection or reconnect, and its outbox keeps the writes.

What a connection sends in bulk (a digest answer, a round's entries) goes out
as a stream of chunks, written only while the transport keeps up (the
connection is the transport's streaming producer), and at most one digest
offer waits for an answer: a newer one replaces it. A peer that sends while
never reading therefore cannot make us buffer more than
:data:`OUTPUT_PAUSE_BYTES`: past that we stop reading from it until it reads.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import (
    TYPE_CHECKING,
    Callable,
    Deque,
    Iterator,
    List,
    Optional,
    Protocol,
    Tuple,
    Union,
)

from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv.cluster import wire
from distkv.disk.journal import Batch
from distkv.front import sendnow
from distkv.store.hlc import Version
from distkv.store.store import Entry

if TYPE_CHECKING:
    from distkv.cluster.peers import PeerLink

log = Logger()

MAX_LINE = 512

#: Heartbeat ticks without a byte from the other end before it is dropped.
SILENT_TICKS = 3

#: Bytes of our output waiting for a peer to read, past which we stop
#: reading from it (its input would only make more output).
OUTPUT_PAUSE_BYTES = 8 << 20

Refusal = Tuple[str, str]

_BARE_HEARTBEAT = wire.encode_bare_heartbeat()


def no_delay(transport: object) -> None:
    """Switch off Nagle: replication and replies are small and latency-bound."""
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        setter(True)


class PeerHost(Protocol):
    """What a peer connection needs from its node (see :class:`distkv.node.Node`).

    ``durable`` is the journal's (see :mod:`distkv.disk.journal`): acknowledgements,
    and the end of a round, are only sent once what they confirm is committed.
    """

    def vet(self, caller: wire.Greeting) -> Union[wire.Accept, Refusal]:
        """Our answer to a caller: our own greeting, or a refusal."""

    def accepted(self, proto: PeerConnection, caller: wire.Greeting, host: str) -> None:
        """``caller`` (calling from ``host``) is admitted over ``proto``: the
        node links it to the link that pushes to that node."""

    def apply(self, key: bytes, entry: Entry) -> object:
        """Merge one replicated write into the store."""

    def applied(self, remote: wire.Hello, seq: int) -> None:
        """``remote``'s local writes up to ``seq`` are applied here."""

    def answer(self, offer: wire.DigestOffer) -> Iterator[bytes]:
        """Our answer to an anti-entropy digest offer, chunk by chunk."""

    def synced(self, remote: wire.Hello, mark: wire.RoundMark) -> None:
        """A round from ``remote``, which ended with ``mark``, was fully applied here."""

    def durable(self) -> Optional[Batch]:
        """The commit that covers everything applied so far, if any."""

    def heard(self, remote: wire.Hello, floor: Version, low: Version) -> None:
        """A heartbeat's floor and low (see :mod:`distkv.cluster.stability`)."""

    def wall_ms(self) -> int:
        """The node's wall clock, in milliseconds."""

    def clock_reading(self, remote: wire.Hello, sent_ms: int, reading_ms: int) -> None:
        """``remote`` answered a heartbeat we sent at ``sent_ms`` (our wall
        clock) with its wall clock reading (see :mod:`distkv.cluster.skew`)."""


@implementer(IPushProducer)
class PeerConnection(sendnow.SendingProtocol):
    """Either end of a peer connection once the handshake is done."""

    transport: ITCPTransport

    def __init__(self, host: PeerHost, clock: IReactorTime, heartbeat: float,
                 max_frame: int) -> None:
        super().__init__()
        self.host = host
        self._clock = clock
        self._heartbeat = heartbeat
        self._max_frame = max_frame
        self._line = b""
        self._decoder: Optional[wire.FrameDecoder] = None
        self._timer: Optional[IDelayedCall] = None
        self._silent_ticks = 0
        # Our wall clock when each unanswered heartbeat went out, oldest first.
        self._pings: Deque[int] = deque()
        # Bulk output, each written chunk by chunk while the transport keeps
        # up, and what to do when it is all written.
        self._streams: Deque[Tuple[Iterator[bytes], Optional[Callable[[], None]]]] = deque()
        self._paused = False  # the transport holds more than it likes
        self._reading_paused = False
        self._answering = False
        self._next_offer: Optional[wire.DigestOffer] = None
        #: Digest offers replaced by a newer one before we answered them.
        self.offers_superseded = 0
        #: The node on the other end, once the handshake is done.
        self.remote: Optional[wire.Hello] = None
        #: The link whose writes go out over this connection, if any.
        self.link: Optional[PeerLink] = None

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()
        IConsumer(self.transport).registerProducer(self, True)  # type: ignore[arg-type]
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    # The transport tells us, as its producer, when its buffer fills and empties.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._reading_paused:
            self._reading_paused = False
            IPushProducer(self.transport).resumeProducing()
        self._pump_streams()

    def stopProducing(self) -> None:
        self._streams.clear()

    def stream(self, chunks: Iterator[bytes], then: Optional[Callable[[], None]] = None) -> None:
        """Write ``chunks`` as the transport keeps up, after any earlier stream."""
        self._streams.append((chunks, then))
        if len(self._streams) == 1:
            self._pump_streams()

    def _pump_streams(self) -> None:
        streams = self._streams
        while streams and not self._paused:
            chunks, then = streams[0]
            chunk = next(chunks, None)
            if chunk is None:
                streams.popleft()
                if then is not None:
                    then()
                continue
            self.write(chunk)

    def _offered(self, offer: wire.DigestOffer) -> None:
        if self._answering:
            # Only the newest offer matters: an older one's round is over.
            if self._next_offer is not None:
                self.offers_superseded += 1
            self._next_offer = offer
            return
        self._answering = True
        self.stream(self.host.answer(offer), self._answered)

    def _answered(self) -> None:
        self._answering = False
        offer, self._next_offer = self._next_offer, None
        if offer is not None:
            self._offered(offer)

    @property
    def name(self) -> str:
        return self.remote.node if self.remote is not None else "an unknown peer"

    def _tick(self) -> None:
        self._silent_ticks += 1
        if self._silent_ticks > SILENT_TICKS:
            log.warn("Peer {peer} stopped answering; dropping the connection", peer=self.name)
            self.transport.abortConnection()
            return
        if self._decoder is not None:
            link = self.link
            self._pings.append(self.host.wall_ms())
            self.write(link.heartbeat() if link is not None else _BARE_HEARTBEAT)
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    def dataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            self._silent_ticks = 0
            self._line += data
            line, found, rest = self._line.partition(b"\n")
            if not found:
                if len(self._line) > MAX_LINE:
                    self.handshake_failed("handshake line too long")
                return
            self._line = b""
            if not self.handshake(line) or self._decoder is None:
                return
            decoder = self._decoder
            data = rest
        try:
            frames = decoder.feed(data)
        except wire.WireError as e:
            self._drop(str(e))
            return
        self._receive(frames)

    def handshake(self, line: bytes) -> bool:
        """Handle the other end's handshake line; True once frames may follow."""
        raise NotImplementedError

    def handshake_failed(self, why: str) -> None:
        raise NotImplementedError

    def _start_frames(self, remote: wire.Hello) -> None:
        self.remote = remote
        self._decoder = wire.FrameDecoder(self._max_frame)

    def _receive(self, frames: List[wire.Frame]) -> None:
        host = self.host
        remote = self.remote
        assert remote is not None
        applied = 0
        for frame in frames:
            if isinstance(frame, wire.Write):
                host.apply(frame.key, frame.entry)
                if frame.seq:  # 0: sent by anti-entropy, outside the outbox
                    applied = frame.seq
            elif isinstance(frame, wire.Transaction):
                # All of it in this one call: no reader runs in between.
                for key, entry in frame.writes:
                    host.apply(key, entry)
                applied = frame.seq
            elif isinstance(frame, wire.Ack):
                link = self.link
                if link is not None and link.pushes_over(self):
                    link.acked(frame.seq)
            elif isinstance(frame, wire.Heartbeat):
                if frame.reply:
                    # Only an answer shows the other end hears us: a connection
                    # that carries bytes one way only is as good as down.
                    self._silent_ticks = 0
                    if self._pings and frame.now is not None:
                        host.clock_reading(remote, self._pings.popleft(), frame.now)
                else:
                    self.write(wire.encode_heartbeat_reply(host.wall_ms()))
                    if frame.floor is not None and frame.low is not None:
                        host.heard(remote, frame.floor, frame.low)
            elif isinstance(frame, wire.KeyList):
                link = self.link
                if link is not None and link.pushes_over(self):
                    link.key_list(frame)
            elif isinstance(frame, wire.DigestOffer):
                self._offered(frame)
            elif frame.kind == b"S":
                if applied:
                    self._acknowledge(remote, applied)
                    applied = 0
                self._confirm(
                    wire.encode_mark(b"s", frame.round),
                    partial(host.synced, remote, frame),
                )
            elif self.link is None or not self.link.pushes_over(self):
                pass  # answers what a link pushes, and none pushes here now
            elif frame.kind == b"E":
                self.link.keys_done(frame.round, frame.horizon)
            elif frame.kind == b"s":
                self.link.round_applied(frame.round)
        if applied:
            self._acknowledge(remote, applied)
        if (self._paused and not self._reading_paused
                and sendnow.buffered(self.transport) > OUTPUT_PAUSE_BYTES):
            log.warn("Peer {peer} is not reading what we send; pausing its input", peer=self.name)
            self._reading_paused = True
            IPushProducer(self.transport).pauseProducing()

    def _acknowledge(self, remote: wire.Hello, seq: int) -> None:
        self._confirm(wire.encode_ack(seq), partial(self.host.applied, remote, seq))

    def _confirm(self, data: bytes, then: Optional[Callable[[], None]] = None) -> None:
        """Send ``data`` once everything applied so far is committed."""
        batch = self.host.durable()
        if batch is None:
            self.write(data)
            if then is not None:
                then()
            return

        def committed(error: Optional[str]) -> None:
            # A failed commit is logged by the journal; the peer, never told,
            # keeps the writes and sends them again.
            if error is None:
                self.write(data)
                if then is not None:
                    then()

        batch.when_done(committed)

    def send(self, data: bytes) -> None:
        """What a link pushes over this connection."""
        self.write(data)

    def _drop(self, why: str) -> None:
        log.warn("Dropping the connection with peer {peer}: {why}", peer=self.name, why=why)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._streams.clear()
        link, self.link = self.link, None
        if link is not None:
            link.unlinked(self)


class Dialer(PeerConnection):
    """Connecting side: introduce ourselves, then join the link that dialled."""

    def __init__(self, link: PeerLink, host: PeerHost, clock: IReactorTime,
                 heartbeat: float, max_frame: int) -> None:
        super().__init__(host, clock, heartbeat, max_frame)
        self._dialled = link

    def connectionMade(self) -> None:
        super().connectionMade()
        self.write(wire.greeting_line(self._dialled.greeting))

    @property
    def name(self) -> str:
        return self._dialled.name

    def handshake(self, line: bytes) -> bool:
        try:
            reply = wire.parse_reply(line)
        except wire.WireError as e:
            self.handshake_failed(str(e))
            return False
        link = self._dialled
        if not isinstance(reply, wire.Accept):
            link.refused(reply)
            self.transport.loseConnection()
            return False
        self._start_frames(reply.hello)
        if not link.linked(self, reply.hello, reply):
            self.transport.loseConnection()
            return False
        return True

    def handshake_failed(self, why: str) -> None:
        self._drop(why)


class Acceptor(PeerConnection):
    """Accepting side: vet the caller, answer, and let a link push to it."""

    def handshake(self, line: bytes) -> bool:
        try:
            caller = wire.parse_greeting(line)
        except wire.WireError as e:
            self._refuse(("protocol", str(e)))
            return False
        answer = self.host.vet(caller)
        if not isinstance(answer, wire.Accept):
            self._refuse(answer)
            return False
        self._start_frames(caller.hello)
        self.write(wire.accept_line(answer))
        self.host.accepted(self, caller, getattr(self.transport.getPeer(), "host", ""))
        return True

    def handshake_failed(self, why: str) -> None:
        self._refuse(("protocol", why))

    def _refuse(self, refusal: Refusal) -> None:
        log.warn("Refusing peer connection: {code} {why}", code=refusal[0], why=refusal[1])
        self.write(wire.refusal_line(*refusal))
        self.transport.loseConnection()
