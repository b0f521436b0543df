"""One process per data dir: a second node on it is refused, and the lock never outlives its holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from distkv.disk.datafile import Disk, DiskError
from distkv.testing import SimulatedCluster
from tests.realnodes import Client, NodeProcess, free_ports, twistd_for, wait_until
from tests.scratch import scratch_dir


class DataDirLockTests(SynchronousTestCase):
    def test_a_second_open_of_a_data_dir_is_refused_naming_the_holder(self) -> None:
        """While one Disk holds a data dir, opening it again raises DiskError with the holder's pid."""
        path = scratch_dir(self)
        first = Disk(path)
        self.addCleanup(first.close)
        with self.assertRaises(DiskError) as caught:
            Disk(path)
        self.assertIn(f"in use by another DistKV process (pid {os.getpid()}", str(caught.exception))

    def test_closing_a_data_dir_lets_it_be_opened_again(self) -> None:
        """After close, the same data dir opens again."""
        path = scratch_dir(self)
        Disk(path).close()
        Disk(path).close()

    def test_a_crashed_node_restarts_on_its_data_dir_in_the_same_process(self) -> None:
        """SimulatedCluster: crash then start on the same data dir works and keeps the data."""
        cluster = SimulatedCluster(2, data_root=scratch_dir(self))
        self.addCleanup(cluster.stop)
        cluster.nodes["n1"].store.set(b"k", b"v")
        cluster.settle()
        cluster.crash("n1")
        restarted = cluster.start("n1")
        self.assertEqual(restarted.store.get(b"k"), b"v")


@pytest.mark.process
def test_second_process_on_a_data_dir_exits_1_and_the_first_keeps_writing(tmp_path: Path) -> None:
    """A second twistd on a held data dir exits 1 naming the holder's pid; after kill -9 of the
    holder a new node starts on the dir."""
    data = tmp_path / "data"
    first_port, second_port, third_port = free_ports(3)
    first = NodeProcess(tmp_path, first_port, [], "holder", ["--data-dir", str(data)]).start()
    try:
        first.wait_ready()
        assert first.proc is not None
        twistd = twistd_for(sys.executable)
        done = subprocess.run(
            [twistd, "-n", "--pidfile=", "distkv", "--port", f"tcp:{second_port}:interface=127.0.0.1",
             "--data-dir", str(data)],
            cwd=str(tmp_path), capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 1, done.stderr
        assert f"in use by another DistKV process (pid {first.proc.pid}" in done.stderr, done.stderr
        client = Client(first_port)
        for i in range(20):
            assert client.command(f"SET k{i} v{i}") == "OK"
        assert client.command("GET k19") == "v19"
        client.close()
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        third = NodeProcess(tmp_path, third_port, [], "holder", ["--data-dir", str(data)]).start()
        try:
            third.wait_ready()
            wait_until(lambda: Client(third_port).command("GET k19") == "v19", "k19 on the new node")
        finally:
            third.kill()
    finally:
        first.kill()
