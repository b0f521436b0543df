"""An online copy of a node's SQLite file, restorable as a data dir.

:func:`copy_database` uses SQLite's online backup API from a connection of its
own, in one step: the step reads the source in one read transaction, which in
WAL mode is a snapshot of every commit made before it began while the node
goes on committing beside it. The node starts it only once every write it has
acknowledged is committed (see :mod:`distkv.front.backupcmd`), so the copy
holds all of them. The copy is written as ``distkv.sqlite3.partial``, flushed
to disk, and renamed to ``distkv.sqlite3`` only when complete: a directory
holding ``distkv.sqlite3`` is a whole data dir, and a node started with
``--data-dir`` on it serves what it holds (the same node id, its member list
and what its peers had acknowledged). No reactor here: the node runs this in
a thread.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Optional

from distkv.disk.datafile import FILENAME, _flush

PARTIAL = FILENAME + ".partial"


def check_target(path: str, data_dir: str) -> Optional[str]:
    """Why ``path`` cannot take a backup of ``data_dir`` (an ``ERR`` reply's
    text), or None: it must be absolute, a directory that is empty or does
    not exist yet inside one that does, and outside the data dir."""
    if not os.path.isabs(path):
        return "ERR backup path must be absolute"
    if "\r" in path or "\n" in path:
        return "ERR backup path must not contain line breaks"
    path = os.path.normpath(path)
    real = os.path.realpath(path)
    data = os.path.realpath(data_dir)
    if real == data or real.startswith(data + os.sep):
        return "ERR backup path must be outside the data dir"
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return "ERR backup path exists and is not a directory"
        if os.listdir(path):
            return "ERR backup directory is not empty"
    elif not os.path.isdir(os.path.dirname(path)):
        return "ERR backup path's parent directory does not exist"
    return None


def copy_database(source: str, target_dir: str) -> int:
    """Copy the database at ``source`` into ``target_dir`` (created if
    missing); its size in bytes. Raises OSError or sqlite3.Error."""
    os.makedirs(target_dir, mode=0o700, exist_ok=True)
    partial = os.path.join(target_dir, PARTIAL)
    if os.path.exists(partial):
        os.unlink(partial)
    src = sqlite3.connect(source, isolation_level=None, check_same_thread=False)
    try:
        src.execute("PRAGMA query_only=1").close()
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: the whole file in one step, one snapshot
            dst.execute("PRAGMA journal_mode=DELETE").close()
        finally:
            dst.close()
    finally:
        src.close()
    _flush(partial)
    final = os.path.join(target_dir, FILENAME)
    os.replace(partial, final)
    _flush(target_dir)
    return os.path.getsize(final)

