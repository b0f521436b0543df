"""Group commit: every change made in one reactor turn is committed together.

The :class:`Journal` listens to the store. Each change is queued (a key written
twice in one turn is written once), and one commit is scheduled for the end of
the current reactor turn, so a burst of pipelined writes from many clients
costs one transaction. Whoever must not answer before the data is on disk (a
client waiting for ``OK``, a peer waiting for its acknowledgement) asks
:meth:`Journal.durable` for the :class:`Batch` that holds everything changed
so far, and is told when it is committed. One Batch serves every write of a
turn: a write costs a list entry, not a Deferred of its own.

Each commit appends one row to the database's log (see :mod:`distkv.disk.datafile`).
Once the log has grown past both ``compact_bytes`` and the size of the last
snapshot, the journal writes a new snapshot of the store, a part per reactor
turn so that clients are served in between, switches to it, and then deletes
the log rows (and the older snapshot) it replaced, a few rows per turn: each
logged byte is rewritten at most about once, and a restart replays at most
about twice the data.

Once a second, when something was committed since the last time, the
journal calls :meth:`~distkv.disk.datafile.Disk.sync`: with ``--fsync everysec`` that
flushes SQLite's write-ahead log file to disk, and under every policy it
checkpoints that file into the database once it is large. On a reactor with
threads this runs in the thread pool, so its fsyncs never stall the reactor. A commit that fails (disk
full, file removed) is logged as critical; the writes waiting for it get an
error, never an ``OK``, and so does every later write, while reads go on.

A node that stops closes its journal last, but a client or peer connection
may still be open then and send a write: it changes the store in memory, and
nothing will ever commit it, so it is answered at once with an error
(:data:`CLOSED`), as a failed commit is; a peer is never acknowledged, and
keeps the write for the node's next start.
"""

from __future__ import annotations

import sqlite3
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorThreads
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv.cluster.membership import Member
from distkv.disk.datafile import SNAPSHOT_PART, SNAPSHOT_PART_BYTES, Disk, Row
from distkv.ops.latency import Latency
from distkv.store.entries import Entry
from distkv.store.hlc import HybridClock, Version
from distkv.store.store import Store

log = Logger()

#: What a write gets once the journal is closed.
CLOSED = "ERR write not persisted: the node is stopping"


class Batch:
    """The changes of one commit; tells its waiters once it is done.

    A waiter is called with None when the batch is committed, or with the
    error message (``ERR write not persisted: ...``) when it failed.
    """

    __slots__ = ("_waiters", "done", "error")

    def __init__(self, error: Optional[str] = None) -> None:
        self._waiters: List[Callable[[Optional[str]], object]] = []
        self.done = error is not None
        self.error = error

    def when_done(self, waiter: Callable[[Optional[str]], object]) -> None:
        if self.done:
            waiter(self.error)
        else:
            self._waiters.append(waiter)

    def finish(self, error: Optional[str]) -> None:
        self.done = True
        self.error = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter(error)


class Journal(Service):
    """Commits the store's changes to a :class:`~distkv.disk.datafile.Disk` in batches."""

    name = "journal"

    def __init__(
        self,
        disk: Disk,
        store: Store,
        clock: HybridClock,
        reactor: Any,
        compact_bytes: int = 16 << 20,
    ) -> None:
        self.disk = disk
        self._store = store
        self._clock = clock
        self._reactor = reactor
        self.compact_bytes = compact_bytes
        # What the clock was restored to is the saved mark (plus the one it adds).
        disk.saved_clock_ms = max(disk.saved_clock_ms, clock.high_water())
        #: Keys whose local write some peer has still to acknowledge, with its
        #: sequence number (the node supplies it from the outboxes); a snapshot
        #: keeps those numbers, so the outbox can be rebuilt after a restart.
        self.owed: Callable[[], Dict[bytes, int]] = dict
        self._snapshot: Optional[_Snapshot] = None
        self._compact_after = 0
        self.snapshots = 0
        self._rows: Dict[bytes, Row] = {}
        self._purged: List[Tuple[bytes, Version]] = []
        self._peers: Dict[str, Tuple[str, int, Optional[str]]] = {}
        self._forget: List[str] = []
        self._batch: Optional[Batch] = None
        self._call: Optional[IDelayedCall] = None
        self._sync_loop: Optional[LoopingCall] = None
        self._unsynced = False
        self._syncing = False
        self._sync_done: Optional[Deferred[None]] = None
        self.closed = False
        self.failure: Optional[str] = None
        #: Node id -> the highest sequence number of its own writes applied
        #: here (see Node.applied): saved once a second when it moved.
        self.seen: Dict[str, int] = disk.seen()
        self._seen_moved = False
        self.commits = 0
        self.rows_written = 0
        #: How long each commit's transaction took (the metrics' commit
        #: latency), timed with ``timer``.
        self.commit_latency = Latency()
        self.timer: Callable[[], float] = perf_counter
        # When the oldest commit not yet flushed (--fsync everysec) was
        # made: waiting for the next flush, and in the flush running now.
        self._unflushed_since: Optional[float] = None
        self._flushing_since: Optional[float] = None
        store.subscribe(self._changed)
        store.on_purge(self._gone)

    @property
    def snapshot_running(self) -> bool:
        """True while a snapshot is being written."""
        return self._snapshot is not None

    def _changed(self, key: bytes, entry: Entry, seq: int) -> None:
        self._rows[key] = (seq, key, entry)
        if self._call is None:
            self._schedule()

    def _gone(self, purged: List[Tuple[bytes, Version]]) -> None:
        self._purged.extend(purged)
        self._schedule()

    def peer_acked(self, address: str, acked: int, node: Optional[str]) -> None:
        """Remember what a peer acknowledged; saved with the next commit.

        Not worth a commit of its own: if it is lost in a crash, the peer is
        sent those writes again and merges the duplicates harmlessly.
        """
        self._peers[address] = (address, acked, node)

    def forget_peer(self, address: str) -> None:
        """``address`` turned out to be this node: keep no outbox state for it."""
        self._peers.pop(address, None)
        self._forget.append(address)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.closed:
            self._call = self._reactor.callLater(0, self.commit)

    def durable(self) -> Optional[Batch]:
        """None when everything changed so far is committed, else the batch
        whose commit will hold it (already failed once commits fail, or once
        the journal is closed: no commit will come)."""
        if self.failure is not None:
            return Batch(self.failure)
        if not self._rows and not self._purged:
            return None
        if self.closed:
            return Batch(CLOSED)
        batch = self._batch
        if batch is None:
            batch = self._batch = Batch()
        return batch

    def commit(self) -> None:
        """Write everything queued in one transaction and release its waiters."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.closed or self.failure is not None:
            return
        rows, self._rows = self._rows, {}
        purged, self._purged = self._purged, []
        peers, self._peers = self._peers, {}
        forget, self._forget = self._forget, []
        batch, self._batch = self._batch, None
        began = self.timer()
        try:
            self.disk.commit(
                rows.values(),
                purged,
                peers.values(),
                self._clock.high_water(),
                self._store.seq,
                forget,
                self._store.horizon,
            )
        except Exception as e:  # sqlite3.Error, or anything that kept the batch from disk
            self.failure = f"ERR write not persisted: {e}"
            log.critical(
                "Cannot commit to {path}: {why}; refusing writes from now on",
                path=self.disk.path,
                why=str(e),
            )
            if batch is not None:
                batch.finish(self.failure)
            return
        self.commit_latency.observe(self.timer() - began)
        self.commits += 1
        self.rows_written += len(rows)
        if self._unflushed_since is None and self.disk.fsync == "everysec":
            self._unflushed_since = self._reactor.seconds()
        self._unsynced = True
        if batch is not None:
            batch.finish(None)
        disk = self.disk
        if (
            self._snapshot is None
            and disk.log_bytes > max(self.compact_bytes, disk.snapshot_bytes, self._compact_after)
        ):
            self._start_snapshot()

    def _start_snapshot(self) -> None:
        """Copy the store's entries (cheap: references) and write them out, a
        part per reactor turn. What changes meanwhile is in later log rows."""
        try:
            generation, covers = self.disk.start_snapshot()
        except sqlite3.Error as e:
            self._snapshot_failed(e, None)
            return
        self._snapshot = _Snapshot(generation, covers, self._store.items(), self.owed())
        self._reactor.callLater(0, self._snapshot_step)

    def _snapshot_step(self) -> None:
        snapshot = self._snapshot
        if snapshot is None or self.closed or self.failure is not None:
            self._snapshot = None
            return
        items = snapshot.items
        owed = snapshot.owed
        node = self._clock.node
        # A part holds up to SNAPSHOT_PART entries, fewer once it passes
        # SNAPSHOT_PART_BYTES (large values), and at least one.
        rows: List[Row] = []
        size = 0
        position = snapshot.position
        end = min(len(items), position + SNAPSHOT_PART)
        while position < end and (size < SNAPSHOT_PART_BYTES or not rows):
            key, entry = items[position]
            position += 1
            # Only our own writes carry a sequence number (a peer's write that
            # replaced one of ours still owed is not ours to resend).
            seq = owed.get(key, 0) if entry[-1] == node else 0  # entry[-1]: its node
            rows.append((seq, key, entry))
            size += len(key) + len(entry[0] or b"")
        snapshot.position = position
        try:
            if rows:
                snapshot.size += self.disk.write_snapshot_part(snapshot.generation, snapshot.part, rows)
                snapshot.part += 1
            if position < len(items):
                self._reactor.callLater(0, self._snapshot_step)
                return
            self.disk.finish_snapshot(snapshot.generation, snapshot.covers, snapshot.size)
        except sqlite3.Error as e:
            self._snapshot_failed(e, snapshot.generation)
            return
        self._snapshot = None
        self._compact_after = 0
        self.snapshots += 1
        self._collect()
        log.info(
            "Snapshot {generation} written: {count} entries, {size} bytes; log compacted",
            generation=snapshot.generation,
            count=len(items),
            size=snapshot.size,
        )

    def _collect(self) -> None:
        """Delete what the snapshot replaced, a few rows per reactor turn."""
        if self.closed:
            return
        try:
            more = self.disk.collect_garbage()
        except sqlite3.Error as e:
            log.error("Cannot delete replaced data from {path}: {why}", path=self.disk.path, why=str(e))
            return
        if more:
            self._reactor.callLater(0, self._collect)

    def _snapshot_failed(self, error: sqlite3.Error, generation: Optional[int]) -> None:
        # The previous snapshot and the whole log stay in charge; try again
        # once the log has grown by as much again.
        self._snapshot = None
        self._compact_after = self.disk.log_bytes + max(self.compact_bytes, self.disk.snapshot_bytes)
        log.error("Cannot write a snapshot to {path}: {why}", path=self.disk.path, why=str(error))
        if generation is not None:
            try:
                self.disk.drop_snapshot(generation)  # give the space back
            except sqlite3.Error:
                pass

    def note_seen(self, node: str, seq: int) -> None:
        """``node``'s writes up to ``seq`` are applied and committed here."""
        if seq > self.seen.get(node, 0):
            self.seen[node] = seq
            self._seen_moved = True

    def save_members(self, entries: Sequence[Member]) -> None:
        """Keep the member list now: it changes rarely, and a restart must
        find every member learned at run time."""
        if self.closed or self.failure is not None:
            return
        try:
            self.disk.save_members(entries)
        except sqlite3.Error as e:
            log.error("Cannot save the member list to {path}: {why}", path=self.disk.path,
                      why=str(e))
            return
        self._unsynced = True

    def save_floor(self, floor: Version) -> None:
        """Keep a new flush floor now, before the entries below it are
        forgotten: a node that cannot keep it refuses writes from then on,
        as after a failed commit (the flush's own deletions would fail too)."""
        if self.closed or self.failure is not None:
            return
        try:
            self.disk.save_floor(floor)
        except sqlite3.Error as e:
            self.failure = f"ERR write not persisted: {e}"
            log.critical("Cannot save the flush floor to {path}: {why}; refusing writes "
                         "from now on", path=self.disk.path, why=str(e))
            return
        self._unsynced = True

    def _save_clock(self) -> None:
        """Heartbeats move the clock without any write; keep its mark on disk
        anyway, so that after a crash the node never stamps below a version
        it had seen (a commit carries the mark too, so this writes only on a
        node whose clock moved while it took no writes). The stable horizon
        likewise rises on heartbeats that purge nothing: saved here too, so
        a restart does not start it from zero."""
        mark = self._clock.high_water()
        horizon = self._store.horizon
        disk = self.disk
        seen_moved = self._seen_moved
        if (self._rows or self._purged) and not seen_moved:
            return  # the commit about to run saves both
        if mark <= disk.saved_clock_ms and horizon <= disk.saved_horizon and not seen_moved:
            return
        try:
            disk.save_marks(mark, self._store.seq, horizon, self.seen if seen_moved else None)
            self._seen_moved = False
        except sqlite3.Error as e:
            log.error("Cannot save the clock to {path}: {why}", path=self.disk.path, why=str(e))
            return
        self._unsynced = True

    def _sync(self) -> None:
        if self.closed or self.failure is not None:
            return
        self._save_clock()
        if self._syncing or not self._unsynced:
            return
        self._unsynced = False
        if self._flushing_since is None:
            self._flushing_since = self._unflushed_since
        self._unflushed_since = None
        if not IReactorThreads.providedBy(self._reactor):
            try:  # a fake clock in tests: inline
                self._checkpoint()
            except OSError as e:
                self._flush_failed(e)
            else:
                self._flushing_since = None
            return
        self._syncing = True
        done = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._checkpoint)
        self._sync_done = done
        done.addBoth(self._synced)

    def _checkpoint(self) -> None:
        """Flush and maybe checkpoint (see Disk.sync); an OSError (the fsync
        failed) is raised to the caller."""
        try:
            self.disk.sync()
        except sqlite3.Error as e:
            log.error("Cannot checkpoint {path}: {why}", path=self.disk.path, why=str(e))

    def _synced(self, result: object) -> None:
        self._syncing = False
        self._sync_done = None
        if isinstance(result, Failure):
            error = result.value
            self._flush_failed(error if isinstance(error, Exception) else Exception(str(error)))
        else:
            self._flushing_since = None

    def unflushed_age(self) -> float:
        """Seconds the oldest commit not yet flushed to disk has waited (0:
        every commit is; ``--fsync always`` flushes in the commit itself, and
        ``no`` leaves flushing to the operating system, so always 0 there)."""
        waiting = [t for t in (self._flushing_since, self._unflushed_since) if t is not None]
        return max(0.0, self._reactor.seconds() - min(waiting)) if waiting else 0.0

    def _flush_failed(self, error: Exception) -> None:
        """The data could not be flushed to disk: what was acknowledged may be
        lost in a power cut, and later writes could be too. Refuse writes
        from now on, as Redis does after a failed fsync of its append-only file."""
        self.failure = f"ERR write not persisted: cannot flush to disk: {error}"
        log.critical(
            "Cannot flush {path} to disk: {why}; refusing writes from now on",
            path=self.disk.path,
            why=str(error),
        )

    def startService(self) -> None:
        super().startService()
        # Every policy: checkpoints keep SQLite's write-ahead log from growing.
        loop = LoopingCall(self._sync)
        loop.clock = self._reactor
        self._sync_loop = loop
        loop.start(1.0, now=False)
        self._collect()  # what a snapshot replaced before the last stop

    def abandon(self) -> None:
        """Close without committing what is queued, as a killed process would
        (nothing more to do once closed: a node killed after it stopped)."""
        if self.closed:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        if self._sync_loop is not None and self._sync_loop.running:
            self._sync_loop.stop()
        self.running = False
        self.closed = True
        self.disk.close()

    def stopService(self) -> Optional[Deferred[None]]:  # type: ignore[override]
        """Commit what is queued, then close the database (once a checkpoint
        still running in a thread has finished)."""
        super().stopService()
        if self._sync_loop is not None and self._sync_loop.running:
            self._sync_loop.stop()
        self.commit()
        self.closed = True
        running = self._sync_done
        if running is not None:
            return running.addBoth(lambda _: self._close_disk())
        self._close_disk()
        return None

    def _close_disk(self) -> None:
        try:
            self.disk.close()
        except sqlite3.Error as e:
            log.error("Closing {path} failed: {why}", path=self.disk.path, why=str(e))


class _Snapshot:
    """A snapshot being written: the entries as they were, and how far it got."""

    __slots__ = ("covers", "generation", "items", "owed", "part", "position", "size")

    def __init__(
        self, generation: int, covers: int, items: List[Tuple[bytes, Entry]], owed: Dict[bytes, int]
    ) -> None:
        self.generation = generation
        self.covers = covers
        self.items = items
        self.owed = owed
        self.part = 0
        self.position = 0
        self.size = 0
