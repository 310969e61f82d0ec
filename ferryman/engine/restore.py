"""run_restore: a whole restore point, a subtree or selected paths, to any target.

The tree is walked depth-first on the caller's thread (streaming, one tree blob
per level in memory); directories, symlinks, special files and hardlinks are
created there, file contents are written by a pool of workers (small files in
batches, one job per file otherwise). Directory metadata is applied last,
children before parents, so writing content does not disturb directory
timestamps.

Safety against hostile restore points: every name is checked (no ``/``, NUL,
``.``, ``..``, empty), entries of a directory must come in strictly increasing
order (a duplicate name in a second tree blob is refused), and every create or
open is relative to an open directory fd with ``O_NOFOLLOW``: nothing is ever
written outside the target.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator

from ferryman.engine.browse import find_node, split_path
from ferryman.engine.gc_tuning import rarer_gc
from ferryman.engine.nodes import Node, load_root
from ferryman.engine.options import (
    OVERWRITE_POLICIES,
    EngineError,
    InvalidOptions,
    RestoreOptions,
    RestoreResult,
)
from ferryman.engine.progress import ProgressCallback, ProgressTicker
from ferryman.engine.restore_walk import Restorer, TargetDir, dir_entries, join_path
from ferryman.repository import Repository, RepositoryError
from ferryman.sources.base import RemoteRestoreTarget, SourceError, SourceLost, check_name
from ferryman.sources.local import LocalRestoreTarget


class RestoreFailed(EngineError):
    """The restore could not start (unknown point, unusable target, corrupt root)."""


def run_restore(
    repo: Repository,
    point_id: str,
    target: str | bytes | os.PathLike[str] | LocalRestoreTarget | RemoteRestoreTarget,
    options: RestoreOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> RestoreResult:
    """Restore a restore point (or ``options.paths`` of it) into ``target``.

    Per-path problems (permission denied, disk full, hostile names) are reported
    in the result (status ``warning``); ``RestoreFailed`` is raised only when
    nothing can be restored (unknown point, unusable target, unreadable root).
    ``cancel`` stops the walk; what was written stays.
    """
    options = options or RestoreOptions()
    if options.overwrite not in OVERWRITE_POLICIES:
        raise InvalidOptions(f"unknown overwrite policy {options.overwrite!r}")
    if isinstance(target, str | bytes | os.PathLike):
        target = LocalRestoreTarget(target)
    try:
        point = repo.load_restore_point(point_id)
        root = load_root(repo, point.root)
    except (RepositoryError, EngineError, ValueError) as exc:
        raise RestoreFailed(f"restore point {point_id}: {exc}") from exc
    try:
        root_dir: TargetDir = target.open_root()
    except (SourceError, SourceLost) as exc:
        raise RestoreFailed(str(exc)) from exc
    restorer = Restorer(repo, root_dir, options)
    started = time.monotonic()
    try:
        # the walk decodes a Node per entry: young collections as rare as in a backup
        with (
            rarer_gc(),
            ProgressTicker(restorer.collector, progress, options.progress_interval, "restore"),
        ):
            _restore_selection(restorer, root, options, cancel)
            restorer.finish()
    except SourceLost as exc:  # the target went away for good: not a per-file problem
        raise RestoreFailed(f"restore of point {point_id} stopped: {exc}") from exc
    finally:
        restorer.close()
        root_dir.release()
    stats = restorer.stats
    stats.seconds_total = time.monotonic() - started
    errors = list(restorer.collector.warnings)
    return RestoreResult(
        status="warning" if stats.errors else "success",
        stats=stats,
        errors=errors,
        errors_dropped=restorer.collector.warnings_dropped,
    )


def _cancellable(entries: Iterator[Node], cancel: threading.Event | None) -> Iterator[Node]:
    for node in entries:
        if cancel is not None and cancel.is_set():
            return
        yield node


def _restore_selection(
    restorer: Restorer, root: Node, options: RestoreOptions, cancel: threading.Event | None
) -> None:
    repo = restorer.repo
    if not options.paths:
        restorer.restore_entries(
            restorer.root, _cancellable(dir_entries(repo, root), cancel), b"", b""
        )
        restorer.mark_dir(b"", root)
        return
    for raw in options.paths:
        try:
            parts = split_path(raw)
            chain = find_node(repo, root, parts)
        except (RepositoryError, EngineError, ValueError) as exc:  # reported per path
            restorer.error(os.fsdecode(raw), str(exc))
            continue
        if not chain:
            restorer.restore_entries(
                restorer.root, _cancellable(dir_entries(repo, root), cancel), b"", b""
            )
            continue
        tdir = restorer.root.retain()
        target_rel = b""
        try:
            if not options.strip_paths:
                for parent in chain[:-1]:
                    check_name(parent.name)
                    sub = tdir.make_dir(parent.name, stat.S_IMODE(parent.mode) | stat.S_IRWXU)
                    tdir.release()
                    tdir = sub
                    target_rel = join_path(target_rel, parent.name)
                    restorer.mark_dir(target_rel, parent)
            share_rel = b"/".join(parts[:-1])
            entries = _cancellable(iter([chain[-1]]), cancel)
            restorer.restore_entries(tdir, entries, share_rel, target_rel)
        except (OSError, SourceError) as exc:
            restorer.error(os.fsdecode(raw), str(exc))
        finally:
            tdir.release()
