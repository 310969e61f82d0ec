"""The restore walk: names checked, overwrite policies, entries created under dir fds.

Runs on the restore task's thread; file contents go to worker threads in
batches (see ``restore_files``). Every create or open is relative to an open
directory fd with ``O_NOFOLLOW``; names are checked with ``check_name`` and
must come in strictly increasing order within a directory.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ferryman.engine import restore_procs
from ferryman.engine.browse import split_path
from ferryman.engine.file_saver import ByteBudget
from ferryman.engine.nodes import Node
from ferryman.engine.options import RestoreOptions
from ferryman.engine.restore_files import (
    FETCH_WINDOW,
    FileSpec,
    OpenPath,
    apply_fd_metadata,
    apply_name_metadata,
    describe_restore_error,
    fetch_chunks,
    open_for_write,
    write_content,
    write_local_file,
)
from ferryman.engine.stats import RestoreStats, StatsCollector
from ferryman.repository import Repository, RepositoryError
from ferryman.sources.base import RemoteTargetDir, SourceError, UnsafeName, check_name
from ferryman.sources.local import LocalTargetDir

# a local directory (fd based) or one reached over the network (an SMB share)
TargetDir = LocalTargetDir | RemoteTargetDir

log = logging.getLogger(__name__)

BATCH_FILES = 128
BATCH_BYTES = 8 << 20
# What a batch counts against the byte budget at most. Its files up to BATCH_BYTES are
# fetched together (at most ~2 * BATCH_BYTES in memory), a larger file streams through
# FETCH_WINDOW chunks at a time, whatever its size: charging a 256 MiB file's whole
# size took the entire 64 MiB budget, so the walk stopped until that one file was
# written, and the other writers sat idle (the reference share starts with two).
# With chunks larger than the default 4 MiB, a window outweighs 2 * BATCH_BYTES and is
# charged instead (``Restorer.batch_charge``): a repository of 16 MiB chunks would
# otherwise hold ~4 x 64 MiB against a 64 MiB budget.
BATCH_CHARGE = 2 * BATCH_BYTES
QUEUED_BYTES = 64 << 20  # the byte budget: file bytes queued or being written
DIRS_PER_SETTLE = 10_000
# Files restored in this process before the rest go to worker processes (a small
# restore does not pay for starting them; see restore_procs).
PROCESS_AFTER_FILES = 2_000
# ... or before that, once this many file bytes were queued: large files written by
# threads hold the walk's GIL in turns (decryption, copies), so every directory the walk
# creates and every tree blob it reads waits for it (the reference share starts with two
# 256 MiB files: the walk took ~2-3 s to reach its 2,000th file, one core idle).
PROCESS_AFTER_BYTES = 64 << 20
# Batches handed to the worker processes and not finished yet, per process: enough to
# keep each busy (one being written, one or more queued), few enough that the walk does
# not run far ahead. The byte budget alone let it queue ~30,000 small files of the
# reference share (their nodes and paths: ~50 MB in the walk's process).
BATCHES_PER_PROCESS = 8


@dataclass(slots=True)
class _Frame:
    dir: TargetDir
    entries: Iterator[Node]
    share_rel: bytes
    target_rel: bytes
    node: Node | None
    last: bytes | None = None


@dataclass(slots=True)
class _FileJob:
    dir: TargetDir
    name: bytes
    node: Node
    path: str
    target: bytes  # path below the target root, with the name restored


class Restorer:
    """One restore task's state."""

    def __init__(self, repo: Repository, root: TargetDir, options: RestoreOptions) -> None:
        self.repo = repo
        self.root = root
        self.options = options
        self.owner = os.geteuid() == 0 if options.restore_owner is None else options.restore_owner
        self.collector = StatsCollector()
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="restore")
        self._budget = ByteBudget(QUEUED_BYTES)
        # what a batch counts at most: a streamed file holds FETCH_WINDOW of the largest
        # chunks at a time
        self.batch_charge = max(BATCH_CHARGE, FETCH_WINDOW * repo.config.chunker.max_size)
        self._futures: list[Future[None]] = []
        # worker processes for local targets (started past PROCESS_AFTER_FILES files or
        # PROCESS_AFTER_BYTES bytes), and their batches in flight, kept to be written here
        # if a worker fails
        self._procs: ProcessPoolExecutor | None = None
        self._procs_off = not isinstance(root, LocalTargetDir) or options.writer_processes() <= 0
        self._proc_batches: list[tuple[Future[restore_procs.BatchOutcome], list[_FileJob]]] = []
        self._proc_slots = threading.Semaphore(0)  # batches the processes may still take
        self._proc_batches_kept = 0  # batches listed before finished ones are dropped
        self._files_queued = 0
        self._bytes_queued = 0
        self._batch: list[_FileJob] = []
        self._batch_bytes = 0
        # completed directories whose metadata is applied once their files are written
        # (settled every DIRS_PER_SETTLE, so memory stays bounded), and the directories
        # whose metadata waits for the very end (the target root, selected paths' parents)
        self._dirs_done: list[tuple[bytes, Node]] = []
        self._dirs_last: list[tuple[bytes, Node]] = []
        # first restored name of a hardlinked file -> [target path, links still to come]
        self._links: dict[bytes, list[Any]] = {}
        # keep-both: the new names given so far, per target directory being restored (a
        # later entry of the point may carry one of them, and is not written yet)
        self._kept_both: dict[bytes, set[bytes]] = {}

    # -- bookkeeping -------------------------------------------------------------------

    def error(self, path: str, reason: str) -> None:
        """Record a per-path problem."""
        with self._lock:
            self.stats.errors += 1
        self.collector.warn(path, reason)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    # -- the walk ----------------------------------------------------------------------

    def restore_entries(
        self, tdir: TargetDir, entries: Iterator[Node], share_rel: bytes, target_rel: bytes
    ) -> None:
        """Restore ``entries`` (and everything below them) into ``tdir``."""
        stack = [_Frame(tdir.retain(), entries, share_rel, target_rel, None)]
        while stack:
            frame = stack[-1]
            try:
                node = next(frame.entries, None)
            except (RepositoryError, ValueError) as exc:
                self.error(show_path(frame.share_rel), f"directory listing unreadable: {exc}")
                node = None
            if node is None:
                stack.pop()
                self._kept_both.pop(frame.target_rel, None)
                if frame.node is not None:
                    self._dirs_done.append((frame.target_rel, frame.node))
                    if len(self._dirs_done) >= DIRS_PER_SETTLE:
                        self._settle_dirs()
                frame.dir.release()
                continue
            child = self._entry(frame, node)
            if child is not None:
                stack.append(child)

    def _entry(self, frame: _Frame, node: Node) -> _Frame | None:
        share_path = join_path(frame.share_rel, node.name)
        shown = show_path(share_path)
        try:
            check_name(node.name)
        except UnsafeName as exc:
            self.error(shown, str(exc))
            return None
        if frame.last is not None and node.name <= frame.last:
            self.error(shown, "refused: duplicate or unsorted entry in the restore point")
            return None
        frame.last = node.name
        name = self._resolve_existing(frame.dir, frame.target_rel, node, shown)
        if name is None:
            return None
        target_path = join_path(frame.target_rel, name)
        try:
            if node.type == "dir":
                sub = frame.dir.make_dir(name, stat.S_IMODE(node.mode))
                self._count(dirs_restored=1)
                return _Frame(sub, dir_entries(self.repo, node), share_path, target_path, node)
            if node.type == "file":
                self._file(frame.dir, name, node, share_path, target_path, shown)
            elif node.type == "symlink":
                frame.dir.symlink(name, node.link_target)
                self._name_metadata(frame.dir, name, node, shown)
            else:
                frame.dir.mknod(name, node.mode, node.rdev)
                self._name_metadata(frame.dir, name, node, shown)
        except OSError as exc:
            self.error(shown, describe_restore_error(exc))
        except SourceError as exc:
            self.error(shown, str(exc))
        return None

    def _resolve_existing(
        self, tdir: TargetDir, target_rel: bytes, node: Node, shown: str
    ) -> bytes | None:
        """Apply the overwrite policy; the name to create, or None to skip."""
        if tdir.created:
            return node.name  # a directory this restore created holds only what it wrote
        try:
            existing = tdir.lstat(node.name)
        except OSError as exc:
            self.error(shown, describe_restore_error(exc))
            return None
        taken = self._kept_both.get(target_rel, set())  # only ever filled by keep-both
        if existing is None and node.name not in taken:
            return node.name
        if existing is not None and node.type == "dir" and stat.S_ISDIR(existing.st_mode):
            return node.name  # merge into the existing directory
        policy = self.options.overwrite
        if policy == "skip" or (
            policy == "if-newer" and existing is not None and node.mtime_ns <= existing.st_mtime_ns
        ):
            self._count(files_skipped=1)
            return None
        if policy == "keep-both":
            for i in range(1, 10_000):
                candidate = node.name + b".restored" + (b"" if i == 1 else b"-%d" % i)
                if len(candidate) > 255 or candidate in taken:
                    continue
                if tdir.lstat(candidate) is None:
                    self._kept_both.setdefault(target_rel, taken).add(candidate)
                    return candidate
            self.error(shown, "no free name for keep-both")
            return None
        try:
            tdir.remove(node.name)
        except OSError as exc:
            self.error(shown, f"cannot replace: {describe_restore_error(exc)}")
            return None
        return node.name

    def _name_metadata(self, tdir: TargetDir, name: bytes, node: Node, shown: str) -> None:
        if isinstance(tdir, LocalTargetDir):  # remote targets refuse links and special files
            xattrs = self.options.restore_xattrs
            for p in apply_name_metadata(tdir.fd, name, node, self.owner, xattrs):
                self.error(shown, p)
        self._count(files_restored=1)

    def _file(
        self,
        tdir: TargetDir,
        name: bytes,
        node: Node,
        share_path: bytes,
        target_path: bytes,
        shown: str,
    ) -> None:
        if node.link_to is not None and isinstance(tdir, LocalTargetDir):  # remote: copies
            first = self._links.get(node.link_to)
            if first is not None:
                first[1] -= 1
                if first[1] <= 0:
                    del self._links[node.link_to]
                if self._link(first[0], tdir, name):
                    return
        self.collector.current_path = shown
        if node.nlink > 1 and isinstance(tdir, LocalTargetDir):  # remote: copies, no links
            # create now so later hardlinks can point to it before its content is written
            os.close(open_for_write(tdir.fd, name, node.mode))
            self._links[share_path] = [target_path, node.nlink - 1]
        self._batch.append(_FileJob(tdir.retain(), name, node, shown, target_path))
        self._batch_bytes += node.size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self.flush_batch()

    def _link(self, first: bytes, tdir: LocalTargetDir, name: bytes) -> bool:
        """Hardlink ``name`` to the first restored name; False: restore a copy instead."""
        assert isinstance(self.root, LocalTargetDir)  # only local targets record links
        try:
            os.link(first, name, src_dir_fd=self.root.fd, dst_dir_fd=tdir.fd,
                    follow_symlinks=False)  # fmt: skip
        except OSError as exc:  # e.g. the first name's path is beyond PATH_MAX
            log.info("hardlink %r -> %r failed (%s): restoring a copy", name, first, exc)
            return False
        self._count(links_restored=1)
        return True

    def flush_batch(self) -> None:
        """Submit the pending file jobs."""
        if not self._batch:
            return
        batch, nbytes = self._batch, min(self._batch_bytes, self.batch_charge)
        self._files_queued += len(batch)
        self._bytes_queued += self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        self._budget.acquire(nbytes)
        procs = self._worker_processes()
        if procs is not None:
            self._submit_to_processes(procs, batch, nbytes)
            return

        def run() -> None:
            try:
                self._run_jobs(batch)
            finally:
                self._budget.release(nbytes)

        self._futures.append(self._pool.submit(run))
        if len(self._futures) > 256:  # a failed one stays: _settle_dirs raises its error
            self._futures = [f for f in self._futures if not f.done() or f.exception()]

    def _run_jobs(self, batch: list[_FileJob]) -> None:
        small = [j for j in batch if j.node.size <= BATCH_BYTES]
        prefetched = self._prefetch(small)
        for job in batch:
            if job.node.size > BATCH_BYTES:  # streams (a batch's last file): the small
                prefetched = None  # files' chunks are not held while it is written
            self._write(job, prefetched)

    # -- worker processes (local targets) ------------------------------------------------

    def _worker_processes(self) -> ProcessPoolExecutor | None:
        """The worker processes, started once enough files went through threads."""
        if self._procs is not None or self._procs_off:
            return self._procs
        few_files = self._files_queued <= PROCESS_AFTER_FILES
        if few_files and self._bytes_queued <= PROCESS_AFTER_BYTES:
            return None
        self._procs_off = True  # one attempt
        assert isinstance(self.root, LocalTargetDir)
        setup = restore_procs.worker_setup(
            self.repo,
            self.root.fd,
            owner=self.owner,
            xattrs=self.options.restore_xattrs,
            verify=self.options.verify,
            small=BATCH_BYTES,
        )
        if setup is None:
            return None
        try:
            processes = self.options.writer_processes()
            self._procs = restore_procs.start_pool(setup, processes)
            self._proc_slots = threading.Semaphore(BATCHES_PER_PROCESS * processes)
            self._proc_batches_kept = 2 * BATCHES_PER_PROCESS * processes
        except OSError as exc:
            log.warning("restore worker processes not started (%s): using threads", exc)
        return self._procs

    def _submit_to_processes(
        self, procs: ProcessPoolExecutor, batch: list[_FileJob], nbytes: int
    ) -> None:
        jobs: list[restore_procs.Job] = []
        last: bytes | None = None
        parts: list[bytes] = []
        for j in batch:
            parent = j.target[: -len(j.name) - 1] if len(j.target) > len(j.name) else b""
            if parent != last:  # a batch's files are mostly in one folder: one list, pickled once
                last, parts = parent, parent.split(b"/") if parent else []
            jobs.append((parts, j.name, FileSpec.of(j.node), j.path))
        self._proc_slots.acquire()  # released when the batch is done (or fails, or is cancelled)
        try:
            fut = restore_procs.submit(procs, jobs)
        except (RuntimeError, OSError, EOFError) as exc:  # the pool broke earlier, or its
            # processes cannot start (the fork server's socket path too long, say, or the
            # fork server dying before it answers: EOFError; or reset by another pool:
            # ForkServerUnavailable): write here
            log.warning("restore worker processes unusable (%s): using threads", exc)
            self._proc_slots.release()
            self._budget.release(nbytes)
            self._procs_broken()
            self._futures.append(self._pool.submit(self._run_jobs, batch))
            return
        fut.add_done_callback(lambda f: self._process_batch_done(f, nbytes))
        self._proc_batches.append((fut, batch))
        if len(self._proc_batches) > self._proc_batches_kept:  # finished ones hold their jobs
            self._collect_process_batches(wait=False)

    def _process_batch_done(self, fut: Future[restore_procs.BatchOutcome], nbytes: int) -> None:
        self._proc_slots.release()
        self._budget.release(nbytes)
        if fut.cancelled() or fut.exception() is not None:
            return  # written again here by _collect_process_batches
        out = fut.result()
        for path, reason in out.errors or []:
            self.error(path, reason)
        self._count(files_restored=out.files, bytes_restored=out.bytes)
        self.collector.add(files_read=out.files, bytes_read=out.bytes)

    def _collect_process_batches(self, wait: bool) -> None:
        """Drop finished batches (all of them with ``wait``); a batch whose worker
        failed (not a file's error: the process itself) is written in this process."""
        pending: list[tuple[Future[restore_procs.BatchOutcome], list[_FileJob]]] = []
        for fut, batch in self._proc_batches:
            if not wait and not fut.done():
                pending.append((fut, batch))
                continue
            exc = None if fut.cancelled() else fut.exception()  # exception() raises if cancelled
            if fut.cancelled() or exc is not None:
                log.warning("restore worker process failed (%s): writing its files here", exc)
                self._procs_broken()
                self._run_jobs(batch)  # releases the jobs' directories
                continue
            for job in batch:
                job.dir.release()
        self._proc_batches = pending

    def _procs_broken(self) -> None:
        self._procs_off = True
        if self._procs is not None:
            self._procs.shutdown(wait=False, cancel_futures=True)
            self._procs = None

    def _prefetch(self, jobs: list[_FileJob]) -> dict[bytes, bytes] | None:
        """Fetch the chunks of a batch of small files together (pack by pack)."""
        ids = [c for j in jobs for c in j.node.content]
        if not ids:
            return None
        try:
            return fetch_chunks(self.repo, ids)
        except RepositoryError:
            return None  # fall back to per-file fetches: errors then name the file

    def _write(self, job: _FileJob, prefetched: dict[bytes, bytes] | None) -> None:
        try:
            if isinstance(job.dir, LocalTargetDir):
                written, problems = write_local_file(
                    self.repo,
                    job.dir.fd,
                    job.name,
                    job.node,
                    owner=self.owner,
                    xattrs=self.options.restore_xattrs,
                    verify=self.options.verify,
                    prefetched=prefetched,
                )
            else:
                out = job.dir.open_write(job.name, job.node.mode)
                try:
                    written = write_content(
                        self.repo, out, job.node, self.options.verify, False, prefetched
                    )
                    problems = out.apply_metadata(job.node, self.options.restore_xattrs)
                finally:
                    out.close()
            for p in problems:
                self.error(job.path, p)
            self._count(files_restored=1, bytes_restored=written)
            self.collector.add(files_read=1, bytes_read=written)
        except OSError as exc:
            self.error(job.path, describe_restore_error(exc))
            self._discard(job)
        except RepositoryError as exc:
            self.error(job.path, f"content unreadable: {exc}")
            self._discard(job)
        finally:
            job.dir.release()

    def _discard(self, job: _FileJob) -> None:
        """Remove a partially written file (frees space for the next ones; no corrupt copy)."""
        try:
            if isinstance(job.dir, LocalTargetDir):
                os.unlink(job.name, dir_fd=job.dir.fd)
            else:
                job.dir.remove(job.name)
        except OSError as exc:
            self.error(job.path, f"incomplete copy left behind: {describe_restore_error(exc)}")

    def _settle_dirs(self) -> None:
        """Wait for every queued file, then apply the completed directories' metadata."""
        self.flush_batch()
        self._collect_process_batches(wait=True)
        for fut in self._futures:
            fut.result()
        self._futures = []
        self._apply_dirs(self._dirs_done)
        self._dirs_done = []

    def _apply_dirs(self, dirs: list[tuple[bytes, Node]]) -> None:
        if not isinstance(self.root, LocalTargetDir):
            for target_rel, node in dirs:
                shown = show_path(target_rel) or "."
                try:
                    parts = split_path(target_rel)
                    xattrs = self.options.restore_xattrs
                    for p in self.root.apply_path_metadata(parts, node, xattrs):
                        self.error(shown, p)
                except (OSError, SourceError) as exc:
                    reason = describe_restore_error(exc) if isinstance(exc, OSError) else str(exc)
                    self.error(shown, reason)
            return
        opened = OpenPath(self.root.fd)
        try:
            for target_rel, node in dirs:
                self._dir_metadata(opened, target_rel, node)
        finally:
            opened.close()

    def finish(self) -> None:
        """Wait for the workers, then apply directory metadata children-first."""
        self._settle_dirs()
        self.close()
        self._apply_dirs(self._dirs_last[::-1])

    def close(self) -> None:
        """Stop the worker threads and processes (after ``finish``, or on an error)."""
        if self._procs is not None:
            self._procs.shutdown(wait=True, cancel_futures=True)
            self._procs = None
        self._pool.shutdown(wait=True)

    def _dir_metadata(self, opened: OpenPath, target_rel: bytes, node: Node) -> None:
        try:
            fd = opened.open(split_path(target_rel))
            for p in apply_fd_metadata(fd, node, self.owner, self.options.restore_xattrs):
                self.error(show_path(target_rel) or ".", p)
        except OSError as exc:
            self.error(show_path(target_rel) or ".", describe_restore_error(exc))

    def mark_dir(self, target_rel: bytes, node: Node) -> None:
        """Apply ``node``'s metadata to an already-created directory at the very end."""
        self._dirs_last.append((target_rel, node))


def dir_entries(repo: Repository, dir_node: Node) -> Iterator[Node]:
    """A directory's entries in name order, one tree blob at a time; the locations
    of its subdirectories' tree blobs are looked up together, in one index query,
    when the blob is read (the walk then reads each without a query of its own)."""
    for blob_id in dir_node.subtrees:
        nodes = repo.get_tree(blob_id)
        repo.prefetch_locations([i for n in nodes if n.type == "dir" for i in n.subtrees])
        yield from nodes


def join_path(base: bytes, name: bytes) -> bytes:
    """``base/name`` (just ``name`` at the top)."""
    return base + b"/" + name if base else name


def show_path(path: bytes) -> str:
    """A relative path as text for messages (undecodable bytes escaped)."""
    return os.fsdecode(path)
