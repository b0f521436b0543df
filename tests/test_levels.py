"""Consistency levels on whole clusters in one process, on a fake clock:
QUORUM and ALL writes and reads, partitions, the indeterminate timeout,
read repair, flushes, transactions and the CONSISTENCY command."""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.auth import parse_users
from distkv.front.frontdoor import FrontDoor
from distkv.node import Node
from distkv.store.entries import make_entry
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.respclient import command, connect

TIMEOUT_START = b"-TIMEOUT write acknowledged by "
INDETERMINATE = b"outcome indeterminate"


class Client:
    """A RESP client of one node of ``cluster``: each request's answer,
    once the simulated network went quiet."""

    def __init__(self, cluster: SimulatedCluster, node: str, port: int = 6000) -> None:
        self.cluster = cluster
        self.proto, self.transport = connect(cluster.nodes[node], port)

    def send(self, *args: bytes) -> None:
        self.transport.clear()
        self.proto.dataReceived(command(*args))

    def ask(self, *args: bytes) -> bytes:
        self.send(*args)
        self.cluster.run()
        return self.answer()

    def answer(self) -> bytes:
        return bytes(self.transport.value())


def quorum_client(cluster: SimulatedCluster, node: str, *levels: bytes) -> Client:
    client = Client(cluster, node)
    assert client.ask(b"CONSISTENCY", *(levels or (b"QUORUM",))).startswith(b"+read ")
    return client


class ConsistencyCommandTests(SynchronousTestCase):
    def node(self, **options: Any) -> Tuple[Node, FrontDoor, StringTransport]:
        node = Node(Clock(), "n1", **options)
        proto, transport = connect(node)
        return node, proto, transport

    def ask(self, proto: FrontDoor, transport: StringTransport, *args: bytes) -> bytes:
        transport.clear()
        proto.dataReceived(command(*args))
        return bytes(transport.value())

    def test_consistency_reports_and_sets_the_connections_levels(self) -> None:
        """CONSISTENCY alone reports the levels in force; with one level it
        sets both, with READ/WRITE each (any case, any order), DEFAULT goes
        back to the node's; another connection keeps its own."""
        node, proto, transport = self.node()
        ask = self.ask
        self.assertEqual(ask(proto, transport, b"CONSISTENCY"), b"+read ONE write ONE\r\n")
        self.assertEqual(ask(proto, transport, b"consistency", b"quorum"),
                         b"+read QUORUM write QUORUM\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"write", b"all"),
                         b"+read QUORUM write ALL\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"WRITE", b"ONE", b"READ", b"ALL"),
                         b"+read ALL write ONE\r\n")
        other, other_transport = connect(node, 6001)
        self.assertEqual(ask(other, other_transport, b"CONSISTENCY"), b"+read ONE write ONE\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"DEFAULT"),
                         b"+read ONE write ONE\r\n")

    def test_consistency_refuses_unknown_levels_and_takes_linearizable(self) -> None:
        """An unknown level or a malformed request is refused with the levels
        unchanged; LINEARIZABLE is a level like the others."""
        node, proto, transport = self.node()
        ask = self.ask
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"MOST"),
                         b"-ERR unknown consistency level 'MOST' (ONE, QUORUM, ALL or "
                         b"LINEARIZABLE)\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"READ", b"linearizable"),
                         b"+read LINEARIZABLE write ONE\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"DEFAULT"),
                         b"+read ONE write ONE\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"READ", b"ONE", b"READ", b"ALL"),
                         b"-ERR syntax error\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY", b"READ"), b"-ERR syntax error\r\n")
        self.assertEqual(ask(proto, transport, b"CONSISTENCY"), b"+read ONE write ONE\r\n")

    def test_the_node_default_levels_apply_and_show_in_info_status_and_config(self) -> None:
        """A node started with write QUORUM and read ALL gives every new
        connection those levels, and INFO, STATUS and CONFIG GET show them."""
        node, proto, transport = self.node(write_level="QUORUM", read_level="ALL",
                                           quorum_timeout=2.5)
        self.assertEqual(self.ask(proto, transport, b"CONSISTENCY"), b"+read ALL write QUORUM\r\n")
        info = self.ask(proto, transport, b"INFO", b"consistency")
        self.assertIn(b"# Consistency\r\nread_level:ALL\r\nwrite_level:QUORUM\r\n"
                      b"quorum_timeout:2.5\r\nmembers:1\r\n", info)
        status = self.ask(proto, transport, b"STATUS")
        self.assertIn(b"read_level ALL\r\nwrite_level QUORUM\r\n", status)
        self.assertEqual(self.ask(proto, transport, b"CONFIG", b"GET", b"write-level"),
                         b"*2\r\n$11\r\nwrite-level\r\n$6\r\nquorum\r\n")

    def test_a_lone_node_meets_every_level_at_once(self) -> None:
        """With no other member, QUORUM and ALL are this node alone: writes and
        reads answer at once, over the text protocol too."""
        node, proto, transport = self.node()
        self.ask(proto, transport, b"CONSISTENCY", b"ALL")
        self.assertEqual(self.ask(proto, transport, b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertEqual(self.ask(proto, transport, b"GET", b"k"), b"$1\r\nv\r\n")
        text = node.factory().buildProtocol(None)
        text_transport = StringTransport()
        text.makeConnection(text_transport)
        text.dataReceived(b"CONSISTENCY READ QUORUM WRITE ALL\r\nGET k\r\n")
        self.assertEqual(text_transport.value(), b"read QUORUM write ALL\r\nv\r\n")


class QuorumWriteTests(SynchronousTestCase):
    def test_quorum_write_succeeds_with_one_of_three_partitioned(self) -> None:
        """With n3 cut off, a QUORUM write through n1 answers OK once n2 holds it."""
        cluster = settled_cluster(self)
        cluster.net.block("n1", "n3")
        cluster.net.block("n2", "n3")
        client = quorum_client(cluster, "n1")
        client.send(b"SET", b"k", b"v")
        self.assertEqual(client.answer(), b"")  # n2 has not acknowledged yet
        cluster.run()
        self.assertEqual(client.answer(), b"+OK\r\n")
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"v")
        self.assertIsNone(cluster.nodes["n3"].store.get(b"k"))

    def test_quorum_write_with_two_partitioned_is_indeterminate_and_lands_when_healed(self) -> None:
        """With n2 and n3 cut off, a QUORUM write answers nothing until
        --quorum-timeout, then TIMEOUT saying the outcome is indeterminate;
        once the partition heals the write reaches every node."""
        cluster = settled_cluster(self)
        cluster.net.isolate("n1")
        cluster.net.block("n1", "n2")
        cluster.net.block("n1", "n3")
        client = quorum_client(cluster, "n1", b"WRITE", b"QUORUM")
        client.send(b"SET", b"k", b"v")
        cluster.advance(0.9)
        self.assertEqual(client.answer(), b"")
        cluster.advance(0.2)
        answer = client.answer()
        self.assertTrue(answer.startswith(TIMEOUT_START + b"1 of 3 members within 1s "
                                          b"(2 needed for QUORUM)"), answer)
        self.assertIn(INDETERMINATE, answer)
        cluster.net.heal()
        cluster.settle()
        self.assertEqual([node.store.get(b"k") for node in cluster.nodes.values()], [b"v"] * 3)
        info = Client(cluster, "n1", 6001).ask(b"INFO", b"consistency")
        self.assertIn(b"level_writes_indeterminate:1\r\n", info)

    def test_all_write_with_one_node_down_times_out_indeterminate(self) -> None:
        """At ALL, a write with n3 crashed answers TIMEOUT (2 of 3, 3 needed) after the timeout."""
        cluster = settled_cluster(self)
        cluster.crash("n3")
        client = quorum_client(cluster, "n1", b"WRITE", b"ALL")
        client.send(b"SET", b"k", b"v")
        cluster.advance(1.1)
        answer = client.answer()
        self.assertTrue(answer.startswith(TIMEOUT_START + b"2 of 3 members within 1s "
                                          b"(3 needed for ALL)"), answer)
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"v")

    def test_every_kind_of_write_waits_for_its_level(self) -> None:
        """With n1 cut off, blind writes (MSET, SETEX) and EXEC at QUORUM wait
        and answer TIMEOUT, indeterminate; writes that read their keys first
        (DEL's count, EXPIRE) answer UNAVAILABLE and change nothing; once
        healed, each kind answers OK after a second member holds it."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1", b"WRITE", b"QUORUM")
        self.assertEqual(client.ask(b"SET", b"a", b"0"), b"+OK\r\n")
        cluster.net.isolate("n1")
        cluster.net.block("n1", "n2")
        cluster.net.block("n1", "n3")
        for request in ((b"MSET", b"a", b"1", b"b", b"2"), (b"SETEX", b"c", b"100", b"x")):
            client.send(*request)
            cluster.run()
            self.assertEqual(client.answer(), b"", request)
            cluster.advance(1.1)
            self.assertIn(INDETERMINATE, client.answer(), request)
        for request in ((b"DEL", b"a"), (b"EXPIRE", b"b", b"100")):
            self.assertTrue(client.ask(*request).startswith(
                b"-UNAVAILABLE write at QUORUM needs 2 of 3 members"), request)
        self.assertEqual(cluster.nodes["n1"].store.get(b"a"), b"1")
        self.assertEqual(cluster.nodes["n1"].store.expires(b"b"), 0)
        client.ask(b"MULTI")
        client.ask(b"SET", b"t", b"1")
        client.send(b"EXEC")
        cluster.run()
        self.assertEqual(client.answer(), b"")
        cluster.advance(1.1)
        self.assertIn(INDETERMINATE, client.answer())
        cluster.net.heal()
        cluster.settle()
        for request, reply in (((b"SET", b"k", b"v"), b"+OK\r\n"), ((b"DEL", b"a"), b":1\r\n"),
                               ((b"EXPIRE", b"b", b"100"), b":1\r\n"),
                               ((b"MSET", b"m", b"1", b"n", b"2"), b"+OK\r\n")):
            self.assertEqual(client.ask(*request), reply, request)
        client.ask(b"MULTI")
        client.ask(b"SET", b"t", b"2")
        self.assertEqual(client.ask(b"EXEC"), b"*1\r\n+OK\r\n")
        self.assertEqual(cluster.nodes["n3"].store.get(b"t"), b"2")
        # SET NX of a key that exists writes nothing: nothing to wait for.
        self.assertEqual(client.ask(b"SET", b"t", b"y", b"NX"), b"$-1\r\n")

    def test_flushall_at_quorum_waits_for_members_to_apply_it(self) -> None:
        """FLUSHALL at QUORUM answers OK once a second member applied the
        flush; with both peers cut off it answers TIMEOUT, indeterminate."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1", b"WRITE", b"QUORUM")
        self.assertEqual(client.ask(b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertEqual(client.ask(b"FLUSHALL"), b"+OK\r\n")
        self.assertTrue(all(node.store.get(b"k") is None for node in cluster.nodes.values()))
        cluster.net.isolate("n1")
        cluster.net.block("n1", "n2")
        cluster.net.block("n1", "n3")
        client.send(b"FLUSHALL")
        cluster.advance(1.1)
        self.assertTrue(client.answer().startswith(b"-TIMEOUT flush acknowledged by 1 of 3"),
                        client.answer())


class QuorumReadTests(SynchronousTestCase):
    def missed_write(self) -> SimulatedCluster:
        """n1 and n2 hold k=new, which n3 missed: the write's replication
        frames to n3 were lost, and no anti-entropy round runs meanwhile."""
        cluster = settled_cluster(self, sync_interval=3600.0)
        Client(cluster, "n1").ask(b"SET", b"k", b"old")
        cluster.advance(1.0)
        self.miss(cluster, b"new")
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"old")
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"new")
        return cluster

    def miss(self, cluster: SimulatedCluster, value: bytes) -> None:
        """The entry a write of k=value through n1 makes, merged into n1 and
        n2 only (as replicated writes are: nothing sends it on to n3)."""
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        entry = make_entry(value, n1.clock.stamp(value, n1.store.entry(b"k"))[-3:])
        self.assertTrue(n1.store.apply(b"k", entry) and n2.store.apply(b"k", entry))
        cluster.advance(2.0)

    def test_quorum_read_through_a_stale_node_returns_the_newest(self) -> None:
        """A QUORUM read through n3, which missed the write, answers the new
        value (and n3 holds it from then on); at ONE it answered the old one."""
        cluster = self.missed_write()
        plain = Client(cluster, "n3", 6001)
        self.assertEqual(plain.ask(b"GET", b"k"), b"$3\r\nold\r\n")
        client = quorum_client(cluster, "n3", b"READ", b"QUORUM")
        self.assertEqual(client.ask(b"GET", b"k"), b"$3\r\nnew\r\n")
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"new")

    def test_quorum_read_through_a_fresh_node_repairs_the_stale_member(self) -> None:
        """QUORUM reads through n1 answer the new value, and the one that asks
        n3, which answers with the old one, sends it the new one (read
        repair), before any anti-entropy round could."""
        cluster = self.missed_write()
        client = quorum_client(cluster, "n1", b"READ", b"QUORUM")
        # A QUORUM of three asks one other member, each in turn: n2, then n3.
        for _ in range(2):
            self.assertEqual(client.ask(b"MGET", b"k", b"none"),
                             b"*2\r\n$3\r\nnew\r\n$-1\r\n")
        self.assertEqual(cluster.nodes["n3"].store.get(b"k"), b"new")
        self.assertEqual(cluster.nodes["n1"].quorum.repairs, 1)

    def test_single_key_reads_and_read_first_writes_see_the_newest(self) -> None:
        """At READ QUORUM through the stale n3: EXISTS, STRLEN and GETSET's
        old value are the newest write's, not n3's stale entry."""
        cluster = self.missed_write()
        client = quorum_client(cluster, "n3", b"READ", b"QUORUM")
        self.assertEqual(client.ask(b"STRLEN", b"k"), b":3\r\n")
        self.miss(cluster, b"newer")
        self.assertEqual(client.ask(b"GETSET", b"k", b"mine"), b"$5\r\nnewer\r\n")
        self.assertEqual(client.ask(b"EXISTS", b"k", b"k", b"nope"), b":2\r\n")

    def test_a_read_that_cannot_reach_enough_members_says_so(self) -> None:
        """With both peers cut off, a QUORUM read answers UNAVAILABLE at once;
        at ONE it still answers."""
        cluster = settled_cluster(self)
        Client(cluster, "n1").ask(b"SET", b"k", b"v")
        cluster.net.isolate("n1")
        cluster.net.block("n1", "n2")
        cluster.net.block("n1", "n3")
        client = quorum_client(cluster, "n1", b"READ", b"QUORUM")
        self.assertEqual(client.ask(b"GET", b"k"),
                         b"-UNAVAILABLE read at QUORUM needs 2 of 3 members and 1 are "
                         b"reachable; the command did not run\r\n")
        self.assertEqual(Client(cluster, "n1", 6001).ask(b"GET", b"k"), b"$1\r\nv\r\n")

    def test_a_read_whose_members_do_not_answer_in_time_times_out(self) -> None:
        """A QUORUM read whose peers are linked but stalled answers TIMEOUT after
        --quorum-timeout, saying the command did not run."""
        cluster = settled_cluster(self)
        cluster.net.stall("n1", "n2", 5.0)
        cluster.net.stall("n1", "n3", 5.0)
        client = quorum_client(cluster, "n1", b"READ", b"QUORUM")
        client.send(b"GET", b"k")
        cluster.advance(1.1)
        self.assertEqual(client.answer(), b"-TIMEOUT read at QUORUM answered by 1 of 3 "
                                          b"members within 1s (2 needed); the command did not run\r\n")
        cluster.advance(5.0)  # the late answers are ignored

    def test_a_quorum_write_is_read_through_a_node_that_missed_it(self) -> None:
        """A QUORUM write through n1 with n3 cut off; n1 crashes, n3 comes
        back: a QUORUM read through n3 answers the write."""
        cluster = settled_cluster(self, sync_interval=3600.0)
        cluster.net.block("n1", "n3")
        cluster.net.block("n2", "n3")
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertIsNone(cluster.nodes["n3"].store.get(b"k"))
        cluster.crash("n1")
        cluster.net.heal()
        cluster.advance(1.0)
        self.assertEqual(quorum_client(cluster, "n3").ask(b"GET", b"k"), b"$1\r\nv\r\n")

    def test_a_quorum_read_writes_back_what_it_returns_to_a_quorum(self) -> None:
        """On five nodes, a value only n1 holds (its write still in flight)
        that a QUORUM read through n5 returns is held by at least three
        members once the read answers: the stale members it asked were
        sent it and asked again (so no later QUORUM read returns older)."""
        cluster = settled_cluster(self, size=5, sync_interval=3600.0)
        Client(cluster, "n1").ask(b"SET", b"k", b"old")
        cluster.advance(1.0)
        n1 = cluster.nodes["n1"]
        entry = make_entry(b"new", n1.clock.stamp(b"new", n1.store.entry(b"k"))[-3:])
        self.assertTrue(n1.store.apply(b"k", entry))
        client = quorum_client(cluster, "n5", b"READ", b"QUORUM")
        holders = []
        coordinator = cluster.nodes["n5"].quorum
        read = coordinator.read

        def watched(keys: Any, level: str, done: Any, what: str = "read",
                    wait: bool = False) -> None:
            def answered(error: Any) -> None:  # who holds new as the read answers
                holders.extend(name for name, node in cluster.nodes.items()
                               if node.store.get(b"k") == b"new")
                done(error)

            read(keys, level, answered, what, wait=wait)

        coordinator.read = watched  # type: ignore[method-assign]
        self.assertEqual(client.ask(b"GET", b"k"), b"$3\r\nnew\r\n")
        self.assertGreaterEqual(len(holders), 3, holders)
        self.assertEqual(quorum_client(cluster, "n2").ask(b"GET", b"k"), b"$3\r\nnew\r\n")

    def test_a_read_asks_the_other_members_when_the_first_is_slow(self) -> None:
        """A QUORUM read asks one other member first; when that one is stalled
        it asks the rest after a short while and answers well within the timeout."""
        cluster = settled_cluster(self)
        Client(cluster, "n1").ask(b"SET", b"k", b"v")
        cluster.advance(1.0)
        cluster.net.stall("n1", "n2", 5.0)
        client = quorum_client(cluster, "n1", b"READ", b"QUORUM")
        for _ in range(2):  # one of the two asks n2 first
            client.send(b"GET", b"k")
            cluster.advance(0.5)
            self.assertEqual(client.answer(), b"$1\r\nv\r\n")
        cluster.advance(5.0)

    def test_a_loading_member_does_not_count_for_a_read(self) -> None:
        """A member that is loading (its data may lack acknowledged writes)
        answers that it cannot vouch for it; the read asks another member
        instead of taking its empty answer for the newest."""
        cluster = settled_cluster(self, sync_interval=3600.0)
        n1 = cluster.nodes["n1"]
        entry = make_entry(b"new", n1.clock.stamp(b"new", None)[-3:])
        self.assertTrue(n1.store.apply(b"k", entry))  # on n1 only
        cluster.nodes["n2"].dispatcher.loading = True
        coordinator = cluster.nodes["n3"].quorum
        coordinator._turn = 1  # n2 is asked first
        client = quorum_client(cluster, "n3", b"READ", b"QUORUM")
        self.assertEqual(client.ask(b"GET", b"k"), b"$3\r\nnew\r\n")
        cluster.nodes["n2"].dispatcher.loading = False


class StoppingTests(SynchronousTestCase):
    def test_stopping_ends_every_wait_and_leaves_no_timer(self) -> None:
        """A write and a read waiting for members when the node stops are
        answered (TIMEOUT, indeterminate for the write), and the cluster
        stops with no delayed call left (the cleanup checks it)."""
        cluster = settled_cluster(self)
        cluster.net.stall("n1", "n2", 30.0)
        cluster.net.stall("n1", "n3", 30.0)
        writer = quorum_client(cluster, "n1", b"WRITE", b"ALL")
        reader = Client(cluster, "n1", 6001)
        reader.ask(b"CONSISTENCY", b"READ", b"ALL")
        writer.send(b"SET", b"k", b"v")
        reader.send(b"GET", b"k")
        cluster.run()
        self.assertEqual((writer.answer(), reader.answer()), (b"", b""))
        # The write waits for its members and for its key's versions (asked
        # alongside), the read for its members.
        self.assertEqual(cluster.nodes["n1"].quorum.pending(), 3)
        cluster.nodes["n1"].stop_timers()
        self.assertIn(INDETERMINATE, writer.answer())
        self.assertTrue(reader.answer().startswith(b"-TIMEOUT read at ALL"), reader.answer())
        cluster.net.heal()  # the stalled links may flush as the cluster stops

    def test_a_read_only_user_gets_noperm_for_writes_at_a_level(self) -> None:
        """A read-only user's write at QUORUM is refused NOPERM at once, asking
        no member; its reads at QUORUM work."""
        users = parse_users(b"reader read >pw\n")
        cluster = settled_cluster(self, users=users)
        client = Client(cluster, "n1")
        self.assertEqual(client.ask(b"AUTH", b"reader", b"pw"), b"+OK\r\n")
        client.ask(b"CONSISTENCY", b"QUORUM")
        self.assertTrue(client.ask(b"SET", b"k", b"v").startswith(b"-NOPERM"))
        self.assertEqual(cluster.nodes["n1"].quorum.reads_met, 0)
        self.assertEqual(client.ask(b"GET", b"k"), b"$-1\r\n")
        self.assertEqual(cluster.nodes["n1"].quorum.reads_met, 1)
