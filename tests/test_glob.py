"""Redis's glob for KEYS and SCAN MATCH: Redis's edge cases, linear cost, no exceptions."""

from __future__ import annotations

from functools import cache
from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.glob import compile_glob
from distkv.node import Node
from tests.proptest import examples

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)

PATHOLOGICAL = b"*a*a*a*a*a*a*a*a*b"


def signed(byte: int) -> int:
    """A byte as x86's signed C char, as stringmatchlen compares range ends."""
    return byte - 256 if byte > 127 else byte


def reference(pattern: bytes, key: bytes) -> bool:
    """Redis's stringmatchlen walked byte by byte, trying every place for each star
    (exponential without the cache; fine for the short inputs it is given)."""
    p, s = pattern, key

    @cache
    def at(i: int, j: int) -> bool:
        while i < len(p) and j < len(s):
            c = p[i]
            if c == ord("*"):
                while i + 1 < len(p) and p[i + 1] == ord("*"):
                    i += 1
                if i + 1 == len(p):
                    return True
                return any(at(i + 1, k) for k in range(j, len(s)))
            if c == ord("?"):
                j += 1
            elif c == ord("["):
                i += 1
                negate = i < len(p) and p[i] == ord("^")
                if negate:
                    i += 1
                hit = False
                while True:
                    if i < len(p) and p[i] == ord("\\") and len(p) - i >= 2:
                        i += 1
                        hit = hit or p[i] == s[j]
                    elif i < len(p) and p[i] == ord("]"):
                        break
                    elif i >= len(p):
                        i -= 1  # unterminated: the pattern ends with the set
                        break
                    elif len(p) - i >= 3 and p[i + 1] == ord("-"):
                        low, high = sorted((signed(p[i]), signed(p[i + 2])))
                        hit = hit or low <= signed(s[j]) <= high
                        i += 2
                    else:
                        hit = hit or p[i] == s[j]
                    i += 1
                if hit == negate:
                    return False
                j += 1
            else:
                if c == ord("\\") and len(p) - i >= 2:
                    i += 1
                if p[i] != s[j]:
                    return False
                j += 1
            i += 1
            if j == len(s):
                while i < len(p) and p[i] == ord("*"):
                    i += 1
                break
        return i == len(p) and j == len(s)

    return at(0, 0)


PATTERN_BYTES = st.binary(max_size=10).map(lambda b: bytes(b"ab*?[]^-\\"[c % 9] for c in b))
KEY_BYTES = st.binary(max_size=10).map(lambda b: bytes(b"ab]^-\\*["[c % 8] for c in b))
#: Ranges whose ends straddle 127, where signed and unsigned order differ.
HIGH_BYTES = b"[-]*\x00\x7f\x80\xfe\xff"
HIGH_PATTERN = st.binary(max_size=8).map(lambda b: bytes(HIGH_BYTES[c % 9] for c in b))
HIGH_KEY = st.binary(max_size=4).map(lambda b: bytes(HIGH_BYTES[3 + c % 6] for c in b))


class GlobSemanticsTests(SynchronousTestCase):
    @settings(max_examples=examples(3000), deadline=None)
    @given(PATTERN_BYTES, KEY_BYTES)
    def test_matches_exactly_what_redis_stringmatchlen_matches(self, pattern: bytes, key: bytes) -> None:
        """On patterns and keys of the glob's special bytes, the matcher agrees with Redis's algorithm."""
        self.assertEqual(compile_glob(pattern).match(key), reference(pattern, key), (pattern, key))

    @settings(max_examples=examples(500), deadline=None)
    @given(st.binary(max_size=30), st.binary(max_size=12))
    def test_any_bytes_are_a_pattern_and_never_raise(self, pattern: bytes, key: bytes) -> None:
        """Every byte string compiles and matches without raising, and agrees with Redis's algorithm."""
        self.assertEqual(compile_glob(pattern).match(key), reference(pattern, key), (pattern, key))

    @settings(max_examples=examples(1500), deadline=None)
    @given(HIGH_PATTERN, HIGH_KEY)
    def test_ranges_order_bytes_as_signed_chars_like_redis(self, pattern: bytes, key: bytes) -> None:
        """Ranges with ends above 127 agree with Redis's algorithm, which compares signed chars."""
        self.assertEqual(compile_glob(pattern).match(key), reference(pattern, key), (pattern, key))

    def test_redis_edge_cases(self) -> None:
        """[^] is any byte, [] and an unterminated [ nothing, a-] a range, a trailing backslash itself
        (answers checked against redis-server 7.0)."""
        cases = [
            (b"[^]", b"x", True), (b"[^]", b"]", True), (b"[]", b"]", False), (b"[]]", b"]", False),
            (b"[", b"[", False), (b"[^", b"q", True), (b"[a", b"a", True), (b"h[llo", b"h[llo", False),
            (b"[a-]", b"^", True), (b"[a-]", b"b", False), (b"[a-]]", b"]", True),
            (b"\\", b"\\", True), (b"[\\", b"\\", True), (b"[\\]", b"]", True),
            (b"[^]]", b"a]", True), (b"[z-a]", b"m", True), (b"[!a]", b"a", True),
            (b"**", b"", False), (b"", b"", True), (b"?", b"", False),
            (b"k[[*-\xff", b"k[", True), (b"k[[*-\xff", b"k*", True), (b"k[[*-\xff", b"k\x01", True),
            (b"k[[*-\xff", b"k-", False), (b"k[[*-\xff", b"k\xfe", False), (b"[\x00-\xff]", b"\xff", True),
            (b"[\x00-\xff]", b"\x01", False), (b"[\x80-\x7f]", b"a", True), (b"[a-\xff]", b"b", False),
        ]
        for pattern, key, expected in cases:
            self.assertEqual(compile_glob(pattern).match(key), expected, (pattern, key))


class GlobCostTests(SynchronousTestCase):
    def test_pathological_pattern_costs_at_most_key_times_pattern(self) -> None:
        """The pattern behind Redis's CVE-2022-36021 looks at each key byte a bounded number of times."""
        glob = compile_glob(PATHOLOGICAL)
        for key in (b"a" * 60, b"a" * 60 + b"b", b"a" * 5000 + b"c", b"ab" * 3000):
            work: List[int] = []
            expected = key.endswith(b"b") and key.count(b"a") >= 8
            self.assertEqual(glob.match(key, work), expected)
            self.assertLessEqual(sum(work), len(key) * 10)
            self.assertLessEqual(len(work), PATHOLOGICAL.count(b"*") + 2)


def converse(node: Node, data: bytes) -> StringTransport:
    door = node.factory().buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    door.makeConnection(transport)
    door.dataReceived(data)
    return transport


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class GlobOverTheWireTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node(Clock(), "g")
        self.node.store.set(b"a" * 60, b"v")
        self.node.store.set(b"x", b"v")

    def test_keys_with_bracket_caret_bracket_answers_and_keeps_the_connection(self) -> None:
        """KEYS [^] over RESP gets the matching keys and the connection answers the next PING."""
        transport = converse(self.node, resp(b"KEYS", b"[^]") + resp(b"PING"))
        self.assertEqual(transport.value(), b"*1\r\n$1\r\nx\r\n+PONG\r\n")
        self.assertFalse(transport.disconnecting)

    def test_scan_match_with_odd_patterns_answers_and_keeps_the_connection(self) -> None:
        """SCAN MATCH with [, [^, a trailing backslash and the pathological pattern each get a reply."""
        requests = b"".join(
            resp(b"SCAN", b"0", b"MATCH", pattern, b"COUNT", b"100")
            for pattern in (b"[", b"[^", b"x\\", PATHOLOGICAL, b"*a*a*a*a*a*a*a*a*a")
        )
        transport = converse(self.node, requests + resp(b"PING"))
        out = transport.value()
        self.assertEqual(out.count(b"*2\r\n$1\r\n0\r\n"), 5, out)
        self.assertIn(b"*1\r\n$1\r\nx\r\n", out)  # [^ is any one byte
        self.assertIn(b"*1\r\n$60\r\n" + b"a" * 60 + b"\r\n", out)
        self.assertTrue(out.endswith(b"+PONG\r\n"), out)
        self.assertFalse(transport.disconnecting)

    def test_keys_over_text_protocol_with_bracket_caret_bracket(self) -> None:
        """KEYS [^] over the text protocol answers the matching keys then END."""
        transport = converse(self.node, b"KEYS [^]\r\nPING\r\n")
        self.assertEqual(transport.value(), b"x\r\nEND\r\nPONG\r\n")
