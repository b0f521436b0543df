"""A connection's commands at QUORUM and LINEARIZABLE take effect in the
order it sent them, on a fake-clock cluster in one process.

Commands that ask the members before they run (every write but a one-key
blind write, and reads) could run in the order their answers came: two asks
go to different members (the coordinator takes turns), so a slow member
reversed a pipeline. Here the member asked first is slow (its link is
stalled), so its answer comes after the second ask's; the replies and the
values every node ends with are still the in-order ones, over RESP and over
the text protocol (which dispatch separately). Waiting for a write's
acknowledgements does not hold the next command back, and a paused
connection is not read from.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from distkv.front import blindwrites
from distkv.store.entries import make_entry
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.respclient import command, connect
from tests.test_levels import quorum_client

#: How long the first member asked takes to answer: less than the hedge
#: (0.2 s), so the other member is not asked too.
SLOW = 0.1


def first_ask_to(cluster: SimulatedCluster, member: str, node: str = "n1") -> None:
    """The next command of ``node`` that asks one member asks ``member``
    (the coordinator takes turns among the members, in name order)."""
    coordinator = cluster.nodes[node].quorum
    coordinator._turn = sorted(coordinator.cluster.member_senders()).index(member)


def slow_first(cluster: SimulatedCluster) -> None:
    """n1's next ask goes to n2, whose link with n1 is held for SLOW
    seconds; the ask after it goes to n3 and is answered first."""
    first_ask_to(cluster, "n2")
    cluster.net.stall("n1", "n2", SLOW)


def values(cluster: SimulatedCluster, *keys: bytes) -> List[List[Optional[bytes]]]:
    return [[node.store.get(key) for key in keys] for node in cluster.nodes.values()]


def written_ahead(cluster: SimulatedCluster, key: bytes, value: bytes,
                  nodes: Sequence[str] = ("n2", "n3")) -> None:
    """``nodes`` hold ``key`` = ``value`` at a version 0.5 s ahead of n1's
    clock, which n1 never heard of (a node whose clock runs ahead wrote it)."""
    now = cluster.nodes["n1"].clock.now()
    entry = make_entry(value, Version(now.ms + 500, 0, "n2"))
    for name in nodes:
        assert cluster.nodes[name].store.apply(key, entry), name


class TextClient:
    """A text-protocol client of one node of ``cluster``."""

    def __init__(self, cluster: SimulatedCluster, node: str, port: int = 6100) -> None:
        self.cluster = cluster
        self.proto, self.transport = connect(cluster.nodes[node], port)

    def send(self, *lines: bytes) -> None:
        self.transport.clear()
        self.proto.dataReceived(b"".join(line + b"\r\n" for line in lines))

    def answer(self) -> bytes:
        return bytes(self.transport.value())


def text_quorum_client(cluster: SimulatedCluster, node: str) -> TextClient:
    client = TextClient(cluster, node)
    client.send(b"CONSISTENCY QUORUM")
    cluster.run()
    assert client.answer() == b"read QUORUM write QUORUM\r\n", client.answer()
    return client


def producing(transport: StringTransport) -> bool:
    """Whether the node reads from this client (it pauses it while a command waits)."""
    return transport.producerState == "producing"


class PipelineOrderTests(SynchronousTestCase):
    def cluster(self) -> SimulatedCluster:
        # A short --max-clock-skew: LINEARIZABLE serves once that long has
        # passed since the start (settling takes 30 s).
        cluster = settled_cluster(self, max_clock_skew=1.0)
        setup = quorum_client(cluster, "n1")
        for key in (b"k", b"j"):
            self.assertEqual(setup.ask(b"SET", key, b"0"), b"+OK\r\n")
        cluster.advance(1.0)
        return cluster

    def pipeline(self, cluster: SimulatedCluster, *requests: Sequence[bytes]) -> bytes:
        """The replies to ``requests`` pipelined in one read through n1 at
        QUORUM, the first ask answered after the second."""
        client = quorum_client(cluster, "n1")
        slow_first(cluster)
        client.transport.clear()
        client.proto.dataReceived(b"".join(command(*request) for request in requests))
        cluster.advance(1.0)
        return client.answer()

    def test_set_with_get_pairs_run_in_order(self) -> None:
        """SET k a GET then SET k b GET: the first answers the old value, the
        second a, and every node ends with b (out of order, the second
        answered 0 and the first b, and a stayed)."""
        cluster = self.cluster()
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a", b"GET"),
                                       (b"SET", b"k", b"b", b"GET")),
                         b"$1\r\n0\r\n$1\r\na\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_mset_pairs_run_in_order(self) -> None:
        """MSET k a j x then MSET k b j y (several keys: they ask first):
        every node ends with the second's values."""
        cluster = self.cluster()
        self.assertEqual(self.pipeline(cluster, (b"MSET", b"k", b"a", b"j", b"x"),
                                       (b"MSET", b"k", b"b", b"j", b"y")),
                         b"+OK\r\n+OK\r\n")
        self.assertEqual(values(cluster, b"k", b"j"), [[b"b", b"y"]] * 3)

    def test_a_read_between_two_writes_sees_the_first_only(self) -> None:
        """GETSET k a, GET k, GETSET k b: the GET answers a (not the old
        value, not b), and every node ends with b."""
        cluster = self.cluster()
        self.assertEqual(self.pipeline(cluster, (b"GETSET", b"k", b"a"), (b"GET", b"k"),
                                       (b"GETSET", b"k", b"b")),
                         b"$1\r\n0\r\n$1\r\na\r\n$1\r\na\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_set_then_incrby_runs_in_order_after_a_newer_entry_elsewhere(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k 1 (a blind
        write: it runs at once, and runs again above the newer entry its
        fetch finds) then INCRBY k 5: INCRBY answers 6 and every node ends
        with 6 (out of order, INCRBY read the 20 its own fetch found and
        answered 25)."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"1"),
                                       (b"INCRBY", b"k", b"5")),
                         b"+OK\r\n:6\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"6"]] * 3)

    def test_a_blind_write_then_a_write_that_reads_run_in_order(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a (blind)
        then SET k b GET: the second answers a, and every node ends with b."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a"),
                                       (b"SET", b"k", b"b", b"GET")),
                         b"+OK\r\n$1\r\na\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_a_read_after_a_blind_write_sees_it(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a (blind)
        then GET k: the GET answers a, which every node ends with (out of
        order, the GET answered the 20 its own fetch found)."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a"), (b"GET", b"k")),
                         b"+OK\r\n$1\r\na\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"a"]] * 3)

    def test_a_switch_to_one_after_a_blind_write_runs_after_it(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a (blind,
        it runs again above that entry), CONSISTENCY ONE, SET k b, GET k:
        every node ends with b (before, the switch ran at once, SET k b at
        ONE ran before SET k a ran again, and a overwrote it everywhere)."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a"), (b"CONSISTENCY", b"ONE"),
                                       (b"SET", b"k", b"b"), (b"GET", b"k")),
                         b"+OK\r\n+read ONE write ONE\r\n+OK\r\n$1\r\nb\r\n")
        cluster.advance(5.0)
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_watch_after_a_blind_write_sees_what_it_left(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a (blind,
        it runs again above that entry), WATCH k, MULTI, SET k b, EXEC: no
        write came after the WATCH, so EXEC runs and every node ends with b
        (before, WATCH saw the first run's version and EXEC aborted)."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a"), (b"WATCH", b"k"),
                                       (b"MULTI",), (b"SET", b"k", b"b"), (b"EXEC",)),
                         b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_a_transaction_after_a_blind_write_runs_after_it(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a (blind,
        it runs again above that entry) then MULTI, SET k b, EXEC: every
        node ends with b (out of order, SET k a ran again over it)."""
        cluster = self.cluster()
        written_ahead(cluster, b"k", b"20")
        self.assertEqual(self.pipeline(cluster, (b"SET", b"k", b"a"), (b"MULTI",),
                                       (b"SET", b"k", b"b"), (b"EXEC",)),
                         b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)

    def test_a_transaction_held_back_checks_its_watched_keys_when_it_runs(self) -> None:
        """WATCH w, then SET k a (blind, its fetch slow), MULTI, SET w 1, EXEC:
        another client writes w while EXEC waits for SET k a to settle, so
        EXEC runs nothing and answers the nil array. (A WATCH sent after
        SET k a would itself wait, and watch what the other client wrote.)"""
        cluster = self.cluster()
        client = quorum_client(cluster, "n1")
        slow_first(cluster)
        client.transport.clear()
        client.proto.dataReceived(b"".join(command(*request) for request in (
            (b"WATCH", b"w"), (b"SET", b"k", b"a"), (b"MULTI",), (b"SET", b"w", b"1"),
            (b"EXEC",))))
        other, other_transport = connect(cluster.nodes["n1"], 6200)
        other.dataReceived(command(b"SET", b"w", b"other"))
        self.assertEqual(other_transport.value(), b"+OK\r\n")
        cluster.advance(1.0)
        self.assertEqual(client.answer(), b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n")
        self.assertEqual(values(cluster, b"w"), [[b"other"]] * 3)

    def test_text_protocol_runs_a_pipeline_in_order(self) -> None:
        """The same over the text protocol: GETSET k a, GET k, GETSET k b,
        then SET k 1 and INCRBY k 5 with k = 20 stamped ahead on n2 and n3."""
        cluster = self.cluster()
        client = text_quorum_client(cluster, "n1")
        slow_first(cluster)
        client.send(b"GETSET k a", b"GET k", b"GETSET k b")
        cluster.advance(1.0)
        self.assertEqual(client.answer(), b"0\r\na\r\na\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"b"]] * 3)
        written_ahead(cluster, b"k", b"20")
        slow_first(cluster)
        client.send(b"SET k 1", b"INCRBY k 5")
        cluster.advance(1.0)
        self.assertEqual(client.answer(), b"OK\r\n6\r\n")
        self.assertEqual(values(cluster, b"k"), [[b"6"]] * 3)

    def test_linearizable_commands_run_in_order(self) -> None:
        """At LINEARIZABLE, SET k 1 then INCRBY k 5 then GET k pipelined
        through n1 (the first round slowed by n2's stalled link) answer OK,
        6 and 6."""
        cluster = self.cluster()
        client = quorum_client(cluster, "n1", b"LINEARIZABLE")
        cluster.net.stall("n1", "n2", SLOW)
        client.transport.clear()
        client.proto.dataReceived(command(b"SET", b"k", b"1") + command(b"INCRBY", b"k", b"5")
                                  + command(b"GET", b"k"))
        cluster.advance(1.0)
        self.assertEqual(client.answer(), b"+OK\r\n:6\r\n$1\r\n6\r\n")


class PauseTests(SynchronousTestCase):
    def test_a_waiting_command_pauses_reading_and_acks_do_not(self) -> None:
        """While INCR a waits for its fetch, n1 runs no further request and
        does not read from the client (so unparsed input cannot pile up);
        once it has run, SET b runs at once and the client is read again,
        though INCR a's reply still waits for its acknowledgements; both
        are answered in order."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        n1 = cluster.nodes["n1"]
        client.transport.clear()
        client.proto.dataReceived(command(b"INCR", b"a") + command(b"SET", b"b", b"1"))
        self.assertFalse(producing(client.transport))
        self.assertEqual((n1.store.get(b"a"), n1.store.get(b"b")), (None, None))
        net = cluster.net
        turns = 0
        while n1.store.get(b"a") is None:  # one turn at a time until INCR a ran
            turns += 1
            self.assertLess(turns, 20)
            net.advance(0)
            for connection in list(net.connections):
                connection.step()
        self.assertEqual(client.answer(), b"")  # INCR a waits for its acknowledgements
        self.assertEqual(n1.store.get(b"b"), b"1")
        self.assertTrue(producing(client.transport))
        cluster.run()
        self.assertEqual(client.answer(), b":1\r\n+OK\r\n")
        self.assertTrue(producing(client.transport))

    def test_a_lone_waiting_command_pauses_reading_only_once_more_arrives(self) -> None:
        """A QUORUM GET alone in its read waits for its fetch with the client
        still read from (a client waiting for its reply sends nothing, so
        pausing would only cost syscalls); a request that arrives meanwhile
        is held, not run, and pauses reading; once the GET has run, both
        are answered in order and the client is read again."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        client.transport.clear()
        client.proto.dataReceived(command(b"GET", b"k"))
        self.assertTrue(producing(client.transport))
        client.proto.dataReceived(command(b"SET", b"k", b"v"))
        self.assertFalse(producing(client.transport))
        self.assertIsNone(cluster.nodes["n1"].store.get(b"k"))  # held behind the GET
        cluster.run()
        self.assertEqual(client.answer(), b"$-1\r\n+OK\r\n")
        self.assertTrue(producing(client.transport))

    def test_pipelined_blind_writes_do_not_wait_for_each_other(self) -> None:
        """Blind writes (one-key SETs) run at once: three pipelined at QUORUM
        have all run on n1 before any member answered, and the client is
        still read from."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        n1 = cluster.nodes["n1"]
        client.transport.clear()
        client.proto.dataReceived(b"".join(command(b"SET", key, b"v") for key in (b"x", b"y", b"z")))
        self.assertEqual([n1.store.get(key) for key in (b"x", b"y", b"z")], [b"v"] * 3)
        self.assertTrue(producing(client.transport))
        cluster.run()
        self.assertEqual(client.answer(), b"+OK\r\n" * 3)

    def test_a_closed_connection_drops_the_requests_held_back(self) -> None:
        """A client that hangs up while a command waits: the requests held
        behind it never run."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        client.proto.dataReceived(command(b"INCR", b"a") + command(b"SET", b"after", b"1"))
        client.proto.connectionLost(Exception("gone"))  # type: ignore[arg-type]
        cluster.run()
        cluster.advance(1.0)
        self.assertEqual(cluster.nodes["n1"].store.get(b"a"), b"1")
        self.assertIsNone(cluster.nodes["n1"].store.get(b"after"))


class FollowerFetchFailedTests(SynchronousTestCase):
    def test_a_write_waiting_for_a_later_one_whose_fetch_failed_is_indeterminate(self) -> None:
        """n2 and n3 hold k = 20 stamped ahead of n1's clock. SET k a then
        SET k b pipelined at QUORUM through n1: the first's fetch finds the
        newer entry and leaves ordering above it to the second, whose fetch
        fails (as when its members do not answer in time). The second
        never learned of the newer entry, so neither write is above it:
        both answer the indeterminate TIMEOUT, not OK (the second says its
        fetch failed)."""
        cluster = settled_cluster(self)
        written_ahead(cluster, b"k", b"20")
        client = quorum_client(cluster, "n1")
        coordinator = cluster.nodes["n1"].quorum
        reads = []
        real_read = coordinator.read

        def read(keys, level, done, what="read", repair=True, seen=None,  # type: ignore[no-untyped-def]
                 wait=False):
            reads.append(keys)
            if len(reads) == 2:  # the second SET's fetch
                done("TIMEOUT write at QUORUM answered by 1 of 3 members within 1s "
                     "(2 needed); the command did not run")
                return
            real_read(keys, level, done, what, repair, seen, wait)

        coordinator.read = read  # type: ignore[method-assign]
        indeterminate = coordinator.writes_indeterminate
        client.transport.clear()
        client.proto.dataReceived(command(b"SET", b"k", b"a") + command(b"SET", b"k", b"b"))
        cluster.advance(1.0)
        self.assertEqual(len(reads), 2)
        first, second = client.answer().split(b"\r\n")[:2]
        self.assertTrue(first.startswith(b"-TIMEOUT write at QUORUM could not be ordered"), first)
        self.assertIn(b"outcome indeterminate", first)
        self.assertEqual(second, b"-" + blindwrites.unfetched("QUORUM").encode())
        self.assertEqual(cluster.nodes["n2"].store.get(b"k"), b"20")  # neither is above it
        self.assertEqual(coordinator.writes_indeterminate, indeterminate + 2)
        self.assertEqual(blindwrites.unordered("QUORUM").split(";")[0],
                         first[1:].decode().split(";")[0])

