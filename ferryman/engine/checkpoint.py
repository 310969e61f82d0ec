"""Parents for change detection, and checkpoints of interrupted tasks.

A checkpoint is an ordinary restore point with ``checkpoint=True`` whose tree
holds every entry completed so far (partial directories included), tagged with
the share, partition and partition paths. A restarted task — on any proxy —
uses the newest matching checkpoint as its first parent for change detection,
in front of the previous complete restore point: files already stored are
neither read nor sent again. Checkpoints of a share/partition are deleted once
a task for it completes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ferryman.engine.nodes import Node, load_root, store_root
from ferryman.engine.options import BackupOptions, InvalidOptions
from ferryman.repository import Repository, RepositoryError, RepositoryWriter, RestorePoint

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parents:
    """Trees used for change detection, most authoritative first."""

    roots: list[Node] = field(default_factory=list)
    parent_id: str | None = None
    checkpoint_ids: list[str] = field(default_factory=list)


def _matches(point: RestorePoint, options: BackupOptions) -> bool:
    extra = point.extra
    return (
        point.share == options.share
        and extra.get("partition", "") == options.partition
        and list(extra.get("paths", [])) == list(options.paths)
    )


def find_parents(repo: Repository, options: BackupOptions) -> Parents:
    """The previous restore point of the share and any newer checkpoint of this task."""
    found = Parents()
    if not options.use_parent:
        return found
    try:
        points = repo.list_restore_points(include_checkpoints=True)
    except RepositoryError as exc:
        log.warning("cannot list restore points for change detection: %s", exc)
        return found
    parent: RestorePoint | None = None
    if options.parent:
        try:
            parent = repo.load_restore_point(options.parent)
        except RepositoryError as exc:
            raise InvalidOptions(f"parent restore point {options.parent}: {exc}") from exc
    else:
        complete = [p for p in points if p.share == options.share and not p.checkpoint]
        parent = complete[-1] if complete else None
    newest = parent.time if parent is not None else float("-inf")
    checkpoints = [p for p in points if p.checkpoint and _matches(p, options)]
    found.checkpoint_ids = [p.id for p in checkpoints]
    fresh = [p for p in checkpoints if p.time >= newest]
    for point in [*reversed(fresh[-1:]), *([parent] if parent is not None else [])]:
        try:
            found.roots.append(load_root(repo, point.root))
        except (RepositoryError, ValueError) as exc:
            log.warning("restore point %s unusable for change detection: %s", point.id, exc)
    found.parent_id = parent.id if parent is not None else None
    return found


class CheckpointSaver:
    """Saves checkpoint restore points from the tree saver thread."""

    def __init__(self, repo: Repository, writer: RepositoryWriter, options: BackupOptions) -> None:
        self._repo = repo
        self._writer = writer
        self._options = options
        self.saved: list[str] = []

    def __call__(self, partial_root: Node) -> None:
        """Store the partial tree and publish it as a checkpoint (flushes the writer)."""
        root_id = store_root(self._repo, self._writer, partial_root)
        point = self._writer.save_restore_point(
            share=self._options.share,
            root=root_id,
            checkpoint=True,
            extra={"partition": self._options.partition, "paths": list(self._options.paths)},
        )
        self.saved.append(point.id)


def delete_checkpoints(repo: Repository, ids: list[str]) -> None:
    """Remove checkpoints made obsolete by a completed task (best effort, logged)."""
    for point_id in ids:
        try:
            repo.delete_restore_point(point_id)
        except RepositoryError as exc:
            log.warning("could not delete checkpoint %s: %s", point_id, exc)
