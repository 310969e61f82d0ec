"""The set of blobs reachable from restore points, kept on disk (SQLite), not in Python sets."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ferryman.repository.errors import BlobNotFound, IncompleteRepository, RepositoryError
from ferryman.repository.restore_point import RestorePoint
from ferryman.repository.scratch import ScratchDB

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository


class ReachableSet:
    """Blob ids on disk; ``add`` tells whether an id is new."""

    def __init__(self, directory: Path) -> None:
        self._scratch = ScratchDB(directory / f"reach-{secrets.token_hex(8)}.sqlite")
        self._conn = self._scratch.conn
        self._conn.execute("CREATE TABLE reach (id BLOB PRIMARY KEY) WITHOUT ROWID")
        self._conn.execute("BEGIN")

    def add(self, blob_id: bytes) -> bool:
        """Insert; True if it was not there."""
        cur = self._conn.execute("INSERT OR IGNORE INTO reach VALUES (?)", (blob_id,))
        return cur.rowcount == 1

    def __contains__(self, blob_id: object) -> bool:
        row = self._conn.execute("SELECT 1 FROM reach WHERE id=?", (blob_id,)).fetchone()
        return row is not None

    def __iter__(self) -> Iterator[bytes]:
        for (bid,) in self._conn.execute("SELECT id FROM reach ORDER BY id"):
            yield bytes(bid)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM reach").fetchone()[0])

    def close(self) -> None:
        """Drop the temporary database."""
        self._scratch.close()

    def __enter__(self) -> ReachableSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def mark_reachable(repo: Repository, points: Iterable[RestorePoint]) -> ReachableSet:
    """Every blob (trees and chunks) reachable from ``points``.

    Raises :class:`IncompleteRepository` if a tree is missing or unreadable, since
    garbage collection must not guess.
    """
    reach = ReachableSet(repo.cache_path)
    try:
        for point in points:
            pending = [point.root] if reach.add(point.root) else []
            while pending:
                tree_id = pending.pop()
                try:
                    nodes = repo.get_tree(tree_id)
                except (BlobNotFound, RepositoryError) as exc:
                    raise IncompleteRepository(
                        f"restore point {point.id} reaches tree {tree_id.hex()} that cannot be "
                        f"read ({exc}); run check"
                    ) from None
                for node in nodes:
                    for cid in node.content:
                        reach.add(cid)
                    for sub in node.subtrees:
                        if reach.add(sub):
                            pending.append(sub)
    except BaseException:
        reach.close()
        raise
    return reach
