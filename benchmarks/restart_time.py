# ruff: noqa: UP031  (printf-style tables read best here)
"""Restart time of a DistKV node with a full data dir (default 1,000,000 keys).

1. Start a node with ``--data-dir`` and fill it through the node itself with
   pipelined SETs (16-byte keys, 100-byte values; the fill rate is printed).
2. Stop it with SIGTERM and time how long it takes to exit.
3. Start it again on the same data dir and time from the process start to the
   node listening, to its first reply (``LOADING`` while it reads its data
   dir), and to it answering ``GET`` of the last key written with the right
   value; then check that STATUS shows every key and a sample of keys reads
   back right. Every reply before that must be ``LOADING`` or the value.
4. Print the restarted node's RSS (VmRSS and its peak VmHWM from /proc).

With ``--data-dir DIR`` step 1 is skipped: each restart runs on a fresh copy of
DIR (a data dir kept with ``--keep``). With ``--compare CHECKOUT`` the restarts
alternate between this checkout's code and CHECKOUT's (``--runs`` each), on the
same copy, and the medians and their ratio are printed: the machine is shared,
so only runs taken side by side are compared.

Usage: python benchmarks/restart_time.py [--keys 1000000] [--fsync everysec]
       python benchmarks/restart_time.py --data-dir DIR --compare /work/main --runs 3
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


def du_mib(path):
    """Bytes used by the files in ``path``, in MiB."""
    total = 0
    for name in os.listdir(path):
        total += os.path.getsize(os.path.join(path, name))
    return total / 2**20


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def restart(args, data_dir, workdir, port, node_id, last, source, label):
    """Start a node on ``data_dir`` and time it to a right GET of key ``last``;
    returns (listening, first reply, serving, node CPU by then) seconds."""
    log = os.path.join(workdir, "restart-%s.log" % label)
    t0 = time.monotonic()
    proc = benchlib.start_node(args.twistd, port, log, data_dir=data_dir, fsync=args.fsync,
                               node_id=node_id, source=source)
    try:
        client = benchlib.wait_listening(proc, port, timeout=600)
        listening = time.monotonic() - t0
        want, got, first, loading = benchlib.value_for(last), None, None, 0
        for _ in range(600000):  # bounded: at most ~10 min of 1 ms polls
            got = client.call(b"GET " + benchlib.key_for(last))
            if first is None:
                first = time.monotonic() - t0
            if got == want:
                break
            if not got.startswith(b"ERR LOADING"):
                raise SystemExit("! GET %s answered %r while loading"
                                 % (benchlib.key_for(last).decode(), got[:80]))
            loading += 1
            time.sleep(0.001)
        ready = time.monotonic() - t0
        cpu = benchlib.cpu_seconds(proc.pid)  # CPU the node used to get there
        if got != want:
            raise SystemExit("! GET %s never returned its value (last: %r)"
                             % (benchlib.key_for(last).decode(), got[:80]))
        status = client.status()
        wrong = benchlib.check_sample(client, args.keys, args.sample)
        rss, hwm = benchlib.rss_kib(proc.pid)
        client.close()
        print("restart %s: listening after %.2fs, first reply after %.2fs (%d LOADING "
              "replies), GET of the last key right after %.2fs (node CPU by then %.2fs; "
              "load average %.1f); STATUS keys %s, state %s; %d sampled GETs wrong; "
              "VmRSS %d MiB, peak %d MiB"
              % (label, listening, first, loading, ready, cpu, benchlib.loadavg(),
                 status.get("keys"), status.get("state"), wrong, rss // 1024, hwm // 1024),
              flush=True)
        for line in benchlib.log_problems(log)[:5]:
            print("  log %s: %s" % (os.path.basename(log), line))
        if status.get("keys") != str(args.keys) or wrong:
            raise SystemExit("! the restarted node does not have every key")
        return listening, first, ready, cpu
    finally:
        benchlib.stop_node(proc, timeout=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000000, help="keys to fill (1000000)")
    parser.add_argument("--fsync", default="everysec", choices=["always", "everysec", "no"],
                        help="--fsync policy of the node (default everysec)")
    parser.add_argument("--conns", type=int, default=16, help="fill connections (16)")
    parser.add_argument("--batch", type=int, default=64, help="SETs per pipelined write (64)")
    parser.add_argument("--sample", type=int, default=1000, help="keys checked with GET (1000)")
    parser.add_argument("--twistd", default=benchlib.default_twistd(),
                        help="twistd to run (default: next to this python)")
    parser.add_argument("--tmp", default=None, help="where the data dir goes (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    parser.add_argument("--data-dir", default=None,
                        help="restart on copies of this filled data dir instead of filling one")
    parser.add_argument("--node-id", default="bench-restart",
                        help="the node id of --data-dir (default bench-restart)")
    parser.add_argument("--compare", default=None,
                        help="another checkout whose code to alternate restarts with")
    parser.add_argument("--runs", type=int, default=1, help="restarts of each code (1)")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="distkv-restart-", dir=args.tmp)
    data_dir = os.path.join(workdir, "data")
    port = benchlib.free_port()
    node_id = args.node_id
    print("twistd %s; %d keys, fsync %s, work dir %s; load average %.1f"
          % (args.twistd, args.keys, args.fsync, workdir, benchlib.loadavg()), flush=True)
    try:
        if args.data_dir is None:
            fill(args, data_dir, workdir, port, node_id)
            source = None
        else:
            source = HERE  # this checkout, as --compare names the other
        codes = [("this", source)] + ([("compare", args.compare)] if args.compare else [])
        times = {label: [] for label, _ in codes}
        for run in range(args.runs):
            for label, code in codes:
                if args.data_dir is not None:
                    shutil.rmtree(data_dir, ignore_errors=True)
                    shutil.copytree(args.data_dir, data_dir)
                times[label].append(restart(args, data_dir, workdir, port, node_id,
                                            args.keys - 1, code, "%s-%d" % (label, run)))
        for label, _ in codes:
            ready = statistics.median(t[2] for t in times[label])
            first = statistics.median(t[1] for t in times[label])
            cpu = statistics.median(t[3] for t in times[label])
            print("median of %d, %s code: first reply %.2fs, serving %.2fs, node CPU to "
                  "serving %.2fs" % (args.runs, label, first, ready, cpu))
        if args.compare:
            this = statistics.median(t[2] for t in times["this"])
            other = statistics.median(t[2] for t in times["compare"])
            print("serving: this code takes %.2fx the time of %s" % (this / other, args.compare))
            this = statistics.median(t[3] for t in times["this"])
            other = statistics.median(t[3] for t in times["compare"])
            print("node CPU to serving: this code %.2fx %s's (the steadier figure on a "
                  "busy machine)" % (this / other, args.compare))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def fill(args, data_dir, workdir, port, node_id):
    """1. and 2.: fill a data dir through a node, then stop it with SIGTERM."""
    log1 = os.path.join(workdir, "fill.log")
    proc = benchlib.start_node(args.twistd, port, log1, data_dir=data_dir,
                               fsync=args.fsync, node_id=node_id)
    try:
        client = benchlib.wait_listening(proc, port)
        rate, seconds, errors = benchlib.load(port, 0, args.keys, args.conns, args.batch)
        keys = int(client.status()["keys"])
        rss, hwm = benchlib.rss_kib(proc.pid)
        client.close()
        print("fill: %d SETs in %.1fs (%.0f req/s), non-OK replies %d, STATUS keys %d, "
              "RSS %d MiB (peak %d MiB)"
              % (args.keys, seconds, rate, errors, keys, rss // 1024, hwm // 1024), flush=True)
        if errors or keys != args.keys:
            raise SystemExit("! the fill lost or refused writes; not timing a restart")
        t0 = time.monotonic()
        code = benchlib.stop_node(proc, timeout=120)
        print("SIGTERM -> exit: %.2fs, exit code %s; data dir %.0f MiB"
              % (time.monotonic() - t0, code, du_mib(data_dir)), flush=True)
    finally:
        benchlib.stop_node(proc, timeout=120)


if __name__ == "__main__":
    main()
