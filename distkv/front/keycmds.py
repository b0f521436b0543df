"""String and key commands beyond GET/SET/DEL: APPEND, GETRANGE, RENAME, COPY...

Each write here is an ordinary versioned write of the whole value (see
:class:`~distkv.store.store.Store`): a read-modify-write such as ``APPEND`` or
``SETRANGE`` reads this node's value and stores the result as a new version,
so two of them made at once through two nodes do not merge: the later
version wins on every node and the other's change is lost, as with two
``SET``s. ``RENAME`` and ``COPY`` are a write of the destination (and, for
``RENAME``, a delete of the source) made in one turn of this node, so they
commit together here, but they replicate as separate writes: a reader on
another node may briefly see both keys, or (if the delete arrives first)
neither. No value larger than the node's request limit (key included) is
ever stored, whatever command builds it, so every replicated write fits a
peer frame. Arguments are parsed as Redis parses them (see
:func:`~distkv.front.replies.strict_int`) and replies and errors are worded
as Redis 7.0's.
"""

from __future__ import annotations

import random
import sys
from typing import TYPE_CHECKING, Dict, Optional, Sequence

from distkv.front.replies import (
    NIL,
    NOT_INTEGER,
    OK,
    SYNTAX,
    Array,
    Error,
    Integer,
    Reply,
    Session,
    Status,
    int32,
    strict_int,
    wrong_arity,
)
from distkv.front.servercmds import subcommand_refusal
from distkv.store import entries
from distkv.store.entries import expires_of

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry, Outcome

TOO_BIG = Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
NO_SUCH_KEY = Error("ERR no such key")
SAME_OBJECT = Error("ERR source and destination objects are the same")
OUT_OF_RANGE_DB = Error("ERR DB index is out of range")
_STRING = Status(b"string")
_NONE = Status(b"none")


def table(dispatcher: Dispatcher) -> Dict[bytes, Entry]:
    """The string and key commands, bound to ``dispatcher``."""
    commands = KeyCommands(dispatcher)
    return {
        b"APPEND": (commands.append, 2, 2, "write"),
        b"STRLEN": (commands.strlen, 1, 1, "read"),
        b"GETRANGE": (commands.getrange, 3, 3, "read"),
        b"SUBSTR": (commands.getrange, 3, 3, "read"),
        b"SETRANGE": (commands.setrange, 3, 3, "write"),
        b"MSETNX": (commands.msetnx, 2, -1, "write"),
        b"TYPE": (commands.type, 1, 1, "read"),
        b"UNLINK": (commands.unlink, 1, -1, "write"),
        b"TOUCH": (commands.touch, 1, -1, "read"),
        b"RENAME": (commands.rename, 2, 2, "write"),
        b"RENAMENX": (commands.renamenx, 2, 2, "write"),
        b"COPY": (commands.copy, 2, -1, "write"),
        b"RANDOMKEY": (commands.randomkey, 0, 0, "read"),
        b"TIME": (commands.time, 0, 0, "read"),
        b"MEMORY": (commands.memory, 1, -1, "read"),
    }


class KeyCommands:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self._random = random.Random()


    def _fits(self, key: bytes, size: int) -> bool:
        """Whether a value of ``size`` bytes under ``key`` fits a request."""
        return len(key) + size <= self.dispatcher.max_request

    def append(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key, tail = args
        current = self.store.live(key)
        value = b"" if current is None else current[0] or b""
        if not self._fits(key, len(value) + len(tail)):
            return TOO_BIG
        self.store.set(key, value + tail, _expiry(current))  # keeps its expiry
        return self.dispatcher.after_commit(Integer(len(value) + len(tail)))

    def strlen(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        return Integer(len(self.store.get(args[0]) or b""))

    def getrange(self, args: Sequence[bytes], session: Session) -> Outcome:
        """GETRANGE key start end, both inclusive, negative from the end."""
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        start, end = strict_int(args[1]), strict_int(args[2])
        if start is None or end is None:
            return NOT_INTEGER
        value = self.store.get(args[0]) or b""
        size = len(value)
        if start < 0 and end < 0 and start > end:
            return b""
        if start < 0:
            start = max(size + start, 0)
        if end < 0:
            end = max(size + end, 0)
        end = min(end, size - 1)
        if start > end or size == 0:
            return b""
        return value[start : end + 1]

    def setrange(self, args: Sequence[bytes], session: Session) -> Outcome:
        """SETRANGE key offset value: zero bytes pad a gap; the new length."""
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key, offset_text, patch = args
        offset = strict_int(offset_text)
        if offset is None:
            return NOT_INTEGER
        if offset < 0:
            return Error("ERR offset is out of range")
        current = self.store.live(key)
        value = None if current is None else current[0]
        if not patch:
            return Integer(len(value or b""))
        if not self._fits(key, offset + len(patch)):
            return TOO_BIG
        value = value or b""
        if len(value) < offset:
            value += bytes(offset - len(value))
        value = value[:offset] + patch + value[offset + len(patch) :]
        self.store.set(key, value, _expiry(current))  # keeps its expiry
        return self.dispatcher.after_commit(Integer(len(value)))

    def msetnx(self, args: Sequence[bytes], session: Session) -> Outcome:
        """MSETNX: every pair set if none of the keys exists (1), else none (0)."""
        if len(args) % 2:
            return wrong_arity(b"msetnx")
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        store = self.store
        if any(key in store for key in args[0::2]):
            return Integer(0)
        for index in range(0, len(args), 2):
            store.set(args[index], args[index + 1])
        return self.dispatcher.after_commit(Integer(1))

    def type(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        return _STRING if args[0] in self.store else _NONE

    def unlink(self, args: Sequence[bytes], session: Session) -> Outcome:
        """UNLINK: DEL (a value is freed at once either way)."""
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        deleted = sum(self.store.delete(key) for key in args)
        return self.dispatcher.after_commit(Integer(deleted))

    def touch(self, args: Sequence[bytes], session: Session) -> Outcome:
        """TOUCH: how many of the keys exist, a repeated key each time."""
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        store = self.store
        return Integer(sum(1 for key in args if key in store))

    def rename(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._rename(args, exclusive=False)

    def renamenx(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._rename(args, exclusive=True)

    def _rename(self, args: Sequence[bytes], exclusive: bool) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        source, target = args
        store = self.store
        current = store.live(source)
        value = None if current is None else current[0]
        if value is None:
            return NO_SUCH_KEY
        if source == target:
            return Integer(0) if exclusive else OK
        if exclusive and target in store:
            return Integer(0)
        # One group, as a transaction's: peers apply the new key and the old
        # one's delete together (inside MULTI, the transaction is the group).
        alone = store.group is None
        if alone:
            store.begin_group()
        try:
            store.set(target, value, _expiry(current))  # the expiry moves too
            store.delete(source)
        finally:
            if alone:
                store.end_group()
        return self.dispatcher.after_commit(Integer(1) if exclusive else OK)

    def copy(self, args: Sequence[bytes], session: Session) -> Outcome:
        """COPY source destination [DB 0] [REPLACE]: 1 if copied, else 0."""
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        source, target = args[0], args[1]
        replace = False
        index = 2
        while index < len(args):
            option = args[index].upper()
            if option == b"REPLACE":
                replace = True
            elif option == b"DB" and index + 1 < len(args):
                number = int32(args[index + 1])
                if isinstance(number, Error):
                    return number
                if number != 0:  # one database: any other is out of range
                    return OUT_OF_RANGE_DB
                index += 1
            else:
                return SYNTAX
            index += 1
        if source == target:
            return SAME_OBJECT
        store = self.store
        current = store.live(source)
        value = None if current is None else current[0]
        if value is None or (not replace and target in store):
            return Integer(0)
        store.set(target, value, _expiry(current))  # the expiry is copied too
        return self.dispatcher.after_commit(Integer(1))

    def randomkey(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        keys = self.store.live_keys()
        return self._random.choice(keys) if keys else NIL

    def time(self, args: Sequence[bytes], session: Session) -> Reply:
        """TIME: this node's wall clock, seconds and microseconds."""
        micros = int(self.dispatcher.seconds() * 1_000_000)
        return Array((b"%d" % (micros // 1_000_000), b"%d" % (micros % 1_000_000)))

    def memory(self, args: Sequence[bytes], session: Session) -> Outcome:
        """MEMORY USAGE key [SAMPLES n]: an estimate of the bytes the key
        holds in this process (its key, value and entry objects and its
        place in the table), or nil for a missing key."""
        refused = subcommand_refusal(b"MEMORY", args) or self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        index = 2
        while index < len(args):
            if args[index].upper() != b"SAMPLES" or index + 1 >= len(args):
                return SYNTAX
            samples = strict_int(args[index + 1])
            if samples is None:
                return NOT_INTEGER
            if samples < 0:
                return SYNTAX
            index += 2
        key = args[1]
        entry = self.store.entry(key)
        value = self.store.get(key)
        if entry is None or value is None:
            return NIL
        pointer = struct_size()
        slot = 3 * pointer  # hash, key and value pointers in the dict
        # CPython's object sizes, by formula: PyPy has no sys.getsizeof.
        objects = 2 * BYTES_HEAD + len(key) + len(value) + TUPLE_HEAD + pointer * len(entry)
        return Integer(objects + slot)


#: A bytes object's size beyond its bytes (CPython 64-bit: header and NUL).
BYTES_HEAD = 33
#: A tuple's size before its item pointers (CPython 64-bit, with the GC header).
TUPLE_HEAD = 40


def struct_size() -> int:
    """The size of a pointer on this machine."""
    return 8 if sys.maxsize > 1 << 32 else 4


def _expiry(entry: Optional[entries.Entry]) -> int:
    """The expiry of the live entry a command read (0: none). Read from that
    entry, never from the store again: the clock may pass the expiry between
    two reads, and the command would then write its value with none."""
    return 0 if entry is None else expires_of(entry)
