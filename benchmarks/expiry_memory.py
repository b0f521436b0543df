"""Bytes per key that an expiry costs, measured in process (no node started).

Fills a :class:`~distkv.store.store.Store` with ``--keys`` keys (16-byte keys,
100-byte values) written with no expiry, then others with the same keys each
written with an expiry, and reports the growth of the process's RSS (each
kind in a fresh process, so no freed memory is reused) and, under CPython,
what :mod:`tracemalloc` counts (the Python allocator's requested bytes,
before pymalloc rounds each block up to 16 bytes), per key and the
difference per key. The kinds with an expiry:

* ``same TTL``: every key written with the same TTL (``SET k v EX 3600``),
  so every key's expiry is a different time: what a cache does. The store
  keeps an expiry relative to its write's version, so these share one TTL
  object.
* ``distinct TTL``: every key with its own TTL: the worst case, where every
  key needs an int object of its own.
* ``64 per TTL``: 64 keys in a row share a TTL.

Every kind writes one key per millisecond of a fake clock, as keys written
at different moments are.

Run it under CPython and PyPy (which has no tracemalloc: RSS only).

    python benchmarks/expiry_memory.py [--keys 200000]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys

try:
    import tracemalloc
except ImportError:  # PyPy
    tracemalloc = None  # type: ignore[assignment]

from distkv.store.hlc import HybridClock
from distkv.store.store import Store

WALL = 1_700_000_000_000


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fill(keys: int, kind: str) -> Store:
    """``keys`` keys written as ``kind`` (one of :data:`KINDS`) says."""
    now = [WALL]
    store = Store(HybridClock("n1", lambda: now[0]))
    ttl = 3_600_000
    for i in range(keys):
        key = b"key:%012d" % i
        value = (b"%d" % i).ljust(100, b"v")
        now[0] = WALL + i  # one key per millisecond
        if kind == "plain":
            store.set(key, value)
            continue
        if kind != "same":
            ttl = 3_600_000 + (i if kind == "distinct" else i // 64)
        store.set(key, value, expires=now[0] + ttl)
    store.digest.fold()
    return store


def measure(keys: int, kind: str, traced: bool) -> int:
    gc.collect()
    if traced:
        tracemalloc.start()
        store = fill(keys, kind)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        before = rss_kb()
        store = fill(keys, kind)
        gc.collect()
        used = (rss_kb() - before) * 1024
    assert len(store) == keys and store.with_expiry == (0 if kind == "plain" else keys)
    del store
    return used


KINDS = {"plain": "no expiry", "same": "same TTL", "distinct": "distinct TTL",
         "batched": "64 per TTL"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.keys, args.one, traced=False))
        return
    print(f"{sys.implementation.name} {sys.version.split()[0]}, {args.keys} keys")
    # RSS growth, each kind in a fresh process, so no freed memory is reused.
    rss = {kind: int(subprocess.run(
        [sys.executable, __file__, "--keys", str(args.keys), "--one", kind],
        check=True, capture_output=True, text=True).stdout) for kind in KINDS}
    traced = ({kind: measure(args.keys, kind, traced=True) for kind in KINDS}
              if tracemalloc is not None else {})
    for kind, label in KINDS.items():
        line = f"  {label:13} RSS {rss[kind] / args.keys:6.1f} B/key"
        if kind != "plain":
            line += f" (+{(rss[kind] - rss['plain']) / args.keys:5.1f})"
        if traced:
            line += f"   tracemalloc {traced[kind] / args.keys:6.1f} B/key"
            if kind != "plain":
                line += f" (+{(traced[kind] - traced['plain']) / args.keys:5.1f})"
        print(line)


if __name__ == "__main__":
    main()
