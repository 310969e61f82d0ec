"""RepositoryWriter: adds blobs into packs, publishes index segments and restore points.

Threading: ``add_blob`` may be called from several threads.  Compression and
encryption run in the calling thread (the native libraries release the GIL);
finished packs are uploaded by a small pool, and callers block when too many
packs are waiting, so memory stays bounded.

Publishing order (what makes crashes harmless): pack -> index segment listing
it -> restore point reaching it.  Each step starts only after the previous one
is durable.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ferryman.repository import blob, compression, crypto, gc_state, index, pack, unindexed
from ferryman.repository.blob_filter import BlobFilter
from ferryman.repository.errors import LeaseExpired, RepositoryError
from ferryman.repository.index import IndexEntry
from ferryman.repository.lease import WriterLease, list_leases
from ferryman.repository.pack_buffers import POOL, OpenPack
from ferryman.repository.restore_point import (
    POINTS_PREFIX,
    RestorePoint,
    new_point_id,
    seal_point,
)
from ferryman.repository.scratch import ScratchDB

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository

log = logging.getLogger(__name__)

DEFAULT_PACK_SIZE = 16 << 20
DEFAULT_TREE_PACK_SIZE = 4 << 20
DEFAULT_UPLOADS = 2
# Index segments are published as packs land, so that a writer that dies leaves little
# stored-but-unindexed data (which the next attempt cannot see, so sends again): a
# segment is due when the unindexed packs reach 1/UNINDEXED_SHARE of all the bytes this
# writer uploaded, or PACKS_PER_SEGMENT packs.  Early in a session that is one segment
# per pack; later one per ~128 MiB.  Checkpoints (``flush``) publish one as well.
PACKS_PER_SEGMENT = 8
# Room past a pack's target size in its buffer (for the record that crosses the target,
# and the table): a record that does not fit closes the pack a little early, and a
# record larger than a whole buffer gets one of its own.  Was a whole chunk (4 MiB):
# each of the (up to 4) buffers in use is zero-filled, i.e. resident, in full.
PACK_HEADROOM = (1 << 20) + (64 << 10)
UNINDEXED_SHARE = 16
# Ids claimed by a writer session are written to its scratch table this many per
# statement (one multi-row INSERT: a statement per blob cost a GIL hand-off per blob).
SESSION_INSERT_ROWS = 512
_SESSION_INSERT = "INSERT OR IGNORE INTO session VALUES " + ",".join(["(?)"] * SESSION_INSERT_ROWS)


def _check_compressed(method: int, body: bytes | bytearray | memoryview, raw_len: int) -> None:
    """Refuse a body compressed elsewhere that cannot be what it claims to be."""
    if method not in (compression.COMPRESSION_NONE, compression.COMPRESSION_ZSTD):
        raise ValueError(f"unknown compression method {method}")
    if not 0 <= raw_len <= blob.MAX_BLOB_SIZE:
        raise ValueError(f"blob of {raw_len} bytes exceeds {blob.MAX_BLOB_SIZE}")
    if method == compression.COMPRESSION_NONE and len(body) != raw_len:
        raise ValueError("a stored (uncompressed) body must be the blob's raw length")


class RepositoryWriter:
    """One writing session (a backup task).  Use as a context manager."""

    def __init__(
        self,
        repo: Repository,
        name: str,
        *,
        pack_size: int = DEFAULT_PACK_SIZE,
        tree_pack_size: int = DEFAULT_TREE_PACK_SIZE,
        uploads: int = DEFAULT_UPLOADS,
        compression_level: int = compression.DEFAULT_LEVEL,
        lease_timeout: float | None = None,
    ) -> None:
        self.repo = repo
        self.name = name
        self.id = secrets.token_hex(16)
        self.compression_level = compression_level
        self._target = {blob.KIND_DATA: pack_size, blob.KIND_TREE: tree_pack_size}
        self._backend = repo.backend
        self._key = repo.keys.encryption
        # 1. lease first, 2. then the GC state: see "Garbage collection" in docs/format.md.
        self._lease = WriterLease(
            repo.backend, self._key, self.id, name, lease_timeout or repo.lease_timeout
        )
        self._lease.acquire()
        try:
            self._condemned = gc_state.condemned_packs(repo.backend, self._key)
            repo.sync_index()
        except BaseException:
            with contextlib.suppress(RepositoryError):
                self._lease.release()
            raise
        self._scratch = ScratchDB(repo.cache_path / f"writer-{self.id}.sqlite")
        self._session = self._scratch.conn
        self._session.execute("CREATE TABLE session (id BLOB PRIMARY KEY) WITHOUT ROWID")
        # One transaction for the whole session: no per-insert commit (the file is scratch).
        self._session.execute("BEGIN")
        self._session_lock = threading.Lock()
        self._session_filter = BlobFilter()
        self._session_pending: set[bytes] = set()  # claimed, not yet in the session table
        # Claimed, not yet written into a pack: another thread may already reference one (it
        # deduplicates against the claim), so a flush waits for those claimed before it began.
        self._unstored: set[bytes] = set()
        self._stored_cv = threading.Condition(self._session_lock)
        self._lock = threading.Condition()
        self._open: dict[int, OpenPack | None] = {blob.KIND_DATA: None, blob.KIND_TREE: None}
        self._closing: list[OpenPack] = []
        self._submitting = 0  # packs taken for upload whose future is not recorded yet
        self._pool = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="pack-upload")
        # Pack buffers in use (open, waiting, uploading) are bounded: memory stays flat.
        self._slots = threading.BoundedSemaphore(uploads + 2)
        self._headroom = min(repo.config.chunker.max_size + 4096, PACK_HEADROOM)
        self._entries_lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._pending_entries: list[IndexEntry] = []
        self._pending_packs = 0
        self._pending_bytes = 0  # size of the uploaded packs no segment lists yet
        self._uploaded_bytes = 0
        self._segment_lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False
        # bytes_stored: records added to packs; bytes_published: pack objects durably written
        # *and* listed by a durable index segment (what a writer that dies now leaves
        # behind for the next attempt to reuse: an unindexed pack is garbage, §13.1)
        self.stats = {
            "blobs_new": 0,
            "blobs_dedup": 0,
            "bytes_raw": 0,
            "bytes_stored": 0,
            "bytes_published": 0,
        }
        POOL.writer_opened()

    # -- dedup ---------------------------------------------------------------------------------

    def _in_session(self, blob_id: bytes) -> bool:
        if blob_id not in self._session_filter:
            return False
        with self._session_lock:
            return blob_id in self._session_pending or self._session_row(blob_id)

    def _session_row(self, blob_id: bytes) -> bool:
        """Caller holds the session lock: whether the scratch table lists ``blob_id``."""
        row = self._session.execute("SELECT 1 FROM session WHERE id=?", (blob_id,)).fetchone()
        return row is not None

    def _claim(self, blob_id: bytes) -> bool:
        """Whether this call is the session's first for ``blob_id`` (which it then stores).

        No SQLite statement per blob: a new id (the filter has never seen it, the
        usual case) goes into a small set that is written to the scratch table
        ``SESSION_INSERT_ROWS`` at a time, in one statement. Every statement
        releases the GIL, so one per blob was a thread hand-off per blob (on the
        reference first backup, the saver threads spent ~9 s of their wall time in
        the per-blob ``INSERT``). Only an id the filter may have seen is looked up.
        """
        with self._session_lock:
            return self._claim_locked(blob_id)

    def _claim_locked(self, blob_id: bytes) -> bool:
        """:meth:`_claim`, the caller holding the session lock.

        A failure here (the scratch table's SQLite) fails the writer: the claims its
        caller made before it (earlier ids of a batch) are never stored though other
        threads may already deduplicate against them, a failed insert drops other
        threads' claims from the session's view, and a flush would wait for ever for
        the claims nobody stores.
        """
        try:
            if blob_id in self._session_pending:
                return False
            # one filter pass: added now (a no-op for an id already in the table)
            if self._session_filter.add(blob_id) and self._session_row(blob_id):
                return False
            self._session_pending.add(blob_id)
            self._unstored.add(blob_id)
            if len(self._session_pending) >= SESSION_INSERT_ROWS:
                rows = list(self._session_pending)
                self._session_pending.clear()
                self._session.execute(_SESSION_INSERT, rows)
        except BaseException as exc:
            self._error = exc
            raise
        return True

    def has_blob(self, blob_id: bytes) -> bool:
        """Whether this writer may reference ``blob_id`` without adding it.

        True if this session added it or the index holds it in a pack that no
        garbage collection has condemned.  A writer must only reference blobs it
        added or for which this returned True (including ids reused from a
        previous restore point's trees).
        """
        locations = self.repo.index_cache.locations(blob_id)
        if any(loc.pack_id not in self._condemned for loc in locations):
            return True
        return self._in_session(blob_id)

    def has_blobs(self, blob_ids: Iterable[bytes]) -> set[bytes]:
        """The subset of ``blob_ids`` for which :meth:`has_blob` is True, in few index queries."""
        ids = list(dict.fromkeys(blob_ids))
        found = self.repo.index_cache.present(ids, self._condemned)
        found.update(b for b in ids if b not in found and self._in_session(b))
        return found

    def trusts_points(self, point_ids: Iterable[str]) -> bool:
        """Whether every blob reachable from these restore points may be referenced
        without asking :meth:`has_blob` for each (docs/format.md §13.1, step 3).

        True when no GC generation was pending when this writer opened (its
        condemned set is empty) and every point still exists now, after the lease:
        a sweep that completed earlier listed those points, so kept what they
        reach; any later mark sees this writer's lease and waits for it.  Checked
        once per task, it spares an unchanged re-run one index query per chunk.
        """
        if self._condemned:
            return False
        ids = list(point_ids)
        return bool(ids) and all(self._backend.exists(POINTS_PREFIX + pid) for pid in ids)

    # -- adding blobs --------------------------------------------------------------------------

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            raise RepositoryError(f"writer failed earlier: {self._error}") from self._error
        if self._closed:
            raise RepositoryError("writer is closed")

    def add_blob(
        self,
        kind: int,
        blob_id: bytes,
        data: bytes | bytearray | memoryview,
        *,
        force: bool = False,
        checked: bool = False,
    ) -> bool:
        """Store ``data`` as blob ``blob_id`` of ``kind`` unless already present.

        Returns False when deduplicated.  ``blob_id`` must be ``repo.blob_id(data)``
        (readers verify it).  ``force`` stores a new copy even if the index has one
        (garbage collection's repacking).  ``checked``: the caller has just asked
        :meth:`has_blobs` for this id (with others, in one query) and got no, so the
        per-blob index lookup is skipped; the session still deduplicates (an id
        indexed meanwhile by another writer is stored twice, which is harmless).
        Thread-safe; may block while too many packs are waiting for upload.
        """
        if len(data) > blob.MAX_BLOB_SIZE:
            raise ValueError(f"blob of {len(data)} bytes exceeds {blob.MAX_BLOB_SIZE}")
        if not self._claim_new(kind, blob_id, force=force, checked=checked):
            return False
        blob_id = bytes(blob_id)
        with self._storing([blob_id]):
            method, body = compression.compress_body(data, self.compression_level)
            self._store(kind, blob_id, method, body, len(data))
        return True

    def add_compressed_blob(
        self,
        kind: int,
        blob_id: bytes,
        method: int,
        body: bytes | bytearray | memoryview,
        raw_len: int,
        *,
        checked: bool = False,
    ) -> bool:
        """:meth:`add_blob` for a blob compressed elsewhere (a saver process).

        ``body`` is ``compression.compress_body``'s output for the ``raw_len`` bytes
        whose id is ``blob_id`` (``method`` says how it was compressed). The same
        deduplication, packing, encryption and stats as :meth:`add_blob`; a body
        whose blob is already present is dropped.
        """
        _check_compressed(method, body, raw_len)
        if not self._claim_new(kind, blob_id, force=False, checked=checked):
            return False
        blob_id = bytes(blob_id)
        with self._storing([blob_id]):
            self._store(kind, blob_id, method, body, raw_len)
        return True

    def add_blobs(
        self,
        kind: int,
        blobs: Sequence[tuple[bytes, bytes | bytearray | memoryview]],
        *,
        checked: bool = False,
    ) -> list[bool]:
        """:meth:`add_blob` for several ``(blob_id, data)`` at once (a batch of small files).

        The same deduplication, compression, packing, encryption and stats; the
        session's claims, the pack reservations and the stats are taken under one
        lock acquisition per batch (per pack) instead of several per blob. Returns,
        in order, whether each blob was stored (False: deduplicated, also for a
        repeated id within ``blobs``).
        """
        for _, data in blobs:
            if len(data) > blob.MAX_BLOB_SIZE:
                raise ValueError(f"blob of {len(data)} bytes exceeds {blob.MAX_BLOB_SIZE}")
        ids = [bytes(blob_id) for blob_id, _ in blobs]
        claimed = self._claim_many(kind, ids, checked=checked)
        level = self.compression_level
        mine = [b for b, new in zip(ids, claimed, strict=True) if new]
        with self._storing(mine):
            compress = compression.compress_body
            records = []
            for blob_id, (_, data), new in zip(ids, blobs, claimed, strict=True):
                if new:
                    method, body = compress(data, level)
                    records.append((blob_id, method, body, len(data)))
            self._store_many(kind, records)
        return claimed

    def add_compressed_blobs(
        self,
        kind: int,
        blobs: Sequence[tuple[bytes, int, bytes | bytearray | memoryview, int]],
        *,
        checked: bool = False,
    ) -> list[bool]:
        """:meth:`add_compressed_blob` for several ``(blob_id, method, body, raw_len)``
        at once, as :meth:`add_blobs` does for raw data."""
        for _, method, body, raw_len in blobs:
            _check_compressed(method, body, raw_len)
        claimed = self._claim_many(kind, [b[0] for b in blobs], checked=checked)
        records = [
            (bytes(blob_id), method, body, raw_len)
            for (blob_id, method, body, raw_len), new in zip(blobs, claimed, strict=True)
            if new
        ]
        with self._storing([r[0] for r in records]):
            self._store_many(kind, records)
        return claimed

    @contextlib.contextmanager
    def _storing(self, blob_ids: list[bytes]) -> Iterator[None]:
        """Around writing the records of ``blob_ids``, just claimed by this call. Another
        thread may already reference one of them (it deduplicated against the claim): if
        writing fails, the writer fails with it, so nothing referencing them is published.
        Once done, a flush waiting for them goes on."""
        try:
            yield
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            raise
        finally:
            if blob_ids:
                with self._stored_cv:
                    self._unstored.difference_update(blob_ids)
                    self._stored_cv.notify_all()

    def _wait_claims_stored(self) -> None:
        """Wait until every blob claimed before this call is in a pack. A blob another
        thread deduplicated against may still be being compressed by its claimant: a
        checkpoint published before it is stored would name a blob that a crash loses."""
        with self._stored_cv:
            waiting = set(self._unstored)
            while waiting:
                waiting.intersection_update(self._unstored)
                if waiting:
                    self._raise_pending_error()
                    self._stored_cv.wait(0.5)

    def _claim_many(self, kind: int, blob_ids: list[bytes], *, checked: bool) -> list[bool]:
        """:meth:`_claim_new` for several ids (never forced), the session lock taken once."""
        ids = [bytes(b) for b in blob_ids]
        self._check_claimable(kind, ids)
        claim = self._claim_locked
        if checked:  # the usual case (a batch of small files): no per-id index lookup
            with self._session_lock:
                claimed = [claim(b) for b in ids]
        else:
            have = self.has_blobs(ids)  # one index query for the batch
            wanted = [b not in have for b in ids]
            with self._session_lock:
                claimed = [want and claim(b) for b, want in zip(ids, wanted, strict=True)]
        dedup = len(claimed) - sum(claimed)
        if dedup:
            with self._lock:
                self.stats["blobs_dedup"] += dedup
        return claimed

    def _store_many(self, kind: int, records: list[tuple[bytes, int, Any, int]]) -> None:
        """:meth:`_store` for several claimed records: those that fit the open pack are
        reserved together, written, then released together (one pack at a time)."""
        target = self._target[kind]
        i = 0
        while i < len(records):
            placed: list[tuple[pack.PackEntry, Any]] = []
            ready: list[OpenPack] = []
            with self._lock:
                current = self._open[kind]
                if current is not None:
                    builder = current.builder
                    while i < len(records) and builder.size < target:
                        blob_id, method, body, raw_len = records[i]
                        payload = 1 + len(body)
                        if builder.size + crypto.NONCE_SIZE + payload + crypto.TAG_SIZE > (
                            builder.capacity
                        ):
                            break
                        placed.append(
                            (builder.reserve(blob_id, kind, payload, raw_len, method), body)
                        )
                        i += 1
                    if placed:
                        current.users += 1
                        if builder.size >= target:
                            self._close(kind)
                            ready = self._take_ready()
            for item in ready:
                self._submit(item)
            if not placed:  # no open pack, or the next record does not fit in it
                self._store(kind, *records[i])
                i += 1
                continue
            assert current is not None
            self._write_reserved(current, placed)

    def _check_claimable(self, kind: int, blob_ids: list[bytes]) -> None:
        """Refuse to claim for a failed or closed writer, an unknown kind or a bad id."""
        self._raise_pending_error()
        if kind not in blob.KIND_NAMES:
            raise ValueError(f"unknown blob kind {kind}")
        if any(len(b) != crypto.BLOB_ID_SIZE for b in blob_ids):
            raise ValueError("blob ids are 32 bytes")

    def _claim_new(self, kind: int, blob_id: bytes, *, force: bool, checked: bool) -> bool:
        """Check the arguments; True when this call is the one to store ``blob_id``."""
        blob_id = bytes(blob_id)
        self._check_claimable(kind, [blob_id])
        if (not force and not checked and self.has_blob(blob_id)) or not self._claim(blob_id):
            with self._lock:
                self.stats["blobs_dedup"] += 1
            return False
        return True

    def _store(
        self,
        kind: int,
        blob_id: bytes,
        method: int,
        body: bytes | bytearray | memoryview,
        raw_len: int,
    ) -> None:
        """Encrypt and write one claimed blob's record into the open pack of ``kind``."""
        current, entry = self._reserve(kind, bytes(blob_id), 1 + len(body), raw_len, method)
        self._write_reserved(current, [(entry, body)])

    def _write_reserved(self, current: OpenPack, placed: list[tuple[pack.PackEntry, Any]]) -> None:
        """Encrypt and write records reserved in ``current`` (which counts this call among
        its users), then release it and submit the packs that became ready."""
        try:
            current.builder.write_many(placed)
        except BaseException as exc:
            self._error = exc  # the pack now holds a bad record: publish nothing more
            raise
        finally:
            raw = stored = 0
            for entry, _ in placed:
                raw += entry.raw_length
                stored += entry.length
            with self._lock:
                current.users -= 1
                ready = self._take_ready()
                stats = self.stats
                stats["blobs_new"] += len(placed)
                stats["bytes_raw"] += raw
                stats["bytes_stored"] += stored
            for item in ready:  # after a failure: released, not uploaded (_submit)
                self._submit(item)

    def _reserve(
        self, kind: int, blob_id: bytes, payload: int, raw: int, method: int
    ) -> tuple[OpenPack, pack.PackEntry]:
        """Reserve room in the open pack of ``kind``, opening a new pack if needed.

        Waiting for a free buffer happens outside the lock so that uploads and
        other writers always make progress.
        """
        need = crypto.NONCE_SIZE + payload + crypto.TAG_SIZE
        while True:
            ready: list[OpenPack] = []
            with self._lock:
                current = self._open[kind]
                if current is not None and current.builder.size + need <= current.builder.capacity:
                    entry = current.builder.reserve(blob_id, kind, payload, raw, method)
                    current.users += 1
                    if current.builder.size >= self._target[kind]:
                        self._close(kind)
                        ready = self._take_ready()
                    break
                if current is not None:
                    self._close(kind)
                    ready = self._take_ready()
            for item in ready:
                self._submit(item)
            fresh = self._new_pack(kind, need)
            with self._lock:
                installed = self._open[kind] is None
                if installed:
                    self._open[kind] = fresh
            if not installed:  # another thread opened one meanwhile
                self._release_buffer(fresh)
        for item in ready:
            self._submit(item)
        return current, entry

    def _new_pack(self, kind: int, need: int) -> OpenPack:
        self._slots.acquire()
        capacity = self._target[kind] + self._headroom
        if pack.HEADER_SIZE + need > capacity:
            buffer, pooled = bytearray(pack.HEADER_SIZE + need), False
        else:
            buffer, pooled = POOL.take(capacity), True
        return OpenPack(pack.PackBuilder(self._key, kind, buffer), pooled)

    def _release_buffer(self, item: OpenPack) -> None:
        capacity = self._target[item.builder.kind] + self._headroom
        if item.pooled and len(item.builder.buffer) == capacity:
            POOL.give(item.builder.buffer)
        self._slots.release()

    def _close(self, kind: int) -> None:
        """Caller holds the lock: the open pack of ``kind`` takes no more records."""
        current = self._open[kind]
        if current is not None:
            self._open[kind] = None
            current.closing = True
            self._closing.append(current)

    def _take_ready(self) -> list[OpenPack]:
        """Caller holds the lock: closing packs nobody writes into any more (each once)."""
        ready = [p for p in self._closing if p.users == 0 and not p.submitted]
        for p in ready:
            p.submitted = True
        self._submitting += len(ready)
        self._closing = [p for p in self._closing if not p.submitted]
        if ready or not self._closing:
            self._lock.notify_all()
        return ready

    def _submit(self, item: OpenPack) -> None:
        """Finish a pack and hand it to the upload pool (counted until its future is known).

        Once the writer has failed nothing more is uploaded: a pack may hold a record whose
        write failed, and indexing it would let other sessions deduplicate against a blob
        that cannot be read (its buffer is released instead)."""
        fut = None
        try:
            if item.builder.entries and self._error is None:
                data = item.builder.finish()
                fut = self._pool.submit(self._upload, item, data)
        finally:
            if fut is None:
                self._release_buffer(item)
            with self._lock:
                if fut is not None:
                    self._futures.add(fut)
                self._submitting -= 1
                self._lock.notify_all()

    def _upload(self, item: OpenPack, data: memoryview) -> None:
        builder = item.builder
        try:
            self._backend.put(pack.pack_name(builder.kind, builder.pack_id), data)
            entries = IndexEntry.of_pack(bytes.fromhex(builder.pack_id), builder.entries)
            with self._entries_lock:
                self._pending_entries.extend(entries)
                self._pending_packs += 1
                self._pending_bytes += len(data)
                self._uploaded_bytes += len(data)
                due = (
                    self._pending_packs >= PACKS_PER_SEGMENT
                    or self._pending_bytes * UNINDEXED_SHARE >= self._uploaded_bytes
                    or len(self._pending_entries) >= index.MAX_ENTRIES_PER_SEGMENT // 4
                )
            if due:
                self._write_segment()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            data.release()
            self._release_buffer(item)

    def _write_segment(self) -> None:
        with self._segment_lock:
            with self._entries_lock:
                entries, self._pending_entries = self._pending_entries, []
                published = self._pending_bytes
                self._pending_packs = self._pending_bytes = 0
            if not entries:
                return
            self._put_segment(entries)
            with self._lock:
                self.stats["bytes_published"] += published

    def _put_segment(self, entries: list[IndexEntry]) -> None:
        """Caller holds the segment lock: publish one segment listing ``entries``."""
        self._lease.ensure_valid()
        name = index.put_segment(self._backend, self._key, entries)
        self.repo.index_cache.merge(name, iter(entries))

    # -- resuming an interrupted task ------------------------------------------------------------

    def has_predecessor(self) -> bool:
        """Whether another writer lease of this name exists: an earlier attempt of the
        same task that died (its lease lingers until it expires) or one still running."""
        return any(
            lease.name == self.name and lease.id != self.id
            for lease in list_leases(self._backend, self._key)
        )

    def adopt_unindexed_packs(self) -> int:
        """Index the packs present that no segment lists and no GC condemned: what an
        interrupted attempt stored but never published (docs/format.md §13.1, step 4a).

        Afterwards their blobs pass :meth:`has_blob`, so a resumed task does not store
        them again. One listing of the packs and a few range reads per unindexed pack:
        call it when resuming, not for every task. Returns the record bytes adopted.
        """
        self._raise_pending_error()
        found = unindexed.unindexed_packs(self.repo, self._condemned)
        batch: list[IndexEntry] = []
        adopted = packs = 0
        for entries in unindexed.adoptable_entries(self.repo, found):
            batch.extend(entries)
            adopted += sum(e.length for e in entries)
            packs += 1
            if len(batch) >= index.MAX_ENTRIES_PER_SEGMENT // 4:
                with self._segment_lock:
                    self._put_segment(batch)
                batch = []
        if batch:
            with self._segment_lock:
                self._put_segment(batch)
        if packs:
            log.info("writer %s adopted %d unindexed packs (%d bytes)", self.name, packs, adopted)
        return adopted

    # -- checkpoints and publishing ------------------------------------------------------------

    def _wait_uploads(self) -> None:
        with self._lock:
            futures = list(self._futures)
            self._futures.clear()
        errors = []
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                errors.append(exc)
        if errors:
            self._error = errors[0]
            if isinstance(errors[0], LeaseExpired):  # from a segment published after a pack
                raise errors[0]
            raise RepositoryError(f"pack upload failed: {errors[0]}") from errors[0]

    def flush(self) -> None:
        """Checkpoint: close open packs, wait for their upload, publish an index segment.

        After it returns every blob added so far is durable and indexed, and so is every
        blob :meth:`has_blob` approved because this session had claimed it.
        """
        self._raise_pending_error()
        self._wait_claims_stored()
        with self._lock:
            for kind in list(self._open):
                self._close(kind)
        while True:
            with self._lock:
                ready = self._take_ready()
                if not ready:
                    if not self._closing and not self._submitting:
                        break
                    self._lock.wait()
            for item in ready:
                self._submit(item)
        self._wait_uploads()
        self._write_segment()

    def save_restore_point(
        self,
        *,
        share: str,
        root: bytes,
        job: str = "",
        session: str = "",
        time_: float | None = None,
        hostname: str = "",
        proxy: str = "",
        parent: str | None = None,
        checkpoint: bool = False,
        partitions: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> RestorePoint:
        """Flush, then publish a restore point whose root tree is ``root``.

        Every blob reachable from ``root`` must have been added by this writer or
        approved by :meth:`has_blob`.
        """
        if len(root) != crypto.BLOB_ID_SIZE:
            raise ValueError("root must be a 32-byte tree blob id")
        self.flush()
        point = RestorePoint(
            id=new_point_id(),
            share=share,
            root=bytes(root),
            time=time.time() if time_ is None else time_,
            job=job,
            session=session,
            hostname=hostname,
            proxy=proxy,
            parent=parent,
            checkpoint=checkpoint,
            partitions=partitions or [],
            stats=stats or {},
            extra=extra or {},
        )
        self._lease.ensure_valid()
        self._backend.put(point.name, seal_point(self._key, point))
        return point

    def close(self, *, flush: bool = True) -> None:
        """Flush (unless told not to), stop uploads and release the writer lease."""
        if self._closed:
            return
        try:
            if flush and self._error is None:
                self.flush()
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)
            with contextlib.suppress(RepositoryError):
                if self._error is None:
                    self._write_segment()
            with contextlib.suppress(RepositoryError):
                self._lease.release()  # if the delete fails the lease simply expires
            with self._session_lock:
                self._scratch.close()
            POOL.writer_closed()

    def __enter__(self) -> RepositoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(flush=exc_type is None)
