"""The node's SQLite file: what survives a restart. Plain ``sqlite3``, no reactor.

One database per data directory, in WAL mode::

    meta(name, value)            format version, node id, clock high-water mark,
                                 the last local write sequence number, the
                                 stable horizon, and which snapshot generation
                                 holds the data up to which log row
    log(id, writes, forgets, clock_ms, seq)
                                 one row per group commit: every entry written in
                                 it, every entry forgotten (purged tombstones,
                                 dead keys), and the clock's high-water mark and
                                 the last local sequence number at that commit
    snapshot(generation, part, writes)
                                 the whole store as it was at one moment, in
                                 parts of a few thousand entries
    peers(address, acked, node)  per peer: our highest write it acknowledged

``meta`` also keeps what this node has seen of each peer's writes (``seen``)
and the member list (``members``: each node id's state, versions and
advertised address, see :mod:`distkv.cluster.membership`), saved whenever it
changes, so a restarted node dials the members it learned while it ran.

The data is log-structured, as in Redis's append-only file: a commit appends
one row holding its entries, encoded as the peer protocol's ``W`` frames (see
:mod:`distkv.cluster.wire`; the key, the value or tombstone, the version, and the
local write sequence number, 0 for a write merged from a peer), and its
forgotten entries as one ``K`` frame. Appending one row per commit, instead of
updating one row per key, is what keeps persistence cheap: a keyed table cost
an index lookup and a B-tree insert per write, on the reactor thread. Once the
log outgrows the snapshot, the journal writes a new snapshot generation from
memory, part by part, then switches to it in one small transaction
(:meth:`Disk.finish_snapshot`); a crash before that leaves the old generation
and the whole log in charge. What the switch replaced is deleted afterwards,
a little per reactor turn (:meth:`Disk.collect_garbage`), since freeing it all
at once would stall the node. Loading replays the current snapshot, then the
log rows after it, and skips the rest.

The stable horizon (see :mod:`distkv.cluster.stability`) is kept in ``meta`` too,
saved with the commit that purged below it (or, when it rose with nothing to
purge, with the clock's mark), and put back into the store on load. It only
rises, and it is what makes a restarted node refuse, and its peers drop, what
is left of a delete purged before the restart (a value held by a node that
comes back from an older copy of its data dir); starting from zero, the
whole cluster would take such a value back after a restart.

The per-peer outbox is not stored twice: after a restart it is rebuilt from
this node's own writes (those with a sequence number) above what that peer
acknowledged and not overwritten since. A snapshot keeps the sequence number
of an entry that some peer has still to acknowledge.

Anything wrong with the file (not a database, corrupt, another format, another
node's data) raises :class:`DiskError` with a message for the operator. A data
dir of format 1 (one row per key, DistKV before the log) is converted on open,
and one of format 2 (the log without its clock and sequence columns) is given
them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing, contextmanager
from typing import (
    Any,
    Collection,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from distkv.cluster import wire
from distkv.cluster.membership import HOST, STATES, Member
from distkv.disk.dirlock import DirLock, LockedError
from distkv.store.entries import ZERO, Entry
from distkv.store.hlc import Version

#: 4: a write may carry an expiry (the ``W`` frame's flag 2); 5: a write may
#: be a counter's state (flag 4); 6: a counter slot's total may be a fraction
#: (INCRBYFLOAT's). A format 3, 4 or 5 file is read as it is and marked 6, so
#: a DistKV that could not read its counters refuses it.
FORMAT = "6"
FILENAME = "distkv.sqlite3"

#: What each ``--fsync`` policy sets SQLite's ``synchronous`` pragma to. In WAL
#: mode: FULL syncs the write-ahead log at every commit; NORMAL syncs it only
#: when it is checkpointed, and ``everysec`` has :meth:`Disk.sync` flush it
#: every second; OFF leaves it to the operating system. All three survive a
#: crash of the process.
SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    writes BLOB NOT NULL,
    forgets BLOB,
    clock_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    generation INTEGER NOT NULL,
    part INTEGER NOT NULL,
    writes BLOB NOT NULL,
    PRIMARY KEY (generation, part)
);
CREATE TABLE IF NOT EXISTS peers (
    address TEXT PRIMARY KEY,
    acked INTEGER NOT NULL,
    node TEXT
);
"""

#: Larger than any record the node writes (a value is bounded by --max-request).
_MAX_RECORD = 1 << 31

#: Replaced log rows deleted per reactor turn after a snapshot, at most, and
#: about how many of their bytes (at least one row).
GARBAGE_ROWS = 64
GARBAGE_BYTES = 4 << 20

class Loader(Protocol):
    """What :meth:`Disk.load` fills: a :class:`~distkv.store.store.Store`."""

    def load(self, key: bytes, entry: Entry, seq: int = 0) -> None: ...

    def load_many(self, records: Iterable[Row]) -> int: ...

    def load_columns(self, seqs: Sequence[int], keys: Sequence[bytes],
                     entries: Sequence[Entry]) -> int: ...

    def unload(self, key: bytes, version: Version) -> None: ...

    def entry(self, key: bytes) -> Optional[Entry]: ...

    def restore_horizon(self, horizon: Version) -> None: ...


#: One entry to write: ``(seq, key, entry)``, seq 0 for a write merged from a peer.
Row = Tuple[int, bytes, Entry]


class DiskError(Exception):
    """The data directory cannot be used; the message says why and where."""


class Loaded(NamedTuple):
    """What :meth:`Disk.load` read back."""

    #: Entries read (snapshot and log, a key counted each time it appears).
    entries: int
    clock_ms: int
    #: The highest local write sequence number ever handed out.
    seq: int
    #: This node's own writes, ``(seq, key, entry)``, oldest first, above the
    #: lowest sequence number some peer has not acknowledged.
    unacked: List[Tuple[int, bytes, Entry]]
    #: The stable horizon saved last (already put back into the store).
    horizon: Version = ZERO


class PeerState(NamedTuple):
    acked: int
    node: Optional[str]


def encode_rows(rows: Iterable[Row]) -> bytes:
    """Entries as the records of a log row or snapshot part."""
    encode = wire.encode_write
    return b"".join([encode(seq, key, entry) for seq, key, entry in rows])


class Disk:
    """The SQLite database in ``directory``, opened with the ``fsync`` policy."""

    def __init__(self, directory: str, fsync: str = "everysec") -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self.fsync = fsync
        #: Bytes in the log since the current snapshot, and in that snapshot.
        self.log_bytes = 0
        self.snapshot_bytes = 0
        #: The id of the last log row written.
        self.last_log = 0
        #: The highest clock mark known to be on disk (set by load and commits).
        self.saved_clock_ms = 0
        #: The stable horizon on disk (set by load, commits and save_marks).
        self.saved_horizon = ZERO
        self._generation = 0
        self._snapshot_log = 0
        self._format1 = False
        self._wal_entry_synced = False
        #: The generation of a snapshot being written, and the marks it covers.
        self._building: Optional[int] = None
        self._building_marks: Optional[Tuple[int, int]] = None
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise DiskError(f"cannot create data dir {directory}: {e.strerror}") from None
        try:
            # Held until close: a second process on this dir would take our node id.
            self._lock = DirLock(directory)
        except (LockedError, OSError) as e:
            raise DiskError(str(e)) from None
        self._closed = False
        self.fresh = not os.path.exists(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            self._lock.release()
            raise DiskError(f"cannot open {self.path}: {e}") from None
        try:
            self._open()
        except sqlite3.Error as e:
            self._db.close()
            self._lock.release()
            raise DiskError(f"{self.path} is unreadable or corrupt: {e}") from None
        except DiskError:
            self._db.close()
            self._lock.release()
            raise

    def _open(self) -> None:
        db = self._db
        mode = self._run("PRAGMA journal_mode=WAL")[0][0]
        if str(mode).lower() != "wal":
            raise DiskError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        self._run(f"PRAGMA synchronous={SYNCHRONOUS[self.fsync]}")
        # Checkpoints (copying the write-ahead log into the database, with
        # their fsyncs) are run from sync(), off the reactor thread, not by
        # whichever commit happens to cross SQLite's threshold. Once a
        # checkpoint has copied everything, the next commit starts the log file
        # over and cuts it back to this size, so its size tells sync() whether
        # another checkpoint is due.
        self._run("PRAGMA wal_autocheckpoint=0")
        self._run(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        self._checkpointer: Optional[sqlite3.Connection] = None
        db.executescript(_SCHEMA).close()
        found = self._meta("format")
        if found is None:
            self._run("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        elif found == "1":
            self._format1 = True  # converted by load()
        elif found == "2":
            # Format 2 (for a few commits) kept the clock mark and sequence
            # number only in meta: the log rows get the columns, as zero.
            with self._transaction():
                self._run("ALTER TABLE log ADD COLUMN clock_ms INTEGER NOT NULL DEFAULT 0")
                self._run("ALTER TABLE log ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
                self._set_meta(format=FORMAT)
        elif found in ("3", "4", "5"):
            with self._transaction():
                self._set_meta(format=FORMAT)
        elif found != FORMAT:
            raise DiskError(f"{self.path} has data format {found}; this DistKV reads {FORMAT}")
        self._generation = int(self._meta("snapshot") or 0)
        self._snapshot_log = int(self._meta("snapshot_log") or 0)
        self.last_log = max(self._snapshot_log, self._run("SELECT max(id) FROM log")[0][0] or 0)

    def _run(self, sql: str, params: Sequence[object] = ()) -> List[Any]:
        """Run one statement and close its cursor at once: PyPy's sqlite3 keeps
        an unclosed statement active until garbage collection, which makes a
        later COMMIT fail with "SQL statements in progress"."""
        cursor = self._db.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            cursor.close()

    def _run_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        cursor = self._db.cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, rolled back if anything in between raises."""
        self._run("BEGIN")
        try:
            yield
            self._run("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._run("ROLLBACK")
            raise

    def _meta(self, name: str) -> Optional[str]:
        rows = self._run("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def claim(self, wanted: Optional[str], generated: str) -> str:
        """The node id this data belongs to, recording it on first use.

        ``wanted`` is the id asked for on the command line; a data dir written
        by another node id is refused rather than served as if it were ours.
        """
        stored = self._meta("node_id")
        if stored is None:
            node = wanted or generated
            self._run("INSERT INTO meta VALUES ('node_id', ?)", (node,))
            return node
        if wanted is not None and wanted != stored:
            raise DiskError(
                f"data dir {self.directory} belongs to node id {stored}, not {wanted}; "
                f"start with --node-id {stored} or use another --data-dir"
            )
        return stored

    def peers(self) -> Dict[str, PeerState]:
        rows = self._run("SELECT address, acked, node FROM peers")
        return {address: PeerState(acked, node) for address, acked, node in rows}

    def load(self, into: Loader, unacked_above: Optional[int]) -> Loaded:
        """Replay the snapshot, then the log, into ``into``; collect this node's
        writes numbered above ``unacked_above`` (None: collect none) that are
        still what ``into`` holds.

        Reading everything also checks every page of it, so a corrupt file is
        found here, at start, and not halfway through serving.
        """
        steps = self.load_steps(into, unacked_above)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def load_size(self) -> int:
        """About how many bytes :meth:`load` reads: the current snapshot and
        the log rows after it (a loader's 100%)."""
        try:
            snapshot = self._run("SELECT sum(length(writes)) FROM snapshot WHERE generation = ?",
                                 (self._generation,))
            rows = self._run("SELECT sum(length(writes) + ifnull(length(forgets), 0)) FROM log "
                             "WHERE id > ?", (self._snapshot_log,))
        except sqlite3.Error:
            return 0  # load() says what is wrong
        return int(snapshot[0][0] or 0) + int(rows[0][0] or 0)

    def load_steps(self, into: Loader, unacked_above: Optional[int]
                   ) -> Generator[int, None, Loaded]:
        """:meth:`load` a record at a time (a snapshot part, a log row): yields
        the bytes read so far after each, and returns what load returns, so a
        node can serve between two records (see :mod:`distkv.disk.loader`)."""
        replay = _Replay(into, unacked_above)
        done = 0
        try:
            if self._format1:
                self._convert_format1()
            # Each cursor is closed explicitly when the caller gives up halfway
            # (closing this generator): PyPy would keep it open until garbage
            # collection, and the data dir could not be closed meanwhile.
            with closing(self._select(
                "SELECT writes FROM snapshot WHERE generation = ? ORDER BY part",
                (self._generation,),
            )) as parts:
                for (blob,) in parts:
                    self.snapshot_bytes += len(blob)
                    replay.writes(blob)
                    done += len(blob)
                    yield done
            clock = int(self._meta("clock_ms") or 0)
            seq = int(self._meta("seq") or 0)
            with closing(self._select(
                "SELECT writes, forgets, clock_ms, seq FROM log WHERE id > ? ORDER BY id",
                (self._snapshot_log,),
            )) as rows:
                for writes, forgets, clock_ms, last_seq in rows:
                    self.log_bytes += len(writes) + len(forgets or b"")
                    replay.writes(writes)
                    if forgets:
                        replay.forgets(forgets)
                    clock = max(clock, clock_ms)
                    seq = max(seq, last_seq)
                    done += len(writes) + len(forgets or b"")
                    yield done
        except sqlite3.Error as e:
            self._db.close()
            self._lock.release()
            raise DiskError(f"{self.path} is unreadable or corrupt: {e}") from None
        except wire.WireError as e:
            self._db.close()
            self._lock.release()
            raise DiskError(f"{self.path} holds a malformed record: {e}") from None
        horizon = self._saved_horizon()
        into.restore_horizon(horizon)
        self.saved_clock_ms = clock
        self.saved_horizon = horizon
        return Loaded(replay.count, clock, seq, replay.unacked(), horizon)

    def seen(self) -> Dict[str, int]:
        """Node id -> the highest sequence number of its own writes applied
        here, as last saved (see :meth:`distkv.node.Node.applied`)."""
        stored = self._meta("seen")
        if stored is None:
            return {}
        try:
            seen = json.loads(stored)
            if not isinstance(seen, dict) or not all(
                isinstance(node, str) and isinstance(seq, int) and seq >= 0
                for node, seq in seen.items()
            ):
                raise ValueError("not a map of node ids to sequence numbers")
        except ValueError:
            raise DiskError(f"{self.path} holds malformed peer sequence numbers "
                            f"{stored[:80]!r}") from None
        return seen

    def members(self) -> List[Member]:
        """The member list as last saved (see :mod:`distkv.cluster.membership`)."""
        stored = self._meta("members")
        if stored is None:
            return []
        try:
            rows = json.loads(stored)
            entries = []
            for node, state, version, host, port, address_version in rows:
                if not (wire.valid_node_id(node) and state in STATES
                        and isinstance(host, str) and HOST.match(host)
                        and isinstance(port, int) and 0 <= port < 65536):
                    raise ValueError("malformed member")
                entries.append(Member(node, state, _decode_version(version), host, port,
                                      _decode_version(address_version)))
        except (ValueError, TypeError):
            raise DiskError(f"{self.path} holds a malformed member list "
                            f"{stored[:80]!r}") from None
        return entries

    def save_members(self, entries: Sequence[Member]) -> None:
        """Keep the member list (raises ``sqlite3.Error``)."""
        rows = [[m.node, m.state, _encode_version(m.version), m.host, m.port,
                 _encode_version(m.address_version)] for m in entries]
        with self._transaction():
            self._set_meta(members=json.dumps(rows))

    def saved_floor(self) -> Version:
        """The flush floor last saved (see :meth:`distkv.store.store.Store.raise_floor`);
        ZERO if the node never learnt a flush. Read it back before :meth:`load`."""
        stored = self._meta("flushed")
        if stored is None:
            return ZERO
        try:
            ms, counter, node = stored.split(":", 2)
            return Version(int(ms), int(counter), node)
        except ValueError:
            raise DiskError(f"{self.path} holds a malformed flush floor {stored[:80]!r}") from None

    def save_floor(self, floor: Version) -> None:
        """Keep the flush floor ``floor`` now, in its own transaction (raises
        ``sqlite3.Error``): a restart must not read back what it flushed."""
        with self._transaction():
            self._set_meta(flushed=_encode_version(floor))

    def _saved_horizon(self) -> Version:
        stored = self._meta("horizon")
        if stored is None:
            return ZERO
        try:
            ms, counter, node = stored.split(":", 2)
            return Version(int(ms), int(counter), node)
        except ValueError:
            raise DiskError(f"{self.path} holds a malformed horizon {stored[:80]!r}") from None

    def _select(self, sql: str, params: Sequence[object] = ()) -> Generator[Any, None, None]:
        cursor = self._db.cursor()
        try:
            cursor.execute(sql, params)
            yield from cursor
        finally:
            cursor.close()

    def _convert_format1(self) -> None:
        """Turn the one-row-per-key table of format 1 into snapshot generation 1."""
        nodes: Dict[str, str] = {}
        with self._transaction():
            self._run("DELETE FROM snapshot")
            self._run("DELETE FROM log")
            rows: List[Row] = []
            size = part = 0
            for key, value, ms, counter, node, seq in self._select(
                "SELECT key, value, ms, counter, node, seq FROM entries"
            ):
                rows.append((seq or 0, bytes(key), (value, ms, counter, nodes.setdefault(node, node))))
                size += len(key) + len(value or b"")
                if len(rows) >= SNAPSHOT_PART or size >= SNAPSHOT_PART_BYTES:
                    self.write_snapshot_part(1, part, rows)
                    rows, size, part = [], 0, part + 1
            if rows:
                self.write_snapshot_part(1, part, rows)
            self._set_meta(snapshot="1", snapshot_log="0", format=FORMAT)
            self._run("DROP TABLE entries")
        self._format1 = False
        self._generation, self._snapshot_log, self.last_log = 1, 0, 0

    def _set_meta(self, **values: str) -> None:
        self._run_many("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def commit(
        self,
        rows: Iterable[Row],
        purged: Sequence[Tuple[bytes, Version]],
        peers: Collection[Tuple[str, int, Optional[str]]],
        clock_ms: int,
        seq: int,
        forget: Sequence[str] = (),
        horizon: Optional[Version] = None,
    ) -> None:
        """Append one batch as one log row, in one transaction (raises ``sqlite3.Error``).

        The clock's mark and the last sequence number ride in the row (a write
        loses its sequence number when a peer's write replaces it, so the
        highest number handed out is kept on its own): most commits are a
        single INSERT, with no other page to write. ``horizon``, the store's
        stable horizon, is saved in the same transaction when it rose (at
        most once a heartbeat): with the purge it allowed, never apart.
        """
        writes = encode_rows(rows)
        forgets = wire.encode_key_list(0, 0, purged) if purged else None
        # Numbered explicitly: SQLite would reuse the numbers of log rows a
        # snapshot dropped, and rows numbered below the snapshot are skipped.
        last = self.last_log + 1
        row = (last, writes, forgets, clock_ms, seq)
        risen = self._risen(horizon)
        if not peers and not forget and risen is None:
            self._run("INSERT INTO log VALUES (?, ?, ?, ?, ?)", row)  # its own transaction
        else:
            with self._transaction():
                self._run("INSERT INTO log VALUES (?, ?, ?, ?, ?)", row)
                if peers:
                    self._run_many("INSERT OR REPLACE INTO peers VALUES (?, ?, ?)", peers)
                if forget:
                    self._run_many("DELETE FROM peers WHERE address = ?", [(a,) for a in forget])
                if risen is not None:
                    self._set_meta(horizon=_encode_version(risen))
            if risen is not None:
                self.saved_horizon = risen
        self.last_log = last
        self.saved_clock_ms = max(self.saved_clock_ms, clock_ms)
        self.log_bytes += len(writes) + (len(forgets) if forgets else 0)

    def save_marks(self, clock_ms: int, seq: int, horizon: Optional[Version] = None,
                   seen: Optional[Dict[str, int]] = None) -> None:
        """Save the clock's mark and the sequence number (and ``horizon``, if
        it rose, and ``seen``, if given) without a log row."""
        marks = self._raised_marks(clock_ms, seq)
        risen = self._risen(horizon)
        if risen is not None:
            marks["horizon"] = _encode_version(risen)
        if seen is not None:
            marks["seen"] = json.dumps(seen, sort_keys=True)
        with self._transaction():
            self._set_meta(**marks)
        self.saved_clock_ms = max(self.saved_clock_ms, int(marks["clock_ms"]))
        if risen is not None:
            self.saved_horizon = risen

    def _risen(self, horizon: Optional[Version]) -> Optional[Version]:
        """``horizon`` if it is above the saved one (a horizon never goes back)."""
        return horizon if horizon is not None and horizon > self.saved_horizon else None

    def _raised_marks(self, clock_ms: int, seq: int) -> Dict[str, str]:
        """The meta values that keep the higher of the saved marks and these."""
        return {
            "clock_ms": str(max(clock_ms, int(self._meta("clock_ms") or 0))),
            "seq": str(max(seq, int(self._meta("seq") or 0))),
        }

    def start_snapshot(self) -> Tuple[int, int]:
        """Begin a new snapshot generation: ``(generation, last log row it covers)``.

        The number is above every generation in the table, so parts left by an
        interrupted snapshot never mix with the new one (they are garbage).
        """
        highest = self._run("SELECT max(generation) FROM snapshot")[0][0] or 0
        generation = max(highest, self._generation) + 1
        self._building = generation
        # Marks only grow, so the covered rows' highest are the last row's.
        marks = self._run("SELECT clock_ms, seq FROM log WHERE id = ?", (self.last_log,))
        self._building_marks = (int(marks[0][0]), int(marks[0][1])) if marks else None
        return generation, self.last_log

    def write_snapshot_part(self, generation: int, part: int, rows: Iterable[Row]) -> int:
        """Store one part of a snapshot in progress (its own transaction); returns its size."""
        blob = encode_rows(rows)
        self._run("INSERT INTO snapshot VALUES (?, ?, ?)", (generation, part, blob))
        return len(blob)

    def drop_snapshot(self, generation: int) -> None:
        """Give up a snapshot in progress; its parts become garbage."""
        if self._building == generation:
            self._building = None

    def finish_snapshot(self, generation: int, covers: int, size: int) -> None:
        """Make ``generation`` the snapshot, replacing the log rows up to
        ``covers``, atomically: a crash before this leaves the previous state
        whole. What it replaces is left for :meth:`collect_garbage` (loading
        skips it): deleting it here would free every page of it in this one
        transaction, a stall of the reactor on a large store."""
        # The marks of the log rows it replaces are kept in meta.
        marks = {} if self._building_marks is None else self._raised_marks(*self._building_marks)
        with self._transaction():
            self._set_meta(snapshot=str(generation), snapshot_log=str(covers), **marks)
            left = self._run(
                "SELECT sum(length(writes) + ifnull(length(forgets), 0)) FROM log WHERE id > ?",
                (covers,),
            )
        self._generation, self._snapshot_log = generation, covers
        self._building = None
        self.snapshot_bytes = size
        self.log_bytes = left[0][0] or 0

    def collect_garbage(self) -> bool:
        """Delete some of what the current snapshot replaced: log rows it
        covers, up to about GARBAGE_BYTES, or, once those are gone, one part of
        another generation (not one being built); True while some remain. Each
        call is its own short transaction."""
        rows = self._run(
            "SELECT id, length(writes) + ifnull(length(forgets), 0) FROM log "
            "WHERE id <= ? ORDER BY id LIMIT ?",
            (self._snapshot_log, GARBAGE_ROWS),
        )
        if rows:
            total = 0
            last = rows[0][0]
            for row_id, size in rows:
                if total and total + size > GARBAGE_BYTES:
                    break
                total += size
                last = row_id
            self._run("DELETE FROM log WHERE id <= ?", (last,))
            return True
        building = -1 if self._building is None else self._building
        cursor = self._db.cursor()
        try:
            cursor.execute(
                "DELETE FROM snapshot WHERE rowid IN (SELECT rowid FROM snapshot "
                "WHERE generation <> ? AND generation <> ? LIMIT 1)",
                (self._generation, building),
            )
            return cursor.rowcount > 0
        finally:
            cursor.close()

    def sync(self) -> None:
        """Make every commit so far survive a power cut (``everysec``), and
        checkpoint once the write-ahead log has grown past ``CHECKPOINT_BYTES``.

        With ``synchronous=NORMAL`` a commit is written to SQLite's log file
        but not flushed; flushing that one file is all ``everysec`` needs, as
        Redis flushes its append-only file. A checkpoint (copying the log
        into the database, and with NORMAL syncing both) only keeps the log
        from growing, so it runs when the log is large, not every second.
        Uses a connection of its own, so it may run in another thread while
        the reactor thread goes on committing (a PASSIVE checkpoint never
        blocks writers); only one thread may call it at a time."""
        wal = self.path + "-wal"
        try:
            size = os.path.getsize(wal)
        except OSError:
            return  # no log yet: nothing committed
        if self.fsync == "everysec":
            _flush(wal)
            if not self._wal_entry_synced:
                # The log file was created when the database was opened: its
                # directory entry must reach the disk too, once.
                _flush(self.directory)
                self._wal_entry_synced = True
        if size < CHECKPOINT_BYTES:
            return
        db = self._checkpointer
        if db is None:
            db = self._checkpointer = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.fsync]}").close()
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

    def close(self) -> None:
        """Checkpoint, close the database and let the data dir go; again: nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._run("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
            self._lock.release()


def _decode_version(text: str) -> Version:
    ms, counter, node = str(text).split(":", 2)
    return Version(int(ms), int(counter), node)


def _encode_version(version: Version) -> str:
    """``ms:counter:node`` (a node id may hold colons, never the numbers)."""
    return f"{version.ms}:{version.counter}:{version.node}"


def _flush(path: str) -> None:
    """fsync a file or directory by name (raises OSError)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: How large SQLite's write-ahead log may grow before it is checkpointed.
CHECKPOINT_BYTES = 64 << 20
#: What the write-ahead log file is cut back to once it has been checkpointed.
WAL_KEEP_BYTES = 4 << 20

#: Entries per snapshot part, at most; and about how many bytes, at most.
SNAPSHOT_PART = 5000
SNAPSHOT_PART_BYTES = 8 << 20


class _Replay:
    """Applies records to a :class:`Loader` in order, remembering which local
    writes may still be owed to a peer."""

    def __init__(self, into: Loader, unacked_above: Optional[int]) -> None:
        self._into = into
        self._above = unacked_above
        self._candidates: Dict[bytes, Tuple[int, Entry]] = {}
        self.count = 0

    def writes(self, blob: bytes) -> None:
        seqs, keys, entries = wire.decode_writes(bytes(blob))
        self.count += self._into.load_columns(seqs, keys, entries)
        above = self._above
        if above is not None and seqs and max(seqs) > above:
            candidates = self._candidates
            for seq, key, entry in zip(seqs, keys, entries):
                if seq > above:
                    candidates[key] = (seq, entry)

    def forgets(self, blob: bytes) -> None:
        unload = self._into.unload
        decoder = wire.FrameDecoder(_MAX_RECORD)
        frames = decoder.feed(bytes(blob))
        if decoder.pending():
            raise wire.WireError("a forgotten-entries record ends halfway through a frame")
        for frame in frames:
            if type(frame) is not wire.KeyList:
                raise wire.WireError(f"unexpected {type(frame).__name__} among forgets")
            for key, version in frame.versions:  # type: ignore[union-attr]
                unload(key, version)

    def unacked(self) -> List[Tuple[int, bytes, Entry]]:
        entry = self._into.entry
        owed = [(seq, key, held) for key, (seq, held) in self._candidates.items() if entry(key) == held]
        owed.sort(key=lambda item: item[0])
        return owed
