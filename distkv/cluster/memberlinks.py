"""The member list at work: it travels over peer links and decides the links.

:class:`MemberLinks` joins a node's :class:`~distkv.cluster.membership.Membership`
to its :class:`~distkv.cluster.replication.Replication`. Every connection
starts with each end's member list (an ``M`` frame, see
:mod:`distkv.cluster.wire`), and every change goes to every live connection,
so a change made on one member reaches all of them through any path. A
member the list names that no link reaches yet is dialled at its address; a
node that links to us, or that we reach, is entered with the address it was
reached at; an address that comes to answer as another node marks the old
id ``replaced``; a removed node's links are closed and not dialled again,
and its handshakes are refused. The view :meth:`MemberLinks.members` is what
the stability horizon and the loading rule count. The node supplies the
clock (``stamp``), the disk (``save``) and what to do when a member goes
(``on_gone``) or this node itself left (``on_left``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from distkv.cluster import wire
from distkv.cluster.membership import (
    MAX_MEMBERS,
    MEMBER,
    REMOVED,
    REPLACED,
    Member,
    Membership,
    derived_node_id,
    split_address,
)
from distkv.cluster.peers import PeerLink
from distkv.cluster.replication import Replication, same_host
from distkv.ratelog import RateLimit
from distkv.store.hlc import Version

log = Logger()

Refusal = Tuple[str, str]

_FORGET_SELF = "ERR I tried hard but I can't forget myself..."


class MemberLinks:
    """Keeps the links in step with the member list, and the list in step
    with what the links show."""

    def __init__(
        self,
        membership: Membership,
        replication: Replication,
        add_peer: Callable[[str, int], Optional[PeerLink]],
        stamp: Callable[[Optional[Version]], Version],
        reactor: IReactorTime,
        flush_timeout: float,
    ) -> None:
        self.membership = membership
        self.replication = replication
        #: A node refused for a full list keeps trying: one line a second at most.
        self._full_logged = RateLimit(reactor.seconds, 1.0)
        self._add_peer = add_peer
        self._stamp = stamp
        self._reactor = reactor
        self._flush_timeout = flush_timeout
        #: Saves the whole list (the data dir's meta table).
        self.save: Callable[[List[Member]], None] = lambda entries: None
        #: A node is no member any more (removed or replaced): forget its floors.
        self.on_gone: Callable[[str], None] = lambda node: None
        #: This node itself was removed: it stops taking writes.
        self.on_left: Callable[[str], None] = lambda why: None
        self._left = False
        #: LEAVE ran: no writes are taken; the removal follows the flush.
        self._leaving = False
        #: The node crashed: a LEAVE under way never completes (its links
        #: closing is no flush).
        self.halted = False
        # Where each caller called from: the host its own entry may not know.
        self._called_from: Dict[str, Tuple[str, int]] = {}
        membership.on_change = self._changed

    @property
    def own(self) -> str:
        return self.membership.own

    # -- the view -------------------------------------------------------------

    def members(self) -> Optional[List[str]]:
        """The other members; None while a peer address we dial never answered
        and the list names no node there (its node is unknown)."""
        for link in self.replication.links.values():
            if (link.dials and link.remote is None and link.expect is None
                    and not link.is_self and link.refusal is None):
                return None
        return self.membership.peers()

    def frame(self) -> bytes:
        return wire.encode_members(self.membership.listing())

    # -- starting -------------------------------------------------------------

    def start(self, host: str, port: int, wall_ms: int) -> None:
        """State ourselves as a member at ``host:port`` and dial every member
        the list (read back from the data dir) names."""
        membership = self.membership
        if membership.left():
            log.error("This node was removed from the cluster (LEAVE or CLUSTER FORGET); "
                      "it links to no peer and takes no writes. Start it with a new "
                      "--node-id and an empty data dir to add it again")
            self._left = True
            self.on_left("this node was removed from the cluster")
            return
        membership.state_self(host, port, self._stamp, wall_ms)
        for member in membership.listing():
            if member.state == REMOVED:
                self._drop_links(member)
            else:
                self._ensure_link(member)

    # -- what links tell --------------------------------------------------------

    def heard(self, remote: wire.Hello, entries: Tuple[Member, ...]) -> None:
        """``remote`` sent its member list."""
        membership = self.membership
        membership.merge(entries, self._stamp)
        # An entry that says its node does not know its host outranks the
        # host we filled in before; fill it in again, under that version.
        for entry in entries:
            seen = self._called_from.get(entry.node)
            current = membership.get(entry.node)
            if seen is not None and current is not None and current.address is None:
                membership.observed(entry.node, *seen)

    def linked(self, link: PeerLink, remote: wire.Hello) -> None:
        """A connection with ``remote`` came up on ``link``."""
        if self.membership.is_removed(remote.node) or self._left:
            log.info("Closing the link to {peer}: node {node} was removed from the cluster",
                     peer=link.name, node=remote.node)
            self._reactor.callLater(0, self.replication.drop, link)  # type: ignore[attr-defined]
            return
        if link.dials and link.port is not None:
            self._answers_at(remote.node, link.host, link.port)
            self.membership.observed(remote.node, link.host, link.port)
            link.expect = remote.node
            self._one_dialler(remote.node)

    def _one_dialler(self, node: str) -> None:
        """Two addresses reached one node (the member list's, and another name
        for it in the peer list, or a proxy): the peer list's is kept, and the
        link made for the member list's is closed, its writes being the other's
        too (that one is older)."""
        reaching = [link for link in self.replication.links.values()
                    if link.dials and link.remote is not None and link.remote.node == node]
        listed = [link for link in reaching if not link.learned]
        if not listed:
            return
        for link in reaching:
            if link.learned:
                log.info("Member {node} answers at {listed} of the peer list too; closing "
                         "the link to {peer}", node=node, listed=listed[0].name, peer=link.name)
                self._reactor.callLater(0, self.replication.drop, link)  # type: ignore[attr-defined]

    def called(self, node: str, host: str, port: Optional[int]) -> None:
        """``node`` called us from ``host``, listening on ``port``."""
        if port is not None:
            self._called_from[node] = (host, port)
            self._answers_at(node, host, port)
            self.membership.observed(node, host, port)

    def _answers_at(self, node: str, host: str, port: int) -> None:
        """``node`` is at ``host:port`` now: a member listed there under another
        id has been replaced (it came back under a new id, or another node took
        its place); it is marked so, not kept as a second member."""
        for member in self.membership.listing():
            if (member.node != node and member.state == MEMBER and member.port == port
                    and member.address is not None and same_host(member.host, host)):
                self.replaced(member.node, node)

    def replaced(self, old: str, new: str) -> None:
        """``old``'s address answers as ``new`` now."""
        current = self.membership.get(old)
        if current is not None and current.state == MEMBER:
            log.warn("Node {old}'s address answers as node {new}: {old} is marked replaced",
                     old=old, new=new)
            self.membership.replace(old, self._stamp(current.version))

    def vet(self, node: str) -> Optional[Refusal]:
        """A refusal for a caller that may not link, or None."""
        if self._left:
            return ("removed", "this node left the cluster")
        if self.membership.is_removed(node):
            return ("removed", f"node {node} was removed from the cluster")
        if self.membership.get(node) is None and self.membership.full():
            # It could not be listed, so the stability horizon would not wait
            # for it: linking it could purge tombstones it never received.
            held = self._full_logged.allow()
            if held >= 0:
                log.warn("Refusing node {node}: the member list is full ({most} entries, "
                         "removed ones included; {held} more refusals held back)",
                         node=node, most=MAX_MEMBERS, held=held)
            return ("members-full", f"the member list is full ({MAX_MEMBERS} entries)")
        return None

    # -- commands -------------------------------------------------------------

    def forget(self, node: str) -> Optional[str]:
        """``CLUSTER FORGET node``: None, or the error to reply. ``node`` is a
        node id, or else the ``host:port`` of members or of a peer address."""
        if node == self.own:
            return _FORGET_SELF
        current = self.membership.get(node)
        if current is not None and current.state != REMOVED:
            self._remove(current)
            return None
        address = split_address(node) if current is None else None
        if address is not None:
            return self._forget_address(*address, asked=node)
        return f"ERR Unknown node {node}"

    def _remove(self, member: Member) -> None:
        self.membership.remove(member.node, self._stamp(member.version))
        log.info("Node {node} forgotten: removed from the cluster for good", node=member.node)

    def _forget_address(self, host: str, port: int, asked: str) -> Optional[str]:
        """``CLUSTER FORGET host:port``: every member listed at that address
        is removed; with none, a peer address this node dials is removed
        under the id a memory-only node there would take (its address), so
        that the removal travels like any other, every member stops dialling
        the address, and an address that never answered (its node gone for
        good before anyone learned its id) no longer holds purging back."""
        dialled = [link for link in self.replication.links.values()
                   if link.dials and link.port == port and same_host(link.host, host)]
        answered = {link.remote.node for link in dialled if link.remote is not None}
        there = [member for member in self.membership.listing()
                 if member.state == MEMBER and (member.node in answered or (
                     member.port == port and member.address is not None
                     and same_host(member.host, host)))]
        if any(member.node == self.own for member in there) \
                or any(link.is_self for link in dialled):
            return _FORGET_SELF
        for member in there:
            self._remove(member)
        if there:
            return None
        if all(link.remote is not None for link in dialled):
            return f"ERR Unknown node {asked}"  # nothing listed there, nothing unanswered
        node = derived_node_id(host, port)
        current = self.membership.get(node)
        if current is not None and current.state == REMOVED:
            self._drop_links(current)  # removed already: only the dialling was left
            return None
        stamp = self._stamp(current.version if current is not None else None)
        self.membership.merge([Member(node, REMOVED, stamp, host, port, stamp)],
                              lambda above: above)
        if not self.membership.is_removed(node):
            return f"ERR the member list is full ({MAX_MEMBERS} entries)"
        log.info("Peer address {host}:{port} forgotten: removed from the cluster for good "
                 "as node {node}", host=host, port=port, node=node)
        return None

    def leave(self) -> str:
        """``LEAVE``: take no more writes; once every member has acknowledged
        ours (or after the flush timeout), remove ourselves, tell every member
        we reach, then hang up. Removing ourselves first would lose writes
        still queued: members refuse a removed node's links at once."""
        if self._left or self._leaving:
            return "ERR this node has already left the cluster"
        self._leaving = True
        self.on_left("this node is leaving the cluster")
        links = [link for link in self.replication.links.values() if not link.is_self]
        waiting: Deferred[object] = DeferredList([link.flush() for link in links])  # type: ignore[assignment]
        timer = self._reactor.callLater(self._flush_timeout, self._remove_self)

        def flushed(result: object) -> object:
            if timer.active():
                timer.cancel()
                self._remove_self()
            return result

        waiting.addBoth(flushed)
        up = sum(1 for link in links if link.up)
        return (f"OK leaving the cluster: {up} linked member(s) get our writes, then "
                "our removal, then the links close")

    def _remove_self(self) -> None:
        if self._left or self.halted:
            return
        current = self.membership.get(self.own)
        self.membership.remove(self.own, self._stamp(current.version if current else None))

    # -- changes --------------------------------------------------------------

    def _changed(self, changed: List[Member]) -> None:
        self.save(self.membership.listing())
        frame = self.frame()
        for link in list(self.replication.links.values()):
            link.send_all(frame)
        for member in changed:
            if member.node == self.own:
                if member.state == REMOVED and not self._left:
                    self._leave_now()
                continue
            if member.state == REMOVED:
                self._drop_links(member)
                self._called_from.pop(member.node, None)
                self.on_gone(member.node)
            elif member.state == REPLACED:
                self._called_from.pop(member.node, None)
                self.on_gone(member.node)
            else:
                self._ensure_link(member)

    def _ensure_link(self, member: Member) -> None:
        if member.node == self.own or member.state != MEMBER or self._left:
            return
        address = member.address
        if address is None:
            return
        host, port = address
        for link in list(self.replication.links.values()):
            if link.remote is not None and link.remote.node == member.node and link.dials:
                return
            if link.port == port and same_host(link.host, host):
                if link.is_self:  # that address is this node's own: we took its place
                    self.replaced(member.node, self.own)
                    return
                if link.expect is None and link.remote is None:
                    link.expect = member.node
                if not link.dials:  # it called us: we dial it too from now on
                    self._add_peer(link.host, port)
                    link.learned = True
                    self._one_dialler(member.node)
                return
        made = self._add_peer(host, port)
        if made is None:  # that address is this node's own: we took its place
            self.replaced(member.node, self.own)
            return
        made.expect = member.node
        made.learned = True
        log.info("Linking to member {node} at {host}:{port}", node=member.node,
                 host=host, port=port)

    def _drop_links(self, member: Member) -> None:
        """Close the links to a removed member: those that reached it, and
        those that dial its address and never reached anyone there (a peer
        list written before it left)."""
        node = member.node
        for link in list(self.replication.links.values()):
            unanswered_there = (link.remote is None and link.port == member.port
                                and member.address is not None
                                and same_host(link.host, member.host))
            if (link.remote is not None and link.remote.node == node) or link.expect == node \
                    or unanswered_there:
                log.info("Closing the link to {peer}: node {node} was removed from the cluster",
                         peer=link.name, node=node)
                self.replication.drop(link)

    def _leave_now(self) -> None:
        """We were removed: our list has gone to every link; hang up once
        they have our writes (or after the flush timeout)."""
        self._left = True
        log.warn("This node was removed from the cluster; closing its links once they "
                 "have its writes. It takes no more writes")
        self.on_left("this node left the cluster")
        links = list(self.replication.links.values())
        waiting: Deferred[object] = DeferredList([link.flush() for link in links])  # type: ignore[assignment]
        timer = self._reactor.callLater(self._flush_timeout, self._hang_up, links)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
                self._hang_up(links)
            return result

        waiting.addBoth(done)

    def _hang_up(self, links: List[PeerLink]) -> None:
        for link in links:
            self.replication.drop(link)
