"""The twistd command line: options are validated with messages a user understands."""

from __future__ import annotations

import os
from typing import Any, Dict, List

from twisted.application.service import IServiceCollection
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster.membership import derived_node_id
from distkv.tap import (
    Options,
    advertised,
    default_node_id,
    endpoint_port,
    makeService,
    parse_peer,
    server_endpoint,
)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no options the node listens on 9000 with no peers and sane limits."""
        options = parse()
        self.assertEqual(options["endpoint"], "tcp:9000:backlog=1024")
        self.assertEqual(options["peers"], [])
        self.assertEqual(options["max-request"], 1 << 20)
        self.assertIsNone(options["node-id"])

    def test_peers_accept_commas_and_repetition(self) -> None:
        """--peers takes comma-separated host:port items and may repeat."""
        options = parse("--peers", "127.0.0.1:9001, localhost:9002", "--peers=[::1]:9003")
        self.assertEqual(
            options["peers"], [("127.0.0.1", 9001), ("localhost", 9002), ("::1", 9003)]
        )

    def test_malformed_peer_addresses_are_usage_errors(self) -> None:
        """A peer without a port, with a bad port or with spaces is refused, naming the item."""
        for bad in ("nonsense", "host:", ":9000", "host:99999", "host:port", "a b:1"):
            with self.assertRaises(usage.UsageError) as caught:
                parse("--peers", bad)
            self.assertIn(repr(bad.strip()), str(caught.exception))

    def test_port_takes_a_number_or_an_endpoint(self) -> None:
        """A bare port becomes a TCP endpoint; an endpoint string passes through."""
        self.assertEqual(parse("--port", "9100")["endpoint"], "tcp:9100:backlog=1024")
        endpoint = "tcp:9100:interface=127.0.0.1"
        self.assertEqual(parse("--port", endpoint)["endpoint"], endpoint)
        for bad in ("99999", "nine"):
            self.assertRaises(usage.UsageError, parse, "--port", bad)

    def test_numeric_options_must_be_positive_numbers(self) -> None:
        """Limits and timings refuse zero, negatives and words."""
        for option in ("--max-request", "--outbox-bytes", "--heartbeat", "--flush-timeout",
                       "--max-clock-skew"):
            for bad in ("0", "-1", "lots"):
                self.assertRaises(usage.UsageError, parse, option, bad)

    def test_persistence_options(self) -> None:
        """--fsync takes one of three policies; --loading-wait may be 0; grace must be positive."""
        options = parse("--data-dir", "/tmp/x", "--fsync", "always", "--loading-wait", "0")
        self.assertEqual((options["data-dir"], options["fsync"]), ("/tmp/x", "always"))
        self.assertEqual(options["loading-wait"], 0.0)
        self.assertEqual(parse()["fsync"], "everysec")
        self.assertIsNone(parse()["data-dir"])
        for argv in (("--fsync", "sometimes"), ("--loading-wait", "-1"),
                     ("--loading-wait", "soon"), ("--tombstone-grace", "0"),
                     ("--tombstone-grace", "30")):
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(argv[0], str(caught.exception))

    def test_the_advertised_address_and_the_default_id_come_from_the_endpoint(self) -> None:
        """--advertise wins; else the interface --port names; with none, the host is
        left to the peers and the default id is this machine's name and the port."""
        import socket

        self.assertEqual(advertised(parse("--port", "tcp:9001:interface=10.0.0.5")),
                         ("10.0.0.5", 9001))
        self.assertEqual(advertised(parse("--port", "9001")), ("", 9001))
        self.assertEqual(advertised(parse("--port", "9001", "--advertise", "db1:9101")),
                         ("db1", 9101))
        self.assertEqual(default_node_id("10.0.0.5", 9001), "10.0.0.5:9001")
        self.assertEqual(default_node_id("", 9001),
                         derived_node_id(socket.gethostname(), 9001))
        for bad in ("db1", "db1:0", "a b:1", "db/1:9000"):
            with self.assertRaises(usage.UsageError, msg=bad):
                parse("--advertise", bad)

    def test_node_id_is_checked(self) -> None:
        """A node id with spaces or slashes, or too long, is refused."""
        self.assertEqual(parse("--node-id", "node-1.a")["node-id"], "node-1.a")
        for bad in ("has space", "a/b", "x" * 65, ""):
            self.assertRaises(usage.UsageError, parse, "--node-id", bad)

    def test_endpoint_port_is_found_for_self_detection(self) -> None:
        """The listening port is read from bare and endpoint forms alike."""
        self.assertEqual(endpoint_port(server_endpoint("9000")), 9000)
        self.assertEqual(endpoint_port("tcp:port=9001:interface=127.0.0.1"), 9001)
        self.assertEqual(endpoint_port("ssl:9443:privateKey=k.pem"), 9443)
        self.assertIsNone(endpoint_port("unix:/tmp/sock"))

    def test_under_twistd_a_usage_error_exits_non_zero(self) -> None:
        """As twistd's subcommand, a bad option exits non-zero on every Twisted release."""
        from twisted.scripts.twistd import ServerOptions

        with self.assertRaises(SystemExit) as caught:
            ServerOptions().parseOptions(["distkv", "--peers", "nonsense"])
        self.assertIn("bad peer address 'nonsense'", str(caught.exception.code))

    def test_parse_peer_accepts_ipv6_brackets(self) -> None:
        """[v6]:port is split at the last colon."""
        self.assertEqual(parse_peer("[::1]:9000"), ("::1", 9000))

    def test_make_service_skips_our_own_address(self) -> None:
        """makeService links to every peer but the entry that is this node's own port."""
        options = parse("--port", "9000", "--peers", "127.0.0.1:9000,127.0.0.1:9001,localhost:9002")
        service = makeService(options)
        self.assertTrue(IServiceCollection.providedBy(service))
        replication = service.getServiceNamed("replication")  # type: ignore[attr-defined]
        self.assertEqual(sorted(replication.links), [("127.0.0.1", 9001), ("localhost", 9002)])


class ClusterSecretOptionTests(SynchronousTestCase):
    def secret_file(self, content: bytes, mode: int = 0o600) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    def test_the_secret_is_read_from_its_file_without_the_trailing_newline(self) -> None:
        """--cluster-secret-file gives the node the file's content, newline stripped."""
        path = self.secret_file(b"0123456789abcdef0123\n")
        self.assertEqual(parse("--cluster-secret-file", path)["cluster-secret"],
                         b"0123456789abcdef0123")
        self.assertIsNone(parse()["cluster-secret"])

    def test_a_missing_empty_or_short_secret_is_a_usage_error(self) -> None:
        """Each names the file and what is wrong; a short one says the minimum."""
        cases = [
            (self.mktemp(), "cannot read it"),
            (self.secret_file(b"\n"), "the secret is empty"),
            (self.secret_file(b"short secret\n"), "too short (at least 16 bytes"),
        ]
        for path, why in cases:
            with self.assertRaises(usage.UsageError) as caught:
                parse("--cluster-secret-file", path)
            self.assertIn(path, str(caught.exception))
            self.assertIn(why, str(caught.exception))

    def test_a_file_others_can_read_is_used_with_a_warning_that_hides_the_secret(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        path = self.secret_file(b"a secret others could read\n", 0o644)
        self.assertEqual(parse("--cluster-secret-file", path)["cluster-secret"],
                         b"a secret others could read")
        text = "\n".join(str(formatEvent(event)) for event in events)
        self.assertIn("can be read by other users", text)
        self.assertNotIn("others could read", text)


class MinReplicasOptionTests(SynchronousTestCase):
    def test_min_replicas_options_are_validated(self) -> None:
        """--min-replicas-to-write takes a whole number (0 by default), the lag a
        positive number of seconds longer than --heartbeat; anything else is a
        usage error saying so."""
        config = parse()
        self.assertEqual((config["min-replicas-to-write"], config["min-replicas-max-lag"]),
                         (0, 10.0))
        config = parse("--min-replicas-to-write", "2", "--min-replicas-max-lag", "7.5")
        self.assertEqual((config["min-replicas-to-write"], config["min-replicas-max-lag"]),
                         (2, 7.5))
        for args in (("--min-replicas-to-write", "-1"), ("--min-replicas-to-write", "x"),
                     ("--min-replicas-to-write", "1.5"), ("--min-replicas-max-lag", "0"),
                     ("--min-replicas-max-lag", "soon"),
                     ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "5")):
            with self.assertRaises(usage.UsageError) as caught:
                parse(*args)
            self.assertIn("--min-replicas-", str(caught.exception), args)
