"""Real ``twistd -n distkv`` processes on loopback ports, for the process tier.

:class:`NodeProcess` starts a node from a scratch directory (so the installed
plugin, not the checkout, is what runs), waits for it by polling PING, and can
stop it with SIGTERM, SIGKILL or SIGSTOP. :class:`Client` is a blocking
text-protocol client. Nothing here sleeps for a fixed time: every wait polls a
condition until a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest

DEADLINE = 15.0


def require_tool(name: str, path: Optional[str] = None) -> str:
    """The path of an outside tool; skip without it, but fail under CI=true."""
    found = path if path and os.path.exists(path) else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install it, or run .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def twistd_for(python: str) -> str:
    """The twistd script that belongs to the given interpreter's environment."""
    beside = os.path.join(os.path.dirname(python), "twistd")
    if os.path.exists(beside):
        return beside
    found = shutil.which("twistd")
    assert found, f"no twistd next to {python} or on PATH"
    return found


def free_ports(count: int) -> List[int]:
    """Ports free on 127.0.0.1 right now, all distinct."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Client:
    """A blocking text-protocol connection to one node."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        reply = self.file.readline()
        if not reply:
            raise ConnectionError("server closed the connection")
        return reply.decode("utf-8").rstrip("\r\n")

    def report(self, line: str) -> List[str]:
        """A multi-line reply, up to (not including) END."""
        lines = [self.command(line)]
        while lines[-1] != "END":
            lines.append(self.file.readline().decode("utf-8").rstrip("\r\n"))
        return lines[:-1]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ask(port: int, line: str) -> str:
    client = Client(port)
    try:
        return client.command(line)
    finally:
        client.close()


def status(port: int) -> List[str]:
    client = Client(port)
    try:
        return client.report("STATUS")
    finally:
        client.close()


def dump(port: int) -> Dict[str, str]:
    """Every live key on one node and its value (``KEYS *``, then one ``MGET``).

    For a node no client is writing to: a key deleted between the two
    requests is left out. Values must not be the literal ``(nil)``.
    """
    client = Client(port)
    try:
        keys = _lines(client, "KEYS *")
        if not keys:
            return {}
        values = _lines(client, "MGET " + " ".join(keys))
        assert len(values) == len(keys), (keys, values)
        return {key: value for key, value in zip(keys, values) if value != "(nil)"}
    finally:
        client.close()


def _lines(client: Client, request: str) -> List[str]:
    """A reply of one value a line up to END; an ``ERR`` line raises (it has no END)."""
    lines = [client.command(request)]
    if lines[0].startswith("ERR"):
        raise AssertionError(f"{request[:20]}...: {lines[0]}")
    while lines[-1] != "END":
        raw = client.file.readline()
        if not raw:
            raise ConnectionError("server closed the connection")
        lines.append(raw.decode("utf-8").rstrip("\r\n"))
    return lines[:-1]


class NodeProcess:
    """One ``twistd -n distkv`` process."""

    def __init__(self, workdir: Path, port: int, peers: Sequence[int], node_id: str,
                 extra: Sequence[str] = (), python: str = sys.executable) -> None:
        self.workdir = workdir
        self.port = port
        self.peers = list(peers)
        self.node_id = node_id
        self.extra = list(extra)
        self.python = python
        self.log = workdir / f"{node_id}-{port}.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def argv(self) -> List[str]:
        peers = ",".join(f"127.0.0.1:{p}" for p in self.peers)
        argv = [twistd_for(self.python), "-n", "--pidfile=", "-l", str(self.log), "distkv",
                # The backlog a bare --port gets: bursts of connects are absorbed
                # instead of waiting out SYN retries.
                "--port", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
                "--node-id", self.node_id, "--heartbeat", "1"]
        if peers:
            argv += ["--peers", peers]
        return argv + self.extra

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen(self.argv(), cwd=str(self.workdir),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def wait_ready(self, serving: bool = True) -> NodeProcess:
        """Wait until the node answers PING and (``serving``) has finished loading."""
        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_text()
            return ask(self.port, "PING") == "PONG"

        wait_until(answers, f"node {self.node_id} to answer PING")
        if serving:
            wait_until(lambda: "state serving" in status(self.port),
                       f"node {self.node_id} to finish loading")
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""

    def peer_line(self, peer_port: int) -> str:
        prefix = f"peer 127.0.0.1:{peer_port} "
        lines = [line for line in status(self.port) if line.startswith(prefix)]
        assert lines, f"no status line for peer {peer_port}"
        return lines[0]


class Cluster:
    """Starts nodes that all share one peer list; kills every one at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: List[NodeProcess] = []

    def start(self, size: int, extra: Sequence[str] = (),
              pythons: Optional[Sequence[str]] = None) -> List[NodeProcess]:
        ports = free_ports(size)
        nodes = []
        for index, port in enumerate(ports):
            python = pythons[index] if pythons else sys.executable
            node = NodeProcess(self.workdir, port, ports, f"node{index + 1}",
                               extra, python)
            nodes.append(node.start())
        self.nodes.extend(nodes)
        for node in nodes:
            node.wait_ready()
        return nodes

    def add(self, node: NodeProcess) -> NodeProcess:
        self.nodes.append(node)
        return node

    def kill_all(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.signal(signal.SIGCONT)
                node.kill()
