"""Replies in request order when some of them must wait.

A write on a node with a data dir is answered only once its commit is done,
so its reply is :class:`~distkv.front.commands.Pending` on a journal batch. Every
front end (text and RESP) must still answer in request order: a reply that is
ready waits behind an earlier one that is not. :class:`ReplyQueue` holds those
replies until they can go, and knows when a connection that asked to close
(``QUIT``, a half-close, an error) has been sent everything it is owed.
:class:`ClientConnection` is what both client front ends build on: the
session, the connection counters, the queue, being the transport's
streaming producer, and the bounds on the reply bytes a connection may queue
(:class:`OutputLimits`, Redis's client-output-buffer-limit).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, NamedTuple, Optional, cast
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv.front import sendnow
from distkv.front.replcmds import Later
from distkv.front.replies import NIL, NIL_ARRAY, OK, Array, Error, Lines, Map, Reply, integer_text
from distkv.ratelog import RateLimit

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Pending


log = Logger()

#: One rate limit per node (per dispatcher) for warnings about clients.
_LIMITS: WeakKeyDictionary[Any, RateLimit] = WeakKeyDictionary()


class OutputLimits(NamedTuple):
    """How many reply bytes one client connection may have queued.

    Past ``soft`` the connection runs no further request and is not read
    from until the client has read what is queued; a reply that would take
    it past ``hard`` is not built: the client gets an error and is closed.
    """

    soft: int = 1 << 20
    hard: int = 32 << 20


def reply_size(reply: Reply) -> int:
    """An upper bound of ``reply``'s encoded size, in either protocol,
    found without encoding it (an array's values are not copied)."""
    if isinstance(reply, bytes):
        return len(reply) + 16
    if isinstance(reply, (Array, Map)):
        return 16 + sum([reply_size(item) for item in reply.items])
    if isinstance(reply, Lines):
        return 16 + sum([len(line) * 4 + 2 for line in reply.lines])
    if reply is NIL or reply is NIL_ARRAY:
        return 8
    if type(reply) is int:  # an integer reply (replies.Integer is int)
        return 24 + reply.bit_length() // 3
    if type(reply) is tuple:  # an integer already written out (replies.IntegerText)
        return 8 + len(integer_text(reply))
    return 32 + len(str(reply[0])) * 4  # type: ignore[index]


class ReplyQueue:
    """Slots for replies still owed, oldest first.

    ``send`` writes bytes to the client, ``encode`` turns a reply into bytes,
    ``close`` hangs up; it is called once every owed reply has been sent.
    Consecutive writes waiting on one batch share a slot: one callback per
    batch per connection, however many writes were pipelined.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        encode: Callable[[Any], bytes],
        close: Callable[[], None],
    ) -> None:
        self._send = send
        self._encode = encode
        self._close = close
        #: Each slot: [bytes, or None until ready; close after it; the batch
        #: waited on, or None; the replies waiting on it]. Front ends read it
        #: (true while some reply is owed) and never change it.
        self.slots: Deque[List[Any]] = deque()
        self._close_when_empty = False
        #: Bytes of the replies that are ready but wait behind an earlier one.
        self.held = 0
        #: Called after owed replies went out (a front end may read again).
        self.on_sent: Callable[[], None] = _nothing

    def __bool__(self) -> bool:
        """True while some reply is still owed."""
        return bool(self.slots)

    def wait_for(self, pending: Pending) -> None:
        slots = self.slots
        if slots and slots[-1][2] is pending.batch and slots[-1][0] is None:
            slots[-1][3].append(pending.reply)
            return
        slot: List[Any] = [None, False, pending.batch, [pending.reply]]
        slots.append(slot)
        pending.batch.when_done(lambda error: self._ready(error, slot))

    def then(self, data: bytes, close: bool = False) -> None:
        """Bytes that are ready but must wait behind the replies still owed."""
        self.slots.append([data, close, None, None])
        self.held += len(data)

    def close_when_sent(self) -> None:
        """Hang up once everything owed is out (now, if nothing is)."""
        if self.slots:
            self._close_when_empty = True
        else:
            self._close()

    def _ready(self, error: Optional[str], slot: List[Any]) -> None:
        encode = self._encode
        replies = slot[3]
        if error is not None:
            slot[0] = encode(Error(error)) * len(replies)
        elif isinstance(slot[2], Later):  # WAIT: its reply was decided as it finished
            slot[0] = encode(slot[2].reply)
        elif replies.count(OK) == len(replies):  # the usual burst of SETs
            slot[0] = encode(OK) * len(replies)
        else:
            slot[0] = b"".join([encode(reply) for reply in replies])
        slot[2] = slot[3] = None
        self.held += len(slot[0])
        slots = self.slots
        ready: List[bytes] = []
        close = False
        while slots and slots[0][0] is not None:
            data, close = slots.popleft()[:2]
            ready.append(data)
            if close:
                slots.clear()
                break
        if ready:
            data = b"".join(ready)
            self.held = 0 if close else self.held - len(data)
            self._send(data)
        if close or (not slots and self._close_when_empty):
            self._close()
        elif ready:
            self.on_sent()


class ClientConnection(sendnow.SendingProtocol):
    """A client connection of either front end (text or RESP).

    It registers as its transport's streaming producer, so the transport
    pauses it (and it stops reading) while replies back up, and resumes it
    once the client has caught up; subclasses say how to pause.
    """

    transport: ITCPTransport

    def __init__(
        self,
        dispatcher: Dispatcher,
        kind: str,
        encode: Callable[[Any], bytes],
        limits: Optional[OutputLimits] = None,
    ) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self.session = dispatcher.session(kind)
        self._owed = ReplyQueue(self._send, encode, self._hang_up)
        self._limits = limits or OutputLimits()

    def _send(self, data: bytes) -> None:
        self.write(data)

    def _warn(self, text: str, **fields: Any) -> None:
        """Log a warning about this client, at most one a second per node
        (the next one counts those held back); client bytes must already
        be escaped (:func:`distkv.ratelog.printable`)."""
        limit = _LIMITS.get(self._dispatcher)
        if limit is None:
            limit = _LIMITS[self._dispatcher] = RateLimit(time.monotonic)
        held = limit.allow()
        if held < 0:
            return
        if held:
            text += " ({suppressed} similar warnings suppressed)"
        log.warn(text, peer=self.session.address, suppressed=held, **fields)

    def _hang_up(self) -> None:
        self.transport.loseConnection()

    def connectionMade(self) -> None:
        super().connectionMade()
        if hasattr(self.transport, "bufferSize"):
            # Twisted pauses its producer (us: we stop reading) once more than
            # bufferSize bytes wait in its buffer, so a soft limit below it
            # lowers it. Never raise it: Twisted also reads up to bufferSize
            # bytes at once, and PyPy allocates that whole size on every
            # recv (a 1 MiB read size made every request cost ~150 us).
            self.transport.bufferSize = min(  # type: ignore[attr-defined]
                self.transport.bufferSize, self._limits.soft  # type: ignore[attr-defined]
            )
        cast(IConsumer, self.transport).registerProducer(cast(IPushProducer, self), True)
        session = self.session
        session.address = str(self.transport.getPeer())
        session.peer = _host_port(self.transport.getPeer())
        session.local = _host_port(self.transport.getHost())
        session.since = self._dispatcher.seconds()
        session.hang_up = self._hang_up
        stats = self._dispatcher.stats
        stats.connected()
        stats.clients[session.id] = session

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        stats = self._dispatcher.stats
        stats.disconnected()
        stats.clients.pop(self.session.id, None)
        self.session.hang_up = None


def _nothing() -> None:
    pass


def _host_port(address: object) -> str:
    """``host:port`` of a TCP address, as Redis's CLIENT LIST writes it."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"{host}:{port}"
