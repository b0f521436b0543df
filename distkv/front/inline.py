"""Inline commands on a RESP connection, split as Redis splits them.

A RESP connection may send a plain line of words instead of an array
(``redis-cli`` does not, but people type them over ``telnet``); Redis splits
such a line with ``sdssplitargs``, and so does :func:`split_inline`::

    line   = *(blank) *(word 1*(blank)) [word]
    word   = 1*(plain | '"' *(char | escape) '"' | "'" *(char | "\\'") "'")
    escape = "\\x" hex hex | "\\n" | "\\r" | "\\t" | "\\b" | "\\a" | "\\" any

A closing quote must be followed by a blank or the end of the line, and an
unclosed quote is an error (the connection is then closed, as Redis does).
A NUL byte is an ordinary byte here (Redis looks for the line's end with
``strchr`` and so waits for more input after one). This applies only to
RESP connections: the text protocol (a connection whose first byte is not
``*``) keeps its own rules, where ``SET``'s value is the rest of the line and
quotes are ordinary bytes (see :mod:`distkv.front.textproto`).
"""

from __future__ import annotations

from typing import List, Optional

_SKIP = b" \t\n\v\f\r"  # C's isspace: skipped between words
_END = b" \n\r\t"  # what ends an unquoted word
_HEX = b"0123456789abcdefABCDEF"
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}


def split_inline(line: bytes) -> Optional[List[bytes]]:
    """The words of an inline command line (its line ending removed), or
    None if its quotes are unbalanced."""
    if b'"' not in line and b"'" not in line and b"\v" not in line and b"\f" not in line:
        return line.split()  # the usual line: no quotes, no rare blanks
    words: List[bytes] = []
    end = len(line)
    pos = 0
    while True:
        while pos < end and line[pos] in _SKIP:
            pos += 1
        if pos >= end:
            return words
        word = bytearray()
        quote = 0  # the quote we are inside, or 0
        while True:
            byte = line[pos] if pos < end else 0
            if quote == 34:  # "..."
                if (byte == 92 and pos + 3 < end and line[pos + 1] == 120
                        and line[pos + 2] in _HEX and line[pos + 3] in _HEX):
                    word.append(int(line[pos + 2 : pos + 4], 16))
                    pos += 3
                elif byte == 92 and pos + 1 < end:
                    pos += 1
                    word += _ESCAPES.get(line[pos], line[pos : pos + 1])
                elif byte == 34:
                    if pos + 1 < end and line[pos + 1] not in _SKIP:
                        return None
                    pos += 1
                    break
                elif pos >= end:
                    return None  # an unclosed quote
                else:
                    word.append(byte)
            elif quote == 39:  # '...'
                if byte == 92 and pos + 1 < end and line[pos + 1] == 39:
                    pos += 1
                    word.append(39)
                elif byte == 39:
                    if pos + 1 < end and line[pos + 1] not in _SKIP:
                        return None
                    pos += 1
                    break
                elif pos >= end:
                    return None
                else:
                    word.append(byte)
            elif pos >= end or byte in _END:
                break
            elif byte in (34, 39):
                quote = byte
            else:
                word.append(byte)
            pos += 1
        words.append(bytes(word))
