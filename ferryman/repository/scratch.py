"""Scratch SQLite files in the cache (writer sessions, reachable sets).

Each is held with an exclusive ``flock`` while in use, so leftovers of a
crashed process can be told apart from files another live process is using.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from ferryman.repository.index_cache import connect

log = logging.getLogger(__name__)
PATTERNS = ("writer-*.sqlite", "reach-*.sqlite")


class ScratchDB:
    """A throw-away SQLite database locked by this process until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.conn: sqlite3.Connection = connect(path, durable=False)

    def close(self) -> None:
        """Close and delete the database."""
        self.conn.close()
        self.path.unlink(missing_ok=True)
        os.close(self._lock_fd)


def remove_stale(directory: Path) -> int:
    """Delete scratch files no live process holds; returns how many."""
    removed = 0
    for pattern in PATTERNS:
        for path in directory.glob(pattern):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use
            finally:
                os.close(fd)
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d scratch files left by crashed processes in %s", removed, directory)
    return removed
