"""Counters shared by the pipeline threads, and the warnings list.

Counters are updated from several threads under one lock (a few hundred
updates per second at most: one per file batch or chunk, not per byte).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Warning_:
    """A path that was skipped or degraded, with the reason (shown to the user)."""

    path: str
    reason: str


@dataclass(slots=True)
class BackupStats:
    """Final and running statistics of one backup task."""

    files_scanned: int = 0
    dirs_scanned: int = 0
    bytes_scanned: int = 0
    files_read: int = 0
    bytes_read: int = 0
    files_unchanged: int = 0
    bytes_resumed: int = 0  # prefixes of large files a checkpoint held: not read again
    chunks_new: int = 0
    bytes_new: int = 0
    chunks_deduplicated: int = 0
    bytes_deduplicated: int = 0
    trees_written: int = 0
    bytes_transferred: int = 0
    bytes_adopted: int = 0  # stored by an interrupted attempt, never indexed: indexed, not re-sent
    seconds_total: float = 0.0
    seconds_source_read: float = 0.0
    seconds_processing: float = 0.0
    seconds_repository_write: float = 0.0
    seconds_scan: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for reporting to the server)."""
        return asdict(self)

    def bottleneck(self) -> str:
        """Which stage took the most time: ``source``, ``processing`` or ``repository``."""
        # seconds_scan is the walk's wall time (it includes waiting for the workers),
        # so only the time spent in source reads counts for the source
        parts = {
            "source": self.seconds_source_read,
            "processing": self.seconds_processing,
            "repository": self.seconds_repository_write,
        }
        return max(parts, key=lambda k: parts[k])


class StatsCollector:
    """Thread-safe accumulation of ``BackupStats`` plus warnings and the current file."""

    def __init__(self, max_warnings: int = 10_000) -> None:
        self.stats = BackupStats()
        self.warnings: list[Warning_] = []
        self.warnings_dropped = 0
        self.current_path = ""
        self._max_warnings = max_warnings
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.transferred: Callable[[], int] | None = None  # bytes the repository wrote

    def add(self, **deltas: float) -> None:
        """Add to counters by name (``add(files_read=1, bytes_read=n)``)."""
        with self._lock:
            s = self.stats
            for name, value in deltas.items():
                setattr(s, name, getattr(s, name) + value)

    def warn(self, path: str, reason: str) -> None:
        """Record a skipped/degraded path (bounded list; the overflow is counted)."""
        with self._lock:
            if len(self.warnings) < self._max_warnings:
                self.warnings.append(Warning_(path, reason))
            else:
                self.warnings_dropped += 1

    def snapshot(self) -> BackupStats:
        """A consistent copy of the counters."""
        with self._lock:
            copy = BackupStats(**asdict(self.stats))
        copy.seconds_total = time.monotonic() - self.started
        if self.transferred is not None:
            copy.bytes_transferred = self.transferred()
        return copy

    @property
    def warning_count(self) -> int:
        """Warnings recorded, including the ones dropped from the list."""
        return len(self.warnings) + self.warnings_dropped


@dataclass(slots=True)
class RestoreStats:
    """Statistics of one restore task."""

    files_restored: int = 0
    dirs_restored: int = 0
    links_restored: int = 0
    bytes_restored: int = 0
    files_skipped: int = 0
    errors: int = 0
    seconds_total: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)
