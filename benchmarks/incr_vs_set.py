#!/usr/bin/env python3
# ruff: noqa: UP031  (printf-style tables read best here)
"""INCR's throughput against SET's on one DistKV node (the figure: INCR >= 0.8x SET).

    python benchmarks/incr_vs_set.py [--rounds 5] [--requests 200000] [--configs 50:1,50:16]

Starts one memory-only node (``twistd distkv``, no peers) and, for each
``-c:-P`` pair, alternates ``redis-benchmark -q --csv -t set`` and ``-t incr``
runs (SET, INCR, SET, INCR...) for ``--rounds`` rounds, so that whatever else
the machine does falls on both alike. ``-t incr`` increments one key
(``counter:__rand_int__`` with no ``-r``: the same key every time), ``-t set``
writes one key with a 3-byte value, as redis-benchmark does. Prints each
run's req/s, then per pair the median of each and the ratio INCR/SET, and the
ratio of each round's pair (min and max). It also reads the node's own CPU
time (``/proc``) around each run: CPU microseconds per request, and the
ratio SET's/INCR's, which is what INCR/SET req/s would be with the node
alone on a core, and moves far less than req/s on a busy machine (it does
not count time spent waiting). ``--twistd`` picks the interpreter
(the ``twistd`` next to it), ``--source`` a checkout to run. Every process
started is stopped in a finally block; standard library only.
"""

import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def run_benchmark(tool, port, test, clients, pipeline, requests):
    done = subprocess.run(
        [tool, "-h", benchlib.HOST, "-p", str(port), "-q", "--csv", "-t", test,
         "-n", str(requests), "-c", str(clients), "-P", str(pipeline)],
        capture_output=True, text=True, timeout=600, check=True)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    return float(rows[0]["rps"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--configs", default="50:1,50:16")
    parser.add_argument("--twistd", default=benchlib.default_twistd())
    parser.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args()
    tool = shutil.which("redis-benchmark")
    if tool is None:
        sys.exit("redis-benchmark is not installed")
    configs = [tuple(int(x) for x in pair.split(":")) for pair in args.configs.split(",")]
    workdir = tempfile.mkdtemp(prefix="incr-vs-set-")
    port = benchlib.free_port()
    proc = benchlib.start_node(args.twistd, port, os.path.join(workdir, "node.log"), source=args.source)
    try:
        benchlib.wait_listening(proc, port).close()
        run_benchmark(tool, port, "set,incr", 50, 16, args.requests)  # warm-up, unrecorded
        summary = []
        for clients, pipeline in configs:
            rates = {"set": [], "incr": []}
            cpu = {"set": [], "incr": []}  # node CPU microseconds per request
            for index in range(args.rounds):
                for test in ("set", "incr"):
                    before = benchlib.cpu_seconds(proc.pid)
                    rps = run_benchmark(tool, port, test, clients, pipeline, args.requests)
                    used = (benchlib.cpu_seconds(proc.pid) - before) * 1e6 / args.requests
                    rates[test].append(rps)
                    cpu[test].append(used)
                    line = "-c %d -P %-2d round %d %-4s %10.0f req/s %7.2f us CPU/request"
                    print(line % (clients, pipeline, index + 1, test, rps, used), flush=True)
            rounds = [incr / set_ for incr, set_ in zip(rates["incr"], rates["set"])]
            summary.append((clients, pipeline, statistics.median(rates["set"]),
                            statistics.median(rates["incr"]), min(rounds), max(rounds),
                            statistics.median(cpu["set"]), statistics.median(cpu["incr"])))
        print()
        print("%-12s %12s %12s %10s %16s %12s %12s %10s" % (
            "-c:-P", "SET req/s", "INCR req/s", "INCR/SET", "per round", "SET us CPU", "INCR us CPU",
            "by CPU"))
        for clients, pipeline, set_, incr, low, high, set_cpu, incr_cpu in summary:
            print("%-12s %12.0f %12.0f %10.2f %8.2f-%.2f %12.2f %12.2f %10.2f" % (
                "%d:%d" % (clients, pipeline), set_, incr, incr / set_, low, high, set_cpu, incr_cpu,
                set_cpu / incr_cpu))
    finally:
        benchlib.stop_node(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
