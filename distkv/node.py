"""One DistKV node: its identity, store, clock, command layer and replication.

:class:`Node` puts the pieces together around an injected reactor, so the same
node runs under ``twistd`` on the real reactor and inside a test on a fake
clock. It decides which peer entries are this node itself, answers peer
handshakes, and reports its state for the STATUS command. Who the members are
is the member list's business (:mod:`distkv.cluster.membership`, put to work
over the links by :mod:`distkv.cluster.memberlinks`); the node feeds it what
the links see and asks it whom to count.

With a data dir the node loads its data, its clock's high-water mark and each
peer's unacknowledged writes from :mod:`distkv.disk.datafile` before it serves, and
answers writes only once :mod:`distkv.disk.journal` has committed them. A node with
peers starts *loading* and refuses data commands until it knows its data is
current: until a serving peer has completed an anti-entropy round into it
(it may have missed writes, deletes among them, while it was down). A node
that learns it holds fewer of its own writes than a peer has applied (it was
restored from an older copy of its data dir) loads again, whenever that
happens, until a serving peer has synced it and a
round of its own has had a peer's horizon (which drops what was deleted and
purged meanwhile). When no peer serves because the whole cluster is
starting, a node serves once every node that it, or a peer that synced it,
knows of has completed a round into it: it then holds everything any of them
held. After ``loading_wait`` seconds the node serves anyway.

With ``tls`` (:mod:`distkv.cluster.tlsconfig`) the node also listens with TLS,
for the same clients and peers; with a CA in it, peers are dialled over
mutual TLS and a peer handshake is admitted only over TLS whose client
certificate verifies against the CA.

Every ``heartbeat`` seconds the node purges the tombstones below the cluster's
stable horizon (:mod:`distkv.cluster.stability`), held a further ``tombstone_grace``
seconds behind the wall clock.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from distkv.cluster import paxoswire, wire
from distkv.cluster.acceptor import Acceptor as ConsensusAcceptor
from distkv.cluster.antientropy import answer_frames
from distkv.cluster.consensus import Proposer
from distkv.cluster.goodreplicas import good_replicas
from distkv.cluster.handshake import PeerAuth
from distkv.cluster.memberlinks import MemberLinks
from distkv.cluster.membership import Member, Membership
from distkv.cluster.peerproto import Acceptor, PeerConnection, Refusal
from distkv.cluster.peers import PeerLink
from distkv.cluster.quorum import ONE, Coordinator
from distkv.cluster.replication import LOCAL_HOSTS, Replication
from distkv.cluster.skew import SkewGuard
from distkv.cluster.stability import Stability
from distkv.cluster.tlsconfig import PeerGate, TlsConfig
from distkv.disk.datafile import Disk, DiskError, Loaded, PeerState
from distkv.disk.journal import Batch, Journal
from distkv.disk.loader import CollectorPause, DataLoad
from distkv.expiry import ActiveExpiry
from distkv.front import report
from distkv.front.auth import Accounts, User
from distkv.front.backupcmd import Backups
from distkv.front.commands import Dispatcher
from distkv.front.frontdoor import FrontDoorFactory, bound_address, one_interface
from distkv.front.replcmds import NOREPLICAS, Replicas
from distkv.front.replies import READING, Error, Stats
from distkv.front.replyqueue import OutputLimits
from distkv.front.resp import RespProtocol
from distkv.front.servercmds import ClusterControl
from distkv.front.textproto import TextProtocol
from distkv.shutdown import stop_process
from distkv.store import digest
from distkv.store.entries import ZERO, Entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store

log = Logger()

#: Entries the digest takes in per reactor turn once a data dir is read.
FOLD_STEP = 8192


class Listener(StreamServerEndpointService):
    """The client-and-peer port; a port that cannot be opened stops the node plainly."""

    def privilegedStartService(self) -> None:
        self._raiseSynchronously = True
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            log.critical("Cannot listen for clients and peers: {why}", why=e)
            raise SystemExit(1) from None


def new_node_id() -> str:
    return "n" + uuid.uuid4().hex[:11]


class NodeService(MultiService):
    """The node's services; the journal closes only after everything else stopped,
    so writes that peers deliver while links flush are still committed."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.journal = node.journal
        #: The log observer twistd is to use (``--log-format json``), or None
        #: for twistd's own.
        self.log_observer: Optional[ILogObserver] = None

    def setServiceParent(self, parent: Any) -> None:
        # twistd makes the application, hands it to us here, and then starts
        # its log with the application's log observer, if it has one.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        node = self.node
        if node.data_load is None:
            if self.journal is not None:
                self.journal.startService()
            super().startService()
            node.started()
            return
        # The data dir is read in steps: listen at once (answering LOADING),
        # and link to peers only once the data is all here.
        Service.startService(self)
        for service in self:
            if service is not node.replication:
                service.startService()
        node.load_data(self._data_read, self._data_unreadable)

    def _data_read(self) -> None:
        node = self.node
        self.journal = node.journal  # started by the node once it read its data
        node.replication.startService()
        node.started()

    def _data_unreadable(self, why: str) -> None:
        log.critical("Cannot read the data dir: {why}", why=why)
        stop_process(self.node.reactor, 1)

    def stopService(self) -> Deferred[object]:
        node = self.node
        node.stop_timers()
        if node.cancel_load():
            # Stopped before linking to peers: stop what runs (the listener),
            # then the journal if the data was read.
            Service.stopService(self)
            running = [service for service in reversed(list(self)) if service.running]
            done: Deferred[object] = DeferredList(  # type: ignore[assignment]
                [maybeDeferred(service.stopService) for service in running])
            return node.close_journal_after(done)
        stopped: Deferred[object] = super().stopService()  # type: ignore[assignment]
        return node.close_journal_after(stopped)


class Node:
    """A DistKV node, wired around ``reactor``.

    ``now_ms`` overrides the wall clock (tests use it to skew one node).
    ``users`` are the clients that may log in (see :mod:`distkv.front.auth`);
    None: no password is required. With ``protected_mode`` the node refuses
    clients from other machines while it requires no password and listens on
    every interface, and peers from other machines unless
    ``peers_authenticated`` (see :mod:`distkv.front.frontdoor`).
    With ``cluster_secret`` only peers that prove the same secret are
    admitted, and peer links carry authenticated records (see
    :mod:`distkv.cluster.handshake`).
    """

    def __init__(
        self,
        reactor: Any,
        node_id: Optional[str] = None,
        *,
        listen_port: Optional[int] = None,
        max_request: int = 1 << 20,
        outbox_bytes: int = 64 << 20,
        max_clock_skew: float = 60.0,
        heartbeat: float = 5.0,
        flush_timeout: float = 2.0,
        sync_interval: float = 60.0,
        data_dir: Optional[str] = None,
        fsync: str = "everysec",
        loading_wait: float = 30.0,
        tombstone_grace: float = 600.0,
        now_ms: Optional[Callable[[], int]] = None,
        client_output_limits: Optional[OutputLimits] = None,
        maxclients: int = 10000,
        users: Optional[Mapping[bytes, User]] = None,
        protected_mode: bool = False,
        peers_authenticated: bool = False,
        cluster_secret: Optional[bytes] = None,
        tls: Optional[TlsConfig] = None,
        advertise_host: str = "",
        advertise_port: Optional[int] = None,
        default_id: Optional[str] = None,
        min_replicas_to_write: int = 0,
        min_replicas_max_lag: float = 10.0,
        load_in_steps: bool = False,
        write_level: str = ONE,
        read_level: str = ONE,
        quorum_timeout: float = 1.0,
    ) -> None:
        self.reactor = reactor
        #: The TLS settings: a TLS listener, and with a CA, peer links over mutual TLS only.
        self.tls = tls
        self.peer_gate = PeerGate(tls, reactor.seconds) if tls is not None else None
        self.maxclients = maxclients
        self.protected_mode = protected_mode
        #: Whether peers prove who they are (a cluster secret, peer TLS):
        #: protected mode then lets peers from other machines in.
        self.peers_authenticated = (peers_authenticated or cluster_secret is not None
                                    or (tls is not None and tls.peer_tls))
        #: The front door factory last built (see :meth:`factory`).
        self.door: Optional[FrontDoorFactory] = None
        disk = None
        if data_dir is not None:
            disk = Disk(data_dir, fsync)  # DiskError: the caller reports it
            try:
                node_id = disk.claim(node_id, default_id or new_node_id())
            except BaseException:
                disk.close()  # let the data dir go: this node will not run
                raise
        self.node_id = node_id or default_id or new_node_id()
        self.advertise_host = advertise_host
        self.advertise_port = advertise_port
        self.incarnation = uuid.uuid4().hex[:16]
        self.listen_port = listen_port
        self.max_request = max_request
        self.client_output_limits = client_output_limits or OutputLimits(
            hard=max(OutputLimits().hard, max_request + (64 << 10))
        )
        self.hello = wire.Hello(self.node_id, self.incarnation)
        # The port callers are matched by (see Replication.accepted): where
        # peers reach this node, which is --advertise's port behind NAT or a proxy.
        self.greeting = wire.Greeting(
            self.hello, advertise_port if advertise_port is not None else listen_port)
        self.peer_auth = PeerAuth(cluster_secret, self.node_id, reactor.seconds)
        if now_ms is None:
            seconds = reactor.seconds  # one call per stamp, on every write

            def now_ms() -> int:
                return int(seconds() * 1000)

        self._now_ms = now_ms
        self.tombstone_grace = tombstone_grace
        self.heartbeat = heartbeat
        self.stability = Stability()
        #: node id -> the highest sequence number of its own writes applied here
        self.seen: Dict[str, int] = {}
        #: Why the node is loading (see start_loading), or None while it serves.
        self.loading_why: Optional[str] = None
        self._loading_deadline = 0.0
        self._loading_check: Optional[IDelayedCall] = None
        # The peers whose rounds completed into us since loading began, and
        # the members each said it knows (None: it could not tell).
        self._rounds_in: Dict[str, Optional[Tuple[str, ...]]] = {}
        # A stale node: the serving peer whose round synced it, and whether a
        # round of its own has had a peer's horizon since loading began.
        self._served_by: Optional[str] = None
        self._own_round_cut = False
        self._purge_loop: Optional[LoopingCall] = None
        #: Writes are refused (NOREPLICAS) while fewer good replicas than
        #: this are linked (see :mod:`distkv.cluster.goodreplicas`); 0: never.
        self.min_replicas_to_write = min_replicas_to_write
        self.min_replicas_max_lag = min_replicas_max_lag
        self._replica_loop: Optional[LoopingCall] = None
        if not digest.PORTABLE:
            log.warn(
                "This interpreter hashes tuples unlike 64-bit CPython: anti-entropy will "
                "exchange every bucket's keys with other nodes on every round"
            )
        self.clock = HybridClock(self.node_id, now_ms, int(max_clock_skew * 1000))
        self.skew = SkewGuard(int(max_clock_skew * 1000), reactor.seconds, 4 * heartbeat)
        self._refusals_logged = 0
        self.store = Store(self.clock)
        #: Reclaims expired values nobody reads (see distkv.store.expiry).
        self.active_expiry = ActiveExpiry(self.store, reactor)
        self.journal: Optional[Journal] = None
        self.membership = Membership(self.node_id)
        #: Why this node takes no writes any more (it left the cluster), or None.
        self.left_why: Optional[str] = None
        self._saved_peers: Dict[str, PeerState] = {}
        self._unacked: List[Tuple[int, bytes, Entry]] = []
        #: The reading of the data dir while it goes on in steps (see
        #: :meth:`load_data`), else None.
        self.data_load: Optional[DataLoad] = None
        self._load_call: Optional[IDelayedCall] = None
        #: The collector a data dir's reading paused (see load_data).
        self._collector: Optional[CollectorPause] = None
        #: False from the start of a stepped read of the data dir until the
        #: digest has taken in everything read (see load_data).
        self.digest_ready = True
        self._started_empty = True
        if disk is not None:
            try:
                self.data_load = self._begin_data_dir(disk)
                if not load_in_steps:
                    self._data_read(self.data_load.run())
            except BaseException:
                disk.close()  # let the data dir go: this node will not run
                raise
        if disk is None:
            # A memory-only node restarted under its id numbers its writes
            # above anything its previous run handed out (which peers may
            # have applied and acknowledged): a base from the wall clock,
            # 2**20 numbers a millisecond. Peers' answers raise it further.
            self.store.seq = max(self.store.seq, int(reactor.seconds() * 1000) << 20)
        self.loading_wait = loading_wait
        self.replication = Replication(
            self.store,
            self.greeting,
            reactor,
            outbox_bytes,
            heartbeat=heartbeat,
            flush_timeout=flush_timeout,
            sync_interval=sync_interval,
            max_frame=wire.max_frame(max_request),
            peer_host=self,
            tls=tls.client if tls is not None else None,
        )
        self.store.on_flush(self._flushed)
        self.replication.on_new_link = self._hook_link
        self.replication.on_linked = self._peer_answered
        self.replication.on_dropped = self._link_dropped
        self.member_links = MemberLinks(
            self.membership, self.replication, self.add_peer, self.clock.now_above,
            reactor, flush_timeout,
        )
        self.member_links.on_gone = self._member_gone
        self.member_links.on_left = self._on_left
        self.apply = self.store.apply
        self.apply_all = self.store.apply_all
        self.started_at = reactor.seconds()
        self.data_dir = data_dir
        self.fsync = fsync
        self.dispatcher = Dispatcher(
            self.store,
            self.status_lines,
            None if self.journal is None else self.journal.durable,
            self.info_sections,
            Stats(self.started_at),
            Accounts(users, reactor.seconds),
            # A transaction's writes travel as one frame: no larger than
            # peers accept.
            max_transaction=wire.max_frame(max_request) - wire.TRANSACTION_FIXED,
        )
        self.replicas = self.dispatcher.replicas = Replicas(self.peers_holding, reactor)
        #: Waits for the members a consistency level needs (see distkv.cluster.quorum).
        self.quorum = Coordinator(self, reactor, quorum_timeout, wire.max_frame(max_request))
        #: LINEARIZABLE: this node's acceptor and proposer (see distkv.cluster.consensus).
        #: Restarted, it takes no ballot up to its start plus the skew it
        #: accepts (see started(); none at all before).
        self._ballot_floor = wire.MAX_SEQ
        self._max_skew_ms = int(max_clock_skew * 1000)
        self.acceptor = ConsensusAcceptor(self.store, self.clock.wall_ms,
                                          int(max_clock_skew * 1000), self.restored,
                                          self._acceptor_floor)
        self.proposer = Proposer(self, self.acceptor, self.clock, reactor, quorum_timeout)
        self.dispatcher.levels.proposer = self.proposer
        self.dispatcher.levels.use(self.quorum, read_level, write_level)
        self.dispatcher.cluster = ClusterControl(
            forget=self.member_links.forget,
            leave=self.member_links.leave,
            nodes=lambda: report.cluster_nodes(self),
            members=lambda: report.member_lines(self),
            myid=lambda: self.node_id,
        )
        if data_dir is not None:
            self.dispatcher.backups = Backups(lambda: self.journal, reactor)
        self.dispatcher.max_request = max_request
        self.dispatcher.seconds = reactor.seconds
        self.dispatcher.config.update({
            b"appendonly": b"yes" if data_dir else b"no",
            b"appendfsync": fsync.encode() if data_dir else b"no",
            b"dir": os.path.abspath(data_dir).encode() if data_dir else os.getcwd().encode(),
            b"maxmemory": b"0",
            b"port": str(listen_port or 0).encode(),
            b"proto-max-bulk-len": str(max_request).encode(),
            b"maxclients": str(maxclients).encode(),
            b"protected-mode": b"yes" if protected_mode else b"no",
            b"read-level": read_level.lower().encode(),
            b"write-level": write_level.lower().encode(),
            b"quorum-timeout": b"%g" % quorum_timeout,
        })
        #: node id -> when its last anti-entropy round into us completed
        self.synced_from: Dict[str, float] = {}
        self._restored = False  # see restored()

    def _begin_data_dir(self, disk: Disk) -> DataLoad:
        """What the data dir says before its entries are read, and the reading of them."""
        self._saved_peers = disk.peers()
        # A node that never had peers keeps no outbox to rebuild.
        lowest = min((p.acked for p in self._saved_peers.values()), default=None)
        # The flush floor first: nothing it flushed may come back in.
        self.store.restore_floor(disk.saved_floor())
        return DataLoad(disk, self.store, lowest, self.reactor.seconds())

    def _data_read(self, loaded: Loaded) -> None:
        """The data dir is read: restore the marks, open the journal."""
        assert self.data_load is not None
        disk = self.data_load.disk
        self.data_load = None
        self._started_empty = loaded.entries == 0
        self.clock.restore(loaded.clock_ms)
        # Never hand out a sequence number a peer may already have acknowledged.
        highest_acked = max((p.acked for p in self._saved_peers.values()), default=0)
        self.store.seq = max(self.store.seq, loaded.seq, highest_acked)
        self._unacked = loaded.unacked
        self.membership.merge(disk.members(), lambda above: above)
        self.journal = Journal(disk, self.store, self.clock, self.reactor)
        self.journal.owed = self._owed
        self.seen = self.journal.seen  # kept across restarts
        log.info(
            "Loaded {count} entries ({keys} keys) from {path}; fsync {fsync}",
            count=loaded.entries,
            keys=len(self.store),
            path=disk.path,
            fsync=disk.fsync,
        )

    def load_data(self, then: Callable[[], None], failed: Callable[[str], None],
                  budget: float = 0.02, pause: float = 0.0) -> None:
        """Read the data dir a step of about ``budget`` seconds per reactor
        turn (``pause`` seconds apart: a test steps a fake clock), answering
        LOADING to data commands and refusing peers meanwhile; then start the
        journal and serve clients (or, with peers, load until synced, see
        :meth:`start_loading`) while the digest takes in what was read, a part
        per turn; then call ``then``, which links to peers. ``failed`` is
        called instead, with the reason, when the data cannot be read."""
        load = self.data_load
        if load is None:
            then()
            return
        self.loading_why = "data dir"
        self.loading = True
        self.digest_ready = False
        self.dispatcher.hold(READING)

        # The collector stays paused until the digest has taken the data in:
        # its first collection then walks every entry read (a few hundred ms
        # for a million), and not before the node serves.
        load.resume_when_read = False
        self._collector = load.collector

        def fold() -> None:
            self._load_call = None
            if self.store.digest.fold_some(FOLD_STEP):
                self._load_call = self.reactor.callLater(pause, fold)
                return
            self.digest_ready = True
            load.collector.resume()
            then()

        def step() -> None:
            self._load_call = None
            try:
                finished = load.step(budget)
            except DiskError as e:
                self.data_load = None
                failed(str(e))
                return
            if not finished:
                self._load_call = self.reactor.callLater(pause, step)
                return
            assert load.result is not None
            self._data_read(load.result)
            journal = self.journal
            assert journal is not None
            journal.startService()
            self.dispatcher.persist_with(journal.durable)
            for link in self.replication.links.values():
                if link.dials:
                    self._journal_link(link, journal)
            self.loading_why = None
            self.loading = False
            self.start_loading()  # with peers: load until synced, as at any start
            self.dispatcher.release()
            fold()

        self._load_call = self.reactor.callLater(pause, step)

    def cancel_load(self) -> bool:
        """Stop reading the data dir, or folding it into the digest, and let
        the data dir go (a journal, if started, is the caller's to close):
        whether it was being read or folded (no peer was linked yet)."""
        load = self.data_load
        if load is None and self.digest_ready:
            return False
        self.data_load = None
        self.digest_ready = True
        if self._collector is not None:
            self._collector.resume()
        if self._load_call is not None and self._load_call.active():
            self._load_call.cancel()
        if load is not None:
            load.cancel()
            load.disk.close()
        return True

    def _durable(self) -> Optional[Batch]:
        return None if self.journal is None else self.journal.durable()

    @property
    def loading(self) -> bool:
        """True while data commands wait for a first sync from a peer (see start_loading)."""
        return self.dispatcher.loading

    @loading.setter
    def loading(self, value: bool) -> None:
        self.dispatcher.loading = value

    def add_peer(self, host: str, port: int) -> Optional[PeerLink]:
        """Link to a peer, unless the address is plainly this node's own.

        With a data dir, the writes this peer had not acknowledged before the
        last stop go back into its outbox.
        """
        if port == self.listen_port and host in LOCAL_HOSTS:
            log.info("Skipping peer {host}:{port}: it is this node", host=host, port=port)
            return None
        known = self.replication.links.get((host, port))
        if known is not None and known.dials:
            return known
        link = self.replication.add_peer(host, port)
        if self.journal is not None:
            self._journal_link(link, self.journal)
        return link

    def _journal_link(self, link: PeerLink, journal: Journal) -> None:
        """A dialled peer's outbox: rebuilt from the data dir, kept in it."""
        saved = self._saved_peers.get(link.name)
        acked = saved.acked if saved is not None else 0
        link.outbox.acked = acked
        self._resend(link, [item for item in self._unacked if item[0] > acked])

        def keep_acked(link: PeerLink) -> None:
            journal.peer_acked(
                link.name, link.outbox.acked, link.remote.node if link.remote else None
            )
            self._acked_by(link)

        link.on_acked = keep_acked
        # Recorded at once, so that a restart rebuilds this peer's outbox
        # even if it never acknowledged anything.
        link.on_acked(link)
        link.on_self = lambda link: journal.forget_peer(link.name)

    def _resend(self, link: PeerLink, unacked: List[Tuple[int, bytes, Entry]]) -> None:
        """Queue the writes a peer had not acknowledged before the last stop.

        Which of them formed a transaction is not on disk, so they go as
        transactions of as many writes as a frame holds, in order: a
        transaction among them arrives whole unless it straddles two such
        frames (the README says so).
        """
        limit = wire.max_frame(self.max_request)
        chunk: List[Tuple[bytes, Entry]] = []
        size = wire.TRANSACTION_FIXED
        last = 0
        for seq, key, entry in unacked:
            grown = size + wire.transaction_size([(key, entry)]) - wire.TRANSACTION_FIXED
            if chunk and grown > limit:
                link.send_group(last, chunk)
                chunk, grown = [], wire.transaction_size([(key, entry)])
            chunk.append((key, entry))
            size, last = grown, seq
        if chunk:
            link.send_group(last, chunk)

    def _hook_link(self, link: PeerLink) -> None:
        """What every link, dialling or answering, asks of the node."""
        link.our_low = self._our_low
        link.on_new_node = self._node_replaced
        link.serving = self._serving
        link.members = self.members
        link.on_round_cut = self._round_cut
        link.on_acked = self._acked_by

    def _acked_by(self, link: PeerLink) -> None:
        """A peer acknowledged our writes: WAITs and writes at a level may be answered."""
        self.replicas.changed()
        self.quorum.acked()

    # -- what the consistency levels need (see distkv.cluster.quorum) ----------

    def quorum_members(self) -> int:
        """The members, this node included; a peer address that never
        answered, naming no known node, counts as one."""
        others = set(self.membership.peers())
        unknown = sum(1 for link in self.replication.links.values()
                      if link.dials and link.remote is None and link.expect is None
                      and not link.is_self and link.refusal is None)
        return 1 + len(others) + unknown

    def member_senders(self) -> Dict[str, Callable[[bytes], None]]:
        """One live connection with each other member linked now."""
        senders: Dict[str, Callable[[bytes], None]] = {}
        is_member = self.membership.is_member
        for link in self.replication.links.values():
            remote = link.remote
            connections = link.connections()
            if remote is not None and connections and not link.is_self and is_member(remote.node):
                senders[remote.node] = connections[-1].send
        return senders

    def member_acks(self) -> List[int]:
        """For each other member linked, up to which sequence number it
        applied and committed our writes (the highest of its links')."""
        acked: Dict[str, int] = {}
        is_member = self.membership.is_member
        for link in self.replication.links.values():
            remote = link.remote
            if not link.is_self and remote is not None and is_member(remote.node):
                ack = link.outbox.vouched()
                if ack > acked.get(remote.node, -1):
                    acked[remote.node] = ack
        return list(acked.values())

    def local_entry(self, key: bytes) -> Optional[Entry]:
        return self.store.entry(key)

    def merge(self, key: bytes, entry: Entry) -> bool:
        return self.store.apply(key, entry)

    def read_answer(self, request: wire.ReadRequest) -> Iterator[bytes]:
        if not self.restored():  # our data may lack what a quorum acknowledged
            return iter([wire.encode_read_refusal(request.id)])
        entry = self.store.entry
        keys = request.keys
        if len(keys) == 1:  # the usual read
            held = entry(keys[0])
            found = [] if held is None else [(keys[0], held)]
        else:
            found = [(key, held) for key, held in ((key, entry(key)) for key in keys)
                     if held is not None]
        return wire.encode_read_reply(request.id, found, wire.max_frame(self.max_request))

    def read_answered(self, peer: wire.Hello, reply: wire.ReadReply) -> None:
        self.quorum.answered(peer.node, reply)

    # -- LINEARIZABLE's consensus (see distkv.cluster.consensus) -----------------

    def _acceptor_floor(self) -> int:
        """No ballot at or below this millisecond is taken: promises made
        before a restart are lost (a lone member has no other proposer)."""
        return 0 if self.quorum_members() == 1 else self._ballot_floor

    def restored(self) -> bool:
        """Whether this node holds every write a majority acknowledged (and
        every value a majority accepted) before it started: not while it
        loads, and, without a data dir (so without what it held before a
        restart), not until it has synced from enough members that one of
        any majority is among them. Until then the consistency levels do not
        count it (see :mod:`distkv.cluster.quorum`) and its acceptor does
        not answer: a node back empty that synced from one peer holds what
        that peer held, which may lack a write the node itself helped
        acknowledge."""
        if self.loading:
            return False
        if self.data_dir is not None or self._restored:
            return True
        size = self.quorum_members()
        wanted = min(size - 1, size - (size // 2 + 1) + 1)
        is_member = self.membership.is_member
        synced = sum(1 for node in self.synced_from if is_member(node))
        # Once true, for good: members that join later need nothing we lost.
        self._restored = synced >= wanted
        return self._restored

    def consensus_prepare(self, request: paxoswire.Prepare) -> bytes:
        """The ``p`` frame answering a peer's prepare."""
        status, seen, entry = self.acceptor.prepare(request.key, request.ballot)
        floor = self.store.flushed if status == paxoswire.OK else ZERO
        return paxoswire.encode_promise(request.id, status, seen, request.key, entry, floor)

    def consensus_accept(self, request: paxoswire.Accept, send: Callable[[bytes], None]) -> None:
        """Answer a peer's accept with ``send``, once what it stored is committed."""
        status, seen, _ = self.acceptor.accept(request.key, request.entry)
        batch = self._durable() if status == paxoswire.OK else None
        if batch is None:
            send(paxoswire.encode_accepted(request.id, status, seen))
            return

        def committed(error: Optional[str]) -> None:
            answer = paxoswire.OK if error is None else paxoswire.NOT_READY
            send(paxoswire.encode_accepted(request.id, answer))

        batch.when_done(committed)

    def consensus_answered(self, peer: wire.Hello,
                           answer: Union[paxoswire.Promise, paxoswire.Accepted]) -> None:
        if isinstance(answer, paxoswire.Promise):
            self.proposer.answered_prepare(peer.node, answer)
        else:
            self.proposer.answered_accept(peer.node, answer)

    def peers_holding(self, seq: int) -> int:
        """How many peers have applied and committed every write of ours up to
        ``seq`` (WAIT's count; see :mod:`distkv.front.replcmds`)."""
        nodes = set()
        for link in self.replication.links.values():
            if not link.is_self and link.remote is not None and link.outbox.vouched() >= seq:
                nodes.add(link.remote.node)
        return len(nodes)

    def _serving(self) -> bool:
        return not self.loading

    def _owed(self) -> Dict[bytes, int]:
        """Each key with a local write some peer has not acknowledged, and the
        highest such write's sequence number."""
        owed: Dict[bytes, int] = {}
        for link in self.replication.links.values():
            for key, seq in link.outbox.owed():
                if seq > owed.get(key, 0):
                    owed[key] = seq
        return owed

    def members(self) -> Optional[List[str]]:
        """The other members (see :class:`~distkv.cluster.memberlinks.MemberLinks`);
        None while a peer address never answered."""
        return self.member_links.members()

    def _save_members(self, entries: List[Member]) -> None:
        alone = all(m.node == self.node_id and m.state == "member" for m in entries)
        if self.journal is not None and not alone:  # alone, it is made anew at start
            self.journal.save_members(entries)

    def _link_dropped(self, link: PeerLink) -> None:
        """A link closed for good keeps no outbox state in the data dir."""
        if self.journal is not None and link.dials:
            self.journal.forget_peer(link.name)

    def _member_gone(self, node: str) -> None:
        """``node`` is no member any more: nothing waits for it."""
        self.stability.forget(node)
        self.skew.forget(node)
        self.synced_from.pop(node, None)
        self._rounds_in.pop(node, None)
        if self.loading_why is not None:
            self._schedule_loading_check(0)

    def _on_left(self, why: str) -> None:
        self.dispatcher.write_refusal = Error(
            f"ERR {why}: it takes no writes (see LEAVE in the README)")
        self.left_why = why

    def _our_low(self) -> Version:
        return self.stability.low(self.members())

    def _node_replaced(self, old: str, new: str) -> None:
        self.stability.forget(old)
        self.skew.forget(old)
        self.synced_from.pop(old, None)
        self.member_links.replaced(old, new)

    def wall_ms(self) -> int:
        return self._now_ms()

    def clock_reading(self, peer: wire.Hello, sent_ms: int, reading_ms: int) -> None:
        # A peer's fresh reading keeps the clocks together (a slow wall clock
        # stamps above it), and tells how far ahead of that peer we are at least.
        self.clock.observe(Version(reading_ms, 0, ""), count=False)
        # Our writes are stamped by the hybrid clock, which may run ahead of
        # the wall clock: that is what a peer compares with its own.
        self.skew.reading(peer.node, max(sent_ms, self.clock.high_water()) - reading_ms)
        self._check_clock()

    def _check_clock(self) -> None:
        """Refuse writes while our clock is too far ahead of a peer's for them to replicate."""
        if self.left_why is not None:
            return  # refuses writes for good
        worst = self.skew.too_far_ahead()
        dispatcher = self.dispatcher
        if worst is not None and dispatcher.write_refusal is None:
            peer, ahead = worst
            limit = self.skew.max_skew_ms / 1000
            dispatcher.write_refusal = Error(
                f"CLOCKSKEW this node's clock is at least {ahead / 1000:.1f}s ahead of peer "
                f"{peer}'s, past --max-clock-skew {limit:g}s: writes are refused until the "
                "clocks agree (check NTP)"
            )
            log.critical(
                "This node's clock is at least {ahead:.1f}s ahead of peer {peer}'s, past "
                "--max-clock-skew {limit:g}s: peers would refuse our writes, so this node "
                "refuses writes until the clocks agree. Check NTP on both machines.",
                ahead=ahead / 1000,
                peer=peer,
                limit=limit,
            )
        elif (worst is None and dispatcher.write_refusal is not None
              and dispatcher.write_refusal is not NOREPLICAS):
            dispatcher.write_refusal = None
            log.info("This node's clock agrees with its peers' again; writes accepted")

    def _report_refusals(self) -> None:
        """Log, once per heartbeat at most, writes refused for versions from the future."""
        refused = self.clock.refused
        if refused > self._refusals_logged:
            log.error(
                "Refused {count} replicated writes whose versions lie more than "
                "--max-clock-skew ahead of this node's clock ({total} in all): a peer's "
                "clock runs ahead (it should refuse writes itself: see its log)",
                count=refused - self._refusals_logged,
                total=refused,
            )
            self._refusals_logged = refused

    def heard(self, peer: wire.Hello, floor: Version, low: Version) -> None:
        self.clock.observe(floor, count=False)  # a peer's fresh stamp: keeps the clocks together
        self.stability.heard(peer.node, floor, low)

    def applied(self, peer: wire.Hello, seq: int) -> None:
        if self.journal is not None:
            self.journal.note_seen(peer.node, seq)
        elif seq > self.seen.get(peer.node, 0):
            self.seen[peer.node] = seq

    def _tick(self) -> None:
        """Every heartbeat: purge, recheck the clock, report refused writes."""
        try:
            self.purge()
            self._check_clock()
            self._report_refusals()
        except Exception:
            log.failure("The node's periodic check failed")

    def purge(self) -> int:
        """Purge the tombstones every node has and that are past the grace period."""
        horizon = self.stability.horizon(self.members())
        cutoff = Version(self._now_ms() - int(self.tombstone_grace * 1000), 0, "")
        return self.store.purge(min(horizon, cutoff))

    def _load(self, why: str) -> None:
        """Refuse data commands until a serving peer shows our data is current."""
        if self.loading_why is None:
            self._loading_deadline = self.reactor.seconds() + self.loading_wait
            self._rounds_in = {}
            self._served_by = None
            self._own_round_cut = False
            self.loading = True
            self._schedule_loading_check(0)
        self.loading_why = why

    def _serve(self, why: str) -> None:
        if self.loading_why is None:
            return
        self.loading_why = None
        self.loading = False
        log.info("Loading done ({why}); serving", why=why)
        self._tell_peers()

    def _tell_peers(self) -> None:
        """Peers our last rounds told we load, or could not name our members,
        get a round that says otherwise (one of them may wait for it)."""
        if self.loading_why is None or self.members() is not None:
            for link in self.replication.links.values():
                link.tell_again()

    def _round_cut(self, link: PeerLink) -> None:
        """One of our rounds has the peer's horizon: keys deleted and purged
        while our data was elsewhere are dropped by now."""
        if self.loading_why is not None:
            self._own_round_cut = True
            if self._served_by is not None:
                self._serve(f"synced from serving peer {self._served_by}, "
                            "and our own round dropped what it had purged")

    def _check_loading(self) -> None:
        """Every quarter second while loading: stop once alone, once every
        peer synced us, or out of patience (a serving peer ends it sooner)."""
        if self.loading_why is None:
            return
        if self.reactor.seconds() >= self._loading_deadline:
            self._serve(f"no serving peer synced us within {self.loading_wait:g}s; serving anyway")
        elif not self._serve_if_all_synced():
            self._schedule_loading_check(0.25)

    def _schedule_loading_check(self, delay: float) -> None:
        call = self._loading_check
        if call is None or not call.active():
            self._loading_check = self.reactor.callLater(delay, self._check_loading)

    def _serve_if_all_synced(self) -> bool:
        """Serve when alone, or when no node serves and every node that we or
        any peer that synced us know of has synced us: the cluster is starting,
        and we hold everything any of them held."""
        links = [link for link in self.replication.links.values()
                 if link.dials and not link.is_self]
        if not links:
            self._serve("no peers to sync from")
            return True
        known = self.members()
        if known is None or not self._rounds_in:
            return False
        wanted = set(known)
        for theirs in self._rounds_in.values():
            if theirs is None:
                return False  # that peer has an address it never reached
            wanted.update(theirs)
        wanted.discard(self.node_id)
        # A peer's round may name a node removed or replaced since.
        wanted = {node for node in wanted if not self._no_longer_member(node)}
        if wanted <= self._rounds_in.keys():
            self._serve("no node serves, and every node we know of has synced us")
        return self.loading_why is None

    def _no_longer_member(self, node: str) -> bool:
        entry = self.membership.get(node)
        return entry is not None and entry.state != "member"

    def _peer_answered(self, link: PeerLink, remote: wire.Hello,
                       accept: Optional[wire.Accept]) -> None:
        """A peer linked: we may know every member now; and, when we dialled,
        has it applied more of our writes than we hold?"""
        self.member_links.linked(link, remote)
        self._tell_peers()
        self.quorum.linked()  # a blind write's fetch may wait for it
        if accept is None:
            return
        if accept.seen > self.store.seq:
            if self.loading_why != "empty":  # an empty start knows it lacks them
                log.warn(
                    "Peer {peer} has applied our writes up to {seen} but this node holds "
                    "only {seq}: its data is an older copy; loading until a serving peer "
                    "syncs it",
                    peer=remote.node,
                    seen=accept.seen,
                    seq=self.store.seq,
                )
                self._load("stale")
            self.store.seq = accept.seen  # never reuse a number a peer has seen

    def factory(self, bound_interface: bool = False) -> FrontDoorFactory:
        """The factory for the shared client-and-peer port (and the TLS one);
        ``bound_interface``: every port listens on one chosen interface, not
        on every one."""
        protected = self.protected_mode
        self.door = FrontDoorFactory(
            self._client_protocol, self._peer_protocol, self._resp_protocol, self.maxclients,
            protect_clients=protected and not self.dispatcher.accounts.required
            and not bound_interface,
            protect_peers=protected and not self.peers_authenticated,
        )
        if self.peer_gate is not None:
            self.door.on_early_loss = self.peer_gate.handshake_failed
        return self.door

    def _client_protocol(self) -> TextProtocol:
        return TextProtocol(self.dispatcher, self.max_request, self.client_output_limits)

    def _resp_protocol(self) -> RespProtocol:
        return RespProtocol(self.dispatcher, self.max_request, self.client_output_limits)

    def _peer_protocol(self) -> Acceptor:
        gate = self.peer_gate
        admit = gate.refusal if gate is not None and gate.tls.peer_tls else None
        return Acceptor(self, self.reactor, self.heartbeat, wire.max_frame(self.max_request),
                        admit)

    def answer(self, offer: wire.DigestOffer) -> Iterator[bytes]:
        return answer_frames(self.store, offer)

    def durable(self) -> Optional[Batch]:
        return self._durable()

    def synced(self, peer: wire.Hello, mark: wire.RoundMark) -> None:
        """A round from ``peer`` was applied here; a serving peer's ends our loading."""
        clock = mark.horizon
        if clock is not None:
            # Never stamp below a peer we have synced from: a node restarted
            # with its wall clock behind would otherwise write below versions
            # (and stable horizons) the others already hold.
            self.clock.observe(clock, count=False)
        self.synced_from[peer.node] = self.reactor.seconds()
        if self.loading_why is None:
            return
        self._rounds_in[peer.node] = mark.members
        if mark.serving:
            if self.loading_why == "stale" and not self._own_round_cut:
                # An older copy may hold keys deleted and purged since: they go
                # only in a round of ours, with a current peer's horizon.
                self._served_by = peer.node
            else:
                self._serve(f"synced from serving peer {peer.node}")
        else:
            self._serve_if_all_synced()

    def accepted(self, proto: PeerConnection, caller: wire.Greeting, host: str) -> None:
        self.replication.accepted(proto, caller, host)
        self.member_links.called(caller.hello.node, host, caller.port)

    def member_frame(self) -> bytes:
        return self.member_links.frame()

    def members_heard(self, peer: wire.Hello, entries: Tuple[Member, ...]) -> None:
        self.member_links.heard(peer, entries)

    def flush_frame(self) -> bytes:
        floor = self.store.flushed
        return b"" if floor == ZERO else wire.encode_flush(floor)

    def flush_heard(self, peer: wire.Hello, floor: Version) -> None:
        self.store.raise_floor(floor)

    def _flushed(self, floor: Version) -> None:
        """The flush floor rose (a FLUSHALL here, or one a peer told us of):
        keep it, and tell every peer now (each connection also hears it as it
        starts and before each anti-entropy round)."""
        if self.journal is not None:
            self.journal.save_floor(floor)
        frame = wire.encode_flush(floor)
        for link in list(self.replication.links.values()):
            link.send_all(frame)

    def vet(self, greeting: wire.Greeting) -> Union[wire.Accept, Refusal]:
        caller = greeting.hello
        if caller.node == self.node_id:
            if caller.incarnation == self.incarnation:
                return ("self", "this is the connecting node itself")
            held = self.peer_auth.log_limit("duplicate-node-id", caller.node).allow()
            if held >= 0:
                log.error(
                    "A peer connected with our own node id {node}; refusing it ({held} "
                    "more refusals held back)",
                    node=caller.node, held=held,
                )
            return ("duplicate-node-id", f"node id {caller.node} is already in use")
        if self.data_load is not None or not self.digest_ready:
            return ("loading", "this node is reading its data dir; try again shortly")
        refusal = self.member_links.vet(caller.node)
        if refusal is not None:
            return refusal
        # A peer that just linked to us is up: our link to it need not wait out
        # its backoff (which may have grown to 10 s while the peer was down).
        for link in self.replication.links.values():
            if not link.up and (link.remote is None or link.remote.node == caller.node
                                or link.port == greeting.port):
                link.retry_now()
        return wire.Accept(self.hello, self.seen.get(caller.node, 0), not self.loading)

    def status_lines(self) -> List[str]:
        """The lines of the STATUS report."""
        return report.status_lines(self)

    def start(self) -> None:
        """Start without a listener (the caller attaches :meth:`factory`)."""
        if self.journal is not None:
            self.journal.startService()
        self.replication.startService()
        self.started()

    def started(self) -> None:
        self._ballot_floor = self.clock.wall_ms() + self._max_skew_ms
        self._unacked = []  # every outbox has been rebuilt by now
        self.member_links.save = self._save_members
        self.member_links.start(self.advertise_host,
                                self.advertise_port or self.listen_port or 0,
                                int(self.reactor.seconds() * 1000))
        self.start_purging()
        self.start_loading()

    def start_purging(self) -> None:
        loop = LoopingCall(self._tick)
        loop.clock = self.reactor
        self._purge_loop = loop
        loop.start(self.heartbeat, now=False)
        self.active_expiry.start()
        if self.min_replicas_to_write:
            replicas = self._replica_loop = LoopingCall(self._check_replicas)
            replicas.clock = self.reactor
            replicas.start(1.0, now=True)

    def good_replicas(self) -> int:
        """Peers linked and heard from within --min-replicas-max-lag."""
        return good_replicas(self.replication.links.values(), self.reactor.seconds(),
                             self.min_replicas_max_lag)

    def _check_replicas(self) -> None:
        """Once a second, as Redis: refuse writes while too few good replicas."""
        try:
            if self.left_why is not None:
                return  # refuses writes for good
            dispatcher = self.dispatcher
            good = self.good_replicas()
            if good < self.min_replicas_to_write:
                if dispatcher.write_refusal is None:
                    dispatcher.write_refusal = NOREPLICAS
                    log.warn("{good} good replicas, fewer than --min-replicas-to-write "
                             "{wanted}: refusing writes", good=good,
                             wanted=self.min_replicas_to_write)
            elif dispatcher.write_refusal is NOREPLICAS:
                dispatcher.write_refusal = None
                log.info("{good} good replicas again: writes accepted", good=good)
        except Exception:
            log.failure("The good-replica check failed")

    def stop(self) -> Deferred[object]:
        """Flush to peers, then commit and close (see :meth:`start`)."""
        self.stop_timers()
        return self.close_journal_after(self.replication.stopService())

    def close_journal_after(self, stopped: Deferred[object]) -> Deferred[object]:
        """Commit and close the journal once ``stopped`` fires: peers' writes
        that arrive while links flush are still committed."""
        journal = self.journal
        if journal is None:
            return stopped

        def close(result: object) -> object:
            closing = journal.stopService()
            return result if closing is None else closing.addCallback(lambda _: result)

        return stopped.addBoth(close)

    def stop_timers(self) -> None:
        """Stop the heartbeat's purge and checks, and the loading check."""
        if self._collector is not None:
            self._collector.resume()  # a process-wide pause: never left held
        if self._load_call is not None and self._load_call.active():
            self._load_call.cancel()  # no more reading or folding (which would pause it again)
            self._load_call = None
        if self._purge_loop is not None and self._purge_loop.running:
            self._purge_loop.stop()
        self.active_expiry.stop()
        if self._replica_loop is not None and self._replica_loop.running:
            self._replica_loop.stop()
        if self._loading_check is not None and self._loading_check.active():
            self._loading_check.cancel()
        self.replicas.cancel_all()  # no WAIT outlives the node's timers
        self.quorum.cancel_all()  # nor a write or read waiting for members
        self.proposer.cancel_all()  # nor a LINEARIZABLE operation

    def crash(self) -> None:
        """Stop at once, as ``kill -9`` would: nothing flushed, nothing more committed."""
        self.stop_timers()
        self.member_links.halted = True
        for link in list(self.replication.links.values()):
            link.stopTrying()
            link.close()
        self.replication.running = False
        if self.journal is not None:
            self.journal.abandon()

    def start_loading(self) -> None:
        """A node with peers loads first, until a serving peer has synced it
        (with or without a data dir: it may have missed writes while down)."""
        if self.replication.links:
            self._load("empty" if self._started_empty else "checking")

    def info_sections(self) -> Dict[str, List[Tuple[str, object]]]:
        """This node's part of INFO, in Redis's section names."""
        return report.info_sections(self)

    def service(self, endpoint: str) -> NodeService:
        """The node as a service listening on the server endpoint ``endpoint``."""
        top = NodeService(self)
        # Started first and stopped last: the listener stops taking clients
        # while replication still gets its moment to flush.
        self.replication.setServiceParent(top)
        self.dispatcher.config[b"bind"] = bound_address(endpoint).encode()
        tls = self.tls
        tls_endpoint = tls.endpoint if tls is not None else None
        bound = one_interface(endpoint) and (tls_endpoint is None or one_interface(tls_endpoint))
        door = self.factory(bound)  # one for both ports: --maxclients counts every client
        Listener(serverFromString(self.reactor, endpoint), door).setServiceParent(top)
        if tls is not None and tls_endpoint is not None:
            Listener(serverFromString(self.reactor, tls_endpoint),
                     tls.listening(door)).setServiceParent(top)
        return top
