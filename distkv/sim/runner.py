"""Running one schedule on a simulated cluster, and recording what clients saw.

A :class:`Runner` starts a :class:`~distkv.testing.SimulatedCluster` as the
:class:`~distkv.sim.schedule.Schedule` says, plays its steps through the
nodes' command layers (pipelines through their front doors, see
:mod:`distkv.sim.clients`) and the simulated network, and records every
write and delete with its outcome in a :class:`~distkv.sim.history.History`. It also keeps
what the checks need to know along the way: which node should still be
loading (restarted without its data, and no serving peer has completed a
round into it, while some member may still serve it: answering a data command
then is *stale service*), and which
acknowledged writes were lost as documented with a memory-only node or a
replaced data dir. After the last step it heals the network, brings every node
back, lets the cluster settle and runs the checks of
:mod:`distkv.sim.checks`. Running is deterministic: the global ``random``,
which Twisted's reconnect jitter uses, is seeded with the schedule's seed.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import traceback
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from distkv.cluster.membership import derived_node_id
from distkv.cluster.wire import RoundMark
from distkv.disk.datafile import FILENAME
from distkv.front.commands import LOADING, Error, Pending
from distkv.front.replies import Session
from distkv.node import Node
from distkv.sim import checks
from distkv.sim.clients import Client, acknowledged, exec_outcome, requests, transaction
from distkv.sim.counting import Counting, key_of
from distkv.sim.history import ACKED, FAILED, History, Op, Violation
from distkv.sim.schedule import (
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
    Stall,
    Step,
    Transaction,
    Write,
)
from distkv.store.hlc import Version
from distkv.store.store import ZERO, version_of
from distkv.testing import SimulatedCluster


class Runner:
    """Runs one schedule and records what clients saw."""

    def __init__(self, schedule: Schedule, options: Optional[Dict[str, Any]] = None) -> None:
        self.schedule = schedule
        self.options = dict(NODE_OPTIONS, **(options or {}))
        self.history = History()
        self.counting = Counting()
        self.violations: List[Violation] = []
        self.root = tempfile.mkdtemp(prefix="distkv-sim-")
        self.session = Session("simulator")
        self._made = 0
        names = schedule.names()
        self.dirs: Dict[str, Optional[str]] = {
            name: self._new_dir() if has else None for name, has in zip(names, schedule.disk)
        }
        self.ids: Dict[str, str] = {name: name for name in names}
        #: Every id each node has gone by (a fresh-id restart adds one): an
        #: operator forgetting a machine forgets every id the cluster lists for it.
        self.past_ids: Dict[str, List[str]] = {name: [name] for name in names}
        self.dir_ids: Dict[str, str] = {d: n for n, d in self.dirs.items() if d is not None}
        #: node -> (the copy of its data file, the node id it belongs to, the
        #: flush floor saved in it: a restart from the copy brings that back).
        self.copies: Dict[str, Tuple[str, str, Version]] = {}
        #: The flush floor each crashed node with a data dir saved there: it
        #: comes back with the node, so a flush it holds is not lost.
        self.down_floors: Dict[str, Version] = {}
        #: node -> the time until which it should refuse data commands, while loading
        self.should_load: Dict[str, float] = {}
        #: node -> the nodes whose rounds completed into it since it last started
        self.rounds_into: Dict[str, Set[str]] = {}
        #: Nodes forgotten or left for good: never restarted, no longer checked.
        self.gone: List[str] = []
        #: Each transaction made, and the anti-entropy rounds into each node then.
        self.transactions: List[Tuple[checks.Made, Dict[str, int]]] = []
        self.cluster: Optional[SimulatedCluster] = None

    def _new_dir(self) -> str:
        self._made += 1
        return os.path.join(self.root, f"d{self._made}")

    def run(self) -> List[Violation]:
        random.seed(self.schedule.seed)  # Twisted's reconnect jitter draws from it
        try:
            self._run()
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            self.violations.append(Violation(
                "exception", f"{type(e).__name__}: {e} ({where.filename}:{where.lineno})"
            ))
        finally:
            if self.cluster is not None:
                for name in list(self.cluster.nodes):
                    self.cluster.crash(name)
            shutil.rmtree(self.root, ignore_errors=True)
        return self.violations

    def _run(self) -> None:
        schedule = self.schedule
        names = schedule.names()
        self.cluster = cluster = SimulatedCluster(
            schedule.size,
            skew_ms=dict(zip(names, schedule.skew)),
            data_dirs=self.dirs,
            unlisted=schedule.unlisted,
            **self.options,
        )
        for name in names:
            self._watch(name, cluster.nodes[name])
        cluster.net.advance_by(self.options["loading_wait"] + 1, step=0.25)
        for index, step in enumerate(schedule.steps):
            self._step(index, step)
            cluster.run()
            self.violations.extend(checks.bounded(cluster.nodes, index))
            for made, repaired in self.transactions:
                self.violations.extend(checks.atomic(cluster.nodes, made, repaired, index))
        self._settle()

    # -- steps ---------------------------------------------------------------

    def _step(self, index: int, step: Step) -> None:
        assert self.cluster is not None
        net = self.cluster.net
        if isinstance(step, Write):
            request = (b"SET", b"k%d" % step.key, _value(step.tag, step.size))
            self._command(index, step.node, *(request + self._write_expiry(step)))
        elif isinstance(step, Delete):
            self._command(index, step.node, b"DEL", b"k%d" % step.key)
        elif isinstance(step, Read):
            self._read(index, step.node, b"k%d" % step.key)
        elif isinstance(step, Expire):
            self._expire(index, step)
        elif isinstance(step, Pipeline):
            self._pipeline(index, step)
        elif isinstance(step, Transaction):
            self._transaction(index, step)
        elif isinstance(step, Advance):
            net.advance_by(step.seconds, step=0.25)
        elif isinstance(step, Partition):
            net.block(step.a, step.b, step.oneway)
        elif isinstance(step, Heal):
            net.heal()
        elif isinstance(step, Cut):
            # With deliver, what a wrote still arrives (its writes) and what b
            # wrote back (their acknowledgements) is lost: a duplicate follows.
            net.cut(step.a, step.b, step.a if step.deliver else None)
        elif isinstance(step, Stall):
            net.stall(step.a, step.b, step.seconds)
        elif isinstance(step, Snapshot):
            self._snapshot(step.node)
        elif isinstance(step, Crash):
            self._crash(step.node)
        elif isinstance(step, Restart):
            if step.node not in self.gone:
                self._restart(step)
        elif isinstance(step, Join):
            self._join(step)
        elif isinstance(step, Forget):
            self._forget(step.node, step.by)
        elif isinstance(step, Leave):
            self._leave(step.node)
        elif isinstance(step, Flush):
            self._flush(step.node)
        elif isinstance(step, (Incr, IncrFloat)):
            self._incr(index, step)

    def _write_expiry(self, step: Write) -> Tuple[bytes, ...]:
        """The expiry options of ``step``'s SET: ``PX``, or ``PXAT`` by the
        writing node's (skewed) clock."""
        if not step.ttl_ms:
            return _expiry(step.tag)
        assert self.cluster is not None
        node = self.cluster.nodes.get(step.node)
        if not step.absolute or node is None:
            return (b"PX", b"%d" % step.ttl_ms)
        return (b"PXAT", b"%d" % (node.store.clock.wall_ms() + step.ttl_ms))

    def _read(self, index: int, name: str, key: bytes) -> None:
        """GET through ``name``; then the key must read on it as its entry
        says by its clock (missing once expired)."""
        self._command(index, name, b"GET", key)
        assert self.cluster is not None
        node = self.cluster.nodes.get(name)
        if node is not None:
            self.violations.extend(checks.expired_reads(name, node, [key], index))

    def _expire(self, index: int, step: Expire) -> None:
        """An expiry change through the node's command layer; one that wrote
        (a new version) is recorded as the write of the value it left, or as
        a delete when its time had passed."""
        assert self.cluster is not None
        node = self.cluster.nodes.get(step.node)
        if node is None:
            return
        key = b"k%d" % step.key
        request = [step.command.encode(), key]
        if step.command == "PEXPIRE":
            request.append(b"%d" % step.ms)
        elif step.command == "PEXPIREAT":
            request.append(b"%d" % (node.store.clock.wall_ms() + step.ms))
        elif step.command == "GETEX":
            request += [b"PX", b"%d" % step.ms] if step.ms > 0 else [b"PERSIST"]
        if step.option:
            request.append(step.option.encode())
        before = node.store.entry(key)
        outcome = node.dispatcher.run(request, self.session)
        if outcome is LOADING:
            return
        self._served(index, step.node, request[0], key)
        entry = node.store.entry(key)
        if entry is None or before is not None and version_of(entry) == version_of(before):
            return  # nothing written (the key was missing, or the option said no)
        op = self.history.invoked(index, self.ids[step.node], key, entry[0], entry)
        if isinstance(outcome, Pending):
            outcome.batch.when_done(lambda error: _settled(op, error))
        else:
            _settled(op, outcome.message if isinstance(outcome, Error) else None)

    def _incr(self, index: int, step: Union[Incr, IncrFloat]) -> None:
        """INCRBY or INCRBYFLOAT through the node's command layer, recorded
        with the slot and total it made (a refused one changes nothing and
        is not)."""
        assert self.cluster is not None
        node = self.cluster.nodes.get(step.node)
        if node is None:
            return
        key = key_of(step.key)
        before = node.store.entry(key)
        if isinstance(step, IncrFloat):
            request = [b"INCRBYFLOAT", key, step.amount.encode()]
        else:
            request = [b"INCRBY", key, b"%d" % step.amount]
        outcome = node.dispatcher.run(request, self.session)
        if outcome is LOADING or isinstance(outcome, Error):
            return
        self._served(index, step.node, request[0], key)
        entry = node.store.entry(key)
        assert entry is not None
        increment = self.counting.record(index, key, entry, node.node_id)
        if isinstance(step, IncrFloat):
            reply = outcome.reply if isinstance(outcome, Pending) else outcome
            assert isinstance(reply, bytes)
            self.violations.extend(self.counting.float_made(
                index, step.node, key, request[2], reply, before, entry))
        if isinstance(outcome, Pending):
            outcome.batch.when_done(increment.settle)
        else:
            increment.settle(None)

    def _flush(self, name: str) -> None:
        """FLUSHALL through ``name``, recorded once its floor rose: the floor is
        saved (with a data dir) before the flush removes anything."""
        assert self.cluster is not None
        node = self.cluster.nodes.get(name)
        if node is None:
            return
        before = node.store.flushed
        node.dispatcher.run([b"FLUSHALL"], self.session)
        if node.store.flushed != before:  # not refused (loading, clock ahead, left)
            self.history.flushed(node.store.flushed)

    # -- membership ------------------------------------------------------------

    def _join(self, step: Join) -> None:
        assert self.cluster is not None
        name = step.node
        if name in self.cluster.ports or step.via not in self.cluster.nodes:
            return
        path = self._new_dir() if step.disk else None
        self.dirs[name] = path
        self.ids[name] = name
        self.past_ids[name] = [name]
        if path is not None:
            self.dir_ids[path] = name
        # It starts empty: it must load until a serving member synced it.
        self._starts_loading(name)
        node = self.cluster.join(name, [step.via], path)
        self._watch(name, node)

    def _forget(self, name: str, by: str) -> None:
        """CLUSTER FORGET ``name`` (down for good) on ``by``, or on any running
        node that knows it when ``by`` does not (as an operator would)."""
        assert self.cluster is not None
        if name in self.cluster.nodes or name in self.gone:
            return
        self.gone.append(name)
        self.down_floors.pop(name, None)  # its data dir never comes back
        self._forget_ids(name, by)
        self._data_lost()  # whatever only its data dir held is gone with it
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

    def _leave(self, name: str) -> None:
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
            self._forget(name, sorted(self.cluster.nodes)[0])
        else:
            self.gone.append(name)
            self._forget_ids(name, None)  # the ids it went by before, if still listed
            self._data_lost()
            self._nobody_serves()

    def _command(self, index: int, name: str, *request: bytes) -> None:
        assert self.cluster is not None
        node = self.cluster.nodes.get(name)
        if node is None:
            return
        outcome = node.dispatcher.run(list(request), self.session)
        if outcome is LOADING:
            return
        self._served(index, name, request[0], request[1])
        if request[0] == b"GET":
            return
        entry = node.store.entry(request[1])
        assert entry is not None
        op = self.history.invoked(index, self.ids[name], request[1],
                                  request[2] if len(request) > 2 else None, entry)
        if isinstance(outcome, Pending):
            outcome.batch.when_done(lambda error: _settled(op, error))
        else:
            _settled(op, outcome.message if isinstance(outcome, Error) else None)

    def _served(self, index: int, name: str, command: bytes, key: bytes) -> None:
        """``name`` answered a data command: was it still meant to be loading?"""
        assert self.cluster is not None
        due = self.should_load.get(name)
        if due is not None and self.cluster.net.seconds() < due:
            self.violations.append(Violation(
                "stale-service",
                f"step {index}: {name} answered {command.decode()} {key!r} "
                f"while it should have been loading (restarted without its data, "
                f"no serving peer has completed a round into it yet)",
            ))

    def _pipeline(self, index: int, step: Pipeline) -> None:
        assert self.cluster is not None
        name = step.node
        node = self.cluster.nodes.get(name)
        if node is None:
            return
        key, value = b"k%d" % step.key, _value(step.tag, step.size)
        before = node.store.entry(key)
        client = Client(node.factory(), self.cluster.ports[name])
        client.send(requests(step.resp, key, value, step.gets))
        entry = node.store.entry(key)
        op = None
        if entry is not None and entry != before:  # the SET ran
            self._served(index, name, b"SET", key)
            op = self.history.invoked(index, self.ids[name], key, value, entry)
        client.read(self.cluster.run)
        client.close()
        ok = acknowledged(client.first_reply())
        if op is not None and ok is not None:
            op.outcome = ACKED if ok else FAILED
        limits = self.options["client_output_limits"]
        self.violations.extend(checks.reply_queue(
            name, index, client.peak, limits.soft, self.options["max_request"] + 64
        ))

    def _transaction(self, index: int, step: Transaction) -> None:
        """MULTI, two SETs, EXEC through the node's front door: both writes
        happen or neither, and each is recorded like any other."""
        assert self.cluster is not None
        name = step.node
        nodes = self.cluster.nodes
        node = nodes.get(name)
        if node is None:
            return
        keys = [b"k%d" % key for key in step.keys]
        value = _value(step.tag, step.size)
        before = [node.store.entry(key) for key in keys]
        client = Client(node.factory(), self.cluster.ports[name])
        client.send(transaction(step.resp, keys, value))
        after = [node.store.entry(key) for key in keys]
        ran = [entry is not None and entry != old for entry, old in zip(after, before)]
        ops: List[Op] = []
        if any(ran):
            self._served(index, name, b"EXEC", keys[0])
            if not all(ran):
                self.violations.append(Violation(
                    "atomic", f"step {index}: EXEC on {name} wrote only some of {keys}"))
            writes = []
            for key, entry in zip(keys, after):
                assert entry is not None
                ops.append(self.history.invoked(index, self.ids[name], key, value, entry))
                writes.append((key, version_of(entry)))
            repaired = {other: checks.repairs(nodes, self.ids[other]) for other in nodes}
            self.transactions.append(((index, name, tuple(writes)), repaired))
        client.read(self.cluster.run)
        client.close()
        ok = exec_outcome(step.resp, client.received, len(keys))
        for op in ops:
            if ok is not None:
                op.outcome = ACKED if ok else FAILED

    def _snapshot(self, name: str) -> None:
        path = self.dirs.get(name)
        if path is None or not os.path.exists(os.path.join(path, FILENAME)):
            return
        copy = os.path.join(self.root, f"copy-{name}-{self._made}.sqlite3")
        source = sqlite3.connect(os.path.join(path, FILENAME))
        target = sqlite3.connect(copy)
        try:
            source.backup(target)  # what was committed, as another process would copy it
            floor = _saved_floor(target)
        finally:
            target.close()
            source.close()
        self.copies[name] = (copy, self.dir_ids[path], floor)

    def _crash(self, name: str) -> None:
        assert self.cluster is not None
        if name not in self.cluster.nodes:
            return
        if self.dirs[name] is not None:
            self.down_floors[name] = self.cluster.nodes[name].store.flushed
        self.cluster.crash(name)
        if self.dirs[name] is None:
            self._data_lost()

    def _data_lost(self, restored: Version = ZERO) -> None:
        """Data was thrown away (a memory-only node, a replaced data dir): what
        no running node holds is lost as documented, no longer acknowledged.
        A flush is lost only if no running node, no crashed node's data dir
        and no copy a node is restarting from (``restored``: its saved floor)
        holds its floor."""
        assert self.cluster is not None
        held: Dict[bytes, Version] = {}
        for node in self.cluster.nodes.values():
            for key, entry in node.store.items():
                version = version_of(entry)
                if key not in held or held[key] < version:
                    held[key] = version
            horizon = node.store.horizon
            for key, ops in self.history.ops.items():
                if node.store.entry(key) is None:  # purged: its deletes below the horizon count
                    for op in ops:
                        if op.value is None and op.version < horizon and (
                            key not in held or held[key] < op.version
                        ):
                            held[key] = op.version
        self.history.lost_unless_held(held)
        self.counting.lost_unless_held(self.cluster.nodes)
        self.history.flush_lost_unless_held(max(
            [node.store.flushed for node in self.cluster.nodes.values()]
            + list(self.down_floors.values()) + [restored]))

    def _restart(self, step: Restart) -> None:
        assert self.cluster is not None
        name = step.node
        if name in self.cluster.nodes:
            self._crash(name)
        mode = step.mode
        if mode == "older-copy" and name not in self.copies:
            mode = "own-dir"
        if mode == "own-dir" and self.dirs[name] is None:
            mode = "memory"
        path = self.dirs[name]
        node_id = self.ids[name]
        restored = ZERO  # the flush floor the node comes back with
        if mode == "memory":
            path = None
        elif mode == "empty-dir":
            path = self._new_dir()
        elif mode == "older-copy":
            copy, node_id, restored = self.copies[name]
            path = self._new_dir()
            os.makedirs(path)
            shutil.copyfile(copy, os.path.join(path, FILENAME))
        if mode in ("memory", "empty-dir") and step.fresh_id:
            self._made += 1
            node_id = f"{name}i{self._made}"
        if path is not None:
            node_id = self.dir_ids.setdefault(path, node_id)
        self.down_floors.pop(name, None)  # running, or its dir left behind
        if mode != "own-dir":
            self._data_lost(restored)
            self._starts_loading(name)
        else:
            self.should_load.pop(name, None)
            self.rounds_into.pop(name, None)
        self.dirs[name] = path
        self.ids[name] = node_id
        if node_id not in self.past_ids[name]:
            self.past_ids[name].append(node_id)
        node = self.cluster.start(
            name, path, step.skew_ms, None if node_id == name else node_id
        )
        self._watch(name, node)

    def _watch(self, name: str, node: Node) -> None:
        """Hear when a peer's anti-entropy round into ``name`` completes."""
        original = node.synced

        def synced(peer: Any, mark: RoundMark) -> None:
            original(peer, mark)
            sender = next((n for n, i in self.ids.items() if i == peer.node), None)
            assert self.cluster is not None
            if sender is None or sender not in self.cluster.nodes:
                return
            self.rounds_into.setdefault(name, set()).add(sender)
            if not self._loading(sender):
                self.should_load.pop(name, None)
            self._nobody_serves()

        node.synced = synced  # type: ignore[method-assign]

    def _starts_loading(self, name: str) -> None:
        """``name`` starts without its data: it loads until a serving peer syncs it."""
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
        loading = {name for name in members if self._loading(name)}
        if len(loading) < len(members):
            return  # a member serves (or may, once back up): it must sync them
        for name in loading:
            others = loading - {name}
            if others <= self.rounds_into.get(name, set()):
                self.should_load.pop(name, None)

    def _loading(self, name: str) -> bool:
        assert self.cluster is not None
        due = self.should_load.get(name)
        return due is not None and self.cluster.net.seconds() < due

    def _forget_again(self) -> None:
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

    # -- the end -------------------------------------------------------------

    def _settle(self) -> None:
        assert self.cluster is not None
        cluster = self.cluster
        cluster.net.heal()
        for name in list(cluster.ports):
            if name not in cluster.nodes and name not in self.gone:
                self._restart(Restart(name, "own-dir"))
        writes = checks.LocalWrites(cluster.nodes)
        wait = self.options["loading_wait"] + 3 * self.options["sync_interval"] + 20
        cluster.net.advance_by(wait / 2, step=0.5)
        self._forget_again()
        rounds = checks.RoundWatch()  # on a healed network a round takes no time
        rounds.start(cluster.nodes)
        cluster.net.advance_by(wait / 2, step=0.5)
        self.violations.extend(rounds.stuck(cluster.nodes, wait / 2))
        self.violations.extend(writes.made())
        for name, node in cluster.nodes.items():  # what expired is missing, on every node alike
            keys = sorted(node.store.snapshot())
            self.violations.extend(checks.expired_reads(name, node, keys, -1, listing=True))
            node.store.reclaim_expired()
        snapshots = cluster.snapshots()
        self.violations.extend(checks.history_kept(self.history, snapshots))
        floor = max((node.store.flushed for node in cluster.nodes.values()), default=ZERO)
        for name, entries in snapshots.items():
            self.violations.extend(self.counting.check(name, entries, floor))
        self.violations.extend(checks.converged(snapshots))
        grace = self.options["tombstone_grace"] + self.options["max_clock_skew"]
        cluster.net.advance_by(grace + 6 * self.options["heartbeat"] + 2, step=0.5)
        self.violations.extend(checks.purged(cluster.nodes))


def _saved_floor(db: sqlite3.Connection) -> Version:
    """The flush floor saved in a data file (see
    :meth:`distkv.disk.datafile.Disk.saved_floor`), ZERO if none."""
    row = db.execute("SELECT value FROM meta WHERE name = 'flushed'").fetchone()
    if row is None:
        return ZERO
    ms, counter, node = str(row[0]).split(":", 2)
    return Version(int(ms), int(counter), node)


def _value(tag: int, size: int) -> bytes:
    """The value a write of ``size`` bytes made at step ``tag`` sets (one byte at least)."""
    return (b"%d." % tag).ljust(size, b"v")[: max(size, 1)]


def _expiry(tag: int) -> Tuple[bytes, ...]:
    """Every tenth write (tags ending in 5) expires, from half a second to ten
    seconds after it is made (from the tag: no draw of the schedule changes,
    and the hand-made schedules of the tests keep their plain writes)."""
    if tag % 10 != 5:
        return ()
    return (b"PX", b"%d" % (500 + tag * 977 % 9500))


def _settled(op: Op, error: Optional[str]) -> None:
    op.outcome = ACKED if error is None else FAILED


def run(schedule: Schedule, options: Optional[Dict[str, Any]] = None) -> List[Violation]:
    """Run ``schedule``; the violations found (none: every invariant held)."""
    return Runner(schedule, options).run()
