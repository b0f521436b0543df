# ruff: noqa: UP031  (printf-style tables read best here)
"""Restart time of a DistKV node with a full data dir (default 1,000,000 keys).

1. Start a node with ``--data-dir`` and fill it through the node itself with
   pipelined SETs (16-byte keys, 100-byte values; the fill rate is printed).
2. Stop it with SIGTERM and time how long it takes to exit.
3. Start it again on the same data dir and time from the process start to the
   node answering ``GET`` of a known key with the right value; then check that
   STATUS shows every key and a sample of keys reads back right.
4. Print the restarted node's RSS (VmRSS and its peak VmHWM from /proc).

Usage: python benchmarks/restart_time.py [--keys 1000000] [--fsync everysec]
"""

import argparse
import os
import shutil
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
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="distkv-restart-", dir=args.tmp)
    data_dir = os.path.join(workdir, "data")
    port = benchlib.free_port()
    known = args.keys // 2  # the key whose GET marks "ready"
    node_id = "bench-restart"
    print("twistd %s; %d keys, fsync %s, work dir %s; load average %.1f"
          % (args.twistd, args.keys, args.fsync, workdir, benchlib.loadavg()), flush=True)
    procs = []
    try:
        # 1. Fill through the node.
        log1 = os.path.join(workdir, "fill.log")
        proc = benchlib.start_node(args.twistd, port, log1, data_dir=data_dir,
                                   fsync=args.fsync, node_id=node_id)
        procs.append(proc)
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

        # 2. SIGTERM, timed.
        t0 = time.monotonic()
        code = benchlib.stop_node(proc, timeout=120)
        print("SIGTERM -> exit: %.2fs, exit code %s; data dir %.0f MiB"
              % (time.monotonic() - t0, code, du_mib(data_dir)), flush=True)

        # 3. Restart, timed from just before the process is created.
        log2 = os.path.join(workdir, "restart.log")
        t0 = time.monotonic()
        proc = benchlib.start_node(args.twistd, port, log2, data_dir=data_dir,
                                   fsync=args.fsync, node_id=node_id)
        procs.append(proc)
        client = benchlib.wait_listening(proc, port, timeout=600)
        listening = time.monotonic() - t0
        want, got = benchlib.value_for(known), None
        for _ in range(60000):  # bounded: at most ~10 min of 10 ms polls
            got = client.call(b"GET " + benchlib.key_for(known))
            if got == want:
                break
            time.sleep(0.01)
        ready = time.monotonic() - t0
        cpu = benchlib.cpu_seconds(proc.pid)  # CPU the node used to get there
        if got != want:
            raise SystemExit("! GET %s never returned its value (last: %r)"
                             % (benchlib.key_for(known).decode(), got[:80]))
        status = client.status()
        wrong = benchlib.check_sample(client, args.keys, args.sample)
        rss, hwm = benchlib.rss_kib(proc.pid)
        client.close()
        print("restart: listening after %.2fs; GET of a known key right after %.2fs "
              "(node CPU by then %.2fs; load average %.1f)"
              % (listening, ready, cpu, benchlib.loadavg()))
        print("restarted node: STATUS keys %s, state %s; sample of %d GETs wrong: %d"
              % (status.get("keys"), status.get("state"), args.sample, wrong))
        print("restarted node RSS: VmRSS %d MiB, VmHWM (peak) %d MiB"
              % (rss // 1024, hwm // 1024))
        for path in (log1, log2):
            for line in benchlib.log_problems(path)[:5]:
                print("  log %s: %s" % (os.path.basename(path), line))
        if status.get("keys") != str(args.keys) or wrong:
            raise SystemExit("! the restarted node does not have every key")
    finally:
        for proc in procs:
            benchlib.stop_node(proc, timeout=120)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
