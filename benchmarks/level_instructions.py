"""Instructions per request at each consistency level, three nodes in one process.

Issue 14 asks that a QUORUM request cost about what a ONE request costs.
Wall-clock figures on the shared 2-core machine move with the load;
instruction counts do not. This script runs a settled three-node
:class:`~distkv.testing.SimulatedCluster` (fake clock, in-process network)
under valgrind's callgrind, twice with different request counts, and prints
the difference per request: the work of all three nodes together (the node
the clients talk to, the members it asks, their acknowledgements), plus the
simulated network's delivery of the bytes, which stands in for the kernel's.

Each round, ``--clients`` RESP connections to n1 send one request each (as
``redis-benchmark -c N`` does, without pipelining), then the network runs
until every connection has its answer. Keys are ``key:<n>`` over 10,000
numbers, values 100 bytes (as ``levels.py`` runs ``redis-benchmark -r 10000
-d 100``).

    python benchmarks/level_instructions.py                     # every level, SET and GET
    python benchmarks/level_instructions.py --clients 1 --levels one,quorum
    python benchmarks/level_instructions.py --profile quorum:set   # where the time goes (cProfile)
    python benchmarks/level_instructions.py --opcodes --top 20     # bytecodes per request, in seconds

``--opcodes`` counts the Python bytecodes run per request instead (a
trace function, no valgrind; exact and repeatable, and a minute rather than
an hour on a busy machine), with the ``--top`` busiest functions. Needs
valgrind (not for ``--profile`` or ``--opcodes``). Under PyPy the counts include the
JIT compiling: compare them only with each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from callgrind import env, instructions  # noqa: E402

# Runs inside the measured interpreter.
SCRIPT = r'''
import bisect, sys
from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock
from distkv.testing import SimulatedCluster
from fakeio import command
from tests.respclient import connect

# The fake clock sorts every pending call (heartbeats, timers: about 90
# here) at each callLater and after each call it runs; a reactor keeps a
# heap. Keep the list in order as it grows, and sort only after a reset.
def _call_later(self, delay, callable, *args, **kw):
    call = DelayedCall(self.seconds() + delay, callable, args, kw, self.calls.remove,
                       self._reset, self.seconds)
    bisect.insort(self.calls, call, key=DelayedCall.getTime)
    return call

def _reset(self, call):
    self._unsorted = True

def _sort_calls(self):
    if getattr(self, "_unsorted", False):
        self._unsorted = False
        self.calls.sort(key=DelayedCall.getTime)

Clock.callLater = _call_later
Clock._reset = _reset
Clock._sortCalls = _sort_calls

level, test, clients, rounds, mode = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                      int(sys.argv[4]), sys.argv[5])
cluster = SimulatedCluster(3)
cluster.settle()
net = cluster.net
n1 = cluster.nodes["n1"]
conns = []
for number in range(clients):
    proto, transport = connect(n1, 6000 + number)
    proto.dataReceived(command(b"CONSISTENCY", level.upper().encode()))
    net.run()
    assert transport.value().startswith(b"+read "), transport.value()
    transport.clear()
    conns.append((proto.dataReceived, transport))
value = b"x" * 100
if test == "get":  # every key there, so GET answers a value
    for n in range(10000):
        n1.store.set(b"key:%06d" % n, value)
    net.run()

def requests(count):
    n = 0
    for _ in range(count):
        for received, transport in conns:
            n += 1
            key = b"key:%06d" % (n * 7919 % 10000)
            received(command(b"SET", key, value) if test == "set" else command(b"GET", key))
        net.run()
        for received, transport in conns:
            assert transport.value().startswith(b"+OK" if test == "set" else b"$100"), \
                transport.value()
            transport.clear()

if mode == "opcodes":
    import collections
    requests(50)
    counts = collections.Counter()
    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename.split("/")[-1], code.co_name, code.co_firstlineno)] += 1
        return tracer
    sys.settrace(tracer)
    requests(rounds)
    sys.settrace(None)
    done = rounds * clients
    print(f"  {test.upper():4} {level.upper():7} {sum(counts.values()) / done:10,.0f}", flush=True)
    for (where, name, line), count in counts.most_common(int(sys.argv[6])):
        print(f"        {count / done:8.1f}  {where}:{line} {name}")
elif mode == "profile":
    import cProfile, pstats
    requests(50)
    profiler = cProfile.Profile()
    profiler.enable()
    requests(rounds)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(40)
else:
    requests(rounds)
'''


def count(python: str, level: str, test: str, clients: int, rounds: int) -> int:
    return instructions(python, SCRIPT, [level, test, str(clients), str(rounds), "count"],
                        f"{level} {test}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with Twisted installed (default: this one)")
    parser.add_argument("--clients", type=int, default=4,
                        help="connections to n1, one request each per round (default 4)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="extra requests in the second run (default 2000)")
    parser.add_argument("--levels", default="one,quorum,all")
    parser.add_argument("--tests", default="set,get")
    parser.add_argument("--opcodes", action="store_true",
                        help="count Python bytecodes per request (no valgrind)")
    parser.add_argument("--top", type=int, default=0,
                        help="with --opcodes: the busiest functions to list")
    parser.add_argument("--profile", metavar="LEVEL:TEST",
                        help="print cProfile's busiest functions for one level and test")
    args = parser.parse_args(argv)
    if args.profile:
        level, test = args.profile.split(":")
        subprocess.run([args.python, "-c", SCRIPT, level, test, str(args.clients),
                        str(max(1, args.requests // args.clients)), "profile"],
                       check=True, env=env(), cwd=ROOT)
        return
    if args.opcodes:
        print(f"Python bytecodes per request, three nodes in process, {args.clients} clients, "
              f"{args.python}")
        for test in args.tests.split(","):
            for level in args.levels.split(","):
                subprocess.run([args.python, "-c", SCRIPT, level, test, str(args.clients),
                                str(max(1, 200 // args.clients)), "opcodes", str(args.top)],
                               check=True, env=env(), cwd=ROOT)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    low = max(1, 200 // args.clients)
    high = low + max(1, args.requests // args.clients)
    print(f"instructions per request, three nodes in process, {args.clients} clients, "
          f"{args.python}")
    for test in args.tests.split(","):
        for level in args.levels.split(","):
            with ThreadPoolExecutor(2) as pool:  # in parallel: they count, not time
                a = pool.submit(count, args.python, level, test, args.clients, low)
                b = pool.submit(count, args.python, level, test, args.clients, high)
                n = (b.result() - a.result()) // ((high - low) * args.clients)
            print(f"  {test.upper():4} {level.upper():7} {n:10,d}", flush=True)


if __name__ == "__main__":
    main()
