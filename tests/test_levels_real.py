"""Consistency levels on real ``twistd -n distkv`` nodes, through redis-py
and the text protocol as a user would: QUORUM through every node survives
a ``kill -9``, and a level that cannot be met answers TIMEOUT, indeterminate."""

from __future__ import annotations

import itertools

import pytest

from tests.realnodes import Client, Cluster, wait_until

pytestmark = pytest.mark.process

LEVELS = ["--write-level", "QUORUM", "--read-level", "quorum", "--quorum-timeout", "0.5"]


def test_quorum_through_every_node_survives_a_kill_9(cluster: Cluster) -> None:
    """Three nodes at QUORUM (the options); redis-py clients write and read
    through every node in turn; one node is killed with SIGKILL midway:
    every write still answers OK, and every read, through either survivor,
    returns the last write acknowledged before it began."""
    import redis

    nodes = cluster.start(3, extra=LEVELS)
    clients = [redis.Redis(port=node.port) for node in nodes]
    assert clients[0].info("consistency")["write_level"] == "QUORUM"
    acknowledged = {}
    turn = itertools.count()
    for round_ in range(2):
        if round_ == 1:
            nodes[2].kill()
            clients = clients[:2]
        for i in range(60):
            client = clients[next(turn) % len(clients)]
            key = f"k{i % 10}"
            value = f"r{round_}-{i}"
            assert client.set(key, value) is True
            acknowledged[key] = value.encode()
            reader = clients[next(turn) % len(clients)]
            assert reader.get(key) == acknowledged[key], (key, reader)
    for client in clients:
        assert client.mget(sorted(acknowledged)) == [acknowledged[k] for k in sorted(acknowledged)]


def test_consistency_per_connection_and_the_indeterminate_timeout(cluster: Cluster) -> None:
    """A redis-py connection at the default ONE switches with CONSISTENCY; with
    two of three nodes killed a QUORUM write answers TIMEOUT, indeterminate,
    after --quorum-timeout, and a QUORUM read answers UNAVAILABLE, while ONE
    still works; over the text protocol the same."""
    import redis

    a, b, c = cluster.start(3, extra=["--quorum-timeout", "0.5"])
    r = redis.Redis(port=a.port, single_connection_client=True)
    assert r.execute_command("CONSISTENCY") == b"read ONE write ONE"
    assert r.execute_command("CONSISTENCY", "READ", "QUORUM", "WRITE", "ALL") == \
        b"read QUORUM write ALL"
    assert r.set("k", "v") is True
    assert redis.Redis(port=c.port).get("k") == b"v"  # ALL: every node had it
    b.kill()
    c.kill()
    r.execute_command("CONSISTENCY", "QUORUM")
    with pytest.raises(redis.ResponseError, match="^TIMEOUT write acknowledged by 1 of 3 "
                                                  "members within 0.5s .*outcome indeterminate"):
        r.set("k", "w")
    with pytest.raises(redis.ResponseError, match="^UNAVAILABLE read at QUORUM"):
        r.get("k")
    r.execute_command("CONSISTENCY", "ONE")
    assert r.get("k") == b"w"  # applied here: indeterminate, not undone
    text = Client(a.port)
    try:
        assert text.command("CONSISTENCY WRITE QUORUM") == "read ONE write QUORUM"
        reply = text.command("SET t x")
        assert reply.startswith("ERR TIMEOUT write acknowledged by 1 of 3"), reply
    finally:
        text.close()
    wait_until(lambda: "level_writes_indeterminate:2" in _info(a.port),
               "INFO to count both timeouts")


def _info(port: int) -> str:
    client = Client(port)
    try:
        return "\n".join(client.report("INFO consistency"))
    finally:
        client.close()


def test_a_redis_py_pipeline_at_quorum_runs_in_order(cluster: Cluster) -> None:
    """Three nodes at QUORUM; one redis-py pipeline (no MULTI) through one
    node of, per key: SET GET (the old value), GET, SET GET again, and an
    INCRBY of one counter. Every reply is the in-order one (the second SET
    answers the first's value, the GET between them sees it, the counter
    counts up by one each time), and every node ends with the second
    values and the full count."""
    import redis

    nodes = cluster.start(3, extra=LEVELS)
    r = redis.Redis(port=nodes[0].port)
    assert r.set("n", 0) is True
    keys = [f"p{i}" for i in range(100)]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, "a", get=True)
        pipe.get(key)
        pipe.set(key, "b", get=True)
        pipe.incrby("n", 1)
    replies = pipe.execute()
    expected = []
    for count, _ in enumerate(keys, 1):
        expected += [None, b"a", b"a", count]
    assert replies == expected
    for node in nodes:
        reader = redis.Redis(port=node.port)
        assert reader.mget(keys) == [b"b"] * len(keys)
        assert reader.get("n") == b"%d" % len(keys)
