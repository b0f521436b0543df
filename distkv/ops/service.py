"""The metrics port: ``/metrics`` for Prometheus and the cluster page at ``/``.

:func:`metrics_service` turns a node's metrics on and returns the service that
serves them on a Twisted server endpoint: it gives the dispatcher a
:class:`~distkv.front.cmdstats.CommandStats` (requests are counted only from
then on), registers :class:`~distkv.ops.metrics.NodeCollector` with
prometheus-client's process, platform and GC collectors in a registry of the
node's own, serves it with prometheus-client's Twisted resource, and samples
the page's :class:`~distkv.ops.history.History` on a timer of the injected
reactor. The site writes no access log: a scrape every few seconds would
fill the node's log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.twisted import MetricsResource
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.threads import blockingCallFromThread
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


def registry_for(node: Node,
                 in_reactor: Callable[[Callable[[], List[Metric]]], List[Metric]],
                 ) -> CollectorRegistry:
    """A registry of the node's families and the process's."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node, in_reactor))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def site(node: Node, history: History, registry: CollectorRegistry) -> Site:
    root = Resource()
    root.putChild(b"", ClusterPage(node, history))
    root.putChild(b"metrics", MetricsResource(registry))
    return QuietSite(root)


def metrics_service(node: Node, endpoint: str, reactor: Any,
                    interval: float = 5.0) -> MultiService:
    """Metrics on, served on ``endpoint`` (a Twisted server endpoint string)."""
    enable(node)

    def in_reactor(read: Callable[[], List[Metric]]) -> List[Metric]:
        # The resource runs collectors in the reactor's thread pool.
        return blockingCallFromThread(reactor, read)  # type: ignore[no-any-return]

    history = History(node, reactor, interval)
    top = MultiService()
    sampler = TimerService(interval, history.sample)
    sampler.clock = reactor
    sampler.setServiceParent(top)
    listener = MetricsListener(serverFromString(reactor, endpoint),
                               site(node, history, registry_for(node, in_reactor)))
    listener.setServiceParent(top)
    return top
