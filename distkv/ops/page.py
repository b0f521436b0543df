"""The cluster page: one small server-rendered HTML page at ``/``.

It shows this node (id, version, state, keys, clients), a sparkline of its
requests per second, and the member list as this node sees it (the numbers
of ``MEMBERS``: state, links each way, last heard, outbox, lag), each member
with a sparkline of its lag, from :class:`~distkv.ops.history.History`. The
sparklines are inline SVG, and the page reloads itself (a meta refresh): no
JavaScript. Everything a peer or a user chose (node ids, addresses, states)
is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, List, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Request

import distkv
from distkv.front import report
from distkv.ops.history import History

if TYPE_CHECKING:
    from distkv.node import Node

#: Seconds between the page's reloads.
REFRESH = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} .sub{color:#666;margin-bottom:1em}
table{border-collapse:collapse;background:#fff} th,td{padding:.35em .7em;text-align:left;
border-bottom:1px solid #ddd} th{background:#eee} td.n{text-align:right;font-variant-numeric:
tabular-nums} .up{color:#187a2f} .down{color:#b3261e;font-weight:bold} .none{color:#888}
.card{display:inline-block;background:#fff;border:1px solid #ddd;padding:.5em .8em;
margin:0 .6em .8em 0;vertical-align:top} .card b{display:block;font-size:1.4em}
svg polyline{fill:none;stroke:#1f5fbf;stroke-width:1.5} svg{vertical-align:middle}
small{color:#666;margin-left:.4em}
"""


def sparkline(values: Sequence[float], width: int = 240, height: int = 36) -> str:
    """``values`` as an inline SVG line, scaled to their maximum (at least 1
    for an all-zero series); an empty series is an empty frame."""
    top = max(max(values, default=0.0), 1e-9)
    count = len(values)
    points = []
    for index, value in enumerate(values):
        x = width * index / (count - 1) if count > 1 else width
        y = height - 2 - (height - 4) * value / top
        points.append(f"{x:.1f},{y:.1f}")
    label = escape(f"{count} samples, max {max(values, default=0.0):.3g}")
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{label}"><title>{label}</title>'
            f'<rect width="{width}" height="{height}" fill="#f3f6fb"/>'
            f'<polyline points="{" ".join(points)}"/></svg>')


def _link(state: str) -> str:
    css = {"up": "up", "down": "down"}.get(state, "none")
    return f'<span class="{css}">{escape(state)}</span>'


def _card(title: str, value: str) -> str:
    return f'<div class="card">{escape(title)}<b>{escape(value)}</b></div>'


def render(node: Node, history: History) -> bytes:
    """The page, as UTF-8 HTML."""
    stats = node.dispatcher.stats
    state = f"loading ({node.loading_why})" if node.loading else "serving"
    if node.dispatcher.write_refusal is not None:
        state += ", writes refused"
    rate = history.ops[-1] if history.ops else 0.0
    uptime = int(node.reactor.seconds() - node.started_at)
    parts: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        f"<title>DistKV {escape(node.node_id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>DistKV node {escape(node.node_id)}</h1>",
        f'<div class="sub">version {escape(distkv.__version__)} &middot; up {uptime}s &middot; '
        f'this page reloads every {REFRESH}s &middot; <a href="metrics">/metrics</a></div>',
        _card("state", state),
        _card("keys", str(len(node.store))),
        _card("clients", str(stats.connected_clients)),
        _card(f"ops/s (last {history.interval:g}s)", f"{rate:.0f}"),
        f'<div class="card">ops/s, last {len(history.ops) * history.interval:g}s'
        f"{sparkline(list(history.ops))}"
        f"<small>max {max(history.ops, default=0.0):.0f}/s</small></div>",
        "<h2>Members</h2>",
        '<table id="members"><thead><tr><th>id</th><th>address</th><th>state</th>'
        "<th>link out</th><th>link in</th><th>last heard</th><th>outbox</th>"
        "<th>lag</th><th>lag, last minutes</th></tr></thead><tbody>",
    ]
    for fact in report.member_facts(node):
        heard = "-" if fact.heard_ago is None else f"{fact.heard_ago:.1f}s ago"
        name = escape(fact.id) + (" (this node)" if fact.myself else "")
        lags = list(history.lag.get(fact.id, ()))
        parts.append(
            f'<tr class="member" data-id="{escape(fact.id)}"><td>{name}</td>'
            f"<td>{escape(fact.addr)}</td><td>{escape(fact.state)}</td>"
            f"<td>{_link(fact.link_out)}</td><td>{_link(fact.link_in)}</td>"
            f'<td class="n">{heard}</td><td class="n">{fact.outbox_writes}</td>'
            f'<td class="n">{fact.lag_ms / 1000:.3f}s</td>'
            f"<td>{sparkline(lags, 160, 24)} <small>max {max(lags, default=0.0):.3f}s</small>"
            "</td></tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts).encode("utf-8")


class ClusterPage(Resource):
    """``/``: the page, rendered at each request."""

    isLeaf = True

    def __init__(self, node: Node, history: History) -> None:
        super().__init__()
        self.node = node
        self.history = history

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return render(self.node, self.history)
