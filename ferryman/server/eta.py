"""Estimated time left of a running backup task, from the previous run's statistics.

A share's ``last_stats`` (files and bytes per top-level entry, kept after each run) give
the bytes the task will walk; the pace so far gives the time. Without statistics (a first
run) there is no estimate: ``eta_seconds`` stays absent rather than invented.
"""

from __future__ import annotations

from typing import Any

# below this much progress the pace is too noisy to extrapolate
MIN_SECONDS = 2.0
MIN_FRACTION = 0.01


def expected_bytes(last_stats: dict[str, Any] | None, partition: dict[str, Any] | None) -> int:
    """Bytes the task should scan: the whole share, or the entries of its partition."""
    if not last_stats:
        return 0
    if not partition:
        return int(last_stats.get("bytes") or 0)
    top = last_stats.get("top") or {}
    names = list(partition.get("paths") or [])
    total = sum(int((top.get(n) or [0, 0])[1]) for n in names)
    if partition.get("rest_except") is not None:
        # partition 0 also takes every entry no other partition names
        others = set(partition.get("rest_except") or []) | set(names)
        total += sum(int(v[1]) for n, v in top.items() if n not in others)
    return total


def eta_seconds(progress: dict[str, Any], expected: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far, or ``None`` when it cannot be told."""
    try:
        scanned = float(progress.get("bytes_scanned") or 0)
    except (TypeError, ValueError):
        return None
    if expected <= 0 or elapsed < MIN_SECONDS or scanned < expected * MIN_FRACTION:
        return None
    done = min(scanned / expected, 0.99)  # a grown share: stay above zero until the end
    return round(elapsed * (1 - done) / done, 1)
