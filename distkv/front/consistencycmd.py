"""The CONSISTENCY command: a connection's consistency levels.

Each connection reads and writes at a level (see :mod:`distkv.cluster.quorum`
and :mod:`distkv.front.levelcmds`): the node's ``--read-level`` and
``--write-level`` until it says otherwise::

    CONSISTENCY                             the levels in force
    CONSISTENCY <level>                     both
    CONSISTENCY READ <level> [WRITE <level>]
    CONSISTENCY WRITE <level> [READ <level>]
    CONSISTENCY DEFAULT                     back to the node's

and the reply lists the levels in force (``read QUORUM write ALL``). The
switch waits for the connection's blind writes to settle, as a command
that fetches does (one may run again, and must not overwrite a later
command run at ``ONE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple, Union

from distkv.cluster.quorum import parse_level
from distkv.front.replies import SYNTAX, Error, Reply, Session

if TYPE_CHECKING:
    from distkv.front.commands import Outcome
    from distkv.front.levelcmds import Levels

#: The levels a CONSISTENCY command chose: (read, write), None for unchanged.
Chosen = Tuple[Optional[str], Optional[str]]


def command(levels: Levels, args: Sequence[bytes], session: Session) -> Outcome:
    """CONSISTENCY [args]: report or change ``session``'s levels."""
    if not args:
        return levels.in_force(session)
    if session.multi is not None:
        return Error("ERR CONSISTENCY inside MULTI is not allowed")
    parsed = parse_levels(args)
    if isinstance(parsed, Error):
        return parsed
    default = args[0].upper() == b"DEFAULT"
    return levels.in_order(session, lambda: _switch(levels, session, parsed, default))


def _switch(levels: Levels, session: Session, chosen: Chosen, default: bool) -> Reply:
    read, write = chosen
    if default:
        session.read_level = session.write_level = None
    else:
        session.read_level = read or session.read_level
        session.write_level = write or session.write_level
    base = levels.dispatcher.base_table(session)
    session.commands = levels.table(base, session)
    return levels.in_force(session)


def parse_levels(args: Sequence[bytes]) -> Union[Chosen, Error]:
    """CONSISTENCY's arguments: (read, write) levels (None: unchanged), or an Error."""
    words = [arg.upper() for arg in args]
    if words == [b"DEFAULT"]:
        return (None, None)
    if len(words) == 1 and words[0] not in (b"READ", b"WRITE"):
        level = _level(words[0])
        return level if isinstance(level, Error) else (level, level)
    if len(words) not in (2, 4):
        return SYNTAX
    chosen: Dict[bytes, str] = {}
    for index in range(0, len(words), 2):
        which = words[index]
        if which not in (b"READ", b"WRITE") or which in chosen:
            return SYNTAX
        level = _level(words[index + 1])
        if isinstance(level, Error):
            return level
        chosen[which] = level
    return (chosen.get(b"READ"), chosen.get(b"WRITE"))


def _level(word: bytes) -> Union[str, Error]:
    level = parse_level(word)
    if level is None:
        shown = word[:40].decode("ascii", "replace")
        return Error(f"ERR unknown consistency level '{shown}' "
                     "(ONE, QUORUM, ALL or LINEARIZABLE)")
    return level
