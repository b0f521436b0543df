"""A node's numbers as Prometheus metric families, read when scraped.

:class:`NodeCollector` is a prometheus-client custom collector: nothing here
counts anything. Each family is read, at scrape time, from the counter INFO,
STATUS and MEMBERS already report (the node's stats, its links and outboxes,
the member list, the clock's refusals, the accounts, the journal), so each
number has one copy; the per-command counts and latencies are the
dispatcher's :class:`~distkv.front.cmdstats.CommandStats`. The node's state
belongs to the reactor thread, where ``/metrics`` is rendered
(:class:`distkv.ops.service.Exposition`): ``in_reactor`` runs the reading
straight through by default, and is the seam for a caller in another
thread. The families and their labels are listed in the README.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Callable, Iterator, List, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import distkv
from distkv.front import report
from distkv.ops.latency import Latency

if TYPE_CHECKING:
    from distkv.node import Node

T = TypeVar("T")


def _direct(read: Callable[[], T]) -> T:
    return read()


def _histogram(family: HistogramMetricFamily, labels: List[str], latency: Latency) -> None:
    family.add_metric(labels, latency.cumulative(), latency.sum)


class NodeCollector(Collector):
    """Every DistKV family of ``node``, read at each scrape."""

    def __init__(self, node: Node,
                 in_reactor: Callable[[Callable[[], List[Metric]]], List[Metric]] = _direct,
                 ) -> None:
        self.node = node
        self._in_reactor = in_reactor

    def collect(self) -> Iterator[Metric]:
        return iter(self._in_reactor(self.families))

    def families(self) -> List[Metric]:
        """Every family, read now (in the reactor thread)."""
        node = self.node
        out: List[Metric] = []
        info = InfoMetricFamily("distkv_build", "This node's id and DistKV's version.")
        info.add_metric([], {"node_id": node.node_id, "version": distkv.__version__,
                             "python": platform.python_implementation()})
        out.append(info)
        out.extend(self._commands())
        out.extend(self._clients())
        out.extend(self._data())
        out.extend(self._links())
        out.extend(self._members())
        out.extend(self._persistence())
        out.extend(self._security())
        return out

    def _commands(self) -> List[Metric]:
        tally = self.node.dispatcher.tally
        if tally is None:
            return []
        commands = CounterMetricFamily(
            "distkv_commands", "Requests run, by command and result (error: an error reply).",
            labels=["command", "result"])
        failed = tally.failed
        for name, calls in sorted(tally.calls.items()):
            if calls:
                text = name.decode("ascii", "replace").lower()
                errors = failed.get(name, 0)
                commands.add_metric([text, "ok"], calls - errors)
                commands.add_metric([text, "error"], errors)
        latency = HistogramMetricFamily(
            "distkv_command_duration_seconds",
            "Time a command takes to run, sampled: the requests of at most one read every 10 ms.",
            labels=["command"])
        for name, histogram in sorted(tally.latency.items()):
            _histogram(latency, [name.decode("ascii", "replace").lower()], histogram)
        return [commands, latency]

    def _clients(self) -> List[Metric]:
        node = self.node
        stats = node.dispatcher.stats
        door = node.door
        return [
            GaugeMetricFamily("distkv_connected_clients", "Client connections open now.",
                              value=stats.connected_clients),
            CounterMetricFamily("distkv_connections_received",
                                "Client connections accepted since the start (or CONFIG RESETSTAT).",
                                value=stats.connections_received),
            CounterMetricFamily("distkv_connections_refused",
                                "Connections refused for --maxclients.",
                                value=door.refused if door is not None else 0),
        ]

    def _data(self) -> List[Metric]:
        node = self.node
        store = node.store
        return [
            GaugeMetricFamily("distkv_keys", "Live keys (tombstones not counted).",
                              value=len(store)),
            GaugeMetricFamily("distkv_tombstones", "Deleted keys' tombstones held.",
                              value=store.tombstones),
            CounterMetricFamily("distkv_tombstones_purged",
                                "Tombstones purged once every peer had them.",
                                value=store.purged),
            CounterMetricFamily("distkv_refused_future_versions",
                                "Replicated writes refused: their version lay more than "
                                "--max-clock-skew ahead of this node's clock.",
                                value=node.clock.refused),
            GaugeMetricFamily("distkv_loading",
                              "1 while the node refuses data commands (LOADING) until a "
                              "peer has synced it.", value=int(node.loading)),
            GaugeMetricFamily("distkv_writes_refused",
                              "1 while writes are refused (clock ahead, too few replicas, "
                              "or the node left).",
                              value=int(node.dispatcher.write_refusal is not None)),
        ]

    def _links(self) -> List[Metric]:
        labels = ["peer", "node"]
        up = GaugeMetricFamily("distkv_peer_link_up",
                               "1 while the link to this peer address has a connection.",
                               labels=labels)
        writes = GaugeMetricFamily("distkv_peer_outbox_writes",
                                   "Writes in the peer's outbox, not yet acknowledged.",
                                   labels=labels)
        size = GaugeMetricFamily("distkv_peer_outbox_bytes",
                                 "Bytes of writes in the peer's outbox.", labels=labels)
        resync = GaugeMetricFamily("distkv_peer_resync_needed",
                                   "1 while the outbox overflowed and a full resync is due.",
                                   labels=labels)
        resyncs = CounterMetricFamily("distkv_peer_resyncs",
                                      "Outbox overflows that called for a full resync.",
                                      labels=labels)
        rounds = CounterMetricFamily("distkv_antientropy_rounds",
                                     "Anti-entropy rounds this node completed into the peer.",
                                     labels=labels)
        moved = CounterMetricFamily("distkv_antientropy_entries_sent",
                                    "Entries this node's anti-entropy rounds sent the peer.",
                                    labels=labels)
        for link in self.node.replication.links.values():
            if link.is_self:
                continue
            values = [link.name, link.remote.node if link.remote is not None else ""]
            outbox = link.outbox
            up.add_metric(values, int(link.up))
            writes.add_metric(values, len(outbox))
            size.add_metric(values, outbox.bytes)
            resync.add_metric(values, int(outbox.needs_resync))
            resyncs.add_metric(values, link.resyncs)
            rounds.add_metric(values, link.rounds_completed)
            moved.add_metric(values, link.round_entries_sent)
        return [up, writes, size, resync, resyncs, rounds, moved]

    def _members(self) -> List[Metric]:
        """The member list as MEMBERS shows it: state, links, lag."""
        state = GaugeMetricFamily("distkv_member", "1 for each entry of the member list, "
                                  "with its state (member, left, removed...).",
                                  labels=["member", "state"])
        linked = GaugeMetricFamily("distkv_member_linked",
                                   "1 while a connection with the member is up (either way; "
                                   "1 for this node itself).", labels=["member"])
        lag = GaugeMetricFamily("distkv_member_replication_lag_seconds",
                                "Age of the oldest write of ours the member has not "
                                "acknowledged (0: none pending).", labels=["member"])
        heard = GaugeMetricFamily("distkv_member_last_heard_seconds",
                                  "Seconds since the member last sent anything.",
                                  labels=["member"])
        for fact in report.member_facts(self.node):
            state.add_metric([fact.id, fact.state], 1)
            linked.add_metric([fact.id], int(fact.myself or "up" in (fact.link_out, fact.link_in)))
            lag.add_metric([fact.id], fact.lag_ms / 1000)
            if fact.heard_ago is not None:
                heard.add_metric([fact.id], fact.heard_ago)
        return [state, linked, lag, heard]

    def _persistence(self) -> List[Metric]:
        journal = self.node.journal
        if journal is None:
            return []
        latency = HistogramMetricFamily("distkv_commit_duration_seconds",
                                        "Time each group commit's transaction took.")
        _histogram(latency, [], journal.commit_latency)
        return [
            latency,
            CounterMetricFamily("distkv_commits", "Group commits to the data dir.",
                                value=journal.commits),
            GaugeMetricFamily("distkv_fsync_age_seconds",
                              "How long the oldest commit not yet flushed to disk has waited "
                              "(--fsync everysec; 0 when all are flushed).",
                              value=journal.unflushed_age()),
            GaugeMetricFamily("distkv_persistence_failed",
                              "1 once a commit or flush failed (writes are refused).",
                              value=int(journal.failure is not None)),
        ]

    def _security(self) -> List[Metric]:
        node = self.node
        accounts = node.dispatcher.accounts
        door = node.door
        gate = node.peer_gate
        out: List[Metric] = [
            CounterMetricFamily("distkv_auth_failures", "Failed client AUTH attempts.",
                                value=accounts.failures),
            CounterMetricFamily("distkv_commands_denied",
                                "Commands refused for want of the right (NOPERM).",
                                value=accounts.denied),
            CounterMetricFamily("distkv_peer_auth_failures",
                                "Peer handshakes that failed the cluster secret.",
                                value=node.peer_auth.failures),
            CounterMetricFamily("distkv_peer_bad_records",
                                "Peer records whose authentication failed.",
                                value=node.peer_auth.bad_records),
            CounterMetricFamily("distkv_protected_mode_denied",
                                "Connections protected mode refused.",
                                value=door.denied if door is not None else 0),
            CounterMetricFamily("distkv_members_refused",
                                "Member-list entries refused because the list was full.",
                                value=node.membership.refused),
        ]
        if gate is not None:
            out.append(CounterMetricFamily("distkv_peer_tls_refused",
                                           "Peer handshakes refused for their certificate.",
                                           value=gate.refused))
            out.append(CounterMetricFamily("distkv_tls_handshake_failures",
                                           "TLS handshakes that failed.", value=gate.failed))
        return out
