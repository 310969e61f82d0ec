"""Garbage collection in two phases, safe while other processes write.

Mark (generation g): list restore points, sync the index, compute the reachable
set, condemn every pack holding no reachable blob's indexed location (and every
unindexed pack), put ``gc/condemned-g``, then list the writer leases and record
them in it.  Sweep (a later run): once every recorded lease has ended or
expired, recompute reachability from the restore points present now, delete the
condemned packs that are still unreferenced after consolidating the index, and
drop the list.  The argument why this never deletes a blob a writer relies on
is in docs/format.md ("Garbage collection").
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ferryman.repository import gc_state, index, pack
from ferryman.repository.errors import CorruptObject, IncompleteRepository, ObjectNotFound
from ferryman.repository.gc_state import CondemnedList
from ferryman.repository.lease import WRITERS_PREFIX, list_leases
from ferryman.repository.reachability import ReachableSet, mark_reachable
from ferryman.repository.rebuild import list_packs

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class GCReport:
    """What one ``gc`` run did."""

    marked_generation: int | None = None
    condemned_packs: int = 0
    swept_generations: list[int] = field(default_factory=list)
    waiting_generations: list[int] = field(default_factory=list)
    deleted_packs: int = 0
    reprieved_packs: int = 0
    segments_written: int = 0
    segments_deleted: int = 0
    leases_removed: int = 0
    reachable_blobs: int = 0
    repacked_packs: int = 0
    repacked_blobs: int = 0


def _live_packs(repo: Repository, avoid: set[bytes]) -> tuple[set[bytes], int]:
    """Packs that must stay so every blob reachable from a restore point keeps a copy."""
    points = repo.list_restore_points(include_checkpoints=True)
    repo.sync_index()  # after listing points: a point's segments precede it
    with mark_reachable(repo, points) as reach:
        return set(_choose(repo, reach, avoid)), len(reach)


def _choose(repo: Repository, reach: ReachableSet, avoid: set[bytes]) -> dict[bytes, int]:
    """Keep one copy of each reachable blob; return live pack -> bytes of kept records.

    For a blob with several indexed copies, a copy outside ``avoid`` (condemned
    packs) is kept in preference, the lowest pack id first.
    """
    live: dict[bytes, int] = {}
    for blob_id in reach:
        locations = repo.index_cache.locations(blob_id)
        if not locations:
            # Its pack may exist unindexed: deleting "garbage" now could destroy it.
            raise IncompleteRepository(
                f"blob {blob_id.hex()} is reachable from a restore point but not indexed; "
                "run check (and rebuild-index) before garbage collection"
            )
        preferred = [e for e in locations if e.pack_id not in avoid] or locations
        kept = preferred[0]
        live[kept.pack_id] = live.get(kept.pack_id, 0) + kept.length
    return live


def _sparse_packs(repo: Repository, live: dict[bytes, int], threshold: float) -> set[bytes]:
    """Live packs whose kept records fill less than ``threshold`` of their record bytes."""
    sparse = set()
    for pid, total in repo.index_cache.pack_totals().items():
        kept = live.get(pid)
        if kept is not None and total and kept / total < threshold:
            sparse.add(pid)
    return sparse


def _repack(
    repo: Repository, reach: ReachableSet, avoid: set[bytes], sparse: set[bytes], report: GCReport
) -> None:
    """Copy the kept blobs of sparse packs into new packs (indexed before anything else)."""
    with repo.open_writer("gc-repack") as writer:
        for blob_id in reach:
            locations = repo.index_cache.locations(blob_id)
            preferred = [e for e in locations if e.pack_id not in avoid] or locations
            if preferred and preferred[0].pack_id in sparse:
                data = repo.get_blob(blob_id)
                writer.add_blob(preferred[0].kind, blob_id, data, force=True)
                report.repacked_blobs += 1
    report.repacked_packs += len(sparse)


def mark(repo: Repository, report: GCReport, repack_below: float = 0.0) -> None:
    """Phase 1: condemn unreachable packs and record the writers that may not know.

    With ``repack_below`` > 0, live packs whose kept records fill less than that
    fraction are first copied (their live blobs) into new packs, then condemned.
    """
    present = list_packs(repo)  # before reachability: newer packs are never condemned
    already: set[bytes] = set()
    for item in gc_state.load_condemned(repo.backend, repo.keys.encryption):
        already.update(item.packs)
    points = repo.list_restore_points(include_checkpoints=True)
    repo.sync_index()  # after listing points: a point's segments precede it
    with mark_reachable(repo, points) as reach:
        report.reachable_blobs = len(reach)
        live = _choose(repo, reach, already)
        sparse = _sparse_packs(repo, live, repack_below) & present.keys() if repack_below else set()
        if sparse:
            _repack(repo, reach, already, sparse, report)
            live = _choose(repo, reach, already | sparse)
    dead = sorted(pid for pid in present if pid not in live and pid not in already)
    if not dead:
        return
    condemned = CondemnedList(time.time_ns(), time.time(), dead, None)
    repo.backend.put(condemned.name, condemned.seal(repo.keys.encryption))
    # Only now (the list is durable) look at the writers: see the proof in docs/format.md.
    condemned.writers = [lease.id for lease in list_leases(repo.backend, repo.keys.encryption)]
    repo.backend.put(condemned.name, condemned.seal(repo.keys.encryption))
    report.marked_generation = condemned.generation
    report.condemned_packs = len(dead)


def _fence_passed(repo: Repository, item: CondemnedList, grace: float) -> bool:
    if item.writers is None:
        # The mark crashed before listing writers; any listing after the list is durable is valid.
        item.writers = [lease.id for lease in list_leases(repo.backend, repo.keys.encryption)]
        repo.backend.put(item.name, item.seal(repo.keys.encryption))
        return not item.writers
    now = time.time()
    waiting = set(item.writers)
    for lease in list_leases(repo.backend, repo.keys.encryption):
        if lease.id in waiting and lease.expires + grace >= now:
            return False
    return True


def _consolidate(repo: Repository, doomed: set[bytes], report: GCReport) -> None:
    """Rewrite the index without the doomed packs, then delete the segments it replaced."""
    old = repo.index_cache.known_segments() & set(repo.backend.list(index.INDEX_PREFIX))
    # Encoded as read, in blob-id order: no list of up to MAX_ENTRIES_PER_SEGMENT
    # entries (309 MB peak RSS on 600k blobs when it was one, bench_memory_scaling --gc).
    kept = (e for e in repo.index_cache.iter_entries() if e.pack_id not in doomed)
    while True:
        plain, count = index.encode_sorted_segment(
            itertools.islice(kept, index.MAX_ENTRIES_PER_SEGMENT)
        )
        if not count:
            break
        index.put_encoded_segment(repo.backend, repo.keys.encryption, plain)
        report.segments_written += 1
        del plain
    for name in sorted(old):
        repo.backend.delete(name)
        report.segments_deleted += 1


def sweep(repo: Repository, item: CondemnedList, report: GCReport) -> None:
    """Phase 2 for one generation whose writer fence has passed."""
    live, _ = _live_packs(repo, set(item.packs))
    doomed = {pid for pid in item.packs if pid not in live}
    report.reprieved_packs += len(item.packs) - len(doomed)
    if doomed:
        _consolidate(repo, doomed, report)
        kinds = list_packs(repo)
        for pid in sorted(doomed):
            kind = kinds.get(pid)
            if kind is not None:
                repo.backend.delete(pack.pack_name(kind, pid.hex()))
                report.deleted_packs += 1
            (repo.cache_path / "packs" / pid.hex()).unlink(missing_ok=True)
        repo.sync_index()
    repo.backend.delete(item.name)
    report.swept_generations.append(item.generation)


def remove_expired_leases(repo: Repository, grace: float, report: GCReport) -> None:
    """Delete leases of writers that died without releasing them."""
    now = time.time()
    for lease in list_leases(repo.backend, repo.keys.encryption):
        if lease.expires + grace < now:
            repo.backend.delete(WRITERS_PREFIX + lease.id)
            report.leases_removed += 1


def run_gc(
    repo: Repository,
    *,
    do_mark: bool = True,
    do_sweep: bool = True,
    grace: float = 60.0,
    repack_below: float = 0.0,
    consolidate_above: int = 256,
) -> GCReport:
    """Sweep every generation whose fence passed, then mark a new one.

    ``grace`` is added to lease expiry times to absorb clock skew between hosts;
    ``repack_below`` (e.g. 0.5) also rewrites live packs that are mostly garbage;
    more than ``consolidate_above`` index segments are merged into few large ones.
    Run at most one ``gc`` per repository at a time (the server schedules it).
    """
    report = GCReport()
    if do_sweep:
        for item in gc_state.load_condemned(repo.backend, repo.keys.encryption):
            try:
                passed = _fence_passed(repo, item, grace)
            except (CorruptObject, ObjectNotFound) as exc:
                log.warning("gc state %s unreadable: %s", item.name, exc)
                continue
            if passed:
                sweep(repo, item, report)
            else:
                report.waiting_generations.append(item.generation)
    if do_mark:
        mark(repo, report, repack_below)
    if len(list(repo.backend.list(index.INDEX_PREFIX))) > consolidate_above:
        # Many small segments (one or more per backup) slow down a new proxy's first sync.
        repo.sync_index()
        _consolidate(repo, set(), report)
        repo.sync_index()
    remove_expired_leases(repo, grace, report)
    return report
