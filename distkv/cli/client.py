"""A small synchronous RESP client for the CLI: one blocking socket, optional TLS.

Requests go out as RESP arrays of bulk strings; replies are read into plain
Python values: ``bytes`` (bulk string), :class:`Status` (``+``),
:class:`ReplyError` (``-``, returned, not raised), ``int``, ``None`` (nil),
``list`` (arrays and RESP3 sets and pushes), :class:`RespMap` (RESP3 maps),
``float`` and ``bool`` (RESP3). :meth:`Connection.pipeline` sends many
requests in one write and reads their replies in order, which is what dump
and load use to move many keys per round trip.
"""

from __future__ import annotations

import socket
import ssl
from typing import List, Optional, Sequence, Union


class Status(str):
    """A simple-string reply (``+OK``)."""


class ReplyError(str):
    """An error reply (``-ERR ...``), its text without the ``-``."""


class RespMap(list):  # type: ignore[type-arg]
    """A RESP3 map, as its keys and values alternating."""


Value = Union[None, bytes, int, float, bool, Status, ReplyError, List[object]]


class ProtocolError(Exception):
    """The node sent something that is not RESP, or closed the connection."""


def encode(args: Sequence[Union[bytes, str]]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        # surrogateescape: an argument from sys.argv keeps the bytes it was given
        data = arg.encode("utf-8", "surrogateescape") if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Connection:
    """One connection to a node at ``host``:``port`` (TLS with ``tls``)."""

    def __init__(self, host: str, port: int, tls: Optional[ssl.SSLContext] = None,
                 timeout: Optional[float] = 10.0) -> None:
        self.host = host
        self.port = port
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        self._sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, *args: Union[bytes, str]) -> Value:
        """Send one request, return its reply."""
        self._sock.sendall(encode(args))
        return self.read()

    def pipeline(self, requests: Sequence[Sequence[Union[bytes, str]]]) -> List[Value]:
        """Send every request at once, then read their replies in order."""
        self._sock.sendall(b"".join(encode(request) for request in requests))
        return [self.read() for _ in requests]

    def login(self, user: Optional[str], password: Optional[bytes]) -> None:
        """AUTH, if a password is given; raises :class:`ProtocolError` on refusal."""
        if password is None:
            return
        args: List[Union[bytes, str]] = ["AUTH"]
        if user is not None:
            args.append(user)
        args.append(password)
        reply = self.call(*args)
        if isinstance(reply, ReplyError):
            raise ProtocolError(str(reply))

    def _line(self) -> bytes:
        line = self._file.readline(1 << 20)
        if not line.endswith(b"\r\n"):
            raise ProtocolError("connection closed by the node" if not line
                                else "malformed reply from the node")
        return line[:-2]

    def _exact(self, size: int) -> bytes:
        data = self._file.read(size + 2)
        if len(data) != size + 2:
            raise ProtocolError("connection closed by the node")
        return data[:-2]

    def read(self) -> Value:
        """One reply (RESP2, and RESP3's types)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        try:
            if kind == b"+":
                return Status(rest.decode("utf-8", "replace"))
            if kind == b"-":
                return ReplyError(rest.decode("utf-8", "replace"))
            if kind == b":":
                return int(rest)
            if kind in (b"$", b"=", b"!"):
                size = int(rest)
                if size < 0:
                    return None
                data = self._exact(size)
                if kind == b"!":
                    return ReplyError(data.decode("utf-8", "replace"))
                return data[4:] if kind == b"=" else data  # verbatim: drop "txt:"
            if kind in (b"*", b"~", b">"):
                count = int(rest)
                return None if count < 0 else [self.read() for _ in range(count)]
            if kind == b"%":
                return RespMap(self.read() for _ in range(2 * int(rest)))
            if kind == b"_":
                return None
            if kind == b",":
                return float(rest)
            if kind == b"#":
                return rest == b"t"
            if kind == b"(":
                return int(rest)
        except ValueError:
            pass
        raise ProtocolError(f"malformed reply from the node: {line[:64]!r}")
