"""Blind writes at QUORUM and ALL (SET without options that read, SETEX,
PSETEX, MSET) in one round trip, on a fake-clock cluster in one process:
the write is replicated at once and its keys' versions are fetched alongside
(see :mod:`distkv.front.blindwrites`); a write stamped
below an entry the fetch found runs again above it. And the answers to
LINEARIZABLE accepts that arrive together leave together."""

from __future__ import annotations

from typing import Callable, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import paxoswire, wire
from distkv.cluster.peerproto import PeerConnection
from distkv.store.entries import make_entry, version_of
from distkv.store.hlc import Version
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.fakehost import FakeHost
from tests.respclient import command
from tests.test_levels import Client, quorum_client


def network_turns(cluster: SimulatedCluster, client: Client, *args: bytes) -> int:
    """How many turns of the simulated network (every due call run, then
    every connection's bytes delivered once each way) pass before ``client``
    has the answer to ``args``: two per round trip between nodes."""
    net = cluster.net
    client.send(*args)
    turns = 0
    while not client.answer():
        turns += 1
        if turns > 100:
            raise AssertionError(f"no answer to {args!r}")
        net.advance(0)
        for connection in list(net.connections):
            if not connection.closed:
                connection.step()
    cluster.run()
    return turns


class OneRoundTripTests(SynchronousTestCase):
    def test_a_blind_write_at_quorum_takes_one_round_trip_like_a_read(self) -> None:
        """At QUORUM and at ALL, SET, SETEX and an MSET of one key are answered
        after as many network turns as a GET (one round trip to the other
        members), where INCR, whose reply depends on the value, and an MSET
        of several keys (whose second run could overwrite a later write of
        one of them) fetch first and take two round trips."""
        cluster = settled_cluster(self)
        for level in (b"QUORUM", b"ALL"):
            client = quorum_client(cluster, "n1", level)
            read = network_turns(cluster, client, b"GET", b"k")
            self.assertEqual(read, 2)
            for args in ((b"SET", b"k", b"v"), (b"SETEX", b"k", b"100", b"v"),
                         (b"MSET", b"a", b"1")):
                self.assertEqual(network_turns(cluster, client, *args), read, args)
                self.assertTrue(client.answer().startswith(b"+OK"), client.answer())
            self.assertEqual(network_turns(cluster, client, b"INCR", b"n"), 2 * read)
            self.assertEqual(network_turns(cluster, client, b"MSET", b"a", b"1", b"b", b"2"),
                             2 * read)
            self.assertTrue(client.answer().startswith(b"+OK"), client.answer())
        for node in cluster.nodes.values():
            self.assertEqual((node.store.get(b"k"), node.store.get(b"b")), (b"v", b"2"))


class OrderTests(SynchronousTestCase):
    def test_a_blind_write_behind_another_nodes_clock_runs_again_above_it(self) -> None:
        """n2's clock is 5 s behind. A QUORUM SET through n1 is acknowledged
        (n1 and n3 hold it; n2 is cut off from n1), then a QUORUM SET of the
        same key through n2, which never heard of the first: its first
        stamp is below the first write's, the versions fetched from n3 show
        it, and it runs again above it. It is acknowledged as the newer
        write: a QUORUM read through n1 and every node once healed hold it."""
        cluster = settled_cluster(self, skew_ms={"n2": -5_000})
        cluster.net.block("n1", "n2")
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"first"), b"+OK\r\n")
        first = cluster.nodes["n3"].store.entry(b"k")
        assert first is not None
        n2 = cluster.nodes["n2"]
        self.assertIsNone(n2.store.entry(b"k"))
        seq = n2.store.seq
        self.assertEqual(quorum_client(cluster, "n2").ask(b"SET", b"k", b"second"),
                         b"+OK\r\n")
        self.assertEqual(n2.store.seq, seq + 2)  # written twice
        second = n2.store.entry(b"k")
        assert second is not None
        self.assertGreater(version_of(second), version_of(first))
        self.assertEqual(quorum_client(cluster, "n1").ask(b"GET", b"k"), b"$6\r\nsecond\r\n")
        cluster.net.heal()
        cluster.advance(2.0)
        self.assertEqual([node.store.get(b"k") for node in cluster.nodes.values()],
                         [b"second"] * 3)

    def test_a_blind_write_above_every_fetched_entry_runs_once(self) -> None:
        """With no clock behind, a QUORUM SET through n2 of a key n1 wrote
        (and n2 missed) is stamped above it at once: it runs once."""
        cluster = settled_cluster(self)
        cluster.net.block("n1", "n2")
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"first"), b"+OK\r\n")
        cluster.advance(0.01)  # n2's clock moves on past the first write's stamp
        n2 = cluster.nodes["n2"]
        seq = n2.store.seq
        self.assertEqual(quorum_client(cluster, "n2").ask(b"SET", b"k", b"second"),
                         b"+OK\r\n")
        self.assertEqual(n2.store.seq, seq + 1)
        self.assertEqual(quorum_client(cluster, "n3").ask(b"GET", b"k"), b"$6\r\nsecond\r\n")
        cluster.net.heal()

    def test_pipelined_writes_of_one_key_end_with_the_last_and_run_once_each(self) -> None:
        """Three SETs of one key pipelined on one connection at QUORUM, none
        behind another node's clock: each runs once, in order, and every
        node ends with the last."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        n1 = cluster.nodes["n1"]
        seq = n1.store.seq
        client.send(b"SET", b"k", b"1")
        client.proto.dataReceived(command(b"SET", b"k", b"2") + command(b"SET", b"k", b"3"))
        cluster.run()
        self.assertEqual(client.answer(), b"+OK\r\n" * 3)
        self.assertEqual(n1.store.seq, seq + 3)
        cluster.advance(1.0)
        self.assertEqual([node.store.get(b"k") for node in cluster.nodes.values()], [b"3"] * 3)

    def test_pipelined_writes_behind_another_nodes_clock_end_with_the_last(self) -> None:
        """n2's clock is 5 s behind and n1 wrote the key (acknowledged at
        QUORUM, n2 cut off from n1): two SETs of it pipelined through n2 at
        QUORUM are both stamped below n1's write; they are answered OK and
        the second one's value is what a QUORUM read and, once healed, every
        node hold (the first does not run again over it)."""
        cluster = settled_cluster(self, skew_ms={"n2": -5_000})
        cluster.net.block("n1", "n2")
        self.assertEqual(quorum_client(cluster, "n1").ask(b"SET", b"k", b"first"), b"+OK\r\n")
        client = quorum_client(cluster, "n2")
        client.send(b"SET", b"k", b"a")
        client.proto.dataReceived(command(b"SET", b"k", b"b"))
        cluster.run()
        self.assertEqual(client.answer(), b"+OK\r\n" * 2)
        self.assertEqual(quorum_client(cluster, "n3").ask(b"GET", b"k"), b"$1\r\nb\r\n")
        cluster.net.heal()
        cluster.advance(2.0)
        self.assertEqual([node.store.get(b"k") for node in cluster.nodes.values()], [b"b"] * 3)

    def test_a_write_that_fails_writes_nothing_and_asks_nobody(self) -> None:
        """A SET at QUORUM with a bad option answers its error at once and
        asks no member for versions."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        reads = cluster.nodes["n1"].quorum.reads_met
        client.send(b"SET", b"k", b"v", b"EX", b"nope")
        self.assertTrue(client.answer().startswith(b"-ERR"), client.answer())
        cluster.run()
        self.assertEqual(cluster.nodes["n1"].quorum.reads_met, reads)
        self.assertIsNone(cluster.nodes["n1"].store.get(b"k"))


class _Accepting(FakeHost):
    """Answers every accept at once, but for key ``later``: once ``commit`` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: List[Callable[[], None]] = []

    def consensus_accept(self, request: paxoswire.Accept, send: Callable[[bytes], None]) -> None:
        answer = paxoswire.encode_accepted(request.id, paxoswire.OK)
        if request.key == b"later":
            self.waiting.append(lambda: send(answer))
        else:
            send(answer)


class AcceptAnswerTests(SynchronousTestCase):
    def test_accepts_read_together_are_answered_in_one_write(self) -> None:
        """Three LINEARIZABLE accepts that arrive in one read are answered in
        one write to the proposer; one answered once its commit is done (after
        that read) is written then, on its own."""
        host = _Accepting()
        proto = PeerConnection(host, Clock(), 1.0, 1 << 20)  # type: ignore[arg-type]
        proto.remote = wire.Hello("them", "1")
        writes: List[bytes] = []
        proto.write = writes.append  # type: ignore[method-assign]
        entry = make_entry(b"v", Version(1, 0, "them"))
        proto._receive([paxoswire.Accept(number, key, entry) for number, key
                        in ((1, b"a"), (2, b"later"), (3, b"b"), (4, b"c"))])
        self.assertEqual(writes, [b"".join(paxoswire.encode_accepted(number, paxoswire.OK)
                                           for number in (1, 3, 4))])
        host.waiting.pop()()
        self.assertEqual(writes[1:], [paxoswire.encode_accepted(2, paxoswire.OK)])
