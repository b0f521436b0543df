"""The ``twistd distkv`` command line: options, validated, and the wiring.

``Options`` turns the command line into checked values (raising
``usage.UsageError`` with a message a user understands); ``makeService``
builds the node and returns its service. Nothing else lives here.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
from typing import Dict, List, Optional, Tuple

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

import distkv
from distkv import logs
from distkv.cluster import tlsconfig, wire
from distkv.cluster.handshake import MIN_SECRET_BYTES
from distkv.cluster.membership import HOST, derived_node_id, split_address
from distkv.cluster.quorum import parse_level
from distkv.cluster.tlsconfig import TlsConfig
from distkv.disk.datafile import SYNCHRONOUS, DiskError
from distkv.front.auth import OPEN_DEFAULT, User, UsersFileError, digest_of, first_line, parse_users
from distkv.front.replyqueue import OutputLimits
from distkv.node import Node
from distkv.ops.service import metrics_service
from distkv.shutdown import ExitZeroOnTerm

log = Logger()

_PORT_ONLY = re.compile(r"^\d+$")
_ENDPOINT_PORT = re.compile(r"^(?:tcp6?|ssl):(?:port=)?(\d+)(?::|$)")
_INTERFACE = re.compile(r"(?:^|:)interface=([^:]+)(?::|$)")
_WILDCARD = frozenset(["", "0.0.0.0", "::"])


def parse_peer(item: str) -> Tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port), or UsageError."""
    address = split_address(item)
    if address is not None:
        return address
    port_text = item.strip().rpartition(":")[2]
    if port_text.isascii() and port_text.isdigit() and not 0 < int(port_text[:6]) < 65536:
        raise usage.UsageError(f"bad peer address {item!r}: port must be 1-65535")
    raise usage.UsageError(
        f"bad peer address {item!r}: expected host:port, e.g. 127.0.0.1:9001"
    )


def server_endpoint(value: str) -> str:
    """A bare port becomes a TCP endpoint with a listen backlog for bursts."""
    if _PORT_ONLY.match(value):
        port = int(value)
        if not 0 <= port < 65536:
            raise usage.UsageError(f"--port {value} is not a TCP port (0-65535)")
        return f"tcp:{port}:backlog=1024"
    if ":" not in value:
        raise usage.UsageError(
            f"--port {value!r} is neither a port number nor an endpoint like tcp:9000"
        )
    return value


def tls_endpoint(value: str) -> str:
    """--tls-port: a bare port or a tcp: endpoint, which the node wraps in TLS."""
    if _PORT_ONLY.match(value):
        port = int(value)
        if not 0 < port < 65536:
            raise usage.UsageError(f"--tls-port {value} is not a TCP port (1-65535)")
        return f"tcp:{port}:backlog=1024"
    if not re.match(r"^tcp6?:", value) or endpoint_port(value) is None:
        raise usage.UsageError(
            f"--tls-port {value!r}: give a port number or a tcp: endpoint with a port "
            "(e.g. tcp:9443:interface=127.0.0.1); --tls-cert and --tls-key supply the TLS"
        )
    return value


def endpoint_port(endpoint: str) -> Optional[int]:
    match = _ENDPOINT_PORT.match(endpoint)
    return int(match.group(1)) if match else None


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as e:
        raise usage.UsageError(f"--{option} {path}: cannot read it ({e.strerror})") from None


def client_users(
    requirepass_file: Optional[str], users_file: Optional[str]
) -> Optional[Dict[bytes, User]]:
    """The users of ``--requirepass-file`` and ``--users-file``; None when
    neither is given (no password required). The secrets are never shown."""
    if requirepass_file is None and users_file is None:
        return None
    users: Dict[bytes, User] = {}
    if users_file is not None:
        try:
            users = parse_users(_read("users-file", users_file))
        except UsersFileError as e:
            raise usage.UsageError(f"--users-file {users_file}: {e}") from None
    if requirepass_file is not None:
        password = first_line(_read("requirepass-file", requirepass_file))
        if not password:
            raise usage.UsageError(
                f"--requirepass-file {requirepass_file}: its first line is empty; it must "
                "hold the password"
            )
        if OPEN_DEFAULT.name in users:
            raise usage.UsageError(
                f"--users-file {users_file} lists the default user, whose password "
                f"--requirepass-file sets too: give it in one place"
            )
        users[OPEN_DEFAULT.name] = User(OPEN_DEFAULT.name, digest_of(password), True)
    return users
def read_secret(path: str) -> bytes:
    """The cluster secret in ``path`` (its trailing newline dropped), or
    UsageError; a file others may read is allowed, with a warning."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            secret = f.read(1 << 16)
    except OSError as e:
        raise usage.UsageError(
            f"--cluster-secret-file {path}: cannot read it ({e.strerror})"
        ) from None
    secret = secret.rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise usage.UsageError(
            f"--cluster-secret-file {path}: the secret is {'empty' if not secret else 'too short'}"
            f" (at least {MIN_SECRET_BYTES} bytes; e.g. openssl rand -hex 32 > {path})"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn(
            "The cluster secret file {path} can be read by other users "
            "(mode {mode}); chmod 600 it",
            path=path, mode=oct(stat.S_IMODE(mode)),
        )
    return secret


def endpoint_interface(endpoint: str) -> str:
    """The interface an endpoint listens on, or "" for every interface."""
    match = _INTERFACE.search(endpoint.replace("\\:", "%3A"))
    host = match.group(1).replace("%3A", ":") if match else ""
    return "" if host in _WILDCARD else host


def advertised(config: usage.Options) -> Tuple[str, Optional[int]]:
    """Where peers reach this node: ``--advertise``, else the interface and
    port of the endpoint peers dial ("" when it listens on every interface):
    ``--port``, or ``--tls-port`` when peers link over TLS."""
    if config["advertise"] is not None:
        return config["advertise"]  # type: ignore[no-any-return]
    tls = config["tls"]
    endpoint = tls.endpoint if tls is not None and tls.peer_tls else config["endpoint"]
    return endpoint_interface(endpoint or ""), config["listen-port"]


def default_node_id(host: str, port: Optional[int]) -> str:
    """A node's id when ``--node-id`` is not given: its advertised address,
    or this machine's host name and its port (see the README, "Node ids")."""
    return derived_node_id(host or socket.gethostname(), port or 0)


def _positive(name: str, value: str, kind: type = int) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number, not {value!r}")
    if number <= 0:
        raise usage.UsageError(f"--{name} must be positive")
    return number  # type: ignore[no-any-return]


class Options(usage.Options):
    """twistd distkv [options]"""

    synopsis = "[options]"
    longdesc = (
        "Run one DistKV node. Clients (nc, the text protocol) and peers share the "
        "one port. Every write is replicated to every peer. Data lives in memory, "
        "or with --data-dir in a SQLite database that survives kill -9."
    )
    optParameters = [
        ["port", "p", "9000", "Port number or Twisted server endpoint to listen on "
         "(e.g. 9000, tcp:9000:interface=127.0.0.1, "
         "ssl:9443:privateKey=key.pem:certKey=cert.pem for TLS clients)."],
        ["node-id", None, None, "This node's id (letters, digits, _ . : -; at most 64). "
         "Default: the id kept in --data-dir, else HOST:PORT of --advertise (or of "
         "this machine's host name and the port), the same at every start."],
        ["advertise", None, None, "HOST:PORT at which other members reach this node "
         "(told to every member, which dials it). Default: the interface and port "
         "--port names; with no interface, the address peers see this node call from."],
        ["max-request", None, "1048576", "Largest request line in bytes; a longer one "
         "gets ERR and the connection is closed."],
        ["outbox-bytes", None, "67108864", "Bytes of unacknowledged writes held per "
         "peer before that peer is marked for a full resync."],
        ["max-clock-skew", None, "60", "Seconds a peer's version may lie ahead of our "
         "clock before the write is refused (and counted)."],
        ["heartbeat", None, "5", "Seconds between peer heartbeats; a peer silent for "
         "four of them is dropped and reconnected."],
        ["flush-timeout", None, "2", "Seconds a stopping node waits for peers to "
         "acknowledge pending writes."],
        ["sync-interval", None, "60", "Seconds between anti-entropy rounds with each "
         "peer (a round also runs when a link comes up or a resync is needed)."],
        ["data-dir", "d", None, "Keep data in a SQLite database in this directory "
         "(created if missing). Default: memory only, recovered from peers."],
        ["fsync", None, "everysec", "With --data-dir: always (every acknowledged write "
         "survives a power cut), everysec (up to ~1s lost on power cut) or no (the OS "
         "decides). Every policy survives kill -9."],
        ["tombstone-grace", None, "600", "Seconds a delete's tombstone is kept at least; "
         "it is purged after that once every peer has it."],
        ["loading-wait", None, "30", "Seconds a node that started without data refuses "
         "data commands (ERR LOADING) waiting for a peer to sync it, before serving anyway."],
        ["maxclients", None, "10000", "Most clients served at once (peers not counted); "
         "one more gets ERR max number of clients reached and is closed."],
        ["client-output-soft-limit", None, "1048576", "Bytes of replies queued for one "
         "client past which it is not read and its requests wait until it reads."],
        ["client-output-hard-limit", None, None, "Largest reply, in bytes, built for a "
         "client (queued bytes included); a larger one gets ERR and the connection is "
         "closed. Default: 33554432, or --max-request plus 65536 if that is larger."],
        ["requirepass-file", None, None, "File whose first line is the password of the "
         "default user: clients must AUTH <password> (Redis's AUTH, NOAUTH, WRONGPASS). "
         "Default: no password."],
        ["users-file", None, None, "File of named client users, one per line: "
         "'<name> <read|readwrite> ><password>' or '<name> <read|readwrite> #<sha256 hex>'; "
         "clients AUTH <name> <password>, and read users get NOPERM on writes."],
        ["protected-mode", None, "yes", "yes: while no client password is set and --port "
         "names no interface, refuse clients from other machines; and refuse peers from "
         "other machines unless peers are authenticated. no: accept them."],
        ["cluster-secret-file", None, None, "A file holding the cluster secret (at "
         f"least {MIN_SECRET_BYTES} bytes; a trailing newline is dropped): only peers "
         "that prove the same secret are admitted, and peer links are authenticated. "
         "Every node of a cluster needs the same secret, or none."],
        ["tls-port", None, None, "Also listen with TLS on this port (or tcp: endpoint, "
         "e.g. tcp:9443:interface=10.0.0.1), for the same clients and peers; needs "
         "--tls-cert and --tls-key. With --tls-ca it is the port peers dial."],
        ["tls-cert", None, None, "PEM file: this node's certificate (then any "
         "intermediate certificates)."],
        ["tls-key", None, None, "PEM file: the unencrypted private key of --tls-cert."],
        ["tls-ca", None, None, "PEM file: the cluster's CA certificate(s). Turns on mutual "
         "TLS for peers: they dial each other's --tls-port, each verifying the other's "
         "certificate against it; peer handshakes over plain TCP are refused. Client "
         "certificates, optional, are verified against it too."],
        ["min-replicas-to-write", None, "0", "Refuse writes (NOREPLICAS) while fewer than "
         "this many peers are linked and heard from within --min-replicas-max-lag "
         "(Redis's option). Default 0: never refuse."],
        ["log-format", None, "text", "text (twistd's log lines) or json (one JSON object "
         "a line, for log shippers), written where twistd logs (-l/--logfile, or stdout "
         "with -n)."],
        ["min-replicas-max-lag", None, "10", "Seconds since a peer was last heard within "
         "which it counts as a good replica for --min-replicas-to-write."],
        ["write-level", None, "one", "Consistency level of writes: one (answer once "
         "committed here), quorum (once a majority of the members, this node included, "
         "committed it), all, or linearizable (a per-key consensus among a majority: "
         "atomic cluster-wide). A connection may choose its own (CONSISTENCY)."],
        ["read-level", None, "one", "Consistency level of reads: one (this node's data), "
         "quorum (the newest a majority of the members hold), all or linearizable."],
        ["quorum-timeout", None, "1", "Seconds a write or read waits for the members "
         "its level needs before answering TIMEOUT (a write's outcome is then "
         "indeterminate)."],
        ["metrics-port", None, None, "Serve Prometheus metrics at /metrics, and the "
         "cluster page at /, on this port of 127.0.0.1 (e.g. 9100). Default: off."],
        ["metrics-endpoint", None, None, "As --metrics-port, on a Twisted server endpoint "
         "instead, e.g. tcp:9100:interface=0.0.0.0 to serve every interface (anyone who "
         "can reach it sees the cluster's members and numbers)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["peers"] = []

    def parseOptions(self, options: Optional[List[str]] = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:  # type: ignore[attr-defined]
                raise
            # Under twistd: some Twisted releases (26.4, which PyPy 3.9 gets)
            # print a usage error and exit 0; a bad option must fail the run.
            sys.stdout.write(f"{self}\n")
            raise SystemExit(f"twistd distkv: {e}") from None

    def opt_peers(self, value: str) -> None:
        """Comma-separated host:port list of the other nodes (may repeat)."""
        for item in value.split(","):
            if item.strip():
                self["peers"].append(parse_peer(item))

    def opt_version(self) -> None:
        """Display DistKV's and Twisted's versions and exit."""
        from twisted import __version__ as twisted_version

        sys.stdout.write(f"DistKV {distkv.__version__} (Twisted {twisted_version})\n")
        sys.exit(0)

    def _min_replicas(self) -> None:
        text = self["min-replicas-to-write"]
        if not text.isdigit() or not text.isascii():
            raise usage.UsageError(
                f"--min-replicas-to-write must be a whole number of peers (0 or more), "
                f"not {text!r}")
        self["min-replicas-to-write"] = int(text)
        self["min-replicas-max-lag"] = _positive(
            "min-replicas-max-lag", self["min-replicas-max-lag"], float)

    def _levels(self) -> None:
        for name in ("write-level", "read-level"):
            level = parse_level(self[name])
            if level is None:
                raise usage.UsageError(
                    f"--{name} {self[name]!r}: use one, quorum, all or linearizable")
            self[name] = level
        self["quorum-timeout"] = _positive("quorum-timeout", self["quorum-timeout"], float)

    def postOptions(self) -> None:
        self._levels()
        self["endpoint"] = server_endpoint(self["port"])
        if self["advertise"] is not None:
            host, port = parse_peer(self["advertise"])
            if not HOST.match(host):
                raise usage.UsageError(f"--advertise {self['advertise']!r}: bad host name")
            self["advertise"] = (host, port)
        node_id = self["node-id"]
        if node_id is not None and not wire.valid_node_id(node_id):
            raise usage.UsageError(
                f"--node-id {node_id!r}: use 1-64 letters, digits or _ . : -"
            )
        self["max-request"] = int(_positive("max-request", self["max-request"]))
        self["outbox-bytes"] = int(_positive("outbox-bytes", self["outbox-bytes"]))
        self["maxclients"] = int(_positive("maxclients", self["maxclients"]))
        for name in ("max-clock-skew", "heartbeat", "flush-timeout", "sync-interval",
                     "tombstone-grace"):
            self[name] = _positive(name, self[name], float)
        if self["tombstone-grace"] <= self["max-clock-skew"]:
            # Clocks may differ by up to the skew: a shorter grace could purge a
            # delete before a node whose clock lags has stamped past it.
            raise usage.UsageError("--tombstone-grace must be longer than --max-clock-skew")
        if self["fsync"] not in SYNCHRONOUS:
            raise usage.UsageError(
                f"--fsync {self['fsync']!r}: use one of always, everysec, no"
            )
        try:
            self["loading-wait"] = float(self["loading-wait"])
        except ValueError:
            raise usage.UsageError(f"--loading-wait must be a number, not {self['loading-wait']!r}")
        if self["loading-wait"] < 0:
            raise usage.UsageError("--loading-wait must not be negative")
        soft = int(_positive("client-output-soft-limit", self["client-output-soft-limit"]))
        hard_text = self["client-output-hard-limit"]
        if hard_text is None:
            hard = max(OutputLimits().hard, self["max-request"] + (64 << 10))
        else:
            hard = int(_positive("client-output-hard-limit", hard_text))
        if hard < soft:
            raise usage.UsageError(
                "--client-output-hard-limit must not be below --client-output-soft-limit"
            )
        if hard <= self["max-request"]:
            raise usage.UsageError(
                "--client-output-hard-limit must be larger than --max-request "
                "(a GET of the largest value must fit)"
            )
        self["client-output-limits"] = OutputLimits(soft=soft, hard=hard)
        if self["protected-mode"] not in ("yes", "no"):
            raise usage.UsageError(
                f"--protected-mode {self['protected-mode']!r}: use yes or no"
            )
        self["users"] = client_users(self["requirepass-file"], self["users-file"])
        path = self["cluster-secret-file"]
        self["cluster-secret"] = None if path is None else read_secret(path)
        self["tls"] = self._tls()
        self._min_replicas()
        if self["log-format"] not in logs.FORMATS:
            raise usage.UsageError(
                f"--log-format {self['log-format']!r}: use text or json")
        parent = getattr(self, "parent", None)
        if self["log-format"] == "json" and parent is not None and parent.get("syslog"):
            raise usage.UsageError("--log-format json writes a file, not syslog: drop --syslog")
        self["metrics"] = self._metrics()
        if self["min-replicas-to-write"] and self["min-replicas-max-lag"] <= self["heartbeat"]:
            # A peer is heard from about once a heartbeat: a shorter lag
            # would count good peers as gone between two heartbeats.
            raise usage.UsageError("--min-replicas-max-lag must be longer than --heartbeat")
        tls: Optional[TlsConfig] = self["tls"]
        if tls is not None and tls.peer_tls:
            # Peers dial the TLS port: that is the port our greeting names.
            self["listen-port"] = endpoint_port(tls.endpoint or "")
        else:
            self["listen-port"] = endpoint_port(self["endpoint"])

    def _metrics(self) -> Optional[str]:
        """The metrics port's endpoint, checked; None when metrics are off."""
        port: Optional[str] = self["metrics-port"]
        endpoint: Optional[str] = self["metrics-endpoint"]
        if port is not None and endpoint is not None:
            raise usage.UsageError("give --metrics-port or --metrics-endpoint, not both")
        if port is not None:
            if not _PORT_ONLY.match(port) or not 0 < int(port) < 65536:
                raise usage.UsageError(
                    f"--metrics-port {port!r} is not a TCP port (1-65535); for another "
                    "interface use --metrics-endpoint tcp:PORT:interface=ADDRESS")
            endpoint = f"tcp:{int(port)}:interface=127.0.0.1"
        elif endpoint is None:
            return None
        elif not re.match(r"^(?:tcp6?|ssl|unix):", endpoint) or (
                not endpoint.startswith("unix:") and endpoint_port(endpoint) is None):
            raise usage.UsageError(
                f"--metrics-endpoint {endpoint!r}: give a Twisted server endpoint with a "
                "port, e.g. tcp:9100:interface=127.0.0.1 (or unix:/path/to/socket)")
        port_number = endpoint_port(endpoint)
        if port_number is not None and port_number != 0 and port_number in (
                endpoint_port(self["endpoint"]),
                endpoint_port(self["tls"].endpoint or "") if self["tls"] else None):
            raise usage.UsageError(
                f"the metrics port {port_number} is the port clients and peers use: "
                "give it a port of its own")
        return endpoint

    def _tls(self) -> Optional[TlsConfig]:
        """The TLS settings, checked; None without --tls-port."""
        try:
            if self["endpoint"].startswith("ssl:"):
                tlsconfig.check_endpoint("port", self["endpoint"])
            port, cert, key, ca = (self[name] for name in
                                   ("tls-port", "tls-cert", "tls-key", "tls-ca"))
            if port is None:
                given = [f"--{name}" for name in ("tls-cert", "tls-key", "tls-ca")
                         if self[name] is not None]
                if given:
                    raise usage.UsageError(
                        f"{', '.join(given)} given without --tls-port: the TLS listener "
                        "(and, with --tls-ca, the port peers dial) needs a port"
                    )
                return None
            endpoint = tls_endpoint(port)
            if cert is None or key is None:
                raise usage.UsageError("--tls-port needs --tls-cert and --tls-key")
            return tlsconfig.load(cert, key, ca, endpoint)
        except tlsconfig.TlsError as e:
            raise usage.UsageError(str(e)) from None


def makeService(config: Options) -> IService:
    from twisted.internet import reactor

    advertise_host, advertise_port = advertised(config)
    try:
        node = Node(
            reactor,
            config["node-id"],
            default_id=default_node_id(advertise_host, advertise_port),
            advertise_host=advertise_host,
            advertise_port=advertise_port,
            listen_port=config["listen-port"],
            max_request=config["max-request"],
            outbox_bytes=config["outbox-bytes"],
            max_clock_skew=config["max-clock-skew"],
            heartbeat=config["heartbeat"],
            flush_timeout=config["flush-timeout"],
            sync_interval=config["sync-interval"],
            data_dir=config["data-dir"],
            fsync=config["fsync"],
            loading_wait=config["loading-wait"],
            tombstone_grace=config["tombstone-grace"],
            maxclients=config["maxclients"],
            client_output_limits=config["client-output-limits"],
            users=config["users"],
            protected_mode=config["protected-mode"] == "yes",
            cluster_secret=config["cluster-secret"],
            tls=config["tls"],
            min_replicas_to_write=config["min-replicas-to-write"],
            min_replicas_max_lag=config["min-replicas-max-lag"],
            load_in_steps=True,
            write_level=config["write-level"],
            read_level=config["read-level"],
            quorum_timeout=config["quorum-timeout"],
        )
    except DiskError as e:
        # Bad state on disk: say so and stop, rather than serve nothing.
        raise SystemExit(f"twistd distkv: {e}") from None
    peers: List[Tuple[str, int]] = config["peers"]
    for host, port in peers:
        node.add_peer(host, port)
    top = node.service(config["endpoint"])
    if config["log-format"] == "json":
        top.log_observer = logs.json_observer(logs.json_log_file(config.parent))
    tls: Optional[TlsConfig] = config["tls"]
    logs.announce(
        node.node_id, [config["endpoint"]] + ([tls.endpoint] if tls and tls.endpoint else []),
        f"{advertise_host}:{advertise_port}" if advertise_host and advertise_port else "",
        peers, config["data-dir"], config["fsync"],
        "reading its data dir" if node.data_load is not None else "starting",
    )
    if config["metrics"] is not None:
        metrics_service(node, config["metrics"], reactor).setServiceParent(top)
    ExitZeroOnTerm(reactor).setServiceParent(top)
    return top
