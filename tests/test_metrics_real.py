"""Real twistd nodes with --metrics-port: /metrics as Prometheus reads it, and the
cluster page in a real headless browser (issue 15, parts 2 and 3)."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.realnodes import Cluster, NodeProcess, free_ports, require_tool, wait_until

pytestmark = pytest.mark.process

#: Every family the README lists for a node with a data dir and a peer.
FAMILIES = [
    "distkv_build_info", "distkv_commands", "distkv_command_duration_seconds",
    "distkv_connected_clients", "distkv_connections_received", "distkv_keys",
    "process_resident_memory_bytes", "distkv_peer_link_up", "distkv_peer_outbox_writes",
    "distkv_peer_outbox_bytes", "distkv_member_replication_lag_seconds",
    "distkv_antientropy_rounds", "distkv_antientropy_entries_sent",
    "distkv_refused_future_versions", "distkv_loading", "distkv_commit_duration_seconds",
    "distkv_fsync_age_seconds", "distkv_auth_failures", "distkv_peer_auth_failures",
]


def fetch(port: int, path: str) -> Tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return reply.headers.get("Content-Type", ""), reply.read().decode()


def scrape(port: int) -> Dict[str, List[Sample]]:
    _, text = fetch(port, "/metrics")
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def one(samples: Dict[str, List[Sample]], family: str, sample: str = "",
        **labels: str) -> float:
    found = [s.value for s in samples[family] if s.name == (sample or family)
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, samples[family])
    return found[0]


@pytest.fixture
def pair(cluster: Cluster, tmp_path: Path) -> Tuple[NodeProcess, NodeProcess, int, int]:
    """node1 (a data dir) and node2 peered, each with a metrics port."""
    port1, port2, metrics1, metrics2 = free_ports(4)
    data = tmp_path / "data1"
    node1 = cluster.add(NodeProcess(tmp_path, port1, [port2], "node1",
                                    ["--data-dir", str(data), "--metrics-port", str(metrics1)]))
    node2 = cluster.add(NodeProcess(tmp_path, port2, [port1], "node2",
                                    ["--metrics-port", str(metrics2)]))
    node1.start()
    node2.start()
    node1.wait_ready()
    node2.wait_ready()
    return node1, node2, metrics1, metrics2


def test_metrics_count_what_clients_sent_and_show_every_family(
        pair: Tuple[NodeProcess, NodeProcess, int, int]) -> None:
    """After 150 SETs (100 one by one, 50 pipelined), 30 GETs and 2 unknown
    commands through redis-py, node1's /metrics parses with prometheus-client's
    parser, has every family the README lists, and counts exactly what was sent."""
    node1, node2, metrics1, _ = pair
    client = redis.Redis(port=node1.port)
    for i in range(100):
        assert client.set(f"k{i}", "v")
    pipe = client.pipeline(transaction=False)
    for i in range(100, 150):
        pipe.set(f"k{i}", "v")
    assert pipe.execute() == [True] * 50
    for i in range(30):
        assert client.get(f"k{i}") == b"v"
    for _ in range(2):
        with pytest.raises(redis.ResponseError):
            client.execute_command("NOSUCHCOMMAND")
    client.close()
    wait_until(lambda: one(scrape(metrics1), "distkv_peer_outbox_writes",
                           node="node2") == 0, "node2 to acknowledge every write")
    metrics = scrape(metrics1)
    missing = [name for name in FAMILIES if name not in metrics]
    assert not missing, missing
    assert one(metrics, "distkv_commands", "distkv_commands_total",
               command="set", result="ok") == 150
    assert one(metrics, "distkv_commands", "distkv_commands_total",
               command="get", result="ok") == 30
    assert one(metrics, "distkv_commands", "distkv_commands_total",
               command="unknown", result="error") == 2
    timed = one(metrics, "distkv_command_duration_seconds",
                "distkv_command_duration_seconds_count", command="set")
    assert 1 <= timed <= 150
    assert one(metrics, "distkv_keys") == 150
    assert one(metrics, "distkv_connections_received", "distkv_connections_received_total") >= 1
    assert one(metrics, "process_resident_memory_bytes") > 10 << 20
    assert one(metrics, "distkv_peer_link_up", node="node2") == 1
    assert one(metrics, "distkv_member_linked", member="node2") == 1
    assert one(metrics, "distkv_member_replication_lag_seconds", member="node2") == 0
    assert one(metrics, "distkv_loading") == 0
    assert one(metrics, "distkv_refused_future_versions",
               "distkv_refused_future_versions_total") == 0
    assert one(metrics, "distkv_auth_failures", "distkv_auth_failures_total") == 0
    assert one(metrics, "distkv_commit_duration_seconds",
               "distkv_commit_duration_seconds_count") >= 1
    assert 0 <= one(metrics, "distkv_fsync_age_seconds") < 60
    build = [s for s in metrics["distkv_build_info"] if s.name == "distkv_build_info"]
    assert build[0].labels["node_id"] == "node1"


def test_metrics_port_listens_on_loopback_only(
        pair: Tuple[NodeProcess, NodeProcess, int, int]) -> None:
    """--metrics-port binds 127.0.0.1: the page answers there, with HTML."""
    node1, _, metrics1, _ = pair
    content_type, page = fetch(metrics1, "/")
    assert content_type.startswith("text/html")
    assert "node1" in page
    listening = Path("/proc/net/tcp").read_text()
    assert f"0100007F:{metrics1:04X}" in listening  # 127.0.0.1, little-endian hex


def test_cluster_page_renders_in_headless_chromium(
        pair: Tuple[NodeProcess, NodeProcess, int, int], tmp_path: Path) -> None:
    """Debian's chromium, headless, loads node1's page: its DOM lists both
    members with their state and a sparkline each, and a screenshot is drawn."""
    chromium = require_tool("chromium")
    node1, _, metrics1, _ = pair
    client = redis.Redis(port=node1.port)
    for i in range(20):
        client.set(f"page{i}", "v")
    client.close()
    url = f"http://127.0.0.1:{metrics1}/"
    common = [chromium, "--headless", "--disable-gpu", "--no-sandbox",
              f"--user-data-dir={tmp_path / 'chromium'}", "--no-first-run"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, timeout=120,
                         env=dict(os.environ, HOME=str(tmp_path))).stdout.decode()
    rows = re.findall(r'<tr class="member" data-id="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [row_id for row_id, _ in rows] == ["node1", "node2"], dom[:2000]
    for _, cells in rows:
        assert "<td>member</td>" in cells and "<svg" in cells
    assert 'class="up"' in rows[1][1]  # node2's link
    shot = tmp_path / "page.png"
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1100,520",
                             "--hide-scrollbars", url],
                   capture_output=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 5000
