"""Blind writes at QUORUM whose fetch finds too few members linked wait for
one to link until their deadline (``--quorum-timeout``), and the settle path
of a connection's blind writes survives an exception in one of them: on a
fake-clock cluster in one process (see :mod:`distkv.front.blindwrites`)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from distkv.front import blindwrites
from distkv.testing import SimulatedCluster
from tests.clusters import settled_cluster
from tests.test_levels import INDETERMINATE, Client, quorum_client


def cut_off(cluster: SimulatedCluster, node: str) -> None:
    """Cut every link of ``node`` and refuse new ones, until healed."""
    for other in cluster.nodes:
        if other != node:
            cluster.net.block(node, other)
    cluster.net.run()


def linked_members(cluster: SimulatedCluster, node: str) -> int:
    return len(cluster.nodes[node].member_senders())


class FetchWaitsForALinkTests(SynchronousTestCase):
    def test_a_link_that_comes_up_before_the_deadline_gives_the_normal_answer(self) -> None:
        """n1 has no link up when a QUORUM SET arrives (5 s timeout): the
        write runs and its fetch waits instead of failing at once; the
        partition heals, a link comes up before the deadline, the fetch
        asks that member and the SET answers OK, held by a quorum."""
        cluster = settled_cluster(self, quorum_timeout=5.0)
        cut_off(cluster, "n1")
        self.assertEqual(linked_members(cluster, "n1"), 0)
        client = quorum_client(cluster, "n1")
        client.send(b"SET", b"k", b"v")
        cluster.advance(0.5)
        self.assertEqual(client.answer(), b"")  # waiting, not refused
        deadline = cluster.net.seconds() + 4.5
        cluster.net.heal()
        while not client.answer() and cluster.net.seconds() < deadline:
            cluster.advance(0.1)  # the links redial with backoff
        self.assertEqual(client.answer(), b"+OK\r\n")
        held = [node.store.get(b"k") for node in cluster.nodes.values()].count(b"v")
        self.assertGreaterEqual(held, 2)
        info = Client(cluster, "n1", 6001).ask(b"INFO", b"consistency")
        self.assertIn(b"level_writes_indeterminate:0\r\n", info)

    def test_no_link_before_the_deadline_answers_timeout_at_the_deadline(self) -> None:
        """n1 stays cut off: a QUORUM SET answers nothing before the 1 s
        deadline (no refusal at once), then the indeterminate TIMEOUT, never
        OK; and the coordinator is left waiting for nothing."""
        cluster = settled_cluster(self)
        cut_off(cluster, "n1")
        client = quorum_client(cluster, "n1")
        client.send(b"SET", b"k", b"v")
        cluster.net.run()
        self.assertEqual(client.answer(), b"")
        cluster.advance(0.9)
        self.assertEqual(client.answer(), b"")
        cluster.advance(0.2)
        answer = client.answer()
        self.assertTrue(answer.startswith(b"-TIMEOUT write"), answer)
        self.assertIn(INDETERMINATE, answer)
        n1 = cluster.nodes["n1"]
        self.assertEqual(n1.quorum.pending(), 0)
        self.assertEqual(n1.quorum._link_waits, [])
        cluster.net.heal()

    def test_an_mset_of_several_keys_waits_for_a_link_too(self) -> None:
        """An MSET of two keys at QUORUM (which fetches before it runs) with
        no link up waits rather than running on a failed fetch: once a link
        comes up in time it answers OK."""
        cluster = settled_cluster(self, quorum_timeout=5.0)
        cut_off(cluster, "n1")
        client = quorum_client(cluster, "n1")
        client.send(b"MSET", b"a", b"1", b"b", b"2")
        cluster.advance(0.5)
        self.assertEqual(client.answer(), b"")
        self.assertIsNone(cluster.nodes["n1"].store.get(b"a"))  # not run yet
        deadline = cluster.net.seconds() + 4.5
        cluster.net.heal()
        while not client.answer() and cluster.net.seconds() < deadline:
            cluster.advance(0.1)
        self.assertEqual(client.answer(), b"+OK\r\n")
        self.assertEqual(cluster.nodes["n1"].store.get(b"a"), b"1")

    def test_a_read_with_no_member_linked_is_still_refused_at_once(self) -> None:
        """A QUORUM GET with no link up answers UNAVAILABLE at once: only a
        blind write, which has run already, waits for a link."""
        cluster = settled_cluster(self)
        cut_off(cluster, "n1")
        client = quorum_client(cluster, "n1")
        client.send(b"GET", b"k")
        self.assertTrue(client.answer().startswith(b"-UNAVAILABLE read at QUORUM"),
                        client.answer())
        cluster.net.heal()


class InjectedError(Exception):
    """The failure the tests inject."""


class SettleRobustnessTests(SynchronousTestCase):
    def test_an_exception_settling_a_blind_write_leaves_the_connection_usable(self) -> None:
        """A QUORUM SET whose settle step raises, pipelined with a SET and a
        GET behind it: the failure is logged, the SET answers an
        indeterminate error (never OK), the requests behind it run and
        answer, and the connection's waits are cleared."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        session = client.proto.inner.session  # type: ignore[attr-defined]
        client.send(b"SET", b"k", b"1")
        [blind] = list(session.settling)

        def explode(error: Any) -> None:
            raise InjectedError()

        blind.settle = explode
        client.proto.dataReceived(b"".join([
            _command(b"SET", b"k", b"2"), _command(b"INCR", b"n"), _command(b"GET", b"k")]))
        cluster.run()
        answer = client.answer()
        first, rest = answer.split(b"\r\n", 1)
        self.assertTrue(first.startswith(b"-ERR internal error settling"), first)
        self.assertIn(INDETERMINATE, first)
        self.assertEqual(rest, b"+OK\r\n:1\r\n$1\r\n2\r\n")
        self.assertEqual(len(self.flushLoggedErrors(InjectedError)), 1)
        self.assertFalse(session.settling)
        self.assertIsNone(session.waiting)
        self.assertEqual(client.ask(b"GET", b"k"), b"$1\r\n2\r\n")

    def test_an_exception_in_a_command_run_after_settling_answers_an_error(self) -> None:
        """A QUORUM INCR queued behind a blind write whose run raises: it
        answers an error, the failure is logged, and the GET behind it on
        the same connection still runs and answers."""
        cluster = settled_cluster(self)
        client = quorum_client(cluster, "n1")
        session = client.proto.inner.session  # type: ignore[attr-defined]
        levels = cluster.nodes["n1"].dispatcher.levels
        real = levels._then_write
        armed = [False]

        def then_write(command: Any, request: Any, *args: Any) -> Any:
            if armed[0] and request[0] == b"INCR":
                raise InjectedError()
            return real(command, request, *args)

        levels._then_write = then_write  # type: ignore[method-assign]
        armed[0] = True
        client.transport.clear()
        client.proto.dataReceived(b"".join([
            _command(b"SET", b"k", b"1"), _command(b"INCR", b"n"), _command(b"GET", b"k")]))
        cluster.run()
        answer = client.answer()
        self.assertTrue(answer.startswith(b"+OK\r\n-ERR internal error"), answer)
        self.assertTrue(answer.endswith(b"\r\n$1\r\n1\r\n"), answer)
        self.assertEqual(len(self.flushLoggedErrors(InjectedError)), 1)
        self.assertFalse(session.settling)
        self.assertIsNone(session.waiting)
        self.assertIsNone(cluster.nodes["n1"].store.get(b"n"))

    def test_drain_settles_every_answered_write_even_when_one_raises(self) -> None:
        """Three blind writes answered, the first's settle raises: the other
        two still settle, in order, and every call queued behind them runs."""
        done = []
        queue = blindwrites.deque()
        for number in range(3):
            blind = blindwrites.Blind()
            blind.answered = True
            blind.settle = (lambda error, number=number: done.append(number)) \
                if number else _raise
            blind.then = [lambda number=number: done.append(("then", number))]
            queue.append(blind)
        first = queue[0]
        blindwrites._drain(queue)
        self.assertEqual(done, [("then", 0), 1, ("then", 1), 2, ("then", 2)])
        self.assertFalse(queue)
        self.assertTrue(first.done)
        self.assertIn(b"indeterminate", str(first.reply).encode())
        self.assertEqual(len(self.flushLoggedErrors(InjectedError)), 1)


def _raise(error: Any) -> None:
    raise InjectedError()


def _command(*args: bytes) -> bytes:
    from tests.respclient import command

    return command(*args)
