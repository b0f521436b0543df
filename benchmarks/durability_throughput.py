# ruff: noqa: UP031  (printf-style tables read best here)
"""SET throughput of one DistKV node: memory only vs --data-dir with each --fsync policy.

Configurations are measured in the same run and alternated (A B C D A B C D ...)
so that drift of the machine (other load, page cache, thermal) hits all of them
alike. Every measurement starts a fresh node (and, for the disk configurations,
a fresh data dir), waits until it listens, then writes the same ``--ops`` new
keys (16-byte keys, 100-byte values) with pipelined SETs from ``--conns``
connections in ``--procs`` load processes separate from the node. The clock
runs from the first batch sent to the last reply received; nodes start outside it.

After each measurement the node is checked: every reply must have been ``OK``,
STATUS must show ``keys N``, and a sample of keys must GET back their values.
For data-dir nodes the data dir is then read back (after the node stopped) as a
restart would read it, and its live keys counted, so the number measured is
for data on disk. Needs DistKV importable by the Python running this script.

Usage: python benchmarks/durability_throughput.py [--ops 200000] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

CONFIGS = [  # (name, fsync policy or None for memory only)
    ("memory", None),
    ("fsync=always", "always"),
    ("fsync=everysec", "everysec"),
    ("fsync=no", "no"),
]


def keys_on_disk(data_dir):
    """Live keys in a stopped node's data dir, read back the way a restart reads them."""
    from distkv.disk.datafile import Disk
    from distkv.store.hlc import HybridClock
    from distkv.store.store import Store

    disk = Disk(data_dir)
    try:
        store = Store(HybridClock("reader", lambda: 0))
        disk.load(store, None)
    finally:
        disk.close()
    return len(store)


def measure(args, name, fsync, workdir, run):
    """One measurement on a fresh node; returns req/s (raises if the data is wrong)."""
    port = benchlib.free_port()
    log_path = os.path.join(workdir, "run%02d-%s.log" % (run, name.replace("=", "-")))
    data_dir = None
    if fsync is not None:
        data_dir = os.path.join(workdir, "data%02d-%s" % (run, fsync))
    proc = benchlib.start_node(args.twistd, port, log_path, data_dir=data_dir, fsync=fsync)
    try:
        client = benchlib.wait_listening(proc, port)
        load_avg, cpu0 = benchlib.loadavg(), benchlib.cpu_seconds(proc.pid)
        rate, seconds, errors = benchlib.load(port, 0, args.ops, args.conns, args.batch,
                                              args.procs)
        # The node's own CPU time for the load: less sensitive than wall time
        # to other work on the machine (SETs per node CPU-second).
        per_cpu = args.ops / max(1e-9, benchlib.cpu_seconds(proc.pid) - cpu0)
        keys = int(client.status()["keys"])
        wrong = benchlib.check_sample(client, args.ops, args.sample)
        rss, hwm = benchlib.rss_kib(proc.pid)
        client.close()
    finally:
        code = benchlib.stop_node(proc)
    on_disk = "-"
    if data_dir is not None:
        on_disk = keys_on_disk(data_dir)
    print("  round %d %-15s %7.0f req/s %6.2fs  %7.0f SET/node-CPU-s  load %.1f  non-OK %d  "
          "keys %d  on disk %s  sample wrong %d  RSS %d MiB  exit %s"
          % (run // len(CONFIGS) + 1, name, rate, seconds, per_cpu, load_avg, errors, keys,
             on_disk, wrong, rss // 1024, code), flush=True)
    problems = benchlib.log_problems(log_path)
    for line in problems[:5]:
        print("    log: " + line)
    if errors or keys != args.ops or wrong or (data_dir and on_disk != args.ops):
        raise SystemExit("  ! %s lost or refused writes: the figures would be dishonest" % name)
    if data_dir is not None and not args.keep:
        shutil.rmtree(data_dir)  # keep /tmp from filling up over the rounds
    return rate, per_cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=200000,
                        help="SETs per measurement (default 200000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of A B C D (default 3, at least 2 is sensible)")
    parser.add_argument("--conns", type=int, default=16, help="client connections (16)")
    parser.add_argument("--batch", type=int, default=64, help="SETs per pipelined write (64)")
    parser.add_argument("--procs", type=int, default=1,
                        help="load processes sharing the connections (1)")
    parser.add_argument("--sample", type=int, default=1000, help="keys checked with GET (1000)")
    parser.add_argument("--twistd", default=benchlib.default_twistd(),
                        help="twistd to run (default: next to this python)")
    parser.add_argument("--tmp", default=None, help="where data dirs go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="distkv-bench-", dir=args.tmp)
    print("twistd %s; %d SETs per measurement, %d conns x batch %d in %d load process(es); "
          "work dir %s" % (args.twistd, args.ops, args.conns, args.batch, args.procs, workdir))
    rates = {name: [] for name, _ in CONFIGS}
    per_cpu = {name: [] for name, _ in CONFIGS}
    began, start_load = time.monotonic(), benchlib.loadavg()
    try:
        run = 0
        for _ in range(args.rounds):
            for name, fsync in CONFIGS:  # alternate A B C D
                rate, efficiency = measure(args, name, fsync, workdir, run)
                rates[name].append(rate)
                per_cpu[name].append(efficiency)
                run += 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\nreq/s per configuration over %d rounds (%.0fs in all):" %
          (args.rounds, time.monotonic() - began))
    base = statistics.median(rates["memory"])
    cpu_base = statistics.median(per_cpu["memory"])
    for name, _ in CONFIGS:
        median = statistics.median(rates[name])
        cpu = statistics.median(per_cpu[name])
        print("  %-15s median %7.0f  min %7.0f  max %7.0f  ratio to memory %.2fx   "
              "SET/node-CPU-s median %7.0f (%.2fx)"
              % (name, median, min(rates[name]), max(rates[name]), median / base,
                 cpu, cpu / cpu_base))
    ratio = statistics.median(rates["fsync=everysec"]) / base
    verdict = "met" if ratio >= 0.7 else "MISSED by %.2fx" % (0.7 - ratio)
    print("target everysec >= 0.70x memory: %.2fx (%s)" % (ratio, verdict))
    print("1-minute load average at the start %.1f, now %.1f (this benchmark's node and "
          "load process add up to ~1.5 themselves)" % (start_load, benchlib.loadavg()))


if __name__ == "__main__":
    main()
