"""Expiry commands: SET's options, SETEX, GETEX, EXPIRE, TTL, PERSIST...

A key's expiry is an absolute wall-clock time (ms since the epoch) carried
with its versioned write (see :class:`~distkv.store.store.Store`): setting,
changing or removing it (``EXPIRE``, ``PERSIST``, ``GETEX``) writes the value
again with the new expiry and a new version, replicated and persisted like
any write, so the last writer wins on every node, expiry included. A time
already past deletes the key (a tombstone), as Redis does. Whether a key has
expired is judged by each node's own wall clock; see the README for what
clock skew does to that. Arguments, replies and errors are Redis 7.0's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple, Union

from distkv.front.replies import (
    NIL,
    NOT_INTEGER,
    OK,
    SYNTAX,
    Error,
    Integer,
    Session,
    c_string,
    raw_text,
    strict_int,
)
from distkv.store.entries import expires_of

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry, Outcome

_LLONG_MAX = (1 << 63) - 1
_LLONG_MIN = -(1 << 63)

# SET/GETEX option flags, as Redis's OBJ_* flags.
_NX, _XX, _GET, _KEEPTTL, _PERSIST = 1, 2, 4, 8, 16
_EX, _PX, _EXAT, _PXAT = 32, 64, 128, 256
_EXPIRY = _EX | _PX | _EXAT | _PXAT
# EXPIRE's option flags.
_E_NX, _E_XX, _E_GT, _E_LT = 1, 2, 4, 8
_EXPIRE_OPTIONS = {b"NX": _E_NX, b"XX": _E_XX, b"GT": _E_GT, b"LT": _E_LT}


def table(dispatcher: Dispatcher) -> Dict[bytes, Entry]:
    """The expiry commands, bound to ``dispatcher`` (SET's options are
    :meth:`ExpiryCommands.set`, which the dispatcher's SET calls)."""
    commands = dispatcher.expiry = ExpiryCommands(dispatcher)
    return {
        b"SETEX": (commands.setex, 3, 3, "write"),
        b"PSETEX": (commands.psetex, 3, 3, "write"),
        b"SETNX": (commands.setnx, 2, 2, "write"),
        b"GETSET": (commands.getset, 2, 2, "write"),
        b"GETDEL": (commands.getdel, 1, 1, "write"),
        b"GETEX": (commands.getex, 1, -1, "write"),
        b"EXPIRE": (commands.expire, 2, -1, "write"),
        b"PEXPIRE": (commands.pexpire, 2, -1, "write"),
        b"EXPIREAT": (commands.expireat, 2, -1, "write"),
        b"PEXPIREAT": (commands.pexpireat, 2, -1, "write"),
        b"TTL": (commands.ttl, 1, 1, "read"),
        b"PTTL": (commands.pttl, 1, 1, "read"),
        b"EXPIRETIME": (commands.expiretime, 1, 1, "read"),
        b"PEXPIRETIME": (commands.pexpiretime, 1, 1, "read"),
        b"PERSIST": (commands.persist, 1, 1, "write"),
    }


def expire_time_error(name: bytes) -> Error:
    return Error(f"ERR invalid expire time in '{name.decode('latin-1').lower()}' command")


def parse_options(args: Sequence[bytes], is_set: bool) -> Union[Tuple[int, Optional[bytes]], Error]:
    """SET's (``is_set``) or GETEX's options, as Redis 7.0's
    ``parseExtendedStringArgumentsOrReply``: the flags and the expiry
    argument, or the syntax error for a repeated conflict or unknown word."""
    flags = 0
    expire: Optional[bytes] = None
    index = 0
    while index < len(args):
        option = args[index].upper()
        has_next = index + 1 < len(args)
        if option == b"NX" and is_set and not flags & _XX:
            flags |= _NX
        elif option == b"XX" and is_set and not flags & _NX:
            flags |= _XX
        elif option == b"GET" and is_set:
            flags |= _GET
        elif option == b"KEEPTTL" and is_set and not flags & (_PERSIST | _EXPIRY):
            flags |= _KEEPTTL
        elif option == b"PERSIST" and not is_set and not flags & (_EXPIRY | _KEEPTTL):
            flags |= _PERSIST
        elif option in _UNITS and has_next and not flags & (
            _KEEPTTL | _PERSIST | (_EXPIRY & ~_UNITS[option])
        ):
            flags |= _UNITS[option]
            expire = args[index + 1]
            index += 1
        else:
            return SYNTAX
        index += 1
    return flags, expire


_UNITS = {b"EX": _EX, b"PX": _PX, b"EXAT": _EXAT, b"PXAT": _PXAT}


class ExpiryCommands:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store


    def _now(self) -> int:
        return self.store.clock.wall_ms()

    def _when(self, name: bytes, flags: int, text: bytes) -> Union[int, Error]:
        """SET/GETEX's expiry argument as an absolute time in ms, as Redis's
        ``getExpireMillisecondsOrReply``."""
        number = strict_int(text)
        if number is None:
            return NOT_INTEGER
        seconds = bool(flags & (_EX | _EXAT))
        if number <= 0 or (seconds and number > _LLONG_MAX // 1000):
            return expire_time_error(name)
        if seconds:
            number *= 1000
        if flags & (_EX | _PX):
            number += self._now()
        if number <= 0 or number > _LLONG_MAX:
            return expire_time_error(name)
        return number

    def set(self, request: Sequence[bytes], session: Session) -> Outcome:
        """SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT t|KEEPTTL]."""
        parsed = parse_options(request[3:], is_set=True)
        if isinstance(parsed, Error):
            return parsed
        flags, expire = parsed
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        return self._set(request[0], request[1], request[2], flags, expire)

    def _set(self, name: bytes, key: bytes, value: bytes, flags: int,
             expire: Optional[bytes]) -> Outcome:
        when = 0
        if expire is not None:
            parsed = self._when(name, flags, expire)
            if isinstance(parsed, Error):
                return parsed
            when = parsed
        store = self.store
        current = store.live(key)
        old = None if current is None else current[0]
        if (flags & _NX and current is not None) or (flags & _XX and current is None):
            return NIL if not flags & _GET or old is None else old
        if flags & _KEEPTTL and current is not None:
            when = expires_of(current)
        store.set(key, value, when)
        reply = (NIL if old is None else old) if flags & _GET else OK
        return self.dispatcher.after_commit(reply)

    def setex(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._setex(b"setex", args, _EX)

    def psetex(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._setex(b"psetex", args, _PX)

    def _setex(self, name: bytes, args: Sequence[bytes], flag: int) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key, expire, value = args
        return self._set(name, key, value, flag, expire)

    def setnx(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key, value = args
        if key in self.store:
            return Integer(0)
        self.store.set(key, value)
        return self.dispatcher.after_commit(Integer(1))

    def getset(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key, value = args
        old = self.store.get(key)
        self.store.set(key, value)
        return self.dispatcher.after_commit(NIL if old is None else old)

    def getdel(self, args: Sequence[bytes], session: Session) -> Outcome:
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        old = self.store.get(args[0])
        if old is None:
            return NIL
        self.store.delete(args[0])
        return self.dispatcher.after_commit(old)

    def getex(self, args: Sequence[bytes], session: Session) -> Outcome:
        """GETEX key [EX|PX|EXAT|PXAT t|PERSIST]: the value, its expiry changed."""
        parsed = parse_options(args[1:], is_set=False)
        if isinstance(parsed, Error):
            return parsed
        flags, expire = parsed
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key = args[0]
        store = self.store
        current = store.live(key)
        if current is None:
            return NIL  # before the time is checked, as Redis's getexCommand
        when = 0
        if expire is not None:
            checked = self._when(b"getex", flags, expire)
            if isinstance(checked, Error):
                return checked
            when = checked
        value = current[0]
        assert value is not None
        if when:
            if when <= self._now():
                store.delete(key)
            else:
                store.expire(key, value, when)
            return self.dispatcher.after_commit(value)
        if flags & _PERSIST and expires_of(current):
            store.expire(key, value, 0)
            return self.dispatcher.after_commit(value)
        return value

    def expire(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expire(args, 1000, relative=True)

    def pexpire(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expire(args, 1, relative=True)

    def expireat(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expire(args, 1000, relative=False)

    def pexpireat(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expire(args, 1, relative=False)

    def _expire(self, args: Sequence[bytes], unit: int, relative: bool) -> Outcome:
        """Redis 7.0's ``expireGenericCommand``: 1 when the expiry was set
        (or the key deleted, for a time already past), 0 when the key is
        missing or an option says no."""
        flags = 0
        for option in args[2:]:
            flag = _EXPIRE_OPTIONS.get(option.upper())
            if flag is None:
                return Error(f"ERR Unsupported option {raw_text(c_string(option))}")
            flags |= flag
        if flags & _E_NX and flags & (_E_XX | _E_GT | _E_LT):
            return Error("ERR NX and XX, GT or LT options at the same time are not compatible")
        if flags & _E_GT and flags & _E_LT:
            return Error("ERR GT and LT options at the same time are not compatible")
        when = strict_int(args[1])
        if when is None:
            return NOT_INTEGER
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        name = {(1000, True): b"expire", (1, True): b"pexpire",
                (1000, False): b"expireat", (1, False): b"pexpireat"}[(unit, relative)]
        if unit == 1000:
            if not _LLONG_MIN // 1000 <= when <= _LLONG_MAX // 1000:
                return expire_time_error(name)
            when *= 1000
        now = self._now()
        base = now if relative else 0
        if when > _LLONG_MAX - base:
            return expire_time_error(name)
        when += base
        key = args[0]
        store = self.store
        current = store.live(key)
        if current is None:
            return Integer(0)
        held = expires_of(current)
        if flags & _E_NX and held:
            return Integer(0)
        if flags & _E_XX and not held:
            return Integer(0)
        if flags & _E_GT and (not held or when <= held):
            return Integer(0)
        if flags & _E_LT and held and when >= held:
            return Integer(0)
        if when <= now:
            store.delete(key)
        else:
            value = current[0]
            assert value is not None
            store.expire(key, value, when)
        return self.dispatcher.after_commit(Integer(1))

    def _remaining(self, key: bytes) -> Optional[int]:
        """The key's expiry (ms), -1 for none, None when the key is missing."""
        current = self.store.live(key)  # read once: the clock may pass its expiry
        if current is None:
            return None
        return expires_of(current) or -1

    def ttl(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expiry(args[0], 1000, relative=True)

    def pttl(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expiry(args[0], 1, relative=True)

    def expiretime(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expiry(args[0], 1000, relative=False)

    def pexpiretime(self, args: Sequence[bytes], session: Session) -> Outcome:
        return self._expiry(args[0], 1, relative=False)

    def _expiry(self, key: bytes, unit: int, relative: bool) -> Outcome:
        """TTL and kin: -2 for a missing key, -1 for one without an expiry,
        else the time left (``relative``) or the expiry itself, in ``unit``
        ms, seconds rounded as Redis rounds them."""
        refused = self.dispatcher.refusal(write=False)
        if refused is not None:
            return refused
        when = self._remaining(key)
        if when is None:
            return Integer(-2)
        if when < 0:
            return Integer(-1)
        if relative:
            when = max(when - self._now(), 0)
        return Integer(when if unit == 1 else (when + 500) // 1000)

    def persist(self, args: Sequence[bytes], session: Session) -> Outcome:
        """PERSIST key: 1 when an expiry was removed (a new write of the value
        without one), else 0."""
        refused = self.dispatcher.refusal(write=True)
        if refused is not None:
            return refused
        key = args[0]
        current = self.store.live(key)
        if current is None or not expires_of(current):
            return Integer(0)
        value = current[0]
        assert value is not None
        self.store.expire(key, value, 0)
        return self.dispatcher.after_commit(Integer(1))
