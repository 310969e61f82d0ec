"""Change detection: merge-join of the sorted scan with the previous tree, streaming.

For each directory the scanner walks, the matching directory of the previous
restore point (or checkpoint) is streamed one tree blob at a time and advanced
in step with the sorted directory listing, so only one tree blob per directory
level is in memory. Entries are compared with the blob's compact listing (names
and stat keys, cached locally by tree blob id: ``listing_cache``); an entry's
full stored record (msgpack map) is decoded only when it is needed.

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
from collections.abc import Callable, Iterator

from ferryman.engine.listing_cache import (
    CHANGED,
    EMPTY_BLOB,
    ListingCache,
    StatKey,
    load_prev_blob,
)
from ferryman.engine.nodes import NodeMap, TreeLayoutError
from ferryman.engine.ports import RepositoryPort
from ferryman.repository import RepositoryError

log = logging.getLogger(__name__)


class PreviousListing:
    """Previous entries of one directory, consumed in sorted name order.

    Holds the current tree blob (``blob``, a compact listing whose full records are
    decoded only when one is asked for) and a position ``i`` in it: ``find``/``take``
    cost a few operations per entry, no generator step. The scanner's run of
    unchanged entries reads ``blob.listing`` and ``i`` directly.
    """

    __slots__ = ("_blobs", "_cache", "_repo", "_vouched", "blob", "i", "skipped")

    def __init__(
        self,
        repo: RepositoryPort,
        subtrees: list[bytes],
        cache: ListingCache | None = None,
        vouched: Callable[[NodeMap], bool] | None = None,
    ) -> None:
        self._repo = repo
        self._cache = cache
        self._vouched = vouched  # subdirectories not walked: their listings not read ahead
        self._blobs: Iterator[bytes] = iter(subtrees)
        self.blob = EMPTY_BLOB
        self.i = 0
        self.skipped = False  # a previous entry was not matched (deleted or excluded)
        self._load()

    def _load(self) -> None:
        """Move to the next non-empty tree blob (an unreadable one only costs re-reading)."""
        self.blob, self.i = EMPTY_BLOB, 0
        for blob_id in self._blobs:
            try:
                blob = load_prev_blob(self._repo, self._cache, blob_id, self._vouched)
            except (RepositoryError, TreeLayoutError, ValueError, KeyError) as exc:
                log.warning("previous tree unusable for change detection: %s", exc)
                self.skipped = True
                self._blobs = iter(())
                return
            if blob.listing.names:
                self.blob = blob
                return

    def find(self, name: bytes, unless: StatKey | None = None) -> NodeMap | None:
        """The previous entry called ``name``; names must be asked in increasing order.

        ``unless``: the entry's current stat key; when the previous entry is not a
        directory and its key differs, ``CHANGED`` stands for its record (which is
        then not decoded here: a changed small file needs nothing of it).
        """
        names = self.skip_before(name)
        if self.i < len(names) and names[self.i] == name:
            listing = self.blob.listing
            if (
                unless is not None
                and listing.dirs[self.i] is None
                and listing.keys[self.i] != unless
            ):
                found: NodeMap | None = CHANGED
            else:
                found = self._record()
            self.take()
            return found
        return None

    def skip_before(self, name: bytes) -> tuple[bytes, ...]:
        """Consume the previous entries sorting before ``name`` (not matched: deleted
        or excluded since); returns the current tree blob's names."""
        names = self.blob.listing.names
        while self.i < len(names) and names[self.i] < name:
            self.skipped = True
            self.take()
            names = self.blob.listing.names
        return names

    def _record(self) -> NodeMap | None:
        """The full record at the position (a directory's is in the compact listing);
        None when the tree blob cannot be decoded now (the entry is then new)."""
        found = self.blob.listing.dirs[self.i]
        if found is not None:
            return found
        try:
            return self.blob.maps()[self.i]
        except (RepositoryError, TreeLayoutError, ValueError, KeyError) as exc:
            log.warning("previous tree unusable for change detection: %s", exc)
            self.skipped = True  # the directory is encoded again
            return None

    def take(self) -> None:
        """Consume the entry at the position (matched by name, or passed)."""
        self.i += 1
        if self.i >= len(self.blob.listing.names):
            self._load()

    def all_matched(self) -> bool:
        """Whether every previous entry was matched (call once the scan of the dir ended)."""
        return not self.skipped and self.i >= len(self.blob.listing.names)


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
