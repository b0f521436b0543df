"""A live redis-server 7.0 for tests that check DistKV's replies against Redis's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.realnodes import free_ports, wait_until


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
