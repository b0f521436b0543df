"""Server commands: what Redis clients and tools send besides data commands.

``redis-cli``, ``redis-py`` and ``redis-benchmark`` send some of these on
connect (``CLIENT SETINFO``, ``CONFIG GET save``, ``COMMAND DOCS``, ``HELLO``);
the answers follow Redis's reply shapes and error wording so the tools run
unmodified. ``INFO`` reports DistKV's own state in Redis's sections, with one
line per peer under ``replication``. DistKV has one database (``SELECT 0``),
speaks RESP2, and RESP3 after ``HELLO 3`` (for the replies it has: nil as
``_``, maps for HELLO and CONFIG GET). ``AUTH`` and ``HELLO ... AUTH`` log a
connection in as a user (see :mod:`distkv.front.auth`), with Redis 7.0's
replies and in Redis's order of checks. The member commands (``CLUSTER
NODES|FORGET|MYID``, ``LEAVE``, ``MEMBERS``) reach the node through
:class:`ClusterControl`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import distkv
from distkv.front.clientcmds import BAD_NAME, ClientCommands, valid_name
from distkv.front.replies import (
    NIL,
    OK,
    SYNTAX,
    Array,
    Error,
    Integer,
    Lines,
    Map,
    Reply,
    Session,
    Status,
    c_string,
    raw_text,
    strict_int,
    wrong_arity,
)

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry

#: The Redis release whose commands and replies DistKV follows; clients read it
#: from INFO and HELLO to decide what they may send.
REDIS_VERSION = "7.0.0"
#: DistKV's own version: the package's, the one source of truth.
DISTKV_VERSION = distkv.__version__

DEFAULT_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication",
                    "consistency", "cluster", "keyspace")

#: Key positions (first, last, step) for COMMAND and COMMAND GETKEYS, as
#: Redis reports them.
_KEY_SPECS = {
    b"GET": (1, 1, 1), b"SET": (1, 1, 1), b"DEL": (1, -1, 1), b"EXISTS": (1, -1, 1),
    b"MGET": (1, -1, 1), b"MSET": (1, -1, 2), b"APPEND": (1, 1, 1), b"STRLEN": (1, 1, 1),
    b"GETRANGE": (1, 1, 1), b"SUBSTR": (1, 1, 1), b"SETRANGE": (1, 1, 1),
    b"MSETNX": (1, -1, 2), b"TYPE": (1, 1, 1), b"UNLINK": (1, -1, 1), b"TOUCH": (1, -1, 1),
    b"RENAME": (1, 2, 1), b"RENAMENX": (1, 2, 1), b"COPY": (1, 2, 1),
}

#: What CONFIG GET reports before the node fills in its own settings: the
#: parameters Redis clients and tools commonly read, with the values that
#: describe DistKV (no RDB snapshots, one database, no memory limit or
#: eviction, no idle timeout, no cluster mode in Redis's sense).
DEFAULT_CONFIG: Dict[bytes, bytes] = {
    b"save": b"",
    b"appendonly": b"no",
    b"appendfsync": b"no",
    b"databases": b"1",
    b"maxmemory": b"0",
    b"maxmemory-policy": b"noeviction",
    b"maxclients": b"10000",
    b"timeout": b"0",
    b"tcp-keepalive": b"0",
    b"port": b"0",
    b"bind": b"* -::*",
    b"protected-mode": b"no",
    b"cluster-enabled": b"no",
    b"replica-read-only": b"no",
    b"slave-read-only": b"no",
    b"proto-max-bulk-len": b"1048576",
    b"notify-keyspace-events": b"",
    b"lua-time-limit": b"0",
    b"busy-reply-threshold": b"0",
    b"slowlog-log-slower-than": b"-1",
    b"slowlog-max-len": b"0",
    b"loglevel": b"notice",
    b"hz": b"10",
    b"dbfilename": b"",
    b"min-replicas-to-write": b"0",
    b"min-replicas-max-lag": b"10",
}

#: Each container command's subcommands and their arity, counted as Redis
#: counts it (the whole request; negative: at least that many).
_SUBCOMMANDS: Dict[bytes, Dict[bytes, int]] = {
    b"COMMAND": {b"COUNT": 2, b"INFO": -2, b"DOCS": -2, b"GETKEYS": -4, b"LIST": -2},
    b"CONFIG": {b"GET": -3, b"SET": -4, b"RESETSTAT": 2},
    b"MEMORY": {b"USAGE": -3},
    b"CLIENT": {b"SETNAME": 3, b"GETNAME": 2, b"ID": 2, b"INFO": 2, b"SETINFO": 4,
                b"LIST": -2, b"KILL": -3},
}

#: What COMMAND reports as a command's flags, by the access it needs.
_FLAGS = {"open": (Status(b"no-auth"),), "read": (), "write": (Status(b"write"),)}

_HELLO_NOAUTH = Error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    "the RESP protocol version at the same time"
)


class ClusterControl(NamedTuple):
    """What the member commands ask of the node (see
    :class:`distkv.cluster.memberlinks.MemberLinks`): ``forget(id)`` returns
    None or the error to reply, ``leave()`` what it did (or an error
    starting ``ERR``), ``nodes()`` the ``CLUSTER NODES`` lines, ``members()``
    the ``MEMBERS`` lines and ``myid()`` this node's id."""

    forget: Callable[[str], Optional[str]]
    leave: Callable[[], str]
    nodes: Callable[[], List[str]]
    members: Callable[[], List[str]]
    myid: Callable[[], str]


def _unknown_subcommand(sub: bytes, command: str) -> Error:
    name = raw_text(c_string(sub)[:128])
    return Error(f"ERR unknown subcommand '{name}'. Try {command} HELP.")


def subcommand_refusal(command: bytes, args: Sequence[bytes]) -> Optional[Reply]:
    """What ``command`` ``args[0]`` gets instead of running: Redis's refusal
    (an unknown subcommand, or the wrong number of arguments), the list of
    subcommands for ``HELP``; None if it may run."""
    sub = args[0].upper()
    subcommands = _SUBCOMMANDS[command]
    arity = 2 if sub == b"HELP" else subcommands.get(sub)
    if arity is None:
        return _unknown_subcommand(args[0], command.decode())
    count = len(args) + 1
    if count != arity if arity > 0 else count < -arity:
        return wrong_arity(command + b"|" + args[0])
    if sub == b"HELP":
        lines = [f"{command.decode()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
        lines.extend(name.decode() for name in sorted(subcommands))
        lines.extend(("HELP", "    Print this help."))
        return Array(tuple(Status(line.encode()) for line in lines))
    return None


def table(dispatcher: Dispatcher) -> Dict[bytes, Entry]:
    """The server commands, bound to ``dispatcher``, for its command table."""
    commands = ServerCommands(dispatcher)
    return {
        b"INFO": (commands.info, 0, -1, "read"),
        b"COMMAND": (commands.command, 0, -1, "read"),
        b"CONFIG": (commands.config, 1, -1, "read"),
        b"CLIENT": (commands.client, 1, -1, "read"),
        b"HELLO": (commands.hello, 0, -1, "open"),
        b"AUTH": (commands.auth, 1, -1, "open"),
        b"CLUSTER": (commands.cluster, 1, -1, "read"),  # FORGET checks the write right
        b"LEAVE": (commands.leave, 0, 0, "write"),
        b"MEMBERS": (commands.members, 0, 0, "read"),
    }


class ServerCommands:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.clients = ClientCommands(dispatcher)

    def info(self, args: Sequence[bytes], session: Session) -> Reply:
        wanted = {arg.decode("utf-8", "replace").lower() for arg in args} or {"default"}
        if wanted & {"all", "everything"}:
            wanted = set(DEFAULT_SECTIONS)
        elif "default" in wanted:
            wanted = (wanted - {"default"}) | set(DEFAULT_SECTIONS)
        sections = self.sections()
        lines: List[str] = []
        for name in DEFAULT_SECTIONS:
            if name in wanted:
                if lines:
                    lines.append("")
                lines.append("# " + name.capitalize())
                lines.extend(f"{key}:{value}" for key, value in sections.get(name, []))
        return Lines(tuple(lines))

    def sections(self) -> Dict[str, List[Tuple[str, object]]]:
        dispatcher = self.dispatcher
        sections = {name: list(items) for name, items in dispatcher.info().items()}
        stats = dispatcher.stats
        server = sections.setdefault("server", [])
        server[0:0] = [
            ("redis_version", REDIS_VERSION),
            ("distkv_version", DISTKV_VERSION),
            ("arch_bits", struct.calcsize("P") * 8),
        ]
        sections["clients"] = [
            ("connected_clients", stats.connected_clients),
            ("blocked_clients", 0),
        ]
        sections["cluster"] = [("cluster_enabled", 0)]
        accounts = dispatcher.accounts
        sections.setdefault("stats", [])[0:0] = [
            ("total_connections_received", stats.connections_received),
            ("total_commands_processed", stats.commands_processed),
            ("acl_access_denied_auth", accounts.failures),
            ("acl_access_denied_cmd", accounts.denied),
        ]
        keys = dispatcher.store_size()
        expires = dispatcher.store.with_expiry  # values with an expiry (Redis's counts too)
        sections["keyspace"] = [("db0", f"keys={keys},expires={expires},avg_ttl=0")] if keys else []
        return sections

    def command(self, args: Sequence[bytes], session: Session) -> Reply:
        dispatcher = self.dispatcher
        if not args:
            return Array(tuple(self._describe(name) for name in dispatcher.names()))
        refused = subcommand_refusal(b"COMMAND", args)
        if refused is not None:
            return refused
        sub = args[0].upper()
        if sub == b"COUNT":
            return Integer(len(dispatcher.names()))
        if sub == b"DOCS":
            return Array(())  # an empty map: clients fall back to no hints
        if sub == b"LIST":
            if len(args) > 1:
                return SYNTAX  # FILTERBY: not kept
            return Array(tuple(name.lower() for name in dispatcher.names()))
        if sub == b"GETKEYS":
            return self._getkeys(args[1:])
        known = set(dispatcher.names())
        names = [name.upper() for name in args[1:]] or dispatcher.names()
        return Array(tuple(
            self._describe(name) if name in known else NIL for name in names
        ))

    def _getkeys(self, request: Sequence[bytes]) -> Reply:
        """COMMAND GETKEYS command [arg...]: the keys ``command`` would touch."""
        dispatcher = self.dispatcher
        name = request[0].upper()
        if name not in dispatcher.names():
            return Error("ERR Invalid command specified")
        arity = dispatcher.arity(name)
        if (arity > 0 and len(request) != arity) or len(request) < -arity:
            return Error("ERR Invalid number of arguments specified for command")
        spec = _KEY_SPECS.get(name)
        if spec is None:
            return Error("ERR The command has no key arguments")
        first, last, step = spec
        stop = len(request) + last if last < 0 else min(last, len(request) - 1)
        return Array(tuple(request[first : stop + 1 : step]))

    def _describe(self, name: bytes) -> Reply:
        first, last, step = _KEY_SPECS.get(name, (0, 0, 0))
        return Array((
            name.lower(),
            Integer(self.dispatcher.arity(name)),
            Array(_FLAGS[self.dispatcher.access.get(name, "read")]),
            Integer(first),
            Integer(last),
            Integer(step),
        ))

    def config(self, args: Sequence[bytes], session: Session) -> Reply:
        from distkv.front.commands import glob_regex

        refused = subcommand_refusal(b"CONFIG", args)
        if refused is not None:
            return refused
        sub = args[0].upper()
        if sub == b"GET":
            settings = self.dispatcher.config
            out: List[Reply] = []
            patterns = [glob_regex(pattern.lower()) for pattern in args[1:]]
            for name in sorted(settings):
                if any(pattern.match(name) for pattern in patterns):
                    out.extend((name, settings[name]))
            return Map(tuple(out))
        if sub == b"SET":
            return Error("ERR CONFIG SET is not supported: DistKV is configured by its "
                         "command line")
        # RESETSTAT: it zeroes the security counters too
        refused = self._write_right(session, b"config|resetstat")
        if refused is not None:
            return refused
        self.dispatcher.stats.reset()
        self.dispatcher.accounts.failures = self.dispatcher.accounts.denied = 0
        return OK

    def client(self, args: Sequence[bytes], session: Session) -> Reply:
        refused = subcommand_refusal(b"CLIENT", args)
        if refused is not None:
            return refused
        sub = args[0].upper()
        if sub == b"KILL":  # closes other users' connections
            refused = self._write_right(session, b"client|kill")
            if refused is not None:
                return refused
        reply = self.clients.run(sub, args[1:], session)
        return reply if reply is not None else _unknown_subcommand(args[0], "CLIENT")

    def _write_right(self, session: Session, name: bytes) -> Optional[Error]:
        """NOPERM (counted) unless the user may write: for the subcommands of
        read commands that change the node (the table classes whole commands)."""
        user = session.user
        if user.can_write:
            return None
        return Error(self.dispatcher.accounts.refused(user, name, session.address))

    def auth(self, args: Sequence[bytes], session: Session) -> Reply:
        """AUTH <password> (the default user's) or AUTH <user> <password>."""
        if len(args) > 2:
            return SYNTAX
        if len(args) == 1:
            return self.dispatcher.login(session, None, args[0])
        return self.dispatcher.login(session, args[0], args[1])

    def _control(self) -> Optional[ClusterControl]:
        return self.dispatcher.cluster

    def cluster(self, args: Sequence[bytes], session: Session) -> Reply:
        """CLUSTER FORGET <id>, CLUSTER NODES, CLUSTER MYID (Redis's names)."""
        control = self._control()
        if control is None:
            return Error("ERR This instance has cluster support disabled")
        sub = args[0].upper()
        if sub == b"FORGET" and len(args) == 2:
            refused = self._write_right(session, b"cluster|forget")  # NODES is a read
            if refused is not None:
                return refused
            error = control.forget(args[1].decode("utf-8", "replace"))
            return OK if error is None else Error(error)
        if sub == b"NODES" and len(args) == 1:
            return Lines(tuple(control.nodes()))  # RESP: one bulk string, as Redis
        if sub == b"MYID" and len(args) == 1:
            return control.myid().encode("utf-8")
        if sub in (b"FORGET", b"NODES", b"MYID"):
            return Error("ERR wrong number of arguments for 'cluster|{}' command".format(
                sub.decode("ascii").lower()))
        return _unknown_subcommand(args[0], "CLUSTER")

    def leave(self, args: Sequence[bytes], session: Session) -> Reply:
        """LEAVE: this node leaves the cluster for good (see the README)."""
        control = self._control()
        if control is None:
            return Error("ERR This instance has cluster support disabled")
        said = control.leave()
        return Error(said) if said.startswith("ERR") else Status(said.encode("utf-8"))

    def members(self, args: Sequence[bytes], session: Session) -> Reply:
        """MEMBERS: one line per member-list entry, like STATUS."""
        control = self._control()
        if control is None:
            return Error("ERR This instance has cluster support disabled")
        return Lines(tuple(control.members()))

    def hello(self, args: Sequence[bytes], session: Session) -> Reply:
        """HELLO [protover [AUTH user password] [SETNAME name]], checked in
        Redis 7.0's order: the version, the options, the password, then
        whether the connection is authenticated at all."""
        if args:
            number = strict_int(args[0])
            if number is None:
                return Error("ERR Protocol version is not an integer or out of range")
            version = number
            if version not in (2, 3):
                return Error("NOPROTO unsupported protocol version")
        login = None
        name = None
        rest = list(args[1:])
        while rest:
            option = rest.pop(0)
            if option.upper() == b"AUTH" and len(rest) >= 2:
                login = rest.pop(0), rest.pop(0)
            elif option.upper() == b"SETNAME" and rest:
                name = rest.pop(0)
                if not valid_name(name):
                    return BAD_NAME
            else:
                return Error("ERR Syntax error in HELLO option '{}'".format(
                    option[:64].decode("utf-8", "replace")))
        if login is not None:
            refused = self.dispatcher.login(session, *login)
            if refused is not OK:
                return refused
        if session.user is None:
            return _HELLO_NOAUTH
        if name is not None:
            session.name = name
        if args and session.kind == "resp":
            session.protocol = version
        pairs: List[Tuple[str, Reply]] = [
            ("server", b"redis"),
            ("version", REDIS_VERSION.encode()),
            ("proto", Integer(session.protocol)),
            ("id", Integer(session.id)),
            ("mode", b"standalone"),
            ("role", b"master"),
            ("modules", Array(())),
            # Clients read "version" as the Redis release whose commands they
            # may send; DistKV's own version is its own field, as in INFO.
            ("distkv_version", DISTKV_VERSION.encode()),
        ]
        return Map(tuple(item for key, value in pairs for item in (key.encode(), value)))

