#!/usr/bin/env python3
# ruff: noqa: UP031  (printf-style tables read best here)
"""DistKV side by side with redis-server, on loopback, in one command.

    /tmp/harnessvenv/bin/python benchmarks/vs_redis.py --pypy /tmp/harnesspypy/bin/python

Parts (``--only`` picks some, comma separated; all by default):

throughput
    redis-server, DistKV (one memory-only node, no peers) and the bare Twisted
    server of ``bare_twisted.py``, each under CPython and, when a PyPy with
    Twisted and DistKV is available, PyPy, driven with identical
    ``redis-benchmark -q --csv -t set,get -n N -c C -P P`` runs for
    ``-c 50 -P 1``, ``-c 50 -P 16`` and ``-c 1 -P 1``, servers alternated
    A B C ... A B C ... for ``--rounds`` rounds (``--configs`` picks other
    -c:-P pairs). req/s, p50 and p99 come from
    redis-benchmark's own CSV (``rps``, ``p50_latency_ms``, ``p99_latency_ms``
    columns). The summary shows the median over the rounds and the ratio to
    redis-server's median. Every server first gets one unrecorded warm-up run
    (``--warmup`` SETs and GETs at ``-c 50 -P 16``; it lets PyPy's JIT warm up).
fakeredis
    fakeredis's ``TcpFakeServer`` (its own process, default settings) in the
    same alternation, with the same -c/-P settings but at most
    ``--fakeredis-requests`` requests per run (it is slow); once as shipped
    (``socketserver``'s listen backlog of 5) and once with a backlog of
    ``--fakeredis-backlog``, to tell its backlog from its speed.
connections
    ``redis-benchmark -c 1000 -n 50000 -t ping,set,get`` against fresh DistKV
    nodes (and redis-server, for comparison); every line of redis-benchmark's
    output that is not a result is reported, with its exit code, and the node's
    ``connected_clients`` afterwards. redis-benchmark stops at the first error,
    so when that run reports one it is repeated with ``-t ping_mbulk,set,get``
    (no inline PING) to see the rest.
lag
    a 3-node DistKV cluster (each interpreter; after the same warm-up as the
    throughput servers): a client writes ``SET lag:i <time>`` through node 1
    while a second connection polls ``GET lag:i`` on node 2, first
    with the cluster idle and then while ``redis-benchmark -t set -c 50 -P 1
    -r 100000 -d 100`` loads node 1; the lag is from sending the SET to the
    first GET on node 2 that returns the value (it includes the SET's own round
    trip, which is reported separately), as median/p90/p99/max. After the load
    stops, the time until node 1 has no unacknowledged writes for its peers
    and all three nodes hold the same number of keys. The same two phases run
    first against a redis-server master and one replica (``--replicaof``),
    for context (``--no-redis-lag`` skips it). GETs poll every ``--lag-poll``
    seconds: spinning would starve node 1 of CPU on a 2-core machine.
cluster
    3 DistKV nodes against redis-server with two replicas (and each alone),
    writes through one node and through all three, ``-P 1`` and ``-P 16``:
    req/s, p99, the time for the last write to reach every replica, each
    process's CPU microseconds per write; see ``cluster_part.py``.
memory
    1,000,000 keys (16-byte keys, 100-byte values, benchlib.key_for/value_for)
    loaded with pipelined RESP SETs into fresh servers one at a time: VmRSS
    (and VmHWM) from /proc before and after, per key; for redis-server also
    INFO memory's used_memory.

Every process this starts is stopped (SIGTERM, then SIGKILL) in a finally
block. Ports are found by binding port 0 on 127.0.0.1. Standard library only
(Python 3.9+); the interpreters that run the servers need Twisted and DistKV
installed (``--cpython``, ``--pypy``), and the ``fakeredis`` package for the
fakeredis part (``--fakeredis-python``). ``--quick`` shrinks every size so the
whole run takes about a minute; ``--json PATH`` saves every figure and
``--from-json PATH`` prints a saved run's throughput summary again.
``--pause-while REGEX`` waits before each measurement while another process
matching REGEX runs (another benchmark on the same cores), marks what such a
process overlapped anyway, and leaves overlapped rounds out of the summary
when a clean round remains.
"""

import argparse
import csv
import datetime
import io
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_seconds, free_port, key_for, log_problems, rss_kib, value_for  # noqa: E402

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("throughput", "fakeredis", "connections", "lag", "memory", "cluster")
CONFIGS = ((50, 1), (50, 16), (1, 1))
# Targets of issue 4 (DistKV / redis-server req/s), by interpreter and -P.
TARGETS = {("cpython", 1): 0.5, ("cpython", 16): 0.3, ("pypy", 1): 0.9, ("pypy", 16): 0.7}
FAKEREDIS_SERVER = (
    "import sys\n"
    "from fakeredis import TcpFakeServer\n"
    "if len(sys.argv) > 3:  # a listen backlog other than socketserver's 5\n"
    "    TcpFakeServer.request_queue_size = int(sys.argv[3])\n"
    "server = TcpFakeServer((sys.argv[1], int(sys.argv[2])))\n"
    "print('fakeredis TcpFakeServer listening', flush=True)\n"
    "server.serve_forever()\n"
)

STARTED = []  # every Popen this script started, stopped in main's finally


class Watcher:
    """Other processes whose command line matches ``--pause-while`` (another benchmark, say).

    Before each measurement :meth:`wait_quiet` waits while one runs; a thread
    polls every second, and :meth:`overlap` says what ran during a measurement
    anyway. This process, its ancestors and its children never count.
    """

    def __init__(self, pattern):
        self.regex = re.compile(pattern) if pattern else None
        self.mine = set()
        pid = os.getpid()
        while pid > 1:
            self.mine.add(pid)
            try:
                with open("/proc/%d/stat" % pid) as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        self.seen = []  # (time, "pid cmdline") while polling
        self.paused = 0.0
        if self.regex:
            threading.Thread(target=self._poll, daemon=True).start()

    def matches(self):
        if not self.regex:
            return []
        mine = self.mine | {p.pid for p in STARTED}
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in mine:
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cmdline and self.regex.search(cmdline):
                found.append("%s %s" % (name, cmdline[:160]))
        return found

    def _poll(self):
        while True:
            for hit in self.matches():
                self.seen.append((time.time(), hit))
            time.sleep(1.0)

    def mark(self):
        return len(self.seen)

    def overlap(self, mark):
        """The distinct matching processes seen since ``mark``."""
        return sorted({hit for _, hit in self.seen[mark:]})

    def wait_quiet(self, limit):
        began = time.monotonic()
        said = False
        while time.monotonic() - began < limit:
            found = self.matches()
            if not found:
                break
            if not said:
                print("  (pausing while %s runs)" % found[0], flush=True)
                said = True
            time.sleep(5)
        else:
            print("  (still running after %gs; measuring anyway)" % limit, flush=True)
        self.paused += time.monotonic() - began


WATCH = Watcher(None)  # replaced in main
WATCH_LIMIT = [600.0]


# --------------------------------------------------------------------------
# A small blocking RESP2 client


class RespError(Exception):
    """An error reply (returned, not raised, by Resp.read)."""


class Resp:
    """A RESP2 connection: ``call(b"GET", key)``; replies parsed to Python values."""

    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0

    @staticmethod
    def encode(*args):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if not isinstance(arg, bytes):
                arg = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def _parse(self, pos):
        """(value, next position), or None if the buffer holds no whole reply."""
        buf = self.buf
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return None
        kind, line = buf[pos:pos + 1], buf[pos + 1:nl]
        pos = nl + 2
        if kind == b"+":
            return line, pos
        if kind == b"-":
            return RespError(line.decode(errors="replace")), pos
        if kind == b":":
            return int(line), pos
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                return None
            return buf[pos:pos + size], pos + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                got = self._parse(pos)
                if got is None:
                    return None
                items.append(got[0])
                pos = got[1]
            return items, pos
        raise ConnectionError("not RESP: %r" % buf[pos - 1 - len(line):nl + 2][:80])

    def _take(self):
        got = self._parse(self.pos)
        if got is None:
            return False, None
        self.pos = got[1]
        if self.pos == len(self.buf):
            self.buf, self.pos = b"", 0
        return True, got[0]

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0

    def read(self):
        while True:
            whole, value = self._take()
            if whole:
                return value
            self._fill()

    def poll(self):
        """A reply if one has arrived, without blocking: (True, value) or (False, None)."""
        whole, value = self._take()
        if whole:
            return whole, value
        if select.select([self.sock], [], [], 0)[0]:
            self._fill()
            return self._take()
        return False, None

    def call(self, *args):
        self.send(*args)
        return self.read()

    def info(self, section=None):
        """INFO as a dict of field -> string."""
        text = self.call(b"INFO", section) if section else self.call(b"INFO")
        if isinstance(text, RespError):
            raise text
        fields = {}
        for line in text.decode(errors="replace").splitlines():
            if ":" in line and not line.startswith("#"):
                name, _, value = line.partition(":")
                fields[name] = value
        return fields

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# Processes


def stop(proc, timeout=15.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print("  ! pid %d ignored SIGTERM for %gs; killing" % (proc.pid, timeout))
            proc.kill()
            proc.wait(10)
    if proc in STARTED:
        STARTED.remove(proc)
    return proc.returncode


def spawn(argv, log_path=None, cwd="/"):
    """Start a process; cwd matters: twistd and ``python -c`` import from it, and a DistKV
    checkout there would shadow the installed package."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd)
    finally:
        if log_path:
            out.close()
    STARTED.append(proc)
    return proc


def twistd_argv(python):
    """How to run the twistd of an interpreter's environment."""
    beside = os.path.join(os.path.dirname(python), "twistd")
    if os.path.exists(beside):
        return [beside]
    return [python, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


class Server:
    """One server process on a free port (redis, distkv, bare, fakeredis)."""

    def __init__(self, name, kind, impl, workdir, python=None, peers=None, port=None, node_id=None,
                 extra=(), backlog=None):
        self.name, self.kind, self.impl = name, kind, impl
        self.port = port or free_port()
        self.log = os.path.join(workdir, "%s-%d.log" % (name, self.port))
        if kind == "redis":
            argv = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                    "--appendonly", "no", "--daemonize", "no", "--logfile", self.log,
                    "--dir", workdir]
        elif kind == "distkv":
            argv = twistd_argv(python) + ["-n", "--pidfile=", "-l", self.log, "distkv",
                                          "--port", "tcp:%d:interface=%s" % (self.port, HOST)]
            if peers:
                argv += ["--peers", ",".join("%s:%d" % (HOST, p) for p in peers)]
            if node_id:
                argv += ["--node-id", node_id]
        elif kind == "bare":
            argv = [python, os.path.join(HERE, "bare_twisted.py"), "--port", str(self.port)]
        elif kind == "fakeredis":
            argv = [python, "-c", FAKEREDIS_SERVER, HOST, str(self.port)] + (
                [str(backlog)] if backlog else [])
        else:
            raise ValueError(kind)
        self.argv = argv = argv + list(extra)
        # twistd writes its log to self.log itself; stdout/stderr go beside it.
        out = None if kind == "redis" else self.log + (".out" if kind == "distkv" else "")
        self.proc = spawn(argv, out, cwd=workdir)

    def wait_ready(self, timeout=60.0):
        """Until PING answers PONG (and, for DistKV, INFO persistence shows loading:0)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with code %s before it was ready; see %s"
                                   % (self.name, self.proc.returncode, self.log))
            try:
                client = Resp(self.port, timeout=5)
                try:
                    last = client.call(b"PING")
                    if last == b"PONG":
                        if self.kind != "distkv":
                            return
                        last = client.info("persistence").get("loading")
                        if last == "0":
                            return
                finally:
                    client.close()
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("%s not ready within %gs (last: %r)" % (self.name, timeout, last))

    def rss_mib(self):
        try:
            rss, hwm = rss_kib(self.proc.pid)
            return rss / 1024.0, hwm / 1024.0
        except (OSError, TypeError):
            return None, None

    def stop(self):
        return stop(self.proc)


def interp_info(python):
    """(implementation, version string, Twisted version) of an interpreter, or an error string."""
    code = ("import platform, sys, twisted\n"
            "v = platform.python_version()\n"
            "if hasattr(sys, 'pypy_version_info'):\n"
            "    v += ' (PyPy %d.%d.%d)' % sys.pypy_version_info[:3]\n"
            "print(platform.python_implementation().lower()); print(v); print(twisted.__version__)\n"
            "import distkv; print(distkv.__file__)\n")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    except OSError as e:
        return str(e)
    if done.returncode:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "exit %d" % done.returncode
    lines = done.stdout.split("\n")
    return {"impl": lines[0], "version": lines[1], "twisted": lines[2], "distkv": lines[3]}


def compare_with_checkout(init_path):
    """Which distkv/*.py of an installed DistKV differ from this checkout's ('' if none)."""
    installed = os.path.dirname(init_path)
    checkout = os.path.join(os.path.dirname(HERE), "distkv")
    if not os.path.isdir(checkout):
        return "no checkout next to benchmarks/"
    names = sorted({n for d in (installed, checkout) if os.path.isdir(d) for n in os.listdir(d)
                    if n.endswith(".py")})
    differ = []
    for name in names:
        try:
            with open(os.path.join(installed, name), "rb") as mine, \
                    open(os.path.join(checkout, name), "rb") as theirs:
                if mine.read() != theirs.read():
                    differ.append(name)
        except OSError:
            differ.append(name)
    return ", ".join(differ)


def fakeredis_info(python):
    try:
        done = subprocess.run([python, "-c", "import fakeredis, redis; from fakeredis import TcpFakeServer; "
                                             "print(fakeredis.__version__, redis.__version__)"],
                              capture_output=True, text=True, timeout=60, cwd="/")
    except OSError as e:
        return None, str(e)
    if done.returncode:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "exit %d" % done.returncode
        return None, why
    fr, rp = done.stdout.split()
    return {"fakeredis": fr, "redis-py": rp}, None


def machine_info(args):
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "nproc": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name")), "?")
    except OSError:
        info["cpu"] = "?"
    info["kernel"] = platform.release()
    for tool in ("redis-server", "redis-benchmark"):
        try:
            info[tool] = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
        except OSError as e:
            info[tool] = "missing (%s)" % e
    try:
        info["distkv_commit"] = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        info["loadavg_at_start"] = f.read().split()[0]
    return info


# --------------------------------------------------------------------------
# redis-benchmark

CSV_FIELDS = ("rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms",
              "p99_latency_ms", "max_latency_ms")


def redis_benchmark(port, tests, n, clients, pipeline, timeout, extra=()):
    """One redis-benchmark run: {"rows": {TEST: {...}}, "rc", "other": [non-result lines], "secs"}."""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-q", "--csv", "-t", tests,
            "-n", str(n), "-c", str(clients), "-P", str(pipeline)] + list(extra)
    WATCH.wait_quiet(WATCH_LIMIT[0])
    mark = WATCH.mark()
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    STARTED.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = "timeout after %gs" % timeout
    finally:
        if proc.poll() is None:  # interrupted (a signal): do not leave it behind
            proc.kill()
            proc.wait()
        if proc in STARTED:
            STARTED.remove(proc)
    secs = time.monotonic() - began
    rows, other = {}, []
    text = out.decode(errors="replace") + err.decode(errors="replace")
    for line in text.replace("\r", "\n").splitlines():
        line = line.strip()
        if not line:
            continue
        fields = next(csv.reader(io.StringIO(line)))
        if fields and fields[0] == "test":
            continue
        if len(fields) == 1 + len(CSV_FIELDS):
            try:
                rows[fields[0]] = dict(zip(CSV_FIELDS, map(float, fields[1:])))
                continue
            except ValueError:
                pass
        other.append(line)
    return {"argv": argv, "rows": rows, "rc": rc, "other": other, "secs": secs,
            "overlap": WATCH.overlap(mark), "at": time.strftime("%H:%M:%S")}


def overlapped(hits):
    return "  [OVERLAPPED: %s]" % hits[0] if hits else ""


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pct(values, q):
    """The q-th percentile (nearest rank) of a list."""
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(q / 100.0 * len(values)) - 1))
    return values[k]


# --------------------------------------------------------------------------
# Parts


def run_throughput(args, servers, results):
    """servers: list of Server, redis first. Alternates them per config and round."""
    for srv in servers:
        if args.warmup:
            r = redis_benchmark(srv.port, "set,get", args.warmup, 50, 16, args.bench_timeout)
            print("  warm-up %-20s %s" % (srv.name, "ok" if r["rows"] else "no result: %s" % r["other"][:3]))
    runs = results.setdefault("throughput_runs", [])
    for clients, pipeline in args.configs:
        n_default = args.requests if clients > 1 else args.requests_serial
        print("\n-c %d -P %d" % (clients, pipeline))
        for rnd in range(1, args.rounds + 1):
            for srv in servers:
                n = min(n_default, args.fakeredis_requests) if srv.kind == "fakeredis" else n_default
                if srv.proc.poll() is not None:
                    print("  ! %s has exited (code %s)" % (srv.name, srv.proc.returncode))
                    continue
                # One redis-benchmark per test, so the server's own CPU time (from /proc)
                # can be charged to each: CPU per request does not count the time the server
                # waits, and moves far less with the machine's load than req/s does.
                r = {"rows": {}, "rc": 0, "other": [], "overlap": [], "at": None}
                for test in ("set", "get"):
                    before = cpu_seconds(srv.proc.pid)
                    one = redis_benchmark(srv.port, test, n, clients, pipeline, args.bench_timeout)
                    used = cpu_seconds(srv.proc.pid) - before
                    for row in one["rows"].values():
                        row["cpu_us"] = used / n * 1e6
                    r["rows"].update(one["rows"])
                    r["rc"] = r["rc"] or one["rc"]
                    r["other"] += one["other"]
                    r["overlap"] += one["overlap"]
                    r["at"] = one["at"]
                rss = srv.rss_mib()[0]
                run = {"server": srv.name, "clients": clients, "pipeline": pipeline, "round": rnd, "n": n,
                       "rows": r["rows"], "rc": r["rc"], "other": r["other"], "rss_mib_after": rss,
                       "overlap": r["overlap"], "ended_at": r["at"]}
                runs.append(run)
                cells = []
                for test in ("SET", "GET"):
                    row = r["rows"].get(test)
                    cells.append("%s %9.0f/s p50 %6.3f p99 %7.3f ms cpu %6.2f us" % (
                        test, row["rps"], row["p50_latency_ms"], row["p99_latency_ms"], row["cpu_us"])
                                 if row else "%s  (no result)" % test)
                print("  round %d %-20s %s | %s | RSS %s MiB%s%s" % (
                    rnd, srv.name, cells[0], cells[1], "%.0f" % rss if rss else "?",
                    "" if r["rc"] == 0 and not r["other"] else "  rc=%s %s" % (r["rc"], r["other"][:3]),
                    overlapped(r["overlap"])))


def summarize_throughput(results, names):
    runs = results.get("throughput_runs", [])
    # A round in which any measurement overlapped another benchmark (--pause-while) is left out
    # for every server of that config, as long as a clean round remains.
    tainted = {(r["clients"], r["pipeline"], r["round"]) for r in runs if r.get("overlap")}
    rounds = {(r["clients"], r["pipeline"], r["round"]) for r in runs}
    dropped = []
    configs = sorted({(r["clients"], r["pipeline"]) for r in runs},
                     key=lambda c: CONFIGS.index(c) if c in CONFIGS else len(CONFIGS))
    for clients, pipeline in configs:
        mine = {x for x in rounds if x[:2] == (clients, pipeline)}
        if mine - tainted:
            dropped += sorted(mine & tainted)
    if dropped:
        runs = [r for r in runs if (r["clients"], r["pipeline"], r["round"]) not in dropped]
    results["rounds_left_out"] = ["-c %d -P %d round %d" % x for x in dropped]
    summary = []
    for clients, pipeline in configs:
        for test in ("SET", "GET"):
            base = base_cpu = None
            for name in names:
                rows = [r["rows"][test] for r in runs if r["server"] == name and r["clients"] == clients
                        and r["pipeline"] == pipeline and test in r["rows"]]
                if not rows:
                    continue
                entry = {"clients": clients, "pipeline": pipeline, "test": test, "server": name,
                         "rounds": len(rows), "rps": median(x["rps"] for x in rows),
                         "rps_each": [x["rps"] for x in rows],
                         "p50": median(x["p50_latency_ms"] for x in rows),
                         "p99": median(x["p99_latency_ms"] for x in rows),
                         # JSON from before the CPU column has none
                         "cpu_us": median(x.get("cpu_us") for x in rows)}
                if name == "redis-server":
                    base = entry["rps"]
                    base_cpu = entry["cpu_us"]
                entry["ratio"] = entry["rps"] / base if base else None
                entry["cpu_ratio"] = (base_cpu / entry["cpu_us"]
                                      if base and base_cpu and entry["cpu_us"] else None)
                summary.append(entry)
    for e in summary:  # DistKV against the bare Twisted server on the same interpreter
        bare = [b for b in summary if b["server"] == "bare-twisted-" + e["server"].split("-", 1)[-1]
                and (b["clients"], b["pipeline"], b["test"]) == (e["clients"], e["pipeline"], e["test"])]
        e["vs_bare"] = e["rps"] / bare[0]["rps"] if e["server"].startswith("distkv-") and bare else None
    results["throughput_summary"] = summary
    print("\n== throughput: median of rounds; ratio = req/s / redis-server req/s; "
          "vs bare = DistKV / bare Twisted server, same interpreter; cpu us = the server's "
          "CPU time per request; cpu ratio = redis-server's cpu us / this server's ==")
    if dropped:
        print("left out (another benchmark overlapped a measurement of the round): %s"
              % ", ".join(results["rounds_left_out"]))
    print("%-10s %-4s %-20s %10s %8s %8s %7s %8s %7s %9s   %s" % (
        "config", "test", "server", "req/s", "p50 ms", "p99 ms", "ratio", "vs bare", "cpu us",
        "cpu ratio", "each round"))
    for e in summary:
        print("%-10s %-4s %-20s %10.0f %8.3f %8.3f %7s %8s %7s %9s   %s" % (
            "-c%d -P%d" % (e["clients"], e["pipeline"]), e["test"], e["server"], e["rps"], e["p50"], e["p99"],
            "%.2fx" % e["ratio"] if e["ratio"] is not None else "-",
            "%.2fx" % e["vs_bare"] if e["vs_bare"] is not None else "",
            "%.2f" % e["cpu_us"] if e.get("cpu_us") else "-",
            "%.2fx" % e["cpu_ratio"] if e.get("cpu_ratio") else "-",
            " ".join("%.0f" % x for x in e["rps_each"])))
    verdicts = []
    for e in summary:
        if not e["server"].startswith("distkv-") or e["clients"] != 50 or e["ratio"] is None:
            continue
        impl = e["server"].split("-", 1)[1]
        target = TARGETS.get((impl, e["pipeline"]))
        if target is None:
            continue
        verdicts.append({"server": e["server"], "config": "-c 50 -P %d" % e["pipeline"], "test": e["test"],
                         "ratio": e["ratio"], "target": target, "met": e["ratio"] >= target})
    results["targets"] = verdicts
    if verdicts:
        print("\n== issue 4 targets ==")
        for v in verdicts:
            print("  %-16s %-12s %-3s %.2fx vs target >= %.1fx: %s" % (
                v["server"], v["config"], v["test"], v["ratio"], v["target"],
                "MET" if v["met"] else "MISSED by %.2f (%.0f%% of target)" % (
                    v["target"] - v["ratio"], 100 * v["ratio"] / v["target"])))


def run_connections(args, impls, workdir, results):
    out = results.setdefault("connections", [])
    targets = [("redis-server", "redis", None)] + [("distkv-%s" % impl, "distkv", py) for impl, py in impls]
    print("\n== connections: redis-benchmark -c %d -n %d -t ping,set,get ==" % (
        args.conn_clients, args.conn_requests))
    for name, kind, python in targets:
        srv = Server(name, kind, None, workdir, python=python)
        try:
            srv.wait_ready()
            runs = [("ping,set,get", redis_benchmark(srv.port, "ping,set,get", args.conn_requests,
                                                      args.conn_clients, 1, args.bench_timeout))]
            if runs[0][1]["rc"] != 0 or runs[0][1]["other"]:
                # redis-benchmark stops at the first error; run the rest without the inline PING
                runs.append(("ping_mbulk,set,get", redis_benchmark(srv.port, "ping_mbulk,set,get",
                                                                   args.conn_requests, args.conn_clients, 1,
                                                                   args.bench_timeout)))
            clients_after = None
            time.sleep(0.5)
            try:
                c = Resp(srv.port)
                clients_after = c.info("clients").get("connected_clients")
                c.close()
            except (OSError, RespError) as e:
                clients_after = "INFO failed: %s" % e
            problems = log_problems(srv.log) if kind == "distkv" else []
            entry = {"server": name, "runs": [{"tests": t, "rc": r["rc"], "rows": r["rows"],
                                               "other": r["other"], "overlap": r["overlap"]}
                                              for t, r in runs],
                     "connected_clients_after": clients_after, "rss_mib": srv.rss_mib(),
                     "log_problems": problems[:20]}
            out.append(entry)
            for tests, r in runs:
                print("  %-16s -t %-18s rc=%s  %s" % (name, tests, r["rc"], "  ".join(
                    "%s %.0f/s p99 %.1f ms" % (t, row["rps"], row["p99_latency_ms"])
                    for t, row in r["rows"].items())))
                print("  %-16s    error/other lines: %d%s%s" % (
                    "", len(r["other"]), (" " + repr(r["other"][:5])) if r["other"] else "",
                    overlapped(r["overlap"])))
            print("  %-16s    connected_clients afterwards: %s; RSS %.0f MiB; log problems: %d" % (
                "", clients_after, entry["rss_mib"][0] or 0, len(problems)))
        finally:
            srv.stop()


def lag_samples(p_write, p_read, count, gap, tag, poll=0.0, timeout=10.0):
    """(end-to-end lags, SET round trips, timeouts) in ms; ``poll``: seconds between GETs."""
    w, r = Resp(p_write), Resp(p_read)
    lags, acks, timeouts = [], [], 0
    try:
        for i in range(count):
            key = b"lag:%s:%d" % (tag, i)
            value = b"%.6f" % time.time()
            t0 = time.perf_counter()
            w.send(b"SET", key, value)
            ack = None
            while True:
                if ack is None:
                    whole, reply = w.poll()
                    if whole:
                        ack = time.perf_counter() - t0
                        if reply != b"OK":
                            raise RuntimeError("SET through node 1 answered %r" % (reply,))
                got = r.call(b"GET", key)
                now = time.perf_counter() - t0
                if got == value:
                    lags.append(now * 1000)
                    break
                if isinstance(got, RespError):
                    raise RuntimeError("GET on node 2 answered %s" % got)
                if now > timeout:
                    timeouts += 1
                    break
                if poll:
                    time.sleep(poll)
            if ack is None:
                reply = w.read()
                ack = time.perf_counter() - t0
            acks.append(ack * 1000)
            if gap:
                time.sleep(gap)
    finally:
        w.close()
        r.close()
    return lags, acks, timeouts


def describe(values):
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "p90": pct(values, 90),
            "p99": pct(values, 99), "max": max(values), "min": min(values)}


def fmt(d):
    if not d.get("n"):
        return "no samples"
    return "median %.2f  p90 %.2f  p99 %.2f  max %.2f ms (n=%d)" % (d["median"], d["p90"], d["p99"], d["max"],
                                                                  d["n"])


def _wait_until(what, check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("%s not reached within %gs" % (what, timeout))
        time.sleep(0.05)


def _distkv_pending(c1):
    """Writes node 1 holds that its peers have not acknowledged."""
    repl = c1.info("replication")
    return sum(int(dict(kv.split("=", 1) for kv in v.split(",")).get("outbox_writes", 0))
               for k, v in repl.items() if k.startswith("peer"))


def _redis_pending(c1):
    """Replication bytes the master has sent that its slowest replica has not acknowledged."""
    repl = c1.info("replication")
    offset = int(repl.get("master_repl_offset", 0))
    slaves = [dict(kv.split("=", 1) for kv in v.split(","))
              for k, v in repl.items() if re.match(r"slave\d+$", k)] or [{"offset": "-1"}]
    return offset - min(int(slave.get("offset", -1)) for slave in slaves)


def start_lag_system(system, python, workdir, replicas=1):
    """(servers, write port, read port, pending function); servers[0] takes the writes.
    redis-server gets ``replicas`` replicas; DistKV is always 3 nodes."""
    if system == "redis":
        master = Server("lag-redis-master", "redis", "c", workdir, extra=["--repl-diskless-sync-delay", "0"])
        master.wait_ready()
        servers = [master]
        for i in range(replicas):
            replica = Server("lag-redis-replica%d" % (i + 1), "redis", "c", workdir,
                             extra=["--replicaof", HOST, str(master.port)])
            replica.wait_ready()
            c = Resp(replica.port)
            try:
                _wait_until("replica link up",
                            lambda c=c: c.info("replication").get("master_link_status") == "up")
            finally:
                c.close()
            servers.append(replica)
        return servers, master.port, servers[1].port, _redis_pending
    ports = [free_port() for _ in range(3)]
    nodes = []
    for i, port in enumerate(ports):
        nodes.append(Server("cluster-%s-n%d" % (system, i + 1), "distkv", system, workdir, python=python,
                            peers=ports, port=port, node_id="n%d" % (i + 1)))
    for node in nodes:
        node.wait_ready(timeout=120)
    for node in nodes:  # and every peer link up
        c = Resp(node.port)
        try:
            _wait_until(node.name + " peer links up",
                        lambda c=c: c.info("replication").get("connected_peers") == "2")
        finally:
            c.close()
    return nodes, ports[0], ports[1], _distkv_pending


def run_lag(args, impls, workdir, results):
    out = results.setdefault("lag", [])
    systems = [("redis", None)] if not args.no_redis_lag else []
    systems += list(impls)
    for system, python in systems:
        if system == "redis":
            title = "redis-server master + 1 replica (for context), write to the master, read the replica"
        else:
            title = "3-node DistKV cluster (%s), write via node 1, read on node 2" % system
        print("\n== lag: %s ==" % title)
        nodes = []
        try:
            began = time.monotonic()
            nodes, p_write, p_read, pending = start_lag_system(system, python, workdir)
            entry = {"system": system, "ready_secs": time.monotonic() - began}
            print("  ready (every node serving, every link up) after %.2fs" % entry["ready_secs"])
            if args.warmup:  # the same unrecorded warm-up as the throughput servers get (PyPy's JIT)
                r = redis_benchmark(p_write, "set,get", args.warmup, 50, 16, args.bench_timeout,
                                    extra=["-r", "100000", "-d", "100"])
                c = Resp(p_write)
                try:
                    _wait_until("warm-up replicated", lambda c=c, pending=pending: pending(c) == 0,
                                args.drain_timeout)
                finally:
                    c.close()
                entry["warmup"] = {"rows": r["rows"], "other": r["other"]}
                print("  warm-up on the written node (-c 50 -P 16 -r 100000 -d 100): %s" % (
                    ", ".join("%s %.0f/s" % (t, row["rps"]) for t, row in r["rows"].items())
                    or r["other"][:3]))
            WATCH.wait_quiet(WATCH_LIMIT[0])
            mark = WATCH.mark()
            lags, acks, timeouts = lag_samples(p_write, p_read, args.lag_samples, args.lag_gap, b"idle",
                                                args.lag_poll)
            entry["idle"] = {"lag": describe(lags), "set_rtt": describe(acks), "timeouts": timeouts,
                             "overlap": WATCH.overlap(mark)}
            print("  idle      lag %s; SET round trip median %.2f ms; timeouts %d%s" % (
                fmt(entry["idle"]["lag"]), entry["idle"]["set_rtt"].get("median", float("nan")), timeouts,
                overlapped(entry["idle"]["overlap"])))

            WATCH.wait_quiet(WATCH_LIMIT[0])
            mark = WATCH.mark()
            c1 = Resp(p_write)
            before = int(c1.info("stats").get("total_commands_processed", 0))
            load_argv = ["redis-benchmark", "-h", HOST, "-p", str(p_write), "-q", "-t", "set", "-c", "50",
                         "-P", "1", "-r", "100000", "-d", "100", "-n", "100000000"]
            loader = spawn(load_argv)
            try:
                time.sleep(1.0)
                t0 = time.monotonic()
                lags, acks, timeouts = lag_samples(p_write, p_read, args.lag_samples, args.lag_gap,
                                                   b"load", args.lag_poll)
                elapsed = time.monotonic() - t0
                after = int(c1.info("stats").get("total_commands_processed", 0))
                rss_loaded = [n.rss_mib()[0] for n in nodes]
            finally:
                loader_rc = loader.poll()
                stop(loader)
            stopped = time.monotonic()
            entry["load"] = {"lag": describe(lags), "set_rtt": describe(acks), "timeouts": timeouts,
                             "loader": " ".join(load_argv), "loader_exited_early": loader_rc,
                             "writer_commands_per_s": (after - before) / (elapsed + 1.0),
                             "rss_mib": rss_loaded, "overlap": WATCH.overlap(mark)}
            print("  loaded    lag %s; SET round trip median %.2f ms; timeouts %d%s" % (
                fmt(entry["load"]["lag"]), entry["load"]["set_rtt"].get("median", float("nan")), timeouts,
                overlapped(entry["load"]["overlap"])))
            print("            the written node served ~%.0f commands/s during the load; RSS %s MiB%s" % (
                entry["load"]["writer_commands_per_s"],
                "/".join("%.0f" % x if x else "?" for x in rss_loaded),
                "" if loader_rc is None else "; loader exited early with %s" % loader_rc))
            # Drain: nothing unacknowledged on the written node and every node the same size.
            others = [Resp(n.port) for n in nodes[1:]]
            drained = sizes = None
            while time.monotonic() - stopped < args.drain_timeout:
                left = pending(c1)
                sizes = [c1.call(b"DBSIZE")] + [o.call(b"DBSIZE") for o in others]
                if left == 0 and len(set(sizes)) == 1:
                    drained = time.monotonic() - stopped
                    break
                time.sleep(0.05)
            entry["drain_secs"] = drained
            entry["sizes"] = sizes
            print("  after the load stopped: %s (DBSIZE %s)" % (
                "nothing unacknowledged and sizes equal in %.2fs" % drained if drained is not None
                else "NOT drained within %gs" % args.drain_timeout, "/".join(map(str, sizes or []))))
            for o in others:
                o.close()
            c1.close()
            if system != "redis":
                entry["log_problems"] = {n.name: log_problems(n.log)[:20] for n in nodes}
                for name, problems in entry["log_problems"].items():
                    if problems:
                        print("  log %s: %d suspicious lines, first: %s" % (
                            name, len(problems), problems[0][:200]))
            out.append(entry)
        finally:
            for node in nodes:
                node.stop()


SET_16_100 = b"*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$100\r\n%s\r\n"


def load_keys(port, count, batch):
    """Pipelined RESP SETs of key_for(i)/value_for(i) over one connection; returns seconds."""
    c = Resp(port, timeout=120)
    began = time.monotonic()
    try:
        for start in range(0, count, batch):
            stop_at = min(start + batch, count)
            c.sock.sendall(b"".join(SET_16_100 % (key_for(i), value_for(i)) for i in range(start, stop_at)))
            want = stop_at - start
            data = b""
            while data.count(b"\r\n") < want:
                chunk = c.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection during the load")
                data += chunk
            if data != b"+OK\r\n" * want:
                odd = data.replace(b"+OK\r\n", b"")[:200]
                raise RuntimeError("unexpected replies during the load: %r" % odd)
        return time.monotonic() - began
    finally:
        c.close()


def run_memory(args, impls, workdir, results):
    out = results.setdefault("memory", [])
    print("\n== memory: %d keys, 16-byte keys, 100-byte values, pipelined SETs (%d per write) ==" % (
        args.keys, args.batch))
    targets = [("redis-server", "redis", None)] + [("distkv-%s" % impl, "distkv", py) for impl, py in impls]
    for name, kind, python in targets:
        srv = Server(name, kind, None, workdir, python=python)
        try:
            srv.wait_ready()
            time.sleep(0.5)
            empty = srv.rss_mib()
            WATCH.wait_quiet(WATCH_LIMIT[0])
            mark = WATCH.mark()
            secs = load_keys(srv.port, args.keys, args.batch)
            c = Resp(srv.port)
            size = c.call(b"DBSIZE")
            wrong = 0
            step = max(1, args.keys // 1000)
            for i in range(0, args.keys, step):
                if c.call(b"GET", key_for(i)) != value_for(i):
                    wrong += 1
            used = c.info("memory").get("used_memory") if kind == "redis" else None
            c.close()
            time.sleep(2.0)
            loaded = srv.rss_mib()
            entry = {"server": name, "keys": args.keys, "dbsize": size, "wrong_sample": wrong,
                     "load_secs": secs, "rss_empty_mib": empty[0], "rss_loaded_mib": loaded[0],
                     "hwm_mib": loaded[1], "redis_used_memory": used,
                     "bytes_per_key": (loaded[0] - empty[0]) * 1048576 / args.keys,
                     "overlap": WATCH.overlap(mark)}
            out.append(entry)
            print("  %-16s RSS empty %6.1f MiB, loaded %7.1f MiB (peak %7.1f), %5.0f bytes/key over empty; "
                  "DBSIZE %s, wrong in sample %d, load %.1fs (%.0f SET/s)%s%s" % (
                      name, empty[0], loaded[0], loaded[1], entry["bytes_per_key"], size, wrong, secs,
                      args.keys / secs, "; used_memory %s" % used if used else "",
                      overlapped(entry["overlap"])))
        finally:
            srv.stop()


# --------------------------------------------------------------------------


def pick_pypy(arg):
    """The PyPy interpreter to use, or (None, why not)."""
    if arg == "none":
        return None, "disabled with --pypy none"
    candidate = arg if arg != "auto" else shutil.which("pypy3")
    if not candidate:
        return None, "no pypy3 on PATH"
    info = interp_info(candidate)
    if isinstance(info, str):
        return None, ("%s cannot run DistKV (%s); make a PyPy venv with DistKV installed "
                      "(pypy3 -m venv V && V/bin/python -m pip install .) and pass --pypy V/bin/python"
                      % (candidate, info))
    return candidate, info


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run redis-server, DistKV (CPython, PyPy), a bare Twisted RESP server and fakeredis "
                    "side by side with redis-benchmark; also 1000-connection, replication-lag and "
                    "memory measurements.",
        epilog="Parts: " + ", ".join(PARTS) + ". See the module docstring for what each measures.")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="comma-separated parts to run (default: all: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (a run of about a minute): overrides the size options below")
    parser.add_argument("--cpython", default=sys.executable if platform.python_implementation() == "CPython"
                        else shutil.which("python3"),
                        help="CPython interpreter with Twisted and DistKV installed (default: %(default)s)")
    parser.add_argument("--pypy", default="auto",
                        help="PyPy interpreter with Twisted and DistKV installed; 'auto' tries pypy3 on "
                             "PATH, 'none' skips PyPy (default: %(default)s)")
    parser.add_argument("--fakeredis-python", default=None,
                        help="interpreter with the fakeredis package (default: the --cpython one)")
    parser.add_argument("--configs", default="50:1,50:16,1:1",
                        help="redis-benchmark -c:-P pairs for the throughput part (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A B C ... per config (default 3)")
    parser.add_argument("--requests", "-n", type=int, default=100000,
                        help="requests per test for the -c 50 configs (default %(default)s)")
    parser.add_argument("--requests-serial", type=int, default=20000,
                        help="requests per test for -c 1 -P 1 (default %(default)s)")
    parser.add_argument("--fakeredis-requests", type=int, default=10000,
                        help="at most this many requests per fakeredis run (default %(default)s)")
    parser.add_argument("--fakeredis-backlog", type=int, default=1024,
                        help="also run fakeredis with this listen backlog instead of socketserver's 5 "
                             "(0: don't; default %(default)s)")
    parser.add_argument("--warmup", type=int, default=50000,
                        help="requests per test of one unrecorded -c 50 -P 16 run per server (0: none; "
                             "default %(default)s)")
    parser.add_argument("--no-bare", action="store_true", help="leave the bare Twisted server out")
    parser.add_argument("--conn-clients", type=int, default=1000, help="clients for the connections part")
    parser.add_argument("--conn-requests", type=int, default=50000, help="requests for the connections part")
    parser.add_argument("--lag-samples", type=int, default=300, help="lag samples per phase (default 300)")
    parser.add_argument("--lag-gap", type=float, default=0.005,
                        help="seconds between lag samples (default %(default)s)")
    parser.add_argument("--lag-poll", type=float, default=0.0002,
                        help="seconds between the GETs polling node 2 (default %(default)s; 0 spins, "
                             "which on 2 cores starves node 1)")
    parser.add_argument("--no-redis-lag", action="store_true",
                        help="skip the redis-server master + replica lag run (context for DistKV's)")
    parser.add_argument("--lag-impls", default="all",
                        help="interpreters for the lag cluster: all, cpython or pypy (default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait for the cluster to catch up after the load (default 120)")
    parser.add_argument("--cluster-requests", type=int, default=300000,
                        help="SETs per run in the cluster part (default 300000)")
    parser.add_argument("--keys", type=int, default=1000000,
                        help="keys for the memory part (default %(default)s)")
    parser.add_argument("--batch", type=int, default=1000, help="SETs per write in the memory load")
    parser.add_argument("--bench-timeout", type=float, default=600.0,
                        help="seconds before a redis-benchmark run is killed (default 600)")
    parser.add_argument("--pause-while", metavar="REGEX",
                        help="before each measurement, wait while a process whose command line matches "
                             "REGEX runs (another benchmark); measurements it overlaps anyway are marked")
    parser.add_argument("--pause-max", type=float, default=600.0,
                        help="longest wait for --pause-while, in seconds (default %(default)s)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--from-json", metavar="PATH",
                        help="run nothing: print the throughput summary of a run saved with --json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory with the logs")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        names = []
        for run in saved.get("throughput_runs", []):
            if run["server"] not in names:
                names.append(run["server"])
        summarize_throughput(saved, names)
        return
    if args.quick:
        args.rounds, args.requests, args.requests_serial = 2, 3000, 500
        args.fakeredis_requests, args.warmup = 500, 1000
        args.conn_requests, args.lag_samples, args.keys = 3000, 20, 30000
        args.cluster_requests = 6000
    try:
        args.configs = [tuple(int(x) for x in pair.split(":")) for pair in args.configs.split(",")]
        assert all(len(pair) == 2 and min(pair) >= 1 for pair in args.configs)
    except (ValueError, AssertionError):
        parser.error("--configs takes CLIENTS:PIPELINE pairs, comma separated, e.g. 50:1,50:16")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error("unknown part(s) %s; choose from %s" % (", ".join(sorted(unknown)), ", ".join(PARTS)))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            parser.error("%s is not on PATH" % tool)

    # SIGTERM/SIGHUP end the run through the finally blocks too.
    def _quit(signum, frame):
        raise SystemExit("stopped by signal %d" % signum)
    signal.signal(signal.SIGTERM, _quit)
    signal.signal(signal.SIGHUP, _quit)

    global WATCH
    WATCH = Watcher(args.pause_while)
    WATCH_LIMIT[0] = args.pause_max
    results = {"machine": machine_info(args), "args": vars(args), "parts": parts}
    impls = []
    cinfo = interp_info(args.cpython) if args.cpython else "no CPython given"
    if isinstance(cinfo, str):
        print("CPython: %s cannot run DistKV: %s" % (args.cpython, cinfo))
    else:
        impls.append(("cpython", args.cpython))
    pypy, pinfo = pick_pypy(args.pypy)
    if pypy:
        impls.append(("pypy", pypy))
    else:
        print("PyPy: skipped: %s" % pinfo)
    results["interpreters"] = {"cpython": cinfo, "pypy": pinfo}
    m = results["machine"]
    print("DistKV vs redis-server, %s; %s CPUs (%s), Linux %s, load average %s at start" % (
        m["date"], m["nproc"], m["cpu"], m["kernel"], m["loadavg_at_start"]))
    print("%s | %s | checkout at commit %s" % (m["redis-server"], m["redis-benchmark"],
                                               m.get("distkv_commit", "?")))
    for impl, py in impls:
        i = results["interpreters"][impl]
        differ = i["differs_from_checkout"] = compare_with_checkout(i["distkv"])
        print("%-7s %s: Python %s, Twisted %s, distkv from %s (%s)" % (
            impl, py, i["version"], i["twisted"], i["distkv"],
            "differs from the checkout in: " + differ if differ else "same code as the checkout"))
    if not impls:
        print("no interpreter can run DistKV: nothing but redis-server would run")

    workdir = tempfile.mkdtemp(prefix="distkv-vs-redis-")
    started_at = time.monotonic()
    servers = []
    try:
        if "throughput" in parts or "fakeredis" in parts:
            servers.append(Server("redis-server", "redis", "c", workdir))
            if "throughput" in parts:
                for impl, py in impls:
                    servers.append(Server("distkv-%s" % impl, "distkv", impl, workdir, python=py))
                if not args.no_bare:
                    for impl, py in impls:
                        servers.append(Server("bare-twisted-%s" % impl, "bare", impl, workdir, python=py))
            if "fakeredis" in parts:
                fr_python = args.fakeredis_python or args.cpython
                finfo, why = fakeredis_info(fr_python)
                results["fakeredis"] = finfo or {"skipped": why}
                if finfo:
                    print("fakeredis %s (redis-py %s) under %s" % (finfo["fakeredis"], finfo["redis-py"],
                                                                  fr_python))
                    servers.append(Server("fakeredis", "fakeredis", "cpython", workdir, python=fr_python))
                    if args.fakeredis_backlog:
                        servers.append(Server("fakeredis-backlog%d" % args.fakeredis_backlog, "fakeredis",
                                              "cpython", workdir, python=fr_python,
                                              backlog=args.fakeredis_backlog))
                else:
                    print("fakeredis: skipped: %s cannot import fakeredis.TcpFakeServer: %s" % (
                        fr_python, why))
            for srv in servers:
                srv.wait_ready()
            print("\n== throughput: redis-benchmark -q --csv -t set,get, servers alternated per round ==")
            print("servers: " + ", ".join("%s (port %d)" % (s.name, s.port) for s in servers))
            run_throughput(args, servers, results)
            summarize_throughput(results, [s.name for s in servers])
            results["server_logs"] = {}
            for srv in servers:
                if srv.kind in ("distkv", "bare", "fakeredis"):
                    problems = log_problems(srv.log)
                    results["server_logs"][srv.name] = problems[:20]
                    if problems:
                        print("  log %s: %d suspicious lines, first: %s" % (srv.name, len(problems),
                                                                             problems[0][:200]))
            for srv in servers:
                srv.stop()
            servers = []
        if "connections" in parts:
            run_connections(args, impls, workdir, results)
        if "lag" in parts:
            lag_impls = [x for x in impls if args.lag_impls in ("all", x[0])]
            run_lag(args, lag_impls, workdir, results)
        if "memory" in parts:
            run_memory(args, impls, workdir, results)
        if "cluster" in parts:
            import cluster_part
            cluster_part.run_cluster(sys.modules[__name__], args, impls, workdir, results)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for srv in servers:
            srv.stop()
        for proc in list(STARTED):
            stop(proc)
        results["elapsed_secs"] = time.monotonic() - started_at
        results["paused_secs"] = WATCH.paused
        results["overlaps"] = sorted({hit for _, hit in WATCH.seen})
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
        if args.keep:
            print("logs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\ndone in %.0fs%s" % (results["elapsed_secs"], "; paused %.0fs for --pause-while" % WATCH.paused
                                  if WATCH.paused >= 1 else ""))
    if results["overlaps"]:
        print("measurements overlapped by: %s" % "; ".join(results["overlaps"][:5]))


if __name__ == "__main__":
    main()
