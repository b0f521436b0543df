"""What a node's log says first, and the log as JSON lines for log shippers.

:func:`announce` logs the line an operator reads first: which node this is
(id, DistKV version, interpreter), where it listens and is reached, its
peers, its data dir and fsync policy, and its state. It is logged while
twistd builds the service, before twistd starts its log, so it is the first
line of the log. Its fields travel with the event, so the JSON log carries
them as keys too.

:func:`json_observer` is ``--log-format json``: each event as one line of
JSON (Twisted's :func:`~twisted.logger.eventAsJSON`, with the formatted text
added as ``text``), written where twistd would write its text log
(``--logfile``/``-l``, rotated as twistd rotates it; stdout under ``-n``
without one). :class:`~distkv.node.NodeService` hands it to twistd as the
application's log observer, the way a ``.tac`` file sets one; twistd's own
``--logger`` option, when given, still wins.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import IO, Any, Dict, Optional, Sequence, Tuple

from twisted.logger import ILogObserver, Logger, eventAsJSON, formatEvent
from twisted.python.logfile import LogFile
from zope.interface import provider

import distkv

log = Logger()

FORMATS = ("text", "json")


def announce(node_id: str, endpoints: Sequence[str], advertised: str,
             peers: Sequence[Tuple[str, int]], data_dir: Optional[str], fsync: str,
             state: str) -> None:
    """Log who and where this node is (see the module docstring)."""
    log.info(
        "DistKV {version} node {node_id} ({python} {python_version}): listening on "
        "{listening}; reached at {advertised}; peers {peer_list}; data dir {data}; "
        "state {state}",
        version=distkv.__version__,
        node_id=node_id,
        python=platform.python_implementation(),
        python_version=platform.python_version(),
        listening=", ".join(endpoints),
        endpoints=list(endpoints),
        advertised=advertised or "the address peers see",
        peer_list=",".join(f"{host}:{port}" for host, port in peers) or "none",
        peers=[f"{host}:{port}" for host, port in peers],
        data=f"{os.path.abspath(data_dir)} (fsync {fsync})" if data_dir else "none (memory only)",
        data_dir=os.path.abspath(data_dir) if data_dir else None,
        fsync=fsync if data_dir else None,
        state=state,
    )


def json_observer(out: IO[str]) -> ILogObserver:
    """An observer writing each event to ``out`` as one line of JSON."""

    @provider(ILogObserver)
    def observe(event: Dict[str, Any]) -> None:
        record = dict(event)
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        record["text"] = text
        out.write(eventAsJSON(record) + "\n")
        out.flush()

    return observe  # type: ignore[no-any-return]


def json_log_file(twistd_options: Any) -> IO[str]:
    """Where twistd would write its text log: ``--logfile`` (``-`` is
    stdout), else stdout under ``--nodaemon`` and ``twistd.log`` otherwise."""
    path = None if twistd_options is None else twistd_options.get("logfile") or None
    if path == "-":
        return sys.stdout
    if path is None:
        if twistd_options is None or twistd_options.get("nodaemon"):
            return sys.stdout
        path = "twistd.log"
    return LogFile.fromFullPath(path)  # type: ignore[no-any-return]
