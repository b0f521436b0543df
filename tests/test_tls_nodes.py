"""TLS with real ``twistd -n distkv`` processes and real clients: redis-cli
and redis-py over a node's TLS port and over an ``ssl:`` --port, a cluster
that links over mutual TLS, and nodes that must never link with it (a
plaintext node, a node whose certificate another CA signed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest

from tests.realnodes import (
    Client,
    Cluster,
    NodeProcess,
    ask,
    free_ports,
    require_tool,
    status,
    twistd_for,
    wait_until,
)
from tests.tlscerts import Authority, require_tls

pytestmark = pytest.mark.process


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    require_tls()
    return Authority(tmp_path, "cluster-ca")


def tls_node(cluster: Cluster, ca: Authority, name: str, port: int, tls_port: int,
             peers: Sequence[int], trust: str = "", extra: Sequence[str] = ()) -> NodeProcess:
    """A node with a TLS port and peer mutual TLS (``trust``: its --tls-ca, default ``ca``'s)."""
    cert, key = ca.issue(name)
    args = ["--tls-port", f"tcp:{tls_port}:interface=127.0.0.1", "--tls-cert", str(cert),
            "--tls-key", str(key), "--tls-ca", trust or str(ca.path), *extra]
    return cluster.add(NodeProcess(cluster.workdir, port, peers, name, args))


def peer_line(node: NodeProcess, port: int) -> str:
    prefix = f"peer 127.0.0.1:{port} "
    return next((line for line in status(node.port) if line.startswith(prefix)), "")


def peer_lines(node: NodeProcess) -> List[str]:
    return [line for line in status(node.port) if line.startswith("peer ")]


def redis_cli_with_tls() -> str:
    cli = require_tool("redis-cli")
    usage = subprocess.run([cli, "--help"], capture_output=True, text=True).stdout
    if "--tls" not in usage:
        message = "this redis-cli is built without TLS (--tls is missing from its --help)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return cli


def test_redis_cli_and_redis_py_over_the_tls_port(cluster: Cluster, ca: Authority,
                                                  tmp_path: Path) -> None:
    """redis-cli --tls and redis-py ssl=True (SET, GET, a pipeline) work on the
    TLS port, with or without a client certificate, beside the plain port; a
    client certificate from another CA is refused and writes nothing."""
    import redis

    cli = redis_cli_with_tls()
    port, tls_port = free_ports(2)
    node = tls_node(cluster, ca, "solo", port, tls_port, []).start().wait_ready()
    base = [cli, "--tls", "--cacert", str(ca.path), "-h", "127.0.0.1", "-p", str(tls_port)]

    def cli_says(*argv: str) -> str:
        done = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=15)
        return (done.stdout + done.stderr).strip()

    assert cli_says("SET", "cli-key", "over tls") == "OK"
    assert cli_says("GET", "cli-key") == "over tls"
    cert, key = ca.issue("client")
    assert cli_says("--cert", str(cert), "--key", str(key), "SET", "with-cert", "1") == "OK"
    other_cert, other_key = Authority(tmp_path, "stranger-ca").issue("client")
    refused = cli_says("--cert", str(other_cert), "--key", str(other_key), "SET", "stranger", "1")
    assert refused != "OK"
    assert ask(port, "GET stranger") == "(nil)"
    wait_until(lambda: "TLS handshake from 127.0.0.1" in node.log_text(),
               "the refused client certificate in the node's log")

    r = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(ca.path))
    assert r.set("py-key", b"v\x00\r\n") is True
    assert r.get("py-key") == b"v\x00\r\n"
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"p{i}", i)
    for i in range(200):
        pipe.get(f"p{i}")
    replies = pipe.execute()
    assert replies[:200] == [True] * 200 and replies[200:] == [str(i).encode() for i in range(200)]
    r.close()
    assert ask(port, "GET cli-key") == "over tls"  # the plain port sees the same data


def test_an_ssl_endpoint_on_port_serves_tls_clients(cluster: Cluster, ca: Authority) -> None:
    """--port ssl:PORT:privateKey=...:certKey=... listens with TLS (Twisted's endpoint) for redis-py."""
    import redis

    (port,) = free_ports(1)
    cert, key = ca.issue("endpoint")
    node = cluster.add(NodeProcess(cluster.workdir, port, [], "ssl-port", [
        "--port", f"ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1"]))
    node.start()
    r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca.path))

    def answers() -> bool:
        assert node.proc is not None and node.proc.poll() is None, node.log_text()
        try:
            return bool(r.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, "the ssl: port to answer PING over TLS")
    assert r.set("k", "v") is True and r.get("k") == b"v"
    r.close()


def test_a_tls_cluster_replicates_over_mutual_tls(cluster: Cluster, ca: Authority) -> None:
    """Two nodes that list each other's TLS ports link (each verifying the
    other against the CA) and replicate writes both ways."""
    import redis

    p1, p2, t1, t2 = free_ports(4)
    a = tls_node(cluster, ca, "a", p1, t1, [t2]).start()
    b = tls_node(cluster, ca, "b", p2, t2, [t1]).start()
    a.wait_ready()
    b.wait_ready()
    r = redis.Redis(host="127.0.0.1", port=t1, ssl=True, ssl_ca_certs=str(ca.path))
    assert r.set("from-a", "1") is True
    r.close()
    assert ask(p2, "SET from-b 2") == "OK"
    wait_until(lambda: ask(p2, "GET from-a") == "1", "a's write on b")
    wait_until(lambda: ask(p1, "GET from-b") == "2", "b's write on a")
    assert "node=b link=up" in peer_line(a, t2)
    assert "node=a link=up" in peer_line(b, t1)


def test_a_plaintext_node_never_links_with_a_tls_node(cluster: Cluster, ca: Authority) -> None:
    """A plaintext node that lists a TLS node's TLS port and plain port, and a
    TLS node that lists the plaintext node, never link and exchange no data:
    the plain port refuses the peer handshake (tls-required), the TLS port's
    handshake fails, and the TLS node's dial fails TLS; each is logged."""
    tls_plain, tls_port, plain_port = free_ports(3)
    t = tls_node(cluster, ca, "tls", tls_plain, tls_port, [plain_port],
                 extra=["--loading-wait", "0"]).start()
    p = cluster.add(NodeProcess(cluster.workdir, plain_port, [tls_port, tls_plain], "plain",
                                ["--loading-wait", "0"])).start()
    t.wait_ready()
    p.wait_ready()
    assert ask(tls_plain, "SET on-tls 1") == "OK"
    assert ask(plain_port, "SET on-plain 2") == "OK"
    wait_until(lambda: "refused=tls-required" in peer_line(p, tls_plain),
               "the TLS node's plain port to refuse the plaintext node's handshake")
    wait_until(lambda: "refused=tls " in peer_line(t, plain_port) + " ",
               "the TLS node's dial to the plaintext node to fail TLS")
    wait_until(lambda: "TLS handshake from 127.0.0.1" in t.log_text(),
               "the plaintext dial of the TLS port to fail its handshake")
    log = t.log_text()
    assert "Refusing a peer handshake from 127.0.0.1" in log and "not TLS" in log
    assert f"TLS with peer 127.0.0.1:{plain_port} failed" in log
    assert "refused our link: tls-required" in p.log_text()
    assert ask(tls_plain, "GET on-plain") == "(nil)"
    assert ask(plain_port, "GET on-tls") == "(nil)"
    assert not any("link=up" in line for line in peer_lines(t) + peer_lines(p))


def test_a_node_certified_by_another_ca_is_refused(cluster: Cluster, ca: Authority,
                                                   tmp_path: Path) -> None:
    """A node whose certificate another CA signed (even one that trusts our
    CA too) is refused by the cluster's node, which refuses to trust it as a
    server as well; no data crosses."""
    other = Authority(tmp_path, "other-ca")
    both = tmp_path / "both-cas.pem"
    both.write_bytes(ca.path.read_bytes() + other.path.read_bytes())
    p1, p2, t1, t2 = free_ports(4)
    member = tls_node(cluster, ca, "member", p1, t1, [t2], extra=["--loading-wait", "0"]).start()
    stranger = tls_node(cluster, other, "stranger", p2, t2, [t1], trust=str(both),
                        extra=["--loading-wait", "0"]).start()
    member.wait_ready()
    stranger.wait_ready()
    assert ask(p1, "SET member-key 1") == "OK"
    assert ask(p2, "SET stranger-key 2") == "OK"
    wait_until(lambda: "refused=tls" in peer_line(member, t2),
               "the member to refuse the stranger's server certificate")
    wait_until(lambda: "refused=tls" in peer_line(stranger, t1),
               "the stranger's dial to fail TLS")
    wait_until(lambda: "TLS handshake from 127.0.0.1" in member.log_text(),
               "the member to log the stranger's refused client certificate")
    assert "certificate verify failed" in member.log_text()
    assert ask(p1, "GET stranger-key") == "(nil)"
    assert ask(p2, "GET member-key") == "(nil)"
    assert not any("link=up" in line for line in peer_lines(member) + peer_lines(stranger))


def test_a_bad_tls_file_stops_twistd_with_a_message(tmp_path: Path, ca: Authority) -> None:
    """twistd distkv with a missing --tls-cert exits non-zero saying which
    file is missing, without a traceback."""
    _, key = ca.issue("n")
    argv = [twistd_for(sys.executable), "-n", "--pidfile=", "distkv", "--tls-port", "9443",
            "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(key)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "missing.crt: no such file" in output
    assert "Traceback" not in output


def test_maxclients_counts_clients_on_both_ports(cluster: Cluster, ca: Authority) -> None:
    """The plain and TLS ports share one --maxclients: with one client held on
    the plain port, a TLS client past the limit gets Redis's refusal."""
    import redis

    port, tls_port = free_ports(2)
    tls_node(cluster, ca, "full", port, tls_port, [], extra=["--maxclients", "1"]).start()
    wait_until(lambda: ask(port, "PING") == "PONG", "the node to answer PING")
    held = Client(port)
    try:
        assert held.command("PING") == "PONG"
        r = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(ca.path))
        with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
            r.ping()
        r.close()
    finally:
        held.close()
