"""Parents for change detection, and checkpoints of interrupted tasks.

A checkpoint is an ordinary restore point with ``checkpoint=True`` whose tree
holds every entry completed so far (partial directories included), tagged with
the share, partition and partition paths. A restarted task — on any proxy —
uses the newest matching checkpoint as its first parent for change detection,
in front of the previous complete restore point: files already stored are
neither read nor sent again. Checkpoints of a share/partition are deleted once
a task for it completes; a task keeps only its newest own checkpoint.

A large file being read when a checkpoint is taken is recorded as a *partial
node* (``partial_file_map``): its chunks cover the stored prefix, ``s`` is the
prefix length and ``ps`` the file's size when it was read. A resumed task that
finds the file unchanged (size ``ps``, same mtime, ctime, inode, mode) reads it
only from the end of the prefix (``resumable_prefix``). Readers that do not know
``ps`` see a file whose size differs from the source: they read it again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ferryman.engine.file_saver import PartialContent
from ferryman.engine.nodes import Node, NodeMap, load_root, node_to_map, store_root
from ferryman.engine.options import BackupOptions, InvalidOptions
from ferryman.repository import Repository, RepositoryError, RepositoryWriter, RestorePoint

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parents:
    """Trees used for change detection, most authoritative first."""

    roots: list[Node] = field(default_factory=list)
    point_ids: list[str] = field(default_factory=list)  # the restore point of each root
    parent_id: str | None = None
    checkpoint_ids: list[str] = field(default_factory=list)
    entries: int = 0  # files and directories the parent's walk saw (its stats), 0 unknown


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
            found.point_ids.append(point.id)
        except (RepositoryError, ValueError) as exc:
            log.warning("restore point %s unusable for change detection: %s", point.id, exc)
    found.parent_id = parent.id if parent is not None else None
    if parent is not None:
        counts = [parent.stats.get(k) for k in ("files_scanned", "dirs_scanned")]
        found.entries = sum(c for c in counts if isinstance(c, int))
    return found


# Node key of a partial file in a checkpoint tree: the file's size when its prefix was read.
PARTIAL_SIZE = "ps"


def partial_file_map(node: Node, prefix: PartialContent | None) -> NodeMap | None:
    """The checkpoint record of a large file whose first ``prefix.size`` bytes are stored.

    None when there is nothing worth recording (no prefix, the whole file, hard links).
    """
    if prefix is None or not prefix.content or not 0 < prefix.size < node.size:
        return None
    if node.nlink != 1 or node.link_to is not None:
        return None
    m = node_to_map(node)
    m["c"], m["s"], m[PARTIAL_SIZE] = list(prefix.content), prefix.size, node.size
    m.pop("h", None)
    return m


def resumable_prefix(
    prevs: Iterable[NodeMap],
    st: os.stat_result,
    has_blobs: Callable[[list[bytes]], set[bytes]],
) -> PartialContent | None:
    """The stored prefix of a file a checkpoint recorded as partial, if still valid.

    Valid when the file is unchanged since (size, mtime, ctime, inode, mode) and every
    chunk of the prefix may still be referenced (``has_blobs``, asked once for the
    whole prefix); otherwise None and the file is read from its start.
    """
    for p in prevs:
        full = p.get(PARTIAL_SIZE)
        size = p.get("s", 0)
        chunks = p.get("c")
        if (
            p.get("t") != "file"
            or not isinstance(full, int)
            or not isinstance(size, int)
            or not isinstance(chunks, list)
            or not chunks
            or p.get("h")
            or not 0 < size < full
        ):
            continue
        if (
            full == st.st_size
            and p.get("mt", 0) == st.st_mtime_ns
            and p.get("ct", 0) == st.st_ctime_ns
            and p.get("i", 0) == st.st_ino
            and p.get("m", 0) == st.st_mode
            and all(isinstance(c, bytes) and len(c) == 32 for c in chunks)
            and set(chunks) <= has_blobs(chunks)
        ):
            return PartialContent(list(chunks), size, st)
    return None


def adopt_interrupted_packs(writer: RepositoryWriter, parents: Parents) -> int:
    """Index what an interrupted attempt of this task stored but never indexed.

    An attempt that died (``kill -9``, a lost lease) may have left packs that no index
    segment lists: without this, their blobs would be stored again. Done only when an
    earlier attempt is likely (a checkpoint of this task, or another writer lease of the
    same name): it lists every pack of the repository. Best effort: a failure is logged
    and the task goes on (it then stores those blobs again). Returns the bytes adopted.
    """
    try:
        if not parents.checkpoint_ids and not writer.has_predecessor():
            return 0
        return writer.adopt_unindexed_packs()
    except RepositoryError as exc:
        log.warning("could not adopt the packs of an interrupted attempt: %s", exc)
        return 0


class CheckpointSaver:
    """Saves checkpoint restore points from the tree saver thread.

    Each checkpoint holds everything the previous one of this task held (the
    walk only moves forward; a partial file grows or becomes complete), so the
    previous one is deleted once the new one is published.
    """

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
        superseded, self.saved = self.saved, [point.id]
        delete_checkpoints(self._repo, superseded)


def delete_checkpoints(repo: Repository, ids: list[str]) -> None:
    """Remove checkpoints made obsolete by a completed task (best effort, logged)."""
    for point_id in ids:
        try:
            repo.delete_restore_point(point_id)
        except RepositoryError as exc:
            log.warning("could not delete checkpoint %s: %s", point_id, exc)
