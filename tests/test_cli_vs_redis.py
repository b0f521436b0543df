"""``distkv`` prints replies as ``redis-cli`` does: both against one redis-server, byte for byte.

The client speaks RESP to any server, so the fairest check of its formatting is
redis-cli itself: the same commands go to one redis-server (Debian's package,
on a free loopback port, no persistence) through ``redis-cli`` and through
``distkv``, piped and on a pseudo-terminal, and the output must be the same
bytes. (Exit statuses differ on purpose: redis-cli 7.0 exits 0 after an error
reply, distkv 1.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, List, Sequence, Union

import pytest

from tests.clirun import cli_argv, on_terminal
from tests.realnodes import DEADLINE, free_ports, require_tool, wait_until

Arg = Union[str, bytes]

#: Run once, before either client, so that each request below answers the same twice.
SETUP: Sequence[Sequence[str]] = (
    ("FLUSHALL",),
    ("RPUSH", "list", *[str(n) for n in range(12)]),
    ("HSET", "h", "f", "v", "g", "w"),
    ("MSET", *[word for n in range(10) for word in (f"key{n}", str(n))]),  # SCAN: nested, > 9
)

#: Each shape of reply: status, bulk (with bytes to escape), nil, integer,
#: error, arrays (empty, nested, over nine elements), a report.
REQUESTS: Sequence[Sequence[Arg]] = (
    ("PING",),
    ("SET", "k", "hello world"),
    ("GET", "k"),
    ("GET", "missing"),
    ("SET", "odd", b'q"u\\o\te\x01\xff\x7f\r\n end'),
    ("GET", "odd"),
    ("MGET", "k", "missing", "odd"),
    ("EXISTS", "k", "k", "missing"),
    ("INCR", "k"),
    ("GET",),
    ("NOSUCH", "a"),
    ("LRANGE", "list", "0", "-1"),
    ("LRANGE", "list", "5", "1"),
    ("HGETALL", "h"),
    ("SCAN", "0", "MATCH", "*", "COUNT", "1000"),
    ("SMEMBERS", "none"),
    ("TYPE", "list"),
    ("ECHO", ""),
    ("INFO", "keyspace"),
    ("CLUSTER", "NODES"),
)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = require_tool("redis-server")
    require_tool("redis-cli")
    workdir: Path = tmp_path_factory.mktemp("cli-vs-redis")
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"],
                                          capture_output=True).stdout == b"PONG\n",
                   "redis-server to answer PING")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=DEADLINE)


def setup(port: int) -> None:
    for request in SETUP:
        subprocess.run(["redis-cli", "-p", str(port), *request], check=True, capture_output=True)


def both(port: int, request: Sequence[Arg]) -> List[List[Arg]]:
    args: List[Arg] = ["-p", str(port), *request]
    return [["redis-cli", *args], [*cli_argv(), *args]]


def test_piped_output_is_redis_clis(redis_port: int) -> None:
    """Piped (raw), every reply is the bytes redis-cli writes."""
    setup(redis_port)
    for request in REQUESTS:
        theirs, ours = (subprocess.run(argv, capture_output=True, timeout=60).stdout
                        for argv in both(redis_port, request))
        assert ours == theirs, request


def test_terminal_output_is_redis_clis(redis_port: int) -> None:
    """On a terminal (quoted, typed, numbered), every reply is the bytes redis-cli writes."""
    setup(redis_port)
    for request in REQUESTS:
        theirs, ours = (on_terminal(argv) for argv in both(redis_port, request))
        assert ours == theirs, request
