"""Change detection: merge-join of the sorted scan with the previous tree, streaming.

For each directory the scanner walks, the matching directory node of the
previous restore point (or checkpoint) is streamed one tree blob at a time and
advanced in step with the sorted directory listing, so only one tree blob per
directory level is in memory. A regular file whose size, mtime, ctime, inode
and mode are unchanged is not read; its chunk list is reused.

Why each field: size and mtime catch ordinary writes; ctime catches writes that
restore mtime (``touch -r``, rsync -t) and metadata-only changes; inode catches
a file replaced by another (rename over, editors writing a new file); mode
catches type changes. Hardlinking changes ctime (restic #2495), which costs one
re-read of that file, never a wrong backup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ferryman.engine.nodes import Node, iter_dir_nodes
from ferryman.engine.ports import RepositoryPort


class PreviousListing:
    """Previous entries of one directory, consumed in sorted name order."""

    __slots__ = ("_current", "_it")

    def __init__(self, repo: RepositoryPort, dir_node: Node | None) -> None:
        self._it: Iterator[Node] = iter(()) if dir_node is None else iter_dir_nodes(repo, dir_node)
        self._current: Node | None = next(self._it, None)

    def find(self, name: bytes) -> Node | None:
        """The previous node called ``name``; names must be asked in increasing order."""
        cur = self._current
        while cur is not None and cur.name < name:
            cur = next(self._it, None)
        self._current = cur
        if cur is not None and cur.name == name:
            return cur
        return None


def unchanged(prev: Node, st: os.stat_result) -> bool:
    """Whether a regular file can reuse its previous content without being read."""
    return (
        prev.size == st.st_size
        and prev.mtime_ns == st.st_mtime_ns
        and prev.ctime_ns == st.st_ctime_ns
        and prev.inode == st.st_ino
        and prev.mode == st.st_mode
    )
