"""The invariants a simulated run must keep, checked on the nodes it ran.

:data:`INVARIANTS` names each one. :func:`bounded` looks at the running
nodes after every step; once the cluster has healed and settled,
:func:`history_kept` checks every replica against the recorded client history
(:mod:`distkv.history`: no acknowledged write lost, no resurrection, no
phantom), :func:`converged` compares the replicas, and :func:`purged` asks
whether tombstones past the grace are gone. The stale-service and exception
invariants are found while the run goes, by :mod:`distkv.simulate_runner`.
Each function returns the violations it found (none: the invariant held).
"""

from __future__ import annotations

from typing import Dict, List, Mapping

from distkv.history import History, Violation, check
from distkv.node import Node
from distkv.store import Entry

#: Every invariant the simulator checks, by the name its violations carry.
INVARIANTS = {
    "convergence": "every node holds the same keys, values and versions",
    "lost-write": "every acknowledged write is present or superseded (last-writer-wins)",
    "resurrection": "an acknowledged delete not overwritten stays deleted everywhere",
    "phantom": "every entry a node holds is one a client wrote",
    "stale-service": "no node answered a data command while it should have been loading",
    "bounded": "outboxes stay within their byte bounds",
    "purge": "once all nodes are up and settled, tombstones past the grace are purged",
    "exception": "the simulation itself raised (a crash in the code under test)",
}

Snapshots = Mapping[str, Dict[bytes, Entry]]


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


def history_kept(history: History, snapshots: Snapshots) -> List[Violation]:
    """Each replica's final entries against the recorded history."""
    out: List[Violation] = []
    for name, entries in snapshots.items():
        out.extend(check(history, name, entries))
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
