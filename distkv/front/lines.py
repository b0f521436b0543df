"""Splitting a connection's byte stream into lines, in work linear in its bytes.

Twisted's ``LineReceiver`` appends every read to one buffer and splits that
whole buffer again, so a long line arriving in small reads is copied and
searched once per read: a 1 MiB text ``SET`` in 1,460-byte reads cost about
half a gigabyte of copying and searching, a 4 MiB one sixteen times that
(issue 11, break 10, for the text protocol). :class:`LineReader` searches
each byte for the line end once, keeps the pieces of a line that has not
ended, and joins them once when it does, holding no more than the request
limit of any line. It has no network code: the text protocol feeds it reads
and takes lines from it at its own pace (it stops taking them while paused).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, NoReturn, Optional, Union

#: Pieces of an unfinished line smaller than this are gathered into one
#: block of about this size, so that a line sent a byte per read is not
#: held as a million small objects (some 40 bytes of heap each).
BLOCK = 1 << 16

#: How much of a line's start a :class:`LineTooLongError` keeps (for the log).
START = 128


class LineTooLongError(Exception):
    """A line is longer than the limit; ``start`` is its first bytes."""

    def __init__(self, start: bytes) -> None:
        super().__init__(start)
        self.start = start


class LineReader:
    """Lines out of reads, each byte searched for the line end once.

    A line ends at ``\\n``; a ``\\r`` before it is part of the line ending.
    Neither counts towards ``limit``, the most bytes a line may have: a
    longer one raises :class:`LineTooLongError` from :meth:`next_line` as soon as
    that is certain (a line still arriving once it holds ``limit + 2`` bytes,
    since the last may yet be a ``\\r``), and everything held is let go, as
    the rest of the stream can no longer be split into lines reliably.
    :attr:`scanned` counts the bytes searched for a line end and
    :attr:`copied` the bytes copied to hold or make lines (tests hold both
    against the input's size).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Reads not searched through yet, oldest first.
        self._reads: Deque[bytes] = deque()
        #: The read being searched, and where its next line starts.
        self._read = b""
        self._at = 0
        #: The start of a line that has not ended, already searched: whole
        #: reads and blocks of small ones, then the block being filled;
        #: their bytes in all.
        self._pieces: List[Union[bytes, bytearray]] = []
        self._tail = bytearray()
        self._started = 0
        self.scanned = 0
        self.copied = 0

    def feed(self, data: bytes) -> None:
        """Keep ``data``, the next read, for :meth:`next_line`."""
        if data:
            self._reads.append(data)

    def lone_line(self, data: bytes) -> Optional[bytes]:
        """``data``'s line, when nothing is held and ``data`` is one whole line
        within the limit (the usual read of a client that waits for each
        reply), taken without keeping ``data``; else None: feed it."""
        if self._started or self._reads or self._read or data[-1:] != b"\n":
            return None
        eol = data.find(b"\n")
        self.scanned += eol + 1
        if eol != len(data) - 1:
            return None  # more lines: searched again when fed (up to the first line end)
        end = eol - 1 if eol and data[eol - 1] == 13 else eol  # 13: "\r"
        if end > self.limit:
            return None
        self.copied += end
        return data[:end]

    def held(self) -> int:
        """Bytes received that are not yet part of a line given out."""
        return (self._started + len(self._read) - self._at
                + sum(len(read) for read in self._reads))

    def next_line(self) -> Optional[bytes]:
        """The next complete line without its line ending, or None until one
        has arrived; raises :class:`LineTooLongError` for a line over the limit."""
        read, at = self._read, self._at
        while True:
            if at >= len(read):
                self._read, self._at = b"", 0
                if not self._reads:
                    return None
                read, at = self._reads.popleft(), 0
            eol = read.find(b"\n", at)
            if eol >= 0:
                break
            self.scanned += len(read) - at
            self._keep(read[at:] if at else read)
            read, at = b"", 0
            if self._started > self.limit + 1:
                self._refuse(self._start())
        self.scanned += eol + 1 - at
        self._read, self._at = read, eol + 1
        end = eol - 1 if eol > at and read[eol - 1] == 13 else eol  # 13: "\r"
        if not self._started:
            if end - at > self.limit:
                self._refuse(read[at : at + START])
            self.copied += end - at
            return read[at:end]
        if eol == at and self._ends_with_cr():
            self._drop_last_byte()  # the line ending's "\r" came in an earlier read
        if self._started + end - at > self.limit:
            self._refuse(self._start())
        line = b"".join(self._pieces + [self._tail, read[at:end]])
        self.copied += len(line)
        self._drop()
        return line

    def rest(self) -> bytes:
        """Everything held (an unterminated last line, at the end of the
        stream), which is then let go."""
        rest = b"".join(self._pieces + [self._tail, self._read[self._at :], *self._reads])
        self.clear()
        return rest

    def clear(self) -> None:
        """Let go of everything held."""
        self._reads.clear()
        self._read, self._at = b"", 0
        self._drop()

    def _refuse(self, start: bytes) -> NoReturn:
        self.clear()
        raise LineTooLongError(start)

    def _keep(self, piece: bytes) -> None:
        """Hold ``piece``, the next bytes of a line that has not ended."""
        self._started += len(piece)
        tail = self._tail
        if not tail and len(piece) >= BLOCK:
            self._pieces.append(piece)
            return
        tail += piece
        self.copied += len(piece)
        if len(tail) >= BLOCK:
            self._pieces.append(tail)
            self._tail = bytearray()

    def _ends_with_cr(self) -> bool:
        if self._tail:
            return self._tail[-1] == 13
        return bool(self._pieces) and self._pieces[-1][-1] == 13

    def _drop_last_byte(self) -> None:
        self._started -= 1
        if self._tail:
            del self._tail[-1]
        else:
            self._pieces[-1] = self._pieces[-1][:-1]

    def _start(self) -> bytes:
        return bytes((self._pieces[0] if self._pieces else self._tail)[:START])

    def _drop(self) -> None:
        self._pieces = []
        self._tail = bytearray()
        self._started = 0
