"""Expiry commands over the front door, reply bytes as Redis 7.0's.

:data:`SCRIPT` is one session of requests on one connection to an empty
server, each with the reply redis-server 7.0.15 gave it (RESP2): SET's
options and their conflicts, SETEX/PSETEX/SETNX/GETSET/GETDEL/GETEX,
EXPIRE and its kin with NX/XX/GT/LT, TTL, EXPIRETIME, PERSIST, overflowing
and past times, and reads of expired keys. An in-process node on a fake
clock must answer the same; :class:`RedisOracleTests` asks a live
redis-server again (RESP2 and RESP3) when it is installed. Replies that
depend on the clock to the millisecond (PTTL, PEXPIRETIME) are checked on
the fake clock alone.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.auth import parse_users
from distkv.node import Node
from tests.redisoracle import redis_replies, start_redis_server
from tests.respclient import ask, command, connect
from tests.test_keycmds import info

NOW = 1_700_000_000.0

NX_CONFLICT = b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
GT_LT_CONFLICT = b"-ERR GT and LT options at the same time are not compatible\r\n"

SCRIPT = (
    ((b'GETEX', b'nokey', b'EX', b'x'), b'$-1\r\n'),  # a missing key before the time
    ((b'EXPIRE', b'k', b'1', b'a\x00b'), b'-ERR Unsupported option a\r\n'),
    ((b'EXPIRE', b'k', b'1', b'\xffk'), b'-ERR Unsupported option \xffk\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'100'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':100\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'0'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'EX', b'-1'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'EX', b'x'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'9223372036854775'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'EX', b'9223372036854776'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'PX', b'9223372036854775807'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'PX', b'9223372036854775000'), b"-ERR invalid expire time in 'set' command\r\n"),
    ((b'SET', b'k', b'v', b'EXAT', b'9223372036854775'), b'+OK\r\n'),
    ((b'SET', b'k', b'v', b'PXAT', b'9223372036854775807'), b'+OK\r\n'),
    ((b'SET', b'k', b'v', b'EX'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'10', b'PX', b'10'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'10', b'EX', b'20'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':20\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'10', b'KEEPTTL'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'KEEPTTL', b'EX', b'10'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'NX', b'XX'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'XX', b'NX'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'NX', b'NX'), b'$-1\r\n'),
    ((b'SET', b'k', b'v', b'GET', b'GET'), b'$1\r\nv\r\n'),
    ((b'SET', b'k', b'v', b'PERSIST'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'10', b'EXAT', b'10'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'PXAT', b'10', b'PX', b'10'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'FOO'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'nx'), b'$-1\r\n'),
    ((b'SET', b'k', b'w', b'NX', b'GET'), b'$1\r\nv\r\n'),
    ((b'SET', b'new', b'w', b'XX', b'GET'), b'$-1\r\n'),
    ((b'SET', b'new', b'w', b'XX'), b'$-1\r\n'),
    ((b'SET', b'new', b'w', b'NX'), b'+OK\r\n'),
    ((b'SET', b'new', b'w2', b'NX'), b'$-1\r\n'),
    ((b'SET', b'new', b'w3', b'NX', b'GET'), b'$1\r\nw\r\n'),
    ((b'SET', b'new', b'w3', b'XX', b'GET'), b'$1\r\nw\r\n'),
    ((b'SET', b'k', b'v', b'KEEPTTL'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':-1\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'100'), b'+OK\r\n'),
    ((b'SET', b'k', b'v2', b'KEEPTTL', b'GET'), b'$1\r\nv\r\n'),
    ((b'TTL', b'k'), b':100\r\n'),
    ((b'SET', b'k', b'v3'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':-1\r\n'),
    ((b'PTTL', b'nokey'), b':-2\r\n'),
    ((b'TTL', b'nokey'), b':-2\r\n'),
    ((b'EXPIRETIME', b'nokey'), b':-2\r\n'),
    ((b'EXPIRETIME', b'k'), b':-1\r\n'),
    ((b'SETEX', b'k', b'0', b'v'), b"-ERR invalid expire time in 'setex' command\r\n"),
    ((b'SETEX', b'k', b'-5', b'v'), b"-ERR invalid expire time in 'setex' command\r\n"),
    ((b'SETEX', b'k', b'x', b'v'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'SETEX', b'k', b'100', b'v'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':100\r\n'),
    ((b'PSETEX', b'k', b'0', b'v'), b"-ERR invalid expire time in 'psetex' command\r\n"),
    ((b'PSETEX', b'k', b'100000', b'v'), b'+OK\r\n'),
    ((b'TTL', b'k'), b':100\r\n'),
    ((b'SETEX', b'k'), b"-ERR wrong number of arguments for 'setex' command\r\n"),
    ((b'SETNX', b'k', b'v'), b':0\r\n'),
    ((b'SETNX', b'fresh', b'v'), b':1\r\n'),
    ((b'GETSET', b'k', b'newv'), b'$1\r\nv\r\n'),
    ((b'TTL', b'k'), b':-1\r\n'),
    ((b'GETSET', b'missing', b'x'), b'$-1\r\n'),
    ((b'GETDEL', b'missing2'), b'$-1\r\n'),
    ((b'GETDEL', b'missing'), b'$1\r\nx\r\n'),
    ((b'GETDEL', b'missing'), b'$-1\r\n'),
    ((b'GETEX', b'k'), b'$4\r\nnewv\r\n'),
    ((b'GETEX', b'nokey', b'EX', b'10'), b'$-1\r\n'),
    ((b'GETEX', b'k', b'EX', b'100'), b'$4\r\nnewv\r\n'),
    ((b'TTL', b'k'), b':100\r\n'),
    ((b'GETEX', b'k', b'PERSIST'), b'$4\r\nnewv\r\n'),
    ((b'TTL', b'k'), b':-1\r\n'),
    ((b'GETEX', b'k', b'EX', b'100', b'PERSIST'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'PERSIST', b'EX', b'100'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'KEEPTTL'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'NX'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'GET'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'EX', b'0'), b"-ERR invalid expire time in 'getex' command\r\n"),
    ((b'GETEX', b'k', b'EX', b'x'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'GETEX', b'k', b'EX'), b'-ERR syntax error\r\n'),
    ((b'GETEX', b'k', b'PX', b'100000', b'PX', b'200000'), b'$4\r\nnewv\r\n'),
    ((b'GETEX', b'k', b'EXAT', b'1'), b'$4\r\nnewv\r\n'),
    ((b'GET', b'k'), b'$-1\r\n'),
    ((b'EXISTS', b'k'), b':0\r\n'),
    ((b'SET', b'e', b'v'), b'+OK\r\n'),
    ((b'EXPIRE', b'e', b'100'), b':1\r\n'),
    ((b'TTL', b'e'), b':100\r\n'),
    ((b'EXPIRE', b'e', b'100', b'NX'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'200', b'XX'), b':1\r\n'),
    ((b'TTL', b'e'), b':200\r\n'),
    ((b'EXPIRE', b'e', b'50', b'GT'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'500', b'GT'), b':1\r\n'),
    ((b'TTL', b'e'), b':500\r\n'),
    ((b'EXPIRE', b'e', b'600', b'LT'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'50', b'LT'), b':1\r\n'),
    ((b'TTL', b'e'), b':50\r\n'),
    ((b'EXPIRE', b'e', b'50', b'NX', b'XX'), NX_CONFLICT),
    ((b'EXPIRE', b'e', b'50', b'NX', b'GT'), NX_CONFLICT),
    ((b'EXPIRE', b'e', b'50', b'GT', b'LT'), GT_LT_CONFLICT),
    ((b'EXPIRE', b'e', b'50', b'FOO'), b'-ERR Unsupported option FOO\r\n'),
    ((b'EXPIRE', b'e', b'50', b'nx'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'x'), b'-ERR value is not an integer or out of range\r\n'),
    ((b'EXPIRE', b'e', b'9223372036854775807'), b"-ERR invalid expire time in 'expire' command\r\n"),
    ((b'EXPIRE', b'e', b'9223372036854775'), b"-ERR invalid expire time in 'expire' command\r\n"),
    ((b'EXPIRE', b'e', b'-9223372036854775808'), b"-ERR invalid expire time in 'expire' command\r\n"),
    ((b'PEXPIRE', b'e', b'9223372036854775807'), b"-ERR invalid expire time in 'pexpire' command\r\n"),
    ((b'PEXPIREAT', b'e', b'9223372036854775807'), b':1\r\n'),
    ((b'EXPIREAT', b'e', b'9223372036854775'), b':1\r\n'),
    ((b'PERSIST', b'e'), b':1\r\n'),
    ((b'PERSIST', b'e'), b':0\r\n'),
    ((b'TTL', b'e'), b':-1\r\n'),
    ((b'EXPIRE', b'e', b'100', b'XX'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'100', b'GT'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'100', b'LT'), b':1\r\n'),
    ((b'TTL', b'e'), b':100\r\n'),
    ((b'PERSIST', b'e'), b':1\r\n'),
    ((b'EXPIRE', b'e', b'0'), b':1\r\n'),
    ((b'EXISTS', b'e'), b':0\r\n'),
    ((b'EXPIRE', b'e', b'10'), b':0\r\n'),
    ((b'SET', b'e', b'v'), b'+OK\r\n'),
    ((b'EXPIRE', b'e', b'-1'), b':1\r\n'),
    ((b'GET', b'e'), b'$-1\r\n'),
    ((b'SET', b'e', b'v'), b'+OK\r\n'),
    ((b'PEXPIREAT', b'e', b'1'), b':1\r\n'),
    ((b'GET', b'e'), b'$-1\r\n'),
    ((b'SET', b'e', b'v'), b'+OK\r\n'),
    ((b'EXPIREAT', b'e', b'99999999999'), b':1\r\n'),
    ((b'EXPIRETIME', b'e'), b':99999999999\r\n'),
    ((b'EXPIRE',), b"-ERR wrong number of arguments for 'expire' command\r\n"),
    ((b'EXPIRE', b'e'), b"-ERR wrong number of arguments for 'expire' command\r\n"),
    ((b'TTL',), b"-ERR wrong number of arguments for 'ttl' command\r\n"),
    ((b'TTL', b'a', b'b'), b"-ERR wrong number of arguments for 'ttl' command\r\n"),
    ((b'PERSIST',), b"-ERR wrong number of arguments for 'persist' command\r\n"),
    ((b'GETEX',), b"-ERR wrong number of arguments for 'getex' command\r\n"),
    ((b'GETDEL',), b"-ERR wrong number of arguments for 'getdel' command\r\n"),
    ((b'GETDEL', b'a', b'b'), b"-ERR wrong number of arguments for 'getdel' command\r\n"),
    ((b'SETNX', b'a'), b"-ERR wrong number of arguments for 'setnx' command\r\n"),
    ((b'GETSET', b'a'), b"-ERR wrong number of arguments for 'getset' command\r\n"),
    ((b'EXPIRE', b'nokey', b'10'), b':0\r\n'),
    ((b'EXPIRE', b'nokey', b'10', b'FOO'), b'-ERR Unsupported option FOO\r\n'),
    ((b'EXPIRE', b'nokey', b'x', b'FOO'), b'-ERR Unsupported option FOO\r\n'),
    ((b'EXPIRE', b'nokey', b'x', b'NX', b'XX'), NX_CONFLICT),
    ((b'SET', b'k', b'v', b'EX', b'10', b'GET'), b'$-1\r\n'),
    ((b'SET', b'k', b'v', b'PX', b'100000', b'NX', b'GET'), b'$1\r\nv\r\n'),
    ((b'SET', b'k', b'v', b'EXAT', b'99999999999', b'XX'), b'+OK\r\n'),
    ((b'SET', b'k', b'v', b'pxat', b'99999999999999', b'xx', b'get'), b'$1\r\nv\r\n'),
    ((b'SET', b'k', b'v', b'EX', b'99999999999', b'KEEPTTL'), b'-ERR syntax error\r\n'),
    ((b'SET', b'k', b'v', b'KEEPTTL', b'KEEPTTL'), b'+OK\r\n'),
    ((b'APPEND', b'k', b'x'), b':2\r\n'),
    ((b'SETRANGE', b'k', b'1', b'y'), b':2\r\n'),
    ((b'RENAME', b'k', b'k2'), b'+OK\r\n'),
    ((b'COPY', b'k2', b'k3'), b':1\r\n'),
    ((b'MSET', b'k3', b'x'), b'+OK\r\n'),
    ((b'TTL', b'k3'), b':-1\r\n'),
    ((b'SET', b'a', b'v', b'EXAT', b'1'), b'+OK\r\n'),
    ((b'GET', b'a'), b'$-1\r\n'),
    ((b'EXISTS', b'a'), b':0\r\n'),
    ((b'SET', b'b', b'v', b'PXAT', b'1'), b'+OK\r\n'),
    ((b'TYPE', b'b'), b'+none\r\n'),
    ((b'STRLEN', b'b'), b':0\r\n'),
    ((b'MGET', b'a', b'b'), b'*2\r\n$-1\r\n$-1\r\n'),
    ((b'SETNX', b'a', b'x'), b':1\r\n'),
    ((b'GET', b'a'), b'$1\r\nx\r\n'),
    ((b'SET', b'd', b'v'), b'+OK\r\n'),
    ((b'GETEX', b'd', b'PXAT', b'1'), b'$1\r\nv\r\n'),
    ((b'EXISTS', b'd'), b':0\r\n'),
    ((b'SET', b'd', b'v', b'EX', b'100'), b'+OK\r\n'),
    ((b'SET', b'd', b'v', b'PX', b'100000', b'GET'), b'$1\r\nv\r\n'),
    ((b'GETEX', b'd', b'PXAT', b'99999999999999'), b'$1\r\nv\r\n'),
    ((b'EXPIRETIME', b'd'), b':100000000000\r\n'),
    ((b'DBSIZE',), b':7\r\n'),
    ((b'EXISTS', b'a', b'b', b'c', b'd', b'e', b'k', b'k2', b'k3', b'new', b'fresh'), b':7\r\n'),
    ((b'SET', b't', b'v', b'EX', b'100', b'GET'), b'$-1\r\n'),
    ((b'SET', b't', b'v', b'EX', b'100', b'PX', b'100'), b'-ERR syntax error\r\n'),
    ((b'getex', b't', b'ex', b'100'), b'$1\r\nv\r\n'),
    ((b'Expire', b't', b'100', b'nx'), b':0\r\n'),
    ((b'PERSIST', b'nokey'), b':0\r\n'),
    ((b'SET', b'p', b'v', b'PXAT', b'99999999999999'), b'+OK\r\n'),
    ((b'PERSIST', b'p'), b':1\r\n'),
    ((b'EXPIRETIME', b'p'), b':-1\r\n'),
)


def node_at(seconds: float = NOW, **options: object) -> Tuple[Node, Clock]:
    clock = Clock()
    clock.advance(seconds)
    return Node(clock, "n", **options), clock  # type: ignore[arg-type]


class ScriptTests(SynchronousTestCase):
    def test_the_script_gets_redis_replies(self) -> None:
        """Every request of SCRIPT, in order on one connection, gets the bytes
        redis-server 7.0.15 answered (RESP2)."""
        node, _ = node_at()
        proto, transport = connect(node)
        for request, expected in SCRIPT:
            self.assertEqual(ask(proto, transport, *request), expected, request)

    def test_resp3_nil_and_text_protocol(self) -> None:
        """Over RESP3 a missing value is RESP3's null; over the text protocol
        the expiry commands answer in its own format (and its SET keeps taking
        the rest of the line as the value)."""
        node, _ = node_at()
        proto, transport = connect(node)
        ask(proto, transport, b"HELLO", b"3")
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"v", b"NX", b"GET"), b"_\r\n")
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"w", b"GET", b"EX", b"5"),
                         b"$1\r\nv\r\n")
        self.assertEqual(ask(proto, transport, b"TTL", b"k"), b":5\r\n")
        self.assertEqual(ask(proto, transport, b"GETDEL", b"k"), b"$1\r\nw\r\n")
        self.assertEqual(ask(proto, transport, b"GETEX", b"k"), b"_\r\n")
        text, out = connect(node)
        # The text protocol's SET takes the rest of the line as the value:
        # SETEX is how a text client sets an expiry.
        text.dataReceived(b"SETEX t 100 v\r\nTTL t\r\nPERSIST t\r\nTTL t\r\nTTL none\r\n"
                          b"SET s v EX 5\r\nGET s\r\nTTL s\r\n")
        self.assertEqual(out.value(), b"OK\r\n100\r\n1\r\n-1\r\n-2\r\nOK\r\nv EX 5\r\n-1\r\n")

    def test_pttl_and_pexpiretime_on_the_fake_clock(self) -> None:
        """PTTL counts down in milliseconds as the clock moves; PEXPIRETIME is
        the absolute time; at the expiry the key is gone (-2)."""
        node, clock = node_at()
        proto, transport = connect(node)
        ask(proto, transport, b"SET", b"k", b"v", b"PX", b"1500")
        self.assertEqual(ask(proto, transport, b"PTTL", b"k"), b":1500\r\n")
        self.assertEqual(ask(proto, transport, b"PEXPIRETIME", b"k"),
                         b":%d\r\n" % (NOW * 1000 + 1500))
        self.assertEqual(ask(proto, transport, b"EXPIRETIME", b"k"),
                         b":%d\r\n" % (NOW + 2))  # rounded, as Redis does
        clock.advance(1.0)
        self.assertEqual(ask(proto, transport, b"PTTL", b"k"), b":500\r\n")
        self.assertEqual(ask(proto, transport, b"TTL", b"k"), b":1\r\n")  # (500 + 500) // 1000
        clock.advance(0.499)
        self.assertEqual(ask(proto, transport, b"GET", b"k"), b"$1\r\nv\r\n")
        clock.advance(0.001)
        self.assertEqual(ask(proto, transport, b"PTTL", b"k"), b":-2\r\n")
        self.assertEqual(ask(proto, transport, b"GET", b"k"), b"$-1\r\n")

    def test_every_read_path_hides_an_expired_key(self) -> None:
        """Once expired (and before any cycle reclaimed it), a key is missing
        to GET, MGET, EXISTS, TYPE, STRLEN, KEYS, SCAN, DBSIZE, RANDOMKEY,
        TOUCH, GETRANGE, TTL, DEL's count and COPY/RENAME's source."""
        node, clock = node_at()
        node.store.set(b"gone", b"value", expires=int(NOW * 1000) + 10)
        node.store.set(b"kept", b"value")
        clock.advance(0.01)
        proto, transport = connect(node)
        for request, expected in (
            ((b"GET", b"gone"), b"$-1\r\n"),
            ((b"MGET", b"gone", b"kept"), b"*2\r\n$-1\r\n$5\r\nvalue\r\n"),
            ((b"EXISTS", b"gone", b"kept"), b":1\r\n"),
            ((b"TOUCH", b"gone"), b":0\r\n"),
            ((b"TYPE", b"gone"), b"+none\r\n"),
            ((b"STRLEN", b"gone"), b":0\r\n"),
            ((b"GETRANGE", b"gone", b"0", b"-1"), b"$0\r\n\r\n"),
            ((b"KEYS", b"*"), b"*1\r\n$4\r\nkept\r\n"),
            ((b"SCAN", b"0", b"COUNT", b"100"), b"*2\r\n$1\r\n0\r\n*1\r\n$4\r\nkept\r\n"),
            ((b"DBSIZE",), b":1\r\n"),
            ((b"RANDOMKEY",), b"$4\r\nkept\r\n"),
            ((b"TTL", b"gone"), b":-2\r\n"),
            ((b"RENAME", b"gone", b"x"), b"-ERR no such key\r\n"),
            ((b"COPY", b"gone", b"x"), b":0\r\n"),
            ((b"SETNX", b"gone", b"new"), b":1\r\n"),
            ((b"TTL", b"gone"), b":-1\r\n"),
        ):
            self.assertEqual(ask(proto, transport, *request), expected, request)
        node.store.set(b"gone2", b"value", expires=int(NOW * 1000) + 10)
        node.store.set(b"gone3", b"value", expires=int(NOW * 1000) + 10)
        clock.advance(0.01)
        self.assertEqual(ask(proto, transport, b"DEL", b"gone3", b"kept2"), b":0\r\n")
        self.assertEqual(ask(proto, transport, b"DBSIZE"), b":2\r\n")

    def test_append_setrange_rename_copy_keep_the_expiry(self) -> None:
        """APPEND and SETRANGE keep a key's expiry, RENAME moves it, COPY copies
        it; SET and MSET clear it (Redis's rules)."""
        node, _ = node_at()
        proto, transport = connect(node)
        ask(proto, transport, b"SET", b"k", b"v", b"EX", b"50")
        ask(proto, transport, b"APPEND", b"k", b"w")
        ask(proto, transport, b"SETRANGE", b"k", b"0", b"x")
        self.assertEqual(ask(proto, transport, b"TTL", b"k"), b":50\r\n")
        ask(proto, transport, b"RENAME", b"k", b"r")
        self.assertEqual(ask(proto, transport, b"TTL", b"r"), b":50\r\n")
        ask(proto, transport, b"COPY", b"r", b"c")
        self.assertEqual(ask(proto, transport, b"TTL", b"c"), b":50\r\n")
        ask(proto, transport, b"SET", b"c", b"v")
        ask(proto, transport, b"MSET", b"r", b"v")
        self.assertEqual(ask(proto, transport, b"TTL", b"c"), b":-1\r\n")
        self.assertEqual(ask(proto, transport, b"TTL", b"r"), b":-1\r\n")

    def test_info_keyspace_counts_keys_with_an_expiry(self) -> None:
        """INFO keyspace's ``expires`` is the number of keys with an expiry."""
        node, _ = node_at()
        node.store.set(b"a", b"v")
        node.store.set(b"b", b"v", expires=int(NOW * 1000) + 5000)
        self.assertEqual(info(node, b"keyspace")["db0"], "keys=2,expires=1,avg_ttl=0")

    def test_a_read_only_user_gets_noperm_for_every_expiry_write(self) -> None:
        """The expiry writes are writes: a read user gets NOPERM and nothing
        changes; TTL, PTTL, EXPIRETIME and PEXPIRETIME run for it."""
        node, _ = node_at(users=parse_users(b"default readwrite >pw\nreader read >r\n"))
        node.store.set(b"k", b"v")
        proto, transport = connect(node)
        ask(proto, transport, b"AUTH", b"reader", b"r")
        for request in ((b"SET", b"k", b"w", b"EX", b"5"), (b"SETEX", b"k", b"5", b"w"),
                        (b"PSETEX", b"k", b"5", b"w"), (b"SETNX", b"n", b"w"),
                        (b"GETSET", b"k", b"w"), (b"GETDEL", b"k"), (b"GETEX", b"k", b"EX", b"5"),
                        (b"EXPIRE", b"k", b"5"), (b"PEXPIRE", b"k", b"5"),
                        (b"EXPIREAT", b"k", b"5"), (b"PEXPIREAT", b"k", b"5"),
                        (b"PERSIST", b"k")):
            self.assertTrue(ask(proto, transport, *request).startswith(b"-NOPERM"), request)
        self.assertEqual(node.store.get(b"k"), b"v")
        self.assertEqual(node.store.expires(b"k"), 0)
        for name in (b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME"):
            self.assertEqual(ask(proto, transport, name, b"k"), b":-1\r\n")


class RedisOracleTests(SynchronousTestCase):
    """SCRIPT asked of a live redis-server 7.0, and DistKV's RESP3 replies
    compared with redis-server's."""

    def setUp(self) -> None:
        self.port = start_redis_server(self)

    def _redis(self, requests: List[bytes]) -> List[bytes]:
        return redis_replies(self.port, requests)

    def test_redis_answers_the_script_as_recorded(self) -> None:
        """redis-server 7.0 gives SCRIPT's recorded replies (RESP2)."""
        got = self._redis([command(*request) for request, _ in SCRIPT])
        for (request, expected), reply in zip(SCRIPT, got):
            self.assertEqual(reply, expected, request)

    def test_resp3_replies_match_redis(self) -> None:
        """Over RESP3 (after HELLO 3), DistKV and redis-server give the same bytes
        for every request of SCRIPT."""
        requests = [command(b"HELLO", b"3")] + [command(*request) for request, _ in SCRIPT]
        theirs = self._redis(requests)[1:]
        node, _ = node_at()
        proto, transport = connect(node)
        ask(proto, transport, b"HELLO", b"3")
        for (request, _), expected in zip(SCRIPT, theirs):
            self.assertEqual(ask(proto, transport, *request), expected, request)


class WatchExpiryTests(SynchronousTestCase):
    """WATCH and expiry, as redis-server 7.0 answered the same steps."""

    def exec_after(self, watch_then: float, sweep: bool) -> bytes:
        """SET k with a 100 ms expiry, WATCH it ``watch_then`` s later, let
        the key expire (the active cycle reclaiming it first if ``sweep``),
        and run a transaction."""
        node, clock = node_at()
        proto, transport = connect(node)
        ask(proto, transport, b"SET", b"k", b"v", b"PX", b"100")
        clock.advance(watch_then)
        self.assertEqual(ask(proto, transport, b"WATCH", b"k"), b"+OK\r\n")
        clock.advance(0.2)
        if sweep:
            self.assertEqual(node.store.reclaim_expired(), 1 if watch_then < 0.1 else 0)
        self.assertEqual(ask(proto, transport, b"MULTI"), b"+OK\r\n")
        self.assertEqual(ask(proto, transport, b"SET", b"x", b"1"), b"+QUEUED\r\n")
        return ask(proto, transport, b"EXEC")

    def test_a_watched_key_that_expires_aborts_exec(self) -> None:
        """A key readable when watched that expires before EXEC makes EXEC
        answer the nil array, whether a read reclaims it at EXEC or the
        active cycle reclaimed it before."""
        self.assertEqual(self.exec_after(0.0, sweep=False), b"*-1\r\n")
        self.assertEqual(self.exec_after(0.0, sweep=True), b"*-1\r\n")

    def test_a_key_already_expired_when_watched_does_not_abort(self) -> None:
        """A key that had already expired when watched (and is reclaimed
        later) has not changed: EXEC runs, as in Redis."""
        self.assertEqual(self.exec_after(0.15, sweep=False), b"*1\r\n+OK\r\n")
        self.assertEqual(self.exec_after(0.15, sweep=True), b"*1\r\n+OK\r\n")

    def test_a_missing_key_set_with_an_expiry_that_expires_aborts_exec(self) -> None:
        """A missing key watched, then written (with an expiry) by another
        client and expired before EXEC: the write changed it, EXEC aborts."""
        node, clock = node_at()
        proto, transport = connect(node)
        other, _ = connect(node)
        ask(proto, transport, b"WATCH", b"m")
        ask(other, _, b"SET", b"m", b"v", b"PX", b"50")
        clock.advance(0.2)
        ask(proto, transport, b"MULTI")
        ask(proto, transport, b"SET", b"x", b"1")
        self.assertEqual(ask(proto, transport, b"EXEC"), b"*-1\r\n")


class ReadOnceTests(SynchronousTestCase):
    """A command takes a key's value and its expiry from one reading of the
    store. Here every reading of the clock is a millisecond after the one
    before, and the key expires between a command's first reading and its
    next: a command that read the key alive, then its expiry again, found
    none and wrote the value back with no expiry, a key that should be gone
    living for ever (``distkv dump`` wrote a key of 1 ms without its expiry)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.ticking = False

        def now_ms() -> int:
            if self.ticking:
                self.clock.advance(0.001)
            return int(self.clock.seconds() * 1000)

        self.node = Node(self.clock, "n", now_ms=now_ms)  # type: ignore[arg-type]
        self.proto, self.transport = connect(self.node)

    def on_the_edge(self, *request: bytes) -> Tuple[bytes, int]:
        """``request``'s reply, run on ``k`` = ``v`` expiring after the
        command's first reading of the clock and before its second; then a
        second passes. Also the expiry ``k`` had."""
        expiry = int(self.clock.seconds() * 1000) + 2
        ask(self.proto, self.transport, b"SET", b"k", b"v", b"PXAT", b"%d" % expiry)
        self.ticking = True
        try:
            reply = ask(self.proto, self.transport, *request)
        finally:
            self.ticking = False
        self.clock.advance(1)
        return reply, expiry

    def exists(self, key: bytes) -> bytes:
        return ask(self.proto, self.transport, b"EXISTS", key)

    def test_writes_that_keep_an_expiry_keep_the_one_they_read(self) -> None:
        """APPEND, SETRANGE, SET KEEPTTL keep the expiry they read; RENAME moves it and
        COPY copies it: the key they wrote is gone once that time has passed."""
        for request, written in (
            ((b"APPEND", b"k", b"w"), b"k"),
            ((b"SETRANGE", b"k", b"0", b"x"), b"k"),
            ((b"SET", b"k", b"x", b"KEEPTTL"), b"k"),
            ((b"RENAME", b"k", b"r"), b"r"),
            ((b"COPY", b"k", b"c"), b"c"),
        ):
            reply, _ = self.on_the_edge(*request)
            self.assertFalse(reply.startswith(b"-"), (request, reply))
            self.assertEqual(self.exists(written), b":0\r\n", request)

    def test_pexpiretime_never_says_a_key_with_an_expiry_has_none(self) -> None:
        """PEXPIRETIME and PTTL answer the expiry or -2, never -1 (no expiry)."""
        reply, expiry = self.on_the_edge(b"PEXPIRETIME", b"k")
        self.assertIn(reply, (b":%d\r\n" % expiry, b":-2\r\n"))
        reply, _ = self.on_the_edge(b"PTTL", b"k")
        self.assertIn(reply, (b":0\r\n", b":1\r\n", b":-2\r\n"))
