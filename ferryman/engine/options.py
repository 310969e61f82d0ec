"""Options and results of engine tasks (plain dataclasses the proxy fills and reports)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ferryman.engine.io_governor import GovernorSettings
from ferryman.engine.stats import BackupStats, RestoreStats, Warning_

OverwritePolicy = Literal["replace", "skip", "keep-both", "if-newer"]
OVERWRITE_POLICIES: tuple[str, ...] = ("replace", "skip", "keep-both", "if-newer")


def default_workers() -> int:
    """Worker threads per task: one per core, at least two (I/O overlaps native work)."""
    return max(2, os.cpu_count() or 2)


# Saver processes pay where the threads are held to ~1.4 cores by the GIL and more
# cores are there to take the per-file work; on 2 cores they measured as a wash in
# time for ~10 % more CPU and ~90 MB more memory per task (decision 0011).
SAVER_PROCESSES_FROM_CORES = 4


def auto_processes(workers: int) -> int:
    """Saver processes by default: one per worker thread, at most one per core, on
    hosts with ``SAVER_PROCESSES_FROM_CORES`` cores or more; none below."""
    cores = os.cpu_count() or 1
    return min(workers, cores) if cores >= SAVER_PROCESSES_FROM_CORES else 0


class EngineError(Exception):
    """Base class of engine errors; ``str()`` is a message fit for a user."""


class BackupCancelled(EngineError):
    """The task was cancelled; a checkpoint holds what was completed."""


class InvalidOptions(EngineError):
    """Options that cannot be honoured (unknown policy, bad path...)."""


@dataclass(slots=True)
class BackupOptions:
    """What to back up and how.

    ``share`` names the share (restore points are grouped by it). ``paths``:
    the subtrees of this partition, relative to the source root (``b"a/b"``);
    empty = the whole share. ``parent`` forces the restore point used for change
    detection; by default the newest one of the same share (or a newer checkpoint
    of the same share and partition) is used. ``partition`` names the partition
    (checkpoints are per share and partition). ``checkpoint_interval``: seconds
    between checkpoints, which bound what an interrupted task reads again.
    ``adaptive_io`` (settings, or None = off): lower the number of parallel source
    reads while the source's read latency is well above the one measured at the
    start, raise it again when it recovers (``io_governor``); the changes are in
    ``BackupResult.io_adaptive``.
    """

    share: str
    paths: list[bytes] = field(default_factory=list)
    partition: str = ""
    parent: str | None = None
    use_parent: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    one_file_system: bool = False
    read_xattrs: bool = True
    workers: int = field(default_factory=default_workers)
    checkpoint_interval: float = 30.0
    progress_interval: float = 0.5
    save_restore_point: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    # chunk bytes queued or being stored: 16 MiB keeps two workers fed (~50 ms of
    # work ahead) and cut the reference first backup's peak RSS by ~14 MB against 32
    max_inflight_bytes: int = 16 << 20
    adaptive_io: GovernorSettings | None = None
    # worker processes reading, cutting, hashing and compressing small files of a local
    # source (file_saver.PROCESS_AFTER_FILES on, without adaptive_io); None = automatic
    # (auto_processes: one per worker thread, up to the cores, on 4 cores or more), 0 = threads only
    processes: int | None = None

    def saver_processes(self) -> int:
        """The number of saver processes ``processes`` asks for."""
        return auto_processes(self.workers) if self.processes is None else self.processes


@dataclass(slots=True)
class BackupResult:
    """What a backup task produced: the root tree, statistics and warnings."""

    status: Literal["success", "warning"]
    share: str
    partition: str
    paths: list[bytes]
    root_tree: bytes
    restore_point: str | None
    parent: str | None
    stats: BackupStats
    warnings: list[Warning_]
    warnings_dropped: int = 0
    bottleneck: str = ""
    io_adaptive: dict[str, Any] | None = None  # IoGovernor.report() with adaptive_io


@dataclass(slots=True)
class RestoreOptions:
    """What to restore and how.

    ``paths``: entries inside the restore point to restore (``b"dir/file"``); empty =
    everything. With ``strip_paths`` the selected entries land directly in the target
    (``dir/file`` -> ``target/file``); otherwise their full relative path is recreated.
    """

    paths: list[bytes] = field(default_factory=list)
    overwrite: OverwritePolicy = "replace"
    strip_paths: bool = False
    restore_owner: bool | None = None  # None = when running as root
    restore_xattrs: bool = True
    verify: bool = True
    workers: int = field(default_factory=default_workers)
    # worker processes writing files into a local target from a local repository,
    # started past restore_walk.PROCESS_AFTER_FILES files; None = automatic
    # (writer_processes: one per core up to 4, none on one core), 0 = threads only
    processes: int | None = None
    progress_interval: float = 0.5

    def writer_processes(self) -> int:
        """The number of writer processes ``processes`` asks for."""
        if self.processes is not None:
            return self.processes
        cores = os.cpu_count() or 1
        return min(cores, 4) if cores >= 2 else 0


@dataclass(slots=True)
class RestoreResult:
    """Outcome of a restore: status, statistics and per-path errors."""

    status: Literal["success", "warning", "failed"]
    stats: RestoreStats
    errors: list[Warning_]
    errors_dropped: int = 0
