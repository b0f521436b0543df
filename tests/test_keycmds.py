"""String and key commands (APPEND, SETRANGE, RENAME, COPY...), CLIENT
LIST/KILL, CONFIG RESETSTAT and INFO's new fields, in one process: over
StringTransport for a node's replies, and in simulated clusters for what
other nodes see. (Reply bytes against redis-server: tests/test_vs_redis.py.)"""

from __future__ import annotations

from typing import Dict

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import distkv
from distkv.front.auth import parse_users
from distkv.front.inline import split_inline
from distkv.front.replies import Lines, Request
from distkv.node import Node
from tests.clusters import settled_cluster
from tests.respclient import ask, connect


def info(node: Node, section: bytes) -> Dict[str, str]:
    reply = node.dispatcher.execute(Request(b"INFO", (section,)))
    assert isinstance(reply, Lines)
    lines = reply.lines
    return dict(line.split(":", 1) for line in lines if ":" in line)


class SizeLimitTests(SynchronousTestCase):
    def test_a_value_grown_past_the_request_limit_is_refused_and_not_stored(self) -> None:
        """APPEND and SETRANGE whose result (with its key) would pass --max-request get
        Redis's error; the value stays as it was, so every replicated write fits a frame."""
        node = Node(Clock(), "n", max_request=100)
        proto, transport = connect(node)
        self.assertEqual(ask(proto, transport, b"SET", b"k", b"x" * 90), b"+OK\r\n")
        too_big = b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
        self.assertEqual(ask(proto, transport, b"APPEND", b"k", b"y" * 10), too_big)
        self.assertEqual(ask(proto, transport, b"SETRANGE", b"k", b"99", b"z"), too_big)
        self.assertEqual(ask(proto, transport, b"SETRANGE", b"new", b"1000000000", b"z"), too_big)
        self.assertEqual(node.store.get(b"k"), b"x" * 90)
        self.assertNotIn(b"new", node.store)
        self.assertEqual(ask(proto, transport, b"APPEND", b"k", b"y" * 9), b":99\r\n")


class EmptyKeyTests(SynchronousTestCase):
    def test_the_empty_key_survives_a_crash_with_its_rename(self) -> None:
        """The empty key, allowed over RESP as in Redis, is committed to the data dir
        and read back after a crash like any other; so is a RENAME to and from it."""
        clock = Clock()
        directory = self.mktemp()
        node = Node(clock, "a", data_dir=directory)
        for request in (Request(b"SET", (b"", b"empty")), Request(b"SET", (b"x", b"1")),
                        Request(b"RENAME", (b"x", b"y")), Request(b"COPY", (b"", b"z"))):
            node.dispatcher.execute(request)
        clock.advance(0)
        before = node.store.snapshot()
        node.crash()
        again = Node(clock, "a", data_dir=directory)
        self.addCleanup(again.crash)
        self.assertEqual(again.store.snapshot(), before)
        self.assertEqual(sorted(again.store.live_keys()), [b"", b"y", b"z"])
        self.assertEqual(again.store.get(b""), b"empty")


class AccessTests(SynchronousTestCase):
    def test_a_read_only_user_gets_noperm_for_every_new_write(self) -> None:
        """The new writes are classified as writes: a read-only user is refused them
        and nothing changes; the new reads run for it."""
        node = Node(Clock(), "n", users=parse_users(b"default readwrite >pw\nreader read >r\n"))
        node.store.set(b"k", b"v")
        proto, transport = connect(node)
        self.assertEqual(ask(proto, transport, b"AUTH", b"reader", b"r"), b"+OK\r\n")
        for request in ((b"APPEND", b"k", b"x"), (b"SETRANGE", b"k", b"0", b"x"),
                        (b"MSETNX", b"a", b"1"), (b"UNLINK", b"k"), (b"RENAME", b"k", b"b"),
                        (b"RENAMENX", b"k", b"b"), (b"COPY", b"k", b"b")):
            self.assertTrue(ask(proto, transport, *request).startswith(b"-NOPERM"), request)
        self.assertEqual(node.store.live_keys(), [b"k"])
        self.assertEqual(node.store.get(b"k"), b"v")
        self.assertEqual(ask(proto, transport, b"STRLEN", b"k"), b":1\r\n")
        self.assertEqual(ask(proto, transport, b"TYPE", b"k"), b"+string\r\n")


class ReplicationTests(SynchronousTestCase):
    def test_rename_and_copy_reach_every_node(self) -> None:
        """RENAME is a write of the new key and a delete of the old one, COPY a
        write: once replicated, every node has the same keys and values."""
        cluster = settled_cluster(self, 3)
        n1 = cluster.nodes["n1"]
        for request in (Request(b"SET", (b"a", b"1")), Request(b"RENAME", (b"a", b"b")),
                        Request(b"COPY", (b"b", b"c")), Request(b"APPEND", (b"c", b"2")),
                        Request(b"SET", (b"", b"empty key"))):
            n1.dispatcher.execute(request)
        cluster.run()
        self.assertTrue(cluster.converged())
        for node in cluster.nodes.values():
            self.assertEqual(sorted(node.store.live_keys()), [b"", b"b", b"c"])
            self.assertEqual((node.store.get(b"b"), node.store.get(b"c")), (b"1", b"12"))

    def test_rename_replicates_as_one_group_alone_or_inside_a_transaction(self) -> None:
        """RENAME's write and delete form one group of writes (one T frame to each peer,
        applied together there); inside MULTI the transaction is the group."""
        node = Node(Clock(), "n")
        groups: list = []  # type: ignore[type-arg]
        node.store.on_group(lambda group: groups.append([key for _, key, _ in group]))
        node.dispatcher.execute(Request(b"SET", (b"a", b"1")))
        node.dispatcher.execute(Request(b"RENAME", (b"a", b"b")))
        self.assertEqual(groups, [[b"b", b"a"]])
        proto, transport = connect(node)
        for request in ((b"MULTI",), (b"SET", b"c", b"1"), (b"RENAME", b"c", b"d")):
            ask(proto, transport, *request)
        self.assertEqual(ask(proto, transport, b"EXEC"), b"*2\r\n+OK\r\n+OK\r\n")
        self.assertEqual(groups[1], [b"c", b"d", b"c"])
        self.assertEqual(sorted(node.store.live_keys()), [b"b", b"d"])

    def test_concurrent_appends_through_two_nodes_keep_the_later_one(self) -> None:
        """APPEND is a read-modify-write of the whole value: two made at once through
        two partitioned nodes do not merge; after healing every node holds the one
        with the higher version (last writer wins), as the README says."""
        cluster = settled_cluster(self, 2)
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        n1.dispatcher.execute(Request(b"SET", (b"log", b"start;")))
        cluster.run()
        cluster.net.block("n1", "n2")
        n1.dispatcher.execute(Request(b"APPEND", (b"log", b"one;")))
        cluster.advance(0.01)
        n2.dispatcher.execute(Request(b"APPEND", (b"log", b"two;")))
        cluster.net.heal()
        cluster.advance(5)
        cluster.run()
        self.assertTrue(cluster.converged())
        self.assertEqual(n1.store.get(b"log"), n2.store.get(b"log"))
        self.assertIn(n1.store.get(b"log"), (b"start;one;", b"start;two;"))


class ClientTests(SynchronousTestCase):
    def test_client_list_shows_connections_and_kill_closes_them(self) -> None:
        """CLIENT LIST has a line per connection with its id, address and name;
        CLIENT KILL by ID, by ADDR and in the old form closes the one named;
        SKIPME (yes by default) spares the caller."""
        node = Node(Clock(), "n")
        me, mine = connect(node, 5001)
        other, others = connect(node, 5002)
        third, thirds = connect(node, 5003)
        ask(other, others, b"CLIENT", b"SETNAME", b"worker")
        ask(third, thirds, b"PING")  # the front door knows it speaks RESP once it spoke
        listed = ask(me, mine, b"CLIENT", b"LIST").split(b"\r\n", 1)[1]
        lines = [line for line in listed.split(b"\n") if line.startswith(b"id=")]
        self.assertEqual(len(lines), 3)
        self.assertTrue(any(b"addr=127.0.0.1:5002 " in line and b" name=worker " in line
                            for line in lines), lines)
        other_id = ask(other, others, b"CLIENT", b"ID")[1:-2]
        self.assertEqual(ask(me, mine, b"CLIENT", b"KILL", b"ID", other_id), b":1\r\n")
        self.assertTrue(others.disconnecting)
        self.assertEqual(ask(me, mine, b"CLIENT", b"KILL", b"127.0.0.1:5003"), b"+OK\r\n")
        self.assertTrue(thirds.disconnecting)
        self.assertEqual(ask(me, mine, b"CLIENT", b"KILL", b"ADDR", b"127.0.0.1:5001"), b":0\r\n")
        self.assertFalse(mine.disconnecting)
        self.assertEqual(ask(me, mine, b"CLIENT", b"KILL", b"ADDR", b"127.0.0.1:5001",
                             b"SKIPME", b"no"), b":1\r\n")
        self.assertTrue(mine.disconnecting)


class InfoTests(SynchronousTestCase):
    def test_info_has_the_fields_tools_read(self) -> None:
        """INFO gives redis-cli --stat and client libraries what they read: memory,
        arch_bits, cluster_enabled, blocked_clients, and DistKV's package version."""
        node = Node(Clock(), "n")
        fields = info(node, b"everything")
        self.assertEqual(fields["distkv_version"], distkv.__version__)
        self.assertIn(fields["arch_bits"], ("32", "64"))
        self.assertEqual((fields["cluster_enabled"], fields["blocked_clients"]), ("0", "0"))
        self.assertGreater(int(fields["used_memory"]), 0)
        self.assertGreaterEqual(int(fields["used_memory_peak"]), int(fields["used_memory"]))
        self.assertEqual((fields["maxmemory"], fields["maxmemory_policy"]), ("0", "noeviction"))
        self.assertRegex(fields["used_memory_human"], r"^\d+(\.\d\d[KMG])?B?$")

    def test_twistd_distkv_version_is_the_package_version(self) -> None:
        """``twistd distkv --version`` prints distkv.__version__ (the one source
        of INFO's distkv_version too), then exits."""
        import io
        from contextlib import redirect_stdout

        from distkv.tap import Options

        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit):
            Options().parseOptions(["--version"])
        self.assertTrue(out.getvalue().startswith(f"DistKV {distkv.__version__} "), out.getvalue())

    def test_config_resetstat_resets_the_totals(self) -> None:
        """CONFIG RESETSTAT really starts total_commands_processed and
        total_connections_received again."""
        node = Node(Clock(), "n")
        proto, transport = connect(node)
        for _ in range(5):
            ask(proto, transport, b"PING")
        self.assertGreaterEqual(int(info(node, b"stats")["total_commands_processed"]), 5)
        self.assertEqual(ask(proto, transport, b"CONFIG", b"RESETSTAT"), b"+OK\r\n")
        stats = info(node, b"stats")
        self.assertLessEqual(int(stats["total_commands_processed"]), 2)
        self.assertEqual(stats["total_connections_received"], "0")


class MemoryUsageTests(SynchronousTestCase):
    def test_memory_usage_estimates_a_key_on_every_interpreter(self) -> None:
        """MEMORY USAGE answers an integer at least the key's and value's bytes (by
        formula, not sys.getsizeof, which PyPy lacks: it closed the connection there),
        nil for a missing key; redis-cli --memkeys relies on it."""
        node = Node(Clock(), "n")
        node.store.set(b"key", b"v" * 100)
        proto, transport = connect(node)
        reply = ask(proto, transport, b"MEMORY", b"USAGE", b"key")
        self.assertTrue(reply.startswith(b":"), reply)
        self.assertGreaterEqual(int(reply[1:]), 103)
        self.assertEqual(ask(proto, transport, b"MEMORY", b"USAGE", b"missing"), b"$-1\r\n")


class HelpTests(SynchronousTestCase):
    def test_the_help_an_error_points_to_exists(self) -> None:
        """"Try CONFIG HELP." leads somewhere: HELP lists the subcommands DistKV has,
        and HELP with arguments gets Redis's arity error."""
        node = Node(Clock(), "n")
        proto, transport = connect(node)
        for name, sub in ((b"CONFIG", b"GET"), (b"CLIENT", b"KILL"), (b"COMMAND", b"GETKEYS"),
                          (b"MEMORY", b"USAGE")):
            self.assertIn(b"Try %s HELP." % name, ask(proto, transport, name, b"NOPE"))
            reply = ask(proto, transport, name, b"help")
            self.assertTrue(reply.startswith(b"*"), reply)
            self.assertIn(b"+%s <subcommand>" % name, reply)
            self.assertIn(b"\r\n+%s\r\n" % sub, reply)
            self.assertEqual(ask(proto, transport, name, b"HELP", b"x"),
                             b"-ERR wrong number of arguments for '%s|help' command\r\n"
                             % name.lower())


class InlineTests(SynchronousTestCase):
    def test_inline_lines_split_as_redis_splits_them(self) -> None:
        """Redis's sdssplitargs: quotes, \\x escapes, quotes inside a word, and
        unbalanced quotes refused (None)."""
        for line, words in ((b"SET k v", [b"SET", b"k", b"v"]),
                            (b'ECHO "a b"', [b"ECHO", b"a b"]),
                            (b'ECHO "\\x41\\n\\q"', [b"ECHO", b"A\nq"]),
                            (b"ECHO 'it\\'s' x", [b"ECHO", b"it's", b"x"]),
                            (b'ECHO a"b c"', [b"ECHO", b"ab c"]),
                            (b"ECHO \x0bx", [b"ECHO", b"x"]),
                            (b"ECHO a\x0bb", [b"ECHO", b"a\x0bb"]),
                            (b'ECHO ""', [b"ECHO", b""]),
                            (b'ECHO "a"b', None), (b"ECHO 'a", None), (b'ECHO "a\\"', None)):
            self.assertEqual(split_inline(line), words, line)
