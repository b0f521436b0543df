"""CLIENT: what a connection says about itself, and what it sees of the others.

``CLIENT SETNAME/GETNAME/ID/INFO/SETINFO`` concern the calling connection;
``CLIENT LIST`` lists every client connection of this node (text and RESP) in
Redis's ``key=value`` line format, with the fields DistKV knows (it keeps no
per-request idle time or query buffer figures, so those fields are absent);
``CLIENT KILL`` closes connections, in Redis's old form (``CLIENT KILL
addr:port``: ``OK`` or ``ERR No such client``) and new form (``ID``, ``ADDR``,
``LADDR``, ``USER``, ``SKIPME`` filters: the number closed). A client that
kills itself gets its reply before the connection closes, as in Redis.
Replies and errors are Redis 7.0's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from distkv.front.replies import (
    NIL,
    OK,
    SYNTAX,
    Error,
    Integer,
    Reply,
    Session,
    Status,
    strict_int,
)

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher

_CLIENT_NAME = re.compile(rb"^[!-~]*$")
BAD_NAME = Error("ERR Client names cannot contain spaces, newlines or special characters.")
_NO_SUCH_CLIENT = Error("ERR No such client")
_BAD_ID = Error("ERR client-id should be greater than 0")
_BYE = Status(b"OK", close=True)


def valid_name(name: bytes) -> bool:
    """Whether ``name`` may name a client (printable ASCII, no spaces)."""
    return bool(_CLIENT_NAME.match(name))


class ClientCommands:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def run(self, sub: bytes, args: Sequence[bytes], session: Session) -> Optional[Reply]:
        """CLIENT ``sub`` with its ``args`` (arity already checked); None
        for a subcommand DistKV does not have."""
        if sub == b"SETNAME":
            if not valid_name(args[0]):
                return BAD_NAME
            session.name = args[0]
            return OK
        if sub == b"GETNAME":
            return session.name or NIL
        if sub == b"ID":
            return Integer(session.id)
        if sub == b"SETINFO":
            if args[0].upper() not in (b"LIB-NAME", b"LIB-VER"):
                return Error("ERR Unrecognized option '{}'".format(
                    args[0][:64].decode("utf-8", "replace")))
            return OK
        if sub == b"INFO":
            return self.describe(session) + b"\n"
        if sub == b"LIST":
            return self.list(args)
        if sub == b"KILL":
            return self.kill(args, session)
        return None

    def describe(self, session: Session) -> bytes:
        """One line of CLIENT LIST."""
        age = max(0, int(self.dispatcher.seconds() - session.since)) if session.since else 0
        user = getattr(session.user, "name", None)
        return b"id=%d addr=%s laddr=%s fd=-1 name=%s age=%d flags=N db=0 multi=-1 " \
               b"user=%s resp=%d kind=%s" % (
                   session.id, session.peer.encode(), session.local.encode(), session.name,
                   age, user if isinstance(user, bytes) else b"default", session.protocol,
                   session.kind.encode())

    def list(self, args: Sequence[bytes]) -> Reply:
        """CLIENT LIST [TYPE normal|...] [ID id...]"""
        sessions = list(self.dispatcher.stats.clients.values())
        if args:
            option = args[0].upper()
            if option == b"TYPE" and len(args) == 2:
                kind = args[1].lower()
                if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                    return Error("ERR Unknown client type '{}'".format(
                        args[1][:64].decode("utf-8", "replace")))
                if kind != b"normal":
                    sessions = []
            elif option == b"ID" and len(args) >= 2:
                wanted = set()
                for text in args[1:]:
                    number = strict_int(text)
                    if number is None or number <= 0:
                        return Error("ERR Invalid client ID")
                    wanted.add(number)
                sessions = [s for s in sessions if s.id in wanted]
            else:
                return SYNTAX
        return b"".join(self.describe(s) + b"\n" for s in sorted(sessions, key=lambda s: s.id))

    def kill(self, args: Sequence[bytes], session: Session) -> Reply:
        clients = self.dispatcher.stats.clients
        if len(args) == 1:  # the old form: CLIENT KILL addr:port
            address = args[0].decode("utf-8", "replace")
            for other in clients.values():
                if other.peer == address:
                    if other is session:
                        return _BYE
                    _close(other)
                    return OK
            return _NO_SUCH_CLIENT
        if len(args) % 2:
            return SYNTAX
        # What each filter compares, and the value it wants.
        wanted: List[Tuple[Callable[[Session], object], object]] = []
        skip_me = True
        for index in range(0, len(args), 2):
            option, value = args[index].upper(), args[index + 1]
            if option == b"ID":
                number = strict_int(value)
                if number is None or number <= 0:
                    return _BAD_ID
                wanted.append((_id, number))
            elif option == b"ADDR":
                wanted.append((_peer, value.decode("utf-8", "replace")))
            elif option == b"LADDR":
                wanted.append((_local, value.decode("utf-8", "replace")))
            elif option == b"USER":
                wanted.append((_user, value))
            elif option == b"TYPE":
                kind = value.lower()
                if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                    return Error("ERR Unknown client type '{}'".format(
                        value[:64].decode("utf-8", "replace")))
                if kind != b"normal":
                    wanted.append((_id, 0))  # no such client here
            elif option == b"SKIPME":
                if value.lower() not in (b"yes", b"no"):
                    return SYNTAX
                skip_me = value.lower() == b"yes"
            else:
                return SYNTAX
        killed = 0
        close_me = False
        for other in list(clients.values()):
            if all(field(other) == value for field, value in wanted):
                if other is session:
                    if skip_me:
                        continue
                    close_me = True
                else:
                    _close(other)
                killed += 1
        if close_me:
            # The reply is written before the transport gets to close.
            _close(session)
        return Integer(killed)


def _close(session: Session) -> None:
    hang_up = session.hang_up
    if hang_up is not None:
        hang_up()


def _id(session: Session) -> object:
    return session.id


def _peer(session: Session) -> object:
    return session.peer


def _local(session: Session) -> object:
    return session.local


def _user(session: Session) -> object:
    return getattr(session.user, "name", None)
