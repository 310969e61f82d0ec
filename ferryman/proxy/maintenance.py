"""The ``maintenance`` task: delete the restore points retention let go, then collect garbage.

Garbage collection has two phases (docs/format.md, "Garbage collection"): a run
sweeps the generations whose writer fence has passed, then marks a new one. The
task runs it, and runs the sweep once more when the new generation's fence has
already passed (no backup was writing while it marked), so that the space of the
points it deleted comes back now rather than at the next maintenance. Points
that are still reached by a remaining restore point keep their data: GC only
deletes packs no remaining restore point (or checkpoint) reaches.
"""

from __future__ import annotations

import logging
from typing import Any

from ferryman.proxy.protocol import TaskAssignment, TaskResult
from ferryman.repository import ObjectNotFound, Repository

log = logging.getLogger("ferryman.proxy.maintenance")


def stored_bytes(repo: Repository) -> int:
    """Bytes of the records the index lists (packs' data, without their tables)."""
    repo.sync_index()
    return repo.index_cache.total_length()


def run_maintenance_task(a: TaskAssignment, repo: Repository) -> TaskResult:
    """Delete the listed restore points (already gone counts as done), then run GC."""
    deleted: list[str] = []
    missing: list[str] = []
    for item in a.params.get("delete", []):
        point_id = str(item["point_id"])
        try:
            repo.load_restore_point(point_id)
        except ObjectNotFound:
            missing.append(point_id)  # deleted by an earlier, interrupted attempt
            continue
        repo.delete_restore_point(point_id)
        deleted.append(point_id)
        log.info("task %d: restore point %s of %s deleted", a.task_id, point_id, item.get("share"))
    output: dict[str, Any] = {"deleted": deleted, "missing": missing}
    gone = set(deleted) | set(missing)
    stats: dict[str, Any] = {
        "points_removed": len(gone),
        "removed": [item for item in a.params.get("delete", []) if item["point_id"] in gone],
    }
    if not a.params.get("gc", True):
        return TaskResult(task_id=a.task_id, state="success", stats=stats, output=output)
    try:
        before = stored_bytes(repo)
        repack_below = float(a.params.get("repack_below", 0.0))
        report = repo.gc(repack_below=repack_below)
        deleted_packs = report.deleted_packs
        waiting = report.waiting_generations
        if report.marked_generation is not None:
            # sweep what it just marked if no writer was active then (else: next maintenance)
            second = repo.gc(do_mark=False)
            deleted_packs += second.deleted_packs
            waiting = second.waiting_generations
        after = stored_bytes(repo)
    except Exception as exc:  # the points are deleted: report them with the GC failure
        log.exception("task %d: garbage collection failed", a.task_id)
        return TaskResult(
            task_id=a.task_id,
            state="failed",
            stats=stats,
            output=output,
            error=f"garbage collection failed: {type(exc).__name__}: {exc}",
        )
    stats.update(
        packs_deleted=deleted_packs,
        packs_repacked=report.repacked_packs,
        bytes_before=before,
        bytes_after=after,
        bytes_reclaimed=max(0, before - after),
        gc_waiting=len(waiting),
        repository_bytes=after,
    )
    return TaskResult(task_id=a.task_id, state="success", stats=stats, output=output)
