"""Run DistKV clusters inside your own test suite.

Two kinds, both built from real :class:`~distkv.node.Node` objects:

* :class:`SimulatedCluster` runs every node in one process on a fake clock and
  a simulated network, so partitions, crashes, lost acknowledgements and
  clock skew are deterministic: nothing happens until you call
  :meth:`SimulatedCluster.run` or :meth:`SimulatedCluster.advance`.
* :func:`start_local_cluster` starts nodes on real loopback ports with the
  running reactor, for tests that talk to DistKV over real sockets (from
  pytest-twisted or trial).

This is the only module that imports ``twisted.test.iosim``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IConnector, IListeningPort
from twisted.internet.protocol import ClientFactory, Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from distkv.node import Node
from distkv.store.entries import Entry

#: ``SimulatedCluster.start``'s default: the node's own data dir, if any.
_OWN_DIR: Any = object()


@implementer(IConnector)
class _Connector:
    """An IConnector for the simulated network; ``connect`` queues an attempt."""

    def __init__(self, net: SimulatedNetwork, host: str, port: int, factory: ClientFactory):
        self.net = net
        self.host = host
        self.port = port
        self.factory = factory
        self.state = "disconnected"
        self.connection: Optional[_Connection] = None

    def connect(self) -> None:
        self.state = "connecting"
        self.net._attempts.append(self)
        self.factory.startedConnecting(self)

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise error.NotConnectingError()
        self.net._attempts.remove(self)
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, Failure(error.UserError()))

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.transports[0].loseConnection()
        elif self.state == "connecting":
            self.stopConnecting()

    def getDestination(self) -> IPv4Address:
        return IPv4Address("TCP", self.host, self.port)


class _Connection:
    """One simulated TCP connection between two nodes."""

    def __init__(self, connector: _Connector, client_node: str, server_node: str,
                 pump: iosim.IOPump):
        self.connector = connector
        self.nodes = (client_node, server_node)
        self.pump = pump
        self.transports = (pump.clientIO, pump.serverIO)
        self.closed = False
        #: Until this time (the network's clock) no byte moves either way.
        self.held_until = 0.0

    def step(self) -> bool:
        if self.held_until > self.pump.clock.seconds():
            return False
        moved = bool(self.pump.pump(advanceClock=False))
        if not self.closed and self.pump.clientIO.disconnected and self.pump.serverIO.disconnected:
            self._closed(error.ConnectionDone())
        return moved

    def cut(self, deliver_from: Optional[str] = None) -> None:
        """Break the connection; bytes still in flight are lost, but for those
        the node ``deliver_from`` wrote, which arrive first."""
        if self.closed:
            return
        client, server = self.pump.clientIO, self.pump.serverIO
        if deliver_from is not None and deliver_from in self.nodes:
            sender, receiver = (client, server) if deliver_from == self.nodes[0] else (server, client)
            data = sender.getOutBuffer()
            if data:
                receiver.bufferReceived(data)
        client.stream, server.stream = [], []
        for transport in (client, server):
            transport.disconnecting = transport.disconnected = True
            transport.disconnectReason = error.ConnectionLost()
            transport.reportDisconnect()
        self._closed(error.ConnectionLost())

    def _closed(self, reason: Exception) -> None:
        self.closed = True
        connector = self.connector
        connector.connection = None
        connector.state = "disconnected"
        connector.factory.clientConnectionLost(connector, Failure(reason))


class SimulatedNetwork(MemoryReactorClock):
    """A fake reactor whose TCP connections join nodes in the same process.

    Each node registers its port with :meth:`attach`. A connection attempt
    succeeds when the target is attached and no partition separates the two
    nodes, and fails with "connection refused" otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self._servers: Dict[int, Tuple[str, Factory]] = {}
        self._attempts: List[_Connector] = []
        self.connections: List[_Connection] = []
        self._blocked: Set[Tuple[str, str]] = set()
        self._aliases: Dict[str, str] = {}

    def alias(self, node_id: str, name: str) -> None:
        """Treat a node that calls itself ``node_id`` as ``name`` in blocks
        and cuts (a node restarted under a fresh id keeps its slot's name)."""
        self._aliases[node_id] = name

    def attach(self, node_id: str, port: int, factory: Factory) -> None:
        self._servers[port] = (node_id, factory)

    def detach(self, port: int) -> None:
        self._servers.pop(port, None)

    def connectTCP(self, host: str, port: int, factory: ClientFactory,  # type: ignore[override]
                   timeout: float = 30, bindAddress: Any = None) -> _Connector:
        connector = _Connector(self, host, port, factory)
        connector.connect()
        return connector

    def block(self, a: str, b: str, oneway: bool = False) -> None:
        """Partition nodes ``a`` and ``b``: cut their connections, refuse new ones.

        ``oneway``: only ``a`` is cut off from ``b``: connections ``a`` dialled
        to ``b`` are cut and refused, while ``b`` may still dial ``a`` (TCP
        carries both ways once connected, so the link ``b`` dialled still works).
        """
        if oneway:
            self._blocked.add((a, b))
            for connection in list(self.connections):
                if connection.nodes == (a, b):
                    connection.cut()
            return
        self._blocked.update([(a, b), (b, a)])
        self.cut(a, b)

    def unblock(self, a: str, b: str) -> None:
        self._blocked.difference_update([(a, b), (b, a)])

    def heal(self) -> None:
        """Lift every block and every stall."""
        self._blocked.clear()
        for connection in self.connections:
            connection.held_until = 0.0

    def stall(self, a: str, b: str, seconds: float) -> None:
        """Hold every byte on the connections between ``a`` and ``b`` for
        ``seconds``: nothing is lost, and within a connection order is kept,
        but other connections deliver meanwhile."""
        until = self.seconds() + seconds
        for connection in self.connections:
            if set(connection.nodes) == {a, b}:
                connection.held_until = max(connection.held_until, until)

    def cut(self, a: str, b: str, deliver_from: Optional[str] = None) -> None:
        """Break every connection between ``a`` and ``b`` (they may reconnect);
        what ``deliver_from`` wrote still arrives."""
        for connection in list(self.connections):
            if set(connection.nodes) == {a, b} or (a == b and a in connection.nodes):
                connection.cut(deliver_from)

    def isolate(self, node_id: str) -> None:
        """Cut every connection that touches ``node_id``."""
        for connection in list(self.connections):
            if node_id in connection.nodes:
                connection.cut()

    def _complete(self, connector: _Connector) -> None:
        client_node = getattr(getattr(connector.factory, "local", None), "node", "?")
        client_node = self._aliases.get(client_node, client_node)
        target = self._servers.get(connector.port)
        if target is None or (client_node, target[0]) in self._blocked:
            connector.state = "disconnected"
            connector.factory.clientConnectionFailed(
                connector, Failure(error.ConnectionRefusedError())
            )
            return
        server_node, server_factory = target
        client_address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.connections))
        server_address = IPv4Address("TCP", "127.0.0.1", connector.port)
        client = connector.factory.buildProtocol(server_address)
        server = server_factory.buildProtocol(client_address)
        client_io = iosim.FakeTransport(client, False, client_address, server_address)
        server_io = iosim.FakeTransport(server, True, server_address, client_address)
        pump = iosim.connect(server, server_io, client, client_io, greet=False, clock=self)
        connection = _Connection(connector, client_node, server_node, pump)
        connector.state = "connected"
        connector.connection = connection
        self.connections.append(connection)

    def run(self, limit: int = 100_000) -> None:
        """Deliver attempts and bytes until the network is quiet."""
        for _ in range(limit):
            self.advance(0)
            busy = False
            while self._attempts:
                self._complete(self._attempts.pop(0))
                busy = True
            for connection in list(self.connections):
                if connection.closed:
                    self.connections.remove(connection)
                    continue
                busy = connection.step() or busy
            self.connections = [c for c in self.connections if not c.closed]
            if not busy:
                return
        raise AssertionError("the simulated network never went quiet")

    def advance_by(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass in ``step`` increments, delivering as time goes."""
        self.run()
        elapsed = 0.0
        while elapsed < seconds:
            self.advance(step)
            elapsed += step
            self.run()


class SimulatedCluster:
    """Nodes ``n1``..``nN`` on one :class:`SimulatedNetwork`, all peered.

    ``node_options`` go to every :class:`~distkv.node.Node`; ``skew_ms`` maps
    a node id to how far its wall clock is off. With ``data_root`` each node
    keeps its data in ``data_root/<node id>``, so a crashed node restarts
    from what it had committed; ``data_dirs`` names a node's data dir
    instead (None: memory only). Every node lists every other in its peers,
    but for the pairs ``(a, b)`` in ``unlisted``: ``a`` leaves ``b`` out.
    ``secrets`` gives a node its own ``cluster_secret`` (None: none), in
    place of the one in ``node_options``.
    """

    def __init__(self, size: int = 3, skew_ms: Optional[Dict[str, int]] = None,
                 data_root: Optional[str] = None,
                 data_dirs: Optional[Dict[str, Optional[str]]] = None,
                 unlisted: Iterable[Tuple[str, str]] = (),
                 secrets: Optional[Dict[str, Optional[bytes]]] = None,
                 **node_options: Any) -> None:
        self.data_root = data_root
        self._secrets = dict(secrets or {})
        #: ``(a, b)``: ``a``'s peer list leaves ``b`` out (b may still list a).
        self.unlisted = set(unlisted)
        self.net = SimulatedNetwork()
        self.net.advance(1_700_000_000)  # a plausible wall clock
        self._skew = dict(skew_ms or {})
        self._options = node_options
        self.ports = {f"n{i + 1}": 7000 + i for i in range(size)}
        #: A node's own peer list, when it is not every other node's (see :meth:`join`).
        self.peer_lists: Dict[str, List[str]] = {}
        self.nodes: Dict[str, Node] = {}
        dirs = data_dirs or {}
        for node_id in self.ports:
            self.start(node_id, dirs.get(node_id, _OWN_DIR))
        self.net.run()

    def _make(self, node_id: str, data_dir: Any = _OWN_DIR, skew_ms: Optional[int] = None,
              new_id: Optional[str] = None) -> Node:
        if skew_ms is not None:
            self._skew[node_id] = skew_ms
        skew = self._skew.get(node_id, 0)
        net = self.net
        options = dict(self._options)
        if data_dir is _OWN_DIR:
            if self.data_root is not None:
                options["data_dir"] = os.path.join(self.data_root, node_id)
        elif data_dir is not None:
            options["data_dir"] = data_dir
        if node_id in self._secrets:
            options["cluster_secret"] = self._secrets[node_id]
        if new_id is not None:
            net.alias(new_id, node_id)
        node = Node(
            net,
            new_id or node_id,
            listen_port=self.ports[node_id],
            now_ms=lambda: int(net.seconds() * 1000) + skew,
            **options,
        )
        listed = self.peer_lists.get(node_id, list(self.ports))
        for other in listed:
            if other != node_id and (node_id, other) not in self.unlisted:
                node.add_peer("127.0.0.1", self.ports[other])
        return node

    def start(self, node_id: str, data_dir: Any = _OWN_DIR, skew_ms: Optional[int] = None,
              new_id: Optional[str] = None) -> Node:
        """Start (or restart: empty, or from its data dir) the node ``node_id``.

        By default it uses its own data dir (with ``data_root``) or none;
        ``data_dir`` names another (say, an older copy of its own), or None for
        memory only. ``skew_ms`` changes its clock's skew from now on, and
        ``new_id`` starts it under a fresh node id in the same slot (same port,
        and still ``node_id`` for blocks and cuts).
        """
        node = self._make(node_id, data_dir, skew_ms, new_id)
        self.nodes[node_id] = node
        self.net.attach(node_id, self.ports[node_id], node.factory())
        node.start()
        return node

    def join(self, node_id: str, via: Iterable[str], data_dir: Any = _OWN_DIR,
             skew_ms: Optional[int] = None) -> Node:
        """Start a new node ``node_id`` on a port of its own whose peer list
        names only ``via`` (say, one member): it joins the running cluster."""
        self.ports[node_id] = max(self.ports.values(), default=6999) + 1
        self.peer_lists[node_id] = list(via)
        return self.start(node_id, data_dir, skew_ms)

    def crash(self, node_id: str) -> None:
        """Kill a node at once: connections cut, timers stopped, memory gone,
        and nothing more committed to its data dir."""
        node = self.nodes.pop(node_id)
        self.net.detach(self.ports[node_id])
        node.crash()
        self.net.isolate(node_id)

    def run(self) -> None:
        self.net.run()

    def advance(self, seconds: float) -> None:
        self.net.advance_by(seconds)

    def settle(self) -> None:
        """Long enough for every link to reconnect and drain."""
        self.net.advance_by(30.0, step=0.5)

    def snapshots(self) -> Dict[str, Dict[bytes, Entry]]:
        return {node_id: node.store.snapshot() for node_id, node in self.nodes.items()}

    def converged(self) -> bool:
        """True when every running node holds exactly the same entries."""
        snaps = list(self.snapshots().values())
        return all(snap == snaps[0] for snap in snaps[1:])

    def stop(self) -> None:
        """Stop every node cleanly; afterwards no delayed call is left."""
        stopping = [node.stop() for node in self.nodes.values()]
        done: List[object] = []
        gatherResults(stopping).addBoth(done.append)
        self.net.advance_by(10.0, step=0.5)
        assert done, "nodes did not stop"


class LocalCluster:
    """Nodes on real loopback ports (see :func:`start_local_cluster`)."""

    def __init__(self, nodes: List[Node], ports: List[IListeningPort]) -> None:
        self.nodes = nodes
        self._ports = ports

    @property
    def addresses(self) -> List[Tuple[str, int]]:
        return [("127.0.0.1", _port_number(port)) for port in self._ports]

    @inlineCallbacks
    def stop(self) -> Any:
        yield gatherResults([node.stop() for node in self.nodes])
        yield gatherResults([maybeDeferred(port.stopListening) for port in self._ports])


@inlineCallbacks
def start_local_cluster(reactor: Any, size: int = 3, **node_options: Any) -> Any:
    """Start ``size`` peered nodes on free loopback ports; fires a LocalCluster
    once every node has finished loading and serves.

    Call ``yield cluster.stop()`` when done. ``node_options`` go to every
    :class:`~distkv.node.Node` (for example ``heartbeat=1.0``).
    """
    nodes: List[Node] = []
    ports: List[IListeningPort] = []
    for index in range(size):
        node = Node(reactor, f"local{index + 1}", **node_options)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            node.factory()
        )
        node.listen_port = _port_number(port)
        nodes.append(node)
        ports.append(port)
    for node in nodes:
        for port in ports:
            node.add_peer("127.0.0.1", _port_number(port))
        node.start()
    # Nodes start empty, so each loads from a peer first: wait until all serve.
    yield wait_for(reactor, lambda: not any(node.loading for node in nodes), timeout=30)
    return LocalCluster(nodes, ports)


def _port_number(port: IListeningPort) -> int:
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def identical(nodes: Iterable[Node]) -> bool:
    """True when the given nodes hold exactly the same entries."""
    snaps = [node.store.snapshot() for node in nodes]
    return all(snap == snaps[0] for snap in snaps[1:])


def wait_for(reactor: Any, condition: Any, timeout: float = 10.0, interval: float = 0.01) -> Deferred[None]:
    """Fire when ``condition()`` is true; fail with TimeoutError after ``timeout``."""
    from twisted.internet.task import deferLater

    started = reactor.seconds()

    @inlineCallbacks
    def poll() -> Any:
        while not condition():
            if reactor.seconds() - started > timeout:
                raise TimeoutError(f"condition not met within {timeout}s")
            yield deferLater(reactor, interval, lambda: None)

    return poll()  # type: ignore[no-any-return]
