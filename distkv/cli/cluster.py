"""``distkv cluster [ADDR]``: every member in one table, and an exit status for health checks.

The node at ADDR (or ``-h``/``-p``) names the members (``MEMBERS``); each
member is then asked itself: ``STATUS`` for whether it is serving, ``DBSIZE``
for its keys, and its own ``MEMBERS`` for its links to the others (how many
it dialled and how many dialled it, that are up), the writes its outboxes
hold for them and its largest replication lag (the age of the oldest write a
member has still to acknowledge). ``LAST HEARD`` is how long ago the node at
ADDR last heard from that member. A member that cannot be reached is shown
``down`` with why.

Exit status: 0 when every current member answered and is serving; 1 when
one is down, loading or refusing writes; 2 when the node at ADDR itself
could not be asked.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO, Dict, List, Optional, Tuple

from distkv.cli.client import ProtocolError, ReplyError, Value

if TYPE_CHECKING:
    from distkv.cli.main import Target

COLUMNS = ("ID", "ADDRESS", "STATE", "KEYS", "OUT", "IN", "OUTBOX", "LAG", "LAST HEARD")


def parse_members(text: bytes) -> List[Dict[str, str]]:
    """``MEMBERS``' lines (``member <id> key=value ...``) as dicts (with ``id``)."""
    rows = []
    for line in text.decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "member":
            continue
        row = {"id": words[1]}
        row.update(word.split("=", 1) for word in words[2:] if "=" in word)  # type: ignore[misc]
        rows.append(row)
    return rows


def split_address(address: str, default_host: str) -> Optional[Tuple[str, int]]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    return (host or default_host), int(port)


def _ask(target: Target, *requests: Tuple[str, ...]) -> List[Value]:
    with target.connect(timeout=5.0) as conn:
        replies = conn.pipeline(requests)
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise ProtocolError(str(reply))
    return replies


def member_view(target: Target) -> Dict[str, str]:
    """What one member says of itself: state, keys, links, outbox, lag."""
    status, keys, members = _ask(target, ("STATUS",), ("DBSIZE",), ("MEMBERS",))
    lines = status.decode("utf-8", "replace").splitlines() if isinstance(status, bytes) else []
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    state = fields.get("state", "?")
    if fields.get("writes", "accepted") != "accepted":
        state += ", writes " + fields["writes"]
    rows = [row for row in parse_members(members if isinstance(members, bytes) else b"")
            if row.get("role") == "peer" and row.get("state") == "member"]
    out = sum(1 for row in rows if row.get("link_out") == "up")
    into = sum(1 for row in rows if row.get("link_in") == "up")
    return {
        "state": state,
        "keys": str(keys),
        "out": f"{out}/{len(rows)}",
        "in": f"{into}/{len(rows)}",
        "outbox": str(sum(int(row.get("outbox_writes", "0")) for row in rows)),
        "lag": "{}ms".format(max((int(row.get("lag_ms", "0")) for row in rows), default=0)),
    }


def show_cluster(target: Target, address: Optional[str], out: BinaryIO) -> int:
    if address is not None:
        where = split_address(address, target.host)
        if where is None:
            print(f"distkv: not an address (HOST:PORT): {address}", file=sys.stderr)
            return 2
        target = target.at(*where)
    try:
        (members,) = _ask(target, ("MEMBERS",))
    except (OSError, ProtocolError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"distkv: {target.address}: {why}", file=sys.stderr)
        return 2
    table: List[Tuple[str, ...]] = [COLUMNS]
    healthy = True
    for row in parse_members(members if isinstance(members, bytes) else b""):
        where = split_address(row.get("addr", "-"), target.host)
        heard = row.get("last_heard", "-") if row.get("role") != "myself" else "-"
        if row.get("state") != "member":
            table.append((row["id"], row.get("addr", "-"), row.get("state", "?"),
                          "-", "-", "-", "-", "-", heard))
            continue
        view: Dict[str, str]
        try:
            if where is None:
                raise ProtocolError("no address known")
            view = member_view(target.at(*where))
        except (OSError, ProtocolError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            view = {"state": f"down ({why})"}
        if view["state"] != "serving":
            healthy = False
        table.append((row["id"], row.get("addr", "-"), view["state"], view.get("keys", "-"),
                      view.get("out", "-"), view.get("in", "-"), view.get("outbox", "-"),
                      view.get("lag", "-"), heard))
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        text = "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        out.write(text.encode("utf-8") + b"\n")
    out.flush()
    return 0 if healthy else 1

