"""Who the members of the cluster are: a member list that merges, sans-IO.

Each node id has one :class:`Member` entry: its state (``member``,
``replaced`` when its address came to answer as another node, or
``removed`` for good by ``CLUSTER FORGET`` or ``LEAVE``), the version of
that state (a hybrid-clock :class:`~distkv.store.hlc.Version` from the node
that set it), and its advertised address with the version that set it.
Entries merge per node id, whatever the order or duplication of delivery:

* ``removed`` is final: it wins over any other entry, and the id never
  becomes a member again (a node put back after ``FORGET`` needs a new id).
  Between two removals, the higher version wins.
* otherwise the higher version wins (ties: ``replaced`` over ``member``).
  A node that learns it was marked ``replaced`` while it runs states itself
  again above that version (:meth:`Membership.merge` does it), so a node
  that comes back at its old address after another took it over rejoins.
* the address merges apart from the state: the highest address version
  wins (ties: the larger ``(host, port)``). A node that does not know its
  own address (it listens on every interface and was given no
  ``--advertise``) states an empty host; the node it calls fills in the host
  the connection came from, under the same version, which outranks the
  empty one.

Both orders are total, so the merge is a join of two semilattices:
commutative, associative and idempotent, and every member that has heard
the same entries holds the same list. :meth:`Membership.peers` is the view
the stability horizon, the loading rule and link management use: the ids
that are members, this node left out. No networking and no clock here:
versions are passed in.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from distkv.store.entries import ZERO
from distkv.store.hlc import Version

MEMBER = "member"
REPLACED = "replaced"
REMOVED = "removed"
STATES = (MEMBER, REPLACED, REMOVED)
_RANK = {MEMBER: 0, REPLACED: 1, REMOVED: 2}

#: The most entries (removed ones included) a member list may hold; the
#: ``M`` frame that carries it stays within the smallest frame limit.
MAX_MEMBERS = 512

#: Advertised host names: letters, digits and ``. - : _ %`` (IPv6 and zones
#: included), at most 255 bytes; empty while the node does not know it.
HOST = re.compile(r"^[A-Za-z0-9.:_%-]{0,255}$")

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


class Member(NamedTuple):
    """One node id's entry in the member list."""

    node: str
    state: str
    version: Version
    host: str
    port: int
    address_version: Version

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        return (self.host, self.port) if self.host and self.port else None

    def describe(self) -> str:
        return f"{self.host}:{self.port}" if self.port else "-"


def merge_entries(a: Member, b: Member) -> Member:
    """The entry both ``a`` and ``b`` (for one node id) merge into."""
    if (a.state == REMOVED) != (b.state == REMOVED):
        state_from = a if a.state == REMOVED else b
    else:
        state_from = max(a, b, key=lambda m: (m.version, _RANK[m.state]))
    address_from = max(a, b, key=lambda m: (m.address_version, m.host, m.port))
    return Member(a.node, state_from.state, state_from.version,
                  address_from.host, address_from.port, address_from.address_version)


def split_address(text: str) -> Optional[Tuple[str, int]]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); None if it is not
    one (no port, a port outside 1-65535, whitespace in the host)."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isascii() or not port_text.isdigit() \
            or len(port_text) > 5 or any(c.isspace() for c in host):
        return None
    port = int(port_text)
    return (host, port) if 0 < port < 65536 else None


def derived_node_id(host: str, port: int) -> str:
    """The default id of a node that keeps no data dir: its address, so a
    restart at the same address comes back under the same id."""
    name = _ID_UNSAFE.sub("-", f"{host}:{port}")
    return name[-64:]


class Membership:
    """This node's member list; ``own`` is this node's id.

    ``on_change(changed)`` is told after every merge that changed entries,
    with the entries that changed (the node saves them, tells its peers,
    dials new members and drops removed ones).
    """

    def __init__(self, own: str) -> None:
        self.own = own
        self.entries: Dict[str, Member] = {}
        self.on_change: Callable[[List[Member]], None] = lambda changed: None
        #: Entries refused because the list was full.
        self.refused = 0

    # -- what it says ---------------------------------------------------------

    def peers(self) -> List[str]:
        """The ids of the other members (not replaced, not removed)."""
        return sorted(node for node, m in self.entries.items()
                      if m.state == MEMBER and node != self.own)

    def is_member(self, node: str) -> bool:
        m = self.entries.get(node)
        return m is not None and m.state == MEMBER

    def is_removed(self, node: str) -> bool:
        m = self.entries.get(node)
        return m is not None and m.state == REMOVED

    def left(self) -> bool:
        """Whether this node itself was removed (it left, or was forgotten)."""
        return self.is_removed(self.own)

    def get(self, node: str) -> Optional[Member]:
        return self.entries.get(node)

    def at(self, host: str, port: int) -> List[Member]:
        """The entries whose address is ``host:port``."""
        return [m for m in self.entries.values() if m.host == host and m.port == port]

    def listing(self) -> List[Member]:
        return [self.entries[node] for node in sorted(self.entries)]

    # -- what changes it ------------------------------------------------------

    def full(self) -> bool:
        """No new node id can be listed (removed entries count: they are final)."""
        return len(self.entries) >= MAX_MEMBERS

    def merge(self, entries: Iterable[Member], now: Callable[[Version], Version]) -> List[Member]:
        """Merge entries heard from a peer (or read back from disk); the
        entries that changed. ``now(above)`` stamps a version above ``above``
        (the node's hybrid clock): used when an entry says this node was
        replaced, to state itself again above it."""
        changed: List[Member] = []
        for entry in entries:
            old = self.entries.get(entry.node)
            new = entry if old is None else merge_entries(old, entry)
            if new == old:
                continue
            if old is None and self.full():
                self.refused += 1
                continue
            if new.node == self.own and new.state == REPLACED:
                new = new._replace(state=MEMBER, version=now(new.version))
            self.entries[new.node] = new
            changed.append(new)
        if changed:
            self.on_change(changed)
        return changed

    def state_self(self, host: str, port: int, now: Callable[[Version], Version],
                   wall_ms: int = 0) -> None:
        """This node starts (or restarts) as a member at ``host:port`` (an
        empty host: not known). A removed node stays removed."""
        current = self.entries.get(self.own)
        version = Version(wall_ms, 0, self.own)
        if current is not None and current.version >= version:
            version = now(current.version)  # the wall clock went back: stamp above
        if not host and current is not None and current.address is not None \
                and current.port == port:
            # Where peers saw us at this port: still where we are.
            host, address_version = current.host, current.address_version
        else:
            address_version = version
        entry = Member(self.own, MEMBER, version, host, port, address_version)
        self.merge([entry], now)

    def observed(self, node: str, host: str, port: int) -> None:
        """``node`` called us from ``host`` and says it listens on ``port``:
        fill in an address it does not know itself, or add it (as a member,
        under the lowest version: its own entry outranks this one)."""
        current = self.entries.get(node)
        if current is None:
            entry = Member(node, MEMBER, ZERO, host, port, ZERO)
        elif current.address is None and port and current.port in (0, port):
            entry = current._replace(host=host, port=port)
        else:
            return  # it says where it is itself: the port it calls from is not that
        self.merge([entry], lambda above: above)

    def replace(self, old: str, at: Version) -> None:
        """``old``'s address answers as another node now."""
        current = self.entries.get(old)
        if current is None or current.state != MEMBER or old == self.own:
            return
        self.merge([current._replace(state=REPLACED, version=at)], lambda above: above)

    def remove(self, node: str, at: Version) -> bool:
        """Remove ``node`` for good; False if it is no member we know of."""
        current = self.entries.get(node)
        if current is None or current.state == REMOVED:
            return False
        self.merge([current._replace(state=REMOVED, version=at)], lambda above: above)
        return True
