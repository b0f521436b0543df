"""A real node's memory under clients that pipeline large GETs and never read."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import List

import pytest

from tests.hostile import PER_CLIENT_MIB, command, memory_kib
from tests.realnodes import NodeProcess, free_ports, wait_until

pytestmark = pytest.mark.process

VALUE = (1 << 20) - 3  # with the key "big", fills the default --max-request
SLACK_MIB = 32


def rss_mib(pid: int, field: str) -> int:
    return memory_kib(pid, field) // 1024


def ask(sock: socket.socket, request: bytes, end: bytes) -> bytes:
    sock.sendall(request)
    got = b""
    while not got.endswith(end):
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("closed")
        got += data
    return got


def flood(port: int, stream: bytes, budget: int) -> socket.socket:
    """Send up to ``budget`` bytes of ``stream`` again and again without reading,
    until the node stops taking them (the send has blocked for half a second) or
    closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sent = 0
    blocked = 0.0
    deadline = time.monotonic() + 30
    while sent < budget and time.monotonic() < deadline:
        try:
            sent += sock.send(stream)
            blocked = 0.0
        except BlockingIOError:
            now = time.monotonic()
            if not blocked:
                blocked = now
            elif now - blocked > 0.5:
                break
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break  # the node closed it (a reply over the hard limit): done
    return sock


def test_never_reading_pipeliners_leave_rss_bounded_and_others_answered(tmp_path: Path) -> None:
    """RESP and text clients pipelining GETs of a 1 MiB value without reading, and
    an MGET of it 2,000 times, raise the node's peak RSS by at most a few MiB per
    client (the old code took GBs), while another client keeps getting PONG."""
    port = free_ports(1)[0]
    node = NodeProcess(tmp_path, port, [], "rss").start()
    socks: List[socket.socket] = []
    try:
        node.wait_ready()
        assert node.proc is not None
        probe = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert ask(probe, command(b"SET", b"big", b"x" * VALUE), b"\r\n") == b"+OK\r\n"
        before = rss_mib(node.proc.pid, "VmRSS")
        for _ in range(4):
            socks.append(flood(port, command(b"GET", b"big") * 3000, 4 << 20))
            assert ask(probe, command(b"PING"), b"\r\n") == b"+PONG\r\n"
            socks.append(flood(port, b"GET big\n" * 8000, 4 << 20))
            assert ask(probe, command(b"PING"), b"\r\n") == b"+PONG\r\n"
        socks.append(flood(port, command(b"MGET", *[b"big"] * 2000), 1 << 16))
        wait_until(lambda: ask(probe, command(b"PING"), b"\r\n") == b"+PONG\r\n",
                   "a PONG after the MGET")
        probe.sendall(command(b"GET", b"big"))
        reply = b""
        while len(reply) < VALUE + 12:
            reply += probe.recv(1 << 16)
        assert reply == b"$%d\r\n" % VALUE + b"x" * VALUE + b"\r\n"
        peak = rss_mib(node.proc.pid, "VmHWM")
        assert peak - before <= len(socks) * PER_CLIENT_MIB + SLACK_MIB, (before, peak)
        assert "over the client output hard limit" in node.log_text()
    finally:
        for sock in socks:
            sock.close()
        node.kill()
