# ruff: noqa: UP031  (printf-style tables read best here)
"""SET and GET at each consistency level: throughput, p50 and p99 latency.

Three real nodes on 127.0.0.1 (memory only, all peered), started with
``--write-level L --read-level L`` for L in ONE, QUORUM, ALL, LINEARIZABLE
(with ``--max-clock-skew 1``, so each node takes part in ballots a second
after it starts; the run waits for that); the levels are
alternated ``--rounds`` times (a fresh cluster each time), so the machine's
other load falls on every level alike. In each, ``redis-benchmark`` runs
through node 1: SET then GET over ``--keyspace`` random keys, at a moderate
load (``--moderate`` connections, no pipelining: the latency figures) and
at a heavier one (``--clients`` connections: the throughput figure).
Reported: medians over the rounds, each level's throughput as a ratio
of ONE's in the same rounds, and the CPU time the three nodes spent per
request (user + system, all loads): on a shared machine the steadiest figure.
``--levels`` runs only some levels (and ONE); ``--before`` names another
checkout, run alternated with ``--source``, for a before/after comparison;
``--pipeline N`` has each connection send N requests at a time (a connection's
commands that ask the members run one ask at a time, in order).

Usage: python benchmarks/levels.py [--rounds 3] [--requests 20000]
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
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

LEVELS = ("one", "quorum", "all", "linearizable")


def start_cluster(twistd, workdir, level, source):
    ports = [benchlib.free_port() for _ in range(3)]
    procs = []
    for index, port in enumerate(ports):
        peers = [p for p in ports if p != port]
        log = os.path.join(workdir, "%s-node%d.log" % (level, index + 1))
        procs.append(benchlib.start_node(
            twistd, port, log, peers=peers, node_id="node%d" % (index + 1),
            extra=["--write-level", level, "--read-level", level]
            + (["--max-clock-skew", "1"] if level == "linearizable" else []), source=source))
    for proc, port in zip(procs, ports):
        client = benchlib.wait_listening(proc, port)
        deadline = time.monotonic() + 60
        while client.status().get("state") != "serving" or (
                level == "linearizable" and client.status().get("acceptor_ready") != "yes"):
            if time.monotonic() > deadline:
                raise RuntimeError("node on %d never served" % port)
            time.sleep(0.05)
        client.close()
    return procs, ports


def bench(tool, port, test, requests, clients, keyspace, pipeline=1):
    """(requests/s, p50 ms, p99 ms) from redis-benchmark's CSV line."""
    out = subprocess.run(
        [tool, "-h", benchlib.HOST, "-p", str(port), "-t", test, "-n", str(requests),
         "-c", str(clients), "-r", str(keyspace), "-d", "100", "-P", str(pipeline), "--csv"],
        check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    row = rows[-1]
    return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--moderate", type=int, default=4)
    parser.add_argument("--keyspace", type=int, default=10000)
    parser.add_argument("--twistd", default=benchlib.default_twistd())
    parser.add_argument("--source", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the checkout whose distkv the nodes run")
    parser.add_argument("--levels", default=",".join(LEVELS),
                        help="the levels to run, comma-separated (ONE is always run)")
    parser.add_argument("--before", default=None,
                        help="another checkout, run alternated with --source (its rows "
                        "are marked 'before'): a before/after comparison in one run")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="requests each connection sends at a time (redis-benchmark -P)")
    args = parser.parse_args()
    levels = ["one"] + [lv for lv in args.levels.lower().split(",") if lv in LEVELS and lv != "one"]
    sources = [("", args.source)] + ([("before ", args.before)] if args.before else [])
    tool = shutil.which("redis-benchmark")
    if tool is None:
        sys.exit("redis-benchmark is not installed")
    results = {(tag + level, test, load): [] for tag, _ in sources for level in levels
               for test in ("set", "get") for load in ("heavy", "moderate")}
    print("3 nodes on %s, %s; load average %.1f at the start (the machine is shared)"
          % (benchlib.HOST, sys.version.split()[0], benchlib.loadavg()))
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            for (tag, source), level in [(s, lv) for lv in levels for s in sources]:
                procs, ports = start_cluster(args.twistd, workdir, level, source)
                try:
                    for test in ("set", "get"):
                        for load, clients in (("heavy", args.clients),
                                              ("moderate", args.moderate)):
                            cpu = sum(benchlib.cpu_seconds(proc.pid) for proc in procs)
                            figures = bench(tool, ports[0], test, args.requests, clients,
                                            args.keyspace, args.pipeline)
                            cpu = sum(benchlib.cpu_seconds(proc.pid) for proc in procs) - cpu
                            figures += (cpu * 1e6 / args.requests,)
                            results[(tag + level, test, load)].append(figures)
                            print("  round %d %-19s %s %-8s %8.0f req/s  p50 %.2f ms  p99 %.2f ms"
                                  "  %4.0f us CPU/req" % (round_ + 1, tag + level.upper(),
                                                          test.upper(), load, *figures))
                finally:
                    for proc in procs:
                        benchlib.stop_node(proc)
    print("\nMedians over %d rounds (load average now %.1f):" % (args.rounds, benchlib.loadavg()))
    print("%-19s %-4s %12s %8s %22s %22s %10s" % ("level", "", "req/s heavy", "x ONE",
                                                  "p50/p99 ms heavy", "p50/p99 ms moderate",
                                                  "us CPU/req"))
    for test in ("set", "get"):
        for tag, level in [(tag, lv) for lv in levels for tag, _ in sources]:
            heavy = results[(tag + level, test, "heavy")]
            moderate = results[(tag + level, test, "moderate")]
            ratios = [mine[0] / one[0] for mine, one
                      in zip(heavy, results[(tag + "one", test, "heavy")])]
            print("%-19s %-4s %12.0f %8.2f %22s %22s %10.0f" % (
                tag + level.upper(), test.upper(), statistics.median(r[0] for r in heavy),
                statistics.median(ratios),
                "%.2f / %.2f" % (statistics.median(r[1] for r in heavy),
                                 statistics.median(r[2] for r in heavy)),
                "%.2f / %.2f" % (statistics.median(r[1] for r in moderate),
                                 statistics.median(r[2] for r in moderate)),
                statistics.median(r[3] for r in heavy + moderate)))


if __name__ == "__main__":
    main()
