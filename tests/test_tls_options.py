"""TLS options and the peer gate, in process: files are checked when the
options are parsed, with messages that name the option and the file; peers
are dialled over TLS; a peer handshake over plain TCP is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage

from distkv.cluster import tlsconfig, wire
from distkv.node import Node
from distkv.tap import Options
from tests.tlscerts import Authority, require_tls


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    require_tls()
    return Authority(tmp_path)


def tls_args(ca: Authority, name: str = "node", with_ca: bool = True) -> list:
    cert, key = ca.issue(name)
    args = ["--tls-port", "9443", "--tls-cert", str(cert), "--tls-key", str(key)]
    return args + (["--tls-ca", str(ca.path)] if with_ca else [])


def usage_error(*argv: str) -> str:
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    return str(caught.value)


def test_without_pyopenssl_tls_options_are_usage_errors_naming_the_install(
        ca: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pyOpenSSL unimportable, an ssl: --port and --tls-port stop with a
    usage error that says what to pip install, not a traceback."""
    args = tls_args(ca)
    for name in [m for m in sys.modules if m == "OpenSSL" or m.startswith("OpenSSL.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "OpenSSL", None)  # type: ignore[arg-type]
    for argv in (["--port", "ssl:9443:privateKey=key.pem:certKey=cert.pem"], args):
        message = usage_error(*argv)
        assert "pyOpenSSL" in message and "pip install 'twisted[tls]'" in message


def test_an_ssl_port_with_a_bad_file_is_a_usage_error(ca: Authority, tmp_path: Path) -> None:
    """--port ssl:... is parsed when the options are (reading its files): a
    missing key file is a usage error naming it; good files pass."""
    cert, key = ca.issue("n")
    message = usage_error("--port", f"ssl:9443:privateKey={tmp_path}/missing.pem")
    assert "--port" in message and "missing.pem" in message
    endpoint = f"ssl:9443:privateKey={key}:certKey={cert}"
    options = parse("--port", endpoint)
    assert options["endpoint"] == endpoint and options["listen-port"] == 9443


def test_tls_options_need_a_tls_port_and_each_other(ca: Authority) -> None:
    """--tls-cert/--tls-key/--tls-ca without --tls-port, and --tls-port
    without a certificate and key, are refused; so is an ssl: or bad --tls-port."""
    cert, key = ca.issue("n")
    assert "without --tls-port" in usage_error("--tls-ca", str(ca.path))
    assert "without --tls-port" in usage_error("--tls-cert", str(cert), "--tls-key", str(key))
    assert "needs --tls-cert and --tls-key" in usage_error("--tls-port", "9443")
    assert "needs --tls-cert" in usage_error("--tls-port", "9443", "--tls-cert", str(cert))
    for bad in ("ssl:9443", "99999", "tcp:interface=127.0.0.1", "nine"):
        message = usage_error("--tls-port", bad, "--tls-cert", str(cert), "--tls-key", str(key))
        assert "--tls-port" in message


def test_missing_unreadable_and_wrong_files_are_named(ca: Authority, tmp_path: Path) -> None:
    """A missing file, a directory, a file without PEM, a key of another
    certificate, an encrypted key, a certificate from another CA and an
    expired one each get a usage error naming the option and the file."""
    cert, key = ca.issue("n")
    other_cert, other_key = ca.issue("other")
    _, locked_key = ca.issue("locked", password=b"secret")
    foreign_cert, foreign_key = Authority(tmp_path, "other-ca").issue("n")
    old_cert, old_key = ca.issue("old", expired=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    base = ["--tls-port", "9443"]
    cases = [
        (["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(key)],
         "--tls-cert", "no such file"),
        (["--tls-cert", str(tmp_path), "--tls-key", str(key)], "--tls-cert", "cannot read it"),
        (["--tls-cert", str(junk), "--tls-key", str(key)], "--tls-cert", "no PEM certificate"),
        (["--tls-cert", str(cert), "--tls-key", str(junk)], "--tls-key", "not a PEM private key"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "--tls-key", "does not match"),
        (["--tls-cert", str(cert), "--tls-key", str(locked_key)], "--tls-key", "encrypted"),
        (["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(junk)],
         "--tls-ca", "no PEM certificate"),
        (["--tls-cert", str(foreign_cert), "--tls-key", str(foreign_key),
          "--tls-ca", str(ca.path)], "--tls-ca", "does not verify"),
        (["--tls-cert", str(old_cert), "--tls-key", str(old_key), "--tls-ca", str(ca.path)],
         "--tls-ca", "expired"),
    ]
    for argv, option, why in cases:
        message = usage_error(*base, *argv)
        assert option in message and why in message, (argv, message)
    assert other_cert.exists()


def test_peers_dial_and_greet_with_the_tls_port_only_with_a_ca(ca: Authority) -> None:
    """With --tls-ca the port a node advertises to peers is its --tls-port;
    without it, a TLS listener is for clients and the plain port stays the peers'."""
    options = parse("--port", "9000", *tls_args(ca))
    assert options["tls"].peer_tls and options["listen-port"] == 9443
    assert options["tls"].endpoint == "tcp:9443:backlog=1024"
    plain = parse("--port", "9000", *tls_args(ca, with_ca=False))
    assert not plain["tls"].peer_tls and plain["listen-port"] == 9000
    assert parse()["tls"] is None


def node_with_tls(ca: Authority, reactor: MemoryReactorClock) -> Node:
    return Node(reactor, "t", listen_port=9443, tls=parse(*tls_args(ca))["tls"])


def test_a_node_with_peer_tls_dials_its_peers_over_tls(ca: Authority) -> None:
    """With a CA, links connect with connectSSL and the node's client context, never plain TCP."""
    reactor = MemoryReactorClock()
    node = node_with_tls(ca, reactor)
    node.add_peer("127.0.0.1", 9444)
    node.start()
    assert reactor.tcpClients == []
    [(host, port, factory, context, _timeout, _bind)] = reactor.sslClients
    assert (host, port) == ("127.0.0.1", 9444)
    assert node.tls is not None and context is node.tls.client
    node.crash()


def test_a_peer_handshake_over_plain_tcp_is_refused_and_counted(ca: Authority) -> None:
    """A node with peer TLS answers a peer greeting on a plain connection with
    ERR tls-required, hangs up, and makes no link for the caller."""
    reactor = MemoryReactorClock()
    node = node_with_tls(ca, reactor)
    door = node.factory().buildProtocol(None)
    transport = StringTransport()
    door.makeConnection(transport)
    door.dataReceived(wire.greeting_line(wire.Greeting(wire.Hello("intruder", "i1"), 9001)))
    code, why = wire.parse_reply(transport.value())  # type: ignore[misc]
    assert code == tlsconfig.REFUSAL_CODE and "not TLS" in why
    assert transport.disconnecting
    assert node.replication.links == {}
    assert node.peer_gate is not None and node.peer_gate.refused == 1


def test_refused_peer_handshakes_are_logged_at_most_once_per_interval(ca: Authority) -> None:
    """Refusals within the gate's interval share one log line; the next line,
    once the interval has passed, says how many were held back."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    clock = Clock()
    tls = parse(*tls_args(ca))["tls"]
    gate = tlsconfig.PeerGate(tls, clock.seconds, interval=5.0)
    lines: list = []

    def observe(event: dict) -> None:
        if "Refusing a peer handshake" in event.get("log_format", ""):
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(3):
            assert gate.refusal(StringTransport()) is not None
        assert len(lines) == 1
        clock.advance(5.0)
        assert gate.refusal(StringTransport()) is not None
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(lines) == 2 and gate.refused == 4
    assert lines[1]["more"] == " (2 more refused since the last such line)"


def test_peer_tls_lets_remote_peers_past_protected_mode(ca: Authority) -> None:
    """Mutual TLS authenticates peers, so a protected node with --tls-ca lets peers
    from other machines reach the handshake; with a TLS port but no CA (clients
    only) it still refuses them."""
    from twisted.internet.task import Clock

    from distkv.cluster import tlsconfig
    from distkv.node import Node

    cert, key = ca.issue("n")
    mutual = tlsconfig.load(str(cert), str(key), str(ca.path), "tcp:9443")
    clients_only = tlsconfig.load(str(cert), str(key), None, "tcp:9443")
    assert Node(Clock(), "n", protected_mode=True, tls=mutual).factory().protect_peers is False
    assert Node(Clock(), "n", protected_mode=True, tls=clients_only).factory().protect_peers
