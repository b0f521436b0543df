"""Running one schedule on a simulated cluster, and recording what clients saw.

A :class:`Runner` starts a :class:`~distkv.testing.SimulatedCluster` as the
:class:`~distkv.sim.schedule.Schedule` says, plays its steps through the
nodes' command layers (pipelines through their front doors, see
:mod:`distkv.sim.clients`) and the simulated network, and records every
write and delete with its outcome in a :class:`~distkv.sim.history.History`.
Its :class:`~distkv.sim.fleet.Fleet` crashes, restarts, joins and forgets the
nodes, and knows which should still be loading: a node that answers a data
command then is *stale service*. After the last step it heals the network,
brings every node back, lets the cluster settle and runs the checks of
:mod:`distkv.sim.checks`. Running is deterministic: the global ``random``,
which Twisted's reconnect jitter uses, is seeded with the schedule's seed.
"""

from __future__ import annotations

import random
import shutil
import traceback
from typing import Any, Dict, List, Optional, Tuple, Union

from distkv.front.commands import LOADING, Error, Pending
from distkv.front.replies import Session
from distkv.sim import checks
from distkv.sim.clients import Client, acknowledged, exec_outcome, requests, transaction
from distkv.sim.counting import Counting, key_of
from distkv.sim.fleet import Fleet
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
    Split,
    Stall,
    Step,
    Transaction,
    Write,
)
from distkv.store.entries import ZERO, version_of
from distkv.testing import SimulatedCluster


class Runner:
    """Runs one schedule and records what clients saw."""

    def __init__(self, schedule: Schedule, options: Optional[Dict[str, Any]] = None) -> None:
        self.schedule = schedule
        self.options = dict(NODE_OPTIONS, **(options or {}))
        self.history = History()
        self.counting = Counting()
        self.violations: List[Violation] = []
        self.session = Session("simulator")
        self.fleet = Fleet(schedule, self.options, self.history, self.counting)
        #: Each transaction made, and the anti-entropy rounds into each node then.
        self.transactions: List[Tuple[checks.Made, Dict[str, int]]] = []
        self.cluster: Optional[SimulatedCluster] = None

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
            shutil.rmtree(self.fleet.root, ignore_errors=True)
        return self.violations

    def _run(self) -> None:
        schedule = self.schedule
        names = schedule.names()
        self.cluster = cluster = SimulatedCluster(
            schedule.size,
            skew_ms=dict(zip(names, schedule.skew)),
            data_dirs=self.fleet.dirs,
            unlisted=schedule.unlisted,
            **self.options,
        )
        self.fleet.cluster = cluster
        for name in names:
            self.fleet.watch(name, cluster.nodes[name])
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
        elif isinstance(step, Split):
            for a in step.group:
                for b in list(self.cluster.ports):
                    if b not in step.group:
                        net.block(a, b)
        elif isinstance(step, Heal):
            net.heal()
        elif isinstance(step, Cut):
            # With deliver, what a wrote still arrives (its writes) and what b
            # wrote back (their acknowledgements) is lost: a duplicate follows.
            net.cut(step.a, step.b, step.a if step.deliver else None)
        elif isinstance(step, Stall):
            net.stall(step.a, step.b, step.seconds)
        elif isinstance(step, Snapshot):
            self.fleet.snapshot(step.node)
        elif isinstance(step, Crash):
            self.fleet.crash(step.node)
        elif isinstance(step, Restart):
            if step.node not in self.fleet.gone:
                self.fleet.restart(step)
        elif isinstance(step, Join):
            self.fleet.join(step)
        elif isinstance(step, Forget):
            self.fleet.forget(step.node, step.by)
        elif isinstance(step, Leave):
            self.fleet.leave(step.node)
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
        op = self.history.invoked(index, self.fleet.ids[step.node], key, entry[0], entry)
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
        op = self.history.invoked(index, self.fleet.ids[name], request[1],
                                  request[2] if len(request) > 2 else None, entry)
        if isinstance(outcome, Pending):
            outcome.batch.when_done(lambda error: _settled(op, error))
        else:
            _settled(op, outcome.message if isinstance(outcome, Error) else None)

    def _served(self, index: int, name: str, command: bytes, key: bytes) -> None:
        """``name`` answered a data command: was it still meant to be loading?"""
        if self.fleet.loading(name):
            self.violations.append(Violation(
                "stale-service",
                f"step {index}: {name} answered {command.decode()} {key!r} "
                f"while it should have been loading (restarted, and no serving peer "
                f"has completed a round into it since)",
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
            op = self.history.invoked(index, self.fleet.ids[name], key, value, entry)
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
                ops.append(self.history.invoked(index, self.fleet.ids[name], key, value, entry))
                writes.append((key, version_of(entry)))
            repaired = {other: checks.repairs(nodes, self.fleet.ids[other]) for other in nodes}
            self.transactions.append(((index, name, tuple(writes)), repaired))
        client.read(self.cluster.run)
        client.close()
        ok = exec_outcome(step.resp, client.received, len(keys))
        for op in ops:
            if ok is not None:
                op.outcome = ACKED if ok else FAILED

    # -- the end -------------------------------------------------------------

    def _settle(self) -> None:
        assert self.cluster is not None
        cluster = self.cluster
        cluster.net.heal()
        for name in list(cluster.ports):
            if name not in cluster.nodes and name not in self.fleet.gone:
                self.fleet.restart(Restart(name, "own-dir"))
        writes = checks.LocalWrites(cluster.nodes)
        wait = self.options["loading_wait"] + 3 * self.options["sync_interval"] + 20
        cluster.net.advance_by(wait / 2, step=0.5)
        self.fleet.forget_again()
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
