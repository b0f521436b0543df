"""When is a tombstone safe to forget? The cluster's stable horizon.

A tombstone can be purged once no node can ever again hold, or be sent, an
older value of its key. That is true below the *stable horizon*: a version
such that every node of the cluster has received every write below it.

Each node learns its share from the heartbeats its peers send it. A peer's
heartbeat carries its *floor* for us (every entry the peer holds below the
floor, whoever wrote it, is held here too, or a newer version of its key: its
outbox to us holds none of its own writes older, no resync is pending, and
its last completed anti-entropy round to us, and every write it merged
since, lie above; see :meth:`distkv.cluster.peers.PeerLink.floor`) and its *low* (the
minimum of the floors the peer has heard from every node). Counting every
entry held, not only the peer's own writes, is what keeps a write whose
writer crashed before sending it everywhere (and came back without its data,
under its id or another) above every horizon until a holder's round has
carried it to every node. Our own low is the minimum of the floors
we heard; the horizon is the minimum of our low and every member's low. A
member we have not heard from counts as zero, so a node that is down, or an
address whose node we never reached, holds every purge back: tombstones go
only once every peer has acknowledged them. The members are those of the
member list (:mod:`distkv.cluster.membership`): a node removed from it (by
``CLUSTER FORGET`` or ``LEAVE``) or replaced at its address is forgotten here
and holds nothing back any more.

The horizon is also kept a grace period behind the wall clock, so a delete
has had time to spread by anti-entropy as well before it is forgotten. No
networking here: the node feeds in heartbeats and asks for the horizon.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

from distkv.store.entries import ZERO
from distkv.store.hlc import Version

#: Above every real version: the floor of a cluster with no other members.
TOP = Version(1 << 62, 0, "")


class Stability:
    """Floors and lows heard from peers, and the horizon they allow."""

    def __init__(self) -> None:
        self._floors: Dict[str, Version] = {}
        self._lows: Dict[str, Version] = {}

    def heard(self, node: str, floor: Version, low: Version) -> None:
        """A heartbeat from ``node``. A restarted node's first one replaces what
        its previous incarnation said: it vouches only for what it holds now."""
        self._floors[node] = floor
        self._lows[node] = low

    def forget(self, node: str) -> None:
        """``node`` left the cluster (its address now answers as another node)."""
        self._floors.pop(node, None)
        self._lows.pop(node, None)

    def low(self, members: Optional[Iterable[str]]) -> Version:
        """Every write below this, from every member, has reached this node.

        ``members`` is None while some peer address has never answered: its
        node is unknown, so nothing is known to be stable.
        """
        if members is None:
            return ZERO
        return min((self._floors.get(node, ZERO) for node in members), default=TOP)

    def horizon(self, members: Optional[Iterable[str]]) -> Version:
        """Every member has received every write below this."""
        if members is None:
            return ZERO
        names = list(members)
        lows = [self._lows.get(node, ZERO) for node in names]
        return min([self.low(names)] + lows)
