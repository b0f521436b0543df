"""Transactions from real redis-py against real ``twistd -n distkv`` nodes:
the default ``pipeline()`` (MULTI/EXEC), ``pipeline(transaction=False)``,
``transaction(func, key)`` with WATCH retried after a conflicting write, and a
transaction through one node read whole on the other."""

from __future__ import annotations

from typing import Any, List

import pytest

from tests.realnodes import Cluster, wait_until

pytestmark = pytest.mark.process


def redis_module():  # type: ignore[no-untyped-def]
    """The redis-py package: a test dependency, so missing it is an install error."""
    import redis

    return redis


def test_redis_py_pipelines_and_transaction_with_watch(cluster: Cluster) -> None:
    """pipeline() runs as MULTI/EXEC and returns every reply; a runtime error is raised
    after the others ran, as with Redis; pipeline(transaction=False) works; transaction()
    retries its function when a watched key changed under it."""
    redis = redis_module()
    (a,) = cluster.start(1)
    for protocol in (None, 3):
        options = {} if protocol is None else {"protocol": protocol}
        r = redis.Redis(port=a.port, **options)
        r.delete("t1", "t2", "counter")
        with r.pipeline() as pipe:
            assert pipe.set("t1", "1").set("t2", "2").get("t1").mget("t1", "t2").execute() == [
                True, True, b"1", [b"1", b"2"]]
        with r.pipeline(transaction=False) as pipe:
            assert pipe.set("t1", "x").get("t1").delete("t2").execute() == [True, b"x", 1]
        with r.pipeline() as pipe:
            pipe.set("t1", "y").execute_command("SELECT", "5").get("t1")
            with pytest.raises(redis.ResponseError, match="DB index is out of range"):
                pipe.execute()
        assert r.get("t1") == b"y"  # the runtime error did not undo the others
        with r.pipeline() as pipe:
            pipe.set("t1", "z").execute_command("NOSUCH")
            with pytest.raises(redis.ResponseError):
                pipe.execute()
        assert r.get("t1") == b"y"  # queued with an unknown command: nothing ran

        r.set("counter", "0")
        other = redis.Redis(port=a.port)
        calls: List[int] = []

        def bump(pipe: Any, calls: List[int] = calls, other: Any = other) -> None:
            value = int(pipe.get("counter"))
            if not calls:
                other.set("counter", "100")  # a conflicting write after WATCH
            calls.append(value)
            pipe.multi()
            pipe.set("counter", str(value + 1))

        assert r.transaction(bump, "counter") == [True]
        assert calls == [0, 100]
        assert r.get("counter") == b"101"
        r.close()
        other.close()


def test_a_transaction_through_one_node_is_read_whole_on_the_other(cluster: Cluster) -> None:
    """Two real nodes: 50 transactions, each setting three keys to one fresh value, go
    through the first; the second, polled meanwhile, never holds the three keys at
    different values, and ends with the last."""
    redis = redis_module()
    a, b = cluster.start(2)
    writer = redis.Redis(port=a.port)
    reader = redis.Redis(port=b.port)
    keys = ["x1", "x2", "x3"]
    mixed = []
    for round_ in range(50):
        with writer.pipeline() as pipe:
            for key in keys:
                pipe.set(key, str(round_))
            pipe.execute()
        seen = reader.mget(keys)
        if len(set(seen)) != 1:
            mixed.append(seen)
    wait_until(lambda: reader.mget(keys) == [b"49"] * 3, "the last transaction on the other node")
    assert mixed == []
    writer.close()
    reader.close()
