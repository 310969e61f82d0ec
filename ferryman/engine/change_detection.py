"""Change detection: merge-join of the sorted scan with the previous tree, streaming.

For each directory the scanner walks, the matching directory of the previous
restore point (or checkpoint) is streamed one tree blob at a time and advanced
in step with the sorted directory listing, so only one tree blob per directory
level is in memory. Entries are compared in their stored (msgpack map) form.

A regular file whose size, mtime, ctime, inode and mode are unchanged is not
read; its previous record (chunk list included) is reused as is. Why each
field: size and mtime catch ordinary writes; ctime catches writes that restore
mtime (``touch -r``, ``rsync -t``) and every metadata change (owner, mode,
xattrs, ACLs, link count); inode catches a file replaced by another (rename
over it, editors writing a new file); mode catches type changes. Hardlinking
changes ctime (restic #2495), which costs one re-read of that file, never a
wrong backup. rdev catches a device node re-made with another number, and for
entries read over SMB it carries the DOS attributes (Samba does not move the
change time when only attributes change; see ``ferryman.sources.smb``). The
stored atime of an unchanged entry is the previous one.

A directory whose own stat is unchanged and whose every entry was reused in
order, with nothing added or removed, reuses its previous tree blobs: an
unchanged subtree costs a walk and a comparison, no encoding and no writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from ferryman.engine.nodes import NodeMap, TreeLayoutError, load_dir_maps
from ferryman.engine.ports import RepositoryPort
from ferryman.repository import RepositoryError

log = logging.getLogger(__name__)


class PreviousListing:
    """Previous entries of one directory, consumed in sorted name order.

    Holds the current tree blob's entries and a position in them (a list and an
    index: ``peek``/``take`` cost a few operations per entry, no generator step).
    """

    __slots__ = ("_blobs", "_i", "_maps", "_repo", "skipped")

    def __init__(self, repo: RepositoryPort, subtrees: list[bytes]) -> None:
        self._repo = repo
        self._blobs: Iterator[bytes] = iter(subtrees)
        self._maps: list[NodeMap] = []
        self._i = 0
        self.skipped = False  # a previous entry was not matched (deleted or excluded)
        self._load()

    def _load(self) -> None:
        """Move to the next non-empty tree blob (an unreadable one only costs re-reading)."""
        self._maps, self._i = [], 0
        for blob_id in self._blobs:
            try:
                maps = load_dir_maps(self._repo, blob_id)
            except (RepositoryError, TreeLayoutError, ValueError, KeyError) as exc:
                log.warning("previous tree unusable for change detection: %s", exc)
                self.skipped = True
                self._blobs = iter(())
                return
            if maps:
                self._maps = maps
                return

    def find(self, name: bytes) -> NodeMap | None:
        """The previous entry called ``name``; names must be asked in increasing order."""
        cur = self.peek()
        while cur is not None and cur["n"] < name:
            self.skipped = True
            self.take()
            cur = self.peek()
        if cur is not None and cur["n"] == name:
            self.take()
            return cur
        return None

    def peek(self) -> NodeMap | None:
        """The next previous entry, not consumed (``take`` consumes it)."""
        return self._maps[self._i] if self._i < len(self._maps) else None

    def take(self) -> None:
        """Consume the entry ``peek`` returned (the caller matched it by name)."""
        self._i += 1
        if self._i >= len(self._maps):
            self._load()

    def all_matched(self) -> bool:
        """Whether every previous entry was matched (call once the scan of the dir ended)."""
        return not self.skipped and self.peek() is None


def unchanged(prev: NodeMap, st: os.stat_result) -> bool:
    """Whether an entry's stat matches its previous record (defaults are omitted: 0)."""
    return bool(
        prev.get("s", 0) == (st.st_size if prev.get("t") == "file" else 0)
        and prev.get("mt", 0) == st.st_mtime_ns
        and prev.get("ct", 0) == st.st_ctime_ns
        and prev.get("i", 0) == st.st_ino
        and prev.get("m", 0) == st.st_mode
        and prev.get("r", 0) == st.st_rdev
    )
