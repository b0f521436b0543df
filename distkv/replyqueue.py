"""Replies in request order when some of them must wait.

A write on a node with a data dir is answered only once its commit is done,
so its reply is a Deferred. Every front end (text and RESP) must still answer
in request order: a reply that is ready waits behind an earlier one that is
not. :class:`ReplyQueue` holds those replies until they can go, and knows when
a connection that asked to close (``QUIT``, a half-close, an error) has been
sent everything it is owed.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, List

from twisted.internet.defer import Deferred


class ReplyQueue:
    """Slots for replies still owed, oldest first.

    ``send`` writes bytes to the client, ``encode`` turns a reply into bytes,
    ``close`` hangs up; it is called once every owed reply has been sent.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        encode: Callable[[Any], bytes],
        close: Callable[[], None],
    ) -> None:
        self._send = send
        self._encode = encode
        self._close = close
        # Each slot: [bytes, or None until the reply is ready; close after it]
        self._slots: Deque[List[Any]] = deque()
        self._close_when_empty = False

    def __bool__(self) -> bool:
        """True while some reply is still owed."""
        return bool(self._slots)

    def wait_for(self, outcome: Deferred[Any]) -> None:
        slot: List[Any] = [None, False]
        self._slots.append(slot)
        outcome.addCallback(self._ready, slot)

    def then(self, data: bytes, close: bool = False) -> None:
        """Bytes that are ready but must wait behind the replies still owed."""
        self._slots.append([data, close])

    def close_when_sent(self) -> None:
        """Hang up once everything owed is out (now, if nothing is)."""
        if self._slots:
            self._close_when_empty = True
        else:
            self._close()

    def _ready(self, reply: Any, slot: List[Any]) -> None:
        slot[0] = self._encode(reply)
        slots = self._slots
        ready: List[bytes] = []
        close = False
        while slots and slots[0][0] is not None:
            data, close = slots.popleft()
            ready.append(data)
            if close:
                slots.clear()
                break
        if ready:
            self._send(b"".join(ready))
        if close or (not slots and self._close_when_empty):
            self._close()

