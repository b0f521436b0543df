# ruff: noqa: UP031  (printf-style tables read best here)
"""Join time: how long a fourth node takes to get a running cluster's 100,000 keys.

1. Start nodes A, B, C (memory only, each listing the other two) and write
   ``--keys`` keys into A with pipelined SETs (16-byte keys, 100-byte values);
   wait until B and C hold them all.
2. Start a writer that keeps SETting new keys through A, one request at a
   time, and start node D (memory only) with ``--peers`` naming B alone.
3. Time, from just before D's process is created, when D listens, when it
   serves (STATUS ``state serving``), when every old node lists it as a member
   (MEMBERS), and when D holds every key the pre-fill wrote (its key count
   reaches ``--keys``, and GET of the last one answers right). Then stop the
   writer and time until every node's key count is the same (pre-fill plus
   every key the writer got OK for).

Usage: python benchmarks/join_time.py [--keys 100000]
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def members(client):
    client.sock.sendall(b"MEMBERS\n")
    lines = []
    for _ in range(10000):  # bounded: a line per member
        line = client.line().decode()
        if line == "END":
            return lines
        lines.append(line)
    raise RuntimeError("MEMBERS did not end with END")


class Writer(threading.Thread):
    """SETs w0, w1, ... through one node until stopped; counts the OKs."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.stop = threading.Event()

    def run(self):
        client = benchlib.Client(self.port)
        while not self.stop.is_set():
            if client.call(b"SET w%d v" % self.ok) == b"OK":
                self.ok += 1
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100000, help="keys before D joins (100000)")
    parser.add_argument("--poll", type=float, default=0.05, help="poll interval, s (0.05)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after, s (600)")
    parser.add_argument("--sample", type=int, default=1000, help="keys checked with GET (1000)")
    parser.add_argument("--twistd", default=benchlib.default_twistd(),
                        help="twistd to run (default: next to this python)")
    parser.add_argument("--tmp", default=None, help="where logs go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep logs")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="distkv-join-", dir=args.tmp)
    ports = []
    while len(ports) < 4:
        port = benchlib.free_port()
        if port not in ports:
            ports.append(port)
    names = "ABCD"
    print("twistd %s; A,B,C,D on %s (memory only), %d keys, work dir %s"
          % (args.twistd, ports, args.keys, workdir), flush=True)
    procs = {}
    writer = None
    try:
        for i, name in enumerate(names[:3]):
            peers = [p for p in ports[:3] if p != ports[i]]
            procs[name] = benchlib.start_node(
                args.twistd, ports[i], os.path.join(workdir, name + ".log"), peers=peers,
                node_id=name)
        clients = {name: benchlib.wait_listening(procs[name], ports[i])
                   for i, name in enumerate(names[:3])}
        for _ in range(3000):  # bounded: the three serve within a minute
            if all(c.status()["state"] == "serving" for c in clients.values()):
                break
            time.sleep(0.02)
        rate, seconds, errors = benchlib.load(ports[0], 0, args.keys)
        print("A filled: %d SETs in %.1fs (%.0f req/s), non-OK %d"
              % (args.keys, seconds, rate, errors), flush=True)
        for _ in range(30000):  # bounded: B and C catch up
            if all(int(c.status()["keys"]) == args.keys for c in clients.values()):
                break
            time.sleep(0.02)
        else:
            raise SystemExit("! B and C never got A's keys")

        writer = Writer(ports[0])
        writer.start()
        t0 = time.monotonic()
        print("D starts; load average %.1f" % benchlib.loadavg(), flush=True)
        procs["D"] = benchlib.start_node(args.twistd, ports[3],
                                         os.path.join(workdir, "D.log"), peers=[ports[1]],
                                         node_id="D")
        d = benchlib.wait_listening(procs["D"], ports[3])
        seen = {"listening": time.monotonic() - t0}
        last_key, last_value = benchlib.key_for(args.keys - 1), benchlib.value_for(args.keys - 1)
        while time.monotonic() - t0 < args.timeout:  # bounded by --timeout
            now = time.monotonic() - t0
            status = d.status()
            if status["state"] == "serving":
                seen.setdefault("state serving", now)
            if "listed everywhere" not in seen and all(
                    any(line.startswith("member D ") and "state=member" in line
                        for line in members(c)) for c in clients.values()):
                seen["listed everywhere"] = now
            if int(status["keys"]) >= args.keys and "all pre-fill keys" not in seen:
                if d.call(b"GET " + last_key) == last_value and sum(
                        d.call(b"EXISTS " + benchlib.key_for(i)) == b"1"
                        for i in range(0, args.keys, max(1, args.keys // 200))) == len(
                        range(0, args.keys, max(1, args.keys // 200))):
                    seen["all pre-fill keys"] = now
            if len(seen) == 4:
                break
            time.sleep(args.poll)
        writer.stop.set()
        writer.join()
        seen["writer stopped"] = time.monotonic() - t0
        total = args.keys + writer.ok
        everyone = dict(clients, D=d)
        while time.monotonic() - t0 < args.timeout:  # bounded by --timeout
            counts = {name: int(c.status()["keys"]) for name, c in everyone.items()}
            if all(count == total for count in counts.values()):
                seen["equal key counts"] = time.monotonic() - t0
                break
            time.sleep(args.poll)
        else:
            print("! key counts never agreed: %s, expected %d" % (counts, total))
        print("D, seconds after its start (writer: %d SETs through A meanwhile):" % writer.ok)
        for name, when in sorted(seen.items(), key=lambda item: item[1]):
            print("  %-20s %7.2f" % (name, when))
        if "all pre-fill keys" in seen:
            print("join time (D start -> every pre-fill key on D): %.2fs"
                  % seen["all pre-fill keys"])
        for name, client in clients.items():  # what each old node's rounds sent D
            for key in client.status():
                if key.startswith("peer") and (":%d " % ports[3]) in key + " ":
                    fields = dict(f.split("=", 1) for f in key.split()[2:] if "=" in f)
                    print("  %s -> D: sync_rounds=%s last_sync_sent=%s resyncs=%s"
                          % (name, fields.get("sync_rounds"), fields.get("last_sync_sent"),
                             fields.get("resyncs")))
        wrong = benchlib.check_sample(d, args.keys, args.sample)
        print("sample of %d GETs on D wrong: %d" % (args.sample, wrong))
        for path in sorted(os.listdir(workdir)):
            for line in benchlib.log_problems(os.path.join(workdir, path))[:5]:
                print("  log %s: %s" % (path, line))
    finally:
        if writer is not None:
            writer.stop.set()
        for proc in procs.values():
            benchlib.stop_node(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
