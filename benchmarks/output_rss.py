"""Peak RSS of a real node under clients that pipeline large GETs and never read.

Starts ``twistd -n distkv`` on a loopback port, stores a 1 MiB value (less the key's 3 bytes), then
opens connections that each send a bounded stream of ``GET big`` requests
(RESP and text), one ``MGET`` of the key named 2,000 times, and never read a
byte; meanwhile another client keeps asking ``PING``. It prints the node's
RSS (VmRSS) and peak RSS (VmHWM) before and after, and how many PINGs were
answered. Loopback only; every loop is bounded.

    python benchmarks/output_rss.py                       # defaults
    python benchmarks/output_rss.py --connections 16 --send-mib 8 \\
        -- --client-output-soft-limit 65536               # node options after --
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from typing import Dict, List

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = (1 << 20) - 3  # key and value fill the default --max-request


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def memory(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in MiB."""
    rss, hwm = benchlib.rss_kib(pid)
    return {"VmRSS": rss // 1024, "VmHWM": hwm // 1024}


def ask(sock: socket.socket, request: bytes, reply_end: bytes = b"\r\n") -> bytes:
    sock.sendall(request)
    got = b""
    while not got.endswith(reply_end):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        got += data
    return got


def flood(port: int, stream: bytes, budget: int, deadline: float) -> socket.socket:
    """Send up to ``budget`` bytes of ``stream`` repeated, never reading; stop
    when the node stops reading (the send would block) for a moment."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sent = 0
    blocked_since = None
    while sent < budget and time.monotonic() < deadline:
        try:
            sent += sock.send(stream)
            blocked_since = None
        except BlockingIOError:
            now = time.monotonic()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > 0.5:
                break
            time.sleep(0.01)
    return sock


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--connections", type=int, default=8, help="pipeliners per protocol")
    parser.add_argument("--send-mib", type=int, default=4, help="MiB of requests per pipeliner")
    parser.add_argument("node_options", nargs="*")
    args = parser.parse_args(argv)
    port = benchlib.free_port()
    work = tempfile.mkdtemp(prefix="distkv-rss-")
    twistd = os.path.join(os.path.dirname(args.python), "twistd")
    proc = benchlib.start_node(twistd, port, os.path.join(work, "node.log"),
                               extra=args.node_options, source=ROOT)
    socks: List[socket.socket] = []
    try:
        benchlib.wait_listening(proc, port, timeout=15).close()
        probe = socket.create_connection(("127.0.0.1", port))
        ask(probe, command(b"SET", b"big", b"x" * VALUE))
        print(f"node pid {proc.pid}, options {args.node_options or 'default'}")
        print(f"  after SET of a 1 MiB value: {memory(proc.pid)}")
        budget = args.send_mib << 20
        until = time.monotonic() + 60
        resp = command(b"GET", b"big") * 3000
        text = b"GET big\n" * 8000
        for _ in range(args.connections):
            socks.append(flood(port, resp, budget, until))
            socks.append(flood(port, text, budget, until))
        socks.append(flood(port, command(b"MGET", *[b"big"] * 2000), 1 << 16, until))
        answered = 0
        for _ in range(20):
            if ask(probe, command(b"PING")) == b"+PONG\r\n":
                answered += 1
        print(f"  {2 * args.connections} pipeliners sent up to {args.send_mib} MiB each, "
              f"one MGET of 2,000 x 1 MiB; another client's PINGs answered: {answered}/20")
        print(f"  memory (MiB): {memory(proc.pid)}")
    finally:
        for sock in socks:
            sock.close()
        benchlib.stop_node(proc, timeout=15)


if __name__ == "__main__":
    main(sys.argv[1:])
