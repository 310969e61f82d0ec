"""Reading, cutting, hashing and compressing small files in worker processes.

On a first backup of many small files the per-file Python work (open, read,
fstat, xattrs, close, cut, hash, tallies) ran on one GIL and kept about 1.4 of
2 cores busy. For a local source, the file saver hands its batches of small files
to a few worker processes, each with its own GIL; the parent keeps the walk, the
deduplication, the encryption and the pack writing (``add_compressed_blobs``).

A worker opens each batch's directory through the parent's descriptor of it
(``/proc/<parent>/fd/<n>``: the very directory the scanner opened and listed,
which the batch holds open, not a path looked up again), exactly as a saver
thread reads through that handle: a directory renamed meanwhile is still read,
one swapped for a symlink or another directory is never followed. If that
descriptor no longer is the scanner's directory (same ``st_dev``/``st_ino``
checked), every file of it gets the error "directory replaced while being read".

The blob-id key and the chunker's gear seed reach the workers over
multiprocessing's pipe at pool start (same user, in memory, never written
anywhere); the encryption key never leaves the parent. Workers are started with
``spawn`` (never a fork of a threaded server) and import only the reading,
chunking, hashing and compression code.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from ferryman.engine.process_pool import spawn_pool
from ferryman.engine.small_files import (
    CHANGED_WARNING,
    ScanStat,
    Tally,
    count,
    cut_pieces,
    read_small_file,
)
from ferryman.repository import compression, crypto
from ferryman.repository.config import ChunkerParams
from ferryman.repository.repository import Repository, new_chunker
from ferryman.repository.writer import RepositoryWriter
from ferryman.sources.local import LocalDir

DIRECTORY_REPLACED = "directory replaced while being read"

# One file of a batch: its name and its scan lstat's size, mtime, ctime and inode
# (``small_files.ScanStat``'s fields, a flat tuple: the cheapest to pickle)
FileEntry = tuple[bytes, int, int, int, int]
# One directory's files of a batch: (the parent's descriptor of the directory the
# scanner opened, its st_dev and st_ino, [FileEntry])
DirFiles = tuple[int, int, int, list[FileEntry]]


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker process needs: where the source is, and the keys to cut and hash."""

    parent_pid: int
    blob_id_key: bytes
    chunker: ChunkerParams
    chunker_seed: int
    level: int  # the writer's compression level
    read_xattrs: bool


class SavedFile(NamedTuple):
    """One file as a worker read it: chunk ids in file order, or why it was not read.

    A named tuple, not a dataclass: a batch's results are pickled back to the parent,
    and a slotted dataclass pickles through Python-level state functions per object
    (64 files: ~500 µs to dump, ~280 µs to load in the parent, under its GIL, against
    ~180 and ~60 µs as named tuples).
    """

    content: list[bytes]
    size: int = 0
    xattrs: dict[bytes, bytes] | None = None
    warning: str | None = None
    error: str | None = None


@dataclass(slots=True)
class BatchResult:
    """A batch's files (in batch order), its distinct chunks and the worker's tallies.

    ``chunks``: blob id -> (compression method, body, raw length), in the order the
    files first reference them. ``references``/``referenced_bytes``: the chunks the
    files name, repeats included, and their raw bytes (counted here, not by the parent
    walking every file's chunk list again under its GIL).
    """

    files: list[SavedFile]
    chunks: dict[bytes, tuple[int, bytes, int]]
    tally: Tally
    pid: int = 0
    references: int = 0
    referenced_bytes: int = 0


def worker_setup(repo: object, writer: object, read_xattrs: bool) -> WorkerSetup | None:
    """The workers' setup, or None when the repository is not a ``Repository`` with
    a ``RepositoryWriter`` (the keys and the compression level come from them)."""
    if not isinstance(repo, Repository) or not isinstance(writer, RepositoryWriter):
        return None
    return WorkerSetup(
        parent_pid=os.getpid(),
        blob_id_key=repo.keys.blob_id,
        chunker=repo.config.chunker,
        chunker_seed=repo.keys.chunker_seed,
        level=writer.compression_level,
        read_xattrs=read_xattrs,
    )


def start_pool(setup: WorkerSetup, processes: int) -> ProcessPoolExecutor:
    """Worker processes running ``_init(setup)`` first (see ``spawn_pool``)."""
    return spawn_pool(processes, _init, setup)


def warm_up(pool: ProcessPoolExecutor) -> Future[int]:
    """A no-op job: done (with a worker's pid) once a worker is up and initialised."""
    return pool.submit(os.getpid)


def submit(pool: ProcessPoolExecutor, batch: list[DirFiles]) -> Future[BatchResult]:
    """Queue one batch of small files."""
    return pool.submit(_save_batch, batch)


def worker_rss_kb(pid: int) -> int:
    """Resident memory of a process (KiB; 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Worker:
    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.chunker = new_chunker(setup.chunker, setup.chunker_seed)
        # directories are opened through the parent's descriptors: fail here, at start,
        # when they cannot be (no /proc), and the parent keeps the work on its threads
        os.stat(f"/proc/{setup.parent_pid}/fd")


_worker: _Worker | None = None


def _init(setup: WorkerSetup) -> None:
    global _worker
    _worker = _Worker(setup)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(w: _Worker, parent_fd: int, dev: int, ino: int) -> LocalDir | None:
    """The directory the scanner opened (through the parent's descriptor), or None
    when that descriptor is no longer that directory.

    The batch holds the descriptor open, so failing to open it means this process
    may not reach the parent's descriptors (a parent that is not dumpable, an LSM
    denying ptrace-read): the OSError fails the batch, which the parent then saves
    on its threads, instead of every file being reported as not read.
    """
    fd = os.open(f"/proc/{w.setup.parent_pid}/fd/{parent_fd}", _DIR_FLAGS)
    folder = LocalDir(fd)
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != (dev, ino):
        folder.release()
        return None
    return folder


def _save_batch(batch: list[DirFiles]) -> BatchResult:
    w = _worker
    assert w is not None, "worker process not initialised"
    tally: Tally = {}
    files: list[SavedFile] = []
    chunks: dict[bytes, tuple[int, bytes, int]] = {}
    for parent_fd, dev, ino, entries in batch:
        folder = _open_dir(w, parent_fd, dev, ino)
        if folder is None:
            files.extend(SavedFile([], error=DIRECTORY_REPLACED) for _ in entries)
            continue
        try:
            _save_dir(w, folder, entries, files, chunks, tally)
        finally:
            folder.release()
    stored = [f for f in files if f.error is None]
    return BatchResult(
        files,
        chunks,
        tally,
        os.getpid(),
        references=sum(len(f.content) for f in stored),
        referenced_bytes=sum(f.size for f in stored),
    )


def _save_dir(
    w: _Worker,
    folder: LocalDir,
    entries: list[FileEntry],
    files: list[SavedFile],
    chunks: dict[bytes, tuple[int, bytes, int]],
    tally: Tally,
) -> None:
    """Read, cut, hash and compress one directory's files of a batch."""
    s = w.setup
    for name, size, mtime_ns, ctime_ns, ino in entries:
        st = ScanStat(size, mtime_ns, ctime_ns, ino)
        r = read_small_file(folder, name, st, tally, read_xattrs=s.read_xattrs)
        if r.error is not None:
            files.append(SavedFile([], error=r.error))
            continue
        t0 = time.perf_counter()
        ids: list[bytes] = []
        fresh: list[tuple[bytes, bytes | memoryview]] = []
        for piece in cut_pieces(w.chunker, r.data):
            blob_id = crypto.blob_id(s.blob_id_key, piece)
            ids.append(blob_id)
            if blob_id not in chunks:
                chunks[blob_id] = (0, b"", 0)  # a repeat within the file: once
                fresh.append((blob_id, piece))
        t1 = time.perf_counter()
        for blob_id, piece in fresh:
            method, body = compression.compress_body(piece, s.level)
            chunks[blob_id] = (method, bytes(body), len(piece))
        # compression counts as storing, as it does inside add_blob on the threads
        count(
            tally,
            seconds_processing=t1 - t0,
            seconds_repository_write=time.perf_counter() - t1,
        )
        warning = CHANGED_WARNING if r.changed else None
        files.append(SavedFile(ids, len(r.data), r.xattrs, warning))
