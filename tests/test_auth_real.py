"""Client authentication on real ``twistd -n distkv`` nodes, with real clients:
redis-cli and redis-py get NOAUTH without a password and work with one, a
read-only named user cannot write, ``nc`` logs in over the text protocol, and
two nodes with client passwords still replicate (peers are not clients)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

from tests.realnodes import Client, Cluster, NodeProcess, free_ports, require_tool, wait_until

pytestmark = pytest.mark.process

PASSWORD = "node pass 1"  # a space in it: redis-cli and redis-py send it whole
USERS = "dash read >dash-pw\nwriter readwrite >writer-pw\n"


def redis_module():  # type: ignore[no-untyped-def]
    import redis

    return redis


def ask_as(port: int, line: str, auth: str = f"AUTH default {PASSWORD}") -> str:
    """One text-protocol request after logging in with ``auth``."""
    client = Client(port)
    try:
        assert client.command(auth) == "OK"
        return client.command(line)
    finally:
        client.close()


def start(cluster: Cluster, tmp_path: Path, count: int, extra: Sequence[str] = ()) -> List[NodeProcess]:
    """``count`` nodes peering with each other, each with the password and users
    files; waited for by logging in, as their clients must."""
    password = tmp_path / "requirepass"
    password.write_text(PASSWORD + "\n")
    users = tmp_path / "users"
    users.write_text(USERS)
    ports = free_ports(count)
    nodes = []
    for index, port in enumerate(ports):
        node = NodeProcess(tmp_path, port, ports, f"node{index + 1}",
                           ["--requirepass-file", str(password), "--users-file", str(users),
                            *extra])
        nodes.append(cluster.add(node.start()))
    for node in nodes:
        # The text protocol splits words at spaces (the default password has
        # some): log in as the writer.
        wait_until(lambda node=node: ask_as(node.port, "PING", "AUTH writer writer-pw") == "PONG",
                   f"{node.node_id} to answer PING after AUTH")
        wait_until(lambda node=node: "state serving" in _status(node.port),
                   f"{node.node_id} to finish loading")
    return nodes


def _status(port: int) -> List[str]:
    client = Client(port)
    try:
        assert client.command("AUTH writer writer-pw") == "OK"
        return client.report("STATUS")
    finally:
        client.close()


def cli(port: int, *args: str, auth: Optional[Sequence[str]] = None) -> str:
    tool = require_tool("redis-cli")
    argv = [tool, "-p", str(port), *(auth or ()), *args]
    done = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    return (done.stdout + done.stderr).decode().strip()


def test_redis_cli_needs_the_password(cluster: Cluster, tmp_path: Path) -> None:
    """redis-cli without a password gets NOAUTH; with -a it works; a read-only
    user (--user/--pass) reads but gets NOPERM on SET; a wrong password WRONGPASS."""
    (node,) = start(cluster, tmp_path, 1)
    assert "NOAUTH Authentication required." in cli(node.port, "SET", "k", "v")
    password = ["-a", PASSWORD, "--no-auth-warning"]
    assert cli(node.port, "SET", "k", "v", auth=password) == "OK"
    assert cli(node.port, "GET", "k", auth=password) == "v"
    reader = ["--user", "dash", "--pass", "dash-pw", "--no-auth-warning"]
    assert cli(node.port, "GET", "k", auth=reader) == "v"
    assert "NOPERM this user has no permissions to run the 'set' command" in cli(
        node.port, "SET", "k", "x", auth=reader)
    assert "WRONGPASS" in cli(node.port, "GET", "k", auth=["-a", "wrong", "--no-auth-warning"])
    assert cli(node.port, "GET", "k", auth=password) == "v"
    stats = cli(node.port, "INFO", "stats", auth=password)
    assert "acl_access_denied_auth:1" in stats
    assert "acl_access_denied_cmd:1" in stats
    wait_until(lambda: "Authentication failed" in node.log_text(), "the failure to be logged")
    assert PASSWORD not in node.log_text()
    assert "wrong" not in node.log_text()


def test_redis_py_password_and_read_only_user(cluster: Cluster, tmp_path: Path) -> None:
    """redis-py: no password -> AuthenticationError; password= works in RESP2 and
    RESP3 (HELLO 3 AUTH); username=/password= of a read user reads and gets
    NoPermissionError on writes."""
    redis = redis_module()
    (node,) = start(cluster, tmp_path, 1)
    anonymous = redis.Redis(port=node.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("k")
    anonymous.close()
    for protocol in (2, 3):
        r = redis.Redis(port=node.port, password=PASSWORD, protocol=protocol)
        assert r.set("k", f"v{protocol}") is True
        assert r.get("k") == f"v{protocol}".encode()
        r.close()
    reader = redis.Redis(port=node.port, username="dash", password="dash-pw")
    assert reader.get("k") == b"v3"
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("k", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.delete("k")
    assert reader.get("k") == b"v3"
    reader.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=node.port, username="dash", password="nope").ping()


def test_nc_logs_in_over_the_text_protocol(cluster: Cluster, tmp_path: Path) -> None:
    """With nc: NOAUTH before AUTH, WRONGPASS for a wrong one, then commands run."""
    nc = require_tool("nc")
    (node,) = start(cluster, tmp_path, 1)
    script = b"GET k\nAUTH writer nope\nAUTH writer writer-pw\nSET k hello there\nGET k\n"
    done = subprocess.run([nc, "-N", "127.0.0.1", str(node.port)], input=script,
                          capture_output=True, timeout=15, check=False)
    assert done.stdout.decode().splitlines() == [
        "ERR NOAUTH Authentication required.",
        "ERR WRONGPASS invalid username-password pair or user is disabled.",
        "OK",
        "OK",
        "hello there",
    ]


def test_peers_replicate_with_client_passwords(cluster: Cluster, tmp_path: Path) -> None:
    """Two nodes requiring client passwords still link and replicate: peers are
    not clients. A write through one is read, after AUTH, from the other."""
    redis = redis_module()
    a, b = start(cluster, tmp_path, 2)
    writer = redis.Redis(port=a.port, password=PASSWORD)
    reader = redis.Redis(port=b.port, username="dash", password="dash-pw")
    for i in range(20):
        assert writer.set(f"key{i}", f"value {i}") is True
    wait_until(lambda: reader.mget([f"key{i}" for i in range(20)])
               == [f"value {i}".encode() for i in range(20)],
               "the writes to reach the second node")
    assert any(line.startswith("peer ") and "up" in line for line in _status(b.port))
    writer.close()
    reader.close()
