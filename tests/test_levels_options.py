"""--write-level, --read-level and --quorum-timeout: checked in tap.py with
messages a user understands, and handed to the node."""

from __future__ import annotations

import pytest
from twisted.python import usage

from distkv.tap import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_levels_default_to_one_and_parse_in_any_case() -> None:
    """By default both levels are ONE and the timeout 1 s; names in any case,
    linearizable included."""
    options = parse()
    assert (options["write-level"], options["read-level"], options["quorum-timeout"]) == (
        "ONE", "ONE", 1.0)
    options = parse("--write-level", "Quorum", "--read-level", "all", "--quorum-timeout", "0.25")
    assert (options["write-level"], options["read-level"], options["quorum-timeout"]) == (
        "QUORUM", "ALL", 0.25)
    options = parse("--write-level", "linearizable", "--read-level", "LINEARIZABLE")
    assert (options["write-level"], options["read-level"]) == ("LINEARIZABLE", "LINEARIZABLE")


@pytest.mark.parametrize("argv, message", [
    (("--write-level", "most"), "--write-level 'most': use one, quorum, all or linearizable"),
    (("--read-level", ""), "--read-level '': use one, quorum, all or linearizable"),
    (("--quorum-timeout", "0"), "--quorum-timeout must be positive"),
    (("--quorum-timeout", "soon"), "--quorum-timeout must be a number, not 'soon'"),
])
def test_bad_levels_and_timeouts_are_usage_errors(argv: tuple, message: str) -> None:
    """A level that is not one, quorum, all or linearizable, and a timeout
    that is not a positive number stop twistd with a message naming them."""
    with pytest.raises(usage.UsageError, match="^" + message.replace("(", r"\(")):
        parse(*argv)
