"""Replies as ``redis-cli`` prints them: quoted and numbered for a terminal, raw when piped.

For a terminal (redis-cli's *standard* output) a bulk string is quoted with
C-style escapes (``"a\\n\\xff"``), an integer is ``(integer) 1``, nil
``(nil)``, an error ``(error) ERR ...``, a status its text, an array numbered
``1) ...`` with nested arrays indented under their number, and an empty one
``(empty array)``. Piped (*raw*), a string is written as its bytes, an integer
as its digits, nil as nothing and an array one element per line. The reports
(``INFO``, ``STATUS``, ``MEMBERS``, ``CLUSTER NODES``) print raw everywhere,
as redis-cli does with ``INFO``, with no newline added after one that ends
with its own. Every other reply ends with a newline.
"""

from __future__ import annotations

from typing import List, Sequence

from distkv.cli.client import ReplyError, RespMap, Status, Value

#: Commands whose reply is a report meant to be read as text (redis-cli's list, and DistKV's).
RAW_REPORTS = {("INFO",), ("STATUS",), ("MEMBERS",), ("CLUSTER", "NODES"), ("CLUSTER", "INFO"),
               ("CLIENT", "LIST"), ("CLIENT", "INFO")}

_ESCAPES = {0x5C: b"\\\\", 0x22: b'\\"', 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
            0x07: b"\\a", 0x08: b"\\b"}


def quote(data: bytes) -> str:
    """Redis's ``sdscatrepr``: printable ASCII as it is, the rest escaped."""
    out = [b'"']
    for byte in data:
        escaped = _ESCAPES.get(byte)
        if escaped is not None:
            out.append(escaped)
        elif 0x20 <= byte < 0x7F:
            out.append(bytes((byte,)))
        else:
            out.append(b"\\x%02x" % byte)
    out.append(b'"')
    return b"".join(out).decode("ascii")


def is_report(request: Sequence[str]) -> bool:
    words = tuple(word.upper() for word in request[:2])
    return words[:1] in RAW_REPORTS or words in RAW_REPORTS


def tty(reply: Value, prefix: str = "") -> str:
    """``reply`` as redis-cli prints it to a terminal (no final newline)."""
    if isinstance(reply, ReplyError):
        return "(error) " + reply
    if isinstance(reply, Status):
        return str(reply)
    if reply is None:
        return "(nil)"
    if isinstance(reply, bool):
        return "(true)" if reply else "(false)"
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if isinstance(reply, float):
        return f"(double) {reply!r}"
    if isinstance(reply, bytes):
        return quote(reply)
    if isinstance(reply, list):
        return _tty_array(reply, prefix)
    raise TypeError(f"not a reply: {reply!r}")


def _tty_array(items: List[object], prefix: str) -> str:
    is_map = isinstance(items, RespMap)
    if not items:
        return "(empty hash)" if is_map else "(empty array)"
    count = len(items) // 2 if is_map else len(items)
    width = len(str(count))
    inner = prefix + " " * (width + 2)
    lines: List[str] = []
    step = 2 if is_map else 1
    for number, index in enumerate(range(0, len(items), step), 1):
        head = "" if index == 0 else prefix
        mark = "#" if is_map else ")"
        text = f"{head}{number:>{width}}{mark} " + tty(items[index], inner)  # type: ignore[arg-type]
        if is_map:
            text += " => " + tty(items[index + 1], inner)  # type: ignore[arg-type]
        lines.append(text)
    return "\n".join(lines)


def raw(reply: Value) -> bytes:
    """``reply`` as redis-cli writes it when its output is not a terminal."""
    if isinstance(reply, ReplyError):
        return reply.encode("utf-8") + b"\n"  # redis-cli's blank line after an error
    if isinstance(reply, Status):
        return reply.encode("utf-8")
    if reply is None:
        return b""
    if isinstance(reply, bool):
        return b"(true)" if reply else b"(false)"
    if isinstance(reply, (int, float)):
        return str(reply).encode()
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, RespMap):
        return b"\n".join(raw(reply[i]) + b" " + raw(reply[i + 1])  # type: ignore[arg-type]
                          for i in range(0, len(reply), 2))
    if isinstance(reply, list):
        return b"\n".join(raw(item) for item in reply)  # type: ignore[arg-type]
    raise TypeError(f"not a reply: {reply!r}")


def render(reply: Value, terminal: bool, report: bool = False) -> bytes:
    """The bytes to print for ``reply``, its final newline included."""
    if report:
        text = raw(reply)
        return text if text.endswith(b"\n") else text + b"\n"
    if terminal:
        return (tty(reply) + "\n").encode("utf-8")
    return raw(reply) + b"\n"
