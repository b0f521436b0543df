"""LINEARIZABLE on whole clusters in one process, on a fake clock: a majority
serves and a minority refuses, concurrent INCRs all count, SET NX has one
winner, restarted acceptors wait, and the commands the level does not offer
say so."""

from __future__ import annotations

import socket
from typing import Dict, List, Sequence, Tuple

from twisted.trial.unittest import SynchronousTestCase

from distkv.sim import linearizable
from distkv.sim.linearizable import UNKNOWN, Op
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.redisoracle import start_redis_server
from tests.respclient import command
from tests.test_levels import Client

LIN = b"LINEARIZABLE"


def lin_client(cluster: SimulatedCluster, node: str) -> Client:
    client = Client(cluster, node)
    assert client.ask(b"CONSISTENCY", LIN) == b"+read LINEARIZABLE write LINEARIZABLE\r\n"
    return client


class LinearizableClusterTests(SynchronousTestCase):
    def cluster(self, size: int = 3) -> SimulatedCluster:
        # A second of accepted skew: a restarted acceptor waits that long.
        return settled_cluster(self, size, max_clock_skew=1.0)

    def test_reads_and_writes_through_any_node_see_one_copy(self) -> None:
        """A write through one node is what a read through any other answers,
        even one that has not received it by replication yet."""
        cluster = self.cluster()
        a, b, c = (lin_client(cluster, node) for node in ("n1", "n2", "n3"))
        cluster.net.block("n1", "n3")  # n3 learns the write only through the read
        self.assertEqual(a.ask(b"SET", b"k", b"v1"), b"+OK\r\n")
        self.assertIsNone(cluster.nodes["n3"].store.get(b"k"))
        self.assertEqual(c.ask(b"GET", b"k"), b"$2\r\nv1\r\n")
        self.assertEqual(b.ask(b"GETSET", b"k", b"v2"), b"$2\r\nv1\r\n")
        self.assertEqual(a.ask(b"GET", b"k"), b"$2\r\nv2\r\n")
        self.assertEqual(c.ask(b"DEL", b"k"), b":1\r\n")
        self.assertEqual(a.ask(b"EXISTS", b"k"), b":0\r\n")
        self.assertEqual(b.ask(b"GET", b"k"), b"$-1\r\n")

    def test_a_minority_refuses_at_once_and_the_majority_serves(self) -> None:
        """A node cut off from both others answers UNAVAILABLE as soon as its
        links are known down, for reads and writes, and never the stale value
        it holds; the two others go on reading and writing."""
        cluster = self.cluster()
        lone, other = lin_client(cluster, "n1"), lin_client(cluster, "n2")
        self.assertEqual(lone.ask(b"SET", b"k", b"old"), b"+OK\r\n")
        for peer in ("n2", "n3"):
            cluster.net.block("n1", peer)
        self.assertEqual(other.ask(b"SET", b"k", b"new"), b"+OK\r\n")
        for request in ((b"GET", b"k"), (b"SET", b"k", b"x"), (b"INCR", b"n")):
            answer = lone.ask(*request)
            self.assertTrue(answer.startswith(b"-UNAVAILABLE linearizable needs 2 of 3 members "
                                              b"and 1 are reachable"), answer)
        self.assertEqual(cluster.nodes["n1"].store.get(b"k"), b"old")
        self.assertEqual(other.ask(b"GET", b"k"), b"$3\r\nnew\r\n")
        cluster.net.heal()
        cluster.settle()
        self.assertEqual(lone.ask(b"GET", b"k"), b"$3\r\nnew\r\n")

    def test_a_minority_whose_links_look_up_times_out_without_answering_stale(self) -> None:
        """Its links stalled (up, but nothing gets through in time), a node
        waits for answers that do not come and answers TIMEOUT (did not
        run), never its own old value."""
        cluster = self.cluster()
        lone, other = lin_client(cluster, "n1"), lin_client(cluster, "n2")
        lone.ask(b"SET", b"k", b"old")
        for peer in ("n2", "n3"):
            cluster.net.stall("n1", peer, 5.0)
        other.ask(b"SET", b"k", b"new")
        lone.send(b"GET", b"k")
        cluster.advance(1.5)
        self.assertTrue(lone.answer().startswith(b"-TIMEOUT linearizable operation not met"),
                        lone.answer())

    def test_concurrent_incrs_from_every_node_all_count(self) -> None:
        """Clients on every node INCR one key at once, round after round:
        every INCR answered with a number counts (the final value is at least
        their number, and at most that plus the indeterminate ones), no two
        answers are equal, and the history is linearizable."""
        cluster = self.cluster()
        clients = {node: lin_client(cluster, node) for node in ("n1", "n2", "n3")}
        history: List[Op] = []
        answered: List[int] = []
        indeterminate = 0
        for _ in range(10):
            start = cluster.net.seconds()
            for client in clients.values():
                client.send(b"INCR", b"n")
            cluster.advance(1.5)
            for number, client in enumerate(clients.values()):
                answer = client.answer()
                if answer.startswith(b":"):
                    answered.append(int(answer[1:]))
                    history.append(Op(number, "incr", b"n", (1,), start,
                                      cluster.net.seconds(), int(answer[1:])))
                else:
                    self.assertIn(b"indeterminate", answer)
                    indeterminate += 1
                    history.append(Op(number, "incr", b"n", (1,), start, None, UNKNOWN))
        final = int(clients["n1"].ask(b"GET", b"n")[4:-2])
        self.assertGreaterEqual(len(answered), 15)
        self.assertEqual(len(set(answered)), len(answered))
        self.assertTrue(len(answered) <= final <= len(answered) + indeterminate,
                        (answered, final, indeterminate))
        history.append(Op(9, "get", b"n", (), cluster.net.seconds(), cluster.net.seconds() + 1,
                          b"%d" % final))
        self.assertEqual(linearizable.check(history), [])

    def test_set_nx_from_two_nodes_has_exactly_one_winner(self) -> None:
        """Two clients on two nodes SET NX one key in the same instant, many
        times over: never do both get OK; every node ends with one value,
        the OK's if there was one, and never that of a client told nil (a
        client whose accept lost a race is told the outcome is
        indeterminate); most rounds have a clear winner."""
        cluster = self.cluster()
        one, two = lin_client(cluster, "n1"), lin_client(cluster, "n3")
        clear = 0
        for attempt in range(12):
            key = b"lock%d" % attempt
            one.send(b"SET", key, b"one", b"NX")
            two.send(b"SET", key, b"two", b"NX")
            cluster.advance(1.5)
            answers = {b"one": one.answer(), b"two": two.answer()}
            winners = [name for name, answer in answers.items() if answer == b"+OK\r\n"]
            self.assertLessEqual(len(winners), 1, answers)
            for answer in answers.values():
                self.assertTrue(answer in (b"+OK\r\n", b"$-1\r\n") or b"indeterminate" in answer,
                                answers)
            cluster.settle()
            values = {node.store.get(key) for node in cluster.nodes.values()}
            self.assertEqual(len(values), 1, values)
            (value,) = values
            self.assertNotEqual(answers.get(value or b""), b"$-1\r\n", answers)
            if winners:
                self.assertEqual(value, winners[0])
                clear += sorted(answers.values()) == [b"$-1\r\n", b"+OK\r\n"]
        self.assertGreaterEqual(clear, 6)

    def test_set_options_and_counters(self) -> None:
        """SET NX/XX/GET, SETNX, GETDEL, INCRBY and DECRBY answer as Redis does;
        INCR of a word is refused and changes nothing."""
        cluster = self.cluster()
        a = lin_client(cluster, "n1")
        self.assertEqual(a.ask(b"SET", b"k", b"v", b"XX"), b"$-1\r\n")
        self.assertEqual(a.ask(b"SET", b"k", b"v", b"NX", b"GET"), b"$-1\r\n")
        self.assertEqual(a.ask(b"SET", b"k", b"w", b"XX", b"GET"), b"$1\r\nv\r\n")
        self.assertEqual(a.ask(b"SET", b"k", b"z", b"NX"), b"$-1\r\n")
        self.assertEqual(a.ask(b"SETNX", b"k", b"z"), b":0\r\n")
        self.assertEqual(a.ask(b"INCR", b"k"), b"-ERR value is not an integer or out of range\r\n")
        self.assertEqual(a.ask(b"GETDEL", b"k"), b"$1\r\nw\r\n")
        self.assertEqual(a.ask(b"GETDEL", b"k"), b"$-1\r\n")
        self.assertEqual(a.ask(b"INCRBY", b"k", b"10"), b":10\r\n")
        self.assertEqual(a.ask(b"DECRBY", b"k", b"3"), b":7\r\n")
        self.assertEqual(a.ask(b"DECR", b"k"), b":6\r\n")
        self.assertEqual(a.ask(b"INCRBY", b"k", b"x"),
                         b"-ERR value is not an integer or out of range\r\n")
        self.assertEqual(a.ask(b"INCRBY", b"k", b"9223372036854775807"),
                         b"-ERR increment or decrement would overflow\r\n")
        self.assertEqual(a.ask(b"GET", b"k"), b"$1\r\n6\r\n")

    def test_what_the_level_does_not_offer_is_refused_with_a_reason(self) -> None:
        """Several keys, expiries, MULTI and WATCH, and other commands answer
        an error naming the level; a key INCRed at ONE (a counter) too."""
        cluster = self.cluster()
        a = lin_client(cluster, "n1")
        self.assertEqual(a.ask(b"DEL", b"a", b"b"), b"-ERR DEL of several keys is not available "
                         b"at LINEARIZABLE: one key per command\r\n")
        self.assertTrue(a.ask(b"MGET", b"a").startswith(b"-ERR 'mget' is not available at "
                                                        b"LINEARIZABLE"))
        self.assertEqual(a.ask(b"SET", b"a", b"1", b"EX", b"5"),
                         b"-ERR SET option 'EX' is not available at LINEARIZABLE "
                         b"(NX, XX and GET are)\r\n")
        for name in (b"MULTI", b"WATCH"):
            self.assertEqual(a.ask(name, b"a")[:40] if name == b"WATCH" else a.ask(name),
                             (b"-ERR %s is not available at LINEARIZABLE (CONSISTENCY ONE, "
                              b"QUORUM or ALL for it)\r\n" % name)[:40 if name == b"WATCH" else None])
        self.assertEqual(a.ask(b"PING"), b"+PONG\r\n")
        one = Client(cluster, "n2")
        self.assertEqual(one.ask(b"INCR", b"c"), b":1\r\n")
        cluster.settle()
        self.assertTrue(a.ask(b"INCR", b"c").startswith(b"-ERR this key holds a counter"))

    def test_read_level_alone_can_be_linearizable(self) -> None:
        """CONSISTENCY READ LINEARIZABLE: GET runs the consensus; a plain SET
        is a write at ONE and a SET NX (it reads) runs the consensus."""
        cluster = self.cluster()
        a = Client(cluster, "n1")
        self.assertEqual(a.ask(b"CONSISTENCY", b"READ", LIN), b"+read LINEARIZABLE write ONE\r\n")
        proposer = cluster.nodes["n1"].proposer
        self.assertEqual(a.ask(b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertEqual(proposer.met + proposer.fast_reads, 0)
        self.assertEqual(a.ask(b"GET", b"k"), b"$1\r\nv\r\n")
        self.assertEqual(a.ask(b"SET", b"k", b"w", b"NX"), b"$-1\r\n")
        self.assertEqual(proposer.met + proposer.fast_reads, 2)

    def test_a_restarted_node_waits_before_its_acceptor_answers(self) -> None:
        """A node restarted (memory only) takes no part until it has synced
        from both others and its clock passed its start plus the skew; the
        two others serve meanwhile, and then it serves too."""
        cluster = self.cluster()
        a = lin_client(cluster, "n1")
        self.assertEqual(a.ask(b"SET", b"k", b"v"), b"+OK\r\n")
        cluster.crash("n3")
        node = cluster.start("n3")
        self.assertFalse(node.acceptor.ready())
        self.assertEqual(a.ask(b"GET", b"k"), b"$1\r\nv\r\n")
        cluster.settle()
        self.assertTrue(node.acceptor.ready())
        c = lin_client(cluster, "n3")
        self.assertEqual(c.ask(b"SET", b"k", b"w"), b"+OK\r\n")
        cluster.crash("n2")
        cluster.crash("n1")
        cluster.start("n1")
        cluster.start("n2")
        cluster.settle()
        self.assertEqual(c.ask(b"GET", b"k"), b"$1\r\nw\r\n")

    def test_info_and_status_show_the_level_and_the_consensus(self) -> None:
        """INFO consistency and STATUS report linearizable operations, the
        reads that had to write back an unsettled value (counted by the
        proposer: see tests/test_linearizable_reads.py), and the acceptor."""
        cluster = self.cluster()
        a = lin_client(cluster, "n1")
        a.ask(b"SET", b"k", b"v")
        info = a.ask(b"INFO", b"consistency")
        self.assertIn(b"linearizable_met:1\r\n", info)
        self.assertIn(b"linearizable_unsettled_reads:0\r\n", info)
        self.assertIn(b"acceptor_ready:yes\r\n", info)
        self.assertIn(b"linearizable_waiting 0", Client(cluster, "n1").ask(b"STATUS"))
        cluster.nodes["n1"].proposer.unsettled_reads = 3
        self.assertIn(b"linearizable_unsettled_reads:3\r\n", a.ask(b"INFO", b"consistency"))
        self.assertIn(b"linearizable_unsettled_reads 3", Client(cluster, "n1").ask(b"STATUS"))

    def test_a_flushed_value_a_lagging_member_holds_is_never_read_back(self) -> None:
        """After a FLUSHALL acknowledged at QUORUM, a LINEARIZABLE GET through
        a node that still holds the old value (the flush on its way to it)
        answers nil: a promise carries the acceptor's flush floor and entries
        below it count as absent, so the old value is not proposed again
        above the floor, and no node holds it once all settle."""
        cluster = self.cluster()
        writer = Client(cluster, "n1")
        self.assertEqual(writer.ask(b"SET", b"k", b"old"), b"+OK\r\n")
        cluster.settle()
        self.assertEqual(writer.ask(b"CONSISTENCY", b"QUORUM"), b"+read QUORUM write QUORUM\r\n")
        reader = lin_client(cluster, "n2")
        cluster.net.block("n1", "n2")  # n2 hears of the flush through n3 only...
        cluster.net.stall("n2", "n3", 0.5)  # ... and late
        self.assertEqual(writer.ask(b"FLUSHALL"), b"+OK\r\n")
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"old")  # not heard yet
        cluster.net.advance(0.01)
        reader.send(b"GET", b"k")
        cluster.net.advance_by(1.0, 0.05)
        self.assertEqual(reader.answer(), b"$-1\r\n")
        cluster.net.heal()
        cluster.settle()
        for name, node in cluster.nodes.items():
            self.assertIsNone(node.store.get(b"k"), name)


class LoneNodeTests(SynchronousTestCase):
    def test_a_lone_node_serves_linearizable_at_once(self) -> None:
        """A node with no other member serves the level as soon as it starts."""
        cluster = settled_cluster(self, 1)
        clients: Dict[str, Client] = {"n1": lin_client(cluster, "n1")}
        self.assertEqual(clients["n1"].ask(b"INCR", b"n"), b":1\r\n")
        self.assertEqual(clients["n1"].ask(b"GET", b"n"), b"$1\r\n1\r\n")


#: Requests whose replies at LINEARIZABLE must be redis-server 7.0's, byte for byte.
SCRIPT: Sequence[Tuple[bytes, ...]] = (
    (b"GET", b"k"), (b"EXISTS", b"k"), (b"SET", b"k", b"v", b"XX"), (b"SET", b"k", b"v", b"NX"),
    (b"SET", b"k", b"w", b"NX", b"GET"), (b"SET", b"k", b"w", b"XX", b"GET"),
    (b"SET", b"k", b"x", b"GET"), (b"SET", b"k", b"y", b"nx", b"xx"), (b"SET", b"k"),
    (b"SETNX", b"k", b"z"), (b"SETNX", b"n", b"5"), (b"GETSET", b"k", b"a"),
    (b"GETSET", b"new", b"b"), (b"GETDEL", b"new"), (b"GETDEL", b"new"), (b"INCR", b"k"),
    (b"INCR", b"n"), (b"INCRBY", b"n", b"-10"), (b"DECR", b"n"), (b"DECRBY", b"n", b"x"),
    (b"DECRBY", b"n", b"-9223372036854775808"), (b"INCRBY", b"n", b"9223372036854775807"),
    (b"INCRBY", b"n", b"+1"), (b"INCR", b"n", b"n"), (b"GET", b"n"), (b"DEL", b"n"),
    (b"DEL", b"n"), (b"UNLINK", b"k"), (b"EXISTS", b"k"), (b"INCR", b"fresh"),
)


class LinearizableVsRedisTests(SynchronousTestCase):
    def test_replies_at_linearizable_are_redis_servers(self) -> None:
        """The commands LINEARIZABLE offers answer as redis-server 7.0 does,
        byte for byte, through a node at that level."""
        port = start_redis_server(self)
        cluster = settled_cluster(self, 1)
        node = lin_client(cluster, "n1")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for request in SCRIPT:
                sock.sendall(command(*request) + command(b"ECHO", b"end-of-case"))
                out = b""
                while not out.endswith(b"$11\r\nend-of-case\r\n"):
                    chunk = sock.recv(65536)
                    self.assertTrue(chunk)
                    out += chunk
                self.assertEqual(node.ask(*request), out[: -len(b"$11\r\nend-of-case\r\n")],
                                 request)
