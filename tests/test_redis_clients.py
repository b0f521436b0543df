"""Real Redis clients against real ``twistd -n distkv`` nodes: redis-py, redis-cli,
redis-benchmark, and a burst of 1,000 simultaneous connections."""

from __future__ import annotations

import selectors
import socket
import subprocess
import time
from typing import List

import pytest

from tests.realnodes import Cluster, ask, require_tool, wait_until

pytestmark = pytest.mark.process


def redis_module():  # type: ignore[no-untyped-def]
    """The redis-py package: a test dependency, so missing it is an install error."""
    import redis

    return redis


def test_redis_py_commands_binary_values_and_replication(cluster: Cluster) -> None:
    """redis-py (its default protocol, and RESP2) works unmodified; binary values with
    NUL and CRLF round-trip; writes over RESP replicate to the other node."""
    redis = redis_module()
    a, b = cluster.start(2)
    for protocol in (None, 2):
        options = {} if protocol is None else {"protocol": protocol}
        r = redis.Redis(port=a.port, **options)
        other = redis.Redis(port=b.port, **options)
        assert r.ping() is True
        value = b"\x00binary\r\nvalue\xff" * 10
        assert r.set(b"bin\x00key", value) is True
        assert r.get(b"bin\x00key") == value
        assert r.get("missing") is None
        assert r.mset({"m1": "1", "m2": "2"}) is True
        assert r.mget("m1", "nope", "m2") == [b"1", None, b"2"]
        assert r.exists("m1", "m2", "nope") == 2
        assert r.delete("m1", "nope") == 1
        assert r.echo("hi") == b"hi"
        assert r.client_setname("tester") is True
        assert r.client_getname() in ("tester", b"tester")
        assert r.config_get("save") == {"save": ""} or r.config_get("save") == {b"save": b""}
        assert r.info("replication")["role"] == "master"
        assert r.set("k", "v", ex=10) is True
        assert r.ttl("k") == 10
        assert r.set("k", "w", nx=True) is None
        assert r.getex("k", persist=True) == b"v" and r.ttl("k") == -1
        with pytest.raises(redis.ResponseError, match="syntax error"):
            r.execute_command("SET", "k", "v", "EX", "10", "KEEPTTL")
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("NOSUCHTHING", "x")
        wait_until(lambda other=other, value=value: other.get(b"bin\x00key") == value,
                   "the write made over RESP to reach the other node")
        r.close()
        other.close()
    assert ask(b.port, "GET m2") == "2"  # and the text protocol sees it too


def test_redis_py_pipelines_of_hundreds(cluster: Cluster) -> None:
    redis = redis_module()
    (node,) = cluster.start(1)
    r = redis.Redis(port=node.port)
    pipe = r.pipeline(transaction=False)
    for i in range(700):
        pipe.set(f"p{i}", f"value {i}")
    for i in range(700):
        pipe.get(f"p{i}")
    results = pipe.execute()
    assert results[:700] == [True] * 700
    assert results[700:] == [f"value {i}".encode() for i in range(700)]
    assert r.dbsize() == 700
    assert sorted(r.scan_iter(match="p69?", count=50)) == [f"p69{i}".encode() for i in range(10)]
    assert len(r.keys("p1*")) == 111


def test_redis_cli_one_shot_and_piped(cluster: Cluster) -> None:
    cli = require_tool("redis-cli")
    (node,) = cluster.start(1)
    port = str(node.port)

    def run(*args: str, stdin: str = "") -> str:
        done = subprocess.run([cli, "-p", port, *args], input=stdin, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("PING") == "PONG\n"
    assert run("SET", "greeting", "hello world") == "OK\n"
    assert run("GET", "greeting") == "hello world\n"
    assert run("--no-raw", "MGET", "greeting", "nope") == '1) "hello world"\n2) (nil)\n'
    assert run("DBSIZE") == "1\n"
    piped = run(stdin="SET a 1\nINCR a\nGET a\nINCRBY a x\nDEL a\nGET a\n")
    assert piped.splitlines()[:3] == ["OK", "2", "2"]
    assert "value is not an integer or out of range" in piped.splitlines()[3]
    assert piped.splitlines()[4:] == ["", "1", ""]  # redis-cli adds a blank line after an error
    assert "redis_version" in run("INFO", "server")


def test_redis_benchmark_smoke(cluster: Cluster) -> None:
    bench = require_tool("redis-benchmark")
    (node,) = cluster.start(1)
    done = subprocess.run([bench, "-p", str(node.port), "-t", "set,get", "-n", "5000",
                           "-c", "20", "-P", "8", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.replace("\r", "\n").splitlines()
             if "requests per second" in line]
    assert [line.split(":")[0].strip() for line in lines] == ["SET", "GET"], done.stdout
    assert "rror" not in done.stdout + done.stderr
    assert ask(node.port, "DBSIZE") == "1"  # redis-benchmark's one key, key:__rand_int__


def test_a_burst_of_1000_simultaneous_connections_all_get_answers(cluster: Cluster) -> None:
    """1,000 clients connect at once (the listen backlog absorbs the burst) and each
    gets its PONG; none is reset."""
    (node,) = cluster.start(1)
    socks: List[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(1000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", node.port))
            socks.append(s)
        for s in socks:
            selector.register(s, selectors.EVENT_WRITE)
        pending = set(socks)
        answered = {}
        stop = time.monotonic() + 60.0
        while pending and time.monotonic() < stop:
            for key, events in selector.select(timeout=1.0):
                s = key.fileobj  # type: ignore[assignment]
                if events & selectors.EVENT_WRITE:
                    s.send(b"*1\r\n$4\r\nPING\r\n")
                    selector.modify(s, selectors.EVENT_READ)
                elif events & selectors.EVENT_READ:
                    answered[s] = answered.get(s, b"") + s.recv(64)
                    if answered[s].endswith(b"\r\n"):
                        selector.unregister(s)
                        pending.discard(s)
        assert not pending, f"{len(pending)} connections got no answer"
        assert set(answered.values()) == {b"+PONG\r\n"}
    finally:
        selector.close()
        for s in socks:
            s.close()
