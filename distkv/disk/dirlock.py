"""One process per data dir: an exclusive ``flock`` on ``DIR/distkv.lock``.

Two nodes on one data dir would take the same node id and write the same
database, and the first would find its next commit failing. So a
:class:`~distkv.disk.datafile.Disk` takes this lock before it opens the database and
holds it until it closes; the lock file holds the holder's process id, for the
message the next one gets. The kernel drops the lock when the process dies
(``kill -9`` included), so a stale lock file never blocks a restart. Locks
belong to the open file, so one process that closes a data dir (or crashes a
node in a test) and opens it again gets it back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import weakref
from typing import Optional

FILENAME = "distkv.lock"

_held: weakref.WeakSet[DirLock] = weakref.WeakSet()


class LockedError(Exception):
    """Another process holds the data dir; the message names it."""


class DirLock:
    """An exclusive lock on ``directory``, taken at once or :class:`LockedError`."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILENAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(f"cannot lock {self.path}: {e.strerror}") from None
            raise LockedError(
                f"data dir {directory} is in use by another DistKV process "
                f"(pid {holder or 'unknown'}, holding {self.path})"
            ) from None
        self._fd: Optional[int] = fd
        self._write_pid()
        _held.add(self)

    def _write_pid(self) -> None:
        fd = self._fd
        if fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)

    def release(self) -> None:
        """Let another process have the data dir (the lock file stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the flock
        _held.discard(self)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _after_fork() -> None:
    # twistd without -n forks after the node opened its data dir: the child
    # keeps the lock, so the file should name the child.
    for lock in list(_held):
        lock._write_pid()


os.register_at_fork(after_in_child=_after_fork)
