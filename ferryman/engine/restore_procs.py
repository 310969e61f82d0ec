"""Writing restored files in worker processes (a local target, a local repository).

Creating, writing and closing tens of thousands of small files is Python work
under one GIL: with the walk and the writer threads in one process a restore
used about one core of two. Past a threshold of files, the restore hands its
batches of files to a few worker processes, each with its own GIL and its own
``Repository`` over the same local backend, keys and index cache.

A worker reaches the target's root through the parent's open descriptor
(``/proc/<parent>/fd/<n>``: the very directory the parent opened, not a path
looked up again) and each batch's directory below it one component at a time
with ``O_NOFOLLOW | O_DIRECTORY`` (``OpenPath``), so the guarantee of the walk
holds here too: nothing is written outside the target, whatever is put in its
way. File names were checked by the walk (``check_name``) before a batch is
sent; a worker checks them again.

The master key goes to the workers over multiprocessing's pipe (same user, in
memory, never written anywhere).
"""

from __future__ import annotations

import gc
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from ferryman.engine.process_pool import ForkServerUnavailable, forked_pool
from ferryman.engine.restore_files import (
    FileSpec,
    OpenPath,
    describe_restore_error,
    fetch_chunks,
    write_local_file,
)
from ferryman.repository import Repository, RepositoryError
from ferryman.repository.backend.local import LocalBackend
from ferryman.repository.backend.retry import RetryingBackend
from ferryman.repository.config import RepositoryConfig
from ferryman.sources.base import SourceError, check_name

GC_THRESHOLD = 100_000  # allocations between young-generation collections in a worker

# a batch's files: (directory below the root as path parts, name, node, path shown)
Job = tuple[list[bytes], bytes, FileSpec, str]


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker process needs to open the repository and the target."""

    backend: LocalBackend
    config: bytes
    master: bytes
    slot_id: str
    cache_dir: str
    parent_pid: int
    root_fd: int
    owner: bool
    xattrs: bool
    verify: bool
    small: int  # files up to this size have their chunks fetched with the batch's


@dataclass(slots=True)
class BatchOutcome:
    """What a worker did with one batch."""

    files: int = 0
    bytes: int = 0
    errors: list[tuple[str, str]] | None = None


def worker_setup(
    repo: Repository, root_fd: int, *, owner: bool, xattrs: bool, verify: bool, small: int
) -> WorkerSetup | None:
    """The workers' setup, or None when the repository is not a local folder."""
    inner: object = repo.backend
    while not isinstance(inner, LocalBackend) and hasattr(inner, "inner"):
        inner = inner.inner
    if not isinstance(inner, LocalBackend):
        return None  # an S3 backend's clients do not cross a process boundary
    return WorkerSetup(
        backend=inner,
        config=repo.config.to_bytes(),
        master=repo._master,
        slot_id=repo.slot_id,
        cache_dir=os.fspath(repo._cache_base),
        parent_pid=os.getpid(),
        root_fd=root_fd,
        owner=owner,
        xattrs=xattrs,
        verify=verify,
        small=small,
    )


def start_pool(setup: WorkerSetup, processes: int) -> ProcessPoolExecutor:
    """Worker processes running ``_init(setup)`` first, forked from the fork server
    with this module imported (see ``forked_pool``)."""
    return forked_pool(processes, _init, setup, [__name__])


def submit(pool: ProcessPoolExecutor, jobs: list[Job]) -> Future[BatchOutcome]:
    """Queue one batch of files (forking a worker when none is idle).

    ``ForkServerUnavailable`` when that worker cannot be forked because another pool
    replaced a deleted fork server while this one connected (``forked_pool``):
    multiprocessing then finds its fork-server fields reset and raises ``ValueError``
    ("server not running") or ``TypeError`` (connecting to ``None``)."""
    try:
        return pool.submit(_write_batch, jobs)
    except (ValueError, TypeError) as exc:
        raise ForkServerUnavailable(f"multiprocessing's fork server was reset: {exc}") from exc


class _Worker:
    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.repo = Repository(
            RetryingBackend(setup.backend),
            RepositoryConfig.from_bytes(setup.config),
            setup.master,
            setup.slot_id,
            cache_dir=setup.cache_dir,
        )
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        self.root = os.open(f"/proc/{setup.parent_pid}/fd/{setup.root_fd}", flags)
        self.dirs = OpenPath(self.root)


_worker: _Worker | None = None


def _init(setup: WorkerSetup) -> None:
    global _worker
    _worker = _Worker(setup)
    # A batch allocates thousands of short-lived objects (nodes, chunks) and forms no
    # cycles worth chasing: a young collection every 700 allocations was ~3 % of the
    # samples of a reference restore (perf); the imported modules are frozen out of it.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def _write_batch(jobs: list[Job]) -> BatchOutcome:
    w = _worker
    assert w is not None, "worker process not initialised"
    s = w.setup
    errors: list[tuple[str, str]] = []
    out = BatchOutcome(errors=errors)
    prefetched: dict[bytes, bytes] | None = None
    ids = [c for _, _, node, _ in jobs if node.size <= s.small for c in node.content]
    if ids:
        try:
            prefetched = fetch_chunks(w.repo, ids)
        except RepositoryError:
            prefetched = None  # per-file fetches: the error then names the file
    for parts, name, node, shown in jobs:
        if node.size > s.small:  # streams (a batch's last file): the small files' chunks
            prefetched = None  # are not held while it is written
        try:
            check_name(name)
            dir_fd = w.dirs.open(parts)
        except (OSError, SourceError) as exc:
            reason = describe_restore_error(exc) if isinstance(exc, OSError) else str(exc)
            errors.append((shown, reason))
            continue
        try:
            written, problems = write_local_file(
                w.repo,
                dir_fd,
                name,
                node,
                owner=s.owner,
                xattrs=s.xattrs,
                verify=s.verify,
                prefetched=prefetched,
            )
        except (OSError, RepositoryError) as exc:
            if isinstance(exc, OSError):
                errors.append((shown, describe_restore_error(exc)))
            else:
                errors.append((shown, f"content unreadable: {exc}"))
            try:  # no partial copy left behind
                os.unlink(name, dir_fd=dir_fd)
            except OSError as rm:
                reason = describe_restore_error(rm)
                errors.append((shown, f"incomplete copy left behind: {reason}"))
            continue
        errors.extend((shown, p) for p in problems)
        out.files += 1
        out.bytes += written
    return out
