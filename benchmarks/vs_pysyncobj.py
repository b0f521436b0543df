# ruff: noqa: UP031  (printf-style tables read best here)
"""Replicated writes per second: DistKV at a consistency level against pysyncobj's Raft.

pysyncobj (https://github.com/bakwc/PySyncObj) is a Python Raft library; its
``ReplDict`` is a dictionary replicated through a Raft log. Three of its
processes run on 127.0.0.1 (memory only, as the DistKV nodes here); once a
leader is elected, the leader's process writes ``--requests`` keys with at most
``--window`` writes outstanding, each counted when pysyncobj calls back with
``SUCCESS`` (committed by a majority and applied), with log entries sent as
they come (``appendEntriesUseBatch=False``, as pysyncobj's own benchmarks run
it: with batching, 50 writes outstanding made 434 writes/s here, without it
3,189). Its writes are made inside
the leader's process, so they cross no client connection: an advantage to
pysyncobj. DistKV's three nodes run with ``--write-level LEVEL`` (default
``linearizable``) and ``redis-benchmark -t set`` writes through node 1 with
``--window`` connections (one write outstanding on each). The two are
alternated ``--rounds`` times, fresh processes each time, so the machine's other
load falls on both alike; reported are medians and the ratio (issue 14's
target: DistKV at LINEARIZABLE >= 5x pysyncobj).

Usage: pip install pysyncobj; python benchmarks/vs_pysyncobj.py [--rounds 3]
       [--requests 20000] [--window 50] [--level linearizable]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import levels  # noqa: E402


def worker(me, partners, requests, window):
    """One pysyncobj node; if it is the leader once the cluster is ready, it
    writes ``requests`` keys and prints what it measured as one JSON line."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    replicated = ReplDict()
    node = SyncObj(me, partners, conf=SyncObjConf(dynamicMembershipChange=False, appendEntriesUseBatch=False),
                   consumers=[replicated])
    deadline = time.monotonic() + 60
    while not node.isReady() or node._getLeader() is None:  # no public "who leads" call
        if time.monotonic() > deadline:
            sys.exit("pysyncobj: no leader within 60 s")
        time.sleep(0.05)
    if str(node._getLeader()) != me:
        sys.stdin.read()  # a follower: serve until the parent closes our stdin
        return
    slots = threading.BoundedSemaphore(window)
    failures = []
    done = threading.Event()
    counted = [0]
    total = requests + requests // 10  # the first tenth warms up and is not timed
    started = [0.0]

    def answered(_result, error):
        if error != FAIL_REASON.SUCCESS:
            failures.append(error)
        counted[0] += 1
        if counted[0] == requests // 10:
            started[0] = time.perf_counter()
        if counted[0] == total:
            done.set()
        slots.release()

    value = b"x" * 10
    for i in range(total):
        slots.acquire()
        replicated.set(b"key:%06d" % (i % 100000), value, callback=answered)
    done.wait(300)
    seconds = time.perf_counter() - started[0]
    print(json.dumps({"writes": requests, "seconds": seconds, "failed": len(failures)}))
    sys.stdout.flush()
    sys.stdin.read()


def run_pysyncobj(requests, window):
    ports = [benchlib.free_port() for _ in range(3)]
    addrs = ["%s:%d" % (benchlib.HOST, port) for port in ports]
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", addr,
         ",".join(a for a in addrs if a != addr), "--requests", str(requests),
         "--window", str(window)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for addr in addrs]
    try:
        lines = []
        # Exactly one of them leads and prints; the others print nothing.
        reader = [threading.Thread(target=lambda p=p: lines.append(p.stdout.readline()))
                  for p in procs]
        for thread in reader:
            thread.daemon = True
            thread.start()
        deadline = time.monotonic() + 600
        while not any(line.strip() for line in lines):
            if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                raise RuntimeError("pysyncobj: no result (%r)" % lines)
            time.sleep(0.05)
        result = json.loads(next(line for line in lines if line.strip()))
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.kill()
            proc.wait()
    if result["failed"]:
        raise RuntimeError("pysyncobj: %d writes failed" % result["failed"])
    return result["writes"] / result["seconds"]


def run_distkv(args, tool, workdir):
    procs, ports = levels.start_cluster(args.twistd, workdir, args.level, args.source)
    try:
        rps, _p50, _p99 = levels.bench(tool, ports[0], "set", args.requests, args.window,
                                       100000)
    finally:
        for proc in procs:
            benchlib.stop_node(proc)
    return rps


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", nargs=2)
        parser.add_argument("--requests", type=int)
        parser.add_argument("--window", type=int)
        args = parser.parse_args()
        me, partners = args.worker
        worker(me, partners.split(","), args.requests, args.window)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--window", type=int, default=50,
                        help="writes outstanding (pysyncobj) and connections (DistKV)")
    parser.add_argument("--level", default="linearizable")
    parser.add_argument("--twistd", default=benchlib.default_twistd())
    parser.add_argument("--source", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the checkout whose distkv the nodes run")
    args = parser.parse_args()
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        sys.exit("pysyncobj is not installed: pip install pysyncobj")
    tool = shutil.which("redis-benchmark")
    if tool is None:
        sys.exit("redis-benchmark is not installed")
    print("3 local nodes each, %s; load average %.1f at the start (the machine is shared)"
          % (sys.version.split()[0], benchlib.loadavg()))
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            theirs.append(run_pysyncobj(args.requests, args.window))
            ours.append(run_distkv(args, tool, workdir))
            print("  round %d: pysyncobj %8.0f writes/s   DistKV %-12s %8.0f writes/s   %.1fx"
                  % (round_ + 1, theirs[-1], args.level.upper(), ours[-1],
                     ours[-1] / theirs[-1]))
    ratios = [mine / other for mine, other in zip(ours, theirs)]
    print("\nMedians over %d rounds (load average now %.1f): pysyncobj %.0f writes/s, "
          "DistKV %s %.0f writes/s, ratio %.1fx (target >= 5x)"
          % (args.rounds, benchlib.loadavg(), statistics.median(theirs), args.level.upper(),
             statistics.median(ours), statistics.median(ratios)))


if __name__ == "__main__":
    main()
