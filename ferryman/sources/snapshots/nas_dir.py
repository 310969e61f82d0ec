"""nas-dir: read the newest snapshot a NAS already made (``.snapshot/…``, ``.zfs/snapshot/…``).

Nothing is created or deleted: the storage's own schedule makes the snapshots;
the task picks, among the folders matching the share's pattern (a glob relative
to the share, e.g. ``.zfs/snapshot/auto-*``), the newest by modification time
(then by name).
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass

from ferryman.sources.snapshots.base import Leftovers, SnapshotError, SnapshotScope


@dataclass
class ExistingSnapshot:
    path: str
    description: str

    def remove(self) -> None:
        """Not ours: the NAS expires its snapshots itself."""


class NasDirProvider:
    """Picks the newest existing snapshot folder matching a pattern."""

    name = "nas-dir"

    def __init__(self, share_path: str, pattern: str) -> None:
        self.share_path = share_path
        self.pattern = pattern

    def remove_leftovers(self, scope: SnapshotScope) -> Leftovers:
        """Nothing is ever left over: nothing is created."""
        return Leftovers()

    def create(self, scope: SnapshotScope) -> ExistingSnapshot:
        """The newest matching snapshot folder."""
        full = os.path.join(glob.escape(self.share_path), self.pattern)
        found: list[tuple[float, str]] = []
        for path in glob.glob(full, include_hidden=True):
            try:
                st = os.stat(path)
            except OSError:
                continue  # expired by the NAS while we looked
            if stat.S_ISDIR(st.st_mode):
                found.append((st.st_mtime, path))
        if not found:
            raise SnapshotError(
                f"no snapshot folder matches {self.pattern!r} under {self.share_path}"
            )
        _, path = max(found)
        return ExistingSnapshot(path, f"existing snapshot {path}")
