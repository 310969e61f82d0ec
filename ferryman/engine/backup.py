"""run_backup: one backup task (a whole share or one partition of it).

Threads: the caller's thread runs the scanner (walk + change detection); one
reader thread reads large files; ``options.workers`` saver threads chunk, hash and store
contents (compression/encryption happen inside ``add_blob``; small files of a
local source are read, cut, hashed and compressed by saver processes,
``save_procs``); one tree saver
thread builds tree blobs in scan order and takes checkpoints; the repository
writer's upload pool writes packs; a ticker emits progress. All hand-offs are
bounded, so memory does not grow with the share.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import closing

from ferryman.engine.checkpoint import (
    CheckpointSaver,
    Parents,
    adopt_interrupted_packs,
    delete_checkpoints,
    find_parents,
)
from ferryman.engine.file_saver import FileSaver
from ferryman.engine.gc_tuning import rarer_gc
from ferryman.engine.io_governor import IoGovernor
from ferryman.engine.listing_cache import LISTINGS_FILE, ListingCache
from ferryman.engine.nodes import store_root
from ferryman.engine.options import BackupCancelled, BackupOptions, BackupResult, EngineError
from ferryman.engine.progress import ProgressCallback, ProgressTicker
from ferryman.engine.scanner import ScanCancelled, Scanner
from ferryman.engine.selection import PathFilter, build_selection
from ferryman.engine.stats import StatsCollector
from ferryman.engine.switch_interval import shorter_switch_interval
from ferryman.engine.tree_saver import TreeSaver, TreeSaverFailed
from ferryman.repository import Repository, RepositoryError
from ferryman.sources.base import Source, SourceError, SourceLost
from ferryman.sources.local import LocalDir

log = logging.getLogger(__name__)


class BackupFailed(EngineError):
    """The task could not complete (repository failure, source root unavailable)."""


def run_backup(
    source: Source,
    repo: Repository,
    options: BackupOptions,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BackupResult:
    """Back up ``source`` (or the partition ``options.paths`` of it) into ``repo``.

    Saves a restore point for the share unless ``options.save_restore_point`` is
    False (partition tasks: the server assembles partitions with
    ``assemble_restore_point``). Raises ``BackupCancelled`` when ``cancel`` is set
    (after saving a checkpoint), ``BackupFailed`` when the task cannot go on (source
    root or repository unusable); unreadable entries never raise: they become warnings.
    """
    collector = StatsCollector()
    with rarer_gc(), shorter_switch_interval():
        parents = find_parents(repo, options)
        with source.snapshot() as view:
            return _backup(view, repo, options, progress, cancel, parents, collector)


def _backup(
    source: Source,
    repo: Repository,
    options: BackupOptions,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    parents: Parents,
    collector: StatsCollector,
) -> BackupResult:
    selection = build_selection(options.paths)
    path_filter = PathFilter(options.include, options.exclude)
    try:
        root_dir = source.open_root()
    except (SourceError, SourceLost) as exc:
        raise BackupFailed(f"backup of share {options.share!r} failed: {exc}") from exc
    try:
        with (
            repo.open_writer(f"backup:{options.share}:{options.partition}") as writer,
            ProgressTicker(collector, progress, options.progress_interval),
            closing(ListingCache(repo.cache_path / LISTINGS_FILE)) as listings,
        ):
            # sent = pack objects uploaded and indexed: what another attempt could reuse
            collector.transferred = lambda: int(writer.stats["bytes_published"])
            collector.add(bytes_adopted=adopt_interrupted_packs(writer, parents))
            checkpoints = CheckpointSaver(repo, writer, options)
            governor = (
                IoGovernor(max(1, options.workers), options.adaptive_io)
                if options.adaptive_io is not None
                else None
            )
            saver = FileSaver(
                repo,
                writer,
                collector,
                options.workers,
                options.max_inflight_bytes,
                read_xattrs=options.read_xattrs,
                cancel=cancel,
                governor=governor,
                # saver processes read through local directory handles only
                processes=options.saver_processes() if isinstance(root_dir, LocalDir) else 0,
            )
            trusted = writer.trusts_points(parents.point_ids)
            trees = TreeSaver(
                repo,
                writer,
                collector,
                on_checkpoint=checkpoints,
                reread=saver.read_now,
                checkpoint_interval=options.checkpoint_interval,
                trust_reused=trusted,
                listings=listings,
            )
            scanner = Scanner(
                repo,
                writer,
                saver,
                trees,
                collector,
                path_filter,
                one_file_system=options.one_file_system,
                read_xattrs=options.read_xattrs,
                cancel=cancel,
                trust_reused=trusted,
                listings=listings,
                prev_entries=parents.entries,
            )
            cancelled = False
            try:
                scanner.run(root_dir.retain(), selection, parents.roots)
            except ScanCancelled:
                cancelled = True
            finally:
                saver.close()
                root = trees.finish()
            if cancelled or root is None:
                kept = checkpoints.saved[-1] if checkpoints.saved else "(none)"
                raise BackupCancelled(
                    f"backup of share {options.share!r} cancelled; "
                    f"checkpoint {kept} keeps what was stored"
                )
            t0 = time.perf_counter()
            root_id = store_root(repo, writer, root)
            stats = collector.snapshot()
            point_id: str | None = None
            if options.save_restore_point:
                point = writer.save_restore_point(
                    share=options.share,
                    root=root_id,
                    parent=parents.parent_id,
                    stats=stats.as_dict(),
                    extra={"tags": dict(options.tags)},
                )
                point_id = point.id
            else:
                writer.flush()
            collector.add(seconds_repository_write=time.perf_counter() - t0)
    except TreeSaverFailed as exc:
        raise BackupFailed(f"backup of share {options.share!r} failed: {exc}") from exc
    except RepositoryError as exc:
        raise BackupFailed(f"backup of share {options.share!r} failed: {exc}") from exc
    except SourceLost as exc:  # no restore point: what was stored stays in the checkpoints
        raise BackupFailed(f"backup of share {options.share!r} failed: {exc}") from exc
    finally:
        root_dir.release()
    delete_checkpoints(repo, parents.checkpoint_ids + checkpoints.saved)
    stats = collector.snapshot()
    return BackupResult(
        status="warning" if collector.warning_count else "success",
        share=options.share,
        partition=options.partition,
        paths=list(options.paths),
        root_tree=root_id,
        restore_point=point_id,
        parent=parents.parent_id,
        stats=stats,
        warnings=list(collector.warnings),
        warnings_dropped=collector.warnings_dropped,
        bottleneck=stats.bottleneck(),
        io_adaptive=governor.report() if governor is not None else None,
    )
