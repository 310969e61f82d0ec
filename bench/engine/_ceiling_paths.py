"""The data paths ``bench_ceiling`` times: per-file work cut to the minimum, no engine.

Backup: open, read, close; cut (``small_files.cut_pieces`` with the repository's
chunker); keyed BLAKE3; ``compression.compress`` (probe and level as the writer);
``crypto.seal`` (AES-256-GCM, the blob's associated data). No index (duplicates
within the run are skipped with one ``dict.setdefault``), no packs, no trees.
Restore: ``pread`` of each record from one file of records, ``blob.open_blob``
(decrypt, decompress, verify the id), write, set the mtime. Bare: the same files
created and filled with zeros.

Workers run as two threads pulling job numbers from one iterator, or as two
forked processes (``multiprocessing`` pool) that inherit the job list: one job is
a large file or a batch of small files (the engine's batch limits).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from bench.engine.bench_engine import _cpu_s
from ferryman.engine.file_saver import BATCH_BYTES, BATCH_FILES, SMALL_FILE_LIMIT
from ferryman.engine.ports import Chunker
from ferryman.engine.small_files import cut_pieces
from ferryman.repository import blob, compression, crypto
from ferryman.repository.config import ChunkerParams
from ferryman.repository.crypto import RepositoryKeys
from ferryman.repository.repository import new_chunker

STAGES = ("read", "cut", "hash", "compress", "encrypt")
ZEROS = bytes(4 << 20)


@dataclass(frozen=True, slots=True)
class Entry:
    """A regular file of the share: its directory (index), name, size and mtime."""

    dir: int
    name: bytes
    size: int
    mtime_ns: int


@dataclass
class Share:
    """A scanned folder: directories (relative, walk order), files and the jobs over them."""

    root: Path
    dirs: list[bytes]
    files: list[Entry]
    jobs: list[list[int]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(e.size for e in self.files)


def scan(root: Path) -> Share:
    """Walk ``root`` (``scandir`` + ``lstat``): regular files only; jobs of large files
    first (so the two largest do not end up on one worker last), then batches of small
    files of one directory, as the engine cuts them."""
    share = Share(root, [], [])
    stack = [b""]
    while stack:
        rel = stack.pop()
        index = len(share.dirs)
        share.dirs.append(rel)
        with os.scandir(os.path.join(bytes(root), rel) if rel else bytes(root)) as it:
            for de in sorted(it, key=lambda d: d.name):
                st = de.stat(follow_symlinks=False)
                if de.is_dir(follow_symlinks=False):
                    stack.append(os.path.join(rel, de.name) if rel else de.name)
                elif de.is_file(follow_symlinks=False):
                    share.files.append(Entry(index, de.name, st.st_size, st.st_mtime_ns))
    large = [i for i, e in enumerate(share.files) if e.size > SMALL_FILE_LIMIT]
    share.jobs = [[i] for i in sorted(large, key=lambda i: -share.files[i].size)]
    batch: list[int] = []
    nbytes = 0
    for i, e in enumerate(share.files):
        if e.size > SMALL_FILE_LIMIT:
            continue
        if batch and (
            len(batch) >= BATCH_FILES
            or nbytes + e.size > BATCH_BYTES
            or share.files[batch[0]].dir != e.dir
        ):
            share.jobs.append(batch)
            batch, nbytes = [], 0
        batch.append(i)
        nbytes += e.size
    if batch:
        share.jobs.append(batch)
    return share


@dataclass
class Setup:
    """What every worker reads (inherited by forked processes)."""

    share: Share
    keys: RepositoryKeys
    chunker: ChunkerParams
    level: int = compression.DEFAULT_LEVEL
    staged: bool = False  # time each stage (one-thread runs)
    pack: Path | None = None  # where records go (``write_records``) or are read from
    refs: list[list[tuple[int, int, int, bytes]]] = field(default_factory=list)
    target: Path | None = None
    salt: bytes = b"\0" * crypto.SALT_SIZE
    seen: dict[bytes, object] = field(default_factory=dict)  # blob ids stored in this run


_setup: Setup | None = None
_local = threading.local()


def install(setup: Setup) -> None:
    """Make ``setup`` the one the workers of the next run read (fork inherits it)."""
    global _setup
    _setup = setup


def _state() -> Setup:
    assert _setup is not None, "no setup installed"
    return _setup


def _chunker() -> Chunker:
    ch: Chunker | None = getattr(_local, "chunker", None)
    if ch is None:
        s = _state()
        ch = _local.chunker = new_chunker(s.chunker, s.keys.chunker_seed)
    return ch


def _large_buffer(size: int) -> memoryview:
    buf: bytearray | None = getattr(_local, "buffer", None)
    if buf is None or len(buf) < size:
        buf = _local.buffer = bytearray(size)
    return memoryview(buf)[:size]


def _read(dir_fd: int, e: Entry) -> bytes | memoryview:
    fd = os.open(e.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if e.size <= SMALL_FILE_LIMIT:
            return os.read(fd, e.size)
        view = _large_buffer(e.size)
        done = 0
        while done < e.size:
            n = os.readv(fd, [view[done:]])
            if n == 0:
                return view[:done]
            done += n
        return view
    finally:
        os.close(fd)


class _Dirs:
    """Directory descriptors of one job (its files' directories), closed at its end."""

    def __init__(self, base: Path, share: Share) -> None:
        self.base, self.share = bytes(base), share
        self.fds: dict[int, int] = {}

    def fd(self, index: int) -> int:
        fd = self.fds.get(index)
        if fd is None:
            rel = self.share.dirs[index]
            path = os.path.join(self.base, rel) if rel else self.base
            fd = self.fds[index] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


JobResult = tuple[int, int, int, list[float]]  # files, bytes in, bytes stored, stage seconds


def backup_job(job: int) -> JobResult:
    """Read, cut, hash, compress and encrypt one job's files (the records are dropped)."""
    s = _state()
    key, level, seen = s.keys.blob_id, s.level, s.seen
    chunker = _chunker()
    cipher = crypto.object_cipher(s.keys.encryption, s.salt)
    stages = [0.0] * len(STAGES)
    clock = time.perf_counter if s.staged else _no_clock
    dirs = _Dirs(s.share.root, s.share)
    nbytes = stored = 0
    try:
        for i in s.share.jobs[job]:
            e = s.share.files[i]
            t0 = clock()
            data = _read(dirs.fd(e.dir), e)
            t1 = clock()
            pieces = cut_pieces(chunker, data)
            t2 = clock()
            ids = [crypto.blob_id(key, p) for p in pieces]
            t3 = clock()
            fresh = []
            for b, p in zip(ids, pieces, strict=True):
                mine = object()  # setdefault is atomic: the first to see a blob stores it
                if seen.setdefault(b, mine) is mine:
                    fresh.append((b, compression.compress(p, level)))
            t4 = clock()
            for b, payload in fresh:
                stored += len(crypto.seal(cipher, payload, blob.record_aad(blob.KIND_DATA, b)))
            t5 = clock()
            nbytes += len(data)
            for k, t in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                stages[k] += t
            del data, pieces
    finally:
        dirs.close()
    return len(s.share.jobs[job]), nbytes, stored, stages


def _no_clock() -> float:
    return 0.0


def write_records(setup: Setup) -> int:
    """Untimed, in this thread: every distinct blob's record (as in a pack) into
    ``setup.pack``, each file's ``(offset, length, raw length, blob id)`` list into
    ``setup.refs``; returns the record bytes written."""
    assert setup.pack is not None
    chunker = new_chunker(setup.chunker, setup.keys.chunker_seed)
    cipher = crypto.object_cipher(setup.keys.encryption, setup.salt)
    where: dict[bytes, tuple[int, int, int]] = {}
    setup.refs = []
    dirs = _Dirs(setup.share.root, setup.share)
    offset = 0
    try:
        with open(setup.pack, "wb") as out:
            for e in setup.share.files:
                data = _read(dirs.fd(e.dir), e)
                refs = []
                for p in cut_pieces(chunker, data):
                    b = crypto.blob_id(setup.keys.blob_id, p)
                    if b not in where:
                        payload = compression.compress(p, setup.level)
                        record = crypto.seal(cipher, payload, blob.record_aad(blob.KIND_DATA, b))
                        out.write(record)
                        where[b] = (offset, len(record), len(p))
                        offset += len(record)
                    refs.append((*where[b], b))
                setup.refs.append(refs)
                del data
    finally:
        dirs.close()
    return offset


def restore_job(job: int) -> JobResult:
    """Write one job's files into ``Setup.target`` from their records (decrypt,
    decompress, verify), mtime set; or zeros of their sizes when ``Setup.pack`` is None."""
    s = _state()
    assert s.target is not None
    key = s.keys.blob_id
    cipher = crypto.object_cipher(s.keys.encryption, s.salt)
    pack_fd = os.open(s.pack, os.O_RDONLY | os.O_CLOEXEC) if s.pack is not None else -1
    dirs = _Dirs(s.target, s.share)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    nbytes = 0
    try:
        for i in s.share.jobs[job]:
            e = s.share.files[i]
            fd = os.open(e.name, flags, 0o644, dir_fd=dirs.fd(e.dir))
            try:
                if pack_fd >= 0:
                    for offset, length, raw, b in s.refs[i]:
                        record = os.pread(pack_fd, length, offset)
                        data = blob.open_blob(cipher, blob.KIND_DATA, b, record, raw, key, "run")
                        nbytes += os.write(fd, data)
                else:
                    left = e.size
                    while left:
                        left -= os.write(fd, memoryview(ZEROS)[: min(left, len(ZEROS))])
                    nbytes += e.size
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            finally:
                os.close(fd)
    finally:
        dirs.close()
        if pack_fd >= 0:
            os.close(pack_fd)
    return len(s.share.jobs[job]), nbytes, 0, [0.0] * len(STAGES)


def make_dirs(share: Share, target: Path) -> None:
    """Create the share's directories under ``target`` (walk order: parents first)."""
    base = bytes(target)
    os.mkdir(base)
    for rel in share.dirs[1:]:
        os.mkdir(os.path.join(base, rel))


@dataclass
class RunResult:
    """One timed run: wall and CPU seconds (user + sys, workers included), summed jobs."""

    wall: float
    cpu: float
    files: int
    nbytes: int
    stored: int
    stages: list[float]


def _sum(results: Iterator[JobResult], t0: float) -> RunResult:
    files = nbytes = stored = 0
    stages = [0.0] * len(STAGES)
    for f, n, st, sg in results:
        files, nbytes, stored = files + f, nbytes + n, stored + st
        stages = [a + b for a, b in zip(stages, sg, strict=True)]
    wall = time.perf_counter() - t0
    return RunResult(wall, 0.0, files, nbytes, stored, stages)


def run_threads(setup: Setup, fn: Callable[[int], JobResult], workers: int) -> RunResult:
    """``fn`` over every job on ``workers`` threads (one shared iterator of job numbers)."""
    setup.seen = {}
    install(setup)
    jobs = iter(range(len(setup.share.jobs)))
    out: list[JobResult] = []

    def work() -> None:
        mine = [fn(j) for j in jobs]
        out.extend(mine)

    threads = [threading.Thread(target=work, name=f"ceiling-{n}") for n in range(workers)]
    c0 = _cpu_s()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = _sum(iter(out), t0)
    result.cpu = _cpu_s() - c0
    return result


def _pid(_: int) -> int:
    return os.getpid()


def run_processes(setup: Setup, fn: Callable[[int], JobResult], workers: int) -> RunResult:
    """``fn`` over every job on ``workers`` forked processes; CPU includes theirs
    (reaped at the end: their start, a few ms, counts too)."""
    setup.seen = {}
    install(setup)
    c0 = _cpu_s()
    pool = get_context("fork").Pool(workers)
    try:
        pool.map(_pid, range(workers))  # both started before the clock
        t0 = time.perf_counter()
        result = _sum(pool.imap_unordered(fn, range(len(setup.share.jobs))), t0)
    finally:
        pool.close()
        pool.join()
    result.cpu = _cpu_s() - c0
    return result
