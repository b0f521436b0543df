"""Small TCP proxies on loopback whose faults a test controls.

A :class:`TcpProxy` listens on a free 127.0.0.1 port and forwards every
connection it accepts to one target port, in a thread of its own (stdlib
``selectors``, non-blocking sockets). The test can, at any moment and from any
thread, *partition* it (every connection closed, new ones accepted and closed
at once), *block* one direction (bytes that way are held, the other way keeps
flowing), *stall* it (both directions held, no connection closed), *delay* it
(each chunk forwarded no sooner than N seconds after it was read), and *heal*
it. Held bytes are delivered in order after the heal, as TCP would deliver
them once its retransmissions get through; an endpoint that gives up first
(a heartbeat timeout) closes, and the close is passed on. Every operation
returns once the proxy thread has applied it. :meth:`TcpProxy.close` stops the
thread and closes every socket. :class:`ProxyMesh` puts one proxy on each
directed pair of a set of nodes, so that node *i* dials node *j* through proxy
*(i, j)*, and faults can be aimed at a node or a pair.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

#: Bytes from the dialling side to the target.
FORWARD = "forward"
#: Bytes from the target back to the dialling side.
BACKWARD = "backward"
BOTH: FrozenSet[str] = frozenset((FORWARD, BACKWARD))

#: Bytes one direction reads ahead of what it has forwarded before it stops
#: reading (the kernel's buffers then push back on the sender).
READ_AHEAD = 1 << 20

CHUNK = 65536
CALL_TIMEOUT = 5.0

LOOPBACK = "127.0.0.1"


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


class _Direction:
    """One direction of a proxied connection: bytes read from ``src``, not yet written to ``dst``."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.chunks: Deque[Tuple[float, bytes]] = deque()  # (when it may leave, bytes)
        self.pending = 0
        self.ended = False  # src sent its EOF
        self.passed_end = False  # ... and dst was shut down for writing


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connected = False
        self.closed = False
        self.directions = (
            _Direction(FORWARD, client, upstream),
            _Direction(BACKWARD, upstream, client),
        )

    def reading_from(self, sock: socket.socket) -> _Direction:
        return self.directions[0] if sock is self.client else self.directions[1]

    def writing_to(self, sock: socket.socket) -> _Direction:
        return self.directions[1] if sock is self.client else self.directions[0]


class TcpProxy:
    """Forwards connections made to :attr:`port` on to ``target_port``, with faults."""

    def __init__(self, target_port: int, name: str = "") -> None:
        self.target = (LOOPBACK, target_port)
        self.name = name or f"proxy->{target_port}"
        self._listener = _socket()
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._waker, self._wake_end = socket.socketpair()
        self._waker.setblocking(False)
        self._wake_end.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._registered: Dict[socket.socket, int] = {}
        self._connections: List[_Connection] = []
        self._calls: Deque[Tuple[Callable[[], object], threading.Event, List[object]]] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self._partitioned = False
        self._blocked: Set[str] = set()
        self._delay = 0.0
        self.error: Optional[BaseException] = None
        #: Counters a test may assert on (read them through :meth:`stats`).
        self._counts = {"accepted": 0, "refused": 0, "closed_by_partition": 0,
                        "forwarded": 0, "failed_upstream": 0, "hung_up": 0}
        self._thread = threading.Thread(target=self._run, name=f"tcpproxy {self.name}",
                                        daemon=True)
        self._thread.start()

    # -- the test's side -------------------------------------------------

    def partition(self, directions: FrozenSet[str] = BOTH) -> None:
        """Cut the proxy. Both ways: close every connection and refuse new
        ones (accepted, then closed at once). One way: :meth:`block` it."""
        if set(directions) != BOTH:
            self.block(directions)
            return

        def cut() -> None:
            self._partitioned = True
            for conn in list(self._connections):
                self._counts["closed_by_partition"] += 1
                self._close(conn)

        self._call(cut)

    def block(self, directions: FrozenSet[str]) -> None:
        """Stop forwarding bytes in ``directions`` (held, not lost); connections stay open."""
        unknown = set(directions) - BOTH
        assert not unknown, f"unknown directions {unknown}"
        self._call(lambda: self._blocked.update(directions))

    def stall(self) -> None:
        """Stop forwarding both ways without closing anything, until :meth:`heal`."""
        self.block(BOTH)

    def delay(self, seconds: float) -> None:
        """Hold each chunk read from now on for ``seconds`` before forwarding it."""
        assert seconds >= 0

        def set_delay() -> None:
            self._delay = seconds

        self._call(set_delay)

    def heal(self) -> None:
        """Undo every fault: accept again, forward what was held, no delay."""

        def heal() -> None:
            self._partitioned = False
            self._blocked.clear()
            self._delay = 0.0

        self._call(heal)

    def stats(self) -> Dict[str, int]:
        """Counters, plus the connections open now and the bytes held in them."""

        def read() -> Dict[str, int]:
            live = [c for c in self._connections if not c.closed]
            held = sum(d.pending for c in live for d in c.directions)
            return dict(self._counts, open=len(live), held=held)

        result = self._call(read)
        assert isinstance(result, dict)
        return result

    def close(self) -> None:
        """Stop the thread and close every socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(CALL_TIMEOUT)
        assert not self._thread.is_alive(), f"{self.name}: proxy thread did not stop"
        self._waker.close()
        self._wake_end.close()
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed") from self.error

    def _call(self, function: Callable[[], object]) -> object:
        done = threading.Event()
        box: List[object] = []
        with self._lock:
            assert not self._stopping, f"{self.name} is closed"
            self._calls.append((function, done, box))
        self._wake()
        if not done.wait(CALL_TIMEOUT):
            raise RuntimeError(f"{self.name} did not answer (thread failed: {self.error!r})")
        return box[0] if box else None

    def _wake(self) -> None:
        try:
            self._wake_end.send(b"x")
        except BlockingIOError:
            pass  # already awake: the buffer is full of wake-ups

    # -- the proxy thread --------------------------------------------------

    def _run(self) -> None:
        try:
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._selector.register(self._waker, selectors.EVENT_READ)
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    calls = list(self._calls)
                    self._calls.clear()
                for function, done, box in calls:
                    box.append(function())
                    done.set()
                timeout = self._update_interest(time.monotonic())
                for key, mask in self._selector.select(timeout):
                    self._handle(key.fileobj, key.data, mask)  # type: ignore[arg-type]
                self._pass_on_ends()
        except BaseException as e:  # reported by close() and by the next call
            self.error = e
        finally:
            for conn in list(self._connections):
                self._close(conn)
            self._selector.close()
            self._listener.close()

    def _update_interest(self, now: float) -> Optional[float]:
        """Register what each socket waits for; the time until the next delayed chunk is due."""
        wanted: Dict[socket.socket, Tuple[int, _Connection]] = {}
        due: Optional[float] = None
        for conn in self._connections:
            if not conn.connected:
                wanted[conn.upstream] = (selectors.EVENT_WRITE, conn)
                continue
            events = {conn.client: 0, conn.upstream: 0}
            for d in conn.directions:
                # A blocked direction still reads ahead (so a test can see
                # what it holds, and an EOF is noticed) but writes nothing.
                if not d.ended and d.pending < READ_AHEAD:
                    events[d.src] |= selectors.EVENT_READ
                if d.chunks and d.name not in self._blocked:
                    when = d.chunks[0][0]
                    if when <= now:
                        events[d.dst] |= selectors.EVENT_WRITE
                    elif due is None or when < due:
                        due = when
            for sock, mask in events.items():
                wanted[sock] = (mask, conn)
        for sock in list(self._registered):
            if not wanted.get(sock, (0, None))[0]:
                self._selector.unregister(sock)
                del self._registered[sock]
        for sock, (mask, conn) in wanted.items():
            if not mask:
                continue
            old = self._registered.get(sock)
            if old is None:
                self._selector.register(sock, mask, conn)
            elif old != mask:
                self._selector.modify(sock, mask, conn)
            self._registered[sock] = mask
        return None if due is None else max(0.0, due - now)

    def _handle(self, sock: socket.socket, conn: Optional[_Connection], mask: int) -> None:
        if sock is self._listener:
            self._accept()
        elif sock is self._waker:
            try:
                while self._waker.recv(4096):
                    pass
            except BlockingIOError:
                pass
        elif conn is None or conn.closed:
            return
        elif not conn.connected:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._counts["failed_upstream"] += 1
                self._close(conn)
            else:
                conn.connected = True
        else:
            if mask & selectors.EVENT_READ:
                self._read(conn, sock)
            if mask & selectors.EVENT_WRITE and not conn.closed:
                self._write(conn, sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if self._partitioned:
            self._counts["refused"] += 1
            client.close()
            return
        self._counts["accepted"] += 1
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = _socket()
        conn = _Connection(client, upstream)
        self._connections.append(conn)
        code = upstream.connect_ex(self.target)
        if code == 0:
            conn.connected = True
        elif code not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self._counts["failed_upstream"] += 1
            self._close(conn)

    def _read(self, conn: _Connection, sock: socket.socket) -> None:
        direction = conn.reading_from(sock)
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: the endpoint aborted the connection
            self._counts["hung_up"] += 1
            self._close(conn)
            return
        if not data:
            direction.ended = True
            self._counts["hung_up"] += 1  # closed, or shut down for sending
            return
        direction.chunks.append((time.monotonic() + self._delay, data))
        direction.pending += len(data)

    def _write(self, conn: _Connection, sock: socket.socket) -> None:
        direction = conn.writing_to(sock)
        if direction.name in self._blocked:
            return
        now = time.monotonic()
        while direction.chunks and direction.chunks[0][0] <= now:
            when, data = direction.chunks[0]
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            direction.pending -= sent
            self._counts["forwarded"] += sent
            if sent < len(data):
                direction.chunks[0] = (when, data[sent:])
                return
            direction.chunks.popleft()

    def _pass_on_ends(self) -> None:
        """Shut down a side for writing once the other side's EOF and bytes are through."""
        for conn in list(self._connections):
            if conn.closed or not conn.connected:
                continue
            for d in conn.directions:
                if d.ended and not d.chunks and not d.passed_end and d.name not in self._blocked:
                    d.passed_end = True
                    try:
                        d.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        self._close(conn)
                        break
            if not conn.closed and all(d.passed_end for d in conn.directions):
                self._close(conn)

    def _close(self, conn: _Connection) -> None:
        conn.closed = True
        for sock in (conn.client, conn.upstream):
            if sock in self._registered:
                self._selector.unregister(sock)
                del self._registered[sock]
            sock.close()
        self._connections.remove(conn)


class ProxyMesh:
    """One :class:`TcpProxy` per directed pair of nodes listening on ``ports``.

    Node *i* reaches node *j* through ``proxies[i, j]``: give node *i*
    ``peer_ports(i)`` as its peers. A link between two nodes is then two
    proxies (each side dials the other), and, since a connection may carry
    data both ways whoever dialled, cutting one node off another cuts both.
    Give node *i* :meth:`node_args` too: a node dials a caller at the host its
    connection came from (here 127.0.0.1, where the nodes listen, since the
    proxies connect from there) and the port the caller advertises, and
    members at the addresses they advertise; each node advertises a port that
    is bound and never listened on, so nothing reaches a node but through
    the proxies.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        self.proxies: Dict[Tuple[int, int], TcpProxy] = {}
        self._decoys: List[socket.socket] = []
        try:
            for _ in ports:
                decoy = _socket()
                decoy.bind((LOOPBACK, 0))
                self._decoys.append(decoy)
            for i in range(len(ports)):
                for j, port in enumerate(ports):
                    if i != j:
                        self.proxies[i, j] = TcpProxy(port, f"{i}->{j}")
        except BaseException:
            self.close()
            raise

    def node_args(self, i: int) -> List[str]:
        """Node ``i``'s options: where it says it is reached (a decoy port)."""
        return ["--advertise", f"{LOOPBACK}:{self._decoys[i].getsockname()[1]}"]

    def peer_ports(self, i: int) -> List[int]:
        return [proxy.port for (a, _), proxy in sorted(self.proxies.items()) if a == i]

    def between(self, a: int, b: int) -> List[TcpProxy]:
        """Both proxies that carry traffic between nodes ``a`` and ``b``."""
        return [self.proxies[a, b], self.proxies[b, a]]

    def touching(self, node: int) -> List[TcpProxy]:
        return [p for (a, b), p in sorted(self.proxies.items()) if node in (a, b)]

    def isolate(self, node: int) -> None:
        """Partition ``node`` from every other node, both ways."""
        for proxy in self.touching(node):
            proxy.partition()

    def cut(self, a: int, b: int) -> None:
        for proxy in self.between(a, b):
            proxy.partition()

    def stall(self, a: int, b: int) -> None:
        for proxy in self.between(a, b):
            proxy.stall()

    def delay(self, a: int, b: int, seconds: float) -> None:
        for proxy in self.between(a, b):
            proxy.delay(seconds)

    def block_one_way(self, src: int, dst: int) -> None:
        """Hold every byte from ``src`` to ``dst``, on either connection; ``dst`` to ``src`` flows."""
        self.proxies[src, dst].block(frozenset((FORWARD,)))
        self.proxies[dst, src].block(frozenset((BACKWARD,)))

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def close(self) -> None:
        errors = []
        for proxy in self.proxies.values():
            try:
                proxy.close()
            except Exception as e:  # close the rest anyway, then report
                errors.append(e)
        for decoy in self._decoys:
            decoy.close()
        if errors:
            raise errors[0]
