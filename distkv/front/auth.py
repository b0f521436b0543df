"""Client authentication: users, their rights, and checking passwords.

A node either requires no password (every client is Redis's ``default``
user, with every right, as a Redis server without ``requirepass`` is), or
knows a table of :class:`User` entries read from ``--requirepass-file`` (the
``default`` user's password) and ``--users-file`` (named users, each with
``read`` or ``readwrite`` rights). :class:`Accounts` checks a name and
password against that table in constant time, counts the failures (INFO's
``acl_access_denied_auth``) and logs them at most once a second, never with
the password nor with a name it does not know (a password typed in the name's
place). The users file has one user per line::

    # comment lines and blank lines are ignored
    <name> <read|readwrite> ><password>        ; the rest of the line, spaces kept
    <name> <read|readwrite> #<sha256 hex>      ; the password's SHA-256, 64 hex digits

Which commands need which right is the command table's business
(:mod:`distkv.front.commands`); this module only knows users.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Union

from twisted.logger import Logger

from distkv.ratelog import RateLimit

log = Logger()

READ = b"read"
READWRITE = b"readwrite"

_NAME = re.compile(rb"^[!-~]{1,128}$")
_HEX = re.compile(rb"^[0-9a-fA-F]{64}$")


class User(NamedTuple):
    """A client identity: its name, its password's SHA-256 (None: any password
    does, the default user of a node without passwords) and whether it may write."""

    name: bytes
    digest: Optional[bytes]
    can_write: bool


#: Every client of a node that requires no password, as Redis's ``nopass`` default user.
OPEN_DEFAULT = User(b"default", None, True)

WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
NOAUTH = "NOAUTH Authentication required."
NO_PASSWORD_SET = (
    "ERR AUTH <password> called without any password configured for the default "
    "user. Are you sure your configuration is correct?"
)


class UsersFileError(ValueError):
    """A users file line that is not a user; ``line`` is its number (from 1)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


def first_line(data: bytes) -> bytes:
    """A password file's password: its first line, line ending stripped."""
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def digest_of(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()


def parse_users(data: bytes) -> Dict[bytes, User]:
    """The users a users file lists (see the module's grammar), by name."""
    users: Dict[bytes, User] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        parts = line.lstrip().split(None, 2)
        if len(parts) < 3 or parts[2][:1] not in (b">", b"#"):
            raise UsersFileError(
                number, "expected '<name> <read|readwrite> ><password>' or "
                "'<name> <read|readwrite> #<sha256 hex>'"
            )
        name, rights, secret = parts
        if not _NAME.match(name):
            raise UsersFileError(number, "a user name is 1-128 printable characters, no spaces")
        if name in users:
            raise UsersFileError(number, f"user {name.decode()!r} is listed twice")
        if rights not in (READ, READWRITE):
            raise UsersFileError(
                number, f"unknown rights {rights[:32].decode('utf-8', 'replace')!r}: "
                "use read or readwrite"
            )
        if secret[:1] == b">":
            password = secret[1:]  # the rest of the line, spaces kept
            if not password:
                raise UsersFileError(number, f"empty password for user {name.decode()!r}")
            digest = digest_of(password)
        else:
            hexdigits = secret[1:].rstrip()
            if not _HEX.match(hexdigits):
                raise UsersFileError(
                    number, "a '#' password is the password's SHA-256 as 64 hex digits"
                )
            digest = bytes.fromhex(hexdigits.decode("ascii"))
        users[name] = User(name, digest, rights == READWRITE)
    if not users:
        raise UsersFileError(0, "the file lists no user")
    return users


# Compared against when the name is unknown, so an unknown name costs the
# same as a wrong password.
_NOBODY = digest_of(b"\x00no such user")


class Accounts:
    """The users a node knows (None: no password required) and its counters.

    ``clock`` paces the log lines about failures (``reactor.seconds`` or
    :func:`time.monotonic`).
    """

    def __init__(
        self,
        users: Optional[Mapping[bytes, User]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = dict(users) if users is not None else None
        #: Whether a client must authenticate before it runs a command.
        self.required = users is not None
        #: Failed AUTH and HELLO AUTH attempts (Redis's acl_access_denied_auth).
        self.failures = 0
        #: Commands refused for want of the right (acl_access_denied_cmd).
        self.denied = 0
        self._limit = RateLimit(clock)
        self._denials_limit = RateLimit(clock)

    def first_user(self) -> Optional[User]:
        """Who a new connection is before any AUTH: nobody, when a password is required."""
        return None if self.required else OPEN_DEFAULT

    def login(self, name: Optional[bytes], password: bytes, peer: str) -> Union[User, str]:
        """The user ``name`` (None: ``default``, as in ``AUTH <password>``) if
        ``password`` is theirs; else the error to reply (Redis's words)."""
        users = self._users
        if users is None:
            # No passwords: the default user takes any password, as in Redis.
            if name is None:
                return NO_PASSWORD_SET
            if name == OPEN_DEFAULT.name:
                return OPEN_DEFAULT
            self._failed(None, peer)
            return WRONGPASS
        user = users.get(OPEN_DEFAULT.name if name is None else name)
        expected = user.digest if user is not None and user.digest is not None else _NOBODY
        if hmac.compare_digest(digest_of(password), expected) and user is not None:
            return user
        self._failed(user, peer)
        return WRONGPASS

    def _failed(self, user: Optional[User], peer: str) -> None:
        self.failures += 1
        held = self._limit.allow()
        if held < 0:
            return
        log.warn(
            "Authentication failed for {who} from {peer} (failed logins so far: {failures}"
            "{held})",
            who=f"user {user.name.decode('ascii', 'replace')}" if user else "an unknown user",
            peer=peer,
            failures=self.failures,
            held=f"; {held} similar warnings suppressed" if held else "",
        )

    def refused(self, user: User, command: bytes, peer: str) -> str:
        """Count a command refused to ``user`` for want of the write right;
        the error to reply (Redis 7.0's words)."""
        self.denied += 1
        name = command.decode("utf-8", "replace").lower()
        held = self._denials_limit.allow()
        if held >= 0:
            log.info(
                "User {user} from {peer} may not run {command}: read-only{held}",
                user=user.name.decode("ascii", "replace"), peer=peer, command=name[:32],
                held=f" ({held} similar warnings suppressed)" if held else "",
            )
        return f"NOPERM this user has no permissions to run the '{name}' command"
