"""The text protocol that ``nc`` users type, one command per line.

Grammar (``\\r\\n`` or ``\\n`` ends every line; the command word is
case-insensitive; spaces and tabs separate words)::

    line    = "SET" ws key " " value      ; value: the rest of the line, spaces kept
            | word *(ws arg)              ; every other command
    key     = 1*(any byte but whitespace)
    reply   = "OK" | "PONG" | value | "(nil)" | integer | "ERR " message
            | *(line) "END"               ; multi-line reports

An empty line is ignored. A line longer than the request limit gets ``ERR``
and the connection is closed, because the rest of the stream can no longer be
split into commands reliably; nothing stored changes. When the client
half-closes its side, every command received is answered (a last line without
its newline included) before the server closes. A client that sends faster
than it reads its replies is not read from while its replies back up (the
protocol is the transport's streaming producer), so neither requests nor
replies pile up in memory. A write is answered once it is committed to disk
(when the node has a data dir); replies still leave in request order, so a
reply that is ready waits behind an earlier write's.
"""

from __future__ import annotations

from typing import List, Union

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from distkv.commands import (
    NIL,
    Array,
    Dispatcher,
    Error,
    Integer,
    Lines,
    Map,
    Outcome,
    Pending,
    Reply,
    Request,
    Status,
)
from distkv.replyqueue import ClientConnection

log = Logger()

_WHITESPACE = b" \t"


class ParseError(Exception):
    pass


def parse_line(line: bytes) -> Request:
    """Split one text-protocol line (without its line ending) into a Request."""
    stripped = line.lstrip(_WHITESPACE)
    words = stripped.split(None, 1)
    name = words[0].upper()
    if name != b"SET":
        return Request(name, tuple(stripped.split()[1:]))
    rest = words[1].lstrip(_WHITESPACE) if len(words) > 1 else b""
    for index, byte in enumerate(rest):
        if byte in _WHITESPACE:
            return Request(name, (rest[:index], rest[index + 1 :]))
    return Request(name, (rest,) if rest else ())


def format_reply(reply: Reply) -> bytes:
    """The text-protocol bytes for ``reply``, line ending included."""
    if isinstance(reply, bytes):
        return reply + b"\r\n"
    if reply is NIL:
        return b"(nil)\r\n"
    if isinstance(reply, Status):
        return reply.text + b"\r\n"
    if isinstance(reply, Integer):
        return b"%d\r\n" % (reply.number,)
    if isinstance(reply, Error):
        message = reply.message.replace("\r", " ").replace("\n", " ")
        if not message.startswith("ERR "):
            message = "ERR " + message
        return message.encode("utf-8") + b"\r\n"
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
class TextProtocol(ClientConnection, LineReceiver):
    """Parses lines, runs them through the dispatcher, writes the replies."""

    delimiter = b"\n"

    def __init__(self, dispatcher: Dispatcher, max_request: int) -> None:
        super().__init__(dispatcher, "text", format_reply)
        self.MAX_LENGTH = max_request
        self._closing = False
        self._eof = False

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._eof and not self.paused:
            self._finish()

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        self._respond(self._dispatcher.execute(parse_line(line), self.session))

    def _respond(self, outcome: Outcome) -> None:
        if isinstance(outcome, Pending):
            self._owed.wait_for(outcome)
            return
        close = isinstance(outcome, Status) and outcome.close
        if self._owed:
            self._owed.then(format_reply(outcome), close)
            if close:
                self._closing = True
            return
        self.write(format_reply(outcome))
        if close:
            self._close()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._closing:
            self.clearLineBuffer()
            return
        log.warn(
            "Closing {peer}: request over the {limit}-byte limit",
            peer=self.transport.getPeer(),
            limit=self.MAX_LENGTH,
        )
        self._respond(
            Error(f"ERR request exceeds the limit of {self.MAX_LENGTH} bytes; closing")
        )
        self._close()

    def _close(self) -> None:
        self._closing = True
        self.clearLineBuffer()
        self._owed.close_when_sent()

    def readConnectionLost(self) -> None:
        # The client sent all it will send: answer everything, a final
        # unterminated line too, then close once the replies are written.
        self._eof = True
        if not self.paused:
            self._finish()

    def _finish(self) -> None:
        if self._closing:
            return
        self.dataReceived(b"")  # lines held back while we were paused
        if self.paused or self._closing:
            return
        rest = self.clearLineBuffer()
        if rest:
            self.lineReceived(rest)
        if not self._closing:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()
