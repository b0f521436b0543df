"""The escaping and rate limit of log lines about client input."""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import SynchronousTestCase

from distkv.ratelog import RateLimit, printable


class PrintableTests(SynchronousTestCase):
    def test_client_bytes_are_escaped_and_truncated(self) -> None:
        """Control bytes and non-ASCII come out escaped, and at most 100 bytes are shown."""
        self.assertEqual(printable(b"a\x1b[2J\r\n\xff'"), "a\\x1b[2J\\r\\n\\xff'")
        shown = printable(b"x" * 500)
        self.assertEqual(shown, "x" * 100 + "...")


class RateLimitTests(SynchronousTestCase):
    def test_one_line_per_interval_then_the_count_held_back(self) -> None:
        """Within an interval only the first line passes; the next to pass says how many were held."""
        now: List[float] = [100.0]
        limit = RateLimit(lambda: now[0], interval=1.0)
        self.assertEqual(limit.allow(), 0)
        self.assertEqual([limit.allow() for _ in range(5)], [-1] * 5)
        now[0] = 100.999
        self.assertEqual(limit.allow(), -1)
        now[0] = 101.0
        self.assertEqual(limit.allow(), 6)
        self.assertEqual(limit.allow(), -1)
        now[0] = 200.0
        self.assertEqual(limit.allow(), 1)
