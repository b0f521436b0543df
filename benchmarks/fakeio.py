"""Feeding a DistKV node's protocols in one process, for the instruction-count
and in-process benchmarks: a transport that takes every write and keeps none
(:class:`Sink`), and RESP requests (:func:`command`). Imported by the
benchmarks' child interpreters (``hotpath_instructions.py``,
``repl_instructions.py``) and by ``metrics_overhead.py --in-process``; needs
Twisted.
"""

from twisted.internet.testing import StringTransport


class Sink(StringTransport):
    """A connection's transport whose writes go nowhere (a reply costs its
    encoding, not its keeping)."""

    def setTcpNoDelay(self, enabled):
        pass

    def write(self, data):
        pass


def command(*args):
    """One RESP request of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
