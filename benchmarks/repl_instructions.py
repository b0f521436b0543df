"""Instructions per replicated write, origin and peer, counted by callgrind.

Issue 16 asks what a replicated write costs each node. Timings on the shared
2-core machine spread by tens of percent; instruction counts do not. This
script runs DistKV in process, on a simulated network and fake clock, under
valgrind's callgrind, twice with different write counts, and prints the
difference per write (start-up, imports and settling cancel out):

* ``alone``: RESP ``SET`` requests, ``-P`` at a time, into a node without
  peers (what ``hotpath_instructions.py`` counts);
* ``origin``: the same into node n1 of a settled three-node cluster: the
  fan-out to both links, the outbox, the frames each link sends (written to
  nowhere) and the peers' acknowledgements (one ``A`` frame per link per
  batch, fed back as the peer would send it);
* ``peer``: what n1 sent to n2 for those writes (captured beforehand, in a
  run not counted) fed to n2's connection from n1, one chunk per batch, as
  the network would deliver it: decoding, applying, the digest, the fan-out
  of merged writes to n2's links and the acknowledgement.

    python benchmarks/repl_instructions.py                 # -P 16, 4,000 writes' difference
    python benchmarks/repl_instructions.py --pipeline 1 --writes 2000
    python benchmarks/repl_instructions.py --python /tmp/ci/.venv-pypy/bin/python

Keys are ``key:<n>`` over 100,000 numbers (as ``redis-benchmark -r
100000``), values ``xxx``. Needs valgrind. Under PyPy the counts include
the JIT compiling: compare them only with each other.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from callgrind import env, instructions  # noqa: E402

# Runs inside the measured interpreter (and, for the capture, outside it).
SCRIPT = r'''
import pickle, sys
from twisted.internet.task import Clock
from distkv.cluster import wire
from distkv.node import Node
from distkv.testing import SimulatedCluster
from fakeio import Sink as Transport, command

mode, pipeline, batches, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def chunks(count):
    n = 0
    for _ in range(count):
        parts = []
        for _ in range(pipeline):
            n += 1
            parts.append(command(b"SET", b"key:%06d" % (n * 7919 % 100000), b"xxx"))
        yield b"".join(parts)

def origin(count, capture):
    cluster = SimulatedCluster(3)
    cluster.settle()
    net = cluster.net
    n1 = cluster.nodes["n1"]
    links = [link for link in n1.replication.links.values() if not link.is_self]
    sent = []
    for link in links:
        proto = link._protocol
        if capture and link.remote.node == "n2":
            proto.send = sent.append
        else:
            proto.send = lambda data: None
    resp = n1._resp_protocol()
    resp.makeConnection(Transport())
    feeds = [(link._protocol, link._protocol.dataReceived) for link in links]
    for chunk in chunks(count):
        resp.dataReceived(chunk)
        net.advance(0)  # the links' pump: one frame batch per reactor turn
        ack = wire.encode_ack(n1.store.seq)
        for proto, received in feeds:
            received(ack)
    return sent

if mode == "capture":
    with open(path, "wb") as out:
        pickle.dump(origin(batches, True), out)
elif mode == "origin":
    origin(batches, False)
elif mode == "alone":
    node = Node(Clock(), "n1")
    resp = node._resp_protocol()
    resp.makeConnection(Transport())
    received = resp.dataReceived
    for chunk in chunks(batches):
        received(chunk)
elif mode == "peer":
    with open(path, "rb") as source:
        stream = pickle.load(source)[:batches]
    cluster = SimulatedCluster(3)
    cluster.settle()
    [connection] = [c for c in cluster.net.connections if c.nodes == ("n1", "n2")]
    proto = connection.pump.server
    out = connection.pump.serverIO
    received = proto.dataReceived
    for chunk in stream:
        received(chunk)
        del out.stream[:]
    assert cluster.nodes["n2"].store.get(b"key:%06d" % (batches * pipeline * 7919 % 100000)) == b"xxx"
'''


def count(python: str, mode: str, pipeline: int, batches: int, path: str) -> int:
    return instructions(python, SCRIPT, [mode, str(pipeline), str(batches), path], mode)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with Twisted installed (default: this one)")
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--writes", type=int, default=4000,
                        help="extra writes in the second run (default 4000)")
    parser.add_argument("--modes", default="alone,origin,peer")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    low = max(1, 800 // args.pipeline)
    high = low + max(1, args.writes // args.pipeline)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "stream.pickle")
        subprocess.run([args.python, "-c", SCRIPT, "capture", str(args.pipeline), str(high), path],
                       check=True, env=env(), cwd=ROOT)
        with open(path, "rb") as source:
            frames = pickle.load(source)
        print(f"instructions per write, in-process, -P {args.pipeline}, {args.python}; "
              f"n1 -> n2: {sum(map(len, frames)) // (high * args.pipeline)} bytes per write")
        for mode in args.modes.split(","):
            with ThreadPoolExecutor(2) as pool:  # in parallel: they count, not time
                a = pool.submit(count, args.python, mode, args.pipeline, low, path)
                b = pool.submit(count, args.python, mode, args.pipeline, high, path)
                n = (b.result() - a.result()) // ((high - low) * args.pipeline)
            print(f"  {mode:7} {n:8,d}", flush=True)


if __name__ == "__main__":
    main()
