"""The metrics port: ``/metrics`` for Prometheus and the cluster page at ``/``.

:func:`metrics_service` turns a node's metrics on and returns the service that
serves them on a Twisted server endpoint: it gives the dispatcher a
:class:`~distkv.front.cmdstats.CommandStats` (requests are counted only from
then on), registers :class:`~distkv.ops.metrics.NodeCollector` with
prometheus-client's process, platform and GC collectors in a registry of the
node's own, serves it from the reactor's thread (:class:`Exposition`), and samples
the page's :class:`~distkv.ops.history.History` on a timer of the injected
reactor. The site writes no access log: a scrape every few seconds would
fill the node's log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

from distkv.front.cmdstats import CommandStats
from distkv.ops.history import History
from distkv.ops.metrics import NodeCollector
from distkv.ops.page import ClusterPage

if TYPE_CHECKING:
    from distkv.node import Node

log = Logger()


class QuietSite(Site):
    """A site that writes no access log line per request."""

    def log(self, request: Request) -> None:
        pass


class MetricsListener(StreamServerEndpointService):
    """The metrics port; one that cannot be opened stops the node plainly."""

    def privilegedStartService(self) -> None:
        self._raiseSynchronously = True
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            log.critical("Cannot listen for metrics (--metrics-port): {why}", why=e)
            raise SystemExit(1) from None


def enable(node: Node) -> CommandStats:
    """Count the node's requests from now on (sampling on the node's reactor)."""
    tally = node.dispatcher.tally
    if tally is None:
        tally = node.dispatcher.tally = CommandStats(node.dispatcher.commands,
                                                     call_later=node.reactor.callLater)
    return tally


class Exposition(Resource):
    """``/metrics``: the registry in Prometheus's text format, rendered in the
    reactor's thread (a scrape costs the node about 1.5 ms of CPU). Not
    prometheus-client's Twisted resource, which renders in the reactor's
    thread pool: with the node under load, a scrape once a second there cost
    it 17-20% more CPU per request (``benchmarks/metrics_overhead.py``), and a
    scrape at shutdown could wait on the stopped reactor for ever."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        # OpenMetrics when the scraper asks for it, else Prometheus's text.
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        return encode(self._registry)


def registry_for(node: Node) -> CollectorRegistry:
    """A registry of the node's families and the process's."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def site(node: Node, history: History, registry: CollectorRegistry) -> Site:
    root = Resource()
    root.putChild(b"", ClusterPage(node, history))
    root.putChild(b"metrics", Exposition(registry))
    return QuietSite(root)


def metrics_service(node: Node, endpoint: str, reactor: Any,
                    interval: float = 5.0) -> MultiService:
    """Metrics on, served on ``endpoint`` (a Twisted server endpoint string)."""
    enable(node)
    history = History(node, reactor, interval)
    top = MultiService()
    sampler = TimerService(interval, history.sample)
    sampler.clock = reactor
    sampler.setServiceParent(top)
    listener = MetricsListener(serverFromString(reactor, endpoint),
                               site(node, history, registry_for(node)))
    listener.setServiceParent(top)
    return top
