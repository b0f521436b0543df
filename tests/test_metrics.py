"""Metrics and the cluster page in process, on fake clocks (issue 15, parts 2 and 3).

The collectors are read through prometheus-client's own exposition and
parser, so what is checked is what Prometheus would see.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from distkv.front.cmdstats import UNKNOWN, CommandStats
from distkv.front.textproto import TextProtocol
from distkv.node import Node
from distkv.ops.history import History
from distkv.ops.latency import BOUNDS, Latency
from distkv.ops.metrics import NodeCollector
from distkv.ops.page import render, sparkline
from distkv.ops.service import Exposition, enable, registry_for
from tests.clusters import settled_cluster
from tests.respclient import ask, command, connect


def scrape(node: Node) -> Dict[str, List[Sample]]:
    """Every sample of the node's families, by family name, as Prometheus parses them."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: Dict[str, List[Sample]], family: str, sample: str = "",
          **labels: str) -> float:
    found = [s.value for s in samples[family]
             if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, samples.get(family))
    return found[0]


class CommandCountTests(SynchronousTestCase):
    def node(self) -> Node:
        node = Node(Clock(), "n1")
        enable(node)
        return node

    def test_resp_requests_are_counted_by_command_and_result(self) -> None:
        """Pipelined RESP requests count under their command's name in any
        case; error replies count as errors, a name that is no command as
        ``unknown``."""
        node = self.node()
        proto, transport = connect(node)
        proto.dataReceived(b"".join(command(b"SET", b"k%d" % i, b"v") for i in range(5))
                           + command(b"get", b"k1") + command(b"GET", b"k2")
                           + command(b"Set", b"k9", b"v") + command(b"NOSUCH", b"x")
                           + command(b"GET") + command(b"nosuch2"))
        assert transport.value().count(b"+OK") == 6
        metrics = scrape(node)
        self.assertEqual(value(metrics, "distkv_commands", "distkv_commands_total",
                               command="set", result="ok"), 6)
        self.assertEqual(value(metrics, "distkv_commands", "distkv_commands_total",
                               command="get", result="ok"), 2)
        self.assertEqual(value(metrics, "distkv_commands", "distkv_commands_total",
                               command="get", result="error"), 1)
        self.assertEqual(value(metrics, "distkv_commands", "distkv_commands_total",
                               command="unknown", result="error"), 2)

    def test_names_clients_make_up_do_not_grow_the_table(self) -> None:
        """A thousand made-up command names add no entry: they all count as UNKNOWN."""
        node = self.node()
        tally = node.dispatcher.tally
        assert tally is not None
        before = len(tally.calls)
        proto, _ = connect(node)
        proto.dataReceived(b"".join(command(b"MADEUP%d" % i) for i in range(1000)))
        self.assertEqual(len(tally.calls), before)
        self.assertEqual(tally.calls[UNKNOWN], 1000)
        self.assertEqual(tally.failed[UNKNOWN], 1000)

    def test_requests_held_back_are_counted_once_they_run(self) -> None:
        """QUIT drops the requests after it: they are not counted."""
        node = self.node()
        proto, _ = connect(node)
        proto.dataReceived(command(b"PING") + command(b"QUIT") + command(b"PING"))
        tally = node.dispatcher.tally
        assert tally is not None
        self.assertEqual((tally.calls[b"PING"], tally.calls[b"QUIT"]), (1, 1))

    def test_text_protocol_requests_are_counted(self) -> None:
        """nc users' lines count like RESP requests."""
        node = self.node()
        proto = TextProtocol(node.dispatcher, 1 << 20)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"SET a 1\nget a\nDEL\nwhat\n")
        metrics = scrape(node)
        for name, result, count in (("set", "ok", 1), ("get", "ok", 1), ("del", "error", 1),
                                    ("unknown", "error", 1)):
            self.assertEqual(value(metrics, "distkv_commands", "distkv_commands_total",
                                   command=name, result=result), count)

    def test_nothing_is_counted_without_metrics(self) -> None:
        """A node without --metrics-port has no tally and no command families."""
        node = Node(Clock(), "n1")
        proto, _ = connect(node)
        ask(proto, _, b"SET", b"a", b"b")
        self.assertIsNone(node.dispatcher.tally)
        self.assertNotIn("distkv_commands", scrape(node))

    def test_latency_is_sampled_at_most_one_read_per_spacing(self) -> None:
        """A timed read disarms sampling until the reactor's timer re-arms it
        ``spacing`` seconds later; each sample lands in its command's histogram."""
        clock = Clock()
        tally = CommandStats([b"GET", b"SET"], spacing=0.01, call_later=clock.callLater)
        samples = tally.sample()
        assert samples is not None
        samples += [(b"GET", 2e-6), (b"SET", 3e-4)]
        tally.ran(b"SET", 1, samples)
        self.assertIsNone(tally.sample())
        clock.advance(0.009)
        self.assertIsNone(tally.sample())
        clock.advance(0.002)
        again = tally.sample()
        assert again is not None
        tally.ran(b"GET", 0, again + [(b"GET", 2e-6)])
        self.assertEqual(tally.latency[b"GET"].count, 2)
        self.assertEqual(tally.latency[b"SET"].count, 1)
        self.assertEqual(tally.calls[b"SET"], 1)
        clock.advance(0.01)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_resp_times_one_read_then_waits_for_the_timer(self) -> None:
        """Over RESP: the first read's requests are timed, the next read's
        not, and after the spacing a read is timed again."""
        node = self.node()
        tally = node.dispatcher.tally
        assert tally is not None
        proto, _ = connect(node)
        proto.dataReceived(command(b"SET", b"a", b"1") + command(b"GET", b"a"))
        proto.dataReceived(command(b"GET", b"a"))
        self.assertEqual((tally.latency[b"SET"].count, tally.latency[b"GET"].count), (1, 1))
        node.reactor.advance(tally.spacing)
        proto.dataReceived(command(b"GET", b"a"))
        self.assertEqual(tally.latency[b"GET"].count, 2)
        self.assertEqual(tally.calls[b"GET"], 3)

    def test_latency_histogram_buckets_are_cumulative(self) -> None:
        """Observations land in the first bucket whose bound holds them; the
        exported buckets are cumulative, +Inf equal to the count."""
        latency = Latency()
        for seconds in (5e-7, 1e-6, 3e-6, 0.2, 99.0):
            latency.observe(seconds)
        buckets = dict(latency.cumulative())
        self.assertEqual(buckets["1e-06"], 2)
        self.assertEqual(buckets["5e-06"], 3)
        self.assertEqual(buckets["0.25"], 4)
        self.assertEqual(buckets["+Inf"], 5)
        self.assertEqual(len(buckets), len(BOUNDS) + 1)
        self.assertAlmostEqual(latency.sum, 99.2000045)


class ClusterMetricsTests(SynchronousTestCase):
    def test_links_members_and_rounds_are_exported(self) -> None:
        """In a settled 3-node cluster each peer link is up, outboxes drain,
        anti-entropy rounds have completed, and every member is listed linked
        with no lag."""
        cluster = settled_cluster(self, 3)
        node = cluster.nodes["n1"]
        node.store.set(b"k", b"v")
        cluster.advance(2)
        metrics = scrape(node)
        ups = [s for s in metrics["distkv_peer_link_up"] if s.value == 1]
        self.assertEqual(sorted(s.labels["node"] for s in ups), ["n2", "n3"])
        for sample in metrics["distkv_peer_outbox_writes"]:
            self.assertEqual(sample.value, 0)
        rounds = [s.value for s in metrics["distkv_antientropy_rounds"]
                  if s.name == "distkv_antientropy_rounds_total"]
        self.assertTrue(rounds and all(r >= 1 for r in rounds), rounds)
        self.assertIn("distkv_antientropy_entries_sent", metrics)
        self.assertEqual(sorted(s.labels["member"] for s in metrics["distkv_member_linked"]
                                if s.value == 1), ["n1", "n2", "n3"])
        for sample in metrics["distkv_member_replication_lag_seconds"]:
            self.assertEqual(sample.value, 0)
        self.assertEqual(value(metrics, "distkv_keys"), 1)
        self.assertEqual(value(metrics, "distkv_loading"), 0)

    def test_lag_shows_writes_a_stalled_peer_has_not_acknowledged(self) -> None:
        """A write n3 has not acknowledged (its connections with n1 are
        stalled) shows as an outbox write and as n3's lag, growing with the
        clock; n2's lag stays 0."""
        cluster = settled_cluster(self, 3)
        node = cluster.nodes["n1"]
        cluster.net.stall("n1", "n3", 10)
        node.store.set(b"lagging", b"v")
        cluster.advance(3)
        metrics = scrape(node)
        lag = value(metrics, "distkv_member_replication_lag_seconds", member="n3")
        self.assertTrue(2.99 <= lag <= 3.01, lag)
        self.assertEqual(value(metrics, "distkv_member_replication_lag_seconds", member="n2"), 0)
        self.assertEqual(value(metrics, "distkv_peer_outbox_writes", node="n3"), 1)
        cluster.net.heal()
        cluster.advance(2)
        self.assertEqual(value(scrape(node), "distkv_member_replication_lag_seconds",
                               member="n3"), 0)


class PersistenceMetricsTests(SynchronousTestCase):
    def test_commit_latency_and_fsync_age_follow_the_journal(self) -> None:
        """Each commit is timed into the commit histogram; with everysec the
        oldest unflushed commit's age grows with the clock until the
        once-a-second flush, then is 0."""
        clock = Clock()
        directory = self.mktemp()
        os.makedirs(directory)
        node = Node(clock, "n1", data_dir=directory, fsync="everysec")
        node.start()
        self.addCleanup(node.stop)
        journal = node.journal
        assert journal is not None
        node.store.set(b"a", b"1")
        clock.advance(0)  # the end of the turn: the group commit
        clock.advance(0.4)
        metrics = scrape(node)
        self.assertEqual(value(metrics, "distkv_commit_duration_seconds",
                               "distkv_commit_duration_seconds_count"), journal.commits)
        self.assertGreaterEqual(journal.commits, 1)
        self.assertAlmostEqual(value(metrics, "distkv_fsync_age_seconds"), 0.4)
        clock.advance(0.7)  # the journal's flush, once a second
        self.assertEqual(value(scrape(node), "distkv_fsync_age_seconds"), 0)
        self.assertEqual(value(scrape(node), "distkv_persistence_failed"), 0)


class ExpositionTests(SynchronousTestCase):
    def test_metrics_render_in_the_calling_thread_in_the_format_asked_for(self) -> None:
        """/metrics renders the node's registry at once (no thread pool):
        Prometheus's text by default, OpenMetrics (ending in # EOF) when the
        scraper's Accept header asks for it; the node's numbers are in both."""
        node = Node(Clock(), "n1")
        enable(node)
        resource = Exposition(registry_for(node))
        for accept, kind, ending in ((None, b"text/plain", b"\n"),
                                     (b"application/openmetrics-text; version=1.0.0",
                                      b"application/openmetrics-text", b"# EOF\n")):
            request = DummyRequest([b"metrics"])
            if accept is not None:
                request.requestHeaders.setRawHeaders(b"accept", [accept])
            body = resource.render_GET(request)  # type: ignore[arg-type]
            content_type = request.responseHeaders.getRawHeaders(b"content-type")
            assert content_type is not None
            self.assertTrue(content_type[0].startswith(kind), content_type)
            self.assertTrue(body.endswith(ending))
            self.assertIn(b"distkv_connected_clients", body)


class PageTests(SynchronousTestCase):
    def test_history_keeps_ops_per_second_and_lag_in_ring_buffers(self) -> None:
        """Each sample adds the requests since the last one per second, and
        each member's lag; the buffers keep the last ``size`` samples."""
        clock = Clock()
        node = Node(clock, "n1")
        node.start()
        self.addCleanup(node.stop)
        history = History(node, clock, interval=5.0, size=3)
        history.sample()
        for rate in (10, 20, 30, 40):
            node.dispatcher.stats.commands_processed += rate * 5
            clock.advance(5)
            history.sample()
        self.assertEqual(list(history.ops), [20.0, 30.0, 40.0])
        self.assertEqual(list(history.lag["n1"]), [0.0, 0.0, 0.0])
        node.dispatcher.stats.commands_processed = 0  # CONFIG RESETSTAT
        clock.advance(5)
        history.sample()
        self.assertEqual(history.ops[-1], 0.0)

    def test_page_lists_members_with_state_lag_and_sparklines(self) -> None:
        """The page names every member with its state and links, and has one
        sparkline for ops/s and one per member."""
        cluster = settled_cluster(self, 3)
        node = cluster.nodes["n1"]
        history = History(node, cluster.net)
        history.sample()
        cluster.advance(5)
        history.sample()
        page = render(node, history).decode()
        rows = re.findall(r'<tr class="member" data-id="([^"]+)">', page)
        self.assertEqual(rows, ["n1", "n2", "n3"])
        self.assertEqual(page.count("<svg"), 4)
        self.assertIn('http-equiv="refresh"', page)
        self.assertIn("serving", page)
        self.assertNotIn("<script", page)

    def test_page_escapes_what_others_chose(self) -> None:
        """A member address with markup in it is shown as text, not markup."""
        cluster = settled_cluster(self, 2)
        node = cluster.nodes["n1"]
        entry = node.membership.get("n2")
        assert entry is not None
        node.membership.entries["n2"] = entry._replace(host="<img src=x onerror=alert(1)>")
        page = render(node, History(node, cluster.net)).decode()
        self.assertNotIn("<img", page)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", page)

    def test_sparkline_scales_to_its_maximum(self) -> None:
        """The highest value touches the top, zero the bottom; no values, no points."""
        svg = sparkline([0.0, 5.0, 10.0], width=100, height=20)
        points: List[Tuple[float, float]] = [
            (float(x), float(y)) for x, y in re.findall(r"([\d.]+),([\d.]+)", svg.split('points="')[1])]
        self.assertEqual(points, [(0.0, 18.0), (50.0, 10.0), (100.0, 2.0)])
        self.assertIn('points=""', sparkline([]))
