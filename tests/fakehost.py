"""A stand-in for the node behind a peer connection, for protocol tests over
``StringTransport``: it admits every caller and records what it is told."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple, Union

from distkv.cluster import wire
from distkv.cluster.handshake import PeerAuth
from distkv.cluster.membership import Member
from distkv.disk.journal import Batch
from distkv.store.entries import Entry
from distkv.store.hlc import Version

ME = wire.Hello("me", "1")


class FakeHost:
    """Implements :class:`distkv.cluster.peerproto.PeerHost`; ``durable`` may be replaced."""

    def __init__(self, me: wire.Hello = ME, secret: Optional[bytes] = None) -> None:
        self.me = me
        self.peer_auth = PeerAuth(secret, me.node, lambda: 0.0)
        self.applied_writes: List[Tuple[bytes, Entry]] = []
        self.acknowledged: List[Tuple[str, int]] = []
        self.syncs: List[Tuple[str, Optional[Version], bool]] = []
        self.heartbeats: List[Tuple[str, Version, Version]] = []
        self.callers: List[wire.Greeting] = []
        self.refusal: Optional[Tuple[str, str]] = None
        self.answer_bytes = b""
        self.clock_ms = 1_700_000_000_000
        self.ahead: List[Tuple[str, int]] = []
        self.member_lists: List[Tuple[str, Tuple[Member, ...]]] = []
        self.floors: List[Tuple[str, Version]] = []
        self.floor: Optional[Version] = None

    def vet(self, caller: wire.Greeting) -> Union[wire.Accept, Tuple[str, str]]:
        if self.refusal is not None:
            return self.refusal
        return wire.Accept(self.me, 0, True)

    def accepted(self, proto: Any, caller: wire.Greeting, host: str) -> None:
        self.callers.append(caller)

    def apply(self, key: bytes, entry: Entry) -> object:
        self.applied_writes.append((key, entry))
        return None

    def apply_all(self, writes: List[Tuple[bytes, Entry]]) -> object:
        self.applied_writes.extend(writes)
        return None

    def applied(self, remote: wire.Hello, seq: int) -> None:
        self.acknowledged.append((remote.node, seq))

    def answer(self, offer: wire.DigestOffer) -> Iterator[bytes]:
        return iter([self.answer_bytes])

    def synced(self, remote: wire.Hello, mark: wire.RoundMark) -> None:
        self.syncs.append((remote.node, mark.horizon, mark.serving))

    def durable(self) -> Optional[Batch]:
        return None

    def heard(self, remote: wire.Hello, floor: Version, low: Version) -> None:
        self.heartbeats.append((remote.node, floor, low))

    def wall_ms(self) -> int:
        return self.clock_ms

    def clock_reading(self, remote: wire.Hello, sent_ms: int, reading_ms: int) -> None:
        self.ahead.append((remote.node, sent_ms - reading_ms))

    def member_frame(self) -> bytes:
        return wire.encode_members(())

    def members_heard(self, remote: wire.Hello, entries: Tuple[Member, ...]) -> None:
        self.member_lists.append((remote.node, entries))

    def flush_frame(self) -> bytes:
        return b"" if self.floor is None else wire.encode_flush(self.floor)

    def flush_heard(self, remote: wire.Hello, floor: Version) -> None:
        self.floors.append((remote.node, floor))
