"""Run many simulator seeds on every core and count violations per invariant.

    python benchmarks/simulate_seeds.py --seeds 10000 [--seed 0] [--jobs N]

Each worker runs a contiguous block of seeds as ``python -m distkv.simulate``
would (no shrinking: replay a failing seed with ``python -m distkv.simulate
--seed S`` to shrink it); the output is one line per failing seed, then the
totals. Seeds replay exactly only with ``PYTHONHASHSEED=0``, so the script
sets it for its workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple


def block(first: int, count: int) -> Tuple[List[str], Dict[str, int]]:
    """Run seeds ``first`` .. ``first + count - 1`` in a child process."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, "-m", "distkv.simulate", "--seeds", str(count), "--seed", str(first),
         "--no-shrink"],
        env=env, capture_output=True, text=True, check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("seed ")]
    counts: Dict[str, int] = {}
    for line in lines:
        kinds = line.split("(", 1)[1].rstrip(")").split(", ")
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    if done.returncode not in (0, 1):
        lines.append(f"block {first}+{count} exited {done.returncode}: {done.stderr[-2000:]}")
    return lines, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--block", type=int, default=100, help="seeds per child process")
    args = parser.parse_args()
    starts = range(args.seed, args.seed + args.seeds, args.block)
    started = time.monotonic()
    totals: Dict[str, int] = {}
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        blocks = [pool.submit(block, s, min(args.block, args.seed + args.seeds - s))
                  for s in starts]
        for first, future in zip(starts, blocks):
            lines, counts = future.result()
            for line in lines:
                print(line, flush=True)
            print(f"# seeds {first}-{min(first + args.block, args.seed + args.seeds) - 1} "
                  f"done ({time.monotonic() - started:.0f}s): {len(lines)} failed", flush=True)
            failed += sum(1 for line in lines if line.startswith("seed "))
            for kind, n in counts.items():
                totals[kind] = totals.get(kind, 0) + n
    elapsed = time.monotonic() - started
    print(
        f"{args.seeds} seeds from {args.seed} in {elapsed:.0f}s with {args.jobs} jobs: "
        f"{failed} failed" + "".join(f", {k} {n}" for k, n in sorted(totals.items()))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
