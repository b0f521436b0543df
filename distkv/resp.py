"""RESP2, the Redis protocol, on the shared client port.

A connection whose first byte is ``*`` speaks RESP2 for its whole life (the
front door decides). Requests are arrays of bulk strings::

    *3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$5\\r\\nhello\\r\\n

(an inline command, a plain line of words, is accepted too, as Redis does).
Replies use Redis's types: ``+OK``, ``-ERR ...``, ``:1``, ``$5\\r\\nhello``,
``$-1`` for nil and ``*n`` arrays; after ``HELLO 3``, RESP3's ``_`` nil and
``%n`` maps. Keys and values are binary-safe.

Everything that arrives in one read is parsed at once, run through the shared
:class:`~distkv.commands.Dispatcher`, and answered with a single write. A
malformed request gets Redis's ``-ERR Protocol error: ...`` and the connection
is closed, since the stream can no longer be split into requests; so does a
request larger than the node's request limit, and nothing stored changes.
"""

from __future__ import annotations

import sys
from operator import length_hint
from typing import Any, Dict, List, Optional, Tuple, cast

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.logger import Logger
from zope.interface import implementer

from distkv.commands import Dispatcher, Pending
from distkv.replies import (
    NIL,
    OK,
    Array,
    Error,
    Integer,
    Map,
    Reply,
    Status,
)
from distkv.replyqueue import ClientConnection

log = Logger()

#: Most arguments in one request (Redis allows 1024*1024 too).
MAX_ARGUMENTS = 1024 * 1024

_NIL = b"$-1\r\n"
_OK = b"+OK\r\n"


class ProtocolError(Exception):
    """The byte stream is not RESP; the message is Redis's wording."""


def parse(
    buffer: bytes, limit: int, fast: Optional[bool] = None
) -> Tuple[List[List[bytes]], int, Optional[str]]:
    """Split complete requests off ``buffer``: (requests, bytes consumed, error).

    ``limit`` bounds a single argument and a single request. Past it, or on
    anything that is not RESP, ``error`` says what was wrong (Redis's words)
    and ``requests`` holds the complete requests before it. ``fast`` says
    whether to try :func:`_split_plain` first (by default, on CPython only:
    PyPy's JIT runs the careful parser faster).
    """
    if fast is None:
        fast = SPLIT_FIRST
    requests: List[List[bytes]] = []
    pos = _split_plain(buffer, limit, requests) if fast and len(buffer) <= FAST_BUFFER else 0
    if pos == len(buffer):
        return requests, pos, None
    try:
        return _parse(buffer, limit, requests, pos) + (None,)
    except ProtocolError as e:
        return requests, len(buffer), str(e)


#: Whether :func:`parse` tries the fast path first: it costs CPython a third of
#: the careful parser's time, but PyPy's JIT compiles the careful one into
#: something faster still (230 ns against 690 ns for one SET).
SPLIT_FIRST = sys.implementation.name == "cpython"
#: The fast path takes buffers up to this size: a read is at most 64 KiB, and
#: a large request that arrives over many reads is left to :func:`_parse`,
#: which does not rescan what it has already seen.
FAST_BUFFER = 1 << 16
#: Requests of up to this many arguments of up to this many bytes each.
FAST_ARGUMENTS = 64
FAST_LENGTH = 4096
_COUNTS = {b"*%d" % n: n for n in range(1, FAST_ARGUMENTS + 1)}
_HEADS: Dict[int, List[bytes]] = {}


def _heads(limit: int) -> List[bytes]:
    """``b"$n"`` at index ``n``, for every length the fast path takes under ``limit``."""
    table = _HEADS.get(limit)
    if table is None:
        table = _HEADS[limit] = [b"$%d" % n for n in range(min(limit, FAST_LENGTH) + 1)]
    return table


def _split_plain(buffer: bytes, limit: int, requests: List[List[bytes]]) -> int:
    """The fast path: take the leading requests that are plain (short headers
    written the usual way, no CR LF inside an argument); return the bytes used.

    One ``split`` cuts the buffer at every CR LF; a request of ``n`` arguments
    is then its next ``2n + 1`` pieces, and it is plain when every ``$len``
    piece, looked up in a table, matches the length of the piece after it
    (an argument holding CR LF was cut in two and does not match). This
    replaces a ``find``, an ``int`` and bounds checks per argument, the bulk
    of a small request's cost on CPython, with a few calls into C per
    request. A run of requests of two or three arguments (GET, SET: a
    pipeline is mostly one or the other) is unpacked five or seven pieces at
    a time from one iterator (``zip`` reuses its tuple), which spares the
    index arithmetic of a piece at a time. The first request that is not
    plain, or not complete, stops it, and :func:`_parse` takes over from
    there with every check.
    """
    parts = buffer.split(b"\r\n")
    last = len(parts) - 1  # parts[last] is what follows the final CR LF
    heads = _HEADS.get(limit) or _heads(limit)
    append = requests.append
    i = 0
    try:
        while i < last:
            count = _COUNTS[parts[i]]
            end = i + 2 * count  # the piece holding the last argument
            if end >= last:
                break  # not all here yet
            if 2 <= count <= 3 and end + 1 < last:
                # More follows: take the run of requests of this shape.
                taken = len(requests)
                size = end + 1 - i
                # Groups of ``size`` pieces must never take in parts[last],
                # which no CR LF follows yet: zip over a copy without it,
                # unless the groups from the start end before it anyway (a
                # buffer of whole requests: the usual case). islice would
                # cost more per piece than the copy.
                if i or (last + 1) % size == 0:
                    pieces = iter(parts[i:last])
                else:
                    pieces = iter(parts)
                try:
                    if count == 3:
                        for star, head1, arg1, head2, arg2, head3, arg3 in zip(
                            pieces, pieces, pieces, pieces, pieces, pieces, pieces
                        ):
                            if (
                                star != b"*3"
                                or head1 != heads[len(arg1)]
                                or head2 != heads[len(arg2)]
                                or head3 != heads[len(arg3)]
                            ):
                                break
                            append([arg1, arg2, arg3])
                    else:
                        for star, head1, arg1, head2, arg2 in zip(
                            pieces, pieces, pieces, pieces, pieces
                        ):
                            if star != b"*2" or head1 != heads[len(arg1)] or head2 != heads[len(arg2)]:
                                break
                            append([arg1, arg2])
                finally:  # an IndexError ends the run too: count what it took
                    i += size * (len(requests) - taken)
                if len(requests) == taken:
                    break  # the request at i is not plain
                continue
            # One request (of any size), the last in the buffer or followed
            # by one of another shape. Each "$n" must be the head of a piece
            # of n bytes (an IndexError past the table: too long for the
            # fast path).
            if count == 3:
                if (
                    parts[i + 1] != heads[len(parts[i + 2])]
                    or parts[i + 3] != heads[len(parts[i + 4])]
                    or parts[i + 5] != heads[len(parts[i + 6])]
                ):
                    break
            elif count == 2:
                if (
                    parts[i + 1] != heads[len(parts[i + 2])]
                    or parts[i + 3] != heads[len(parts[i + 4])]
                ):
                    break
            elif parts[i + 1 : end : 2] != [heads[len(arg)] for arg in parts[i + 2 : end + 1 : 2]]:
                break
            append(parts[i + 2 : end + 1 : 2])
            i = end + 1
    except (KeyError, IndexError):  # not a "*n" the fast path takes; too long
        pass
    if i == last and not parts[last]:
        return len(buffer)  # every request taken (the usual case)
    return sum(map(len, parts[:i])) + 2 * i


def _parse(
    buffer: bytes, limit: int, requests: List[List[bytes]], pos: int
) -> Tuple[List[List[bytes]], int]:
    end = len(buffer)
    find = buffer.find
    while pos < end:
        if buffer[pos] != 42:  # not '*': an inline command, one line of words
            eol = find(b"\n", pos)
            if eol < 0:
                if end - pos > limit:
                    raise ProtocolError("Protocol error: too big inline request")
                break
            words = buffer[pos:eol].split()
            pos = eol + 1
            if words:
                requests.append(words)
            continue
        eol = find(b"\r\n", pos)
        if eol < 0:
            if end - pos > 32:
                raise ProtocolError("Protocol error: invalid multibulk length")
            break
        try:
            count = int(buffer[pos + 1 : eol])
        except ValueError:
            raise ProtocolError("Protocol error: invalid multibulk length") from None
        if count > MAX_ARGUMENTS:
            raise ProtocolError("Protocol error: invalid multibulk length")
        at = eol + 2
        args = []
        for _ in range(count):
            if at >= end:
                break
            if buffer[at] != 36:  # '$'
                raise ProtocolError(
                    f"Protocol error: expected '$', got '{chr(buffer[at])}'"
                )
            eol = find(b"\r\n", at)
            if eol < 0:
                if end - at > 32:
                    raise ProtocolError("Protocol error: invalid bulk length")
                break
            try:
                length = int(buffer[at + 1 : eol])
            except ValueError:
                raise ProtocolError("Protocol error: invalid bulk length") from None
            if length < 0 or length > limit:
                raise ProtocolError("Protocol error: invalid bulk length")
            start = eol + 2
            stop = start + length
            if stop + 2 > end:
                break
            args.append(buffer[start:stop])
            at = stop + 2
        else:
            pos = at
            if args:
                requests.append(args)
            continue
        if at - pos > limit:
            raise ProtocolError("Protocol error: request exceeds the size limit")
        break  # the rest of this request has not arrived yet
    return requests, pos


def encode(reply: Reply) -> bytes:
    """The RESP2 bytes for ``reply``."""
    if type(reply) is bytes:
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    kind = type(reply)
    if reply is NIL:
        return _NIL
    # Every other reply type's first field is the one to encode (a Status's
    # text); an index rather than typing.cast, which is a Python call on this
    # hot path.
    field: Any = reply[0]  # type: ignore[index]
    if kind is Status:
        return b"+%s\r\n" % (field,)
    if kind is Integer:
        return b":%d\r\n" % (field,)
    if kind is Error:
        message: str = field.replace("\r", " ").replace("\n", " ")
        return b"-" + message.encode("utf-8") + b"\r\n"
    if kind is Array or kind is Map:
        return b"*%d\r\n" % (len(field),) + b"".join([encode(item) for item in field])
    text = "".join(line + "\r\n" for line in field).encode("utf-8")  # Lines
    return b"$%d\r\n%s\r\n" % (len(text), text)


def encode3(reply: Reply) -> bytes:
    """The RESP3 bytes for ``reply``: nil is ``_``, a map is ``%``; else as RESP2."""
    if reply is NIL:
        return b"_\r\n"
    if type(reply) is Array:
        items = reply.items
        return b"*%d\r\n" % (len(items),) + b"".join([encode3(item) for item in items])
    if type(reply) is Map:
        items = reply.items
        return b"%%%d\r\n" % (len(items) // 2,) + b"".join([encode3(item) for item in items])
    return encode(reply)


@implementer(IHalfCloseableProtocol, IPushProducer)
class RespProtocol(ClientConnection):
    """Parses RESP2 requests, runs them, writes Redis-shaped replies."""

    def __init__(self, dispatcher: Dispatcher, max_request: int) -> None:
        super().__init__(dispatcher, "resp", self._encode)
        self._limit = max_request
        self._buffer = b""
        self._closing = False
        self._paused = False
        self._eof = False

    def _encode(self, reply: Reply) -> bytes:
        return encode3(reply) if self.session.protocol == 3 else encode(reply)

    # IPushProducer: the transport pauses us while the client is not reading
    # its replies; requests then wait, unparsed, in our buffer.
    def pauseProducing(self) -> None:
        self._paused = True
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        cast(IPushProducer, self.transport).resumeProducing()
        self.dataReceived(b"")
        if self._eof and not self._paused:
            self._close()

    def stopProducing(self) -> None:
        self._closing = True

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        buffer = self._buffer + data if self._buffer else data
        if self._paused:
            self._buffer = buffer
            return
        requests, used, error = parse(buffer, self._limit)
        self._buffer = buffer[used:] if used < len(buffer) else b""
        if len(requests) > 1:
            # One wall-clock reading stamps the writes of one read.
            clock = self._dispatcher.clock
            clock.hold()
            try:
                self._answer(requests)
            finally:
                clock.release()
        else:
            self._answer(requests)
        if error is not None and not self._closing:
            log.warn("Closing RESP client {peer}: {why}", peer=self.session.address, why=error)
            if self._owed:
                self._owed.then(b"-ERR " + error.encode() + b"\r\n")
            else:
                self.write(b"-ERR " + error.encode() + b"\r\n")
            self._closing = True
        if self._closing:
            self._buffer = b""
            self._owed.close_when_sent()

    def _answer(self, requests: List[List[bytes]]) -> None:
        """Run ``requests`` and send their replies, in order."""
        dispatcher = self._dispatcher
        dispatcher.stats.commands_processed += len(requests)
        commands = dispatcher.commands
        session = self.session
        owed = self._owed
        waiting = owed.slots  # replies still owed, in order (see ReplyQueue)
        write = self.write
        out: List[bytes] = []
        remaining = iter(requests)
        for request in remaining:
            # Dispatcher.run's lookup, done here: one Python call fewer per request.
            try:
                command = commands[request[0]]
            except KeyError:
                command = dispatcher.command(request[0])
            outcome = command(request, session)
            if outcome is OK:  # most writes on a node without a data dir
                if waiting:
                    owed.then(_OK)
                else:
                    out.append(_OK)
                continue
            kind = type(outcome)
            if kind is Pending:  # a write waiting for its commit
                if out:
                    write(b"".join(out))
                    out = []
                owed.wait_for(outcome)  # type: ignore[arg-type]
                continue
            if kind is bytes:
                # What encode() (and encode3()) make of a value, inline: GET's reply.
                data = b"$%d\r\n%s\r\n" % (len(outcome), outcome)  # type: ignore[arg-type]
                close = False
            else:
                if session.protocol == 2:
                    data = encode(outcome)  # type: ignore[arg-type]
                else:
                    data = encode3(outcome)  # type: ignore[arg-type]
                close = kind is Status and outcome.close  # type: ignore[union-attr]
            if waiting:
                owed.then(data, close)
            else:
                out.append(data)
            if close:
                self._closing = True
                # Requests after QUIT are dropped, not processed.
                dispatcher.stats.commands_processed -= length_hint(remaining)
                break
        if out:
            write(b"".join(out))

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self._owed.close_when_sent()

    def readConnectionLost(self) -> None:
        # Half-close: answer what arrived (done as it arrived), then close.
        self._eof = True
        if not self._paused:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

