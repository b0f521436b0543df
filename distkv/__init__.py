"""DistKV: a replicated key-value daemon on Twisted."""

__version__ = "0.1.0"
