"""The text protocol that ``nc`` users type, one command per line.

Grammar (``\\r\\n`` or ``\\n`` ends every line; the command word is
case-insensitive; spaces and tabs separate words)::

    line    = "SET" ws key " " value      ; value: the rest of the line, spaces kept
            | word *(ws arg)              ; every other command
    ws      = 1*(" " | "\\t")
    key     = 1*(any byte but space, tab or newline)
    reply   = "OK" | "PONG" | value | "(nil)" | integer | "ERR " message
            | *(line) "END"               ; multi-line reports

An empty line is ignored. A line longer than the request limit (its line
ending, ``\\n`` or ``\\r\\n``, not counted) gets ``ERR``
and the connection is closed, because the rest of the stream can no longer be
split into commands reliably; nothing stored changes. When the client
half-closes its side, every command received is answered (a last line without
its newline included) before the server closes. A client that sends faster
than it reads its replies is not read from while its replies back up (the
protocol is the transport's streaming producer), so neither requests nor
replies pile up in memory; nor do replies waiting behind a commit (past the
soft output limit no further line runs until they are sent), and a reply
larger than the hard output limit is not built: ``ERR`` and the connection
is closed. A write is answered once it is committed to disk
(when the node has a data dir); replies still leave in request order, so a
reply that is ready waits behind an earlier write's.
"""

from __future__ import annotations

import re
from typing import List, Optional, Union, cast

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv.front.commands import (
    NIL,
    Array,
    Dispatcher,
    Error,
    Lines,
    Map,
    Outcome,
    Pending,
    Reply,
    Request,
    Status,
)
from distkv.front.lines import LineReader, LineTooLongError
from distkv.front.replies import NIL_ARRAY, integer_text
from distkv.front.replyqueue import ClientConnection, OutputLimits, reply_size
from distkv.ratelog import printable

log = Logger()

_WHITESPACE = b" \t"
_WORD = re.compile(b"[^ \t]+")


class ParseError(Exception):
    pass


def parse_line(line: bytes) -> Request:
    """Split one text-protocol line (without its line ending) into a Request.

    Words are separated by spaces and tabs only, for every command alike (a
    form feed or vertical tab is part of a key, as it is in SET's).
    """
    stripped = line.lstrip(_WHITESPACE)
    first = _WORD.match(stripped)
    name = first.group().upper() if first else b""
    if name != b"SET":
        return Request(name, tuple(_WORD.findall(stripped, first.end() if first else 0)))
    rest = stripped[first.end() :].lstrip(_WHITESPACE)  # type: ignore[union-attr]
    for index, byte in enumerate(rest):
        if byte in _WHITESPACE:
            return Request(name, (rest[:index], rest[index + 1 :]))
    return Request(name, (rest,) if rest else ())


def format_reply(reply: Reply) -> bytes:
    """The text-protocol bytes for ``reply``, line ending included."""
    if isinstance(reply, bytes):
        return reply + b"\r\n"
    if reply is NIL or reply is NIL_ARRAY:
        return b"(nil)\r\n"
    if isinstance(reply, Status):
        return reply.text + b"\r\n"
    if isinstance(reply, int):
        return b"%d\r\n" % (reply,)
    if type(reply) is tuple:  # an integer already written out (replies.IntegerText)
        return integer_text(reply) + b"\r\n"
    if isinstance(reply, Error):
        message = reply.message.replace("\r", " ").replace("\n", " ")
        if not message.startswith("ERR "):
            message = "ERR " + message
        return message.encode("utf-8", "surrogateescape") + b"\r\n"
    if isinstance(reply, (Array, Map)):
        return b"".join(_array_lines(reply)) + b"END\r\n"
    assert isinstance(reply, Lines)
    return "".join(line + "\r\n" for line in reply.lines + ("END",)).encode("utf-8")


def _array_lines(array: Union[Array, Map]) -> List[bytes]:
    """An array's elements one per line (nested arrays inline), for the text protocol."""
    out = []
    for item in array.items:
        if isinstance(item, (Array, Map)):
            out.extend(_array_lines(item))
        else:
            out.append(format_reply(item))
    return out


@implementer(IHalfCloseableProtocol, IPushProducer)
class TextProtocol(ClientConnection):
    """Parses lines, runs them through the dispatcher, writes the replies.

    Its reads go to a :class:`~distkv.front.lines.LineReader`, which searches
    each byte for the line end once however the stream is cut (Twisted's
    ``LineReceiver`` joined and split its whole buffer again at every read:
    a line arriving in ``n`` reads cost ``n`` times its size), and lines are
    taken from it one at a time while the connection is not paused.
    """

    def __init__(
        self, dispatcher: Dispatcher, max_request: int, limits: Optional[OutputLimits] = None
    ) -> None:
        super().__init__(dispatcher, "text", format_reply, limits)
        self._limit = max_request
        self._reader = LineReader(max_request)
        #: No line is taken from the reader (and the transport is paused)
        #: while this holds: the transport paused us, or we paused ourselves.
        self.paused = False
        #: Lines are being taken (further up the stack): a read that arrives
        #: meanwhile is only kept, and taken by that loop.
        self._receiving = False
        self._closing = False
        self._eof = False
        #: The transport paused us; we stopped (replies behind a commit
        #: passed the soft limit). Lines run again once neither holds.
        self._transport_paused = False
        self._stopped = False
        #: A command has not run yet (its fetch or round is out): the next
        #: lines wait for it, and the connection is not read meanwhile.
        self._blocked = False
        self._owed.on_sent = self._owed_sent

    def pauseProducing(self) -> None:
        self._transport_paused = True
        self._pause()

    def resumeProducing(self) -> None:
        self._transport_paused = False
        self._go_on()

    def stopProducing(self) -> None:
        self.paused = True
        cast(IPushProducer, self.transport).stopProducing()

    def _pause(self) -> None:
        """Take no further line and stop reading."""
        self.paused = True
        cast(IPushProducer, self.transport).pauseProducing()

    def _go_on(self) -> None:
        """Run the lines held back and read again, unless something holds them."""
        if self._stopped or self._blocked or self._transport_paused or self._closing:
            return
        self.paused = False
        cast(IPushProducer, self.transport).resumeProducing()
        self.dataReceived(b"")  # the lines held back while we were paused
        if self._eof and not self.paused:
            self._finish()

    def _owed_sent(self) -> None:
        if self._stopped and self._owed.held <= self._limits.soft:
            self._stopped = False
            self._go_on()

    def _unblock(self, error: Optional[str]) -> None:
        """The command the connection waited for has run: go on."""
        self._blocked = False
        self._go_on()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # nothing after QUIT or an error runs: not even kept
        reader = self._reader
        if self._receiving:
            reader.feed(data)  # taken by the loop below, further up the stack
            return
        self._receiving = True
        try:
            # The usual read of a client that waits for each reply, one whole
            # line, is run without being kept; any other is fed to the reader.
            line = None if self.paused else reader.lone_line(data)
            if line is None:
                reader.feed(data)
            while not self.paused and not self._closing:
                if line is None:
                    try:
                        line = reader.next_line()
                    except LineTooLongError as e:
                        self._too_long(e.start)
                        return
                    if line is None:
                        return
                self.lineReceived(line)
                line = None
                if getattr(self.transport, "disconnecting", False):
                    return  # the connection is closing: run nothing more
        finally:
            self._receiving = False

    def lineReceived(self, line: bytes) -> None:
        """Run one line (its line ending removed, within the request limit)."""
        if self._closing:
            return
        if not line.strip():
            return
        self._respond(self._dispatcher.execute(parse_line(line), self.session))

    def _respond(self, outcome: Outcome) -> None:
        if isinstance(outcome, Pending):
            self._owed.wait_for(outcome)
            blocker = self.session.waiting
            if blocker is not None:
                # It has not run yet: the next lines wait until it has.
                self.session.waiting = None
                self._blocked = True
                if not self.paused:
                    self._pause()
                blocker.when_done(self._unblock)
            return
        close = isinstance(outcome, Status) and outcome.close
        if isinstance(outcome, (Array, Map, Lines)):
            size = reply_size(outcome)
            if size > self._limits.hard:
                self._warn(
                    "Refusing a reply of about {size} bytes to {peer}: over the client output "
                    "hard limit of {hard}; closing",
                    size=size, hard=self._limits.hard,
                )
                outcome = Error(f"ERR reply of about {size} bytes exceeds the client output "
                                f"hard limit of {self._limits.hard} bytes; closing")
                close = True
        if self._owed:
            self._owed.then(format_reply(outcome), close)
            if close:
                self._closing = True
            elif self._owed.held > self._limits.soft and not self._stopped:
                # Replies waiting for a commit: run no further line until
                # they are sent (the transport cannot pause us for them).
                self._stopped = True
                self._pause()
            return
        self.write(format_reply(outcome))
        if close:
            self._close()

    def _too_long(self, start: bytes) -> None:
        """A line over the limit, of which ``start`` is the first bytes."""
        if self._closing:
            return
        self._warn(
            "Closing {peer}: request over the {limit}-byte limit, starting {start}",
            limit=self._limit, start=printable(start),
        )
        self._respond(
            Error(f"ERR request exceeds the limit of {self._limit} bytes; closing")
        )
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._reader.clear()
        self._owed.close_when_sent()

    def readConnectionLost(self) -> None:
        # The client sent all it will send: answer everything, a final
        # unterminated line too, then close once the replies are written.
        self._eof = True
        if not self.paused:
            self._finish()

    def _finish(self) -> None:
        if self._closing or self._receiving:
            return  # (receiving: the loop taking lines finishes, then its caller)
        self.dataReceived(b"")  # lines held back while we were paused
        if self.paused or self._closing:
            return
        rest = self._reader.rest()  # a last line without its "\n"
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if len(rest) > self._limit:
            self._too_long(rest)
        elif rest:
            self.lineReceived(rest)
        if not self._closing:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Lines held back (behind a command that had not run) are dropped.
        self._closing = True
        super().connectionLost(reason)
