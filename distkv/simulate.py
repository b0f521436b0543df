"""A seeded fault simulator: random schedules of writes and faults, checked.

One ``random.Random(seed)`` builds a :class:`Schedule` for 3-5 nodes of a
:class:`~distkv.testing.SimulatedCluster` on the fake clock: writes (values up
to the request limit), overwrites, deletes and reads through every node's
command layer; pipelines and transactions (``MULTI``, two ``SET`` s of one
value, ``EXEC``) through its front door; partitions; cut, stalled and duplicated deliveries; crashes and
restarts (memory only, from the node's own data dir, from an older copy of it,
from an empty one; under the same or a fresh node id, at the same address);
joins through one member, CLUSTER FORGET of a dead member, LEAVE; occasional
FLUSHALLs; INCRBYs and INCRBYFLOATs of a few counter keys (checked slot by slot, see
:mod:`distkv.sim.counting`); expiries (``SET`` with ``PX``/``PXAT``,
``PEXPIRE``/``PEXPIREAT`` with ``NX``/``XX``/``GT``/``LT``, ``GETEX``,
``PERSIST``), read back as each node's clock says; clock skew within
``max_clock_skew``. Running a schedule is deterministic (the global ``random``,
which Twisted's reconnect jitter uses, is seeded too), so a failing seed
replays exactly; :func:`shrink` removes steps, delta-debugging style, while the
same invariant still fails, and the replay is printed as a Python literal.

Network faults respect TCP, whose bytes within one connection arrive in order
or not at all: a *dropped* frame is a connection cut with its bytes in flight
lost (everything after is lost too, and the link reconnects); a *duplicated*
one is a cut after the client's bytes were delivered but before the
acknowledgements came back, so the resend after reconnecting duplicates them;
a *delayed* one is a stalled connection (bytes held for a while, nothing
lost); *reordering* is one connection stalled while connections between other
nodes deliver. A one-way partition lets ``b`` dial ``a`` but not ``a`` dial
``b``; a partial one blocks some pairs only.

After the schedule every block is lifted, every node is brought back and the
cluster settles; then the invariants are checked (see
:data:`INVARIANTS`), the history ones by :mod:`distkv.sim.history`.

The parts: :mod:`distkv.sim.schedule` (steps, schedules, the seed's
choices), :mod:`distkv.sim.runner` (running one on a simulated cluster),
:mod:`distkv.sim.checks` (the invariants), :mod:`distkv.sim.shrink`
(shrinking and replays); this module gathers them and is the command line:
``python -m distkv.simulate --seeds N [--seed S] [--nodes K]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, Optional, Sequence

from distkv.sim.checks import INVARIANTS
from distkv.sim.runner import Runner, run
from distkv.sim.schedule import (
    KEYS,
    MODES,
    NODE_OPTIONS,
    Advance,
    Crash,
    Cut,
    Delete,
    Expire,
    Flush,
    Forget,
    Heal,
    Incr,
    IncrFloat,
    Join,
    Leave,
    Partition,
    Pipeline,
    Read,
    Restart,
    Schedule,
    Snapshot,
    Split,
    Stall,
    Step,
    Transaction,
    Write,
    generate,
)
from distkv.sim.shrink import replay, shrink

__all__ = [
    "INVARIANTS", "KEYS", "MODES", "NODE_OPTIONS",
    "Advance", "Crash", "Cut", "Delete", "Expire", "Flush", "Forget", "Heal", "Incr", "IncrFloat", "Join",
    "Leave", "Partition",
    "Pipeline", "Read", "Restart",
    "Schedule", "Snapshot", "Split", "Stall", "Step", "Transaction", "Write",
    "Runner", "generate", "main", "replay", "run", "shrink",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distkv.simulate", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="how many seeds (default 100, or 1 with --seed)"
    )
    parser.add_argument("--seed", type=int, default=None, help="the first seed (default 0)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes per run (default: 3-5 by seed)")
    parser.add_argument("--steps", type=int, default=40, help="most steps per schedule")
    parser.add_argument("--max-clock-skew", type=float, default=NODE_OPTIONS["max_clock_skew"])
    parser.add_argument("--no-shrink", action="store_true", help="print failing seeds unshrunk")
    parser.add_argument("--shrink-budget", type=int, default=200, help="most runs spent shrinking one seed")
    args = parser.parse_args(argv)
    if args.nodes is not None and not 2 <= args.nodes <= 9:
        parser.error("--nodes must be between 2 and 9")
    first = args.seed or 0
    count = args.seeds if args.seeds is not None else (1 if args.seed is not None else 100)
    options = {"max_clock_skew": args.max_clock_skew,
               "tombstone_grace": args.max_clock_skew + 1.0}
    out = sys.stdout
    by_invariant: Dict[str, int] = {}
    failed = 0
    started = time.monotonic()
    for seed in range(first, first + count):
        schedule = generate(seed, args.nodes, args.steps, args.max_clock_skew)
        violations = run(schedule, options)
        if not violations:
            continue
        failed += 1
        kinds = sorted({v.invariant for v in violations})
        for kind in kinds:
            by_invariant[kind] = by_invariant.get(kind, 0) + 1
        out.write(f"seed {seed}: {len(violations)} violations ({', '.join(kinds)})\n")
        for violation in violations[:5]:
            out.write(f"  {violation}\n")
        if not args.no_shrink:
            kind = kinds[0]

            def fails(candidate: Schedule, kind: str = kind) -> bool:
                return any(v.invariant == kind for v in run(candidate, options))

            small = shrink(schedule, kind, args.shrink_budget, fails)
            out.write(f"  replay ({kind}, {len(small.steps)} of {len(schedule.steps)} steps):\n")
            out.write("    " + replay(small, options).replace("\n", "\n    ") + "\n")
        out.flush()
    elapsed = time.monotonic() - started
    out.write(
        f"{count} seeds from {first} in {elapsed:.1f}s ({count / elapsed:.1f} seeds/s): "
        f"{failed} failed" + "".join(f", {k} {n}" for k, n in sorted(by_invariant.items())) + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Digest buckets and set orders follow str/bytes hashes: fix them so a
        # seed replays exactly from one process to the next.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "distkv.simulate", *sys.argv[1:]])
    sys.exit(main())
