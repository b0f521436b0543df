"""Which commands a connection may run: each command's access, and the command
table of each kind of client.

Every command declares the access it needs where it enters the table:
:data:`OPEN` (runs before a client has logged in: ``AUTH``, ``HELLO``,
``QUIT``), :data:`READ` (needs a logged-in user) or :data:`WRITE` (needs a
user with the write right). :class:`CommandTables` keeps three tables of the
same commands: the full one, a read-only user's (whose writes answer
``NOPERM``) and that of a client not logged in yet (whose every command but
the open ones answers ``NOAUTH``). While a node reads its data dir, every
table answers one error (``LOADING``) to every command but the few it names
(:meth:`CommandTables.hold`), changed in place. A connection's
:class:`~distkv.front.replies.Session` holds the table for its rights, and the
front ends look requests up there: a node without passwords gives every
connection the full table, so its requests pay nothing for the check. The
check, when there is one, reads the session's user at each request, so a
table chosen before an ``AUTH`` earlier in the same read still obeys it.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

from distkv.front.auth import NOAUTH, Accounts, User
from distkv.front.replies import Error, Session, wrong_arity

OPEN = "open"
READ = "read"
WRITE = "write"
ACCESS = (OPEN, READ, WRITE)

#: ``command(request, session)``, as :mod:`distkv.front.commands` has them.
Command = Callable[[Sequence[bytes], Session], Any]

_NOAUTH = Error(NOAUTH)


class CommandTables:
    """The commands by upper-case name, in one table per kind of client."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        #: Every command, unchecked: a readwrite user's (and everyone's when
        #: the node has no passwords).
        self.full: Dict[bytes, Command] = {}
        #: The access each command needs, by name.
        self.access: Dict[bytes, str] = {}
        #: name -> (least, most or -1 for any number of arguments)
        self.arity: Dict[bytes, Tuple[int, int]] = {}
        self._readonly: Dict[bytes, Command] = {}
        self._guest: Dict[bytes, Command] = {}
        #: While held (see :meth:`hold`): each table's commands as they were.
        self._held: Optional[List[Dict[bytes, Command]]] = None

    def add(self, name: bytes, command: Command, least: int, most: int, access: str) -> None:
        """Put ``command`` in every table; it takes ``least`` to ``most`` (-1:
        any number of) arguments and checks that itself."""
        if access not in ACCESS:
            raise ValueError(f"command {name!r}: access {access!r} is not one of {ACCESS}")
        self.full[name] = command
        self.arity[name] = (least, most)
        self.access[name] = access
        gated = self._gate(name, command, least, most, access == WRITE)
        self._readonly[name] = gated if access == WRITE else command
        self._guest[name] = command if access == OPEN else gated

    def _gate(self, name: bytes, command: Command, least: int, most: int,
              write: bool) -> Command:
        """``command``, run only for a user with the rights it needs; Redis's
        arity error first, as Redis checks arity before authentication."""
        tables = self

        def gate(request: Sequence[bytes], session: Session) -> Any:
            count = len(request) - 1
            if count < least or (most >= 0 and count > most):
                return wrong_arity(request[0])
            user = session.user
            if user is None:
                return _NOAUTH
            if write and not user.can_write:
                return Error(tables.accounts.refused(user, name, session.address))
            return command(request, session)

        return gate

    def hold(self, allowed: Collection[bytes], reply: Error) -> None:
        """Until :meth:`release`, every command but those ``allowed`` answers
        ``reply``, after Redis's arity check and, for a client not logged in,
        its ``NOAUTH`` (Redis checks both before ``LOADING``). The tables
        change in place, so every connection's table holds it at once."""
        if self._held is not None:
            return
        tables = (self.full, self._readonly, self._guest)
        self._held = [dict(table) for table in tables]
        refusals = {name: self._refuse(reply, *self.arity[name]) for name in self.full
                    if name not in allowed}
        for table in tables:
            table.update(refusals)

    @property
    def held(self) -> bool:
        """True while :meth:`hold` is in force."""
        return self._held is not None

    def release(self) -> None:
        """Every command runs again (see :meth:`hold`)."""
        if self._held is None:
            return
        for table, saved in zip((self.full, self._readonly, self._guest), self._held):
            table.update(saved)
        self._held = None

    @staticmethod
    def _refuse(reply: Error, least: int, most: int) -> Command:
        def refuse(request: Sequence[bytes], session: Session) -> Any:
            count = len(request) - 1
            if count < least or (most >= 0 and count > most):
                return wrong_arity(request[0])
            if session.user is None:
                return _NOAUTH
            return reply

        return refuse

    def for_user(self, user: Optional[User]) -> Dict[bytes, Command]:
        """The table of a client that is ``user`` (None: not logged in)."""
        if user is None:
            return self._guest
        return self.full if user.can_write else self._readonly
