"""Peak RSS of a real node under RESP clients that hold a request unfinished.

Starts ``twistd -n distkv`` (default limits) on a loopback port, then opens
``--clients`` connections that each send all but the last argument of an
``MGET`` of ``--arguments`` arguments of ``--size`` bytes (by default
524,287 arguments of 2 bytes: 1 MiB by ``--max-request``'s count, 4 MiB on
the wire) and stall. Once the node has read every byte (its receive queues
in ``/proc/net/tcp`` are empty and a ``PING`` behind them is answered) it
prints the node's RSS before, its RSS and peak RSS (VmHWM) now, and the peak
per stalled client. Then each client sends its last argument and must get
its ``MGET`` reply (every key absent); the peak after that is printed too
(a complete request of that many arguments is materialised while it runs).

    python benchmarks/partial_request_rss.py
    python benchmarks/partial_request_rss.py --python /tmp/pypyvenv/bin/python
    python benchmarks/partial_request_rss.py --source /tmp/old-checkout   # another tree

Standard library only; loopback only; every wait is bounded.
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


def memory(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in KiB."""
    rss, hwm = benchlib.rss_kib(pid)
    return {"VmRSS": rss, "VmHWM": hwm}


def unread_by(port: int) -> int:
    """Bytes sent to ``port`` on loopback that its server has not read yet."""
    total = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            tx_queue, rx_queue = fields[4].split(":")
            if fields[3] != "01":  # established
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(rx_queue, 16)
            elif int(fields[2].rsplit(":", 1)[1], 16) == port:
                total += int(tx_queue, 16)
    return total


def receive(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError(f"closed after {len(got)} of {size} bytes: {got[-200:]!r}")
        got += data
    return got


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose twistd runs the node")
    parser.add_argument("--source", default=ROOT, help="the tree whose distkv the node runs")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--arguments", type=int, default=(1 << 20) // 2 - 1,
                        help="arguments after MGET's name")
    parser.add_argument("--size", type=int, default=2, help="bytes per argument")
    parser.add_argument("node_options", nargs="*")
    args = parser.parse_args(argv)
    port = benchlib.free_port()
    work = tempfile.mkdtemp(prefix="distkv-partial-")
    twistd = os.path.join(os.path.dirname(args.python), "twistd")
    proc = benchlib.start_node(twistd, port, os.path.join(work, "node.log"),
                               extra=args.node_options, source=args.source)
    socks: List[socket.socket] = []
    try:
        benchlib.wait_listening(proc, port, timeout=30).close()
        probe = socket.create_connection(("127.0.0.1", port), timeout=60)
        probe.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert receive(probe, 7) == b"+PONG\r\n"
        before = memory(proc.pid)
        argument = b"a" * args.size
        head = b"*%d\r\n$4\r\nMGET\r\n" % (args.arguments + 1)
        body = b"$%d\r\n%s\r\n" % (args.size, argument) * (args.arguments - 1)
        last = b"$%d\r\n%s\r\n" % (args.size, argument)
        for _ in range(args.clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            socks.append(sock)
            sock.sendall(head + body)
        deadline = time.monotonic() + 60
        while unread_by(port):
            if time.monotonic() > deadline:
                raise SystemExit("the node did not read every byte within 60 s")
            time.sleep(0.05)
        probe.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert receive(probe, 7) == b"+PONG\r\n"
        held = memory(proc.pid)
        wire = len(head) + len(body)
        print(f"node pid {proc.pid} ({args.python}, {args.source}), options "
              f"{args.node_options or 'default'}")
        print(f"  {args.clients} clients each holding {args.arguments - 1:,} of "
              f"{args.arguments + 1:,} arguments of {args.size} bytes unfinished "
              f"({(args.arguments - 1) * args.size:,} bytes by --max-request's count, "
              f"{wire:,} on the wire)")
        print(f"  RSS before {before['VmRSS'] // 1024} MiB; now {held['VmRSS'] // 1024} MiB, "
              f"peak {held['VmHWM'] // 1024} MiB: "
              f"{(held['VmHWM'] - before['VmRSS']) / 1024 / max(1, args.clients):.1f} MiB "
              f"of peak per client")
        want = b"*%d\r\n" % args.arguments + b"$-1\r\n" * args.arguments
        for sock in socks:
            sock.sendall(last)
            got = receive(sock, len(want))
            assert got == want, got[:100]
        after = memory(proc.pid)
        print(f"  each completed and answered: RSS {after['VmRSS'] // 1024} MiB, "
              f"peak {after['VmHWM'] // 1024} MiB")
    finally:
        for sock in socks:
            sock.close()
        benchlib.stop_node(proc, timeout=15)


if __name__ == "__main__":
    main(sys.argv[1:])
