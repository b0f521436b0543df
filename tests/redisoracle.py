"""A live redis-server 7.0 for tests that check DistKV's replies against Redis's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.realnodes import free_ports, wait_until
from tests.respclient import command


def start_redis_server(case: SynchronousTestCase) -> int:
    """Start a memory-only redis-server 7.0 on a free 127.0.0.1 port for
    ``case`` (stopped after it) and return the port once it listens. Skips
    when redis-server is missing or not 7.0, except under CI=true, where a
    missing one fails."""
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI") == "true":
            case.fail("redis-server is required under CI")
        raise SkipTest("redis-server is not installed")
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    if " v=7.0." not in version:
        raise SkipTest(f"the expected replies are redis-server 7.0's; this is {version}")
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL)
    case.addCleanup(process.wait)
    case.addCleanup(process.terminate)

    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True

    wait_until(listening, "redis-server to listen")
    return port


def redis_replies(port: int, requests: List[bytes]) -> List[bytes]:
    """The reply bytes the redis-server on ``port`` gives each encoded
    request, in order on one connection (an ECHO after each marks where its
    reply ends; all that came when the server closed the connection
    first)."""
    marker = b"$11\r\nend-of-case\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        replies = []
        for request in requests:
            sock.sendall(request + command(b"ECHO", b"end-of-case"))
            out = b""
            while not out.endswith(marker):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
            replies.append(out[: -len(marker)] if out.endswith(marker) else out)
    return replies
