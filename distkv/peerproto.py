"""The two ends of a peer connection.

:class:`PushProtocol` runs on the connecting side: it introduces this node,
sends the link's outbox as write frames and hands acknowledgements back to the
link. :class:`ApplyProtocol` runs on the accepting side, reached through the
front door: it checks who is calling, merges each write into the store and
acknowledges what it applied. A heartbeat on the pushing side drops a link whose
peer stopped answering (a frozen process or a silent network), so the outbox
keeps the writes and the reconnect logic takes over.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv import sendnow, wire
from distkv.hlc import Version
from distkv.journal import Batch
from distkv.store import Entry

if TYPE_CHECKING:
    from distkv.peers import PeerLink

log = Logger()

MAX_LINE = 512

Refusal = Tuple[str, str]


def no_delay(transport: object) -> None:
    """Switch off Nagle: replication and replies are small and latency-bound."""
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        setter(True)


class PeerConnection(sendnow.SendingProtocol):
    """Either end of a link: Nagle off, and writes that go out at once while
    nothing is buffered (see :mod:`distkv.sendnow`)."""

    transport: ITCPTransport

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()


class PushProtocol(PeerConnection):
    """Connecting side: introduce ourselves, then stream the outbox."""

    def __init__(
        self, link: PeerLink, clock: IReactorTime, heartbeat: float, max_frame: int
    ) -> None:
        super().__init__()
        self._link = link
        self._max_frame = max_frame
        self._clock = clock
        self._heartbeat = heartbeat
        self._buffer = b""
        self._decoder: Optional[wire.FrameDecoder] = None
        self._timer: Optional[IDelayedCall] = None
        self._silent_ticks = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.write(wire.hello_line(wire.MAGIC, self._link.local))
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    def _tick(self) -> None:
        self._silent_ticks += 1
        if self._silent_ticks > 3:
            log.warn("Peer {peer} stopped answering; dropping the link", peer=self._link.name)
            self.transport.abortConnection()
            return
        if self._decoder is not None:
            self.write(self._link.heartbeat())
        self._timer = self._clock.callLater(self._heartbeat, self._tick)

    def dataReceived(self, data: bytes) -> None:
        self._silent_ticks = 0
        if self._decoder is None:
            self._buffer += data
            line, found, rest = self._buffer.partition(b"\n")
            if not found:
                if len(self._buffer) > MAX_LINE:
                    self._fail("handshake reply too long")
                return
            self._buffer = b""
            try:
                reply = wire.parse_reply(line)
            except wire.WireError as e:
                self._fail(str(e))
                return
            if not isinstance(reply, wire.Hello):
                self._link.refused(reply)
                self.transport.loseConnection()
                return
            self._decoder = wire.FrameDecoder(self._max_frame)
            if not self._link.linked(self, reply):
                self.transport.loseConnection()
                return
            data = rest
        try:
            frames = self._decoder.feed(data)
        except wire.WireError as e:
            self._fail(str(e))
            return
        link = self._link
        for frame in frames:
            if isinstance(frame, wire.Ack):
                link.acked(frame.seq)
            elif isinstance(frame, wire.KeyList):
                link.key_list(frame)
            elif isinstance(frame, wire.RoundMark):
                if frame.kind == b"E":
                    link.keys_done(frame.round, frame.horizon)
                elif frame.kind == b"s":
                    link.round_applied(frame.round)

    def _fail(self, why: str) -> None:
        log.warn("Dropping link to {peer}: {why}", peer=self._link.name, why=why)
        self.transport.abortConnection()

    def send(self, data: bytes) -> None:
        self.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._decoder is not None:
            self._link.unlinked(self)


class ApplyProtocol(PeerConnection):
    """Accepting side: vet the caller, merge its writes, acknowledge them.

    ``vet`` answers a caller's Hello with our own Hello, or with a refusal.
    ``apply`` merges one replicated write into the store. ``answer`` turns an
    anti-entropy digest offer into the bytes of our answer; ``synced`` hears
    that a round from the caller was fully applied; ``heard`` gets the floor
    and low of each heartbeat (see :mod:`distkv.stability`). ``durable`` is the
    journal's (see :mod:`distkv.journal`): acknowledgements, and the end of a
    round, are only sent once what they confirm is committed to disk.
    """

    def __init__(
        self,
        vet: Callable[[wire.Hello], Union[wire.Hello, Refusal]],
        apply: Callable[[bytes, Entry], object],
        answer: Callable[[wire.DigestOffer], bytes],
        synced: Callable[[wire.Hello, Optional[Version]], None],
        max_frame: int,
        durable: Callable[[], Optional[Batch]] = lambda: None,
        heard: Callable[[wire.Hello, Version, Version], None] = lambda *_: None,
    ) -> None:
        super().__init__()
        self._durable = durable
        self._heard = heard
        self._vet = vet
        self._apply = apply
        self._answer = answer
        self._synced = synced
        self._max_frame = max_frame
        self._buffer = b""
        self._decoder: Optional[wire.FrameDecoder] = None
        self.remote: Optional[wire.Hello] = None

    def dataReceived(self, data: bytes) -> None:
        if self._decoder is None:
            self._buffer += data
            line, found, rest = self._buffer.partition(b"\n")
            if not found:
                if len(self._buffer) > MAX_LINE:
                    self._refuse(("protocol", "handshake line too long"))
                return
            self._buffer = b""
            try:
                hello = wire.parse_hello(line, wire.MAGIC)
            except wire.WireError as e:
                self._refuse(("protocol", str(e)))
                return
            answer = self._vet(hello)
            if not isinstance(answer, wire.Hello):
                self._refuse(answer)
                return
            self.remote = hello
            self._decoder = wire.FrameDecoder(self._max_frame)
            self.write(wire.hello_line(wire.OK_WORD, answer))
            data = rest
        try:
            frames = self._decoder.feed(data)
        except wire.WireError as e:
            log.warn("Dropping peer {peer}: {why}", peer=self.remote, why=str(e))
            self.transport.abortConnection()
            return
        applied = 0
        apply = self._apply
        write = self.write
        for frame in frames:
            if isinstance(frame, wire.Write):
                apply(frame.key, frame.entry)
                if frame.seq:  # 0: sent by anti-entropy, outside the outbox
                    applied = frame.seq
            elif isinstance(frame, wire.Heartbeat) and not frame.reply:
                write(wire.HEARTBEAT_REPLY)
                if frame.floor is not None and frame.low is not None:
                    assert self.remote is not None
                    self._heard(self.remote, frame.floor, frame.low)
            elif isinstance(frame, wire.DigestOffer):
                write(self._answer(frame))
            elif isinstance(frame, wire.RoundMark) and frame.kind == b"S":
                if applied:
                    self._confirm(wire.encode_ack(applied))
                    applied = 0
                self._confirm(
                    wire.encode_mark(b"s", frame.round), partial(self._round_done, frame.horizon)
                )
        if applied:
            self._confirm(wire.encode_ack(applied))

    def _confirm(self, data: bytes, then: Optional[Callable[[], None]] = None) -> None:
        """Send ``data`` once everything applied so far is committed."""
        batch = self._durable()
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

    def _round_done(self, clock: Optional[Version]) -> None:
        assert self.remote is not None
        self._synced(self.remote, clock)

    def _refuse(self, refusal: Refusal) -> None:
        log.warn("Refusing peer connection: {code} {why}", code=refusal[0], why=refusal[1])
        self.write(wire.refusal_line(*refusal))
        self.transport.loseConnection()
