"""The two ends of a peer connection, which carry data both ways.

:class:`Dialer` runs on the connecting side: it introduces this node and hands
the connection to the :class:`~distkv.cluster.peers.PeerLink` that dialled. An
:class:`Acceptor` runs on the accepting side, reached through the front door:
it checks who is calling and asks the node which link may push over the
connection, so a node that does not list a caller still sends it its writes.
With a cluster secret (see :mod:`distkv.cluster.handshake`) each side proves
it before the other acts on anything it sent, and from then on every write
goes out sealed as a record and every byte read is checked as one before
it reaches the frame decoder; a bad record drops the connection.
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
    cast,
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

from distkv.cluster import batchwire, paxoswire, tlsconfig, wire
from distkv.cluster.handshake import (
    Accepting,
    AuthError,
    Dialling,
    Opener,
    PeerAuth,
    RecordError,
    Session,
    max_record,
)
from distkv.cluster.membership import Member
from distkv.disk.journal import Batch
from distkv.front import sendnow
from distkv.store.entries import Entry
from distkv.store.hlc import Version

if TYPE_CHECKING:
    from distkv.cluster.peers import PeerLink

log = Logger()

MAX_LINE = 512

#: Heartbeat ticks without a byte from the other end before it is dropped.
SILENT_TICKS = 3

#: Bytes of our output waiting for a peer to read, past which we stop
#: reading from it (its input would only make more output).
OUTPUT_PAUSE_BYTES = 8 << 20

#: Answers (to digest offers, to quorum reads) queued behind a transport
#: that does not keep up, past which we stop reading from the peer: each
#: holds its request (up to a frame) until it is written.
MAX_QUEUED_STREAMS = 64

#: A quorum read of at most this many keys is answered at once, with the
#: others in the same read, until the answers reach SMALL_ANSWERS bytes (the
#: rest, and larger reads, are streamed as the transport keeps up).
SMALL_READ = 4
SMALL_ANSWERS = 256 << 10

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
    ``peer_auth`` holds the cluster secret, if any, and counts the handshakes
    and records that fail it.
    """

    peer_auth: PeerAuth

    def vet(self, caller: wire.Greeting) -> Union[wire.Accept, Refusal]:
        """Our answer to a caller: our own greeting, or a refusal."""

    def accepted(self, proto: PeerConnection, caller: wire.Greeting, host: str) -> None:
        """``caller`` (calling from ``host``) is admitted over ``proto``: the
        node links it to the link that pushes to that node."""

    def apply(self, key: bytes, entry: Entry) -> object:
        """Merge one replicated write into the store."""

    def apply_all(self, writes: List[Tuple[bytes, Entry]]) -> object:
        """Merge replicated writes into the store, in order, in one call."""

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

    def member_frame(self) -> bytes:
        """Our member list, as an ``M`` frame (sent as a connection starts)."""

    def members_heard(self, remote: wire.Hello, entries: Tuple[Member, ...]) -> None:
        """``remote`` sent its member list (see :mod:`distkv.cluster.membership`)."""

    def flush_frame(self) -> bytes:
        """Our flush floor as an ``F`` frame, or nothing before any flush
        (sent as a connection starts)."""

    def flush_heard(self, remote: wire.Hello, floor: Version) -> None:
        """``remote`` sent its flush floor (see :meth:`distkv.store.store.Store.raise_floor`)."""

    def clock_reading(self, remote: wire.Hello, sent_ms: int, reading_ms: int) -> None:
        """``remote`` answered a heartbeat we sent at ``sent_ms`` (our wall
        clock) with its wall clock reading (see :mod:`distkv.cluster.skew`)."""

    def read_answer(self, request: wire.ReadRequest) -> Iterator[bytes]:
        """Our ``r`` frames answering a quorum read (see :mod:`distkv.cluster.quorum`)."""

    def read_answered(self, remote: wire.Hello, reply: wire.ReadReply) -> None:
        """``remote`` answered a quorum read of ours."""

    def consensus_prepare(self, request: paxoswire.Prepare) -> bytes:
        """Our ``p`` frame answering a LINEARIZABLE prepare (see :mod:`distkv.cluster.consensus`)."""

    def consensus_accept(self, request: paxoswire.Accept, send: Callable[[bytes], None]) -> None:
        """Answer a LINEARIZABLE accept with ``send`` once it is committed."""

    def consensus_answered(self, remote: wire.Hello,
                           answer: Union[paxoswire.Promise, paxoswire.Accepted]) -> None:
        """``remote`` answered a prepare or accept of ours."""


class _Gather:
    """The answers to accepts given while one read's frames are handled go
    out with the others in one write at its end; one given later (once a
    commit is done) is written at once."""

    __slots__ = ("answers", "write")

    def __init__(self, answers: List[bytes], write: Callable[[bytes], None]) -> None:
        self.answers: Optional[List[bytes]] = answers
        self.write = write

    def send(self, data: bytes) -> None:
        if self.answers is not None:
            self.answers.append(data)
        else:
            self.write(data)


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
        self._auth = host.peer_auth
        self._line = b""
        self._decoder: Optional[wire.FrameDecoder] = None
        # With a cluster secret: what checks the records we receive.
        self._opener: Optional[Opener] = None
        self._hung_up = False  # the handshake failed: ignore what follows
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
        #: When the other end last sent us anything (the reactor's clock).
        self.last_heard = clock.seconds()
        #: The link whose writes go out over this connection, if any.
        self.link: Optional[PeerLink] = None

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()
        # Not IConsumer(transport): a TLS transport registers producers
        # without declaring the interface.
        cast(IConsumer, self.transport).registerProducer(self, True)
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    # The transport tells us, as its producer, when its buffer fills and empties.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._reading_paused:
            self._reading_paused = False
            cast(IPushProducer, self.transport).resumeProducing()
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
            held = self._auth.log_limit("silent", self.name).allow()
            if held >= 0:
                log.warn("Peer {peer} stopped answering; dropping the connection ({held} "
                         "more lines held back)", peer=self.name, held=held)
            self.transport.abortConnection()
            return
        if self._decoder is not None:
            link = self.link
            self._pings.append(self.host.wall_ms())
            self.write(link.heartbeat() if link is not None else _BARE_HEARTBEAT)
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    def dataReceived(self, data: bytes) -> None:
        self.last_heard = self._clock.seconds()
        decoder = self._decoder
        if decoder is None:
            if self._hung_up:
                return
            # Only a whole line is progress: a caller dripping a byte per
            # heartbeat is dropped after SILENT_TICKS heartbeats all the same.
            self._line += data
            # One line at a time: nothing after a line is looked at before
            # the line was acted on (with a secret, before the proof held).
            while decoder is None:
                line, found, rest = self._line.partition(b"\n")
                if not found:
                    if len(self._line) > MAX_LINE:
                        self._hung_up = True
                        self._line = b""
                        self.handshake_failed("handshake line too long")
                    return
                self._line = rest
                self._silent_ticks = 0
                if not self.handshake(line):
                    self._hung_up = True
                    self._line = b""
                    return
                decoder = self._decoder
            data, self._line = self._line, b""
            if not data:
                return
        opener = self._opener
        try:
            if opener is None:
                frames = decoder.feed(data)
            else:
                try:
                    payloads = opener.feed(data)
                except RecordError as e:
                    self._bad_record(str(e))
                    return
                frames = []
                for payload in payloads:
                    frames.extend(decoder.feed(payload))
        except wire.WireError as e:
            self._drop(str(e))
            return
        self._receive(frames)

    def handshake(self, line: bytes) -> bool:
        """Handle the other end's handshake line; True once frames may follow."""
        raise NotImplementedError

    def handshake_failed(self, why: str) -> None:
        raise NotImplementedError

    def _start_frames(self, remote: wire.Hello, session: Optional[Session]) -> None:
        """Frames follow; with a cluster secret, in records of ``session``."""
        self.remote = remote
        self._decoder = wire.FrameDecoder(self._max_frame)
        if session is not None:
            self._opener = session.opener
            send = self.write
            seal = session.sealer.seal

            def write(data: bytes) -> None:
                send(seal(data))

            self.write = write

    def _introduce(self) -> None:
        """What each end sends first: its member list and its flush floor,
        so a node that missed a flush learns it before any entry flows."""
        self.write(self.host.member_frame())
        floor = self.host.flush_frame()
        if floor:
            self.write(floor)

    def _auth_failed(self, peer: str, why: str) -> None:
        """Log (rate-limited) and count a handshake the cluster secret failed."""
        auth = self._auth
        auth.failures += 1
        held = auth.log_limit(why, peer).allow()
        if held >= 0:
            log.warn(
                "Cluster secret: peer {peer} {why} ({failures} failed peer handshakes "
                "so far; {held} more lines held back)",
                peer=peer, why=why, failures=auth.failures, held=held,
            )

    def _bad_record(self, why: str) -> None:
        auth = self._auth
        auth.bad_records += 1
        held = auth.log_limit("bad record", self.name).allow()
        if held >= 0:
            log.warn(
                "Dropping the connection with peer {peer}: {why} ({count} bad records "
                "so far; {held} more lines held back)",
                peer=self.name, why=why, count=auth.bad_records, held=held,
            )
        self.transport.abortConnection()

    def _receive(self, frames: List[wire.Frame]) -> None:
        host = self.host
        remote = self.remote
        assert remote is not None
        applied = 0
        answers: List[bytes] = []
        answered = 0
        gathered: Optional[_Gather] = None
        for frame in frames:
            if isinstance(frame, batchwire.Batch):
                host.apply_all(frame.writes)
                applied = frame.seq
            elif isinstance(frame, wire.Ack):
                link = self.link
                if link is not None and link.pushes_over(self):
                    link.acked(frame.seq)
            # Quorum reads' frames next: one per request at a level.
            elif isinstance(frame, wire.ReadRequest):
                if (len(frame.keys) <= SMALL_READ and answered < SMALL_ANSWERS
                        and host.durable() is None):
                    # Nothing to wait for, and small: one write for all of them.
                    for chunk in host.read_answer(frame):
                        answers.append(chunk)
                        answered += len(chunk)
                else:
                    self._answer_read(frame)
            elif isinstance(frame, wire.ReadReply):
                host.read_answered(remote, frame)
            elif isinstance(frame, wire.Write):
                host.apply(frame.key, frame.entry)
                if frame.seq:  # 0: sent by anti-entropy, outside the outbox
                    applied = frame.seq
            elif isinstance(frame, wire.Transaction):
                # All of it in this one call: no reader runs in between.
                for key, entry in frame.writes:
                    host.apply(key, entry)
                applied = frame.seq
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
            elif isinstance(frame, wire.Members):
                host.members_heard(remote, frame.entries)
            elif isinstance(frame, wire.Flush):
                host.flush_heard(remote, frame.floor)
            elif isinstance(frame, paxoswire.Prepare):
                answers.append(host.consensus_prepare(frame))
            elif isinstance(frame, paxoswire.Accept):
                if gathered is None:
                    gathered = _Gather(answers, self.write)
                host.consensus_accept(frame, gathered.send)
            elif isinstance(frame, (paxoswire.Promise, paxoswire.Accepted)):
                host.consensus_answered(remote, frame)
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
        if gathered is not None:
            gathered.answers = None
        if answers:
            self.write(b"".join(answers))
        if self._paused and not self._reading_paused and (
                sendnow.buffered(self.transport) > OUTPUT_PAUSE_BYTES
                or len(self._streams) > MAX_QUEUED_STREAMS):
            log.warn("Peer {peer} is not reading what we send; pausing its input", peer=self.name)
            self._reading_paused = True
            cast(IPushProducer, self.transport).pauseProducing()

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

    def _answer_read(self, request: wire.ReadRequest) -> None:
        """Answer a quorum read once everything applied so far is committed
        (so a barrier's answer says the frames before it are), streamed as
        the transport keeps up: a request for many large values costs one
        frame of memory at a time."""
        batch = self.host.durable()
        if batch is None:
            self.stream(self.host.read_answer(request))
            return

        def committed(error: Optional[str]) -> None:
            if error is None:  # else the asking node times out
                self.stream(self.host.read_answer(request))

        batch.when_done(committed)

    def send(self, data: bytes) -> None:
        """What a link pushes over this connection."""
        self.write(data)

    def _drop(self, why: str) -> None:
        held = self._auth.log_limit("dropped", self.name).allow()
        if held >= 0:
            log.warn("Dropping the connection with peer {peer}: {why} ({held} more lines "
                     "held back)", peer=self.name, why=why, held=held)
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
    """Connecting side: introduce ourselves, prove the cluster secret if we
    have one, check the other side's proof, then join the link that dialled."""

    def __init__(self, link: PeerLink, host: PeerHost, clock: IReactorTime,
                 heartbeat: float, max_frame: int) -> None:
        super().__init__(host, clock, heartbeat, max_frame)
        self._dialled = link
        secret = self._auth.secret
        self._dialling = Dialling(secret, link.greeting,
                                  b"" if secret is None else self._auth.nonce(),
                                  max_record(max_frame))

    def connectionMade(self) -> None:
        super().connectionMade()
        self.write(self._dialling.greeting_line())

    @property
    def name(self) -> str:
        return self._dialled.name

    def handshake(self, line: bytes) -> bool:
        link = self._dialled
        try:
            if wire.is_challenge(line):
                self.write(self._dialling.challenged(line))
                return True
            reply = wire.parse_reply(line)
            if not isinstance(reply, wire.Accept):
                code, message = reply
                message, proof = wire.refusal_proof(message)
                if code == "cluster-secret":
                    self._secret_refused((code, message))
                elif code in LASTING_REFUSALS and not self._dialling.refusal_proven(code, proof):
                    # Anyone at the address could say it: retry, never act on it.
                    self._auth_failed(link.name, f"sent a {code!r} refusal without proof "
                                                 "of the cluster secret")
                else:
                    link.refused((code, message))
                self.transport.loseConnection()
                return False
            session = self._dialling.accepted(reply)
        except wire.WireError as e:
            self.handshake_failed(str(e))
            return False
        except AuthError as e:
            self._auth_failed(link.name, e.why)
            self.transport.abortConnection()
            return False
        self._start_frames(reply.hello, session)
        self._introduce()
        if not link.linked(self, reply.hello, reply):
            self.transport.loseConnection()
            return False
        return True

    def _secret_refused(self, refusal: Refusal) -> None:
        if self._auth.secret is None:
            why = "requires a cluster secret and this node has none"
        elif "no cluster secret" in refusal[1]:
            why = "has no cluster secret and this node requires one"
        else:
            why = "refused our proof of the cluster secret (another secret?)"
        self._dialled.refusal = refusal
        self._auth_failed(self._dialled.name, why)

    def handshake_failed(self, why: str) -> None:
        self._drop(why)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.remote is None:
            # Lost before the peer answered: say so when TLS is why.
            why = tlsconfig.tls_failure(reason)
            if why is None and self._line[:1] == TLS_ALERT:
                why = "the peer answered with a TLS alert: it links over TLS only"
            if why is not None:
                self._dialled.tls_failed(why)
        super().connectionLost(reason)


#: Refusals that change what a link does for good (it is this node itself;
#: its node was removed): with a cluster secret, acted on only with a proof.
LASTING_REFUSALS = ("self", "removed")

#: A TLS alert record starts with this byte: what a TLS server answers to plain bytes.
TLS_ALERT = b"\x15"

#: Tells whether a connection may carry a peer handshake: None, or a refusal.
Admission = Callable[[object], Optional[Refusal]]


class Acceptor(PeerConnection):
    """Accepting side: with a cluster secret, challenge the caller and check
    its proof before anything else; then vet it, answer, and let a link push to it.

    ``gate`` (with peer TLS: :meth:`distkv.cluster.tlsconfig.PeerGate.refusal`)
    decides, before the handshake line is even read, whether the connection
    may be a peer's at all; it logs its refusals itself.
    """

    _accepting: Optional[Accepting] = None
    _caller: Optional[wire.Greeting] = None

    def __init__(self, host: PeerHost, clock: IReactorTime, heartbeat: float,
                 max_frame: int, gate: Optional[Admission] = None) -> None:
        super().__init__(host, clock, heartbeat, max_frame)
        self._gate = gate

    def handshake(self, line: bytes) -> bool:
        accepting = self._accepting
        if accepting is not None and accepting.challenging:
            caller = self._caller
            assert caller is not None
            try:
                accepting.proved(line)
            except (AuthError, wire.WireError) as e:
                why = e.why if isinstance(e, AuthError) else "sent no proof of the cluster secret"
                self._auth_failed(self._caller_name(caller), why)
                self._refuse(("cluster-secret", "cluster secret proof failed"), quiet=True)
                return False
            return self._admit(caller, accepting)
        if self._gate is not None:
            refusal = self._gate(self.transport)
            if refusal is not None:
                self.write(wire.refusal_line(*refusal))
                self.transport.loseConnection()
                return False
        try:
            caller = wire.parse_greeting(line)
        except wire.WireError as e:
            self._refuse(("protocol", str(e)))
            return False
        auth = self._auth
        accepting = self._accepting = Accepting(
            auth.secret, auth.node, b"" if auth.secret is None else auth.nonce(),
            max_record(self._max_frame),
        )
        try:
            challenge = accepting.greeted(caller)
        except AuthError as e:
            self._auth_failed(self._caller_name(caller), e.why)
            assert e.refusal is not None
            self._refuse(e.refusal, quiet=True)
            return False
        if challenge is None:
            return self._admit(caller, accepting)
        self._caller = caller
        self.write(challenge)
        return True

    def _caller_name(self, caller: wire.Greeting) -> str:
        host = getattr(self.transport.getPeer(), "host", "?")
        port = "-" if caller.port is None else caller.port
        return f"{host}:{port} (calling as {caller.hello.node})"

    def _admit(self, caller: wire.Greeting, accepting: Accepting) -> bool:
        answer = self.host.vet(caller)
        if not isinstance(answer, wire.Accept):
            self._refuse(answer)
            return False
        line, session = accepting.answer(answer)
        self.write(line)
        self._start_frames(caller.hello, session)
        self._introduce()
        self.host.accepted(self, caller, getattr(self.transport.getPeer(), "host", ""))
        return True

    def handshake_failed(self, why: str) -> None:
        self._refuse(("protocol", why))

    def _refuse(self, refusal: Refusal, quiet: bool = False) -> None:
        host = getattr(self.transport.getPeer(), "host", "?")
        held = -1 if quiet else self._auth.log_limit(refusal[0], host).allow()
        if held >= 0:
            log.warn("Refusing peer connection from {host}: {code} {why} ({held} more lines "
                     "held back)", host=host, code=refusal[0], why=refusal[1], held=held)
        accepting = self._accepting
        if accepting is not None:
            self.write(accepting.refusal_line(*refusal))
        else:
            self.write(wire.refusal_line(*refusal))
        self.transport.loseConnection()
