"""What a node reports about itself: the STATUS lines and its INFO sections.

Read-only views of a :class:`~distkv.node.Node`, kept apart from the node's
wiring so that module stays about how a node is put together.
"""

from __future__ import annotations

import os
import platform
import resource
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

if TYPE_CHECKING:
    from distkv.front.replies import Stats
    from distkv.node import Node


def status_lines(node: Node) -> List[str]:
    store = node.store
    accounts = node.dispatcher.accounts
    lines = [
        f"node {node.node_id}",
        f"incarnation {node.incarnation}",
        f"state {state(node)}",
        "writes {}".format("refused (clock ahead)" if node.dispatcher.write_refusal else "accepted"),
        f"keys {len(store)}",
        f"tombstones {store.tombstones}",
        f"refused_future_versions {node.clock.refused}",
        f"members_refused {node.membership.refused}",
        f"stable_horizon {store.horizon}",
        f"tombstones_purged {store.purged}",
        "synced_from {}".format(",".join(sorted(node.synced_from)) or "-"),
        "client_auth {}".format("required" if accounts.required else "none"),
        f"auth_failures {accounts.failures}",
        f"commands_denied {accounts.denied}",
        "protected_mode {}".format("on" if node.protected_mode else "off"),
        f"protected_mode_denied {node.door.denied if node.door is not None else 0}",
        "cluster_secret {}".format("required" if node.peer_auth.secret else "none"),
        f"peer_auth_failures {node.peer_auth.failures}",
        f"peer_bad_records {node.peer_auth.bad_records}",
    ]
    lines.extend(f"{key} {value}" for key, value in consistency(node))
    lines.extend(link.status() for link in node.replication.links.values())
    lines.extend(member_lines(node))
    return lines


def state(node: Node) -> str:
    """``serving``, or ``loading (why)``: while the data dir is read, how much is."""
    load = node.data_load
    if load is not None:
        return f"loading (data dir, {load.percent():.0f}% read)"
    return f"loading ({node.loading_why})" if node.loading else "serving"


def info_sections(node: Node) -> Dict[str, List[Tuple[str, object]]]:
    """This node's part of INFO, in Redis's section names."""
    store = node.store
    links = [link for link in node.replication.links.values() if not link.is_self]
    replication: List[Tuple[str, object]] = [
        ("role", "master"),
        ("node_id", node.node_id),
        ("connected_peers", sum(1 for link in links if link.up)),
        ("cluster_secret", "required" if node.peer_auth.secret else "none"),
    ]
    for index, link in enumerate(links):
        outbox = link.outbox
        replication.append((f"peer{index}", ",".join([
            f"addr={link.name}",
            "node={}".format(link.remote.node if link.remote else "-"),
            "link={}".format("up" if link.up else "down"),
            f"outbox_writes={len(outbox)}",
            f"outbox_bytes={outbox.bytes}",
            f"acked_seq={outbox.acked}",
            "resync={}".format("needed" if outbox.needs_resync else "no"),
            f"resyncs={link.resyncs}",
            f"sync_rounds={link.rounds_completed}",
            f"sync_entries_sent={link.round_entries_sent}",
        ])))
    for index, row in enumerate(member_rows(node)):
        replication.append((f"member{index}", ",".join(f"{k}={v}" for k, v in row.items())))
    return {
        "server": [
            ("redis_mode", "standalone"),
            ("process_id", os.getpid()),
            ("run_id", node.incarnation),
            ("tcp_port", node.listen_port or 0),
            ("uptime_in_seconds", int(node.reactor.seconds() - node.started_at)),
            ("python_implementation", platform.python_implementation()),
        ],
        "memory": memory(node.dispatcher.stats),
        "persistence": persistence(node),
        "stats": [
            ("tombstones", store.tombstones),
            ("tombstones_purged", store.purged),
            ("refused_future_versions", node.clock.refused),
            ("writes_refused_clock_ahead", int(node.dispatcher.write_refusal is not None)),
            ("peer_auth_failures", node.peer_auth.failures),
            ("peer_bad_records", node.peer_auth.bad_records),
        ],
        "replication": replication,
        "consistency": consistency(node),
    }


def consistency(node: Node) -> List[Tuple[str, object]]:
    """The node's default levels, what waiting for members came to, and
    LINEARIZABLE's operations and acceptor."""
    levels = node.dispatcher.levels
    quorum = node.quorum
    return [
        ("read_level", levels.read),
        ("write_level", levels.write),
        ("quorum_timeout", f"{quorum.timeout:g}"),
        ("members", node.quorum_members()),
        ("level_waiting", quorum.pending()),
        ("level_writes_met", quorum.writes_met),
        ("level_writes_indeterminate", quorum.writes_indeterminate),
        ("level_reads_met", quorum.reads_met),
        ("level_reads_failed", quorum.reads_failed),
        ("read_repairs", quorum.repairs),
        ("linearizable_waiting", node.proposer.pending()),
        ("linearizable_met", node.proposer.met),
        ("linearizable_reads_unwritten", node.proposer.fast_reads),
        ("linearizable_unsettled_reads", node.proposer.unsettled_reads),
        ("linearizable_conflicts", node.proposer.conflicts),
        ("linearizable_indeterminate", node.proposer.indeterminate),
        ("linearizable_refused", node.proposer.unavailable),
        ("acceptor_ready", "yes" if node.acceptor.serving() else "no"),
        ("acceptor_promises", len(node.acceptor.promises)),
        ("acceptor_refused", node.acceptor.refused),
    ]


def persistence(node: Node) -> List[Tuple[str, object]]:
    """INFO persistence, with Redis's append-only-file names where they fit:
    the log is DistKV's AOF and a snapshot its rewrite."""
    journal = node.journal
    section: List[Tuple[str, object]] = [("loading", int(node.loading))]
    load = node.data_load
    if load is not None:
        # Redis's names for the reading of its dump, while it reads it;
        # loading_loaded_keys is DistKV's.
        now = node.reactor.seconds()
        section.extend([
            ("async_loading", 0),
            ("loading_start_time", int(load.started)),
            ("loading_total_bytes", load.total_bytes),
            ("loading_loaded_bytes", load.loaded_bytes),
            ("loading_loaded_perc", f"{load.percent():.2f}"),
            ("loading_eta_seconds", load.eta_seconds(now)),
            ("loading_loaded_keys", len(node.store)),
        ])
    section.extend([
        ("aof_enabled", int(journal is not None)),
        ("data_dir", node.data_dir or ""),
        ("fsync", node.fsync if node.data_dir else "memory-only"),
    ])
    if journal is not None:
        disk = journal.disk
        section.extend([
            ("commits", journal.commits),
            ("aof_rewrite_in_progress", int(journal.snapshot_running)),
            ("aof_rewrites", journal.snapshots),
            ("aof_current_size", disk.log_bytes + disk.snapshot_bytes),
            ("aof_base_size", disk.snapshot_bytes),
            ("aof_last_write_status", "ok" if journal.failure is None else "err"),
        ])
    return section


class MemberFacts(NamedTuple):
    """One entry of the member list as this node sees it (see :func:`member_facts`)."""

    id: str
    addr: str
    state: str
    myself: bool
    #: "up", "down" or "none" (no link dials it); "-" for this node itself.
    link_out: str
    #: "up" or "down"; "-" for this node itself.
    link_in: str
    #: Seconds since it last sent anything, None if never.
    heard_ago: Optional[float]
    outbox_writes: int
    lag_ms: int


def member_facts(node: Node) -> List[MemberFacts]:
    """Each entry of the member list (this node first): id, address, state,
    link state each way (``out``: a connection we dialled, ``in``: one the
    member dialled), seconds since it last sent anything, the writes our
    outbox holds for it, and how old the oldest of them is (its lag)."""
    from distkv.cluster.peerproto import Dialer
    from distkv.store.entries import version_of

    now = node.reactor.seconds()
    facts = []
    entries = node.membership.listing()
    entries.sort(key=lambda m: m.node != node.node_id)
    for member in entries:
        links = [link for link in node.replication.links.values()
                 if not link.is_self and (
                     (link.remote is not None and link.remote.node == member.node)
                     or (link.remote is None and link.expect == member.node))]
        connections = [proto for link in links for proto in link.connections()]
        dialled = [proto for proto in connections if isinstance(proto, Dialer)]
        called = [proto for proto in connections if not isinstance(proto, Dialer)]
        heard = max((proto.last_heard for proto in connections), default=None)
        oldest = [link.outbox.oldest() for link in links]
        stamps = [version_of(entry).ms for entry in oldest if entry is not None]
        myself = member.node == node.node_id
        facts.append(MemberFacts(
            id=member.node,
            addr=member.describe(),
            state=member.state,
            myself=myself,
            link_out="-" if myself else ("up" if dialled else (
                "down" if any(link.dials for link in links) else "none")),
            link_in="-" if myself else ("up" if called else "down"),
            heard_ago=None if heard is None else now - heard,
            outbox_writes=sum(len(link.outbox) for link in links),
            lag_ms=max(0, node.wall_ms() - min(stamps)) if stamps else 0,
        ))
    return facts


def member_rows(node: Node) -> List[Dict[str, str]]:
    """:func:`member_facts` as the text of MEMBERS, STATUS and INFO."""
    return [{
        "id": fact.id,
        "addr": fact.addr,
        "state": fact.state,
        "role": "myself" if fact.myself else "peer",
        "link_out": fact.link_out,
        "link_in": fact.link_in,
        "last_heard": "-" if fact.heard_ago is None else f"{fact.heard_ago:.1f}s",
        "outbox_writes": str(fact.outbox_writes),
        "lag_ms": str(fact.lag_ms),
    } for fact in member_facts(node)]


def member_lines(node: Node) -> List[str]:
    """``MEMBERS`` and STATUS: one ``member <id> key=value...`` line per entry."""
    return ["member {} {}".format(row["id"], " ".join(
        f"{key}={value}" for key, value in row.items() if key != "id"))
        for row in member_rows(node)]


def cluster_nodes(node: Node) -> List[str]:
    """``CLUSTER NODES`` in Redis's line format, for the current members:
    ``<id> <host:port@port> <flags> - <ping-sent> <pong-recv> <epoch>
    <link-state>``; pong-recv is when the member was last heard (ms, our
    wall clock), flags ``myself,master`` or ``master`` (every DistKV node
    takes writes), plus ``fail?`` while no connection with it is up."""
    lines = []
    now_ms = node.wall_ms()
    for row in member_rows(node):
        if row["state"] != "member":
            continue
        myself = row["role"] == "myself"
        up = row["link_out"] == "up" or row["link_in"] == "up"
        flags = "myself,master" if myself else ("master" if up else "master,fail?")
        addr = row["addr"] if row["addr"] != "-" else ":0"
        port = addr.rsplit(":", 1)[-1]
        heard = row["last_heard"]
        pong = 0 if heard == "-" else now_ms - int(float(heard[:-1]) * 1000)
        lines.append(f"{row['id']} {addr}@{port} {flags} - 0 {pong} 0 "
                     + ("connected" if up or myself else "disconnected"))
    return lines


def resident_bytes() -> Optional[int]:
    """This process's resident set size now (Linux's /proc), or None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def human(size: int) -> str:
    """Bytes as Redis's ``*_human`` fields write them: ``1.27M``."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


def memory(stats: Stats) -> List[Tuple[str, object]]:
    """INFO memory. A Python process cannot tell its data's share of the heap
    cheaply, so ``used_memory`` is the resident size, as ``used_memory_rss``
    (the peak falls back on the kernel's high-water mark); DistKV has no
    memory limit and evicts nothing."""
    rss = resident_bytes()
    if rss is None:  # no /proc: the kernel's peak is the best we know
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats.peak_memory = peak = max(stats.peak_memory, rss)
    allocator = "pymalloc" if platform.python_implementation() == "CPython" else "pypy-gc"
    return [
        ("used_memory", rss),
        ("used_memory_human", human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", human(rss)),
        ("used_memory_peak", peak),
        ("used_memory_peak_human", human(peak)),
        ("maxmemory", 0),
        ("maxmemory_human", "0B"),
        ("maxmemory_policy", "noeviction"),
        ("mem_allocator", allocator),
    ]
