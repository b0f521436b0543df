"""What an operator sees of real ``twistd -n distkv`` nodes: the first log line,
the JSON log, one version everywhere, and a restart on a large data dir that
answers LOADING (never a refused connection, never wrong data) until it serves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import List

import pytest

import distkv
from tests.realnodes import Client, NodeProcess, free_ports, twistd_for, wait_until
from tests.scratch import fill_data_dir
from tests.test_vs_redis import Connection

pytestmark = pytest.mark.process

#: Keys in the data dir of the restart test: enough that reading it spans
#: many reactor turns (about a second under CPython).
BIG = 200_000


def test_first_log_line_says_who_and_where(tmp_path: Path) -> None:
    """The log's first line names the version, node id, endpoint, advertised
    address, peers, data dir with its fsync policy, and the state."""
    port, peer = free_ports(2)
    node = NodeProcess(tmp_path, port, [peer], "first",
                       ["--data-dir", str(tmp_path / "d"), "--fsync", "always"]).start()
    try:
        node.wait_ready(serving=False)
        first = node.log_text().splitlines()[0]
    finally:
        node.kill()
    assert f"DistKV {distkv.__version__} node first " in first
    assert f"listening on tcp:{port}:interface=127.0.0.1" in first
    assert f"reached at 127.0.0.1:{port}" in first
    assert f"peers 127.0.0.1:{peer}" in first
    assert f"data dir {tmp_path / 'd'} (fsync always)" in first
    assert first.endswith("state reading its data dir")


def test_json_log_is_one_json_object_a_line(tmp_path: Path) -> None:
    """--log-format json: every line of the log parses as JSON with Twisted's
    fields and the text; the first is the who-and-where event, with its fields
    as keys; an unreachable peer's warning is there, once."""
    port, peer = free_ports(2)
    node = NodeProcess(tmp_path, port, [peer], "jsonnode", ["--log-format", "json"]).start()
    try:
        node.wait_ready(serving=False)
        wait_until(lambda: "Cannot reach peer" in node.log_text(), "the unreachable peer's warning")
        assert node.terminate() == 0
    finally:
        node.kill()
    events = [json.loads(line) for line in node.log_text().splitlines()]
    assert all({"log_time", "log_level", "log_namespace", "text"} <= event.keys()
               for event in events)
    first = events[0]
    assert first["log_namespace"] == "distkv.logs"
    assert (first["node_id"], first["version"]) == ("jsonnode", distkv.__version__)
    assert first["endpoints"] == [f"tcp:{port}:interface=127.0.0.1:backlog=1024"]
    assert first["peers"] == [f"127.0.0.1:{peer}"]
    assert (first["data_dir"], first["fsync"]) == (None, None)
    assert first["log_level"]["name"] == "info"
    unreachable = [e for e in events if e["text"].startswith("Cannot reach peer")]
    assert len(unreachable) == 1, unreachable  # retried every few seconds, logged once a minute
    assert unreachable[0]["log_level"]["name"] == "warn"
    assert events[-1]["text"] == "Server Shut Down."


def test_log_format_must_be_text_or_json(tmp_path: Path) -> None:
    """--log-format xml stops twistd with a message naming the choices."""
    done = subprocess.run([twistd_for(sys.executable), "-n", "--pidfile=", "distkv",
                           "--log-format", "xml"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--log-format 'xml': use text or json" in done.stdout + done.stderr


def _resp(port: int, *args: bytes) -> bytes:
    """The exact bytes of the reply to one RESP request on a new connection."""
    connection = Connection(port)
    try:
        return connection.ask(args).raw
    finally:
        connection.close()


def test_one_version_everywhere(tmp_path: Path) -> None:
    """The package's metadata, twistd distkv --version, INFO's distkv_version
    and HELLO's distkv_version all say distkv.__version__."""
    version = distkv.__version__
    assert metadata.version("txdistkv") == version
    shown = subprocess.run([twistd_for(sys.executable), "distkv", "--version"],
                           capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert shown.stdout.startswith(f"DistKV {version} (Twisted ")
    (port,) = free_ports(1)
    node = NodeProcess(tmp_path, port, [], "v").start()
    try:
        node.wait_ready()
        client = Client(port)
        lines = client.report("INFO server")
        client.close()
        assert f"distkv_version:{version}" in lines
        assert "redis_version:7.0.0" in lines  # what clients read to pick commands
        hello = _resp(port, b"HELLO", b"3")
        assert b"$14\r\ndistkv_version\r\n$%d\r\n%s\r\n" % (len(version), version.encode()) in hello
    finally:
        node.kill()


def test_restart_on_a_big_data_dir_answers_loading_never_refuses(tmp_path: Path) -> None:
    """From its first accepted connection on, a node reading a large data dir
    answers every GET with Redis's LOADING or the right value (never a refused
    connection, never a wrong value), shows its progress in INFO, and serves
    every key once read."""
    data = tmp_path / "big"
    fill_data_dir(str(data), BIG, per_row=2000, node_id="big")
    (port,) = free_ports(1)
    node = NodeProcess(tmp_path, port, [], "big", ["--data-dir", str(data)]).start()
    replies: List[bytes] = []
    progress: List[str] = []
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close()
                   is None, "the node to listen")
        deadline = time.monotonic() + 120
        last = BIG - 1
        while time.monotonic() < deadline:
            reply = _resp(port, b"GET", b"k%d" % last)  # a refused connection raises here
            replies.append(reply)
            if reply == b"$%d\r\nv%d\r\n" % (len(b"v%d" % last), last):
                break
            if len(progress) < 3:
                info = Client(port).report("INFO persistence")
                progress.extend(line for line in info if line.startswith("loading_loaded_perc:"))
        wrong = [r for r in replies
                 if r != b"-LOADING Redis is loading the dataset in memory\r\n"
                 and not r.startswith(b"$")]
        assert not wrong, wrong[:3]
        assert replies[0].startswith(b"-LOADING"), replies[:3]  # listening before it read
        assert replies[-1].startswith(b"$"), "never served within the deadline"
        assert progress, "INFO persistence never showed loading_loaded_perc"
        client = Client(port)
        assert client.command("GET k0") == "v0"
        assert client.command("DBSIZE") == str(BIG)
        client.close()
        assert node.log_text().count("Loaded 200000 entries") == 1
    finally:
        node.kill()
