"""Repository verification: structure (fast) and, optionally, every stored byte.

Problems are collected as messages in a :class:`CheckReport`; nothing here lets
an exception escape for damage it can describe.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ferryman.repository import blob, index, pack
from ferryman.repository.config import CONFIG_NAME, RepositoryConfig
from ferryman.repository.errors import RepositoryError
from ferryman.repository.reachability import ReachableSet
from ferryman.repository.rebuild import list_packs
from ferryman.repository.restore_point import POINTS_PREFIX, RestorePoint, open_point
from ferryman.repository.tree import Node

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository


@dataclass
class CheckReport:
    """Outcome of a check: ``ok`` when ``errors`` is empty."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    points_checked: int = 0
    packs_checked: int = 0
    packs_read: int = 0
    blobs_read: int = 0

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors


def select_packs(packs: list[bytes], subset: str | float | None) -> list[bytes]:
    """Packs to read: all, a fraction (0.1, "10%"), or the rolling part "n/t"."""
    if subset is None:
        return packs
    if isinstance(subset, str) and "/" in subset:
        n_text, t_text = subset.split("/", 1)
        n, t = int(n_text), int(t_text)
        if not (1 <= n <= t):
            raise ValueError("subset n/t needs 1 <= n <= t")
        # Every pack falls in exactly one of the t parts, so t runs cover everything.
        return [p for p in packs if int.from_bytes(p[:8], "big") % t == n - 1]
    if isinstance(subset, str):
        text = subset.strip()
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    else:
        fraction = float(subset)
    if not (0 < fraction <= 1):
        raise ValueError("subset fraction must be in (0, 1]")
    return random.sample(packs, math.ceil(len(packs) * fraction)) if packs else []


def _check_metadata(repo: Repository, report: CheckReport) -> list[RestorePoint]:
    try:
        RepositoryConfig.from_bytes(repo.backend.get(CONFIG_NAME))
        repo.list_keys()
    except RepositoryError as exc:
        report.errors.append(str(exc))
    points = []
    for name in sorted(repo.backend.list(POINTS_PREFIX)):
        try:
            points.append(open_point(repo.keys.encryption, repo.backend.get(name), name))
        except RepositoryError as exc:
            report.errors.append(f"restore point {name}: {exc}")
    for name in sorted(repo.backend.list(index.INDEX_PREFIX)):
        try:
            _, entries = index.open_segment(repo.keys.encryption, repo.backend.get(name), name)
            for _ in entries:
                pass
        except RepositoryError as exc:
            report.errors.append(f"{exc} (run rebuild-index)")
    try:
        repo.sync_index()
    except RepositoryError as exc:
        report.errors.append(f"cannot load the index: {exc}")
    return points


def _check_packs(repo: Repository, present: dict[bytes, int], report: CheckReport) -> None:
    """Every indexed pack exists and its entry table agrees with the index."""
    indexed_packs: set[bytes] = set()
    for pid, indexed in repo.index_cache.scan_by_pack():
        indexed_packs.add(pid)
        kind = present.get(pid)
        if kind is None:
            report.errors.append(f"index refers to missing pack {pid.hex()} (run rebuild-index)")
            continue
        report.packs_checked += 1
        try:
            table = pack.read_table(repo.backend, repo.keys.encryption, kind, pid.hex())
        except RepositoryError as exc:
            report.errors.append(str(exc))
            continue
        by_id = {e.blob_id: e for e in table}
        for entry in indexed:
            found = by_id.get(entry.blob_id)
            if found is None or (found.offset, found.length, found.raw_length, found.kind) != (
                entry.offset,
                entry.length,
                entry.raw_length,
                entry.kind,
            ):
                report.errors.append(
                    f"index entry for blob {entry.blob_id.hex()} disagrees with pack {pid.hex()}"
                )
    for pid, kind in sorted(present.items()):
        if pid in indexed_packs:
            continue
        report.packs_checked += 1
        try:
            table = pack.read_table(repo.backend, repo.keys.encryption, kind, pid.hex())
        except RepositoryError as exc:
            # Nothing refers to it (e.g. an upload cut short on a backend without atomic
            # writes): garbage collection removes it.  If the index was lost instead, the
            # restore points' blobs show up as missing errors below.
            report.warnings.append(f"unindexed pack {pid.hex()} is unreadable: {exc}")
            continue
        if not any(repo.index_cache.lookup(e.blob_id) for e in table):
            report.warnings.append(
                f"pack {pid.hex()} is not indexed (a backup in progress, or an interrupted "
                "one; garbage collection removes it if nothing refers to it)"
            )


def _walk(repo: Repository, point: RestorePoint) -> Iterator[tuple[str, bytes | None, Node | None]]:
    """Yield (path, tree id, None) per tree and (path, None, node) per node."""
    pending: list[tuple[str, bytes]] = [("/", point.root)]
    while pending:
        path, tree_id = pending.pop()
        yield path, tree_id, None
        try:
            nodes = repo.get_tree(tree_id)
        except RepositoryError:
            continue
        for node in nodes:
            child = path.rstrip("/") + "/" + node.name.decode("utf-8", "backslashreplace")
            yield child, None, node
            for sub in node.subtrees:
                pending.append((child, sub))


def _check_points(
    repo: Repository, points: list[RestorePoint], bad: set[bytes], report: CheckReport
) -> None:
    """Every tree decodes and every referenced blob is indexed; collect bad ids."""
    with ReachableSet(repo.cache_path) as seen:
        for point in points:
            report.points_checked += 1
            pending = [point.root] if seen.add(point.root) else []
            while pending:
                tree_id = pending.pop()
                try:
                    nodes = repo.get_tree(tree_id)
                except RepositoryError as exc:
                    report.errors.append(f"restore point {point.id}: tree {tree_id.hex()}: {exc}")
                    bad.add(tree_id)
                    continue
                for node in nodes:
                    for cid in node.content:
                        if seen.add(cid) and repo.index_cache.lookup(cid) is None:
                            report.errors.append(
                                f"restore point {point.id}: data blob {cid.hex()} is missing"
                            )
                            bad.add(cid)
                    pending.extend(s for s in node.subtrees if seen.add(s))


def _read_packs(
    repo: Repository,
    packs: list[bytes],
    kinds: dict[bytes, int],
    bad: set[bytes],
    report: CheckReport,
) -> None:
    for pid in packs:
        name = pack.pack_name(kinds[pid], pid.hex())
        report.packs_read += 1
        try:
            data = repo.backend.get(name)
            entries = pack.split_pack(data, repo.keys.encryption, pid.hex(), name)
        except RepositoryError as exc:
            report.errors.append(str(exc))
            bad.update(e.blob_id for e in repo.index_cache.entries_in_pack(pid))
            continue
        cipher = pack.pack_cipher(repo.keys.encryption, pid.hex())
        for e in entries:
            report.blobs_read += 1
            record = memoryview(data)[e.offset : e.offset + e.length]
            try:
                blob.open_blob(
                    cipher, e.kind, e.blob_id, record, e.raw_length, repo.keys.blob_id, name
                )
            except RepositoryError as exc:
                report.errors.append(str(exc))
                bad.add(e.blob_id)


def _name_damage(
    repo: Repository, points: list[RestorePoint], bad: set[bytes], report: CheckReport
) -> None:
    for point in points:
        for path, tree_id, node in _walk(repo, point):
            if (tree_id is not None and tree_id in bad) or (
                node is not None and any(c in bad for c in node.content)
            ):
                report.damaged.append((point.id, path))
    for point_id, path in report.damaged:
        report.errors.append(f"damaged: restore point {point_id}: {path}")


def run_check(
    repo: Repository, *, read_data: bool = False, subset: str | float | None = None
) -> CheckReport:
    """Check structure; with ``read_data`` also read and authenticate packs (or a subset)."""
    report = CheckReport()
    points = _check_metadata(repo, report)
    present = list_packs(repo)
    _check_packs(repo, present, report)
    bad: set[bytes] = set()
    _check_points(repo, points, bad, report)
    if read_data or subset is not None:
        chosen = select_packs(sorted(present), subset)
        _read_packs(repo, chosen, present, bad, report)
    if bad:
        _name_damage(repo, points, bad, report)
    return report
