"""RESP2, the Redis protocol, on the shared client port.

A connection whose first byte is ``*`` speaks RESP2 for its whole life (the
front door decides). Requests are arrays of bulk strings::

    *3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$5\\r\\nhello\\r\\n

(an inline command, a plain line of words, is accepted too, and split with
Redis's quoting rules: see :mod:`distkv.front.inline`).
Replies use Redis's types: ``+OK``, ``-ERR ...``, ``:1``, ``$5\\r\\nhello``,
``$-1`` for nil and ``*n`` arrays; after ``HELLO 3``, RESP3's ``_`` nil and
``%n`` maps. Keys and values are binary-safe.

Everything that arrives in one read is parsed at once, run through the shared
:class:`~distkv.front.commands.Dispatcher`, and answered with a single write. A
malformed request gets Redis's ``-ERR Protocol error: ...`` and the connection
is closed, since the stream can no longer be split into requests; so does a
request larger than the node's request limit, and nothing stored changes.
"""

from __future__ import annotations

import sys
from array import array
from operator import length_hint
from typing import Any, Dict, List, Optional, Tuple, cast

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from distkv.front.cmdstats import Samples
from distkv.front.commands import Dispatcher, Pending
from distkv.front.inline import split_inline
from distkv.front.replies import (
    NIL,
    NIL_ARRAY,
    OK,
    Array,
    Error,
    Map,
    Reply,
    Status,
    strict_int,
)
from distkv.front.replyqueue import ClientConnection, OutputLimits
from distkv.front.sendnow import buffered
from distkv.ratelog import printable

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

    ``limit`` bounds a single argument and the sum of a request's arguments
    (the command's name aside: ``SET``'s key and value together).
    Past it, or on anything that is not RESP, ``error`` says what was wrong
    (Redis's words) and ``requests`` holds the complete requests before it.
    ``fast`` says whether to try :func:`_split_plain` first (by default, on
    CPython only: PyPy's JIT runs the careful parser faster). A connection
    uses :class:`RequestReader`, which keeps its place across reads.
    """
    reader = RequestReader(limit, fast)
    requests: List[List[bytes]] = []
    error = reader.feed(buffer, requests)
    if error is not None:
        return requests, len(buffer), error
    return requests, len(buffer) - reader.unfinished(), None


class RequestReader:
    """Splits one connection's RESP stream into requests, keeping its place.

    The arguments of a request that has not fully arrived are kept, with how
    many are still to come, so a read never parses again what an earlier
    read parsed; a bulk string still arriving is collected chunk by chunk
    and joined once it is complete. The work done is therefore linear in the
    bytes received, whatever their fragmentation. :attr:`scanned` counts the
    bytes handed to the parsers (tests hold it against the input's size).

    Those arguments are kept packed (:class:`PackedArguments`), not as one
    ``bytes`` object each: that costs about 45 bytes of heap for a 2-byte
    argument (the object and its place in a list), so an unfinished
    ``MGET`` of 524,287 of them, 1 MiB by the request limit's count, held
    23 MB (28 MiB of RSS). Packed, an unfinished request of ``n`` arguments
    of ``b`` bytes in all costs about ``b + n`` bytes, whatever a client does
    with it. The arguments become ``bytes`` again when the request is
    complete, just before it runs, as those of a request that arrives in
    one read are; such a request is never packed.
    """

    def __init__(self, limit: int, fast: Optional[bool] = None) -> None:
        self.limit = limit
        self.fast = SPLIT_FIRST if fast is None else fast
        #: Bytes received and not parsed yet; they start at an element.
        self.buffer = b""
        #: How many arguments of the unfinished request are still to come
        #: (0: no request is unfinished), and the bytes of its arguments so
        #: far (the command's name aside, as the limit counts them).
        self._left = 0
        self._size = 0
        #: The arguments of the unfinished request parsed so far.
        self._packed = PackedArguments()
        #: Bytes of that request already consumed (parsed into ``_packed``).
        self._consumed = 0
        #: While a bulk string (or an inline line) is incomplete: the reads
        #: since, unjoined, and how many bytes the buffer needs before it is
        #: worth parsing again (0: parse at every read).
        self._chunks: List[bytes] = []
        self._chunked = 0
        self._need = 0
        self._inline = False
        self.scanned = 0

    def busy(self) -> bool:
        """Whether part of a request is held (the next read continues it)."""
        return bool(self.buffer) or self._left > 0 or bool(self._chunks)

    def unfinished(self) -> int:
        """Bytes received of the request that has not fully arrived."""
        return len(self.buffer) + self._chunked + self._consumed

    def feed(self, data: bytes, requests: List[List[bytes]]) -> Optional[str]:
        """Append the complete requests ``data`` finishes to ``requests``;
        return Redis's protocol error if the stream is not valid RESP."""
        if self._chunks or self._need or self._inline:
            if self._inline and b"\n" not in data:
                self._chunks.append(data)
                self._chunked += len(data)
                if len(self.buffer) + self._chunked > self.limit:
                    return "Protocol error: too big inline request"
                return None
            if not self._inline and len(self.buffer) + self._chunked + len(data) < self._need:
                self._chunks.append(data)
                self._chunked += len(data)
                return None
            self._chunks.append(data)
            buffer = b"".join([self.buffer] + self._chunks)
            self._chunks = []
            self._chunked = 0
            self._need = 0
            self._inline = False
        else:
            buffer = self.buffer + data if self.buffer else data
        self.scanned += len(buffer)
        pos = 0
        if not self._left and self.fast and len(buffer) <= FAST_BUFFER:
            pos = _split_plain(buffer, self.limit, requests)
            if pos == len(buffer):
                self.buffer = b""
                return None
        try:
            pos = self._parse(buffer, pos, requests)
        except ProtocolError as e:
            self.buffer = b""
            self._left = 0
            self._packed = PackedArguments()
            return str(e)
        self.buffer = buffer[pos:] if pos < len(buffer) else b""
        return None

    def _parse(self, buffer: bytes, pos: int, requests: List[List[bytes]]) -> int:
        end = len(buffer)
        find = buffer.find
        limit = self.limit
        left = self._left
        size = self._size
        packed = self._packed
        held = packed.count  # arguments of the unfinished request packed so far
        # The unfinished request's arguments parsed since and not packed, and
        # at which ``left`` to consider packing them.
        args: Optional[List[bytes]] = [] if left else None
        mark = left - GROUP
        begun = pos - self._consumed  # where the unfinished request began
        while True:
            if args is None:
                if pos >= end:
                    break
                begun = pos
                if buffer[pos] != 42:  # not '*': an inline command, one line of words
                    eol = find(b"\n", pos)
                    if eol < 0:
                        if end - pos > limit:
                            raise ProtocolError("Protocol error: too big inline request")
                        self._inline = True
                        break
                    line = buffer[pos:eol]
                    words = split_inline(line[:-1] if line.endswith(b"\r") else line)
                    if words is None:
                        raise ProtocolError("Protocol error: unbalanced quotes in request")
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
                    # Redis's digits: a number read from n characters is at
                    # least _LOWEST[n] unless some of them are a sign, a
                    # space, a "_" or a leading zero, which int() lets pass.
                    lowest = _LOWEST[eol - pos - 1]
                    count = int(buffer[pos + 1 : eol])
                except (IndexError, ValueError):
                    raise ProtocolError("Protocol error: invalid multibulk length") from None
                if count > MAX_ARGUMENTS or (
                    count < lowest and _number(buffer[pos + 1 : eol]) is None
                ):
                    raise ProtocolError("Protocol error: invalid multibulk length")
                pos = eol + 2
                if count <= 0:
                    continue  # Redis ignores *0 and *-1
                args = []
                left = count
                mark = left - GROUP
                size = 0
            while left:
                if pos >= end:
                    break
                if buffer[pos] != 36:  # '$'
                    raise ProtocolError(
                        f"Protocol error: expected '$', got '{chr(buffer[pos])}'"
                    )
                eol = find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 32:
                        raise ProtocolError("Protocol error: invalid bulk length")
                    break
                try:
                    lowest = _LOWEST[eol - pos - 1]  # as for the count
                    length = int(buffer[pos + 1 : eol])
                except (IndexError, ValueError):
                    raise ProtocolError("Protocol error: invalid bulk length") from None
                if length < lowest or length > limit:
                    raise ProtocolError("Protocol error: invalid bulk length")
                counted = length if args or held else 0  # the command's name is not counted
                size += counted
                if size > limit:
                    # Refused whole, before anything in it runs.
                    raise ProtocolError("Protocol error: request exceeds the size limit")
                stop = eol + 2 + length
                if stop + 2 > end:
                    size -= counted
                    self._need = stop + 2 - pos  # collect the reads until it is all here
                    break
                args.append(buffer[eol + 2 : stop])
                left -= 1
                pos = stop + 2
                if left == mark:
                    # Every GROUP arguments: if the rest cannot be in this
                    # read (an argument takes 6 bytes at least), pack those
                    # parsed, so that an unfinished request never has a list
                    # of many more objects. One that may end here is not.
                    mark = left - GROUP
                    if end - pos < 6 * left:
                        packed.add(args)
                        held += len(args)
                        args = []
            if left:
                break  # the rest of this request has not arrived yet
            if held:
                args = packed.take(args)
                held = 0
            requests.append(args)
            args = None
        self._left = left
        self._size = size
        if args is not None:
            self._consumed = pos - begun
            if args:
                packed.add(args)
        else:
            self._consumed = 0
        return pos


class PackedArguments:
    """Arguments kept end to end rather than as one ``bytes`` object each.

    Their bytes go into blocks of about :data:`BLOCK` bytes, their lengths
    into ``array`` blocks of the narrowest item that holds them (one byte
    each while they are under 256 bytes). No block grows much past that
    size: growing one buffer to a megabyte reallocates it dozens of times,
    and the holes that leaves in the heap doubled the RSS it cost.
    """

    __slots__ = ("count", "_blocks", "_tail", "_sizes", "_lengths")

    def __init__(self) -> None:
        #: How many arguments are held.
        self.count = 0
        self._blocks: List[bytes] = []
        self._tail = bytearray()
        self._sizes: List[array[int]] = []
        self._lengths = array("B")

    def add(self, args: List[bytes]) -> None:
        """Keep ``args`` after those kept before."""
        self.count += len(args)
        try:
            sizes = array("B", bytes(map(len, args)))
        except ValueError:  # an argument of 256 bytes or more
            sizes = array(_width(max(map(len, args))), map(len, args))
        lengths = self._lengths
        if not lengths:
            self._lengths = sizes
        elif sizes.typecode == lengths.typecode and len(lengths) < BLOCK:
            lengths += sizes
        else:
            self._sizes.append(lengths)
            self._lengths = sizes
        data = b"".join(args)
        tail = self._tail
        if not tail and len(data) >= BLOCK:
            self._blocks.append(data)
            return
        tail += data
        if len(tail) >= BLOCK:
            self._blocks.append(bytes(tail))
            self._tail = bytearray()

    def take(self, args: List[bytes]) -> List[bytes]:
        """The arguments held, as ``bytes`` again, followed by ``args``; the
        held ones are let go."""
        data = b"".join(self._blocks + [self._tail])
        sizes = self._sizes + [self._lengths]
        self.count = 0
        self._blocks = []
        self._tail = bytearray()
        self._sizes = []
        self._lengths = array("B")
        held: List[bytes] = []
        append = held.append
        start = 0
        for lengths in sizes:
            for size in lengths:
                end = start + size
                append(data[start:end])
                start = end
        held += args
        return held


#: Bytes (and lengths) per block of :class:`PackedArguments`.
BLOCK = 1 << 16
#: How many arguments of a request the parser lists before it considers
#: packing them (see :meth:`RequestReader._parse`).
GROUP = 4096

#: The largest length each ``array`` typecode of :class:`PackedArguments` holds.
_LARGEST = {code: (1 << 8 * array(code).itemsize) - 1 for code in "BHIQ"}


def _width(length: int) -> str:
    """The narrowest ``array`` typecode that holds ``length``."""
    return next(code for code in "BHIQ" if length <= _LARGEST[code])


#: The least number of each width (in characters, up to Redis's 20) written
#: the one usual way: a number ``int`` reads from that many characters is
#: smaller only if something other than digits took some of them.
_LOWEST = [1, 0] + [10 ** (width - 1) for width in range(2, 21)]


#: A length read as Redis reads one (``string2ll``); see :func:`strict_int`.
_number = strict_int


#: Whether :func:`parse` tries the fast path first: it costs CPython a third of
#: the careful parser's time, but PyPy's JIT compiles the careful one into
#: something faster still (230 ns against 690 ns for one SET).
SPLIT_FIRST = sys.implementation.name == "cpython"
#: The fast path takes buffers up to this size: a large request that arrives
#: over many reads is left to :func:`_parse`, which does not rescan what it
#: has already seen. (A read is up to the transport's ``bufferSize``: 64 KiB,
#: or the output soft limit if lower; see
#: :class:`~distkv.front.replyqueue.ClientConnection`.)
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
        # Arguments of at most limit // FAST_ARGUMENTS bytes: a request the
        # fast path takes never exceeds the limit in all.
        top = min(limit // FAST_ARGUMENTS, FAST_LENGTH)
        table = _HEADS[limit] = [b"$%d" % n for n in range(top + 1)]
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


def encode(reply: Reply) -> bytes:
    """The RESP2 bytes for ``reply``."""
    if type(reply) is bytes:
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    kind = type(reply)
    if reply is NIL:
        return _NIL
    if reply is NIL_ARRAY:
        return b"*-1\r\n"
    if kind is int:
        return b":%d\r\n" % (reply,)  # type: ignore[str-format]
    if kind is tuple:  # IntegerText: INCR's, already written out
        return b":" + reply[0] + b"\r\n"  # type: ignore[index,operator,no-any-return]
    # Every other reply type's first field is the one to encode (a Status's
    # text); an index rather than typing.cast, which is a Python call on this
    # hot path.
    field: Any = reply[0]  # type: ignore[index]
    if kind is Status:
        return b"+%s\r\n" % (field,)
    if kind is Error:
        message: str = field.replace("\r", " ").replace("\n", " ")
        return b"-" + message.encode("utf-8", "surrogateescape") + b"\r\n"
    if kind is Array or kind is Map:
        return b"*%d\r\n" % (len(field),) + b"".join([encode(item) for item in field])
    text = "".join(line + "\r\n" for line in field).encode("utf-8")  # Lines
    return b"$%d\r\n%s\r\n" % (len(text), text)


def encode3(reply: Reply) -> bytes:
    """The RESP3 bytes for ``reply``: nil is ``_``, a map is ``%``; else as RESP2."""
    if reply is NIL or reply is NIL_ARRAY:
        return b"_\r\n"
    if type(reply) is Array:
        items = reply.items
        return b"*%d\r\n" % (len(items),) + b"".join([encode3(item) for item in items])
    if type(reply) is Map:
        items = reply.items
        return b"%%%d\r\n" % (len(items) // 2,) + b"".join([encode3(item) for item in items])
    return encode(reply)


def _pieces(reply: Reply, out: List[bytes], resp3: bool) -> int:
    """Append ``reply``'s encoding to ``out`` in pieces (a large value as
    itself, not copied); return their size. An array is sized before it is
    joined, so one too large for the output limit is never built whole."""
    if type(reply) is bytes:
        size = len(reply)
        if size > 4096:
            out.append(b"$%d\r\n" % (size,))
            out.append(reply)
            out.append(b"\r\n")
            return size + 16
        out.append(b"$%d\r\n%s\r\n" % (size, reply))
        return size + 16
    items: Tuple[Reply, ...]
    if isinstance(reply, Array) or (isinstance(reply, Map) and not resp3):
        items = reply.items
        out.append(b"*%d\r\n" % (len(items),))
    elif isinstance(reply, Map):
        items = reply.items
        out.append(b"%%%d\r\n" % (len(items) // 2,))
    else:
        data = encode3(reply) if resp3 else encode(reply)
        out.append(data)
        return len(data)
    return 16 + sum([_pieces(item, out, resp3) for item in items])


@implementer(IHalfCloseableProtocol, IPushProducer)
class RespProtocol(ClientConnection):
    """Parses RESP2 requests, runs them, writes Redis-shaped replies.

    Replies are bounded as Redis's client-output-buffer-limit bounds them:
    once the replies queued for the client (in the transport, behind a
    commit, or built in this read) pass the soft limit, no further request
    runs and the connection is not read until the client has caught up; the
    requests already received wait, parsed, and the rest of the read waits
    unparsed (both bounded by the read and the request limit). A reply that
    would pass the hard limit is never built.
    """

    def __init__(
        self, dispatcher: Dispatcher, max_request: int, limits: Optional[OutputLimits] = None
    ) -> None:
        super().__init__(dispatcher, "resp", self._encode, limits)
        self._limit = max_request
        self._soft = self._limits.soft
        self._reader = RequestReader(max_request)
        self._fast = SPLIT_FIRST
        #: True whenever dataReceived cannot take the plain path: closing,
        #: stopped, or holding requests, unparsed bytes or an error.
        self._slow = False
        self._closing = False
        #: The transport paused us (its buffer passed the soft limit).
        self._paused = False
        #: We stopped: replies waiting for a commit passed the soft limit.
        self._stopped = False
        #: A command has not run yet (its fetch or round is out): the next
        #: requests wait for it, and the connection is not read meanwhile
        #: once one more read arrived.
        self._blocked = False
        self._held: List[List[bytes]] = []  # requests received, not run yet
        self._unread: List[bytes] = []  # reads that arrived while stopped
        self._error: Optional[str] = None  # a protocol error after the held requests
        self._eof = False
        self._owed.on_sent = self._owed_sent

    def _encode(self, reply: Reply) -> bytes:
        return encode3(reply) if self.session.protocol == 3 else encode(reply)

    # IPushProducer: the transport pauses us while the client is not reading
    # its replies; requests then wait in our buffers.
    def pauseProducing(self) -> None:
        self._paused = self._slow = True
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._go_on()

    def stopProducing(self) -> None:
        self._closing = self._slow = True

    def _owed_sent(self) -> None:
        if self._stopped and self._owed.held <= self._soft:
            self._stopped = False
            self._go_on()

    def _unblock(self, error: Optional[str]) -> None:
        """The command the connection waited for has run: go on."""
        self._blocked = False
        self._go_on()

    def _halted(self) -> bool:
        return self._paused or self._stopped or self._blocked or self._closing

    def _go_on(self) -> None:
        """Run what was held back, then read again, unless told to stop."""
        if self._halted():
            return
        if self._held:
            held, self._held = self._held, []
            self._run(held)
        while self._unread and not self._halted():
            data = b"".join(self._unread)
            self._unread = []
            self._receive(data)
        if self._halted():
            return
        if self._error is not None:
            self._fail()
            return
        self._settle()
        cast(IPushProducer, self.transport).resumeProducing()
        if self._eof:
            self._close()

    def _settle(self) -> None:
        self._slow = bool(
            self._halted() or self._held or self._unread
            or self._error is not None or self._reader.busy()
        )

    def dataReceived(self, data: bytes) -> None:
        if self._slow or not self._fast:
            self._receive(data)
            return
        requests: List[List[bytes]] = []
        used = _split_plain(data, self._limit, requests)
        if used < len(data):
            self._receive(data[used:], requests)
            return
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

    def _receive(self, data: bytes, requests: Optional[List[List[bytes]]] = None) -> None:
        """Everything but the plain path: a request over several reads, a
        stopped connection, errors."""
        if self._closing:
            return
        if self._paused or self._stopped or self._blocked or self._held:
            self._unread.append(data)
            self._slow = True
            if self._blocked:  # hold no more than this until it has run
                cast(IPushProducer, self.transport).pauseProducing()
            return
        if requests is None:
            requests = []
        error = self._reader.feed(data, requests)
        self._run(requests)
        if error is not None:
            if self._held or self._paused or self._stopped or self._blocked:
                self._error = error  # after the requests before it
            else:
                self._error = error
                self._fail()
        self._settle()

    def _run(self, requests: List[List[bytes]]) -> None:
        if len(requests) > 1:
            clock = self._dispatcher.clock
            clock.hold()
            try:
                self._answer(requests)
            finally:
                clock.release()
        elif requests:
            self._answer(requests)

    def _fail(self) -> None:
        error = self._error or ""
        self._error = None
        if self._closing:
            return
        self._warn("Closing RESP client {peer}: {why}", why=printable(error.encode("utf-8")))
        if self._owed:
            self._owed.then(b"-ERR " + error.encode() + b"\r\n")
        else:
            self.write(b"-ERR " + error.encode() + b"\r\n")
        self._close()

    def _stop_here(self) -> bool:
        """After replies passed the soft limit: whether to stop running requests."""
        if self._paused or self._closing:
            return True
        queued = buffered(self.transport)
        held = self._owed.held
        if queued + held > self._limits.hard:
            self._warn(
                "Disconnecting RESP client {peer}: {bytes} bytes of replies queued, over the "
                "client output hard limit of {hard}",
                bytes=queued + held, hard=self._limits.hard,
            )
            self._closing = self._slow = True
            self._owed.slots.clear()
            self.transport.abortConnection()
            return True
        if held > self._soft:
            self._stopped = self._slow = True
            cast(IPushProducer, self.transport).pauseProducing()
            return True
        return False

    def _too_large(self, size: int) -> bytes:
        self._warn(
            "Refusing a reply of {size} bytes to RESP client {peer}: over the client output "
            "hard limit of {hard}; closing",
            size=size, hard=self._limits.hard,
        )
        return b"-ERR reply of %d bytes exceeds the client output hard limit of %d bytes; " \
               b"closing\r\n" % (size, self._limits.hard)

    def _answer(self, requests: List[List[bytes]]) -> None:
        """Run ``requests`` and send their replies, in order; stop (holding
        the rest) once the replies queued pass the soft limit."""
        dispatcher = self._dispatcher
        dispatcher.stats.commands_processed += len(requests)
        session = self.session
        owed = self._owed
        waiting = owed.slots  # replies still owed, in order (see ReplyQueue)
        write = self.write
        out: List[bytes] = []
        room = self._soft - owed.held
        remaining = iter(requests)
        # With metrics on, requests are counted by name a run of one command
        # at a time (see distkv.front.cmdstats). The next request of the
        # command just run takes the first branch below, the one test a node
        # without metrics makes too; a run's length is read off the iterator
        # (how many requests are left) when the next command begins, and the
        # last run's after the loop. A timed read takes the last branch for
        # every request.
        tally = dispatcher.tally
        samples: Optional[Samples] = None
        last: Any = None  # the command of the run going on (None: timing)
        dropped = 0  # requests not run: those after a QUIT
        if tally is not None:
            calls: Dict[bytes, int] = tally.calls  # every command's name (and UNKNOWN)
            current: Any = None  # the command being counted
            name = b""  # its name, as counted
            mark = len(requests)  # requests left when its run began, the first included
            if tally.armed:
                samples = []
        for request in remaining:
            # Dispatcher.run's lookup, done here: one Python call fewer per
            # request. The session's table is read again each time: MULTI
            # swaps it for the queueing one, EXEC and DISCARD swap it back.
            commands = session.commands
            try:
                command = commands[request[0]]
            except KeyError:
                command = dispatcher.command(request[0], commands)
            if command is last:
                outcome = command(request, session)
            elif tally is None:
                last = command
                outcome = command(request, session)
            else:
                if command is not current:  # one command, one name: named once a run
                    if current is not None:
                        left = length_hint(remaining) + 1
                        calls[name] += mark - left
                        mark = left
                    current = command
                    name = request[0]
                    if name not in calls:  # not its upper-case name, or no command
                        name = tally.name(name)
                if samples is None:
                    last = command
                    outcome = command(request, session)
                else:
                    began = tally.timer()
                    outcome = command(request, session)
                    samples.append((name, tally.timer() - began))
            if outcome is OK:  # most writes on a node without a data dir
                if waiting:
                    owed.then(_OK)
                else:
                    out.append(_OK)
                continue
            kind = type(outcome)
            if kind is bytes:
                # What encode() (and encode3()) make of a value, inline: GET's reply.
                size = len(outcome)  # type: ignore[arg-type]
                room -= size
                if waiting:
                    owed.then(b"$%d\r\n%s\r\n" % (size, outcome))  # type: ignore[str-bytes-safe]
                else:
                    out.append(b"$%d\r\n%s\r\n" % (size, outcome))  # type: ignore[str-bytes-safe]
                if room >= 0:
                    continue
            elif kind is tuple:  # INCR's reply, its text written out (replies.IntegerText)
                if waiting:
                    owed.then(b":" + outcome[0] + b"\r\n")  # type: ignore[index]
                else:  # as three pieces: no bytes built for it
                    out.append(b":")
                    out.append(outcome[0])  # type: ignore[index]
                    out.append(b"\r\n")
                continue
            elif kind is int:  # encode()'s, inline
                if waiting:
                    owed.then(b":%d\r\n" % outcome)  # type: ignore[str-bytes-safe]
                else:
                    out.append(b":%d\r\n" % outcome)  # type: ignore[str-bytes-safe]
                continue
            elif kind is Pending:  # a write waiting for its commit
                if out:
                    write(b"".join(out))
                    out = []
                owed.wait_for(outcome)  # type: ignore[arg-type]
                blocker = session.waiting
                if blocker is None:
                    continue
                # It has not run yet: the rest wait until it has, in order.
                session.waiting = None
                self._held = list(remaining)
                self._blocked = self._slow = True
                dispatcher.stats.commands_processed -= len(self._held)
                if tally is not None:
                    tally.ran(name, mark - len(self._held), samples)
                # With nothing held the transport is paused only if more
                # arrives meanwhile (see _receive): a client waiting for
                # the reply sends nothing, and pausing and resuming would
                # cost two syscalls a request.
                if self._held:
                    cast(IPushProducer, self.transport).pauseProducing()
                blocker.when_done(self._unblock)
                return
            else:
                close = False
                if kind is Error and tally is not None:
                    tally.failure(name)
                if kind is Array or kind is Map:
                    pieces: List[bytes] = []
                    size = _pieces(outcome, pieces, session.protocol == 3)  # type: ignore[arg-type]
                    if size > self._limits.hard:
                        data = self._too_large(size)
                        close = True
                    else:
                        data = b"".join(pieces)
                    del pieces
                elif session.protocol == 2:
                    data = encode(outcome)  # type: ignore[arg-type]
                else:
                    data = encode3(outcome)  # type: ignore[arg-type]
                close = close or (kind is Status and outcome.close)  # type: ignore[union-attr]
                room -= len(data)
                if waiting:
                    owed.then(data, close)
                else:
                    out.append(data)
                if close:
                    self._closing = self._slow = True
                    # Requests after QUIT are dropped, not processed.
                    dropped = length_hint(remaining)
                    dispatcher.stats.commands_processed -= dropped
                    break
                if room >= 0:
                    continue
            # The replies passed the soft limit: send them, and go on only
            # if the client took them.
            if out:
                write(b"".join(out))
                out = []
            if self._stop_here():
                self._held = list(remaining)
                self._slow = True
                dispatcher.stats.commands_processed -= len(self._held)
                if tally is not None:
                    tally.ran(name, mark - len(self._held), samples)
                return
            room = self._soft - owed.held
        if tally is not None:
            if samples is None:
                calls[name] += mark - dropped
            else:
                tally.ran(name, mark - dropped, samples)
        if out:
            write(b"".join(out))
        if self._closing:
            self._owed.close_when_sent()

    def _close(self) -> None:
        if not self._closing:
            self._closing = self._slow = True
            self._owed.close_when_sent()

    def readConnectionLost(self) -> None:
        # Half-close: answer what arrived (done as it arrived), then close.
        self._eof = True
        if not (self._paused or self._stopped or self._blocked or self._held or self._unread):
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Requests held back (behind a command that had not run) are dropped.
        self._closing = self._slow = True
        self._held = []
        self._unread = []
        super().connectionLost(reason)
