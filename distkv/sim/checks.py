"""The invariants a simulated run must keep, checked on the nodes it ran.

:data:`INVARIANTS` names each one. :func:`bounded` looks at the running
nodes after every step, and :func:`atomic` whether a node holds part of a
transaction without the rest; once the cluster has healed and settled,
:func:`history_kept` checks every replica against the recorded client history
(:mod:`distkv.sim.history`: no acknowledged write lost, no resurrection, no
phantom), :func:`converged` compares the replicas, and :func:`purged` asks
whether tombstones past the grace are gone. The stale-service and exception
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

from typing import Any, Dict, List, Mapping, Tuple

from distkv.node import Node
from distkv.sim.counting import is_counter
from distkv.sim.history import History, Violation, check
from distkv.store.hlc import Version
from distkv.store.store import Entry, version_of

#: Every invariant the simulator checks, by the name its violations carry.
INVARIANTS = {
    "convergence": "every node holds the same keys, values and versions",
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
    "counter": "every acknowledged INCRBY counts on every node after settling (its slot "
               "holds at least the total it made, unless a FLUSHALL dropped the slot), every "
               "slot's total is one an INCRBY made, and a counter reads as its slots' sum",
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
