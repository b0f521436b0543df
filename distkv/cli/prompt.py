"""The interactive prompt: readline editing, history, and command-name completion.

The prompt is ``HOST:PORT>``, as redis-cli's. A line is split with Redis's
quoting (``SET k "a b\\n"``) and sent; the reply is printed formatted (see
:mod:`distkv.cli.format`). History is kept in ``$DISTKV_HISTFILE``, else
``$XDG_STATE_HOME/distkv/history`` when ``XDG_STATE_HOME`` is set, else
``~/.distkv_history`` (``/dev/null`` keeps none). Tab completes a command name
from the node's ``COMMAND LIST`` (from a built-in list if the node cannot
say), in the case it was typed in. ``quit``/``exit`` or end of input leave; a
lost connection is made again for the next command.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, List, Optional

from distkv.cli.client import Connection, ProtocolError
from distkv.cli.format import is_report, render
from distkv.front.inline import split_inline

if TYPE_CHECKING:
    from distkv.cli.main import Target

#: Command names offered when the node does not answer COMMAND LIST.
BUILTIN_COMMANDS = sorted("""
append auth client cluster command config copy dbsize del echo exec exists expire expireat
expiretime flushall flushdb get getdel getex getrange getset hello info keys leave members
memory mget mset msetnx multi discard persist pexpire pexpireat pexpiretime ping psetex pttl
quit randomkey rename renamenx scan select set setex setnx setrange status strlen substr
time touch ttl type unlink unwatch wait watch backup
""".split())


def history_file() -> str:
    explicit = os.environ.get("DISTKV_HISTFILE")
    if explicit:
        return explicit
    state = os.environ.get("XDG_STATE_HOME")
    if state:
        return os.path.join(state, "distkv", "history")
    return os.path.join(os.path.expanduser("~"), ".distkv_history")


class Completer:
    """readline's completer: command names matching the first word typed."""

    def __init__(self, names: List[str]) -> None:
        self.names = names
        self._matches: List[str] = []

    def complete(self, text: str, state: int) -> Optional[str]:
        import readline

        if state == 0:
            line = readline.get_line_buffer()
            if isinstance(line, bytes):  # PyPy's pyrepl gives bytes (and its get_begidx fails)
                line = line.decode("utf-8", "replace")
                begin = len(line) - len(text)  # as if the cursor were at the end
            else:
                begin = readline.get_begidx()
            if line[:begin].strip():
                self._matches = []  # only the command's name is completed
            else:
                upper = text[:1].isupper()
                self._matches = [(n.upper() if upper else n) + " "
                                 for n in self.names if n.startswith(text.lower())]
        return self._matches[state] if state < len(self._matches) else None


def command_names(conn: Connection) -> List[str]:
    try:
        reply = conn.call("COMMAND", "LIST")
    except (OSError, ProtocolError):
        return BUILTIN_COMMANDS
    if not isinstance(reply, list) or not reply:
        return BUILTIN_COMMANDS
    names = {n.decode("utf-8", "replace").lower() for n in reply if isinstance(n, bytes)}
    return sorted(names)


def prompt(target: Target, terminal: bool = True) -> int:
    """Read commands until ``quit`` or end of input; 0."""
    try:
        import readline
    except ImportError:  # an interpreter without it: no editing, no history
        readline = None  # type: ignore[assignment]
    conn: Optional[Connection] = None
    try:
        conn = target.connect()
    except (OSError, ProtocolError) as e:
        print(f"Could not connect to {target.address}: {e}", file=sys.stderr)
    histfile = history_file()
    if readline is not None:
        names = command_names(conn) if conn is not None else BUILTIN_COMMANDS
        try:
            readline.set_completer(Completer(names).complete)
            readline.set_completer_delims(" \t")
            readline.parse_and_bind("tab: complete")
            readline.read_history_file(histfile)
        except OSError:
            pass  # no history yet
        except Exception as e:  # PyPy's pyrepl on a terminal it cannot drive (TERM=dumb)
            print(f"(no line editing: {e})", file=sys.stderr)
            readline = None  # type: ignore[assignment]
    out = sys.stdout.buffer
    try:
        while True:
            where = target.address if conn is not None else "not connected"
            try:
                line = input(f"{where}> ")
            except EOFError:
                print()
                return 0
            words = split_inline(line.encode("utf-8", "surrogateescape"))
            if words is None:
                print("Invalid argument(s)")
                continue
            if not words:
                continue
            if words[0].lower() in (b"quit", b"exit"):
                return 0
            if conn is None:
                try:
                    conn = target.connect()
                except (OSError, ProtocolError) as e:
                    print(f"Could not connect to {target.address}: {e}")
                    continue
            try:
                reply = conn.call(*words)
            except (OSError, ProtocolError) as e:
                print(f"Error: {e}")
                conn.close()
                conn = None
                continue
            names = [w.decode("utf-8", "replace") for w in words[:2]]
            out.write(render(reply, terminal, is_report(names)))
            out.flush()
    finally:
        if conn is not None:
            conn.close()
        if readline is not None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(histfile)), exist_ok=True)
                readline.write_history_file(histfile)
            except OSError:
                pass
