"""Compact listings of tree blobs, cached locally: change detection without decoding trees.

An unchanged re-run compares every entry of the previous restore point with a
fresh ``lstat``. Decoding the previous tree blobs (read, decrypt, decompress,
msgpack into one dict per entry) cost about a third of the walk's thread. A
``CompactListing`` keeps, per tree blob, what the comparison needs: the names,
one key tuple per entry ``(size, mtime_ns, ctime_ns, inode, mode, rdev)`` (as
``unchanged`` compares them), the full record of each directory entry (its
subtree ids and xattrs are needed to walk and reuse it) and each entry's
approximate encoded size (``approx_size``, so tree blob boundaries stay the
same when a directory is re-encoded). The entries' full records are decoded
from the tree blob only when they are needed: an entry changed, or a directory
is re-encoded because something in it changed (``PrevBlob.maps``).

Listings are stored in ``<repository cache>/listings.sqlite`` keyed by tree blob
id: written by the tree saver for every tree blob it stores, and by change
detection for a previous tree blob it had to decode. A tree blob id names its
content, so an entry can never be stale; a row that does not decode or whose
checksum does not match is ignored (the tree blob is decoded instead) and
replaced. Like the index cache it is only a cache: deleting it costs one
decoding of each tree blob, never data.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import zlib
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from types import MappingProxyType

import msgspec

from ferryman.engine.nodes import NodeMap, load_dir_maps, tree_keys, tree_records
from ferryman.engine.ports import RepositoryPort
from ferryman.engine.walk_helper_proc import LISTING_VERSION, unpack_listing

log = logging.getLogger(__name__)

LISTINGS_FILE = "listings.sqlite"  # in the repository's local cache directory
# Rows written in one transaction (the tree saver writes one per tree blob stored).
WRITE_BATCH = 256
# Listings read ahead (those of a directory's subdirectories, in one query) and kept
# until asked for; the whole read-ahead is dropped when it would pass this.
READ_AHEAD = 4096
QUERY_IDS = 500  # ids per query (below SQLite's bound parameter limit)
# Rows of tree blobs that GC removed are never deleted one by one: past this size the
# file is started again when a task opens it (one decoding of each tree blob it asks).
MAX_FILE_BYTES = 512 << 20
StatKey = tuple[int, int, int, int, int, int]
# The record of a previous entry known to have changed, not decoded: typeless, so no
# test takes it for the same entry (``unchanged``, ``resumable_prefix``); never stored.
CHANGED: NodeMap = MappingProxyType({})  # type: ignore[assignment]


def approx_size(m: NodeMap) -> int:
    """Rough encoded size of a node map (keeps tree blobs near ``TARGET_TREE_BYTES``)."""
    size = 100 + len(m["n"]) + 34 * (len(m.get("c", ())) + len(m.get("st", ())))
    xattrs = m.get("x")
    if xattrs:
        size += sum(len(k) + len(v) + 4 for k, v in xattrs.items())
    return size + len(m.get("aa", b"")) + len(m.get("ad", b"")) + len(m.get("l", b""))


def map_key(m: NodeMap) -> StatKey:
    """The fields ``unchanged`` compares, from a stored record (omitted = 0)."""
    g = m.get
    return (g("s", 0), g("mt", 0), g("ct", 0), g("i", 0), g("m", 0), g("r", 0))


def stat_key(st: os.stat_result, size: int) -> StatKey:
    """The key ``map_key`` gives the record of an unchanged entry with stat ``st``
    (``size``: the file's size, 0 for anything else, as stored)."""
    return (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, st.st_rdev)


class CompactListing:
    """Names, stat keys, directory records and approximate sizes of one tree blob."""

    __slots__ = ("approx", "dirs", "keys", "names")

    def __init__(
        self,
        names: tuple[bytes, ...],
        keys: tuple[StatKey, ...],
        dirs: tuple[NodeMap | None, ...],
        approx: tuple[int, ...],
    ) -> None:
        self.names = names
        self.keys = keys
        self.dirs = dirs
        self.approx = approx

    @classmethod
    def from_maps(cls, maps: list[NodeMap]) -> CompactListing:
        """The compact listing of a tree blob's decoded records."""
        return cls(
            tuple(m["n"] for m in maps),
            tuple(map(map_key, maps)),
            tuple(m if m.get("t") == "dir" else None for m in maps),
            tuple(map(approx_size, maps)),
        )

    def part(self, start: int, stop: int) -> CompactListing:
        """The listing of entries ``start`` to ``stop - 1``."""
        return CompactListing(
            self.names[start:stop],
            self.keys[start:stop],
            self.dirs[start:stop],
            self.approx[start:stop],
        )

    @classmethod
    def join(cls, parts: list[CompactListing]) -> CompactListing:
        """The listing of ``parts``' entries one after the other."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            tuple(chain.from_iterable(p.names for p in parts)),
            tuple(chain.from_iterable(p.keys for p in parts)),
            tuple(chain.from_iterable(p.dirs for p in parts)),
            tuple(chain.from_iterable(p.approx for p in parts)),
        )

    def encode(self) -> bytes:
        """The stored form: a checksum, then the msgpack of the four columns (encoded by
        msgspec: the same bytes as ``msgpack.packb``, ~4x faster on the tree saver's
        thread)."""
        body = msgspec.msgpack.encode(
            [LISTING_VERSION, self.names, self.keys, self.dirs, self.approx]
        )
        return zlib.crc32(body).to_bytes(4, "big") + body

    @classmethod
    def decode(cls, data: bytes) -> CompactListing | None:
        """The listing stored as ``data``; None when it is damaged or of another version
        (read by the walk helper's process with the same function, which imports no
        package module)."""
        cols = unpack_listing(data)
        return None if cols is None else cls(*cols)


class PrevBlob:
    """One tree blob of the previous restore point, as a compact listing; its full
    records are decoded on first use (``maps``), from either thread of the task."""

    __slots__ = ("_cache", "_data", "_maps", "_raws", "_repo", "blob_id", "listing", "stale")

    def __init__(
        self,
        repo: RepositoryPort | None,
        blob_id: bytes,
        listing: CompactListing,
        maps: list[NodeMap] | None = None,
        cache: ListingCache | None = None,
        data: bytes | None = None,
    ) -> None:
        self._repo = repo
        self._cache = cache
        self.blob_id = blob_id
        self.listing = listing
        self._maps = maps
        self._data = data  # the blob's bytes, once decoded (with ``maps``)
        self._raws: list[msgspec.Raw] | None = None  # its records as stored (``records``)
        self.stale = False  # the cached listing disagreed with the decoded blob

    def maps(self) -> list[NodeMap]:
        """The blob's records, one per name of the listing (decoded once).

        When the cached listing disagrees with the blob (names or stat keys), its row
        is dropped (the next task caches the blob's own) and ``stale`` set: the records
        are then the blob's records of the listing's names (``CHANGED`` for a name
        the blob lacks), which every user compares again (``PrevRun.maps``).
        """
        maps = self._maps
        if maps is None:
            assert self._repo is not None
            data = self._repo.get_blob(self.blob_id)
            maps = load_dir_maps(self._repo, self.blob_id, data)
            if tuple(m["n"] for m in maps) != self.listing.names or (
                tuple(map(map_key, maps)) != self.listing.keys
            ):
                log.warning(
                    "tree blob %s does not match its cached listing: row dropped",
                    self.blob_id.hex()[:16],
                )
                if self._cache is not None:
                    self._cache.drop(self.blob_id)
                by_name = {m["n"]: m for m in maps}
                maps = [by_name.get(n, CHANGED) for n in self.listing.names]
                self.stale = True
            # only once checked (``stale`` set): ``records``, maybe on the other thread,
            # copies from these bytes without checking them again
            self._data = data
            self._maps = maps
        return maps

    def unread(self) -> bool:
        """Whether using its records (``maps``, ``records``) will read the blob."""
        return bool(self.blob_id) and self._data is None and self._raws is None

    def records(self, start: int, stop: int) -> list[msgspec.Raw] | None:
        """Records ``start`` to ``stop - 1`` in their stored form, copied from the blob
        (a directory encoded again keeps its unchanged entries' bytes, not decoded and
        encoded again). The blob's names and stat keys are checked against the listing
        first, as ``maps`` does, but without building its records; None when they
        disagree (``stale``: the listing's positions are not the blob's)."""
        raws = self._raws
        if raws is None:
            data = self._data  # set with the records (``maps``): checked then
            if data is None:
                assert self._repo is not None
                data = self._repo.get_blob(self.blob_id)
                if tree_keys(data) != (self.listing.names, self.listing.keys):
                    self.maps()  # compared record by record: stale (row dropped) or not
            raws = tree_records(data)
            if self.stale or raws is None:
                return None
            self._raws = raws
        return raws[start:stop]


EMPTY_BLOB = PrevBlob(None, b"", CompactListing((), (), (), ()), [])


def damaged_database(exc: Exception) -> bool:
    """Whether ``exc`` says a cache file is not a (sound) database, rather than busy
    (another task holds it), read-only or full: only a damaged file is started again;
    removing a busy one would pull it from under the task using it."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class ListingCache:
    """Tree blob id -> compact listing, in a local SQLite file (thread-safe)."""

    def __init__(self, path: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.path = path
        self._lock = threading.Lock()  # the connection and the read-ahead
        # the rows not written yet, under their own lock: the tree saver's ``put`` never
        # waits behind the scanner's query (a reader holds ``_lock`` through a query)
        self._pending_lock = threading.Lock()
        self._pending: dict[bytes, bytes] = {}
        self._ahead: dict[bytes, bytes | None] = {}  # read ahead; None = not cached
        self._conn: sqlite3.Connection | None = None
        try:
            if path.exists() and path.stat().st_size > max_bytes:
                log.info("listing cache %s passed %d bytes: started again", path, max_bytes)
                self._remove(path)
            self._conn = self._open(path)
        except (OSError, sqlite3.Error) as exc:
            if not (isinstance(exc, sqlite3.Error) and damaged_database(exc)):
                log.warning("listing cache %s disabled: %s", path, exc)  # busy, full...
                return
            log.warning("listing cache %s unusable (%s): recreated", path, exc)
            try:  # a damaged file: start again, once
                self._remove(path)
                self._conn = self._open(path)
            except (OSError, sqlite3.Error) as again:
                log.warning("listing cache %s disabled: %s", path, again)

    @staticmethod
    def _remove(path: Path) -> None:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            # rows are ~1-2 KiB: a rowid table on 16 KiB pages answered a lookup ~25 %
            # faster than WITHOUT ROWID on 4 KiB pages (page_size only acts on a new file)
            conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS listings (id BLOB PRIMARY KEY, data BLOB NOT NULL)"
            )
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def get(self, blob_id: bytes) -> CompactListing | None:
        """The cached listing of ``blob_id``, or None (absent, damaged, cache disabled)."""
        with self._pending_lock:
            data = self._pending.get(blob_id)
        if data is None:
            with self._lock:
                data = self._read(blob_id)
        if data is None:
            return None
        listing = CompactListing.decode(data)
        if listing is None:
            log.warning("cached listing of tree blob %s damaged: ignored", blob_id.hex()[:16])
        return listing

    def _read(self, blob_id: bytes) -> bytes | None:
        """The stored row of ``blob_id`` (read ahead or queried); the caller holds the lock."""
        if blob_id in self._ahead:
            return self._ahead.pop(blob_id)
        if self._conn is None:
            return None
        try:
            row = self._conn.execute(
                "SELECT CAST(data AS BLOB) FROM listings WHERE id = ?", (blob_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            self._disable(exc)
            return None
        return row[0] if row is not None else None

    def read_ahead(self, blob_ids: list[bytes]) -> None:
        """Fetch the listings of ``blob_ids`` in few queries; the next ``get`` of each
        is then answered from memory (a walk asks for a directory's subdirectories
        right after it)."""
        with self._lock:
            if self._conn is None or not blob_ids:
                return
            if len(self._ahead) + len(blob_ids) > READ_AHEAD:
                self._ahead.clear()
                blob_ids = blob_ids[:READ_AHEAD]
            try:
                for k in range(0, len(blob_ids), QUERY_IDS):
                    part = blob_ids[k : k + QUERY_IDS]
                    self._ahead.update(dict.fromkeys(part))
                    marks = ",".join("?" * len(part))
                    query = f"SELECT id, CAST(data AS BLOB) FROM listings WHERE id IN ({marks})"
                    self._ahead.update(self._conn.execute(query, part).fetchall())
            except sqlite3.Error as exc:
                self._disable(exc)

    def put(self, blob_id: bytes, listing: CompactListing) -> None:
        """Remember ``listing`` for ``blob_id`` (written in batches; ``close`` ends one)."""
        if self._conn is None:
            return
        data = listing.encode()
        with self._pending_lock:
            self._pending[blob_id] = data
            full = len(self._pending) >= WRITE_BATCH
        if full:
            with self._lock:
                self._write()

    def drop(self, blob_id: bytes) -> None:
        """Forget the listing of ``blob_id`` (it disagreed with the tree blob)."""
        with self._pending_lock:
            self._pending.pop(blob_id, None)
        with self._lock:
            self._ahead.pop(blob_id, None)
            if self._conn is None:
                return
            try:
                self._conn.execute("DELETE FROM listings WHERE id = ?", (blob_id,))
            except sqlite3.Error as exc:
                self._disable(exc)

    def close(self) -> None:
        """Write what is pending and close the file."""
        with self._lock:
            self._write()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _write(self) -> None:
        """Write the pending rows; the caller holds the lock."""
        with self._pending_lock:
            rows, self._pending = list(self._pending.items()), {}
        if not rows or self._conn is None:
            return
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT OR REPLACE INTO listings VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        log.warning("listing cache %s disabled for this task: %s", self.path, exc)
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        with self._pending_lock:
            self._pending.clear()
        self._ahead.clear()


def load_prev_blob(
    repo: RepositoryPort,
    cache: ListingCache | None,
    blob_id: bytes,
    vouched: Callable[[NodeMap], bool] | None = None,
) -> PrevBlob:
    """A previous tree blob for change detection: its cached compact listing, else the
    decoded blob (whose listing is then cached).

    The listings of its subdirectories are read ahead, except those of a subdirectory
    for which ``vouched(record)`` is true (the walk will not ask for them: the walk
    helper already found that subtree unchanged)."""
    if cache is not None:
        listing = cache.get(blob_id)
        if listing is not None:
            cache.read_ahead(
                [
                    i
                    for d in listing.dirs
                    if d is not None and (vouched is None or not vouched(d))
                    for i in d.get("st", ())
                ]
            )
            return PrevBlob(repo, blob_id, listing, cache=cache)
    data = repo.get_blob(blob_id)
    maps = load_dir_maps(repo, blob_id, data)
    listing = CompactListing.from_maps(maps)
    if cache is not None:
        cache.put(blob_id, listing)
    return PrevBlob(repo, blob_id, listing, maps, data=data)
