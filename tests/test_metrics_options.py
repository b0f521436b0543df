"""--metrics-port and --metrics-endpoint: checked in tap.py, off by default."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from distkv.tap import makeService
from tests.test_tap import parse


class MetricsOptionTests(SynchronousTestCase):
    def test_metrics_are_off_by_default(self) -> None:
        """Without either option there is no metrics endpoint and nothing is counted."""
        options = parse()
        self.assertIsNone(options["metrics"])
        node = makeService(options).node  # type: ignore[attr-defined]
        self.assertIsNone(node.dispatcher.tally)

    def test_a_metrics_port_listens_on_loopback_only(self) -> None:
        """A bare port becomes a TCP endpoint on 127.0.0.1, and the node counts requests."""
        options = parse("--metrics-port", "9100")
        self.assertEqual(options["metrics"], "tcp:9100:interface=127.0.0.1")
        node = makeService(options).node  # type: ignore[attr-defined]
        self.assertIsNotNone(node.dispatcher.tally)

    def test_an_endpoint_is_taken_as_given(self) -> None:
        """--metrics-endpoint may name any interface, or a UNIX socket."""
        for endpoint in ("tcp:9100:interface=0.0.0.0", "tcp6:9100", "unix:/tmp/m.sock"):
            self.assertEqual(parse("--metrics-endpoint", endpoint)["metrics"], endpoint)

    def test_bad_values_are_usage_errors_that_say_why(self) -> None:
        """Not a port, not an endpoint, both options, or the client port: a usage error."""
        for argv, words in (
            (["--metrics-port", "http"], "not a TCP port"),
            (["--metrics-port", "0"], "not a TCP port"),
            (["--metrics-port", "70000"], "not a TCP port"),
            (["--metrics-endpoint", "9100"], "Twisted server endpoint"),
            (["--metrics-endpoint", "tcp:interface=127.0.0.1"], "Twisted server endpoint"),
            (["--metrics-port", "9100", "--metrics-endpoint", "tcp:9101"], "not both"),
            (["--port", "9100", "--metrics-port", "9100"], "port of its own"),
        ):
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                parse(*argv)
            self.assertIn(words, str(caught.exception))
