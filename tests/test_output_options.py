"""The client output limit options of ``twistd distkv``: defaults and usage errors."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.replyqueue import OutputLimits
from distkv.tap import Options


def parsed(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OutputLimitOptionTests(SynchronousTestCase):
    def test_defaults_and_given_values(self) -> None:
        """1 MiB soft and 32 MiB hard by default (the hard one above a larger
        --max-request); given values are taken as bytes."""
        self.assertEqual(parsed()["client-output-limits"], OutputLimits(1 << 20, 32 << 20))
        self.assertEqual(parsed("--max-request", str(64 << 20))["client-output-limits"].hard,
                         (64 << 20) + (64 << 10))
        self.assertEqual(
            parsed("--client-output-soft-limit", "65536",
                   "--client-output-hard-limit", "2000000")["client-output-limits"],
            OutputLimits(65536, 2000000))

    def test_bad_values_are_usage_errors_that_name_the_option(self) -> None:
        """Non-numbers, zero, a hard limit below the soft one or not above --max-request."""
        for argv, words in (
            (("--client-output-soft-limit", "lots"), "--client-output-soft-limit must be a number"),
            (("--client-output-hard-limit", "0"), "--client-output-hard-limit must be positive"),
            (("--client-output-soft-limit", "4000000", "--client-output-hard-limit", "3000000"),
             "must not be below --client-output-soft-limit"),
            (("--client-output-hard-limit", "1048576"), "must be larger than --max-request"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                parsed(*argv)
            self.assertIn(words, str(caught.exception))
