"""The invariants a simulated run must keep, checked on the nodes it ran.

:data:`INVARIANTS` names each one. :func:`bounded` looks at the running
nodes after every step, and :func:`atomic` whether a node holds part of a
transaction without the rest; once the cluster has healed and settled,
:func:`history_kept` checks every replica against the recorded client history
(:mod:`distkv.sim.history`: no acknowledged write lost, no resurrection, no
phantom), :func:`converged` compares the replicas, and :func:`purged` asks
whether tombstones past the grace are gone. *Expiry* is
checked by :func:`expired_reads` when a client reads a key, and on every key
of every node once settled, before anything else reclaims it; and by
:class:`LocalWrites` over the settle period. The stale-service and exception
invariants are found while the run goes, by :mod:`distkv.sim.runner`.
Each function returns the violations it found (none: the invariant held).

*Bounded* covers three kinds of buffer. Each peer's outbox stays within
``outbox_bytes``. The replies queued for a client (unread, or ready and held
behind a commit) pass the soft output limit by one reply at most, as the
client output limits promise: the pipelines of :mod:`distkv.sim.clients`
measure them. An anti-entropy round's state (the peer's key lists, the round
in progress, which blocks the link's next rounds) has no byte limit of its
own and is bounded by the store, which is tiny here; what can go wrong is a
round whose end never comes, so :class:`RoundWatch` reports a round that was
running halfway through the settle period, on a healed network where a round
takes no simulated time, and is still running at its end.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from distkv.front.commands import LOADING, Pending
from distkv.front.replies import NIL, Array, Session
from distkv.node import Node
from distkv.sim.counting import is_counter
from distkv.sim.history import History, Violation, check
from distkv.store.entries import Entry, expired, version_of
from distkv.store.hlc import Version

#: Every invariant the simulator checks, by the name its violations carry.
INVARIANTS = {
    "convergence": "every node holds the same keys, values, versions and expiries",
    "lost-write": "every acknowledged write is present or superseded (last-writer-wins)",
    "resurrection": "an acknowledged delete not overwritten stays deleted everywhere",
    "phantom": "every entry a node holds is one a client wrote",
    "flush": "no entry below the latest acknowledged FLUSHALL survives on any node "
             "after settling",
    "stale-service": "no node answered a data command while it should have been loading",
    "bounded": "outboxes and client reply queues stay within their byte bounds, and no "
               "anti-entropy round holds its state on a healed network",
    "atomic": "no node holds part of a transaction without the rest (outside anti-entropy repairs)",
    "purge": "once all nodes are up and settled, tombstones past the grace are purged",
    "counter": "every acknowledged INCRBY and INCRBYFLOAT counts on every node after settling "
               "(its slot holds at least the total it made, unless a FLUSHALL dropped the slot), "
               "every slot's total is one an increment made, in whole units of 10^-17, a counter "
               "reads as its slots' exact sum, and an INCRBYFLOAT answers the value its key then "
               "reads, its slot grown by exactly the difference",
    "expiry": "a key whose value's expiry has passed by a node's clock reads as missing "
              "there (GET, EXISTS, PTTL, KEYS, DBSIZE), a live one reads as stored; and "
              "reclaiming expired keys writes nothing (no replicated delete: a node's "
              "local writes do not move while the cluster settles with no client)",
    "exception": "the simulation itself raised (a crash in the code under test)",
}

Snapshots = Mapping[str, Dict[bytes, Entry]]


#: A transaction made through a node: the step, the node, and each key with
#: the version its write got.
Made = Tuple[int, str, Tuple[Tuple[bytes, Version], ...]]


def repairs(nodes: Mapping[str, Node], node_id: str) -> int:
    """How many anti-entropy rounds the running nodes have started into
    ``node_id`` (a round may carry a transaction's keys apart: README)."""
    return sum(
        link._rounds_started  # noqa: SLF001 - the simulator reads the link's state
        for node in nodes.values() for link in node.replication.links.values()
        if link.remote is not None and link.remote.node == node_id
    )


def atomic(nodes: Mapping[str, Node], made: Made, repaired: Mapping[str, int],
           index: int) -> List[Violation]:
    """No node holds one write of transaction ``made`` without the others
    (each of its keys at that version or newer, or purged), after step
    ``index``; nodes into which an anti-entropy round started since the
    transaction (``repaired``: the count then) are left out."""
    out = []
    step, via, writes = made
    for name, node in nodes.items():
        if name not in repaired or repairs(nodes, name) != repaired[name]:
            continue
        store = node.store
        held = []
        for key, version in writes:
            entry = store.entry(key)
            held.append(entry is not None and version_of(entry) == version)
        if not any(held):
            continue
        for key, version in writes:
            entry = store.entry(key)
            if entry is None and version < store.horizon:
                continue  # overwritten and purged since
            if entry is None or version_of(entry) < version:
                out.append(Violation(
                    "atomic", f"step {index}: {name} holds part of the transaction made "
                    f"through {via} at step {step}, but not its write of {key!r} "
                    f"(holds {None if entry is None else version_of(entry)})"
                ))
    return out


def bounded(nodes: Mapping[str, Node], index: int) -> List[Violation]:
    """Every outbox of every running node within its byte bound, after step ``index``."""
    out = []
    for name, node in nodes.items():
        for link in node.replication.links.values():
            outbox = link.outbox
            if outbox.bytes > outbox.max_bytes:
                out.append(Violation(
                    "bounded", f"step {index}: {name}'s outbox for {link.name} holds "
                    f"{outbox.bytes} bytes, over its bound of {outbox.max_bytes}"
                ))
    return out


def reply_queue(name: str, index: int, peak: int, soft: int, largest_reply: int) -> List[Violation]:
    """The most bytes queued for one client (``peak``) within the soft limit
    plus the one reply that may take it past."""
    if peak <= soft + largest_reply:
        return []
    return [Violation(
        "bounded", f"step {index}: {name} queued {peak} bytes of replies for a client "
        f"that did not read, over the soft limit of {soft} plus one reply ({largest_reply})"
    )]


class RoundWatch:
    """Anti-entropy rounds in progress, to find one whose end never comes."""

    def __init__(self) -> None:
        self._seen: Dict[Tuple[str, str], Any] = {}

    @staticmethod
    def _running(nodes: Mapping[str, Node]) -> Dict[Tuple[str, str], Any]:
        out: Dict[Tuple[str, str], Any] = {}
        for name, node in nodes.items():
            for link in node.replication.links.values():
                current = getattr(link, "_round", None)
                if current is not None:
                    out[name, link.name] = current
        return out

    def start(self, nodes: Mapping[str, Node]) -> None:
        """Note the rounds running now."""
        self._seen = self._running(nodes)

    def stuck(self, nodes: Mapping[str, Node], seconds: float) -> List[Violation]:
        """Rounds noted by :meth:`start` still running ``seconds`` later."""
        out = []
        for (name, peer), current in self._running(nodes).items():
            number = current.number
            if self._seen.get((name, peer)) is not current:
                continue
            out.append(Violation(
                "bounded", f"{name}'s anti-entropy round {number} with {peer} still "
                f"holds its state {seconds:g}s later on a healed network: its end never came"
            ))
        return out


def history_kept(history: History, snapshots: Snapshots) -> List[Violation]:
    """Each replica's final entries against the recorded history."""
    out: List[Violation] = []
    for name, entries in snapshots.items():
        # Counter keys are checked on their own (distkv.sim.counting).
        out.extend(check(history, name, {k: e for k, e in entries.items() if not is_counter(k)}))
    return out


def converged(snapshots: Snapshots) -> List[Violation]:
    """Every replica holds the same live keys, values and versions as the first."""
    out = []
    live = {name: {k: e for k, e in snap.items() if e[0] is not None}
            for name, snap in snapshots.items()}
    first = next(iter(live))
    for name, entries in live.items():
        if entries != live[first]:
            differ = sorted(k for k in set(entries) | set(live[first])
                            if entries.get(k) != live[first].get(k))
            out.append(Violation(
                "convergence", f"{name} and {first} differ on {differ} after settling"
            ))
    return out


def purged(nodes: Mapping[str, Node]) -> List[Violation]:
    """No node still holds a tombstone (called once the grace has passed)."""
    out = []
    for name, node in nodes.items():
        if node.store.tombstones:
            out.append(Violation(
                "purge", f"{name} still holds {node.store.tombstones} tombstones "
                f"after every node was up and settled (horizon {node.store.horizon})"
            ))
    return out


_CHECKER = Session("simulator checks")


def _ask(node: Node, *request: bytes) -> object:
    outcome = node.dispatcher.run(list(request), _CHECKER)
    return outcome.reply if isinstance(outcome, Pending) else outcome


def expired_reads(name: str, node: Node, keys: Sequence[bytes], index: int,
                  listing: bool = False) -> List[Violation]:
    """Each of ``keys`` reads on ``node`` as its stored entry says by the
    node's own clock: missing (GET nil, EXISTS 0, PTTL -2) when deleted or
    its expiry has passed, its value otherwise; with ``listing``, KEYS and
    DBSIZE show exactly the live keys too. Nothing is checked while the node
    is loading. ``index`` is the step (-1: once settled)."""
    store = node.store
    now = store.clock.wall_ms()
    entries = {key: store.entry(key) for key in keys}
    when = "once settled" if index < 0 else f"step {index}"
    out = []
    live = set()
    for key, entry in entries.items():
        alive = entry is not None and entry[0] is not None and not expired(entry, now)
        if alive:
            live.add(key)
        value = _ask(node, b"GET", key)
        if value is LOADING:
            return []
        exists = _ask(node, b"EXISTS", key)
        pttl = _ask(node, b"PTTL", key)
        want = (entry[0] if alive and entry is not None else NIL, int(alive))
        if (value, exists) != want or (pttl == -2) == alive:
            out.append(Violation("expiry", (
                f"{when}: {name} holds {key!r} as {entry!r} at {now} ms by its clock, and "
                f"answered GET {value!r}, EXISTS {exists!r}, PTTL {pttl!r}")))
    if listing:
        listed = _ask(node, b"KEYS", b"*")
        size = _ask(node, b"DBSIZE")
        shown = set(listed.items) if isinstance(listed, Array) else None
        if shown != live or size != len(live):
            out.append(Violation("expiry", (
                f"{when}: {name} lists {sorted(shown or (), key=repr)} (DBSIZE {size!r}) at {now} ms by "
                f"its clock, its live keys are {sorted(live)}")))
    return out


class LocalWrites:
    """Counts the local writes each node makes from now on (its store's
    listeners hear them with a sequence number), to show that the active
    expiry cycle reclaims without writing while no client writes."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = dict(nodes)
        self.counts = {name: 0 for name in nodes}
        self.keys: Dict[str, List[bytes]] = {name: [] for name in nodes}
        for name, node in nodes.items():
            node.store.subscribe(self._listener(name))

    def _listener(self, name: str) -> Callable[[bytes, Entry, int], None]:
        def heard(key: bytes, entry: Entry, seq: int) -> None:
            if seq:
                self.counts[name] += 1
                self.keys[name].append(key)
        return heard

    def made(self) -> List[Violation]:
        """A violation for each node that wrote since (see the class)."""
        return [Violation("expiry", (
            f"{name} made {count} local writes ({sorted(set(self.keys[name]))}) while the "
            f"cluster settled with no client (reclaimed {self.nodes[name].store.reclaimed} "
            f"expired keys)")) for name, count in self.counts.items() if count]
