"""FLUSHALL, WAIT and --min-replicas-to-write on real ``twistd -n distkv``
nodes, through redis-py as a user would."""

from __future__ import annotations

import pytest

from tests.realnodes import Cluster, wait_until

pytestmark = pytest.mark.process


def test_wait_counts_peers_and_gives_fewer_at_the_timeout_when_one_is_killed(
        cluster: Cluster) -> None:
    """WAIT 2 after a write returns 2 on a 3-node cluster; with one node
    killed, WAIT 2 after another write returns 1 once its timeout passes."""
    import redis

    a, b, c = cluster.start(3)
    r = redis.Redis(port=a.port)
    r.set("k", "v")
    assert r.wait(2, 0) == 2
    c.kill()
    r.set("k", "w")
    assert r.wait(2, 300) == 1
    assert redis.Redis(port=b.port).get("k") == b"w"


def test_flushall_through_one_node_empties_every_node(cluster: Cluster) -> None:
    """FLUSHALL on one node removes every key on every node; a write after it stays."""
    import redis

    a, b, c = cluster.start(3)
    r = redis.Redis(port=a.port)
    for i in range(50):
        redis.Redis(port=b.port).set(f"k{i}", "v")
    wait_until(lambda: r.dbsize() == 50, "the writes to reach node1")
    assert r.flushall(asynchronous=True) is True
    wait_until(lambda: all(redis.Redis(port=n.port).dbsize() == 0 for n in (a, b, c)),
               "every node to be empty")
    redis.Redis(port=c.port).set("after", "yes")
    wait_until(lambda: all(redis.Redis(port=n.port).keys() == [b"after"] for n in (a, b, c)),
               "the write after the flush to reach every node")


def test_min_replicas_refuse_writes_while_peers_are_down(cluster: Cluster) -> None:
    """With --min-replicas-to-write 2, killing a peer makes writes fail with
    NOREPLICAS within the lag; with the peer back, writes succeed again."""
    import redis

    a, b, c = cluster.start(3, extra=["--min-replicas-to-write", "2",
                                      "--min-replicas-max-lag", "3"])
    r = redis.Redis(port=a.port)
    wait_until(lambda: _writes(r), "node1 to see two good replicas")
    c.kill()
    wait_until(lambda: not _writes(r), "node1 to refuse writes")
    with pytest.raises(redis.ResponseError, match="^NOREPLICAS Not enough good replicas"):
        r.set("k", "v")
    c.start().wait_ready()
    wait_until(lambda: _writes(r), "node1 to accept writes again")


def _writes(r: object) -> bool:
    import redis

    try:
        r.set("probe", "x")  # type: ignore[attr-defined]
    except redis.ResponseError as e:
        assert str(e).startswith("NOREPLICAS"), e
        return False
    return True
