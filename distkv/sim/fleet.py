"""The simulated cluster's nodes over a run: who is up, under which id and data dir.

A :class:`Fleet` starts, crashes, restarts (from its own data dir, an empty
one, an older copy, or memory), joins, forgets and retires the nodes of a
:class:`~distkv.sim.runner.Runner`'s cluster, as its schedule says, and keeps
what the checks need to know about them: the ids each node went by, which
node should still be loading (restarted, and no serving peer has completed a
round into it since), and which acknowledged writes and flushes
were lost as documented with a memory-only node or a replaced data dir (it
tells the :class:`~distkv.sim.history.History` and the
:class:`~distkv.sim.counting.Counting`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from typing import Any, Dict, List, Optional, Set, Tuple

from distkv.cluster.membership import derived_node_id
from distkv.cluster.wire import RoundMark
from distkv.disk.datafile import FILENAME, Disk
from distkv.node import Node
from distkv.sim.counting import Counting
from distkv.sim.history import History
from distkv.sim.schedule import Join, Restart, Schedule
from distkv.store.entries import ZERO, version_of
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store
from distkv.testing import SimulatedCluster


class Fleet:
    """The nodes of one run, as its schedule starts, stops and replaces them."""

    def __init__(self, schedule: Schedule, options: Dict[str, Any], history: History,
                 counting: Counting) -> None:
        self.options = options
        self.history = history
        self.counting = counting
        self.root = tempfile.mkdtemp(prefix="distkv-sim-")
        self._made = 0
        names = schedule.names()
        self.dirs: Dict[str, Optional[str]] = {
            name: self.new_dir() if has else None for name, has in zip(names, schedule.disk)
        }
        self.ids: Dict[str, str] = {name: name for name in names}
        #: Every id each node has gone by (a fresh-id restart adds one): an
        #: operator forgetting a machine forgets every id the cluster lists for it.
        self.past_ids: Dict[str, List[str]] = {name: [name] for name in names}
        self.dir_ids: Dict[str, str] = {d: n for n, d in self.dirs.items() if d is not None}
        #: node -> (the copy of its data file, the node id it belongs to).
        self.copies: Dict[str, Tuple[str, str]] = {}
        #: node -> the time until which it should refuse data commands, while loading
        self.should_load: Dict[str, float] = {}
        #: node -> the nodes whose rounds completed into it since it last started
        self.rounds_into: Dict[str, Set[str]] = {}
        #: Nodes forgotten or left for good: never restarted, no longer checked.
        self.gone: List[str] = []
        #: Set by the runner once it has started the cluster on :attr:`dirs`.
        self.cluster: Optional[SimulatedCluster] = None

    def new_dir(self) -> str:
        self._made += 1
        return os.path.join(self.root, f"d{self._made}")

    def join(self, step: Join) -> None:
        assert self.cluster is not None
        name = step.node
        if name in self.cluster.ports or step.via not in self.cluster.nodes:
            return
        path = self.new_dir() if step.disk else None
        self.dirs[name] = path
        self.ids[name] = name
        self.past_ids[name] = [name]
        if path is not None:
            self.dir_ids[path] = name
        # It starts empty: it must load until a serving member synced it.
        self._starts_loading(name)
        node = self.cluster.join(name, [step.via], path)
        self.watch(name, node)

    def forget(self, name: str, by: str, lost: Optional[Store] = None) -> None:
        """CLUSTER FORGET ``name`` (down for good) on ``by``, or on any running
        node that knows it when ``by`` does not (as an operator would).
        ``lost``: what it held (default: what its data dir holds)."""
        assert self.cluster is not None
        if name in self.cluster.nodes or name in self.gone:
            return
        if lost is None:
            lost = self._dir_store(self.dirs[name])
        self.gone.append(name)  # its data dir never comes back
        self._forget_ids(name, by)
        # whatever only it held is gone with it
        self._data_lost([] if lost is None else [lost])
        self._nobody_serves()

    def _forget_ids(self, name: str, by: Optional[str]) -> None:
        """CLUSTER FORGET, on ``by`` or else on the first running node that
        knows it, of every id the departed ``name`` went by that a running
        node lists as a member and none holds removed (a removal some node
        holds reaches the others by itself). Its present id, and an earlier
        one still listed: a fresh-id restart that reached no member, so that
        no member saw the new id at the old address and marked the old one
        replaced, leaves the old id a member whose node is dead for good,
        which holds purging back until it is forgotten (README, "Membership")."""
        assert self.cluster is not None
        nodes = self.cluster.nodes
        order = ([by] if by in nodes else []) + sorted(n for n in nodes if n != by)
        for node_id in self.past_ids.get(name, [name]):
            if any(node.membership.is_removed(node_id) for node in nodes.values()):
                continue
            if not any(node.membership.is_member(node_id) for node in nodes.values()) \
                    and node_id != self.ids.get(name, name):
                continue  # an earlier id no node lists (or one marked replaced)
            for other in order:
                if nodes[other].member_links.forget(node_id) is None:
                    break

    def leave(self, name: str) -> None:
        """LEAVE on ``name``; once its links closed it stops for good. If no
        member heard it (it was cut off), a member forgets it instead."""
        assert self.cluster is not None
        node = self.cluster.nodes.get(name)
        if node is None or name in self.gone:
            return
        node.member_links.leave()
        self.cluster.net.advance_by(self.options["flush_timeout"] + 0.5, step=0.25)
        self.cluster.crash(name)
        heard = any(other.membership.is_removed(node.node_id)
                    for other in self.cluster.nodes.values())
        if not heard:
            self.forget(name, sorted(self.cluster.nodes)[0], node.store)
        else:
            self.gone.append(name)
            self._forget_ids(name, None)  # the ids it went by before, if still listed
            self._data_lost([node.store])
            self._nobody_serves()

    def snapshot(self, name: str) -> None:
        path = self.dirs.get(name)
        if path is None or not os.path.exists(os.path.join(path, FILENAME)):
            return
        copy = os.path.join(self.root, f"copy-{name}-{self._made}.sqlite3")
        source = sqlite3.connect(os.path.join(path, FILENAME))
        target = sqlite3.connect(copy)
        try:
            source.backup(target)  # what was committed, as another process would copy it
        finally:
            target.close()
            source.close()
        self.copies[name] = (copy, self.dir_ids[path])

    def crash(self, name: str) -> None:
        assert self.cluster is not None
        if name not in self.cluster.nodes:
            return
        store = self.cluster.nodes[name].store
        self.cluster.crash(name)
        if self.dirs[name] is None:
            self._data_lost([store])

    def _dir_store(self, path: Optional[str]) -> Optional[Store]:
        """What the data dir ``path`` has committed, read as a restart would."""
        if path is None or not os.path.exists(os.path.join(path, FILENAME)):
            return None
        store = Store(HybridClock(self.dir_ids.get(path, "reader"), lambda: 0))
        disk = Disk(path)
        try:
            store.restore_floor(disk.saved_floor())  # as a restart reads it: first
            disk.load(store, None)
        finally:
            disk.close()
        return store

    def _holders(self) -> List[Store]:
        """Every store that still holds data: the running nodes', and what the
        data dir of each node that is down, and comes back on it, has
        committed (a node restarting from an older copy or an empty dir is
        down on its new dir by now: see :meth:`restart`)."""
        assert self.cluster is not None
        stores = [node.store for node in self.cluster.nodes.values()]
        for name in sorted(self.dirs):
            if name not in self.cluster.nodes and name not in self.gone:
                store = self._dir_store(self.dirs[name])
                if store is not None:
                    stores.append(store)
        return stores

    def _held(self, stores: List[Store]) -> Dict[bytes, Version]:
        """The highest version of each key that ``stores`` hold. Where a store
        no longer holds a key, a delete of it recorded below the store's
        horizon counts as held (purged), and so does any write below the
        store's flush floor (flushed: a flush is lost, or not, on its own)."""
        held: Dict[bytes, Version] = {}
        for store in stores:
            for key, entry in store.items():
                version = version_of(entry)
                if key not in held or held[key] < version:
                    held[key] = version
            horizon, flushed = store.horizon, store.flushed
            for key, ops in self.history.ops.items():
                if store.entry(key) is None:
                    for op in ops:
                        if (op.value is None and op.version < horizon
                                or op.version < flushed) and (
                            key not in held or held[key] < op.version
                        ):
                            held[key] = op.version
        return held

    def _data_lost(self, lost: List[Store]) -> None:
        """Data was thrown away (``lost``: a memory-only node's, a replaced or
        departed data dir's): an acknowledged write that it held and nothing
        else still holds is lost as documented, no longer acknowledged. One
        that nothing held before either stays acknowledged: its loss is not
        this one's (a node that acknowledged a write it never committed), and
        the final checks find it. A flush is lost only if no running node and
        no data dir a node comes back on (an older copy included) holds its
        floor."""
        assert self.cluster is not None
        after = self._holders()
        self.history.lost_unless_held(self._held(after), self._held(lost))
        self.counting.lost_unless_held(after, lost)
        self.history.flush_lost_unless_held(max((store.flushed for store in after), default=ZERO))

    def restart(self, step: Restart) -> None:
        assert self.cluster is not None
        name = step.node
        if name in self.cluster.nodes:
            self.crash(name)
        mode = step.mode
        if mode == "older-copy" and name not in self.copies:
            mode = "own-dir"
        if mode == "own-dir" and self.dirs[name] is None:
            mode = "memory"
        path = self.dirs[name]
        node_id = self.ids[name]
        if mode == "memory":
            path = None
        elif mode == "empty-dir":
            path = self.new_dir()
        elif mode == "older-copy":
            copy, node_id = self.copies[name]
            path = self.new_dir()
            os.makedirs(path)
            shutil.copyfile(copy, os.path.join(path, FILENAME))
        if mode in ("memory", "empty-dir") and step.fresh_id:
            self._made += 1
            node_id = f"{name}i{self._made}"
        if path is not None:
            node_id = self.dir_ids.setdefault(path, node_id)
        replaced = self.dirs[name] if mode != "own-dir" else None
        self.dirs[name] = path
        if mode != "own-dir":
            old = self._dir_store(replaced)
            self._data_lost([] if old is None else [old])
        # Back on its own dir it may have missed writes and deletes while
        # down: it loads ("checking") until a serving peer synced it too.
        self._starts_loading(name)
        self.ids[name] = node_id
        if node_id not in self.past_ids[name]:
            self.past_ids[name].append(node_id)
        node = self.cluster.start(
            name, path, step.skew_ms, None if node_id == name else node_id
        )
        self.watch(name, node)

    def watch(self, name: str, node: Node) -> None:
        """Hear when a peer's anti-entropy round into ``name`` completes."""
        original = node.synced

        def synced(peer: Any, mark: RoundMark) -> None:
            original(peer, mark)
            sender = next((n for n, i in self.ids.items() if i == peer.node), None)
            assert self.cluster is not None
            if sender is None or sender not in self.cluster.nodes:
                return
            self.rounds_into.setdefault(name, set()).add(sender)
            if not self.loading(sender):
                self.should_load.pop(name, None)
            self._nobody_serves()

        node.synced = synced  # type: ignore[method-assign]

    def _starts_loading(self, name: str) -> None:
        """``name`` (re)starts: it loads until a serving peer syncs it."""
        assert self.cluster is not None
        self.should_load[name] = self.cluster.net.seconds() + self.options["loading_wait"]
        self.rounds_into[name] = set()

    def _nobody_serves(self) -> None:
        """No member serves, and every other member has completed a round into
        a loading node: it holds everything any member holds and may serve
        (README, *Loading*). This is how a cluster whose serving members all
        left (what only they held is lost with them) serves again without
        waiting out ``loading_wait`` for nobody. Judged for every loading node
        at once, on the states before any of them ends."""
        members = [name for name in self.ids if name not in self.gone]
        loading = {name for name in members if self.loading(name)}
        if len(loading) < len(members):
            return  # a member serves (or may, once back up): it must sync them
        for name in loading:
            others = loading - {name}
            if others <= self.rounds_into.get(name, set()):
                self.should_load.pop(name, None)

    def loading(self, name: str) -> bool:
        assert self.cluster is not None
        due = self.should_load.get(name)
        return due is not None and self.cluster.net.seconds() < due

    def forget_again(self) -> None:
        """A removal that no running node holds any more (every node that
        heard it was memory only and has crashed since, as a write can be
        lost) is made again, as an operator would: CLUSTER FORGET on a node
        that still lists the departed id (any id the departed node went by).
        One that some node holds must reach the others by itself: the purge
        check shows whether it did."""
        for name in self.gone:
            self._forget_ids(name, None)
            self._forget_address(name)

    def _forget_address(self, name: str) -> None:
        """CLUSTER FORGET ``host:port`` of the departed ``name``, on a running
        node that still dials that address unanswered when no id of it is left
        to forget (every node that knew one restarted without it), as an
        operator would: such an address holds purging back (README,
        "Membership"). A removal some node holds reaches the others by itself."""
        assert self.cluster is not None
        nodes = self.cluster.nodes
        port = self.cluster.ports[name]
        address = f"127.0.0.1:{port}"
        if any(node.membership.is_removed(derived_node_id("127.0.0.1", port))
               for node in nodes.values()):
            return
        for other in sorted(nodes):
            if any(link.dials and link.remote is None and link.port == port
                   for link in nodes[other].replication.links.values()):
                nodes[other].member_links.forget(address)
                return
