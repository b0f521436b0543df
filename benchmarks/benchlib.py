# ruff: noqa: UP031  (printf-style tables read best here)
"""Shared helpers for the DistKV benchmarks (standard library only, Python 3.9+).

* :func:`start_node` / :func:`stop_node` run one ``twistd distkv`` process on
  127.0.0.1 and stop it (SIGTERM, then SIGKILL if it does not exit).
* :class:`Client` is a small blocking text-protocol client.
* :func:`load` writes keys with pipelined SETs from several connections,
  spread over worker processes (:mod:`multiprocessing`), and returns req/s.

Keys are 16 bytes (``k`` + 15 digits) and values 100 bytes, both derived from
the key's number, so any key can be checked later with :func:`value_for`.
"""

import multiprocessing
import os
import queue
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def key_for(i):
    return b"k%015d" % i  # 16 bytes


def value_for(i):
    return ((b"v%015d" % i) * 7)[:100]  # 100 bytes, checkable


def default_twistd():
    """The ``twistd`` next to this Python (e.g. /tmp/benchvenv/bin/twistd)."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_node(twistd, port, log_path, data_dir=None, fsync=None, peers=(), node_id=None,
               extra=(), source=None):
    """Start a node; returns the Popen at once (see :func:`wait_listening`).
    ``extra`` is more ``twistd distkv`` options; ``source`` a checkout whose
    ``distkv`` the node runs instead of the installed one."""
    argv = [twistd, "-n", "--pidfile=", "-l", log_path, "distkv",
            "--port", "tcp:%d:interface=%s" % (port, HOST)]
    if data_dir is not None:
        argv += ["--data-dir", data_dir]
    if fsync is not None:
        argv += ["--fsync", fsync]
    if peers:
        argv += ["--peers", ",".join("%s:%d" % (HOST, p) for p in peers)]
    if node_id is not None:
        argv += ["--node-id", node_id]
    argv += list(extra)
    env = None
    if source is not None:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(source))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)


def stop_node(proc, timeout=30.0):
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print("  ! node pid %d ignored SIGTERM for %gs; killing" % (proc.pid, timeout))
            proc.kill()
            proc.wait(10)
    return proc.returncode


def wait_listening(proc, port, timeout=120.0):
    """Poll every 10 ms until the port accepts a connection; returns a Client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("node exited with code %s before listening" % proc.returncode)
        try:
            return Client(port)
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("node did not listen on port %d within %gs" % (port, timeout))


def rss_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    found = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    return found.get("VmRSS"), found.get("VmHWM")


def cpu_seconds(pid):
    """User + system CPU seconds a process has used, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg():
    """The 1-minute load average: other work on the machine skews timings."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def log_problems(log_path):
    """Lines of a node's log that look like trouble (errors, warnings, tracebacks)."""
    pattern = re.compile(r"Traceback|error|critical|warn|Unhandled", re.I)
    try:
        with open(log_path, errors="replace") as f:
            return [line.rstrip() for line in f if pattern.search(line)]
    except OSError:
        return []


class Client:
    """A blocking text-protocol connection (one request, one reply line)."""

    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the node")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def call(self, request):
        self.sock.sendall(request + b"\n")
        return self.line()

    def status(self):
        """STATUS as a dict of first word -> rest of line (peer lines under 'peer ...')."""
        self.sock.sendall(b"STATUS\n")
        found = {}
        for _ in range(1000):  # bounded: a STATUS reply is a few lines
            line = self.line().decode()
            if line == "END":
                return found
            name, _, rest = line.partition(" ")
            found[name if name != "peer" else line] = rest
        raise RuntimeError("STATUS did not end with END")

    def close(self):
        self.sock.close()


def check_sample(client, count, sample=1000):
    """GET ``sample`` keys spread over 0..count-1; returns how many were wrong."""
    step = max(1, count // sample)
    wrong = 0
    for i in range(0, count, step):
        if client.call(b"GET " + key_for(i)) != value_for(i):
            wrong += 1
    return wrong


def _worker(port, first, count, conns, batch, barrier, results):
    """One load process: ``conns`` connections writing keys first..first+count-1.

    Each connection sends a batch of ``batch`` SETs in one write, waits for all
    the replies, then sends the next batch (closed loop, fixed work). Batches
    are built before the clock starts so building them costs nothing timed.
    """
    per = [[] for _ in range(conns)]
    for n, start in enumerate(range(first, first + count, batch)):
        stop = min(start + batch, first + count)
        data = b"".join(b"SET %s %s\n" % (key_for(i), value_for(i)) for i in range(start, stop))
        per[n % conns].append((data, stop - start))
    sel = selectors.DefaultSelector()
    state = {}
    for c in range(conns):
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state[sock] = [per[c], 0, 0, b""]  # batches, next batch, replies owed, tail
    barrier.wait(timeout=120)  # every process connected: start together
    began = time.monotonic()
    errors = 0
    for sock, st in state.items():
        if st[0]:
            sock.sendall(st[0][0][0])
            st[1], st[2] = 1, st[0][0][1]
            sel.register(sock, selectors.EVENT_READ, st)
    while sel.get_map():
        for key, _ in sel.select(timeout=60):
            sock, st = key.fileobj, key.data
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("node closed a load connection")
            data = st[3] + data
            end = data.rfind(b"\r\n") + 2  # only whole lines count
            whole, st[3] = data[:end], data[end:]
            lines = whole.count(b"\r\n")
            errors += lines - whole.count(b"OK\r\n")
            st[2] -= lines
            if st[2] == 0:
                if st[1] < len(st[0]):
                    sock.sendall(st[0][st[1]][0])
                    st[2] = st[0][st[1]][1]
                    st[1] += 1
                else:
                    sel.unregister(sock)
                    sock.close()
    results.put((began, time.monotonic(), errors))


def load(port, first, count, conns=16, batch=64, procs=1):
    """SET keys first..first+count-1 through ``conns`` connections in ``procs``
    processes. Returns (req/s, seconds, non-OK replies)."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    share = count // procs
    workers = []
    for p in range(procs):
        n = share if p < procs - 1 else count - share * (procs - 1)
        w = ctx.Process(target=_worker, args=(port, first + p * share, n,
                                              max(1, conns // procs), batch, barrier, results))
        w.start()
        workers.append(w)
    got = []
    deadline = time.monotonic() + 3600  # bounded wait; a dead worker fails the run
    try:
        while len(got) < procs:
            try:
                got.append(results.get(timeout=1))
            except queue.Empty:
                if time.monotonic() > deadline or any(
                        w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("a load process failed or timed out")
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    seconds = max(g[1] for g in got) - min(g[0] for g in got)
    return count / seconds, seconds, sum(g[2] for g in got)
