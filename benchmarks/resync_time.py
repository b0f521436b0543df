# ruff: noqa: UP031  (printf-style tables read best here)
"""Resync time: how long an empty DistKV node takes to get a peer's 100,000 keys.

1. Start node A (memory only, or ``--data-dir``) with ``--peers`` naming B's
   port (B is not running yet, so A's link to B retries in backoff), and write
   ``--keys`` keys into A with pipelined SETs (16-byte keys, 100-byte values).
   A gets ``--loading-wait 0``: it stands for a node that has been serving
   for a while, and an empty node with peers otherwise refuses data commands
   (ERR LOADING) until a peer syncs it or 30 s pass.
2. Start an empty, memory-only node B with ``--peers`` naming A.
3. Poll B every ``--poll`` seconds (STATUS, and GET of the last key written)
   and time, from just before B's process is created, when B listens, when
   its first key arrives, when GET of the last key answers right, when STATUS
   says ``state serving`` and when it says ``keys N``. Done is both of the last
   two. A sample of keys is then read back from B.

Usage: python benchmarks/resync_time.py [--keys 100000] [--data-dir]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100000, help="keys in A (100000)")
    parser.add_argument("--data-dir", action="store_true",
                        help="give A a --data-dir (fsync everysec); default memory only")
    parser.add_argument("--poll", type=float, default=0.02, help="B poll interval, s (0.02)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after, s (600)")
    parser.add_argument("--sample", type=int, default=1000, help="keys checked with GET (1000)")
    parser.add_argument("--twistd", default=benchlib.default_twistd(),
                        help="twistd to run (default: next to this python)")
    parser.add_argument("--tmp", default=None, help="where logs and data go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep logs and data")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="distkv-resync-", dir=args.tmp)
    port_a, port_b = benchlib.free_port(), benchlib.free_port()
    while port_b == port_a:
        port_b = benchlib.free_port()
    log_a, log_b = os.path.join(workdir, "a.log"), os.path.join(workdir, "b.log")
    data_a = os.path.join(workdir, "data-a") if args.data_dir else None
    print("twistd %s; A on %d (%s), B on %d (memory), %d keys, work dir %s"
          % (args.twistd, port_a, "data dir" if data_a else "memory", port_b, args.keys,
             workdir), flush=True)
    procs = []
    try:
        a = benchlib.start_node(args.twistd, port_a, log_a, data_dir=data_a,
                                fsync="everysec" if data_a else None, peers=[port_b],
                                node_id="A", extra=["--loading-wait", "0"])
        procs.append(a)
        a_started = time.monotonic()
        client_a = benchlib.wait_listening(a, port_a)
        for _ in range(500):  # bounded: up to ~10 s for A to leave "loading"
            if client_a.status()["state"] == "serving":
                break
            time.sleep(0.02)
        rate, seconds, errors = benchlib.load(port_a, 0, args.keys)
        keys_a = int(client_a.status()["keys"])
        print("A filled: %d SETs in %.1fs (%.0f req/s), non-OK %d, STATUS keys %d"
              % (args.keys, seconds, rate, errors, keys_a), flush=True)
        if errors or keys_a != args.keys:
            raise SystemExit("! A lost or refused writes")

        # B starts; everything below is timed from here.
        t0 = time.monotonic()
        print("B starts %.1fs after A started; load average %.1f"
              % (t0 - a_started, benchlib.loadavg()), flush=True)
        b = benchlib.start_node(args.twistd, port_b, log_b, peers=[port_a], node_id="B")
        procs.append(b)
        client_b = benchlib.wait_listening(b, port_b)
        seen = {"listening": time.monotonic() - t0}
        last_key, last_value = benchlib.key_for(args.keys - 1), benchlib.value_for(args.keys - 1)
        first_get = None
        status = {}
        while time.monotonic() - t0 < args.timeout:  # bounded by --timeout
            now = time.monotonic() - t0
            status = client_b.status()
            keys = int(status["keys"])
            if keys > 0:
                seen.setdefault("first key", now)
            if status["state"] == "serving":
                seen.setdefault("state serving", now)
            if keys == args.keys:
                seen.setdefault("keys %d" % args.keys, now)
            if "GET right" not in seen:
                reply = client_b.call(b"GET " + last_key)
                if first_get is None:
                    first_get = reply
                if reply == last_value:
                    seen["GET right"] = now
            if keys == args.keys and status["state"] == "serving" and "GET right" in seen:
                break
            time.sleep(args.poll)
        else:
            print("! B did not finish within %gs: last STATUS keys %s state %s"
                  % (args.timeout, status.get("keys"), status.get("state")))
        print("B, seconds after its start:")
        for name, when in sorted(seen.items(), key=lambda item: item[1]):
            print("  %-16s %7.2f" % (name, when))
        print("first GET reply on B: %r" % first_get[:80] if first_get else "no GET sent")
        if "state serving" in seen and "keys %d" % args.keys in seen:
            done = max(seen["state serving"], seen["keys %d" % args.keys])
            print("resync time (B start -> keys %d and state serving): %.2fs"
                  % (args.keys, done))
            wrong = benchlib.check_sample(client_b, args.keys, args.sample)
            print("sample of %d GETs on B wrong: %d" % (args.sample, wrong))
        rss, hwm = benchlib.rss_kib(b.pid)
        print("B RSS %d MiB (peak %d MiB)" % (rss // 1024, hwm // 1024))
        for name, client in (("A", client_a), ("B", client_b)):
            for key, rest in client.status().items():
                if key.startswith("peer") or key == "synced_from":
                    print("  %s STATUS: %s" % (name, key if key.startswith("peer")
                                                else key + " " + rest))
        for path in (log_a, log_b):
            for line in benchlib.log_problems(path)[:8]:
                print("  log %s: %s" % (os.path.basename(path), line))
    finally:
        for proc in procs:
            benchlib.stop_node(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
