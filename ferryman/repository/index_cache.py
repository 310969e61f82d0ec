"""Local SQLite cache of the repository index (bounded memory, shared by processes).

The cache is only a cache: it is rebuilt from the repository's index segments
whenever a segment it merged has disappeared (garbage collection consolidated
them).  Lookups go through SQLite's page cache, so a process's memory does
not grow with the number of blobs in the repository.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

from ferryman.repository import index
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import ObjectNotFound
from ferryman.repository.index import IndexEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    raw_length INTEGER NOT NULL, compression INTEGER NOT NULL, kind INTEGER NOT NULL,
    PRIMARY KEY (id, pack)
) WITHOUT ROWID;
DROP INDEX IF EXISTS blobs_by_pack;
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# Page cache per connection, in KiB (negative = KiB for SQLite): small on purpose.
CACHE_KIB = 8192
# Ids per membership query (below SQLite's limit on bound parameters).
PRESENT_BATCH = 500


def connect(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    """Open a SQLite database tuned for the caches (WAL, modest page cache)."""
    conn = sqlite3.connect(path, timeout=120, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    if durable:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    else:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA temp_store=FILE")
    return conn


class IndexCache:
    """Blob id -> location, synced incrementally from ``index/`` segments."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = connect(path)
        self.rebuilt = False  # whether the last sync started from scratch
        with self._lock:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def known_segments(self) -> set[str]:
        """Names of the segments merged so far."""
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT name FROM segments")}

    def sync(self, backend: Backend, encryption_key: bytes) -> int:
        """Merge new segments; rebuild from scratch if a merged one disappeared.

        Returns the number of segments merged.
        """
        present = set(backend.list(index.INDEX_PREFIX))
        known = self.known_segments()
        self.rebuilt = bool(known - present)
        if self.rebuilt:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("DELETE FROM blobs")
                self._conn.execute("DELETE FROM segments")
                self._conn.execute("COMMIT")
            known = set()
        merged = 0
        for name in sorted(present - known):
            try:
                data = backend.get(name)
            except ObjectNotFound:
                continue  # consolidated away meanwhile; the next sync rebuilds
            self.merge_rows(name, index.segment_rows(encryption_key, data, name))
            merged += 1
        return merged

    def merge(self, name: str, entries: Iterator[IndexEntry]) -> None:
        """Add the entries of segment ``name`` (idempotent; a blob may have several locations)."""
        self.merge_rows(
            name,
            (
                (e.blob_id, e.pack_id, e.offset, e.length, e.raw_length, e.compression, e.kind)
                for e in entries
            ),
        )

    def merge_rows(self, name: str, rows: Iterator[index.Row]) -> None:
        """:meth:`merge` for plain tuples ``(id, pack, offset, length, raw, method, kind)``."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                done = self._conn.execute("SELECT 1 FROM segments WHERE name=?", (name,)).fetchone()
                if done is None:
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO blobs VALUES (?,?,?,?,?,?,?)", rows
                    )
                    self._conn.execute("INSERT INTO segments VALUES (?)", (name,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def lookup(self, blob_id: bytes) -> IndexEntry | None:
        """One location of ``blob_id`` (the lowest pack id), or ``None``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT pack, offset, length, raw_length, compression, kind FROM blobs WHERE id=? "
                "ORDER BY pack LIMIT 1",
                (blob_id,),
            ).fetchone()
        if row is None:
            return None
        return IndexEntry(blob_id, row[0], row[1], row[2], row[3], row[4], row[5])

    def locations(self, blob_id: bytes) -> list[IndexEntry]:
        """Every indexed location of ``blob_id`` (duplicates come from concurrent writers)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT pack, offset, length, raw_length, compression, kind FROM blobs WHERE id=? "
                "ORDER BY pack",
                (blob_id,),
            ).fetchall()
        return [IndexEntry(blob_id, r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def _rows_of(self, columns: str, blob_ids: list[bytes], order: str = "") -> Iterator[Any]:
        """``SELECT columns`` of the rows of ``blob_ids``, one query per ``PRESENT_BATCH`` ids.

        The ids are asked in sorted order: each query then walks a narrow, ordered
        part of the primary key (~35 % faster on 50k random ids).
        """
        blob_ids = sorted(blob_ids)
        for start in range(0, len(blob_ids), PRESENT_BATCH):
            part = blob_ids[start : start + PRESENT_BATCH]
            marks = ",".join("?" * len(part))
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {columns} FROM blobs WHERE id IN ({marks}){order}", part
                ).fetchall()
            yield from rows

    def lookup_many(self, blob_ids: list[bytes]) -> dict[bytes, IndexEntry]:
        """:meth:`lookup` for many ids at once (ids not indexed are absent from the result)."""
        found: dict[bytes, IndexEntry] = {}
        columns = "id, pack, offset, length, raw_length, compression, kind"
        for row in self._rows_of(columns, blob_ids, " ORDER BY pack DESC"):
            found[row[0]] = IndexEntry(*row)  # the lowest pack id wins, as in lookup()
        return found

    def present(self, blob_ids: list[bytes], excluded_packs: Container[bytes]) -> set[bytes]:
        """The ids of ``blob_ids`` indexed in at least one pack not in ``excluded_packs``.

        One query per ``PRESENT_BATCH`` ids: confirming the chunks of thousands of
        unchanged files costs a few queries, not one round trip per chunk.
        """
        rows = self._rows_of("id, pack", blob_ids)
        return {blob_id for blob_id, pack_id in rows if pack_id not in excluded_packs}

    def count(self) -> int:
        """Number of blobs known."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM blobs").fetchone()[0])

    def entries_in_pack(self, pack_id: bytes) -> list[IndexEntry]:
        """The entries whose indexed location is ``pack_id`` (a full scan: use sparingly)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, pack, offset, length, raw_length, compression, kind FROM blobs "
                "WHERE pack=?",
                (pack_id,),
            ).fetchall()
        return [IndexEntry(*row) for row in rows]

    def packs(self) -> set[bytes]:
        """Every pack id the index refers to."""
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT DISTINCT pack FROM blobs")}

    def pack_totals(self) -> dict[bytes, int]:
        """Record bytes indexed per pack (one scan, on a separate read connection)."""
        conn = connect(self.path)
        try:
            rows = conn.execute("SELECT pack, sum(length) FROM blobs GROUP BY pack")
            return {pack: int(total) for pack, total in rows}
        finally:
            conn.close()

    def total_length(self) -> int:
        """Record bytes indexed in all (``sum(pack_totals().values())`` without the
        grouping by pack: one scan, no sort, on a separate read connection)."""
        conn = connect(self.path)
        try:
            (total,) = conn.execute("SELECT coalesce(sum(length), 0) FROM blobs").fetchone()
            return int(total)
        finally:
            conn.close()

    def scan_by_pack(self) -> Iterator[tuple[bytes, list[IndexEntry]]]:
        """Every entry grouped by pack, packs in id order.

        Runs on its own read connection (WAL: writers are not blocked) and lets
        SQLite sort on disk, so neither memory nor the insert path pays for a
        secondary index.
        """
        conn = connect(self.path)
        try:
            cursor = conn.execute(
                "SELECT id, pack, offset, length, raw_length, compression, kind FROM blobs "
                "ORDER BY pack, id"
            )
            current: bytes | None = None
            group: list[IndexEntry] = []
            while rows := cursor.fetchmany(10_000):
                for row in rows:
                    if row[1] != current:
                        if current is not None:
                            yield current, group
                        current, group = row[1], []
                    group.append(IndexEntry(*row))
            if current is not None:
                yield current, group
        finally:
            conn.close()

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry, in blob-id order (reads in batches; memory stays bounded)."""
        last: tuple[bytes, bytes] = (b"", b"")
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT id, pack, offset, length, raw_length, compression, kind FROM blobs "
                    "WHERE (id, pack) > (?, ?) ORDER BY id, pack LIMIT 10000",
                    last,
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield IndexEntry(*row)
            last = (rows[-1][0], rows[-1][1])
