"""What one simulated run does: its steps, and the schedule a seed decides.

A :class:`Schedule` names the nodes of a run (3-5 by default), which of them
start with a data dir, their clock skews, which peer lists leave a node out,
and the steps: writes, overwrites, deletes and reads through a node;
partitions (of one link, both ways or one way; one node isolated; the cluster
split in two) and heals; pipelines of requests from a client over a real
connection (:mod:`distkv.sim.clients`); cut, stalled and duplicated deliveries; snapshots
of a data dir; crashes and restarts (memory only, from the node's own data dir,
from an older copy of it, from an empty one; under the same or a fresh node
id; with a new skew within ``max_clock_skew``); occasional ``FLUSHALL``s
through a node; INCRBYs and INCRBYFLOATs of a few counter keys through a node (see
:mod:`distkv.sim.counting`); expiries (writes with a relative or absolute
one, by the writing node's skewed clock; ``PEXPIRE``/``PEXPIREAT`` with
``NX``/``XX``/``GT``/``LT``, ``GETEX``, ``PERSIST`` of existing keys); and membership changes: a new
node joins given one member's address, a crashed member is forgotten for good
(``CLUSTER FORGET`` on a running one), a member leaves (``LEAVE``). Restarts
reuse a node's address, under its id or a fresh one. :func:`generate` draws every
choice from one ``random.Random(seed)``, so a seed always builds the same
schedule. Plain data: nothing here runs a node.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from distkv.front.replyqueue import OutputLimits
from distkv.sim.counting import COUNTERS

#: Node options: small limits, so that faults matter.
NODE_OPTIONS: Dict[str, Any] = {
    "max_request": 2048,
    "outbox_bytes": 6 << 10,
    "max_clock_skew": 2.0,
    "heartbeat": 1.0,
    "sync_interval": 3.0,
    "loading_wait": 5.0,
    "tombstone_grace": 3.0,
    "flush_timeout": 1.0,
    "fsync": "no",
    # Small output limits, so that a pipelined burst of GETs passes the soft
    # one; the hard one must exceed max_request.
    "client_output_limits": OutputLimits(soft=4096, hard=8192),
    # Every simulated link goes through the secret's handshake and records.
    "cluster_secret": b"the simulated cluster's secret",
}
KEYS = 6
#: What an INCRBYFLOAT adds: positive (a slot's total only grows), some
#: summing to whole numbers (so INCRBYs of the key succeed again).
FLOAT_AMOUNTS = ("0.5", "0.25", "0.75", "0.1", "1.5", "2.125", "0.001")
#: The expiry changes an Expire step makes, and the options of PEXPIRE(AT).
EXPIRE_COMMANDS = ("PEXPIRE", "PEXPIRE", "PEXPIREAT", "GETEX", "PERSIST")
EXPIRE_OPTIONS = ("", "", "", "NX", "XX", "GT", "LT")
MODES = ("memory", "own-dir", "older-copy", "empty-dir")


@dataclass(frozen=True)
class Write:
    """``SET k<key>`` of ``size`` bytes through ``node``; with ``ttl_ms``, an
    expiry that many ms after the node's clock (``PXAT`` if ``absolute``,
    else ``PX``; an absolute one may be past already). Without it, every
    tenth write expires (tags ending in 5: ``PX``, half a second to ten)."""

    node: str
    key: int
    size: int
    tag: int
    ttl_ms: int = 0
    absolute: bool = False


@dataclass(frozen=True)
class Delete:
    node: str
    key: int


@dataclass(frozen=True)
class Read:
    node: str
    key: int


@dataclass(frozen=True)
class Pipeline:
    """A client sends ``SET key`` (``size`` bytes) then ``gets`` ``GET key``
    in one read, over RESP or the text protocol, and reads the replies after."""

    node: str
    key: int
    size: int
    tag: int
    gets: int
    resp: bool


@dataclass(frozen=True)
class Transaction:
    """A client sends ``MULTI``, ``SET`` of two keys to one value of
    ``size`` bytes, ``EXEC`` in one read, over RESP or the text protocol."""

    node: str
    keys: Tuple[int, int]
    size: int
    tag: int
    resp: bool


@dataclass(frozen=True)
class Expire:
    """An expiry change of ``k<key>`` through ``node``: ``PEXPIRE key ms
    [option]``, ``PEXPIREAT key <node's clock + ms> [option]`` (``ms`` may
    be negative: a time already past deletes the key), ``GETEX key PX ms``
    (``GETEX key PERSIST`` when ``ms`` is 0) or ``PERSIST key``."""

    node: str
    key: int
    command: str
    ms: int
    option: str = ""


@dataclass(frozen=True)
class Partition:
    a: str
    b: str
    oneway: bool = False


@dataclass(frozen=True)
class Split:
    """Every node of ``group`` cut off from every node outside it, both ways:
    one node isolated, or the cluster split in two."""

    group: Tuple[str, ...]


@dataclass(frozen=True)
class Heal:
    pass


@dataclass(frozen=True)
class Cut:
    a: str
    b: str
    deliver: bool = False


@dataclass(frozen=True)
class Stall:
    a: str
    b: str
    seconds: float


@dataclass(frozen=True)
class Crash:
    node: str


@dataclass(frozen=True)
class Restart:
    node: str
    mode: str
    fresh_id: bool = False
    skew_ms: Optional[int] = None


@dataclass(frozen=True)
class Snapshot:
    node: str


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Join:
    """A new node ``node`` starts (memory only, or with a data dir) with only
    ``via``'s address in its peer list."""

    node: str
    via: str
    disk: bool


@dataclass(frozen=True)
class Forget:
    """``by`` runs ``CLUSTER FORGET`` for ``node``, which is down and never returns."""

    node: str
    by: str


@dataclass(frozen=True)
class Leave:
    """``node`` runs ``LEAVE``, and is stopped once its links have closed."""

    node: str


@dataclass(frozen=True)
class Incr:
    """``INCRBY c<key> <amount>`` through ``node`` (nothing if it is down)."""

    node: str
    key: int
    amount: int


@dataclass(frozen=True)
class IncrFloat:
    """``INCRBYFLOAT c<key> <amount>`` through ``node`` (nothing if it is down)."""

    node: str
    key: int
    amount: str


@dataclass(frozen=True)
class Flush:
    """``FLUSHALL`` through ``node`` (nothing if it is down)."""

    node: str


Step = Union[
    Write, Delete, Read, Pipeline, Transaction, Partition, Split, Heal, Cut, Stall, Crash,
    Restart, Snapshot, Advance, Join, Forget, Leave, Flush, Incr, IncrFloat, Expire,
]


@dataclass(frozen=True)
class Schedule:
    """Everything one run does: the nodes, which start with a data dir, their
    skews, and the steps."""

    seed: int
    size: int
    disk: Tuple[bool, ...]
    skew: Tuple[int, ...]
    steps: Tuple[Step, ...]
    #: ``(a, b)``: ``a``'s peer list leaves ``b`` out (an asymmetric peer list)
    unlisted: Tuple[Tuple[str, str], ...] = ()

    def names(self) -> List[str]:
        return [f"n{i + 1}" for i in range(self.size)]


def generate(seed: int, nodes: Optional[int] = None, steps: int = 40,
             max_clock_skew: float = NODE_OPTIONS["max_clock_skew"]) -> Schedule:
    """The schedule seed ``seed`` decides."""
    rng = random.Random(seed)
    size = nodes or rng.randint(3, 5)
    names = [f"n{i + 1}" for i in range(size)]
    half = int(max_clock_skew * 1000) // 2  # any two clocks within max_clock_skew
    disk = tuple(rng.random() < 0.6 for _ in names)
    skew = tuple(rng.randint(-half, half) for _ in names)
    unlisted = (tuple(rng.sample(names, 2)),) if rng.random() < 0.15 else ()
    has_dir = dict(zip(names, disk))
    snapped: Set[str] = set()
    down: Set[str] = set()
    out: List[Step] = []
    limit = NODE_OPTIONS["max_request"] - 32
    gone: Set[str] = set()
    joined = 0
    # Membership changes draw from their own stream, so that they come on top
    # of the steps the other choices would make.
    changes = random.Random(seed ^ 0x5EED)
    # Flushes too: the other steps stay what they were.
    flushes = random.Random(seed ^ 0xF1054)
    # And INCRBYs, a few at a time, and INCRBYFLOATs of the last two keys.
    counting = random.Random(seed ^ 0xC0C0)
    # And expiries: on writes, and changed on existing keys.
    expiring = random.Random(seed ^ 0xE1F)
    # And partitions of whole groups: one node isolated, or two sides.
    splits = random.Random(seed ^ 0x5B11)
    for tag in range(rng.randint(steps // 2, steps)):
        for _ in range(counting.choice((0, 0, 0, 1, 1, 2, 3))):
            if counting.random() < 0.3:
                out.append(IncrFloat(counting.choice(names), counting.randrange(COUNTERS - 2, COUNTERS),
                                     counting.choice(FLOAT_AMOUNTS)))
            else:
                out.append(Incr(counting.choice(names), counting.randrange(COUNTERS), counting.randint(1, 5)))
        if expiring.random() < 0.12:
            command = expiring.choice(EXPIRE_COMMANDS)
            # Mostly ahead, sometimes within the clock skew either way.
            ahead = expiring.random() < 0.8
            ms = expiring.randint(200, 6000) if ahead else expiring.randint(-2 * half, 2 * half)
            if command != "PEXPIREAT" and ms <= 0:
                ms = 0 if command == "GETEX" else 1
            option = expiring.choice(EXPIRE_OPTIONS) if command.startswith("PEXPIRE") else ""
            out.append(Expire(expiring.choice(names), expiring.randrange(KEYS), command, ms, option))
        if flushes.random() < 0.04:
            out.append(Flush(flushes.choice(names)))
        if splits.random() < 0.03 and len(names) > 2:
            count = 1 if splits.random() < 0.5 else splits.randint(1, len(names) // 2)
            out.append(Split(tuple(sorted(splits.sample(names, count)))))
        if changes.random() < 0.05:
            change = _membership_step(changes, size + joined + 1, names, down, gone, has_dir)
            if change is not None:
                if isinstance(change, Join):
                    joined += 1
                    names.append(change.node)
                    has_dir[change.node] = change.disk
                out.append(change)
        node = rng.choice(names)
        a, b = rng.sample(names, 2)
        roll = rng.random()
        if roll < 0.27:
            write = Write(node, rng.randrange(KEYS), _size(rng, limit), tag)
            if expiring.random() < 0.15:
                absolute = expiring.random() < 0.5
                ttl = expiring.randint(-half if absolute else 1, 6000)
                write = Write(write.node, write.key, write.size, tag, ttl or 1, absolute)
            out.append(write)
        elif roll < 0.37:
            out.append(Delete(node, rng.randrange(KEYS)))
        elif roll < 0.42:
            out.append(Read(node, rng.randrange(KEYS)))
        elif roll < 0.46:
            key, value_size = rng.randrange(KEYS), _size(rng, limit)
            gets, resp = rng.randint(1, 12), rng.random() < 0.5
            if tag % 2:  # half of them transactions, from the same draws
                other = (key + 1 + gets % (KEYS - 1)) % KEYS
                out.append(Transaction(node, (key, other), value_size // 2, tag, resp))
            else:
                out.append(Pipeline(node, key, value_size, tag, gets, resp))
        elif roll < 0.55:
            out.append(Advance(rng.choice([0.1, 0.5, 1.0, 2.0, 5.0, 8.0])))
        elif roll < 0.59:
            out.append(Partition(a, b, rng.random() < 0.4))
        elif roll < 0.63:
            out.append(Heal())
        elif roll < 0.70:
            out.append(Cut(a, b, rng.random() < 0.5))
        elif roll < 0.75:
            out.append(Stall(a, b, rng.choice([0.2, 1.0, 2.5])))
        elif roll < 0.80:
            # A backup of some running node's data dir, for an older-copy restart.
            running = [n for n in names if has_dir[n] and n not in down]
            if running:
                node = node if node in running else rng.choice(running)
                snapped.add(node)
                out.append(Snapshot(node))
        elif roll < 0.88:
            if node not in down and len(down) < len(names) - 1:
                down.add(node)
                out.append(Crash(node))
        elif down:
            node = rng.choice(sorted(down))
            modes = ["memory", "empty-dir"]
            if has_dir[node]:
                modes.append("own-dir")
            if node in snapped and rng.random() < 0.5:
                mode = "older-copy"  # half the time, a backup taken is restored
            else:
                mode = rng.choice(modes + (["older-copy"] if node in snapped else []))
            has_dir[node] = mode != "memory"
            skew_ms = rng.randint(-half, half) if rng.random() < 0.3 else None
            down.discard(node)
            out.append(Restart(node, mode, rng.random() < 0.3, skew_ms))
    return Schedule(seed, size, disk, skew, tuple(out), unlisted)  # type: ignore[arg-type]


def _membership_step(rng: random.Random, number: int, names: List[str], down: Set[str],
                     gone: Set[str], has_dir: Dict[str, bool]) -> Optional[Step]:
    """A join, a forget or a leave, if one can happen now (``names`` are the
    current members, down or not; one stays up, and two stay members)."""
    running = [n for n in names if n not in down]
    roll = rng.random()
    if roll < 0.4 and number <= 7:
        return Join(f"n{number}", rng.choice(running), rng.random() < 0.5)
    if len(names) <= 2:
        return None
    if roll < 0.75 and down:
        node = rng.choice(sorted(down))
        down.discard(node)
    elif roll < 0.85 and len(running) > 1:
        node = rng.choice(running)
    else:
        return None
    names.remove(node)
    gone.add(node)
    has_dir.pop(node, None)
    if node in running:
        return Leave(node)
    return Forget(node, rng.choice([n for n in running if n != node]))


def _size(rng: random.Random, limit: int) -> int:
    """A value's size: mostly small, sometimes up to the request limit."""
    return rng.randint(0, 24) if rng.random() < 0.7 else rng.randint(0, limit)
