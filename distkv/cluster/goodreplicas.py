"""Which peers count as good replicas, for ``--min-replicas-to-write``.

Redis refuses writes (``NOREPLICAS``) while fewer than
``min-replicas-to-write`` replicas are connected and have been heard from
within ``min-replicas-max-lag`` seconds; here a replica is a peer node with a
live connection that sent us anything (a heartbeat's answer, an
acknowledgement, a write) within that many seconds. The node recounts once a
second, as Redis does, so the refusal follows a peer's loss within about
``max_lag`` plus a second.
"""

from __future__ import annotations

from typing import Iterable, Set

from distkv.cluster.peers import PeerLink


def good_replicas(links: Iterable[PeerLink], now: float, max_lag: float) -> int:
    """How many distinct peer nodes have a connection heard from within ``max_lag``."""
    nodes: Set[str] = set()
    for link in links:
        remote = link.remote
        if link.is_self or remote is None or remote.node in nodes:
            continue
        for proto in link.connections():
            if now - proto.last_heard <= max_lag:
                nodes.add(remote.node)
                break
    return len(nodes)
