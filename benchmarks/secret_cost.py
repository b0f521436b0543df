# ruff: noqa: UP031  (printf-style tables read best here)
"""What the cluster secret costs: sealing and opening records, per write.

1. In one process: the time to seal and open one record (one HMAC-SHA256
   each way, see distkv/cluster/handshake.py) holding 1 write frame, and
   holding 64 (a replication batch), per write.
2. Three real nodes on 127.0.0.1 (memory only, all peered), without and
   with ``--cluster-secret-file``, alternating ``--rounds`` times: ``--keys``
   SETs through node 1 (16 connections, pipelined 64 deep), then wait until
   nodes 2 and 3 hold every key. Reported: the write rate through node 1,
   the time until the last key is everywhere, and the CPU each node used
   per write (user + system, /proc), whose difference is the per-write cost
   of sealing on the sender and opening on the receivers. Medians.

Usage: python benchmarks/secret_cost.py [--keys 200000] [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

from distkv.cluster import wire  # noqa: E402
from distkv.cluster.handshake import Opener, Sealer  # noqa: E402


def per_record(writes):
    """(seconds to seal, seconds to open) one record of ``writes`` write frames."""
    frame = wire.encode_write(1, benchlib.key_for(1), (benchlib.value_for(1), 1, 0, "node1"))
    payload = frame * writes
    sealer, opener = Sealer(b"k" * 32, 1 << 21), Opener(b"k" * 32, 1 << 21)
    number = 20000 // writes * 10
    seal = min(timeit.repeat(lambda: sealer.seal(payload), number=number, repeat=5)) / number
    fresh = Sealer(b"k" * 32, 1 << 21)  # the opener counts records from 0
    records = iter([fresh.seal(payload) for _ in range(number)])
    opened = min(timeit.repeat(lambda: opener.feed(next(records)), number=number // 5, repeat=5))
    return seal, opened / (number // 5), len(payload)


def micro():
    print("In one process (CPython %s, load %.1f):" % (sys.version.split()[0], benchlib.loadavg()))
    for writes in (1, 64):
        seal, opened, size = per_record(writes)
        print("  record of %2d write(s), %6d bytes: seal %.2f us, open %.2f us; "
              "%.2f us per write both ends" % (writes, size, seal * 1e6, opened * 1e6,
                                              (seal + opened) * 1e6 / writes))


def keys_on(port):
    client = benchlib.Client(port)
    try:
        return int(client.status()["keys"])
    finally:
        client.close()


def answers(port):
    try:
        client = benchlib.Client(port)
    except OSError:
        return False
    try:
        return client.call(b"SET warm up") == b"OK"
    finally:
        client.close()


def run_cluster(twistd, workdir, secret_path, keys, tag):
    ports = [benchlib.free_port() for _ in range(3)]
    extra = ["--loading-wait", "1"]
    if secret_path:
        extra += ["--cluster-secret-file", secret_path]
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(benchlib.start_node(
                twistd, port, os.path.join(workdir, "%s-n%d.log" % (tag, i + 1)),
                peers=ports, node_id="n%d" % (i + 1), extra=extra))
        for proc, port in zip(procs, ports):
            benchlib.wait_listening(proc, port).close()
        deadline = time.monotonic() + 30
        while not all(answers(p) for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("nodes did not start serving")
            time.sleep(0.05)
        cpu0 = [benchlib.cpu_seconds(p.pid) for p in procs]
        start = time.monotonic()
        rate, _, bad = benchlib.load(ports[0], 0, keys, conns=16, batch=64)
        assert bad == 0, bad
        while min(keys_on(p) for p in ports[1:]) < keys + 1:
            if time.monotonic() - start > 600:
                raise RuntimeError("replication did not finish")
            time.sleep(0.01)
        everywhere = time.monotonic() - start
        cpu = [(benchlib.cpu_seconds(p.pid) - c) / keys * 1e6 for p, c in zip(procs, cpu0)]
        return rate, everywhere, cpu
    finally:
        for proc in procs:
            benchlib.stop_node(proc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200000, help="SETs per run (200000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind (3)")
    parser.add_argument("--twistd", default=benchlib.default_twistd(),
                        help="twistd to run (default: next to this python)")
    args = parser.parse_args()
    micro()
    workdir = tempfile.mkdtemp(prefix="distkv-secret-cost-")
    secret = os.path.join(workdir, "cluster.secret")
    with open(secret, "wb") as f:
        f.write(os.urandom(32).hex().encode() + b"\n")
    os.chmod(secret, 0o600)
    results = {"plain": [], "secret": []}
    for round_ in range(args.rounds):
        for kind in ("plain", "secret"):
            got = run_cluster(args.twistd, workdir, secret if kind == "secret" else None,
                              args.keys, "%s%d" % (kind, round_))
            results[kind].append(got)
            print("  %-6s round %d: %7.0f SET/s through n1, everywhere after %.2f s; "
                  "CPU us/write n1 %.1f n2 %.1f n3 %.1f (load %.1f)"
                  % (kind, round_ + 1, got[0], got[1], *got[2], benchlib.loadavg()))
    print("Three nodes, %d SETs through n1, median of %d:" % (args.keys, args.rounds))
    for kind, runs in results.items():
        print("  %-6s %7.0f SET/s, everywhere after %.2f s, CPU us/write n1 %.1f n2 %.1f n3 %.1f"
              % (kind, statistics.median(r[0] for r in runs),
                 statistics.median(r[1] for r in runs),
                 *(statistics.median(r[2][i] for r in runs) for i in range(3))))


if __name__ == "__main__":
    main()
