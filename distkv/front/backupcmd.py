"""``BACKUP path``: a consistent copy of the node's data dir, written by the node while it serves.

The copy goes to ``path`` on the node's own machine (an absolute path: a
directory that is empty or does not exist yet, outside the data dir; see
:func:`distkv.disk.backup.check_target`). It needs the write right, as the
other administrative commands do. The node first waits for the journal's
current batch to commit, so every write acknowledged before ``BACKUP`` (and
every write of the same connection sent before it) is in the copy; then
SQLite's online backup runs in the reactor's thread pool, and the reply
(``+Backup written to <path> (<n> bytes)``) comes when it is done, in order
with the connection's other replies. Writes and reads go on meanwhile. One
backup runs at a time; a node with no data dir answers that it has none.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv.disk.backup import check_target, copy_database
from distkv.disk.journal import Journal
from distkv.front.replcmds import Later
from distkv.front.replies import Error, Session, Status

if TYPE_CHECKING:
    from distkv.front.commands import Dispatcher, Entry, Outcome

log = Logger()

NO_DATA_DIR = Error("ERR this node has no data dir: nothing to back up")
RUNNING = Error("ERR a backup is already running")


class Backups:
    """Runs one backup at a time of the node's journal's database."""

    def __init__(self, journal: Callable[[], Optional[Journal]], reactor: object) -> None:
        self._journal = journal
        self._reactor = reactor
        self.running = False
        self.completed = 0

    def start(self, path: str) -> Outcome:
        from distkv.front.commands import Pending  # commands imports this module

        journal = self._journal()
        if journal is None or journal.closed:
            return NO_DATA_DIR
        refused = check_target(path, journal.disk.directory)
        if refused is not None:
            return Error(refused)
        if self.running:
            return RUNNING
        self.running = True
        later = Later()
        pending = journal.durable()
        if pending is None:
            self._copy(journal, path, later, None)
        else:
            pending.when_done(lambda error: self._copy(journal, path, later, error))
        return Pending(later, later.reply)

    def _copy(self, journal: Journal, path: str, later: Later, error: Optional[str]) -> None:
        if error is not None:
            self.running = False
            later.done_with(Error(error))
            return
        source = journal.disk.path
        log.info("Backup of {source} to {path} started", source=source, path=path)
        reactor = self._reactor
        if not IReactorThreads.providedBy(reactor):  # a fake reactor in tests: inline
            try:
                size = copy_database(source, path)
            except Exception as e:  # OSError, sqlite3.Error
                self._done(Failure(e), path, later)
            else:
                self._done(size, path, later)
            return
        done = deferToThreadPool(reactor, reactor.getThreadPool(), copy_database,  # type: ignore[attr-defined]
                                 source, path)
        done.addBoth(self._done, path, later)

    def _done(self, result: object, path: str, later: Later) -> None:
        self.running = False
        if isinstance(result, Failure):
            why = str(result.value)
            log.error("Backup to {path} failed: {why}", path=path, why=why)
            later.done_with(Error(f"ERR backup failed: {why}"))
            return
        self.completed += 1
        log.info("Backup to {path} written: {size} bytes", path=path, size=result)
        later.done_with(Status(f"Backup written to {path} ({result} bytes)".encode()))


def table(dispatcher: Dispatcher) -> Dict[bytes, Entry]:
    def backup(args: Sequence[bytes], session: Session) -> Outcome:
        backups: Optional[Backups] = dispatcher.backups
        if backups is None:
            return NO_DATA_DIR
        try:
            path = os.fsdecode(args[0])
        except UnicodeDecodeError:
            return Error("ERR backup path is not a valid file name")
        return backups.start(path)

    return {b"BACKUP": (backup, 1, 1, "write")}
