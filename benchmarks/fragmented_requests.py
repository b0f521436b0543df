"""CPU a node spends reading one large request that arrives in small reads.

Feeds a node's front door, in process, one ``SET`` whose value fills the
request limit, cut into ``--read``-byte reads (1,460 by default, one TCP
segment): over the text protocol and over RESP, at the default 1 MiB
``--max-request`` and at 4 MiB. Prints the CPU seconds (``time.process_time``)
each took, fastest of ``--runs``, and checks that the reply was ``OK`` and the
value stored. The parsers' cost must be linear in the bytes whatever their
fragmentation (issue 11, break 10), so the text and RESP figures should be
close and the 4 MiB ones about four times the 1 MiB ones. Then the other
way round: 100,000 pipelined text ``GET``s of a short value arriving in
65,536-byte reads (Twisted's read size), many lines to a read.

    PYTHONPATH=$PWD python benchmarks/fragmented_requests.py
    PYTHONPATH=/tmp/old-checkout python benchmarks/fragmented_requests.py   # another tree

Needs Twisted and DistKV importable (``PYTHONPATH`` at the checkout).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from distkv.node import Node

ADDRESS = IPv4Address("TCP", "127.0.0.1", 7001)


def text_set(value: bytes) -> bytes:
    return b"SET k " + value + b"\r\n"


def resp_set(value: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(value), value)


def timed_feed(node: Node, stream: bytes, step: int) -> Tuple[float, bytes]:
    """CPU seconds to feed ``stream`` to a new connection in ``step``-byte reads,
    and the replies."""
    proto = node.factory().buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    proto.makeConnection(transport)
    began = time.process_time()
    for at in range(0, len(stream), step):
        proto.dataReceived(stream[at : at + step])
    return time.process_time() - began, transport.value()


def one_run(limit: int, build: Callable[[bytes], bytes], step: int) -> float:
    """CPU seconds to read and run one SET at ``limit`` bytes in ``step``-byte reads."""
    node = Node(Clock(), "bench", max_request=limit)
    value = b"v" * (limit - 6)  # the text line "SET k <value>" fills the limit
    spent, reply = timed_feed(node, build(value), step)
    if reply not in (b"OK\r\n", b"+OK\r\n") or node.store.get(b"k") != value:
        raise SystemExit(f"wrong reply {reply[:80]!r} or value not stored")
    return spent


def pipeline_run(step: int) -> float:
    """CPU seconds to read and answer 100,000 pipelined text GETs in ``step``-byte reads."""
    node = Node(Clock(), "bench")
    node.store.set(b"key", b"value")
    spent, replies = timed_feed(node, b"GET key\r\n" * 100_000, step)
    if replies != b"value\r\n" * 100_000:
        raise SystemExit("wrong replies to the pipelined GETs")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read", type=int, default=1460, help="bytes per read")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the fastest counts")
    args = parser.parse_args()
    print(f"one SET at the request limit, in {args.read}-byte reads; CPU seconds, "
          f"fastest of {args.runs}")
    for limit in (1 << 20, 4 << 20):
        for name, build in (("text", text_set), ("RESP", resp_set)):
            times: List[float] = [one_run(limit, build, args.read) for _ in range(args.runs)]
            print(f"  {name:4} {limit >> 20} MiB: {min(times):.3f} s")
    times = [pipeline_run(1 << 16) for _ in range(args.runs)]
    print(f"  text, 100,000 pipelined GETs in 65,536-byte reads: {min(times):.3f} s")


if __name__ == "__main__":
    main()
