"""``distkv``: the command line, and what each form of it runs.

::

    distkv [-h HOST] [-p PORT] [--tls [--cacert F] [--cert F --key F] [--insecure]]
           [--user U] [--pass-file F] [-x] [--raw | --no-raw]
           [COMMAND [ARG ...] | cluster [ADDR] | dump FILE | load FILE | backup DIR]

With no command and a terminal on stdin it opens the prompt
(:mod:`distkv.cli.prompt`); with no command and stdin piped it runs one
command per line of stdin, as ``redis-cli`` does. ``-h`` is the host, as in
``redis-cli``: help is ``--help``. A command's reply is printed as redis-cli
prints it (:mod:`distkv.cli.format`), and an error reply makes the exit status
1. ``cluster``, ``dump``, ``load`` and ``backup`` (lower or upper case) are the
client's own (:mod:`distkv.cli.cluster`, :mod:`distkv.cli.dumpload`);
``CLUSTER NODES``, ``CLUSTER MYID`` and ``CLUSTER FORGET id`` go to the node.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
from typing import BinaryIO, List, Optional, Sequence, Union

import distkv
from distkv.cli.client import Connection, ProtocolError, ReplyError, Status
from distkv.cli.format import is_report, render
from distkv.front.inline import split_inline

#: What CLUSTER takes as its first argument when it is the node's command.
CLUSTER_SUBCOMMANDS = {"NODES", "MYID", "FORGET", "HELP", "INFO"}

#: Exit statuses: 1 an error reply (or a member not serving, for ``cluster``),
#: 2 a usage error or no connection.
ERROR, UNREACHABLE = 1, 2


class Target:
    """Where the CLI connects, and as whom."""

    def __init__(self, host: str, port: int, tls: Optional[ssl.SSLContext],
                 user: Optional[str], password: Optional[bytes]) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password

    def at(self, host: str, port: int) -> Target:
        """The same settings for another node."""
        return Target(host, port, self.tls, self.user, self.password)

    def connect(self, timeout: Optional[float] = 10.0) -> Connection:
        """A logged-in connection; OSError or ProtocolError if it cannot be had."""
        conn = Connection(self.host, self.port, self.tls, timeout)
        try:
            conn.login(self.user, self.password)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distkv", add_help=False,
        description="The DistKV client: a prompt, one-shot commands, and cluster tools.",
        epilog="Forms: distkv [COMMAND [ARG...]] | cluster [ADDR] | dump FILE | load FILE | "
               "backup DIR. Exit status: 0, 1 on an error reply (cluster: a member not up "
               "and serving), 2 when the node cannot be reached or the usage is wrong.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="version", version=f"distkv {distkv.__version__}")
    p.add_argument("-h", "--host", default=os.environ.get("DISTKV_HOST", "127.0.0.1"),
                   help="the node's host (default 127.0.0.1, or $DISTKV_HOST)")
    p.add_argument("-p", "--port", type=int, default=int(os.environ.get("DISTKV_PORT", "9000")),
                   help="the node's port (default 9000, or $DISTKV_PORT)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cacert", help="PEM file of the CA(s) to verify the node with (--tls)")
    p.add_argument("--cert", help="PEM file: a client certificate to present (--tls)")
    p.add_argument("--key", help="PEM file: the client certificate's key (--tls)")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the node's certificate (--tls)")
    p.add_argument("--user", help="log in as this user (AUTH user password)")
    p.add_argument("--pass-file", help="a file whose first line is the password "
                   "(or $DISTKV_PASSWORD); never give a password on the command line")
    p.add_argument("-x", action="store_true", dest="stdin_arg",
                   help="read the command's last argument from stdin")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true", dest="raw", default=None,
                      help="print replies raw even on a terminal")
    mode.add_argument("--no-raw", action="store_false", dest="raw",
                      help="print replies formatted even when piped")
    p.add_argument("words", nargs=argparse.REMAINDER, help="the command and its arguments")
    return p


def _tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    if not args.tls:
        return None
    context = ssl.create_default_context(cafile=args.cacert)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    return context


def _password(args: argparse.Namespace) -> Optional[bytes]:
    if args.pass_file:
        with open(args.pass_file, "rb") as f:
            first = f.readline()
        return first.rstrip(b"\n").rstrip(b"\r")
    env = os.environ.get("DISTKV_PASSWORD")
    return env.encode("utf-8") if env else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        target = Target(args.host, args.port, _tls_context(args), args.user, _password(args))
    except (OSError, ssl.SSLError) as e:
        print(f"distkv: {e}", file=sys.stderr)
        return UNREACHABLE
    words: List[str] = args.words
    if words and words[0] == "--":
        words = words[1:]
    verb = words[0].lower() if words else ""
    stdout = sys.stdout.buffer
    try:
        if verb == "cluster" and (len(words) == 1 or (
                len(words) == 2 and words[1].upper() not in CLUSTER_SUBCOMMANDS)):
            from distkv.cli.cluster import show_cluster
            return show_cluster(target, words[1] if len(words) == 2 else None, stdout)
        if verb in ("dump", "load", "backup") and len(words) == 2:
            from distkv.cli import dumpload
            if verb == "backup":
                return backup(target, words[1], stdout)
            run = dumpload.dump if verb == "dump" else dumpload.load
            return run(target, words[1], sys.stderr)
        terminal = sys.stdout.isatty() if args.raw is None else not args.raw
        if not words:
            if sys.stdin.isatty():
                from distkv.cli.prompt import prompt
                return prompt(target, terminal)
            return run_lines(target, sys.stdin.buffer, stdout, terminal)
        request: List[Union[str, bytes]] = list(words)
        if args.stdin_arg:
            request.append(sys.stdin.buffer.read())
        with target.connect() as conn:
            return one_shot(conn, request, stdout, terminal)
    except (OSError, ProtocolError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"distkv: {target.address}: {why}", file=sys.stderr)
        return UNREACHABLE


def one_shot(conn: Connection, request: Sequence[Union[str, bytes]], out: BinaryIO,
             terminal: bool) -> int:
    """Run one request and print its reply; 1 if it was an error."""
    reply = conn.call(*request)
    names = [w if isinstance(w, str) else w.decode("utf-8", "replace") for w in request[:2]]
    out.write(render(reply, terminal, is_report(names)))
    out.flush()
    return ERROR if isinstance(reply, ReplyError) else 0


def run_lines(target: Target, lines: BinaryIO, out: BinaryIO, terminal: bool) -> int:
    """One command per line of ``lines`` (split with Redis's quoting); 1 if any failed."""
    status = 0
    with target.connect() as conn:
        for line in lines:
            words = split_inline(line.rstrip(b"\r\n"))
            if words is None:
                print(f"distkv: unbalanced quotes in: {line!r}", file=sys.stderr)
                status = ERROR
                continue
            if words:
                status = one_shot(conn, words, out, terminal) or status
    return status


def backup(target: Target, directory: str, out: BinaryIO) -> int:
    """``BACKUP path`` on the node: it writes the copy to ``directory`` on its
    own machine (a relative path is made absolute here, for a node on this one)."""
    path = os.path.abspath(directory) if target.host in _LOCAL else directory
    with target.connect(timeout=None) as conn:
        reply = conn.call("BACKUP", path)
    out.write(render(reply, False))
    out.flush()
    return ERROR if isinstance(reply, ReplyError) or not isinstance(reply, Status) else 0


_LOCAL = {"127.0.0.1", "localhost", "::1", socket.gethostname()}


def run() -> None:
    """The console script."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
