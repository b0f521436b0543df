"""Bytes per key that an expiry costs, measured in process (no node started).

Fills a :class:`~distkv.store.store.Store` with ``--keys`` keys (16-byte keys,
100-byte values) written with no expiry, then another with the same keys
each written with an expiry (distinct times, as keys set at different
moments get), and reports what :mod:`tracemalloc` counts each holding (the
Python allocator's requested bytes) and the difference per key; also
``sys.getsizeof`` of one entry of each kind. Run it under CPython and PyPy
(where tracemalloc is missing, only the RSS growth is reported).

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


def fill(keys: int, expiring: bool, batch: int = 1) -> Store:
    """``keys`` keys; with ``expiring``, each ``batch`` keys in a row share
    one expiry (as a pipeline of SET EX under one clock reading does)."""
    store = Store(HybridClock("n1", lambda: WALL))
    for i in range(keys):
        key = b"key:%012d" % i
        value = (b"%d" % i).ljust(100, b"v")
        store.set(key, value, expires=WALL + 3_600_000 + i // batch if expiring else 0)
    store.digest.fold()
    return store


def measure(keys: int, expiring: bool, batch: int = 1) -> int:
    gc.collect()
    if tracemalloc is not None:
        tracemalloc.start()
        store = fill(keys, expiring, batch)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        before = rss_kb()
        store = fill(keys, expiring, batch)
        gc.collect()
        used = (rss_kb() - before) * 1024
    assert len(store) == keys and store.with_expiry == (keys if expiring else 0)
    del store
    return used


KINDS = {"plain": (False, 1), "distinct": (True, 1), "batched": (True, 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.keys, *KINDS[args.one]))
        return
    if tracemalloc is not None:
        plain, timed, batched = (measure(args.keys, *KINDS[kind]) for kind in KINDS)
    else:  # RSS growth: each in a fresh process, so no freed memory is reused
        plain, timed, batched = (int(subprocess.run(
            [sys.executable, __file__, "--keys", str(args.keys), "--one", kind],
            check=True, capture_output=True, text=True).stdout) for kind in KINDS)
    how = "tracemalloc" if tracemalloc is not None else "RSS growth"
    print(f"{sys.implementation.name} {sys.version.split()[0]}, {args.keys} keys, {how}")
    print(f"  no expiry:   {plain / args.keys:7.1f} bytes per key")
    print(f"  with expiry: {timed / args.keys:7.1f} bytes per key (every expiry distinct), "
          f"+{(timed - plain) / args.keys:.1f}")
    print(f"  with expiry: {batched / args.keys:7.1f} bytes per key (64 keys per expiry), "
          f"+{(batched - plain) / args.keys:.1f}")
    if sys.implementation.name == "cpython":
        (_, entry), = fill(1, True).items()
        (_, bare), = fill(1, False).items()
        print(f"  sys.getsizeof: entry {sys.getsizeof(bare)} -> {sys.getsizeof(entry)}, "
              f"expiry int {sys.getsizeof(entry[1])}")


if __name__ == "__main__":
    main()
