"""The node's SQLite file: what survives a restart. Plain ``sqlite3``, no reactor.

One database per data directory, in WAL mode, with three tables::

    meta(name, value)            format version, node id, clock high-water mark,
                                 the last local write sequence number
    entries(key, value, ms, counter, node, seq)
                                 every key, value or tombstone (value NULL) and
                                 its version; seq numbers this node's own writes
                                 (NULL for a write merged from a peer). A rowid
                                 table: rows are appended and only the small key
                                 index is kept in key order, which inserts about
                                 1.6x faster than a WITHOUT ROWID table here.
    peers(address, acked, node)  per peer: our highest write it acknowledged

The per-peer outbox is not stored twice: after a restart it is rebuilt from
the entries this node wrote with a sequence number above what that peer
acknowledged. A write later overwritten by a peer's newer write loses its
sequence number with its row, and rightly: the newer write reaches everyone
from its own node.

Anything wrong with the file (not a database, corrupt, another format, another
node's data) raises :class:`DiskError` with a message for the operator.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Collection, Dict, Iterable, List, NamedTuple, Optional, Protocol, Sequence, Tuple

from distkv.hlc import Version
from distkv.store import Entry

FORMAT = "1"
FILENAME = "distkv.sqlite3"

#: What each ``--fsync`` policy sets SQLite's ``synchronous`` pragma to. In WAL
#: mode: FULL syncs the log at every commit; NORMAL syncs it only when it is
#: checkpointed (which the node does every second for ``everysec``); OFF
#: leaves it to the operating system. All three survive a crash of the process.
SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY,
    value BLOB,
    ms INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    node TEXT NOT NULL,
    seq INTEGER
);
CREATE TABLE IF NOT EXISTS peers (
    address TEXT PRIMARY KEY,
    acked INTEGER NOT NULL,
    node TEXT
);
"""

class Loader(Protocol):
    """What :meth:`Disk.load` fills: a :class:`~distkv.store.Store`."""

    def load(self, key: bytes, entry: Entry, seq: int = 0) -> None: ...


Row = Tuple[bytes, Optional[bytes], int, int, str, Optional[int]]


class DiskError(Exception):
    """The data directory cannot be used; the message says why and where."""


class Loaded(NamedTuple):
    """What :meth:`Disk.load` read back."""

    entries: int
    clock_ms: int
    #: The highest local write sequence number ever handed out.
    seq: int
    #: This node's own writes, ``(seq, key, entry)``, oldest first, above the
    #: lowest sequence number some peer has not acknowledged.
    unacked: List[Tuple[int, bytes, Entry]]


class PeerState(NamedTuple):
    acked: int
    node: Optional[str]


class Disk:
    """The SQLite database in ``directory``, opened with the ``fsync`` policy."""

    def __init__(self, directory: str, fsync: str = "everysec") -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self.fsync = fsync
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise DiskError(f"cannot create data dir {directory}: {e.strerror}") from None
        self.fresh = not os.path.exists(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise DiskError(f"cannot open {self.path}: {e}") from None
        try:
            self._open()
        except sqlite3.Error as e:
            self._db.close()
            raise DiskError(f"{self.path} is unreadable or corrupt: {e}") from None

    def _open(self) -> None:
        db = self._db
        mode = self._run("PRAGMA journal_mode=WAL")[0][0]
        if str(mode).lower() != "wal":
            raise DiskError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        self._run(f"PRAGMA synchronous={SYNCHRONOUS[self.fsync]}")
        # 64 MiB of page cache: the write path is B-tree inserts; a small cache
        # makes each one a page fault once the table outgrows it.
        self._run("PRAGMA cache_size=-65536")
        # Checkpoints (copying the log into the database, with its fsyncs) are
        # run by the node once a second, off the reactor thread (see sync()),
        # not by whichever commit happens to cross SQLite's threshold.
        self._run("PRAGMA wal_autocheckpoint=0")
        self._checkpointer: Optional[sqlite3.Connection] = None
        db.executescript(_SCHEMA).close()
        found = self._meta("format")
        if found is None:
            self._run("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        elif found != FORMAT:
            raise DiskError(f"{self.path} has data format {found}; this DistKV reads {FORMAT}")

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
        """Read every entry into ``into.load(key, entry, seq)``, and collect this
        node's writes numbered above ``unacked_above`` (None: collect none).

        Reading the whole table also checks every page of it, so a corrupt
        file is found here, at start, and not halfway through serving.
        """
        count = 0
        unacked = []
        try:
            rows = self._db.cursor()
            try:
                rows.execute("SELECT key, value, ms, counter, node, seq FROM entries")
                nodes: Dict[str, str] = {}  # one string per node id, not one per row
                for key, value, ms, counter, node, seq in rows:
                    node = nodes.setdefault(node, node)
                    entry = Entry(value, Version(ms, counter, node))
                    into.load(bytes(key), entry, seq or 0)
                    if seq is not None and unacked_above is not None and seq > unacked_above:
                        unacked.append((seq, bytes(key), entry))
                    count += 1
            finally:
                rows.close()
            clock = int(self._meta("clock_ms") or 0)
            seq = int(self._meta("seq") or 0)
        except sqlite3.Error as e:
            raise DiskError(f"{self.path} is unreadable or corrupt: {e}") from None
        unacked.sort(key=lambda item: item[0])
        return Loaded(count, clock, seq, unacked)

    def commit(
        self,
        rows: Iterable[Row],
        purged: Sequence[Tuple[bytes, int, int, str]],
        peers: Collection[Tuple[str, int, Optional[str]]],
        clock_ms: int,
        seq: int,
        forget: Sequence[str] = (),
    ) -> None:
        """Write one batch in one transaction (raises ``sqlite3.Error``)."""
        self._run("BEGIN")
        try:
            self._run_many("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
            if purged:
                self._run_many(
                    "DELETE FROM entries WHERE key = ? AND ms = ? AND counter = ? AND node = ?",
                    purged,
                )
            if peers:
                self._run_many("INSERT OR REPLACE INTO peers VALUES (?, ?, ?)", peers)
            if forget:
                self._run_many("DELETE FROM peers WHERE address = ?", [(a,) for a in forget])
            # A row loses its sequence number when a peer's write replaces it,
            # so the highest number handed out is kept on its own.
            self._run(
                "INSERT OR REPLACE INTO meta VALUES ('clock_ms', ?), ('seq', ?)",
                (str(clock_ms), str(seq)),
            )
            self._run("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._run("ROLLBACK")
            raise

    def sync(self) -> None:
        """Checkpoint: copy the log into the database. With ``everysec`` (NORMAL)
        this first fsyncs the log, which is what makes commits survive a power
        cut. Uses a connection of its own, so it may run in another thread
        while the reactor thread goes on committing (a PASSIVE checkpoint never
        blocks writers); only one thread may call it at a time."""
        db = self._checkpointer
        if db is None:
            db = self._checkpointer = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.fsync]}").close()
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

    def close(self) -> None:
        try:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._run("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()


