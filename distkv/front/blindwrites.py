"""Blind writes at a write level (``QUORUM``, ``ALL``) in one round trip.

A blind write of one key (``SET`` without options that read, ``SETEX``,
``PSETEX``, an ``MSET`` of one key) must be stamped above every write acknowledged before it began,
which another node may have made with a clock ahead of this one's: so the
entries its keys have on the write level's members are fetched (see
:mod:`distkv.front.levelcmds`). Rather than fetch first and then run (two
round trips to the members), :func:`run` runs the write at once and fetches
alongside its replication, then writes again only in the rare case the
fetch shows a newer entry; why that keeps every promise is in its
docstring. A connection's blind writes settle (decide whether to run again)
in the order it sent them, whatever order their fetches answer in, and a
later command of the connection that fetches first runs only once they all
have (:func:`after_settled`): so its commands take effect in order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional, Sequence

from twisted.logger import Logger

from distkv.front.replcmds import Later
from distkv.front.replies import Error, Session
from distkv.store.entries import Entry, version_of
from distkv.store.hlc import Version

if TYPE_CHECKING:
    from distkv.front.commands import Command, Outcome
    from distkv.front.levelcmds import Levels

log = Logger()


class Blind(Later):
    """A blind write's reply, and how its fetch settled."""

    __slots__ = ("answered", "fetch_error", "settle", "then")

    def __init__(self) -> None:
        super().__init__()
        #: Its fetch answered (``fetch_error``: how it failed, if it did;
        #: ``error``, a Batch's, is how the write itself ended).
        self.answered = False
        self.fetch_error: Optional[str] = None
        #: Decides, once the connection's earlier blind writes have, whether
        #: it runs again.
        self.settle: Callable[[Optional[str]], None] = _ignore
        #: Called once it has settled (commands of the connection behind it).
        self.then: Optional[List[Callable[[], None]]] = None


def after_settled(session: Session, call: Callable[[], None]) -> None:
    """Call ``call`` once every blind write ``session`` made so far has
    settled (now, if none is out): a command that fetched first runs after
    them, so it is not overwritten by one of them running again."""
    queue = session.settling
    if not queue:
        call()
        return
    last = queue[-1]
    if last.then is None:
        last.then = [call]
    else:
        last.then.append(call)


def _drain(queue: Deque[Blind]) -> None:
    """Settle the blind writes whose fetch answered, oldest first, up to the
    first still out. A step that raises is logged and ends its own write
    with an indeterminate error: the others still settle, and what waits
    behind them still runs (else the connection would wait for ever)."""
    while queue and queue[0].answered:
        blind = queue.popleft()
        try:
            blind.settle(blind.fetch_error)
        except Exception:
            log.failure("Settling a blind write failed")
            if not blind.done:
                blind.done_with(Error(failed("settling the write")))
        then, blind.then = blind.then, None
        for call in then or ():
            try:
                call()
            except Exception:
                log.failure("A command waiting for blind writes to settle failed")


def run(levels: Levels, command: Command, request: Sequence[bytes], session: Session,
        write: str, keys: Sequence[bytes], fetch: str, what: str, deadline: float) -> Outcome:
    """A blind write at a write level, in one round trip rather than two:
    it runs now, and the versions its keys have on the fetch level's
    members are asked for as it is replicated (no write-back: see
    :meth:`~distkv.cluster.quorum.Coordinator.read`). When a member answered a newer version of
    a key than the one just written (a node whose clock is ahead wrote
    it), the write runs again, stamped above what was fetched, and its
    answer waits for that one's level; unless later writes here to that
    key come after it: a later blind write whose fetch is out (it orders
    itself the same way, so the last one run is the one that stays: a
    pipeline keeps its order) or one already stamped above the fetched
    entry, and then it answers once those are on their members too.

    Why this keeps the promise: a write acknowledged before this one
    began is on a quorum of the write level's members; the fetch asks a
    quorum of the fetch level's (at least as strong), so one member in
    both answers with that write or a newer entry, merged here. The
    reply waits for the fetch, so what is on enough members when it
    answers is above that entry: the first run, when it already was;
    else the second run, or the later writes, stamped above every
    entry held here. The first run's entry, if it lost, is an
    unacknowledged write that a newer entry beats on every member: no
    read can return it after one that returned the newer. Acknowledged
    still means applied and committed on that many members."""
    store = levels.dispatcher.store
    coordinator = levels.coordinator
    assert coordinator is not None
    seq = store.seq
    outcome = levels._then_write(command, request, session, write, deadline)
    if store.seq == seq:
        return outcome  # wrote nothing (an error): nothing to order
    wrote = {key: _version(store.entry(key)) for key in keys}
    seen: Dict[bytes, Version] = {}
    later = Blind()
    latest = levels._latest
    for key in keys:
        latest[key] = later
    me = store.clock.node
    if session.settling is None:
        session.settling = deque()
    queue: Deque[Blind] = session.settling
    queue.append(later)

    def fetched(error: Optional[str]) -> None:
        followers = {}
        for key in keys:
            follower = latest.get(key)
            if follower is later:
                del latest[key]
            elif follower is not None:
                followers[key] = follower
        beaten = [key for key, mine in wrote.items()
                  if key in seen and (mine is None or seen[key] > mine)]
        if error is not None:
            # Without the members' entries it cannot know it is above what
            # they hold: once on its members (or failing to be), it answers
            # that its outcome is indeterminate, never OK.
            ran = Later()
            levels._finish(outcome, ran)

            def unknown(_: Optional[str]) -> None:
                if not isinstance(ran.reply, Error):
                    assert coordinator is not None
                    coordinator.writes_indeterminate += 1
                    ran.reply = Error(unfetched(write))
                later.done_with(ran.reply)

            ran.when_done(unknown)
            return
        if not beaten:  # ours is the newest
            levels._finish(outcome, later)
            return
        after = {key for key in beaten if key in followers}
        if len(after) == len(beaten):
            # Later writes here to those keys, which run after this one,
            # are ordered above the fetched entries as this one would be:
            # answered once the last of them is.
            waits = list({id(f): f for f in followers.values()}.values())
            _after(levels, outcome, waits, later, write)
            return
        for key in beaten:
            version = _version(store.entry(key))
            if key not in after and not (version is not None and version > seen[key]
                                          and version[2] == me):
                # Written again, above every entry held here.
                levels._finish(levels._then_write(command, request, session, write,
                                              deadline), later)
                return
        # Later writes of ours beat the fetched entries: once they are
        # on enough members (and any later blind writes answered).
        done = Later()
        coordinator.write(store.seq, write, None, lambda error: done.done_with(
            Error(error) if error is not None else later.reply), deadline)
        _after(levels, outcome, [done] + list({id(f): f for f in followers.values()}.values()),
               later, write)

    def answered(error: Optional[str]) -> None:
        later.answered = True
        later.fetch_error = error
        _drain(queue)

    later.settle = fetched
    coordinator.read(keys, fetch, answered, what, repair=False, seen=seen, wait=True)
    from distkv.front.commands import Pending  # commands imports levelcmds, which imports this

    return Pending(later, later.reply)


def _after(levels: Levels, outcome: Outcome, waits: List[Later], later: Later,
           write: str) -> None:
    """Finish ``later`` with ``outcome`` once every one of ``waits`` is
    done, or with the first of their errors. A later blind write whose
    fetch failed ran without knowing the newer entry this one's fetch
    found, so it may be below it: this one was then not ordered above that
    entry, and answers that its outcome is indeterminate."""
    if not waits:
        levels._finish(outcome, later)
        return
    first, rest = waits[0], waits[1:]

    def then(error: Optional[str]) -> None:
        # A blind write is done only once settled: its fetch has answered.
        if isinstance(first, Blind) and first.fetch_error is not None:
            coordinator = levels.coordinator
            assert coordinator is not None
            coordinator.writes_indeterminate += 1
            later.done_with(Error(unordered(write)))
        elif isinstance(first.reply, Error):
            later.done_with(first.reply)
        else:
            _after(levels, outcome, rest, later, write)

    first.when_done(then)


def failed(doing: str) -> str:
    """The error of a write at a level that failed for want of a bug fix."""
    return (f"ERR internal error {doing} (see the node's log); outcome indeterminate: "
            "it may have been applied on this node and may still reach the others")


def unordered(write: str) -> str:
    """The error of a blind write left below a newer entry a member holds."""
    return (f"TIMEOUT write at {write} could not be ordered above a newer entry a member "
            "holds (the later write of the key that was to order it could not fetch its "
            "members' versions); outcome indeterminate: it was applied on this node and "
            "may still reach the others")


def unfetched(write: str) -> str:
    """The error of a blind write that could not fetch its members' entries."""
    return (f"TIMEOUT write at {write} could not fetch its members' entries of its keys "
            "(too few answered), so it may be below a newer one; outcome indeterminate: it "
            "was applied on this node and may still reach the others")


def _ignore(error: Optional[str]) -> None:
    pass


def _version(entry: Optional[Entry]) -> Optional[Version]:
    return None if entry is None else version_of(entry)
