"""A node reading its data dir in steps, on a fake clock: it answers at once,
``LOADING`` (Redis's words) to data commands and its progress to INFO, refuses
peers until its data is all read, and then serves every key."""

from __future__ import annotations

import sqlite3
from typing import Dict, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.quorum import QUORUM
from distkv.disk.datafile import FILENAME
from distkv.front.commands import Request
from distkv.front.replies import READING, Error, Lines
from distkv.node import Node
from tests import respclient
from tests.scratch import fill_data_dir, scratch_dir
from tests.test_textproto import converse

ROWS = 6
#: A turn per row, and one more that finds no row left.
TURNS = ROWS + 1


def info(node: Node, section: str = "persistence") -> Dict[str, str]:
    reply = node.dispatcher.execute(Request(b"INFO", (section.encode(),)))
    assert isinstance(reply, Lines)
    return dict(line.split(":", 1) for line in reply.lines if ":" in line)


class SteppedLoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.dir = scratch_dir(self)
        fill_data_dir(self.dir, ROWS * 50, per_row=50)
        self.done: List[str] = []

    def reading_node(self) -> Node:
        """A node on the filled data dir, reading one log row a second of the fake clock."""
        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True)
        self.addCleanup(lambda: node.cancel_load() or (node.journal is not None
                                                       and not node.journal.closed
                                                       and node.crash()))
        node.load_data(lambda: self.done.append("read"), self.done.append, budget=0, pause=1)
        return node

    def test_data_commands_answer_loading_until_every_row_is_read(self) -> None:
        """GET, SET, DBSIZE and KEYS answer Redis's LOADING while rows remain;
        PING and INFO answer; once the last row is read, every key is served."""
        node = self.reading_node()
        run = node.dispatcher.execute
        for _ in range(TURNS):
            self.assertEqual(self.done, [])
            for name, args in ((b"GET", (b"k1",)), (b"SET", (b"x", b"y")), (b"DBSIZE", ()),
                               (b"KEYS", (b"*",)), (b"EXISTS", (b"k1",))):
                self.assertEqual(run(Request(name, args)), READING, name)
            self.assertEqual(run(Request(b"PING", ())).text, b"PONG")  # type: ignore[union-attr]
            self.clock.advance(1)
        self.assertEqual(self.done, ["read"])
        self.assertEqual(run(Request(b"GET", (b"k299",))), b"v299")
        self.assertEqual(run(Request(b"DBSIZE", ())), ROWS * 50)
        self.assertEqual(info(node)["loading"], "0")
        self.assertNotIn("loading_loaded_perc", info(node))

    def test_info_persistence_shows_the_progress_in_redis_names(self) -> None:
        """loading:1 with loading_loaded_perc, bytes, keys and an ETA, rising row by row."""
        node = self.reading_node()
        seen = []
        for _ in range(TURNS):
            fields = info(node)
            self.assertEqual(fields["loading"], "1")
            for name in ("loading_start_time", "loading_total_bytes", "loading_loaded_bytes",
                         "loading_eta_seconds", "loading_loaded_keys"):
                self.assertTrue(fields[name].isdigit(), name)
            seen.append((float(fields["loading_loaded_perc"]), int(fields["loading_loaded_keys"])))
            self.assertIn("state loading (data dir", "\n".join(node.status_lines()))
            self.clock.advance(1)
        self.assertEqual(seen[0], (0.0, 0))
        self.assertEqual(seen, sorted(seen))
        self.assertEqual([keys for _, keys in seen], [50 * i for i in range(TURNS)])
        self.assertTrue(0 < seen[-2][0] < seen[-1][0] <= 100)

    def test_both_protocols_say_loading_in_their_own_form(self) -> None:
        """RESP gets -LOADING Redis is loading the dataset in memory; the text
        protocol the same words after ERR."""
        node = self.reading_node()
        proto, transport = respclient.connect(node)
        self.assertEqual(respclient.ask(proto, transport, b"GET", b"k1"),
                         b"-LOADING Redis is loading the dataset in memory\r\n")
        self.assertEqual(respclient.ask(proto, transport, b"PING"), b"+PONG\r\n")
        self.assertEqual(converse(node, b"GET k1\r\n"),
                         b"ERR LOADING Redis is loading the dataset in memory\r\n")
        for _ in range(TURNS):
            self.clock.advance(1)
        self.assertEqual(respclient.ask(proto, transport, b"GET", b"k1"), b"$2\r\nv1\r\n")

    def test_a_client_not_logged_in_gets_noauth_first_and_arity_before_that(self) -> None:
        """Redis's order while loading: wrong arity, then NOAUTH, then LOADING."""
        from distkv.front.auth import User, digest_of

        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True,
                    users={b"default": User(b"default", digest_of(b"pw"), True)})
        self.addCleanup(node.cancel_load)
        node.load_data(lambda: None, self.done.append, budget=0, pause=1)
        proto, transport = respclient.connect(node)
        self.assertEqual(respclient.ask(proto, transport, b"GET"),
                         b"-ERR wrong number of arguments for 'get' command\r\n")
        self.assertTrue(respclient.ask(proto, transport, b"GET", b"k").startswith(b"-NOAUTH"))
        self.assertEqual(respclient.ask(proto, transport, b"AUTH", b"pw"), b"+OK\r\n")
        self.assertTrue(respclient.ask(proto, transport, b"GET", b"k").startswith(b"-LOADING"))

    def test_peers_are_refused_until_the_data_is_read(self) -> None:
        """A peer's handshake gets a 'loading' refusal while rows remain."""
        node = self.reading_node()
        caller = wire.Greeting(wire.Hello("b", "inc-b"), 9001)
        refusal = node.vet(caller)
        self.assertEqual(refusal[0], "loading")  # type: ignore[index]
        for _ in range(TURNS):
            self.clock.advance(1)
        self.assertIsInstance(node.vet(caller), wire.Accept)

    def test_writes_after_the_read_wait_for_their_commit(self) -> None:
        """Once read, the node's journal is open: a SET is answered after its commit."""
        node = self.reading_node()
        for _ in range(TURNS):
            self.clock.advance(1)
        assert node.journal is not None and node.journal.running
        outcome = node.dispatcher.execute(Request(b"SET", (b"new", b"1")))
        self.assertEqual(type(outcome).__name__, "Pending")
        self.clock.advance(1)
        self.assertEqual(node.journal.commits, 1)

    def test_a_malformed_row_found_halfway_fails_the_load_with_the_reason(self) -> None:
        """A row that is not write records, met after good ones: the node is told
        why (and the twistd node exits 1), and the data dir is let go."""
        db = sqlite3.connect(f"{self.dir}/{FILENAME}")
        db.execute("INSERT INTO log VALUES (?, ?, NULL, 0, 0)", (ROWS + 1, b"garbage!" * 10))
        db.commit()
        db.close()
        node = self.reading_node()
        for _ in range(TURNS):
            self.clock.advance(1)
        self.assertEqual(len(self.done), 1)
        self.assertIn("holds a malformed record", self.done[0])
        self.assertIsNone(node.data_load)

    def test_stopping_while_reading_lets_the_data_dir_go(self) -> None:
        """cancel_load mid-way stops the steps and unlocks the data dir for the next node."""
        node = self.reading_node()
        self.clock.advance(1)
        self.assertTrue(node.cancel_load())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        again = Node(self.clock, "a", data_dir=self.dir)
        again.start()
        self.addCleanup(again.crash)
        self.assertEqual(again.dispatcher.execute(Request(b"GET", (b"k7",))), b"v7")

    def test_a_loading_reply_is_an_error(self) -> None:
        """READING is an Error whose code is LOADING, as clients test for."""
        self.assertIsInstance(READING, Error)
        self.assertTrue(READING.message.startswith("LOADING "))


class DigestAfterReadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.dir = scratch_dir(self)
        fill_data_dir(self.dir, 300, per_row=300)

    def test_the_digest_takes_in_the_data_a_part_per_turn_then_peers_link(self) -> None:
        """Once read, clients are served while the digest folds FOLD_STEP keys a
        turn; peers are refused until it is done, and it then equals the digest
        of a node that read the same data dir all at once."""
        import distkv.node

        self.patch(distkv.node, "FOLD_STEP", 100)
        done: List[str] = []
        node = Node(self.clock, "a", data_dir=self.dir, load_in_steps=True)
        self.addCleanup(lambda: node.cancel_load() or node.crash())
        node.load_data(lambda: done.append("linked"), done.append, budget=0, pause=1)
        caller = wire.Greeting(wire.Hello("b", "inc-b"), 9001)
        self.clock.advance(1)  # the one row
        self.clock.advance(1)  # no row left: read; the first 100 folded
        self.assertEqual(node.dispatcher.execute(Request(b"GET", (b"k5",))), b"v5")
        pending = [node.store.digest.pending]
        while not done:
            self.assertEqual(node.vet(caller)[0], "loading")  # type: ignore[index]
            self.clock.advance(1)
            pending.append(node.store.digest.pending)
        self.assertEqual(done, ["linked"])
        self.assertEqual(pending, [200, 100, 0])
        self.assertIsInstance(node.vet(caller), wire.Accept)
        hashes = list(node.store.digest.hashes)
        node.crash()
        again = Node(self.clock, "a", data_dir=self.dir)
        again.start()
        self.addCleanup(again.crash)
        self.assertEqual(again.store.digest.hashes, hashes)


class LeveledLoadingTests(SynchronousTestCase):
    def test_connections_at_a_level_answer_loading_then_serve(self) -> None:
        """A node whose default levels are QUORUM: a connection opened while it
        reads its data dir answers LOADING (asking no member), and once every
        row is read that same connection, and a new one, run at QUORUM (here a
        cluster of one) and serve the data: the leveled command tables follow
        the node out of its reading."""
        clock = Clock()
        clock.advance(1_700_000_000)
        data_dir = scratch_dir(self)
        fill_data_dir(data_dir, ROWS * 50, per_row=50)
        node = Node(clock, "a", data_dir=data_dir, load_in_steps=True,
                    write_level=QUORUM, read_level=QUORUM)
        self.addCleanup(lambda: node.journal is not None and not node.journal.closed
                        and node.crash())
        done: List[str] = []
        node.load_data(lambda: done.append("read"), done.append, budget=0, pause=1)
        early, early_out = respclient.connect(node)
        self.assertEqual(respclient.ask(early, early_out, b"GET", b"k1"),
                         b"-LOADING Redis is loading the dataset in memory\r\n")
        self.assertEqual(respclient.ask(early, early_out, b"CONSISTENCY"),
                         b"+read QUORUM write QUORUM\r\n")
        for _ in range(TURNS):
            clock.advance(1)
        self.assertEqual(done, ["read"])
        late, late_out = respclient.connect(node)
        for proto, out in ((early, early_out), (late, late_out)):
            self.assertEqual(respclient.ask(proto, out, b"GET", b"k299"), b"$4\r\nv299\r\n")
            self.assertEqual(respclient.ask(proto, out, b"SET", b"x", b"y"), b"")
            clock.advance(1)  # the group commit
            self.assertEqual(out.value(), b"+OK\r\n")
            self.assertEqual(respclient.ask(proto, out, b"GET", b"x"), b"$1\r\ny\r\n")
        self.assertGreater(int(info(node, "consistency")["level_writes_met"]), 0)
