#!/usr/bin/env python3
# ruff: noqa: UP031  (printf-style tables read best here)
"""Throughput over TLS against plain TCP on the same node, beside redis-server's own.

    /tmp/benchvenv/bin/python benchmarks/tls_throughput.py            # ~6 min
    /tmp/benchvenv/bin/python benchmarks/tls_throughput.py --quick    # ~1 min

Makes a throwaway CA and a certificate for 127.0.0.1 with the ``openssl``
command (the README's recipe), then starts one memory-only DistKV node with a
plain ``--port`` and a ``--tls-port`` (with ``--tls-ca``, so clients are asked
for an optional certificate, as a node with peer TLS does), and, when
``redis-server --tls-port`` works, one redis-server with a plain port and a TLS
port (``--tls-auth-clients optional``). Each target is driven with identical
``redis-benchmark -q --csv -t set,get -n N -c 50 -P P`` runs for ``-P 1`` and
``-P 16`` (``--tls --cacert`` for the TLS ports), targets alternated plain,
TLS, redis plain, redis TLS for ``--rounds`` rounds after one unrecorded
warm-up run each. The summary is the median req/s over the rounds and the
TLS/plain ratio of each server (issue 12's target for DistKV: at least 0.8),
and the server's own CPU time per request (from /proc), which other load on
a shared machine moves less than req/s.
Connections are made once per redis-benchmark client, so the handshake cost
is in the figures only once per connection. Standard library only; the node
runs with the ``twistd`` next to this Python (``--twistd`` picks another),
which needs pyOpenSSL (``pip install '.[tls]'``).
"""

import argparse
import csv
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    HOST,
    cpu_seconds,
    default_twistd,
    free_port,
    loadavg,
    log_problems,
    start_node,
    stop_node,
    wait_listening,
)

CSV_FIELDS = ("rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms",
              "p99_latency_ms", "max_latency_ms")
TARGET = 0.8


def make_certificates(directory):
    """A CA and a certificate for 127.0.0.1 signed by it, with the openssl CLI."""
    def run(*argv):
        subprocess.run(["openssl", *argv], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bench-ca")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node")
    with open(os.path.join(directory, "node.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth,clientAuth\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "node.ext", "-out", "node.crt")
    return {name: os.path.join(directory, name) for name in ("ca.pem", "node.crt", "node.key")}


def redis_benchmark(port, n, pipeline, tls_ca=None, clients=50, timeout=600, cpus=None):
    """One run: {test: {rps, ...}}, plus the lines that were not results."""
    argv = ["taskset", "-c", cpus] if cpus else []
    argv += ["redis-benchmark", "-h", HOST, "-p", str(port), "-q", "--csv", "-t", "set,get",
            "-n", str(n), "-c", str(clients), "-P", str(pipeline)]
    if tls_ca:
        argv += ["--tls", "--cacert", tls_ca]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    rows, other = {}, []
    text = (done.stdout + done.stderr).decode(errors="replace")
    for line in text.replace("\r", "\n").splitlines():
        fields = next(csv.reader(io.StringIO(line.strip()))) if line.strip() else []
        if not fields or fields[0] == "test":
            continue
        if len(fields) == 1 + len(CSV_FIELDS):
            try:
                rows[fields[0]] = dict(zip(CSV_FIELDS, map(float, fields[1:])))
                continue
            except ValueError:
                pass
        other.append(line.strip())
    return rows, other, done.returncode


def start_redis(workdir, port, tls_port, certs):
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
            "no", "--daemonize", "no", "--dir", workdir,
            "--logfile", os.path.join(workdir, "redis.log"),
            "--tls-port", str(tls_port), "--tls-cert-file", certs["node.crt"],
            "--tls-key-file", certs["node.key"], "--tls-ca-cert-file", certs["ca.pem"],
            "--tls-auth-clients", "optional"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def redis_answers(port, ca=None, timeout=20.0):
    """Until redis-cli PING answers PONG (over TLS with ``ca``); False at the deadline."""
    argv = ["redis-cli", "-h", HOST, "-p", str(port)] + (["--tls", "--cacert", ca] if ca else [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(argv + ["PING"], capture_output=True, text=True).stdout.strip()
        if out == "PONG":
            return True
        time.sleep(0.05)
    return False


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--twistd", default=default_twistd())
    parser.add_argument("--requests", type=int, default=200000, help="redis-benchmark -n")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="-n 30000, 2 rounds")
    parser.add_argument("--no-redis", action="store_true", help="skip redis-server")
    parser.add_argument("--json", help="save every run here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--pin", action="store_true",
                        help="servers on the first core, redis-benchmark on the others "
                             "(so the client's own TLS does not take the server's core)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 30000, 2
    for tool in ("openssl", "redis-benchmark", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit("%s is not installed" % tool)
    workdir = tempfile.mkdtemp(prefix="distkv-tls-bench-")
    certs = make_certificates(workdir)
    started = []
    targets = []  # (name, server, port, ca or None, pid)
    try:
        port, tls_port = free_port(), free_port()
        log = os.path.join(workdir, "node.log")
        node = start_node(args.twistd, port, log, extra=[
            "--tls-port", "tcp:%d:interface=%s" % (tls_port, HOST),
            "--tls-cert", certs["node.crt"], "--tls-key", certs["node.key"],
            "--tls-ca", certs["ca.pem"]])
        started.append(node)
        wait_listening(node, port).close()
        if not redis_answers(tls_port, certs["ca.pem"]):
            sys.exit("the node does not answer on its TLS port; see %s" % log)
        targets += [("distkv plain", "distkv", port, None, node.pid),
                    ("distkv tls", "distkv", tls_port, certs["ca.pem"], node.pid)]
        if not args.no_redis:
            rport, rtls = free_port(), free_port()
            redis = start_redis(workdir, rport, rtls, certs)
            started.append(redis)
            if redis_answers(rport) and redis_answers(rtls, certs["ca.pem"]):
                targets += [("redis plain", "redis", rport, None, redis.pid),
                            ("redis tls", "redis", rtls, certs["ca.pem"], redis.pid)]
            else:
                print("redis-server --tls-port does not work here: no redis figures")
        client_cpus = None
        if args.pin:
            cores = sorted(os.sched_getaffinity(0))
            if len(cores) < 2:
                sys.exit("--pin needs at least two cores")
            for _name, _, _port, _ca, pid in targets:
                os.sched_setaffinity(pid, {cores[0]})
            client_cpus = ",".join(str(c) for c in cores[1:])
            print("servers pinned to core %d, redis-benchmark to %s" % (cores[0], client_cpus))
        print("load %.2f, %d cores, %s %s, commit %s" % (
            loadavg(), os.cpu_count(), platform.python_implementation(),
            platform.python_version(), commit()), flush=True)
        for _name, _, tport, ca, _pid in targets:  # warm-up, not recorded
            redis_benchmark(tport, max(10000, args.requests // 10), 16, ca, cpus=client_cpus)
        runs = []
        for rnd in range(args.rounds):
            for pipeline in (1, 16):
                for name, _, tport, ca, pid in targets:
                    began, cpu = time.monotonic(), cpu_seconds(pid)
                    rows, other, rc = redis_benchmark(tport, args.requests, pipeline, ca,
                                                      cpus=client_cpus)
                    # The server's own CPU time per request (SET and GET runs): less
                    # moved by other load on the machine than req/s.
                    cpu_us = (cpu_seconds(pid) - cpu) * 1e6 / (2 * args.requests)
                    runs.append({"round": rnd, "target": name, "P": pipeline, "rows": rows,
                                 "rc": rc, "other": other, "load": loadavg(), "cpu_us": cpu_us,
                                 "secs": time.monotonic() - began})
                    print("round %d -P %-2d %-13s SET %9s GET %9s  server cpu %6.1f us/req  "
                          "load %.2f%s" % (
                              rnd + 1, pipeline, name,
                              "%.0f" % rows["SET"]["rps"] if "SET" in rows else "-",
                              "%.0f" % rows["GET"]["rps"] if "GET" in rows else "-", cpu_us,
                              runs[-1]["load"],
                              "  rc=%s %s" % (rc, other[:1]) if rc or other else ""),
                          flush=True)
        summarize(runs, targets, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"runs": runs, "at": datetime.datetime.utcnow().isoformat(),
                           "commit": commit()}, f, indent=1)
        problems = log_problems(log)
        if problems:
            print("node log lines that look like trouble:\n  " + "\n  ".join(problems[:10]))
    finally:
        for proc in started:
            stop_node(proc)
        if args.keep:
            print("kept", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def summarize(runs, targets, args):
    def med(target, pipeline, test):
        values = [r["rows"][test]["rps"] for r in runs
                  if r["target"] == target and r["P"] == pipeline and test in r["rows"]]
        return statistics.median(values) if values else None

    def cpu(target, pipeline):
        values = [r["cpu_us"] for r in runs if r["target"] == target and r["P"] == pipeline]
        return statistics.median(values) if values else None

    print("\n== median req/s over %d rounds, redis-benchmark -c 50 -n %d; ratio = TLS / plain ==" % (
        args.rounds, args.requests))
    print("%-8s %-4s %-4s %12s %12s %7s" % ("server", "-P", "test", "plain", "TLS", "ratio"))
    for server in sorted({t[1] for t in targets}, reverse=True):
        for pipeline in (1, 16):
            for test in ("SET", "GET"):
                plain = med(server + " plain", pipeline, test)
                tls = med(server + " tls", pipeline, test)
                ratio = tls / plain if plain and tls else None
                mark = ""
                if server == "distkv" and ratio is not None:
                    mark = "  (target >= %.1f: %s)" % (TARGET, "met" if ratio >= TARGET else "MISSED")
                print("%-8s %-4d %-4s %12s %12s %7s%s" % (
                    server, pipeline, test, "%.0f" % plain if plain else "-",
                    "%.0f" % tls if tls else "-", "%.2f" % ratio if ratio else "-", mark))
    print("\n== the server's CPU time per request (median us, SET and GET runs together) ==")
    print("%-8s %-4s %10s %10s %7s" % ("server", "-P", "plain", "TLS", "TLS/plain"))
    for server in sorted({t[1] for t in targets}, reverse=True):
        for pipeline in (1, 16):
            plain, tls = cpu(server + " plain", pipeline), cpu(server + " tls", pipeline)
            print("%-8s %-4d %10.1f %10.1f %7.2f" % (
                server, pipeline, plain or 0, tls or 0, tls / plain if plain and tls else 0))


if __name__ == "__main__":
    main()
