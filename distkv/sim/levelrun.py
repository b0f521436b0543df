"""Random clients at a consistency level, recorded as a history.

One seed decides everything: a :class:`~distkv.testing.SimulatedCluster` on
a fake clock, clients that each hold a RESP connection to every node (set
to the level with ``CONSISTENCY``) and send one request at a time, each
through a node picked at random (so a client's reads and writes cross
nodes), and partitions that come and go between the nodes, and crashes of one node at
a time, restarted empty (memory only: it loads from its peers). Every request
is recorded as a :class:`~distkv.sim.linearizable.Op`: a write that answered
``TIMEOUT`` is indeterminate (no return), a read that could not be met is
left out (it returned nothing). Values are unique, so a read names the
write it saw. After the run the partitions heal, the cluster settles, and
each node's values of the keys are kept for the convergence check.

At ``LINEARIZABLE`` the clients also increment (``INCR``) and compare-and-set
(``SET ... NX``: a ``cas`` from absent), every node's clock is skewed (up to
±0.3 s, within ``--max-clock-skew`` of 1 s), and every history, whatever
its writers, must be linearizable (:mod:`distkv.sim.linearizable`) and the
replicas must agree after the run (anti-entropy runs every 10 s there).

``python -m distkv.sim.levelrun [first-seed] [count] [level]`` runs seeds and
checks each history with :mod:`distkv.sim.sessions` (and, for the seeds with
a single writer, :mod:`distkv.sim.linearizable`), or at ``LINEARIZABLE`` as
said above; every third seed below ``LINEARIZABLE`` bounds the outboxes so
tightly (:data:`SMALL_OUTBOX`, over :data:`MANY_KEYS`) that partitions cut
links over to resyncs (:attr:`Recorded.overflows` counts them).
Crashes come one node at a time, and only while every node holds what it
held (:meth:`distkv.node.Node.restored`): a node back empty that has not
synced from enough members yet has lost its data, so a second crash then
would be two failures at once. As a node answers a SET at QUORUM or ALL with
OK, the run looks at every node's store then and there: the write (or a newer
entry of its key) must be on as many nodes as the level needs
(:attr:`Recorded.underheld`), which no history check could see once a round
has carried it on.
"""

from __future__ import annotations

import random
import sys
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from distkv.cluster import quorum
from distkv.sim import linearizable, sessions
from distkv.sim.linearizable import UNKNOWN, Op
from distkv.store.entries import Entry, version_of
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster

#: Fake seconds between two looks at the clients' connections.
TICK = 0.005
#: An outbox bound (``--outbox-bytes``) that a partition passes once writes
#: of three of :data:`MANY_KEYS` wait for a peer (a key written again
#: replaces its older write in the outbox, so two keys never would): every
#: third seed of :func:`main` runs with both.
SMALL_OUTBOX = 200
MANY_KEYS = tuple(b"k%d" % i for i in range(6))


class Recorded(NamedTuple):
    """A run's history, and each node's final values of its keys."""

    history: List[Op]
    replicas: Dict[str, Dict[bytes, bytes]]
    keys: Tuple[bytes, ...]
    #: LINEARIZABLE reads that found a majority agreeing on an entry not
    #: settled on some member (see distkv.cluster.acceptor), so wrote it back:
    #: how often a run made the interleaving a one-phase read gets wrong
    #: (counted on the nodes up at the end).
    unsettled_reads: int = 0
    #: Writes at QUORUM or ALL answered OK while fewer members than the
    #: level needs held them (or a newer entry of their key), described.
    underheld: Tuple[str, ...] = ()
    #: How often a link's outbox passed ``--outbox-bytes`` and was cut over.
    overflows: int = 0


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def parse(data: bytes) -> Optional[Tuple[str, object]]:
    """One whole RESP reply: (``ok`` | ``bulk`` | ``int`` | ``error``, value); None until whole."""
    if not data.endswith(b"\r\n"):
        return None
    head, _, rest = data.partition(b"\r\n")
    if head == b"+OK":
        return ("ok", None)
    if head[:1] == b"-":
        return ("error", head[1:].decode("utf-8", "replace"))
    if head[:1] == b":":
        return ("int", int(head[1:]))
    if head == b"$-1":
        return ("bulk", None)
    if head[:1] == b"$" and len(rest) >= int(head[1:]) + 2:
        return ("bulk", rest[: int(head[1:])])
    return None


class _Client:
    def __init__(self, number: int, connections: Dict[str, Tuple[Any, StringTransport]]):
        self.number = number
        self.connections = connections
        self.left = 0
        self.writes = True
        self.made = 0
        #: The request under way: its node, kind, key, value, call time.
        self.busy: Optional[Tuple[str, str, bytes, Optional[bytes], float]] = None
        #: The version the request's SET got as it ran, if it ran at once.
        self.wrote: Optional[Version] = None
        #: Told as the node writes an answer (see :class:`_Transport`).
        self.answering: Callable[[bytes], None] = lambda data: None


class _Transport(StringTransport):
    """A client's connection, which tells the client as the node writes an
    answer: what the cluster holds is looked at then, not once the network
    has gone quiet (by when a round may have carried a write on)."""

    def __init__(self, address: IPv4Address, client: _Client) -> None:
        super().__init__(peerAddress=address)
        self.client = client

    def write(self, data: bytes) -> None:
        self.client.answering(data)
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.client.answering(b"".join(data))
        super().writeSequence(data)


def run(seed: int, level: bytes = b"QUORUM", size: int = 3, clients: int = 4,
        ops: int = 30, keys: Sequence[bytes] = (b"k0", b"k1"), writers: Optional[int] = None,
        partitions: bool = True, crashes: bool = True,
        quorum_timeout: float = 0.2, sync_interval: float = 10.0,
        outbox_bytes: Optional[int] = None) -> Recorded:
    """Run ``clients`` clients of ``ops`` requests each at ``level``; only the
    first ``writers`` of them write (None: all); ``sync_interval`` is the
    anti-entropy period at LINEARIZABLE; ``outbox_bytes``, if given, a bound
    small enough that a partition cuts outboxes over to resyncs."""
    rng = random.Random(seed)
    random.seed(seed)  # Twisted's reconnect jitter draws from it: a seed replays
    linear = level.upper() == b"LINEARIZABLE"
    options: Dict[str, Any] = {"sync_interval": 3600.0}
    if linear:
        # Skewed clocks, within the skew the nodes accept; and anti-entropy
        # rounds within the final settling, which is how a value some
        # acceptors took reaches the others when its coordinator crashed
        # before sending it on.
        options = {"max_clock_skew": 1.0, "sync_interval": sync_interval,
                   "skew_ms": {f"n{i + 1}": rng.randint(-300, 300) for i in range(size)}}
    if outbox_bytes is not None:
        options["outbox_bytes"] = outbox_bytes
    cluster = SimulatedCluster(size, quorum_timeout=quorum_timeout, **options)
    net = cluster.net
    try:
        cluster.settle()
        names = sorted(cluster.nodes)
        everyone: List[_Client] = []
        for number in range(clients):
            client = _Client(number, {})
            client.left = ops
            client.writes = writers is None or number < writers
            everyone.append(client)
        for name in names:
            _connect(cluster, name, everyone, level)
        history: List[Op] = []
        underheld: List[str] = []
        need = 1 if linear else quorum.needed(level.decode().upper(), size)
        if need > 1:
            for client in everyone:
                client.answering = partial(_check_held, cluster, client, need, underheld)
        down: Optional[str] = None
        unsettled = overflows = 0  # a crashed node's counts, kept
        for _ in range(ops * 1000):
            if not any(client.left or client.busy for client in everyone):
                break
            if partitions and rng.random() < 0.03:
                roll = rng.random()
                if roll < 0.4:
                    net.heal()
                elif roll < 0.7:
                    a, b = rng.sample(names, 2)
                    net.block(a, b)
                else:  # one node cut off from every other
                    lone = rng.choice(names)
                    for other in names:
                        if other != lone:
                            net.block(lone, other)
            if crashes and rng.random() < 0.01:
                # One node at a time, and only once every node that came back
                # holds again what it held (see Node.restored): a node back
                # empty and not yet synced from enough members has lost it, so
                # crashing another would be two failures at once, more than a
                # quorum is built to survive.
                if down is None and all(node.restored() for node in cluster.nodes.values()):
                    down = rng.choice(names)
                    unsettled += cluster.nodes[down].proposer.unsettled_reads
                    overflows += _overflows(cluster.nodes[down])
                    cluster.crash(down)
                    for client in everyone:
                        _lost(client, down, history)
                elif down is not None:  # back, memory only: it loads from its peers
                    cluster.start(down)
                    _connect(cluster, down, everyone, level)
                    down = None
            running = [name for name in names if name != down]
            for client in everyone:
                if client.busy is None and client.left:
                    _start(cluster, client, rng, running, keys, net.seconds(), linear)
            net.advance(TICK)
            net.run()
            for client in everyone:
                if client.busy is not None:
                    _finish(client, history, net.seconds())
        else:
            raise AssertionError(f"seed {seed}: the clients never finished")
        net.heal()
        if down is not None:
            cluster.start(down)
        cluster.settle()
        replicas: Dict[str, Dict[bytes, bytes]] = {}
        for name, node in cluster.nodes.items():
            held = replicas[name] = {}
            for key in keys:
                value = node.store.get(key)
                if value is not None:
                    held[key] = value
        unsettled += sum(node.proposer.unsettled_reads for node in cluster.nodes.values())
        overflows += sum(_overflows(node) for node in cluster.nodes.values())
        return Recorded(history, replicas, tuple(keys), unsettled, tuple(underheld), overflows)
    finally:
        cluster.stop()


def _overflows(node: Any) -> int:
    return sum(link.outbox.overflows for link in node.replication.links.values())


def _check_held(cluster: SimulatedCluster, client: _Client, need: int,
                underheld: List[str], data: bytes) -> None:
    """The node begins to answer ``client`` with ``data``: if that answers a
    write as done, is the write on as many nodes as its level needs?"""
    busy, version = client.busy, client.wrote
    if busy is None or version is None or client.connections[busy[0]][1].value():
        return  # not a SET that ran at once, or its answer began before
    if data.startswith(b"+OK"):
        short = _short_of(cluster, busy[0], busy[2], version, need)
        if short is not None:
            underheld.append(short)


def _short_of(cluster: SimulatedCluster, node: str, key: bytes, version: Version,
              need: int) -> Optional[str]:
    """Whether a write of ``key`` at ``version`` that node ``node`` just
    answered OK is on fewer than ``need`` nodes (it or a newer entry of its
    key: a blind write may be run again above a newer one): how, if so."""
    holders = sorted(name for name, other in cluster.nodes.items()
                     if _at_least(other.store.entry(key), version))
    if len(holders) >= need:
        return None
    return (f"{node} answered a write of {key!r} (version {version}) OK when only "
            f"{holders} held it, fewer than the {need} its level needs")


def _at_least(entry: Optional[Entry], version: Version) -> bool:
    return entry is not None and version_of(entry) >= version


def _connect(cluster: SimulatedCluster, name: str, everyone: List[_Client],
             level: bytes) -> None:
    """Every client's connection to node ``name``, at ``level``."""
    for client in everyone:
        address = IPv4Address("TCP", "127.0.0.1", 20000 + client.number)
        proto = cluster.nodes[name].factory().buildProtocol(address)
        transport = _Transport(address, client)
        proto.makeConnection(transport)
        proto.dataReceived(resp(b"CONSISTENCY", level))
        client.connections[name] = (proto, transport)
    cluster.net.run()
    for client in everyone:
        client.connections[name][1].clear()


def _lost(client: _Client, name: str, history: List[Op]) -> None:
    """Node ``name`` crashed: a write waiting there is indeterminate, a read is lost."""
    busy = client.busy
    if busy is None or busy[0] != name:
        return
    client.busy = None
    _, kind, key, value, call = busy
    if kind != "get":
        history.append(Op(client.number, kind, key, _args(kind, value), call, None, UNKNOWN))


def _args(kind: str, value: Optional[bytes]) -> Tuple[object, ...]:
    if kind == "set":
        return (value,)
    if kind == "cas":
        return (None, value)
    if kind == "incr":
        return (1,)
    return ()


def _start(cluster: SimulatedCluster, client: _Client, rng: random.Random, names: List[str],
           keys: Sequence[bytes], now: float, linear: bool = False) -> None:
    node = rng.choice(names)
    key = rng.choice(keys)
    roll = rng.random()
    proto, transport = client.connections[node]
    transport.clear()
    client.left -= 1
    client.wrote = None
    if linear and client.writes and roll < 0.3:
        if roll < 0.15:
            client.busy = (node, "incr", key, None, now)
            proto.dataReceived(resp(b"INCR", key))
        else:
            client.made += 1
            value = b"c%d-%d" % (client.number, client.made)
            client.busy = (node, "cas", key, value, now)
            proto.dataReceived(resp(b"SET", key, value, b"NX"))
    elif not client.writes or roll < 0.5 + (0.15 if linear else 0):
        client.busy = (node, "get", key, None, now)
        proto.dataReceived(resp(b"GET", key))
    elif roll < 0.9:
        client.made += 1
        value = b"c%d-%d" % (client.number, client.made)
        client.busy = (node, "set", key, value, now)
        proto.dataReceived(resp(b"SET", key, value))
        entry = cluster.nodes[node].store.entry(key)
        if entry is not None and entry[0] == value:  # it ran at once (a blind write)
            client.wrote = version_of(entry)
    else:
        client.busy = (node, "delete", key, None, now)
        proto.dataReceived(resp(b"DEL", key))


def _finish(client: _Client, history: List[Op], now: float) -> None:
    """Record the client's request if it was answered."""
    assert client.busy is not None
    node, kind, key, value, call = client.busy
    reply = parse(bytes(client.connections[node][1].value()))
    if reply is None:
        return
    client.busy = None
    what, out = reply
    if what == "error":
        if kind == "incr" and str(out).startswith("ERR value is not an integer"):
            history.append(Op(client.number, kind, key, (1,), call, now, linearizable.NOT_INTEGER))
        elif kind != "get" and "indeterminate" in str(out):
            history.append(Op(client.number, kind, key, _args(kind, value), call, None, UNKNOWN))
        return  # a read not met, or a write refused before it ran: nothing happened
    if kind == "incr":
        history.append(Op(client.number, "incr", key, (1,), call, now, out))
    elif kind == "cas":
        history.append(Op(client.number, "cas", key, (None, value), call, now, what == "ok"))
    elif kind == "get":
        history.append(Op(client.number, "get", key, (), call, now, out))
    elif kind == "set":
        history.append(Op(client.number, "set", key, (value,), call, now, None))
    else:
        history.append(Op(client.number, "delete", key, (), call, now, out))


def check_linearizable(recorded: Recorded) -> List[str]:
    """What a LINEARIZABLE run breaks: linearizability, or replicas that disagree."""
    found = list(recorded.underheld)
    found += [f.describe() for f in linearizable.check(recorded.history)]
    values = {name: held for name, held in recorded.replicas.items()}
    if len({tuple(sorted(held.items())) for held in values.values()}) > 1:
        found.append(f"replicas differ after the run: {values!r}")
    return found


def check(recorded: Recorded, linear: bool = False) -> List[str]:
    """Every promise ``recorded`` breaks, described; linearizability too if ``linear``."""
    history = recorded.history
    found = list(recorded.underheld)
    found += [v.describe() for v in sessions.read_your_writes(history)]
    found += [v.describe() for v in sessions.monotonic_reads(history)]
    found += [v.describe() for v in sessions.converged(history, recorded.replicas,
                                                       recorded.keys)]
    if linear:
        found += [f.describe() for f in linearizable.check(history)]
    return found


def main(argv: List[str]) -> int:
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 100
    level = argv[2].upper().encode() if len(argv) > 2 else b"QUORUM"
    sync = float(argv[3]) if len(argv) > 3 else 10.0
    bad = unsettled = 0
    for seed in range(first, first + count):
        if level == b"LINEARIZABLE":
            recorded = run(seed, level=level, sync_interval=sync)
            unsettled += recorded.unsettled_reads
            problems = check_linearizable(recorded)
        else:
            single = seed % 2 == 0
            small = seed % 3 == 2
            recorded = run(seed, level=level, writers=1 if single else None,
                           outbox_bytes=SMALL_OUTBOX if small else None,
                           keys=MANY_KEYS if small else (b"k0", b"k1"))
            problems = check(recorded, linear=single)
        if problems:
            bad += 1
            sys.stdout.write(f"seed {seed}: {len(problems)} problems\n" + "\n".join(problems) + "\n")
    extra = (f" ({unsettled} reads wrote back a value a majority agreed on but some member "
             "had not settled)" if level == b"LINEARIZABLE" else "")
    sys.stdout.write(f"{count} seeds from {first} at {level.decode()}: {bad} failed{extra}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
