"""Split a large share into balanced partitions of top-level subtrees.

Sizes come from the previous successful run (`share_stats` recorded by the
proxy: files and bytes per top-level entry). A first run of an unknown share
goes in one task; its statistics drive the split of the next runs.
"""

from __future__ import annotations

import heapq
from typing import Any


def plan_partitions(
    stats: dict[str, Any] | None, max_partitions: int, min_bytes: int, min_files: int
) -> list[list[str]]:
    """Return lists of top-level names; `[]` or one list means "do not split"."""
    if not stats:
        return []
    top: dict[str, list[int]] = stats.get("top") or {}
    total_bytes = int(stats.get("bytes") or 0)
    total_files = int(stats.get("files") or 0)
    if len(top) < 2 or (total_bytes < min_bytes and total_files < min_files):
        return []
    # a partition should be worth a task: about min_bytes or min_files each
    by_size = max(1, total_bytes // max(min_bytes, 1))
    by_files = max(1, total_files // max(min_files, 1))
    count = min(max_partitions, len(top), max(by_size, by_files, 2))
    return balance(top, count, total_bytes, total_files)


def balance(
    top: dict[str, list[int]], count: int, total_bytes: int, total_files: int
) -> list[list[str]]:
    """Greedy longest-first bin packing on a cost mixing bytes and files."""
    per_file = (total_bytes / total_files) if total_files else 0.0

    def cost(name: str) -> float:
        files, size = top[name][0], top[name][1]
        # a file costs at least its metadata walk, counted as an average file's bytes / 4
        return size + files * per_file / 4

    bins: list[tuple[float, int, list[str]]] = [(0.0, i, []) for i in range(count)]
    heapq.heapify(bins)
    for name in sorted(top, key=cost, reverse=True):
        load, index, names = heapq.heappop(bins)
        names.append(name)
        heapq.heappush(bins, (load + cost(name), index, names))
    parts = [sorted(names) for _, _, names in sorted(bins, key=lambda b: b[1]) if names]
    return parts
