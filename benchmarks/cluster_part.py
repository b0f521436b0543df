# ruff: noqa: UP031  (printf-style tables read best here)
"""The ``cluster`` part of ``vs_redis.py``: three replicas against redis-server's.

Systems, alternated ``--rounds`` times (fresh processes each round): redis-server
alone, redis-server as a primary with two replicas, and for each interpreter
DistKV alone (one node, no peers) and a 3-node DistKV cluster. For each of
``-P 1`` and ``-P 16`` (``-c 50``, ``-r 100000``, ``--cluster-requests`` SETs):

- **one**: ``redis-benchmark -t set`` through node 1 (the primary);
- **all** (DistKV clusters only, a Redis replica takes no writes): three
  ``redis-benchmark -t set`` at once, one per node, each a third of the requests.

Reported per run: req/s (summed over the runs that went at once) and redis-
benchmark's p99; the time from the end of the load until a marker written
through each written node right after it reads back on every replica (writes
replicate in order, so the last write of the load got there first); and each
process's CPU (user +
system, from ``/proc``) over the load and that drain, in microseconds per
write the cluster took, with the cluster's total as a multiple of the same
server alone. Then ``-t get -P 16`` on every node of the idle cluster against
the node alone (replication's cost to reads). Issue 16's targets: 3-node SET
``-P 16`` >= 0.6x redis primary + 2 replicas under PyPy, >= 0.4x under
CPython; the whole cluster's CPU per write <= 4x one node alone, the origin
<= 2x, each peer <= the origin's cost alone; the last write on every replica
within 100 ms; GETs within 10% of the node alone.
"""

import statistics
import subprocess
import time

import benchlib

PIPELINES = (1, 16)


def _cpu(servers):
    return [benchlib.cpu_seconds(s.proc.pid) for s in servers]


def _system(vs, name, python, workdir):
    """(servers, write ports) of one system, every link up."""
    if name == "redis-alone":
        server = vs.Server("cluster-redis-alone", "redis", "c", workdir)
        server.wait_ready()
        return [server], [server.port]
    if name == "redis-3":
        servers, port, _, _ = vs.start_lag_system("redis", None, workdir, replicas=2)
        return servers, [port]
    impl, _, shape = name.partition("-")
    if shape == "alone":
        server = vs.Server("cluster-%s-alone" % impl, "distkv", impl, workdir, python=python)
        server.wait_ready()
        return [server], [server.port]
    servers, _, _, _ = vs.start_lag_system(impl, python, workdir)
    return servers, [s.port for s in servers]


def _drain(vs, servers, through, timeout):
    """Seconds from the end of a load until a marker written through each node of
    ``through`` just after it reads back on every other server (None: not within
    ``timeout``). Replication is in order (redis-server's stream; DistKV's outbox per
    peer), so each marker's arrival means every write before it arrived too."""
    if len(servers) == 1:
        return 0.0
    began = time.monotonic()
    marker = b"%.6f" % time.time()
    writers = [vs.Resp(port) for port in through]
    readers = [(vs.Resp(s.port), s.port) for s in servers]
    try:
        for writer, port in zip(writers, through):
            writer.call(b"SET", b"drain-marker:%d" % port, marker)
        left = [(reader, b"drain-marker:%d" % port) for reader, mine in readers for port in through
                if port != mine]
        while left:
            if time.monotonic() - began > timeout:
                return None
            left = [(reader, key) for reader, key in left if reader.call(b"GET", key) != marker]
            if left:
                time.sleep(0.001)
        return time.monotonic() - began
    finally:
        for c in writers + [r for r, _ in readers]:
            c.close()


def _load(vs, ports, test, requests, pipeline, timeout):
    """redis-benchmark through each of ``ports`` at once: (req/s summed, worst p99, rows)."""
    share = requests // len(ports)
    argv = lambda port: ["redis-benchmark", "-h", vs.HOST, "-p", str(port), "-q", "--csv",  # noqa: E731
                         "-t", test, "-n", str(share), "-c", "50", "-P", str(pipeline),
                         "-r", "100000"]
    if len(ports) == 1:
        run = vs.redis_benchmark(ports[0], test, share, 50, pipeline, timeout, extra=["-r", "100000"])
        row = run["rows"].get(test.upper())
        if row is None:
            raise RuntimeError("redis-benchmark gave no result: %s" % run["other"][:3])
        return row["rps"], row["p99_latency_ms"]
    procs = [subprocess.Popen(argv(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for port in ports]
    rps, p99 = 0.0, 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        lines = [line for line in out.replace("\r", "\n").splitlines()
                 if line.startswith('"%s"' % test.upper())]
        if not lines:
            raise RuntimeError("redis-benchmark gave no result: %s" % out[-300:])
        fields = [f.strip('"') for f in lines[-1].split(",")]
        rps += float(fields[1])
        p99 = max(p99, float(fields[6]))
    return rps, p99


def run_cluster(vs, args, impls, workdir, results):
    systems = [("redis-alone", None), ("redis-3", None)]
    for impl, python in impls:
        systems += [("%s-alone" % impl, python), ("%s-3" % impl, python)]
    runs = results.setdefault("cluster", [])
    print("\n== cluster: SET -c 50 -r 100000, %d requests per run; systems alternated per round ==" % (
        args.cluster_requests))
    for round_ in range(args.rounds):
        for name, python in systems:
            servers = []
            try:
                servers, ports = _system(vs, name, python, workdir)
                if args.warmup:
                    _load(vs, ports[:1], "set", args.warmup, 16, args.bench_timeout)
                    _drain(vs, servers, ports[:1], args.drain_timeout)
                modes = [("one", ports[:1])] + ([("all", ports)] if name.endswith("-3") and
                                                 not name.startswith("redis") else [])
                for pipeline in PIPELINES:
                    for mode, through in modes:
                        vs.WATCH.wait_quiet(vs.WATCH_LIMIT[0])
                        before = _cpu(servers)
                        rps, p99 = _load(vs, through, "set", args.cluster_requests, pipeline,
                                         args.bench_timeout)
                        drain = _drain(vs, servers, through, args.drain_timeout)
                        used = [after - b for after, b in zip(_cpu(servers), before)]
                        per_write = [1e6 * u / args.cluster_requests for u in used]
                        runs.append({"round": round_, "system": name, "mode": mode, "pipeline": pipeline,
                                     "rps": rps, "p99": p99, "drain_secs": drain, "cpu_us": per_write})
                        print("  round %d %-14s SET -P %-2d via %-3s %8.0f req/s  p99 %6.2f ms  "
                              "drained %s  CPU us/write %s (total %.1f)" % (
                                  round_ + 1, name, pipeline, mode, rps, p99,
                                  "%.3fs" % drain if drain is not None else "NO",
                                  "/".join("%.1f" % x for x in per_write), sum(per_write)))
                for port in ports:
                    rps, p99 = _load(vs, [port], "get", args.cluster_requests, 16, args.bench_timeout)
                    runs.append({"round": round_, "system": name, "mode": "get", "pipeline": 16,
                                 "port_index": ports.index(port), "rps": rps, "p99": p99})
                    print("  round %d %-14s GET -P 16 on node %d %8.0f req/s" % (
                        round_ + 1, name, ports.index(port) + 1, rps))
            finally:
                for server in servers:
                    server.stop()
    summarize(runs, systems)


def _runs(runs, **match):
    return [r for r in runs if all(r.get(k) == v for k, v in match.items())]


def summarize(runs, systems):
    print("\nMedians over the rounds:")
    print("%-14s %-3s %3s %10s %8s %10s %28s %8s" % ("system", "via", "-P", "req/s", "p99 ms",
                                                     "drain ms", "CPU us/write per process",
                                                     "x alone"))
    for name, _ in systems:
        for pipeline in PIPELINES:
            for mode in ("one", "all"):
                picked = _runs(runs, system=name, mode=mode, pipeline=pipeline)
                if not picked:
                    continue
                drains = [r["drain_secs"] for r in picked]
                cpu = [statistics.median(r["cpu_us"][i] for r in picked)
                       for i in range(len(picked[0]["cpu_us"]))]
                alone_name = name.replace("-3", "-alone")
                alone = _runs(runs, system=alone_name, mode="one", pipeline=pipeline)
                alone_cpu = statistics.median(sum(r["cpu_us"]) for r in alone) if alone else None
                print("%-14s %-3s %3d %10.0f %8.2f %10s %28s %8s" % (
                    name, mode, pipeline, statistics.median(r["rps"] for r in picked),
                    statistics.median(r["p99"] for r in picked),
                    "%.1f" % (1000 * statistics.median(drains)) if None not in drains else "NOT",
                    "/".join("%.1f" % x for x in cpu),
                    "%.1f" % (sum(cpu) / alone_cpu) if alone_cpu and name != alone_name else "-"))
    for impl in sorted({name.split("-")[0] for name, _ in systems} - {"redis"}):
        for pipeline in PIPELINES:
            mine = _runs(runs, system="%s-3" % impl, mode="one", pipeline=pipeline)
            redis = _runs(runs, system="redis-3", mode="one", pipeline=pipeline)
            ratios = [m["rps"] / r["rps"] for m, r in zip(mine, redis)]
            if ratios:
                print("%s 3 nodes / redis primary + 2 replicas, SET -P %d via one node: %.2fx" % (
                    impl, pipeline, statistics.median(ratios)))
        gets = _runs(runs, system="%s-3" % impl, mode="get")
        alone = _runs(runs, system="%s-alone" % impl, mode="get")
        if gets and alone:
            print("%s GET -P 16 on a cluster node / the node alone: %.2fx" % (
                impl, statistics.median(r["rps"] for r in gets) / statistics.median(r["rps"] for r in alone)))
