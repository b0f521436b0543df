"""Bytes per key that an expiry costs, measured in process (no node started).

Fills a :class:`~distkv.store.store.Store` with ``--keys`` keys (16-byte keys,
100-byte values) written with no expiry, then others with the same keys each
written with an expiry, and reports the growth of the process's RSS (each
kind in a fresh process, so no freed memory is reused) and, under CPython,
what :mod:`tracemalloc` counts (the Python allocator's requested bytes,
before pymalloc rounds each block up to 16 bytes), per key and the
difference per key. The kinds with an expiry:

* ``same TTL``: every key written with the same TTL (``SET k v EX 3600``),
  so every key's expiry is a different time: what a cache does.
* ``distinct TTL``: every key with its own TTL.
* ``64 per TTL``: 64 keys in a row share a TTL.

The store holds an expiry as three 14-bit digits, each an int object every
entry shares (see :data:`distkv.store.entries.Entry`), so all three cost the
same. The digits' table (16,384 ints) is made once per process, the first
time an expiry is stored; each run makes it before it measures, and prints
what it costs.

Every kind writes one key per millisecond of a fake clock, as keys written
at different moments are.

Run it under CPython and PyPy (which has no tracemalloc: RSS only).

    python benchmarks/expiry_memory.py [--keys 200000]
    python benchmarks/expiry_memory.py --layouts

``--layouts`` shows where a distinct expiry's bytes go: it builds entries in
the store's layout and in candidates, without a store (one shared value, a
distinct ``ms`` made as the node's clock makes it, and a distinct TTL, per
key), and prints the bytes per entry of each above the plain 4-tuple's:

* ``7-tuple, shared digits``: the store's ``(value, e2, e1, e0, ms,
  counter, node)``, the expiry as three 14-bit digits, each an int every
  entry shares (a 7-tuple takes a 96-byte block, a 4-tuple an 80-byte one).
* ``5-tuple + TTL int``: the layout before it, ``(value, ttl, ms, counter,
  node)``. Its fifth field is free on CPython (a 4-tuple and a 5-tuple take
  the same 80-byte pymalloc block); the TTL int is not (28 bytes, a 32-byte
  block), unless keys written with the same TTL share it.
* ``ms|TTL packed``: ``(value, ms << 48 | ttl, counter, node)``, the
  version's ms and the TTL in one int (3 digits of 30 bits instead of 2: a
  48-byte block instead of 32). The version would no longer be the entry's
  last three fields, which every reader of a version takes (and on PyPy an
  int past 64 bits is a big integer).
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

from distkv.store.entries import make_entry
from distkv.store.hlc import HybridClock, Version
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


def digits_table() -> int:
    """The bytes the shared digits' table takes (made on the first expiry)."""
    before = tracemalloc.get_traced_memory()[0] if tracemalloc is not None else 0
    make_entry(b"v", Version(1, 0, "n1"), WALL)
    return tracemalloc.get_traced_memory()[0] - before if tracemalloc is not None else 0


def measure(keys: int, kind: str, traced: bool) -> int:
    make_entry(b"v", Version(1, 0, "n1"), WALL)  # the digits' table: no key's cost
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


LAYOUTS = {"plain": "4-tuple, no expiry", "digits": "7-tuple, shared digits",
           "ttl": "5-tuple + TTL int", "packed": "ms|TTL packed"}


def layout(keys: int, kind: str) -> list:
    """``keys`` entries in layout ``kind`` (see the module docstring)."""
    value, node, shared = b"v" * 100, "n1", {d: d for d in range(1 << 14)}
    entries: list = []
    for i in range(keys):
        # As the node's clock makes an ms (int(seconds * 1000)): no spare digit.
        ms, ttl = int(float(WALL + i)), 3_600_000 + i
        if kind == "plain":
            entries.append((value, ms, 0, node))
        elif kind == "ttl":
            entries.append((value, ttl, ms, 0, node))
        elif kind == "packed":
            entries.append((value, ms << 48 | ttl, 0, node))
        else:
            entries.append((value, shared[ttl >> 28], shared[ttl >> 14 & 16383],
                            shared[ttl & 16383], ms, 0, node))
    return entries


def measure_layout(keys: int, kind: str, traced: bool) -> int:
    gc.collect()
    layout(1, "digits")  # the shared digits are no entry's cost
    if traced:
        tracemalloc.start()
        entries = layout(keys, kind)
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        before = rss_kb()
        entries = layout(keys, kind)
        used = (rss_kb() - before) * 1024
    assert len(entries) == keys
    return used


def show_layouts(keys: int) -> None:
    rss = {kind: int(subprocess.run(
        [sys.executable, __file__, "--keys", str(keys), "--one-layout", kind],
        check=True, capture_output=True, text=True).stdout) for kind in LAYOUTS}
    traced = ({kind: measure_layout(keys, kind, traced=True) for kind in LAYOUTS}
              if tracemalloc is not None else {})
    for kind, label in LAYOUTS.items():
        line = f"  {label:22} RSS {(rss[kind] - rss['plain']) / keys:+6.1f} B/entry"
        if traced:
            line += f"   tracemalloc {(traced[kind] - traced['plain']) / keys:+6.1f} B/entry"
        print(line)


KINDS = {"plain": "no expiry", "same": "same TTL", "distinct": "distinct TTL",
         "batched": "64 per TTL"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--layouts", action="store_true",
                        help="the bytes a distinct expiry costs in each layout (no store)")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--one-layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.keys, args.one, traced=False))
        return
    if args.one_layout:
        print(measure_layout(args.keys, args.one_layout, traced=False))
        return
    print(f"{sys.implementation.name} {sys.version.split()[0]}, {args.keys} keys")
    if tracemalloc is not None:
        tracemalloc.start()
        print(f"  the digits' table, once per process: {digits_table() / 1024:.0f} kB (tracemalloc)")
        tracemalloc.stop()
    if args.layouts:
        show_layouts(args.keys)
        return
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
