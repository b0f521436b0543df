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

import re
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

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
)

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry

#: The Redis release whose commands and replies DistKV follows; clients read it
#: from INFO and HELLO to decide what they may send.
REDIS_VERSION = "7.0.0"
DISTKV_VERSION = "0.3"

DEFAULT_SECTIONS = ("server", "clients", "persistence", "stats", "replication", "keyspace")

#: Key positions (first, last, step) for COMMAND, as Redis reports them.
_KEY_SPECS = {
    b"GET": (1, 1, 1), b"SET": (1, 1, 1), b"DEL": (1, -1, 1), b"EXISTS": (1, -1, 1),
    b"MGET": (1, -1, 1), b"MSET": (1, -1, 2),
}
_CLIENT_NAME = re.compile(rb"^[!-~]*$")

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
    return Error(
        "ERR unknown subcommand '{}'. Try {} HELP.".format(
            sub[:64].decode("utf-8", "replace"), command
        )
    )


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
        sections.setdefault("server", []).insert(0, ("redis_version", REDIS_VERSION))
        sections["server"].insert(1, ("distkv_version", DISTKV_VERSION))
        sections["clients"] = [("connected_clients", stats.connected_clients)]
        accounts = dispatcher.accounts
        sections.setdefault("stats", [])[0:0] = [
            ("total_connections_received", stats.connections_received),
            ("total_commands_processed", stats.commands_processed),
            ("acl_access_denied_auth", accounts.failures),
            ("acl_access_denied_cmd", accounts.denied),
        ]
        keys = dispatcher.store_size()
        sections["keyspace"] = [("db0", f"keys={keys},expires=0,avg_ttl=0")] if keys else []
        return sections

    def command(self, args: Sequence[bytes], session: Session) -> Reply:
        dispatcher = self.dispatcher
        if not args:
            return Array(tuple(self._describe(name) for name in dispatcher.names()))
        sub = args[0].upper()
        if sub == b"COUNT" and len(args) == 1:
            return Integer(len(dispatcher.names()))
        if sub == b"DOCS":
            return Array(())  # an empty map: clients fall back to no hints
        if sub == b"INFO":
            known = set(dispatcher.names())
            return Array(tuple(
                self._describe(name.upper()) if name.upper() in known else NIL
                for name in args[1:]
            ))
        return _unknown_subcommand(args[0], "COMMAND")

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

        sub = args[0].upper()
        if sub == b"GET" and len(args) >= 2:
            settings = self.dispatcher.config
            out: List[Reply] = []
            for name in sorted(settings):
                if any(glob_regex(pattern.lower()).match(name) for pattern in args[1:]):
                    out.extend((name, settings[name]))
            return Map(tuple(out))
        if sub == b"SET":
            return Error("ERR CONFIG SET is not supported: DistKV is configured by its "
                         "command line")
        if sub == b"RESETSTAT" and len(args) == 1:
            return OK
        return _unknown_subcommand(args[0], "CONFIG")

    def client(self, args: Sequence[bytes], session: Session) -> Reply:
        sub = args[0].upper()
        if sub == b"SETNAME" and len(args) == 2:
            if not _CLIENT_NAME.match(args[1]):
                return Error("ERR Client names cannot contain spaces, newlines or "
                             "special characters.")
            session.name = args[1]
            return OK
        if sub == b"GETNAME" and len(args) == 1:
            return session.name or NIL
        if sub == b"ID" and len(args) == 1:
            return Integer(session.id)
        if sub == b"SETINFO" and len(args) == 3:
            if args[1].upper() not in (b"LIB-NAME", b"LIB-VER"):
                return Error("ERR Unrecognized option '{}'".format(
                    args[1][:64].decode("utf-8", "replace")))
            return OK
        if sub == b"INFO" and len(args) == 1:
            return b"id=%d addr=%s name=%s" % (
                session.id, session.address.encode(), session.name)
        return _unknown_subcommand(args[0], "CLIENT")

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
            user = session.user
            if not user.can_write:  # CLUSTER NODES is a read; FORGET changes the cluster
                return Error(self.dispatcher.accounts.refused(user, b"cluster|forget",
                                                              session.address))
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
            try:
                version = int(args[0])
            except ValueError:
                return Error("ERR Protocol version is not an integer or out of range")
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
                if not _CLIENT_NAME.match(name):
                    return Error("ERR Client names cannot contain spaces, newlines or "
                                 "special characters.")
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
        ]
        return Map(tuple(item for key, value in pairs for item in (key.encode(), value)))

