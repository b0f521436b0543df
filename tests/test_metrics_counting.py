"""What ``distkv_commands_total`` shows after known sequences of commands (issue 15).

The RESP path counts a run of requests of one command at once and reads the
run's length off the requests left (see :mod:`distkv.front.resp`), so these
tests feed the same requests pipelined in one read, one per read and split at
arbitrary bytes, with every read timed and with none, and hold the scrape
against counts written out by hand and against a node without metrics fed one
request per read (its replies say which requests failed). Requests held back
(behind a command waiting for the cluster, or past the output soft limit)
count once they run; those after QUIT never do.
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.cmdstats import UNKNOWN, CommandStats
from distkv.front.textproto import TextProtocol
from distkv.node import Node
from distkv.ops.service import enable
from tests.clusters import settled_cluster
from tests.respclient import command, connect
from tests.test_metrics import scrape
from tests.test_output_limits import VALUE, drain_all, limited
from tests.test_output_limits import connect as slow_connect

#: (result, command) -> requests: "ok" or "error" (an error reply).
Counts = Dict[Tuple[str, str], int]

SEQUENCE: List[Tuple[bytes, ...]] = [
    (b"SET", b"a", b"1"), (b"set", b"b", b"2"), (b"GET", b"a"), (b"get", b"b"),
    (b"GET",), (b"NOSUCH", b"x"), (b"INCR", b"a"), (b"SET", b"s", b"x"), (b"INCR", b"s"),
    (b"MULTI",), (b"SET", b"c", b"3"), (b"INCR", b"s"), (b"EXEC",),
    (b"MULTI",), (b"GET", b"c"), (b"DISCARD",),
    (b"MULTI",), (b"nosuch2",), (b"EXEC",), (b"PING",), (b"Echo", b"hi"),
]

#: What SEQUENCE counts, worked out by hand: a queued command counts as it is
#: queued (its error inside EXEC's reply is EXEC's array, not an error
#: reply); an unknown name inside MULTI is an error and fails the EXEC.
EXPECTED: Counts = {
    ("ok", "set"): 4, ("ok", "get"): 3, ("error", "get"): 1, ("error", "unknown"): 2,
    ("ok", "incr"): 2, ("error", "incr"): 1, ("ok", "multi"): 3, ("ok", "exec"): 1,
    ("error", "exec"): 1, ("ok", "discard"): 1, ("ok", "ping"): 1, ("ok", "echo"): 1,
}


def scraped(node: Node) -> Counts:
    """The node's ``distkv_commands_total`` samples that are not 0."""
    return {(s.labels["result"], s.labels["command"]): int(s.value)
            for s in scrape(node)["distkv_commands"] if s.value}


def oracle(requests: List[Tuple[bytes, ...]]) -> Counts:
    """The counts ``requests`` should give, from a node without metrics fed
    one request per read: each counts under its upper-case name if that is a
    command, else ``unknown``, as an error if its reply is one."""
    node = Node(Clock(), "oracle")
    known = set(node.dispatcher.commands)
    proto, transport = connect(node)
    counts: Counts = {}
    for request in requests:
        transport.clear()
        proto.dataReceived(command(*request))
        name = request[0].upper()
        label = name.decode().lower() if name in known else "unknown"
        result = "error" if transport.value().startswith(b"-") else "ok"
        counts[result, label] = counts.get((result, label), 0) + 1
    return counts


def splits(data: bytes, seed: int) -> List[bytes]:
    """``data`` cut at random bytes, mid-request included."""
    rng = random.Random(seed)
    pieces = []
    at = 0
    while at < len(data):
        step = rng.randint(1, 40)
        pieces.append(data[at : at + step])
        at += step
    return pieces


def metrics_node(timing: str) -> Tuple[Node, CommandStats]:
    """A node counting commands; ``timing``: ``every`` read timed, or ``none``."""
    node = Node(Clock(), "n1")
    tally = enable(node)
    if timing == "every":
        tally._call_later = None  # nothing disarms it
    else:
        tally.armed = False  # and no timer re-arms it
    return node, tally


class RespCountingTests(SynchronousTestCase):
    def test_the_oracle_agrees_with_the_counts_worked_out_by_hand(self) -> None:
        """A node without metrics, one request per read, fails the requests
        EXPECTED says fail."""
        self.assertEqual(oracle(SEQUENCE), EXPECTED)

    def test_pipelined_split_and_single_reads_count_alike_timed_or_not(self) -> None:
        """The sequence in one read, one request per read, and cut at random
        bytes (mid-request), with every read timed and with none: the scrape
        shows EXPECTED each time, and the requests counted are those INFO
        counts; with every read timed, each request is in its command's
        latency histogram."""
        stream = [command(*request) for request in SEQUENCE]
        feeds = {"one read": [b"".join(stream)], "one per read": stream}
        for seed in range(5):
            feeds[f"split {seed}"] = splits(b"".join(stream), seed)
        for name, reads in feeds.items():
            for timing in ("every", "none"):
                node, tally = metrics_node(timing)
                proto, transport = connect(node)
                for data in reads:
                    proto.dataReceived(data)
                self.assertEqual(scraped(node), EXPECTED, (name, timing))
                self.assertEqual(sum(tally.calls.values()),
                                 node.dispatcher.stats.commands_processed, (name, timing))
                timed = {n: h.count for n, h in tally.latency.items()}
                if timing == "every":
                    self.assertEqual(timed, {n: c for n, c in tally.calls.items() if c},
                                     name)
                else:
                    self.assertEqual(timed, {}, name)

    def test_random_pipelines_count_what_one_request_per_read_counts(self) -> None:
        """Random pipelines of known, lower-case, made-up and malformed
        commands, runs of one command and mixes, count as the oracle says."""
        rng = random.Random(15)
        choices: List[Tuple[bytes, ...]] = [
            (b"SET", b"k", b"v"), (b"GET", b"k"), (b"get", b"k"), (b"GET",), (b"DEL", b"k"),
            (b"INCR", b"n"), (b"INCR", b"k"), (b"PING",), (b"MADEUP",), (b"madeup2", b"x"),
            (b"MULTI",), (b"EXEC",), (b"DISCARD",), (b"MGET", b"k", b"n"),
        ]
        for trial in range(20):
            requests = []
            while len(requests) < 60:
                requests += [rng.choice(choices)] * rng.choice((1, 1, 2, 5, 16))
            data = b"".join(command(*request) for request in requests)
            node, tally = metrics_node(rng.choice(("every", "none")))
            proto, _ = connect(node)
            for piece in (splits(data, trial) if trial % 2 else [data]):
                proto.dataReceived(piece)
            self.assertEqual(scraped(node), oracle(requests), trial)

    def test_requests_past_the_soft_limit_count_once_they_run(self) -> None:
        """300 pipelined GETs of a 100 kB value and a SET: the GETs held back
        past the output soft limit are not counted until the client reads
        their replies and they run; then each counts once."""
        for timing in ("every", "none"):
            clock = Clock()
            node = limited(clock)
            tally = enable(node)
            tally._call_later = None
            tally.armed = timing == "every"
            node.store.set(b"big", VALUE)
            proto, transport = slow_connect(node)
            proto.dataReceived(command(b"GET", b"big") * 300 + command(b"SET", b"after", b"1"))
            self.assertLess(tally.calls[b"GET"], 300)
            self.assertEqual(tally.calls[b"SET"], 0)
            self.assertEqual(tally.calls[b"GET"], node.dispatcher.stats.commands_processed)
            drain_all(transport, clock, 1000)
            self.assertEqual((tally.calls[b"GET"], tally.calls[b"SET"]), (300, 1), timing)

    def test_requests_behind_a_command_waiting_for_the_cluster_count_once_they_run(
            self) -> None:
        """At QUORUM, INCR fetches the value from the other members before it
        runs; the GETs pipelined behind it wait, and count only once they ran."""
        for timing in ("every", "none"):
            cluster = settled_cluster(self)
            node = cluster.nodes["n1"]
            tally = enable(node)
            tally._call_later = None
            tally.armed = timing == "every"
            proto, transport = connect(node)
            proto.dataReceived(command(b"CONSISTENCY", b"QUORUM"))
            cluster.run()
            proto.dataReceived(command(b"INCR", b"c") + command(b"GET", b"c") * 2
                               + command(b"PING"))
            self.assertEqual((tally.calls[b"INCR"], tally.calls[b"GET"]), (1, 0), timing)
            cluster.run()
            self.assertTrue(transport.value().endswith(b":1\r\n$1\r\n1\r\n$1\r\n1\r\n+PONG\r\n"),
                            transport.value())
            self.assertEqual(scraped(node), {("ok", "consistency"): 1, ("ok", "incr"): 1,
                                             ("ok", "get"): 2, ("ok", "ping"): 1}, timing)

    def test_requests_after_quit_are_never_counted(self) -> None:
        """QUIT in the middle of a read: it counts, the requests after it in
        the same read (which are dropped, not run) do not."""
        for timing in ("every", "none"):
            node, tally = metrics_node(timing)
            proto, _ = connect(node)
            proto.dataReceived(command(b"PING") + command(b"QUIT") + command(b"QUIT")
                               + command(b"GET", b"k") * 3)
            self.assertEqual(scraped(node), {("ok", "ping"): 1, ("ok", "quit"): 1}, timing)
            self.assertEqual(node.dispatcher.stats.commands_processed, 2)

    def test_made_up_names_split_across_reads_still_count_as_unknown(self) -> None:
        """A thousand made-up names, one byte per read: still one UNKNOWN
        entry, a thousand errors."""
        node, tally = metrics_node("none")
        before = len(tally.calls)
        proto, _ = connect(node)
        for byte in b"".join(command(b"MADEUP%d" % i) for i in range(1000)):
            proto.dataReceived(bytes([byte]))
        self.assertEqual(len(tally.calls), before)
        self.assertEqual((tally.calls[UNKNOWN], tally.failed[UNKNOWN]), (1000, 1000))


class TextCountingTests(SynchronousTestCase):
    def test_text_lines_count_like_resp_requests(self) -> None:
        """The sequence as nc lines counts as over RESP (ECHO aside: the
        text protocol's argument is the whole rest of the line)."""
        node = Node(Clock(), "n1")
        enable(node)
        proto = TextProtocol(node.dispatcher, 1 << 20)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"".join(b" ".join(request) + b"\n" for request in SEQUENCE))
        self.assertEqual(scraped(node), EXPECTED, transport.value())
