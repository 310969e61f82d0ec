"""Reading, chunking, hashing and storing file contents on a pool of worker threads.

Two paths, both with ~1 MiB work items so native code (FastCDC, BLAKE3, zstd,
AES-GCM) runs with the GIL released on every core:

* small files (≤ ``SMALL_FILE_LIMIT``) are batched (up to ``BATCH_BYTES`` or
  ``BATCH_FILES``); one worker job opens, reads, chunks and stores a whole batch,
  so there is no per-file round trip between threads; for a local source, past
  ``PROCESS_AFTER_FILES`` small files, batches go to saver processes instead
  (``save_procs``: read, cut, hash and compress there; dedup, encryption and
  storing here, ``add_compressed_blobs``), so per-file Python work leaves this
  process's GIL; those batches are larger (``PROCESS_BATCH_BYTES`` /
  ``PROCESS_BATCH_FILES``): what is left here is paid per batch;
* large files are read by one reader thread (the walk goes on) in ``SEGMENT`` pieces,
  cut with FastCDC (the last, open-ended chunk of a segment is carried into the
  next one, so cut points equal whole-file chunking), and every chunk becomes its
  own job: one large file is spread over all workers.

Bytes in flight are bounded by a byte budget, so memory stays flat. Files are
read with ``pread`` (never mmap: a file truncated while mapped kills the process
with SIGBUS). A file whose size/mtime/ctime change while read is read once more,
then kept with a warning.

Checkpoints and cancellation reach inside a large file: its chunk jobs are kept in
file order (``LargeRead``), so the stored prefix can be checkpointed while the rest
is still being read; a cancel stops the reader at the next segment and the file's
outcome is that prefix (``FileOutcome.partial``). A resumed task passes the prefix
back (``save_large(resume=...)``) and reads only from where it ends.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ferryman.engine import save_procs
from ferryman.engine.io_governor import IoGovernor, ReadMeter
from ferryman.engine.ports import Chunker, RepositoryPort, WriterPort
from ferryman.engine.small_files import (
    CHANGED_WARNING,
    Tally,
    changed,
    cut_pieces,
    describe_os_error,
    read_small_file,
    ungated,
    xattrs_of,
)
from ferryman.engine.small_files import count as _count
from ferryman.engine.stats import StatsCollector
from ferryman.repository.blob import KIND_DATA
from ferryman.sources.base import SourceDir, SourceFile
from ferryman.sources.local import LocalDir
from ferryman.sources.metadata import holes_from_extents, is_probably_sparse

__all__ = [
    "FileOutcome",
    "FileSaver",
    "PartialContent",
    "PendingContent",
    "describe_os_error",
]

log = logging.getLogger(__name__)

SMALL_FILE_LIMIT = 4 << 20
BATCH_BYTES = 2 << 20
BATCH_FILES = 64
SEGMENT = 8 << 20
LARGE_GROWTH_LIMIT = 4 * SEGMENT  # how far past its size at open a growing large file is read
# (whole-file reads of small files stop at sources.base.GROWTH_LIMIT)
FILE_CHARGE = 4096  # budget bytes charged per small file on top of its size
LARGE_FILES_QUEUED = 8
HUGE_PAGE_MIN = 4 << 20  # segment buffers from this size ask for transparent huge pages
# Saver processes (a local source, FileSaver(processes > 0)) start once this many small
# files went to the threads: a small or unchanged share does not pay for starting them.
# The threads go on until a worker is up; 0: every batch goes to the processes (queued
# there while they start).
PROCESS_AFTER_FILES = 2_000
# A batch for the saver processes is larger: its fixed costs in this process (sending
# it, taking the result from the pipe, the future's hand-off to a saver thread, one
# index query, one add, its directory handles, budget and stats) hold this process's
# GIL, which the walk and the tree saver also need (64 files / 2 MiB: ~950 batches on
# the reference share; 256 / 4 MiB: ~290).
PROCESS_BATCH_BYTES = 4 << 20
PROCESS_BATCH_FILES = 256
DATA = KIND_DATA


@dataclass(slots=True)
class PartialContent:
    """The stored prefix of a large file: chunks covering bytes ``[0, size)``.

    ``st`` is the file's stat when that prefix was read; the prefix may be reused
    only while the file's size, mtime, ctime and inode still equal it.
    """

    content: list[bytes]
    size: int
    st: os.stat_result


@dataclass(slots=True)
class FileOutcome:
    """Result of saving one file's content."""

    content: list[bytes] = field(default_factory=list)
    size: int = 0
    holes: list[tuple[int, int]] = field(default_factory=list)
    warning: str | None = None  # degraded but stored
    error: str | None = None  # not stored: the entry is skipped
    xattrs: dict[bytes, bytes] | None = None  # read through the fd when asked
    interrupted: bool = False  # the task was cancelled before the file was read to its end
    partial: PartialContent | None = None  # when interrupted: the prefix stored (if any)


class LargeRead:
    """Chunk jobs of one large file in file order, readable while the file is read."""

    __slots__ = ("_chunks", "_lock", "_st")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[tuple[Future[bytes], int]] = []  # (job, end offset of the chunk)
        self._st: os.stat_result | None = None  # None: no reusable prefix (sparse, changed)

    def start(self, st: os.stat_result | None, resume: PartialContent | None = None) -> None:
        """A (new) read attempt under ``st``; ``resume`` supplies the stored prefix."""
        with self._lock:
            self._st = st
            self._chunks = []
            if resume is not None:
                for blob_id in resume.content:  # all stored: their ends are never looked at
                    done: Future[bytes] = Future()
                    done.set_result(blob_id)
                    self._chunks.append((done, resume.size))

    def add(self, job: Future[bytes], end: int) -> None:
        """The reader submitted the chunk ending at offset ``end``."""
        with self._lock:
            self._chunks.append((job, end))

    def jobs(self) -> list[Future[bytes]]:
        """Every chunk job submitted so far, in file order."""
        with self._lock:
            return [job for job, _ in self._chunks]

    def stored_prefix(self) -> PartialContent | None:
        """The longest prefix whose chunks are all stored (None if empty or unusable)."""
        with self._lock:
            st, chunks = self._st, list(self._chunks)
        if st is None:
            return None
        ids: list[bytes] = []
        end = 0
        for job, stop in chunks:
            if not job.done() or job.exception() is not None:
                break
            ids.append(job.result())
            end = stop
        return PartialContent(ids, end, st) if ids else None


class PendingContent:
    """A file whose content is being stored; ``result()`` blocks until it is.

    Large files also expose ``progress`` (their chunk jobs so far) and ``wait``, so
    the tree saver can checkpoint the stored prefix while the rest is being read.
    """

    __slots__ = ("_resolve", "_value", "_wait", "progress")

    def __init__(
        self,
        resolve: Callable[[], FileOutcome],
        wait: Callable[[float], bool] | None = None,
        progress: LargeRead | None = None,
    ) -> None:
        self._resolve = resolve
        self._value: FileOutcome | None = None
        self._wait = wait
        self.progress = progress

    def wait(self, timeout: float) -> bool:
        """Whether the outcome is ready within ``timeout`` seconds (small files: assumed)."""
        if self._value is not None or self._wait is None:
            return True
        return self._wait(max(0.0, timeout))

    def result(self) -> FileOutcome:
        """Wait for and return the outcome (cached; hardlinks share one)."""
        if self._value is None:
            self._value = self._resolve()
        return self._value


class ByteBudget:
    """Bounds the bytes queued or being processed by the workers."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()
        self._wanted: list[int] = []  # what each blocked acquire waits for

    def acquire(self, n: int) -> None:
        """Block until ``n`` more bytes fit (a single item larger than the limit still fits)."""
        with self._cond:
            if self._used > 0 and self._used + n > self._limit:
                self._wanted.append(n)
                try:
                    while self._used > 0 and self._used + n > self._limit:
                        self._cond.wait()
                finally:
                    self._wanted.remove(n)
            self._used += n

    def release(self, n: int) -> None:
        """Return ``n`` bytes; waiters are woken only once one of them fits (every chunk
        stored releases: waking the walk each time to find its batch still too big
        was a thread hand-off per chunk)."""
        with self._cond:
            self._used -= n
            if self._wanted and (self._used <= 0 or self._used + min(self._wanted) <= self._limit):
                self._cond.notify_all()


def _count_stored(
    tally: Tally,
    processing: float,
    writing: float,
    chunks: int,
    nbytes: int,
    new_chunks: int,
    new_bytes: int,
) -> None:
    """Count a batch of small files' chunks (``chunks`` of ``nbytes``, repeats included),
    of which ``new_chunks``/``new_bytes`` were stored and the rest deduplicated."""
    _count(
        tally,
        seconds_processing=processing,
        seconds_repository_write=writing,
        chunks_new=new_chunks,
        bytes_new=new_bytes,
        chunks_deduplicated=chunks - new_chunks,
        bytes_deduplicated=nbytes - new_bytes,
    )


def _segment_buffer(size: int) -> mmap.mmap:
    """A large file's read buffer: an anonymous mapping, not a ``bytearray``.

    A ``bytearray`` is zero-filled by Python while holding the GIL (8 MiB: ~5 ms,
    ~0.45 s of GIL time per GB read, which the saver threads wait on); a fresh
    mapping's pages are zero-filled by the kernel on first touch, inside the
    read, with the GIL released. The chunks cut from it are memoryviews that keep
    the mapping alive until they are stored. Private, not Python's default shared
    anonymous mapping: a shared one is shmem (tmpfs) memory, whose page faults go
    through the page cache and which never gets transparent huge pages.
    """
    buf = mmap.mmap(-1, max(1, size), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE_MIN and hasattr(mmap, "MADV_HUGEPAGE"):
        # fewer page faults (2 MiB at a time) where the kernel only gives huge pages
        # to mappings that ask ("madvise" mode); a mere hint, so errors are ignored
        with contextlib.suppress(OSError):
            buf.madvise(mmap.MADV_HUGEPAGE)
    return buf


class _ReadCancelled(Exception):
    """The task was cancelled while a large file was being read."""


_changed = changed


@dataclass(slots=True)
class _SmallItem:
    dir: SourceDir
    name: bytes
    st: os.stat_result
    index: int


class FileSaver:
    """Stores file contents through a worker pool; one instance per backup task."""

    def __init__(
        self,
        repo: RepositoryPort,
        writer: WriterPort,
        collector: StatsCollector,
        workers: int = 2,
        max_inflight_bytes: int = 64 << 20,
        read_xattrs: bool = True,
        cancel: threading.Event | None = None,
        governor: IoGovernor | None = None,
        processes: int = 0,
    ) -> None:
        """``processes`` > 0: small-file batches of local directories (``LocalDir``)
        go to that many worker processes (``save_procs``) once
        ``PROCESS_AFTER_FILES`` small files were saved; not with a ``governor``
        (it gates reads in this process)."""
        self.read_xattrs = read_xattrs
        self._governor = governor  # adaptive I/O: a token per source read while it runs
        self._cancel = cancel  # stops large-file reads at the next segment
        self._repo = repo
        self._writer = writer
        self._stats = collector
        self._local = threading.local()  # chunkers are not thread-safe: one per thread
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="saver")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-reader")
        self._large_slots = threading.BoundedSemaphore(LARGE_FILES_QUEUED)
        self._budget = ByteBudget(max_inflight_bytes)
        self._batch: list[_SmallItem] = []
        self._batch_bytes = 0
        self._batch_future: Future[list[FileOutcome]] = Future()
        self._small_files = 0
        self._procs_wanted = processes if governor is None else 0
        self._procs: ProcessPoolExecutor | None = None
        self._procs_warm: Future[int] | None = None
        self._procs_off = self._procs_wanted <= 0
        self._procs_used = False  # a batch went to the processes: larger batches from then on
        # the directories of the last batch sent to the processes (see _dir_files); it
        # holds them (not their descriptors: those close when the batches release them)
        self._dir_idents: dict[LocalDir, tuple[int, int]] = {}
        self._procs_lock = threading.Lock()
        self._procs_idle = threading.Condition(self._procs_lock)
        self._procs_batches = 0  # batches sent to the processes and not finished here
        self.worker_pids: set[int] = set()  # saver processes that saved a batch
        self._procs_results = 0
        self.worker_peak_rss_kb = 0  # sum over them, sampled as their batches come back

    @property
    def _chunker(self) -> Chunker:
        chunker: Chunker | None = getattr(self._local, "chunker", None)
        if chunker is None:
            chunker = self._repo.chunker()
            self._local.chunker = chunker
        return chunker

    # -- small files -------------------------------------------------------------

    def save_small(self, dir: SourceDir, name: bytes, st: os.stat_result) -> PendingContent:
        """Queue a small file in the current batch."""
        batch = self._batch
        if not batch or batch[-1].dir is not dir:
            dir.retain()  # one reference per run of a directory's files (released in _settle)
        item = _SmallItem(dir, name, st, len(batch))
        batch.append(item)
        self._batch_bytes += st.st_size
        fut = self._batch_future
        pending = PendingContent(lambda: fut.result()[item.index])
        if self._procs_used and not self._procs_off:
            full = self._batch_bytes >= PROCESS_BATCH_BYTES or len(batch) >= PROCESS_BATCH_FILES
        else:
            full = self._batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES
        if full:
            self.flush_batch()
        return pending

    def flush_batch(self) -> None:
        """Submit the current batch (call before waiting on any of its files)."""
        if not self._batch:
            return
        # a per-file charge bounds how many (tiny) files and open dir handles are queued
        nbytes = self._batch_bytes + FILE_CHARGE * len(self._batch)
        batch, fut = self._batch, self._batch_future
        self._batch, self._batch_bytes, self._batch_future = [], 0, Future()
        self._budget.acquire(nbytes)
        self._small_files += len(batch)
        procs = self._processes()
        if procs is not None and self._submit_to_processes(procs, batch, fut, nbytes):
            return

        def run() -> None:
            self._settle(batch, fut, nbytes, lambda tally: self._save_small_batch(batch, tally))

        self._pool.submit(run)

    def _settle(
        self,
        batch: list[_SmallItem],
        fut: Future[list[FileOutcome]],
        nbytes: int,
        save: Callable[[Tally], list[FileOutcome]],
    ) -> None:
        """Resolve a batch's future with ``save(tally)`` (or its exception, surfaced to the
        tree saver), then release its directory handles and budget and add its tally:
        one locked stats update per batch, not per file."""
        tally: Tally = {}
        try:
            fut.set_result(save(tally))
        except BaseException as exc:
            fut.set_exception(exc)
        finally:
            last: SourceDir | None = None
            for it in batch:  # the references save_small took: one per run of a directory
                if it.dir is not last:
                    it.dir.release()
                    last = it.dir
            self._budget.release(nbytes)
            self._stats.add(**tally)

    def _save_small_batch(self, batch: list[_SmallItem], tally: Tally) -> list[FileOutcome]:
        """Read every file of a batch, then store their chunks.

        The chunks' presence in the index is asked once for the whole batch
        (``writer.has_blobs``) instead of once per chunk inside ``add_blob``: on a
        share of small files that per-chunk SQLite query was the largest piece of
        Python (GIL-held) time per file.
        """
        reads = [
            read_small_file(
                it.dir, it.name, it.st, tally, read_xattrs=self.read_xattrs, gate=self._source_read
            )
            for it in batch
        ]
        t0 = time.perf_counter()
        chunker = self._chunker
        blob_id = self._repo.blob_id
        cut: list[list[bytes]] = []  # each file's chunk ids, in file order
        distinct: dict[bytes, bytes | memoryview] = {}  # the batch's chunks, each once
        chunks = nbytes = 0
        for r in reads:
            ids: list[bytes] = []
            if r.error is None:
                for piece in cut_pieces(chunker, r.data):
                    b = blob_id(piece)
                    ids.append(b)
                    nbytes += len(piece)
                    if b not in distinct:
                        distinct[b] = piece
                chunks += len(ids)
            cut.append(ids)
        present = self._writer.has_blobs(distinct) if distinct else set()
        t1 = time.perf_counter()
        # the batch's chunks not in the repository, each once, stored with one call
        absent = [(b, p) for b, p in distinct.items() if b not in present]
        added = self._writer.add_blobs(DATA, absent, checked=True) if absent else []
        t2 = time.perf_counter()
        new_bytes = sum(len(p) for (_, p), new in zip(absent, added, strict=True) if new)
        _count_stored(tally, t1 - t0, t2 - t1, chunks, nbytes, sum(added), new_bytes)
        outcomes: list[FileOutcome] = []
        for r, ids in zip(reads, cut, strict=True):
            if r.error is not None:
                outcomes.append(FileOutcome(error=r.error))
                continue
            warning = CHANGED_WARNING if r.changed else None
            outcomes.append(FileOutcome(ids, len(r.data), warning=warning, xattrs=r.xattrs))
        return outcomes

    # -- small files in saver processes (local sources) ----------------------------

    def _processes(self) -> ProcessPoolExecutor | None:
        """The saver processes once started and ready; None: save in this process."""
        if self._procs_off:
            return None
        if self._procs is None:
            if self._small_files <= PROCESS_AFTER_FILES:
                return None
            self._start_processes()
        warm = self._procs_warm
        if warm is None:
            return None
        if not warm.done():
            # starting: the threads go on meanwhile (unless told to wait: threshold 0)
            return self._procs if PROCESS_AFTER_FILES == 0 else None
        if warm.cancelled() or warm.exception() is not None:
            reason = "cancelled" if warm.cancelled() else warm.exception()
            self._processes_failed(f"saver processes did not start ({reason})")
            return None
        return self._procs

    def _start_processes(self) -> None:
        try:
            setup = save_procs.worker_setup(self._repo, self._writer, self.read_xattrs)
            if setup is None:
                self._procs_off = True
                return
            self._procs = save_procs.start_pool(setup, self._procs_wanted)
            self._procs_warm = save_procs.warm_up(self._procs)
        except Exception as exc:  # whatever it is, the threads do the work
            self._processes_failed(f"saver processes not started ({exc!r})")
            return
        log.info("small files go to %d saver processes", self._procs_wanted)

    def _processes_failed(self, reason: str) -> None:
        """Stop using the saver processes (once): their pending batches are cancelled
        and saved in this process."""
        with self._procs_lock:
            if self._procs_off:
                return
            self._procs_off = True
            procs = self._procs
        log.warning("%s: saving small files with threads", reason)
        if procs is not None:
            procs.shutdown(wait=False, cancel_futures=True)

    def _submit_to_processes(
        self,
        procs: ProcessPoolExecutor,
        batch: list[_SmallItem],
        fut: Future[list[FileOutcome]],
        nbytes: int,
    ) -> bool:
        """Send a batch to the saver processes; False: save it in this process."""
        jobs = _dir_files(batch, self._dir_idents)
        if jobs is None:
            return False
        self._procs_used = True
        with self._procs_lock:  # counted before its callback can run
            self._procs_batches += 1
        try:
            job = save_procs.submit(procs, jobs)
        except Exception as exc:
            # the pool broke or was shut down meanwhile (RuntimeError), or spawning a
            # missing worker failed after the job was queued (OSError: EAGAIN,
            # EMFILE...): no callback will come for this batch, the threads save it
            with self._procs_lock:
                self._procs_batches -= 1
            self._processes_failed(f"saver processes unusable ({exc})")
            return False

        def done(job: Future[save_procs.BatchResult]) -> None:
            try:
                self._pool.submit(self._finish_process_batch, job, batch, fut, nbytes)
            except RuntimeError:  # never expected (close waits for these batches)
                self._finish_process_batch(job, batch, fut, nbytes)

        job.add_done_callback(done)
        return True

    def _finish_process_batch(
        self,
        job: Future[save_procs.BatchResult],
        batch: list[_SmallItem],
        fut: Future[list[FileOutcome]],
        nbytes: int,
    ) -> None:
        """Store a batch a saver process read (or, if it failed, read it here)."""

        def save(tally: Tally) -> list[FileOutcome]:
            try:
                result = job.result()
            except Exception as exc:  # a worker died, or the pool was shut down
                self._processes_failed(f"saver process failed ({exc!r})")
                return self._save_small_batch(batch, tally)
            return self._store_processed(result, tally)

        try:
            self._settle(batch, fut, nbytes, save)
        finally:
            with self._procs_lock:
                self._procs_batches -= 1
                self._procs_idle.notify_all()

    def _store_processed(self, result: save_procs.BatchResult, tally: Tally) -> list[FileOutcome]:
        """Add the chunks of a batch read by a saver process (the present ones dropped)."""
        _count(tally, **result.tally)
        self._note_worker(result.pid)
        chunks = result.chunks  # exactly the chunks the files name, each once
        t0 = time.perf_counter()
        present = self._writer.has_blobs(chunks) if chunks else set()
        t1 = time.perf_counter()
        absent = [(b, *c) for b, c in chunks.items() if b not in present]
        added = self._writer.add_compressed_blobs(DATA, absent, checked=True) if absent else []
        new_bytes = sum(raw for (_, _, _, raw), new in zip(absent, added, strict=True) if new)
        writing = time.perf_counter() - t1
        _count_stored(
            tally,
            t1 - t0,
            writing,
            result.references,
            result.referenced_bytes,
            sum(added),
            new_bytes,
        )
        outcomes: list[FileOutcome] = []
        for saved in result.files:
            if saved.error is not None:
                outcomes.append(FileOutcome(error=saved.error))
                continue
            outcomes.append(
                FileOutcome(
                    content=saved.content,  # unpickled here: nobody else holds it
                    size=saved.size,
                    xattrs=saved.xattrs,
                    warning=saved.warning,
                )
            )
        return outcomes

    def _note_worker(self, pid: int) -> None:
        """Record a saver process and, every few batches, their summed RSS (saver
        threads finish batches concurrently: counted under the lock)."""
        with self._procs_lock:
            new = pid not in self.worker_pids
            self.worker_pids.add(pid)
            self._procs_results += 1
            if not new and self._procs_results % 16:
                return
            pids = list(self.worker_pids)
        total = sum(save_procs.worker_rss_kb(p) for p in pids)
        with self._procs_lock:
            self.worker_peak_rss_kb = max(self.worker_peak_rss_kb, total)

    def _close_processes(self) -> None:
        with self._procs_lock:
            while self._procs_batches:
                self._procs_idle.wait()
            procs, self._procs = self._procs, None
        if procs is not None:
            # a worker that never came up (stuck starting) must not hold the task
            started = self._procs_warm is not None and self._procs_warm.done()
            procs.shutdown(wait=started, cancel_futures=True)
        if self._procs_results:
            log.info(
                "saver processes saved %d batches; their peak RSS (summed) %d MB",
                self._procs_results,
                self.worker_peak_rss_kb // 1024,
            )

    def _store_chunk(self, piece: bytes | memoryview) -> bytes:
        """Store one chunk of a large file (a worker thread's job)."""
        start = time.perf_counter()
        blob_id = self._repo.blob_id(piece)
        t1 = time.perf_counter()
        new = self._writer.add_blob(DATA, blob_id, piece)
        t2 = time.perf_counter()
        local: Tally = {}
        _count(local, seconds_processing=t1 - start, seconds_repository_write=t2 - t1)
        if new:
            _count(local, chunks_new=1, bytes_new=len(piece))
        else:
            _count(local, chunks_deduplicated=1, bytes_deduplicated=len(piece))
        self._stats.add(**local)
        return blob_id

    # -- large files -------------------------------------------------------------

    def read_now(self, dir: SourceDir, name: bytes, st: os.stat_result) -> FileOutcome:
        """Read and store one file synchronously (any thread; used for rare re-reads)."""
        if self.is_small(st):
            tally: Tally = {}
            [out] = self._save_small_batch([_SmallItem(dir, name, st, 0)], tally)
            self._stats.add(**tally)
            return out
        return self.save_large(dir, name, st, flush=False).result()

    def save_large(
        self,
        dir: SourceDir,
        name: bytes,
        st: os.stat_result,
        flush: bool = True,
        resume: PartialContent | None = None,
    ) -> PendingContent:
        """Queue a large file for the reader thread, which spreads its chunks over the
        workers; the walk goes on meanwhile (a cold disk read does not stall it).

        ``resume``: a stored prefix of this file (from a checkpoint, already checked
        against ``st`` and present in the repository); reading starts where it ends.
        """
        if flush:  # the scanner's open batch; never from another thread
            self.flush_batch()
        self._large_slots.acquire()  # bounds queued large files (and dir handles held)
        held = dir.retain()
        progress = LargeRead()

        def read() -> PendingContent:
            try:
                return self._save_large_now(held, name, st, progress, resume)
            finally:
                held.release()
                self._large_slots.release()

        fut = self._reader.submit(read)

        def wait(timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            try:
                fut.result(timeout)  # the reader is done: every chunk job is submitted
            except TimeoutError:
                return False
            except BaseException:
                return True  # result() raises it
            left = max(0.0, deadline - time.monotonic())
            return not wait_futures(progress.jobs(), timeout=left).not_done

        return PendingContent(lambda: fut.result().result(), wait, progress)

    def _save_large_now(
        self,
        dir: SourceDir,
        name: bytes,
        st: os.stat_result,
        track: LargeRead,
        resume: PartialContent | None = None,
    ) -> PendingContent:
        """Read a large file in the calling thread, submitting its chunks as it goes."""
        outcome = FileOutcome()
        interrupted = False
        for attempt in (1, 2):
            if self._cancelled():  # a resumed prefix stays valid: it is checkpointed again
                track.start(resume.st if resume is not None else None, resume)
                interrupted = True
                break
            try:
                f = dir.open_file(name)
            except OSError as exc:
                outcome = FileOutcome(error=describe_os_error(exc))
                break
            xattrs: dict[bytes, bytes] | None = None
            try:
                before = f.fstat()
                sparse = is_probably_sparse(before)
                # a prefix is reusable (now or by a later task) only if the file is the
                # one the scan saw, unchanged, and read from its start without holes
                reusable = attempt == 1 and not sparse and not _changed(st, before)
                start = resume if reusable and resume is not None else None
                track.start(before if reusable else None, start)
                if start is not None:
                    self._stats.add(bytes_resumed=start.size)
                size, holes = self._read_large(f, before, track, start.size if start else 0)
                after = f.fstat()
                if self.read_xattrs:
                    xattrs = xattrs_of(f)
            except _ReadCancelled:
                interrupted = True
                break
            except OSError as exc:
                outcome = FileOutcome(error=describe_os_error(exc))
                break
            finally:
                f.close()
            changed = _changed(st, before) or _changed(before, after)
            outcome = FileOutcome(size=size, holes=holes, xattrs=xattrs)
            if not changed:
                break
            if attempt == 2:
                outcome.warning = "changed while being read (stored as read on the second attempt)"
            st = after
        final, chunk_futures = outcome, track.jobs()

        def resolve() -> FileOutcome:
            if interrupted:
                for cf in chunk_futures:
                    cf.exception()  # wait for every submitted chunk, then take the prefix
                return FileOutcome(interrupted=True, partial=track.stored_prefix())
            if final.error is None:
                final.content = [cf.result() for cf in chunk_futures]
            return final

        return PendingContent(resolve)

    def _source_read(self, nbytes: int) -> AbstractContextManager[ReadMeter]:
        """Around every read from the source: the governor's gate and timing, if any."""
        if self._governor is None:
            return ungated(nbytes)
        return self._governor.reading(nbytes)

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def _read_large(
        self, f: SourceFile, st: os.stat_result, track: LargeRead, start: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """Read data extents from ``start``, cut and submit chunks; returns (size, holes).

        ``start`` > 0 (a resumed prefix that ends on a chunk boundary) only for
        files read as one extent: cut points from a boundary on equal whole-file ones.
        """
        if is_probably_sparse(st):
            extents = f.data_extents(st.st_size)
            holes = holes_from_extents(extents, st.st_size)
            bounded = True
        else:
            extents, holes, bounded = [(start, max(0, st.st_size - start))], [], False
        # the open-ended last chunk of a segment, a view into that segment's buffer (which
        # it keeps alive): copied once, into the head of the next segment's buffer
        carry: memoryview | bytes = b""
        end = start
        for idx, (off, length) in enumerate(extents):
            pos, stop = off, off + length
            open_ended = not bounded and idx == len(extents) - 1  # read on if the file grew
            while pos < stop or (open_ended and pos < stop + LARGE_GROWTH_LIMIT):
                # a file still growing is cut past its size at open (a fast appender
                # would otherwise keep this loop going); it then counts as changed
                if self._cancelled():
                    raise _ReadCancelled
                want = SEGMENT if open_ended else min(SEGMENT, stop - pos)
                buf = _segment_buffer(len(carry) + want)
                buf[: len(carry)] = carry
                t0 = time.perf_counter()
                with self._source_read(want) as meter:
                    n = meter.nbytes = f.read_at(memoryview(buf)[len(carry) :], pos)
                self._stats.add(seconds_source_read=time.perf_counter() - t0, bytes_read=n)
                pos += n
                end = max(end, pos)
                last_piece = n == 0 or (not open_ended and pos >= stop and idx == len(extents) - 1)
                view = memoryview(buf)[: len(carry) + n]
                chunk_start = pos - len(view)  # file offset of view[0]
                carry = self._cut_and_submit(view, track, chunk_start, final=last_piece)
                if n == 0:
                    break
        if carry:
            self._submit_chunk(memoryview(carry), track, end)
        self._stats.add(files_read=1)
        return (end if not bounded else st.st_size), holes

    def _cut_and_submit(
        self, view: memoryview, track: LargeRead, offset: int, final: bool
    ) -> memoryview | bytes:
        """Submit the chunks cut from ``view``; returns the last one unless ``final``
        (its end is not known yet: it is cut again with the next segment), as a view,
        not a copy: ``bytes()`` of it cost ~0.5 ms of GIL time per segment (a fresh
        allocation's page faults and the copy, with the GIL held)."""
        if not view:
            return b""
        chunks = list(self._chunker.cut_buf(view))
        keep = chunks if final else chunks[:-1]
        for c in keep:
            self._submit_chunk(c.data, track, offset + c.offset + c.length)
        if final:
            return b""
        return chunks[-1].data

    def _submit_chunk(self, piece: memoryview, track: LargeRead, end: int) -> None:
        n = len(piece)
        self._budget.acquire(n)

        def run() -> bytes:
            try:
                return self._store_chunk(piece)
            finally:
                self._budget.release(n)

        track.add(self._pool.submit(run), end)

    def is_small(self, st: os.stat_result) -> bool:
        """Whether a file goes through the batched small-file path."""
        return st.st_size <= SMALL_FILE_LIMIT

    def close(self) -> None:
        """Flush the pending batch and wait for all jobs (reader first: it feeds the pool;
        then the saver processes, whose batches end on the pool)."""
        self.flush_batch()
        self._reader.shutdown(wait=True)
        self._close_processes()  # their batches are finished by the pool's threads
        self._pool.shutdown(wait=True)


def _dir_files(
    batch: list[_SmallItem], known: dict[LocalDir, tuple[int, int]]
) -> list[save_procs.DirFiles] | None:
    """A batch grouped by directory for the saver processes (None: not all local).

    ``known``: the previous batch's directories (the directory itself, by identity ->
    its st_dev and st_ino), replaced by this batch's. A descriptor names one directory
    as long as it is open, so a directory continuing from the previous batch is not
    ``fstat``ed again (each ``fstat`` gives up the GIL and waits to take it back); a
    later directory reusing a closed one's descriptor number is another key."""
    seen: dict[LocalDir, tuple[int, int]] = {}
    out: list[save_procs.DirFiles] = []
    last: SourceDir | None = None
    for it in batch:
        d = it.dir
        if not isinstance(d, LocalDir):
            return None
        if d is not last:  # runs of one directory, in batch order (the results' order)
            ident = seen.get(d) or known.get(d)
            if ident is None:
                try:
                    st = os.fstat(d.fd)  # the directory the scanner opened and listed
                except OSError:
                    return None
                ident = (st.st_dev, st.st_ino)
            seen[d] = ident
            out.append((d.fd, ident[0], ident[1], []))
            last = d
        st = it.st
        out[-1][3].append((it.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    known.clear()
    known.update(seen)
    return out
