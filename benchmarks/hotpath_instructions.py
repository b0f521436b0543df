"""Instructions per request on the hot path, counted by callgrind: no timing noise.

A benchmark machine shared with other work gives throughput figures that
spread by 30% or more from run to run. Instruction counts do not: valgrind's
callgrind counts every instruction the interpreter executes, the same for
the same code and inputs whatever else the machine is doing. This script
feeds RESP requests straight into a DistKV node's protocol (no sockets, no
reactor: what DistKV's own code costs) and into the bare Twisted server's,
runs each twice with different request counts, and prints the difference
per request, so start-up and imports cancel out.

    python benchmarks/hotpath_instructions.py                # CPython, SET and GET, -P 1 and 16
    python benchmarks/hotpath_instructions.py --ops set,incr  # INCR (one key, as redis-benchmark -t incr)
    python benchmarks/hotpath_instructions.py --python /tmp/pypyvenv/bin/python
    python benchmarks/hotpath_instructions.py --servers distkv,distkv-counting,distkv-timed

The last counts what ``--metrics-port`` adds to each request: counting alone
(no read timed), and with every read timed (in a node, at most one read per
10 ms is).

Needs valgrind (``apt-get install -y valgrind``). Under PyPy the counts
include the JIT compiling, so compare them only with each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from callgrind import instructions  # noqa: E402

# Runs inside the measured interpreter: which op pipeline rounds
FEED = r'''
import sys
sys.path.insert(0, {here!r})
from twisted.internet.task import Clock
from fakeio import Sink as Transport, command
which, op, pipeline, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

key = b"key:__rand_int__"  # what redis-benchmark sends without -r
one = {{"set": command(b"SET", key, b"xxx"), "get": command(b"GET", key),
        "incr": command(b"INCR", b"counter:__rand_int__")}}[op]
if which.startswith("distkv"):
    from distkv.node import Node
    node = Node(Clock(), "n1")
    if which != "distkv":  # as --metrics-port leaves it
        from distkv.ops.service import enable
        tally = enable(node)
        # A read is timed at most every 10 ms (a reactor timer re-arms it;
        # this fake clock never fires): count the two extremes.
        if which == "distkv-counting":  # no read timed
            tally.armed = False
        elif which == "distkv-timed":  # every read timed
            tally._call_later = None
    protocol = node._resp_protocol()
else:
    import bare_twisted
    protocol = bare_twisted.BareResp({{}})
protocol.makeConnection(Transport())
protocol.dataReceived(command(b"SET", key, b"xxx"))
chunk = one * pipeline
for _ in range(50):
    protocol.dataReceived(chunk)
received = protocol.dataReceived
for _ in range(rounds):
    received(chunk)
'''


def count(python: str, which: str, op: str, pipeline: int, rounds: int) -> int:
    return instructions(python, FEED.format(here=HERE), [which, op, str(pipeline), str(rounds)],
                        f"{which} {op}", timeout=900)


def per_request(python: str, which: str, op: str, pipeline: int, low: int, high: int) -> int:
    with ThreadPoolExecutor(2) as pool:  # the two runs in parallel: they count, not time
        a = pool.submit(count, python, which, op, pipeline, low)
        b = pool.submit(count, python, which, op, pipeline, high)
        return (b.result() - a.result()) // ((high - low) * pipeline)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with Twisted installed (default: this one)")
    parser.add_argument("--ops", default="set,get", help="of set, get, incr")
    parser.add_argument("--pipelines", default="1,16")
    parser.add_argument("--servers", default="distkv,bare",
                        help="of distkv, bare, distkv-counting (--metrics-port, no read timed), "
                        "distkv-timed (every read timed)")
    parser.add_argument("--requests", type=int, default=8000,
                        help="extra requests fed in the second run (default 8000)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    print(f"instructions per request, in-process, {args.python}")
    for pipeline in map(int, args.pipelines.split(",")):
        for op in args.ops.split(","):
            for which in args.servers.split(","):
                rounds = max(1, args.requests // pipeline)
                n = per_request(args.python, which, op, pipeline, 100, 100 + rounds)
                print(f"  -P {pipeline:<2} {op.upper():3} {which:7} {n:8,d}", flush=True)


if __name__ == "__main__":
    main()
