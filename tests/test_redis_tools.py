"""Redis's own tools against a real node: ``redis-cli --stat``,
``--bigkeys`` and ``--memkeys`` print sane figures, redis-py's key and client commands work,
RENAME through one node shows on another."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests.realnodes import DEADLINE, Cluster, require_tool, wait_until

pytestmark = pytest.mark.process


def test_redis_cli_stat_and_bigkeys_show_the_keys(cluster: Cluster) -> None:
    """--bigkeys scans every key with TYPE and STRLEN and names the biggest, and
    --memkeys does with MEMORY USAGE;
    --stat's lines carry the key count, memory, clients and requests as numbers."""
    redis_cli = require_tool("redis-cli")
    (node,) = cluster.start(1)
    port = str(node.port)
    for index in range(20):
        subprocess.run([redis_cli, "-p", port, "SET", f"key{index}", "v" * index],
                       check=True, capture_output=True, timeout=DEADLINE)
    subprocess.run([redis_cli, "-p", port, "SET", "biggest", "x" * 500],
                   check=True, capture_output=True, timeout=DEADLINE)
    bigkeys = subprocess.run([redis_cli, "-p", port, "--bigkeys"], capture_output=True,
                             timeout=DEADLINE, text=True)
    assert bigkeys.returncode == 0, bigkeys.stderr
    assert "Sampled 21 keys in the keyspace!" in bigkeys.stdout, bigkeys.stdout
    assert "Biggest string found '\"biggest\"' has 500 bytes" in bigkeys.stdout
    assert "21 strings with 690 bytes" in bigkeys.stdout, bigkeys.stdout
    memkeys = subprocess.run([redis_cli, "-p", port, "--memkeys"], capture_output=True,
                             timeout=DEADLINE, text=True)
    assert memkeys.returncode == 0, memkeys.stderr
    assert "Sampled 21 keys in the keyspace!" in memkeys.stdout, memkeys.stdout
    assert re.search(r"Biggest string found '\"biggest\"' has \d+ bytes", memkeys.stdout)
    # --stat runs until stopped: -i 0.1 and enough output for a few rows.
    stdbuf = require_tool("stdbuf")  # redis-cli buffers its rows when not on a terminal
    stat = subprocess.Popen([stdbuf, "-oL", redis_cli, "-p", port, "--stat", "-i", "0.1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert stat.stdout is not None
        rows = []
        while len(rows) < 2:
            line = stat.stdout.readline()
            assert line, "redis-cli --stat stopped"
            if re.match(r"^\d", line):
                rows.append(line.split())
    finally:
        stat.kill()
        stat.wait(timeout=DEADLINE)
    keys, memory, clients, blocked = rows[-1][:4]
    assert keys == "21"
    assert re.match(r"^\d+(\.\d+)?[KMG]?$", memory), memory
    assert int(clients) >= 1 and blocked == "0"
    assert int(rows[-1][4]) > 21  # requests: the SETs and --stat's INFOs


def test_redis_py_string_key_and_client_commands(cluster: Cluster) -> None:
    """redis-py's append/getrange/setrange/rename/copy/type/client_list/client_kill
    work unmodified; a RENAME through one node reaches the other."""
    import redis

    a, b = cluster.start(2)
    r = redis.Redis(port=a.port)
    other = redis.Redis(port=b.port)
    assert r.append("s", "hello") == 5
    assert r.append("s", " world") == 11
    assert r.getrange("s", 0, 4) == b"hello"
    assert r.setrange("s", 6, "WORLD") == 11
    assert r.strlen("s") == 11
    assert r.type("s") == b"string" and r.type("nope") == b"none"
    assert r.rename("s", "t") is True
    assert r.copy("t", "u") is True
    assert r.msetnx({"t": "1", "fresh": "2"}) is False
    assert r.touch("t", "u", "t") == 3
    assert r.unlink("u") == 1
    assert r.set("", "empty key") is True and r.get("") == b"empty key"
    wait_until(lambda: other.get("t") == b"hello WORLD" and other.get("s") is None,
               "the RENAME to reach the other node")
    victim = socket.create_connection(("127.0.0.1", a.port), timeout=DEADLINE)
    victim.sendall(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$6\r\nvictim\r\n")
    assert victim.recv(100) == b"+OK\r\n"
    clients = r.client_list()
    named = [c for c in clients if c.get("name") == "victim"]
    assert len(named) == 1, clients
    assert r.client_kill_filter(_id=named[0]["id"]) == 1
    assert victim.recv(100) == b""  # closed by the server
    victim.close()
    settings = r.config_get("*")
    assert settings["bind"] == "127.0.0.1" and settings["port"] == str(a.port)
    assert settings["maxmemory-policy"] == "noeviction" and settings["databases"] == "1"
    assert r.info("memory")["used_memory"] > 0
    seconds, micros = r.time()
    assert seconds > 1_600_000_000 and 0 <= micros < 1_000_000
    r.close()
    other.close()

