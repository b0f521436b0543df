"""BACKUP: the node's online copy of its data dir, and what it refuses.

In-process on a fake clock (the copy then runs inline, as there is no thread
pool), then once for real: a node under a stream of writes is backed up with
``distkv backup``, and a node started on the copy serves every write that was
acknowledged before the backup began.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, List

from distkv.cli.client import Connection
from distkv.front.auth import parse_users
from distkv.node import Node
from tests.clirun import cli
from tests.realnodes import Cluster, NodeProcess, free_ports
from tests.respclient import ask, command, connect
from tests.scratch import DataDirCase


class BackupCommandTests(DataDirCase):
    def test_backup_holds_writes_pipelined_before_it(self) -> None:
        """A write sent just before BACKUP, not yet committed, is in the copy,
        and BACKUP's reply comes after the write's."""
        node = self.node()
        proto, transport = connect(node)
        target = os.path.join(os.path.dirname(self.dir), "copy")
        proto.dataReceived(command(b"SET", b"k", b"v") + command(b"BACKUP", target.encode()))
        self.assertEqual(transport.value(), b"")  # both wait for the commit
        self.clock.advance(0)
        self.assertEqual(transport.value(),
                         b"+OK\r\n+Backup written to %s (%d bytes)\r\n"
                         % (target.encode(), os.path.getsize(os.path.join(target, "distkv.sqlite3"))))
        self.assertEqual(os.listdir(target), ["distkv.sqlite3"])
        node.crash()
        restored = Node(self.clock, "a", data_dir=target)
        self.addCleanup(restored.crash)
        self.assertEqual(restored.store.get(b"k"), b"v")

    def test_refuses_bad_paths(self) -> None:
        """Relative paths, non-empty dirs, files, missing parents and the data dir are refused."""
        node = self.node()
        proto, transport = connect(node)
        parent = os.path.dirname(self.dir)
        full = os.path.join(parent, "full")
        os.mkdir(full)
        Path(full, "x").write_text("x")
        Path(parent, "file").write_text("x")
        cases = {
            b"relative/dir": b"-ERR backup path must be absolute\r\n",
            full.encode(): b"-ERR backup directory is not empty\r\n",
            os.path.join(parent, "file").encode(): b"-ERR backup path exists and is not a directory\r\n",
            os.path.join(parent, "no", "such").encode():
                b"-ERR backup path's parent directory does not exist\r\n",
            self.dir.encode(): b"-ERR backup path must be outside the data dir\r\n",
            os.path.join(self.dir, "inside").encode(): b"-ERR backup path must be outside the data dir\r\n",
            os.path.join(parent, "a\nb").encode(): b"-ERR backup path must not contain line breaks\r\n",
        }
        for path, reply in cases.items():
            self.assertEqual(ask(proto, transport, b"BACKUP", path), reply, path)
        self.assertEqual(ask(proto, transport, b"BACKUP"),
                         b"-ERR wrong number of arguments for 'backup' command\r\n")
        self.assertFalse(os.path.exists(os.path.join(parent, "relative")))

    def test_node_without_data_dir_has_nothing_to_back_up(self) -> None:
        """A memory-only node answers that it has no data dir."""
        node = Node(self.clock, "m")
        proto, transport = connect(node)
        self.assertEqual(ask(proto, transport, b"BACKUP", self.dir.encode()),
                         b"-ERR this node has no data dir: nothing to back up\r\n")

    def test_needs_the_write_right(self) -> None:
        """With users, BACKUP needs a login and a readwrite user: NOAUTH, then NOPERM for a read user."""
        node = self.node(users=parse_users(b"ro read >ro-pw\nrw readwrite >rw-pw\n"))
        proto, transport = connect(node)
        target = os.path.join(os.path.dirname(self.dir), "copy").encode()
        self.assertTrue(ask(proto, transport, b"BACKUP", target).startswith(b"-NOAUTH"))
        ask(proto, transport, b"AUTH", b"ro", b"ro-pw")
        self.assertTrue(ask(proto, transport, b"BACKUP", target).startswith(b"-NOPERM"))
        ask(proto, transport, b"AUTH", b"rw", b"rw-pw")
        self.assertTrue(ask(proto, transport, b"BACKUP", target).startswith(b"+Backup written"))


def test_backup_under_writes_restores_every_acknowledged_write(
        cluster: Cluster, tmp_path: Path) -> None:
    """``distkv backup`` on a node taking writes: a node started on the copy
    serves every write acknowledged before the backup began."""
    (node,) = cluster.start(1, extra=["--data-dir", str(tmp_path / "data")])
    acked: List[int] = []
    stop = threading.Event()
    failures: List[BaseException] = []

    def writer() -> None:
        try:
            with Connection("127.0.0.1", node.port) as conn:
                number = 0
                while not stop.is_set():
                    batch = [("SET", f"key{number + i}", f"value{number + i}") for i in range(20)]
                    replies = conn.pipeline(batch)
                    assert all(reply == "OK" for reply in replies), replies
                    acked.extend(range(number, number + 20))
                    number += 20
        except BaseException as e:  # reported by the test
            failures.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with Connection("127.0.0.1", node.port) as conn:
            conn.pipeline([("SET", f"big{i}", "x" * 10000) for i in range(300)])
        while len(acked) < 2000 and not failures:
            thread.join(0.01)
        before = len(acked)  # every one of these was acknowledged before BACKUP was sent
        done = cli("-p", str(node.port), "backup", str(tmp_path / "copy"))
        during = len(acked)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"Backup written to {tmp_path / 'copy'} (".encode())
    assert len(acked) > before  # writes went on while the backup was taken
    (port,) = free_ports(1)
    restored = cluster.add(NodeProcess(tmp_path, port, [], "node1",
                                       ["--data-dir", str(tmp_path / "copy")]))
    restored.start().wait_ready()
    with Connection("127.0.0.1", port) as conn:
        values = conn.pipeline([("GET", f"key{n}") for n in range(before)])
        held = conn.call("DBSIZE")
    missing: Dict[int, object] = {n: v for n, v in enumerate(values)
                                  if v != f"value{n}".encode()}
    assert not missing, f"{len(missing)} acknowledged writes missing, e.g. {list(missing)[:5]}"
    assert isinstance(held, int) and 300 + before <= held <= 300 + during + 20
