"""Hostile clients for the process tier, each a blocking loop with a deadline.

Byte streams (seeded random bytes, mutated RESP pipelines, malformed RESP
cases with the reply Redis gives them), senders of one huge request, clients
that pipeline without reading, crowds of idle clients, and a :class:`Watcher`
that keeps asking a node for known answers and records every gap between
them. Nothing here sleeps for a fixed time: every wait is a ``poll`` or a
socket timeout bounded by a deadline.
"""

from __future__ import annotations

import platform
import random
import select
import socket
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

#: Seconds any one attack may take before the test calls it hung.
DEADLINE = 15.0

#: Redis's reply to a malformed request; the connection is then closed.
PROTOCOL_ERROR = b"-ERR Protocol error: "

#: The README's bound, for the default limits, on what one client that sends
#: and never reads costs a node: about the soft limit (1 MiB), one reply and
#: one request; measured about 2.5 MiB on CPython. PyPy's collector hands
#: freed buffers back later: 10 MiB there.
PER_CLIENT_MIB = 4 if platform.python_implementation() == "CPython" else 10


def command(*args: bytes) -> bytes:
    """One RESP request of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


PING = command(b"PING")


def ready(sock: socket.socket, write: bool, timeout: float, read: bool = True) -> Tuple[bool, bool]:
    """Wait up to ``timeout`` seconds until ``sock`` can be read (or has
    closed) if ``read``, or written if ``write``; poll, not select: the test
    holds thousands of sockets, past select's 1024."""
    poller = select.poll()
    poller.register(sock, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
    events = 0
    for _, event in poller.poll(max(0.0, timeout) * 1000):
        events |= event
    readable = bool(events & (select.POLLIN | select.POLLHUP | select.POLLERR))
    return readable, bool(events & select.POLLOUT)


def unread_by(port: int) -> int:
    """Bytes sent to the server on ``port`` (loopback IPv4) that it has not
    read yet: those in its connections' receive queues, and those still in
    the senders' send queues (/proc/net/tcp)."""
    total = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            tx_queue, rx_queue = fields[4].split(":")
            if state != "01":  # established
                continue
            if int(local.rsplit(":", 1)[1], 16) == port:
                total += int(rx_queue, 16)
            elif int(remote.rsplit(":", 1)[1], 16) == port:
                total += int(tx_queue, 16)
    return total


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


class Ending(NamedTuple):
    """What came back on a hostile connection, and how it ended."""

    sent: int
    reply: bytes
    #: ``"eof"`` or ``"reset"`` (the server closed), ``"open"`` (still open
    #: at the deadline, or when the caller stopped waiting).
    end: str


def exchange(port: int, data: bytes, half_close: bool = True,
             deadline: float = DEADLINE, until: Optional[bytes] = None) -> Ending:
    """Send ``data`` while reading whatever comes back; then (``half_close``)
    shut our sending side; read until the server closes, ``until`` has
    arrived, or ``deadline`` seconds have passed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.setblocking(False)
    stop = time.monotonic() + deadline
    view = memoryview(data)
    sent = 0
    got: List[bytes] = []
    end = "open"
    try:
        while time.monotonic() < stop:
            sending = sent < len(view)
            readable, writable = ready(sock, sending, stop - time.monotonic())
            if readable:
                try:
                    chunk = sock.recv(1 << 16)
                except ConnectionResetError:
                    end = "reset"
                    break
                if not chunk:
                    end = "eof"
                    break
                got.append(chunk)
                if until is not None and b"".join(got).endswith(until):
                    break
            if writable:
                try:
                    sent += sock.send(view[sent : sent + (1 << 18)])
                except (BrokenPipeError, ConnectionResetError):
                    # The server closed: what it sent before is still to read.
                    rest = exchange_tail(sock, stop)
                    got.append(rest.reply)
                    end = rest.end if rest.end != "open" else "reset"
                    break
                if sent == len(view) and half_close:
                    sock.shutdown(socket.SHUT_WR)
    finally:
        sock.close()
    return Ending(sent, b"".join(got), end)


def send_huge(port: int, head: bytes, total: int, deadline: float = DEADLINE) -> Ending:
    """Send ``head`` and then ``x`` bytes, ``total`` bytes in all without a
    newline (a 100 MB line, or the body of a 100 MB bulk string), reading the
    replies meanwhile, until the server closes or all is sent. The stream is
    made as it goes: the test never holds the 100 MB."""
    filler = b"x" * (1 << 20)
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.setblocking(False)
    stop = time.monotonic() + deadline
    pending = memoryview(head + filler)
    sent = 0
    got: List[bytes] = []
    end = "open"
    try:
        while sent < total and time.monotonic() < stop:
            readable, writable = ready(sock, True, stop - time.monotonic())
            if readable:
                try:
                    chunk = sock.recv(1 << 16)
                except ConnectionResetError:
                    end = "reset"
                    break
                if not chunk:
                    end = "eof"
                    break
                got.append(chunk)
            if writable:
                try:
                    done = sock.send(pending[: total - sent])
                except (BrokenPipeError, ConnectionResetError):
                    rest = exchange_tail(sock, stop)
                    got.append(rest.reply)
                    end = rest.end if rest.end != "open" else "reset"
                    break
                sent += done
                pending = pending[done:]
                if not pending:
                    pending = memoryview(filler)
        if end == "open" and sent >= total:
            # All of it went: wait for the server's answer to it.
            rest = exchange_tail(sock, stop)
            got.append(rest.reply)
            end = rest.end
    finally:
        sock.close()
    return Ending(sent, b"".join(got), end)


def exchange_tail(sock: socket.socket, stop: float) -> Ending:
    """Read what is left on a non-blocking socket until it closes or ``stop``."""
    got: List[bytes] = []
    while time.monotonic() < stop:
        readable, _ = ready(sock, False, stop - time.monotonic())
        if not readable:
            continue
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return Ending(0, b"".join(got), "reset")
        if not chunk:
            return Ending(0, b"".join(got), "eof")
        got.append(chunk)
    return Ending(0, b"".join(got), "open")


def flood(port: int, stream: bytes, budget: int, deadline: float = DEADLINE) -> socket.socket:
    """A pipeliner that never reads: send ``stream`` again and again, up to
    ``budget`` bytes, until the node stops taking them (a send has been
    blocked for half a second). The socket is returned open, unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    view = memoryview(stream)
    sent = 0
    blocked = 0.0
    stop = time.monotonic() + deadline
    while sent < budget and time.monotonic() < stop:
        if ready(sock, True, 0.1, read=False)[1]:
            at = sent % len(view)  # a partial send goes on where it stopped
            try:
                sent += sock.send(view[at : at + budget - sent])
                blocked = 0.0
                continue
            except BlockingIOError:
                pass
        now = time.monotonic()
        if not blocked:
            blocked = now
        elif now - blocked > 0.5:
            break
    return sock


def idle_clients(port: int, count: int) -> List[socket.socket]:
    """``count`` connections made clients by one PING each (text and RESP in
    turn), all answered, then left open and silent."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
             for _ in range(count)]
    ping_all(socks)
    return socks


def ping_all(socks: List[socket.socket]) -> None:
    """PING every one of ``socks`` (even ones text, odd ones RESP), all sent
    before any reply is read; fail unless each is answered."""
    for index, sock in enumerate(socks):
        sock.sendall(PING if index % 2 else b"PING\r\n")
    for index, sock in enumerate(socks):
        want = b"+PONG\r\n" if index % 2 else b"PONG\r\n"
        got = b""
        while len(got) < len(want):
            chunk = sock.recv(len(want) - len(got))
            if not chunk:
                raise AssertionError(f"idle client {index} was closed")
            got += chunk
        assert got == want, (index, got)


#: Malformed RESP, each on a connection of its own: (what, bytes, reply, whether
#: the server closes). redis-server 7 gives the same replies, but for the two
#: requests over --max-request, which it takes up to 512 MB.
MALFORMED_RESP: List[Tuple[str, bytes, bytes, bool]] = [
    ("non-digit count", b"*abc\r\n" + PING, PROTOCOL_ERROR + b"invalid multibulk length", True),
    ("non-digit length", b"*1\r\n$abc\r\n" + PING, PROTOCOL_ERROR + b"invalid bulk length", True),
    ("fractional length", b"*1\r\n$4.0\r\nPING\r\n", PROTOCOL_ERROR + b"invalid bulk length",
     True),
    ("negative length", b"*1\r\n$-5\r\n" + PING, PROTOCOL_ERROR + b"invalid bulk length", True),
    ("huge declared length", b"*1\r\n$999999999999\r\n" + PING,
     PROTOCOL_ERROR + b"invalid bulk length", True),
    ("huge count", b"*99999999999\r\n" + PING, PROTOCOL_ERROR + b"invalid multibulk length",
     True),
    ("nested array", b"*2\r\n*1\r\n$4\r\nPING\r\n" + PING,
     PROTOCOL_ERROR + b"expected '$', got '*'", True),
    ("simple string in a request", b"*1\r\n+PING\r\n" + PING,
     PROTOCOL_ERROR + b"expected '$', got '+'", True),
    ("header without CR LF", b"*1$4\r\nPING\r\n" + PING,
     PROTOCOL_ERROR + b"invalid multibulk length", True),
    ("LF-only line endings", b"*1\n$4\nPING\n" + PING,
     PROTOCOL_ERROR + b"invalid multibulk length", True),
    ("bulk over the request limit", command(b"SET", b"keep:000", b"v" * ((1 << 20) + 1)),
     PROTOCOL_ERROR + b"invalid bulk length", True),
    ("arguments over the request limit together",
     command(b"MSET", b"keep:000", b"v" * 600_000, b"keep:001", b"v" * 600_000),
     PROTOCOL_ERROR + b"request exceeds the size limit", True),
    # Redis ignores empty and negative counts, and takes the two bytes after
    # a bulk string as its CR LF without looking: the connection goes on.
    ("negative count", b"*-5\r\n" + PING, b"+PONG", False),
    ("zero count", b"*0\r\n" + PING, b"+PONG", False),
    ("no CR LF after a bulk", b"*1\r\n$4\r\nPINGxx" + PING, b"+PONG\r\n+PONG", False),
]


def malformed(port: int, data: bytes, reply: bytes, closes: bool) -> Ending:
    """Send one malformed case; wait for the close, or for its reply when the
    server keeps the connection (then close it ourselves)."""
    if closes:
        return exchange(port, data, half_close=False)
    return exchange(port, data, half_close=False, until=reply + b"\r\n")


def random_streams(seed: int, count: int, size: int) -> List[Tuple[str, bytes]]:
    """``count`` seeded streams of ``size`` bytes, three kinds in turn: uniform
    random bytes (text protocol unless they start with ``*``), random bytes
    after ``*`` (RESP), and pipelines of valid RESP requests mutated byte-wise
    (flips, insertions, deletions, repeats, lengths rewritten to huge ones)."""
    rng = random.Random(seed)
    streams = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            streams.append(("random bytes", rng.randbytes(size)))
        elif kind == 1:
            streams.append(("RESP then random bytes", b"*" + rng.randbytes(size - 1)))
        else:
            streams.append(("mutated RESP", mutated_pipeline(rng, size)))
    return streams


def mutated_pipeline(rng: random.Random, size: int) -> bytes:
    """Valid requests on ``fuzz:`` keys, then a few dozen random edits."""
    requests = []
    total = 0
    while total < size:
        key = b"fuzz:%d" % rng.randrange(100)
        request = rng.choice([
            command(b"SET", key, rng.randbytes(rng.randrange(64))),
            command(b"GET", key),
            command(b"MGET", key, key, b"fuzz:x"),
            command(b"DEL", key),
            PING,
            b"PING\r\n",
        ])
        requests.append(request)
        total += len(request)
    stream = bytearray(b"".join(requests))
    for _ in range(rng.randrange(8, 40)):
        at = rng.randrange(len(stream))
        edit = rng.randrange(5)
        if edit == 0:
            stream[at] = rng.randrange(256)
        elif edit == 1:
            stream[at:at] = rng.randbytes(rng.randrange(1, 16))
        elif edit == 2:
            del stream[at : at + rng.randrange(1, 16)]
        elif edit == 3:
            stream[at:at] = stream[at : at + rng.randrange(1, 64)] * rng.randrange(2, 20)
        else:
            digits = b"%d" % rng.choice([10 ** rng.randrange(1, 13), (1 << 20) - 1, 1 << 31])
            stream[at:at] = digits
    return bytes(stream)


class Watcher(threading.Thread):
    """A well-behaved client: asks, over RESP and text in turn, for answers it
    knows (``PING``, and values stored before the attack) until stopped, and
    records when each came, so a test can tell how long the node went silent.
    Every request has :data:`DEADLINE` seconds to be answered."""

    def __init__(self, port: int, known: Dict[bytes, bytes]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.known = sorted(known.items())
        self.stopped = threading.Event()
        self.answers = 0
        self.longest_gap = 0.0
        self.failure: Optional[str] = None

    def run(self) -> None:
        try:
            resp = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
            text = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
            resp_file = resp.makefile("rb")
            text_file = text.makefile("rb")
        except OSError as e:
            self.failure = f"cannot connect: {e!r}"
            return
        asks: List[Callable[[int], Optional[str]]] = [
            lambda n: self._ask(resp, resp_file, PING, [b"+PONG\r\n"]),
            lambda n: self._ask_value(resp, resp_file, n, True),
            lambda n: self._ask_value(text, text_file, n, False),
        ]
        last = time.monotonic()
        n = 0
        try:
            while not self.stopped.is_set():
                wrong = asks[n % 3](n)
                now = time.monotonic()
                if wrong is not None:
                    self.failure = wrong
                    return
                self.longest_gap = max(self.longest_gap, now - last)
                last = now
                self.answers += 1
                n += 1
        except OSError as e:
            self.failure = f"request {n} failed after {time.monotonic() - last:.1f}s: {e!r}"
        finally:
            self.longest_gap = max(self.longest_gap, time.monotonic() - last)
            for closable in (resp_file, text_file, resp, text):
                closable.close()

    def _ask_value(self, sock: socket.socket, file: object, n: int, is_resp: bool) -> Optional[str]:
        key, value = self.known[n % len(self.known)]
        if is_resp:
            return self._ask(sock, file, command(b"GET", key),
                             [b"$%d\r\n" % len(value), value + b"\r\n"])
        return self._ask(sock, file, b"GET %s\r\n" % key, [value + b"\r\n"])

    @staticmethod
    def _ask(sock: socket.socket, file: object, request: bytes, lines: List[bytes]) -> Optional[str]:
        sock.sendall(request)
        for want in lines:
            got = file.readline()  # type: ignore[attr-defined]
            if got != want:
                return f"asked {request[:40]!r}, wanted {want[:40]!r}, got {got[:80]!r}"
        return None

    def stop(self) -> None:
        self.stopped.set()
        self.join(DEADLINE + 5)
        assert not self.is_alive(), "the watcher is stuck on a request"
