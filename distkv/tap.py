"""The ``twistd distkv`` command line: options, validated, and the wiring.

``Options`` turns the command line into checked values (raising
``usage.UsageError`` with a message a user understands); ``makeService``
builds the node and returns its service. Nothing else lives here.
"""

from __future__ import annotations

import re
import sys
from typing import Dict, List, Optional, Tuple

from twisted.application.service import IService
from twisted.python import usage

import distkv
from distkv.cluster import wire
from distkv.disk.datafile import SYNCHRONOUS, DiskError
from distkv.front.auth import OPEN_DEFAULT, User, UsersFileError, digest_of, first_line, parse_users
from distkv.front.replyqueue import OutputLimits
from distkv.node import Node
from distkv.shutdown import ExitZeroOnTerm

_PORT_ONLY = re.compile(r"^\d+$")
_ENDPOINT_PORT = re.compile(r"^(?:tcp6?|ssl):(?:port=)?(\d+)(?::|$)")


def parse_peer(item: str) -> Tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port), or UsageError."""
    text = item.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or any(c.isspace() for c in host):
        raise usage.UsageError(
            f"bad peer address {item!r}: expected host:port, e.g. 127.0.0.1:9001"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise usage.UsageError(f"bad peer address {item!r}: port must be 1-65535")
    return host, port


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
         "(e.g. 9000, tcp:9000:interface=127.0.0.1)."],
        ["node-id", None, None, "This node's id (letters, digits, _ . : -; at most 64). "
         "Default: a random id at each start."],
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

    def postOptions(self) -> None:
        self["endpoint"] = server_endpoint(self["port"])
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


def makeService(config: Options) -> IService:
    from twisted.internet import reactor

    try:
        node = Node(
            reactor,
            config["node-id"],
            listen_port=endpoint_port(config["endpoint"]),
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
        )
    except DiskError as e:
        # Bad state on disk: say so and stop, rather than serve nothing.
        raise SystemExit(f"twistd distkv: {e}") from None
    peers: List[Tuple[str, int]] = config["peers"]
    for host, port in peers:
        node.add_peer(host, port)
    top = node.service(config["endpoint"])
    ExitZeroOnTerm(reactor).setServiceParent(top)
    return top
