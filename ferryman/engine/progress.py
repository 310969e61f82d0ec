"""Progress events emitted at a steady rate (~2/s) from a small ticker thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ferryman.engine.stats import BackupStats, StatsCollector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One progress sample of a backup task (plain data, sent as-is to the server)."""

    phase: str  # "backup" | "restore" | "done"
    elapsed: float
    files_scanned: int
    bytes_scanned: int
    files_read: int
    bytes_read: int
    files_unchanged: int
    bytes_new: int
    bytes_deduplicated: int
    bytes_transferred: int
    current_path: str
    read_rate: float  # bytes/s over the last interval
    transfer_rate: float  # bytes/s over the last interval
    warnings: int


ProgressCallback = Callable[[ProgressEvent], None]


def make_event(
    phase: str, stats: BackupStats, current: str, warnings: int, read_rate: float, xfer_rate: float
) -> ProgressEvent:
    """Build an event from a stats snapshot."""
    return ProgressEvent(
        phase=phase,
        elapsed=stats.seconds_total,
        files_scanned=stats.files_scanned,
        bytes_scanned=stats.bytes_scanned,
        files_read=stats.files_read,
        bytes_read=stats.bytes_read,
        files_unchanged=stats.files_unchanged,
        bytes_new=stats.bytes_new,
        bytes_deduplicated=stats.bytes_deduplicated,
        bytes_transferred=stats.bytes_transferred,
        current_path=current,
        read_rate=read_rate,
        transfer_rate=xfer_rate,
        warnings=warnings,
    )


class ProgressTicker:
    """Calls ``callback`` every ``interval`` seconds with a fresh event until stopped."""

    def __init__(
        self,
        collector: StatsCollector,
        callback: ProgressCallback | None,
        interval: float = 0.5,
        phase: str = "backup",
    ) -> None:
        self._collector = collector
        self._callback = callback
        self._interval = interval
        self._phase = phase
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (time.monotonic(), 0, 0)

    def __enter__(self) -> ProgressTicker:
        if self._callback is not None:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.emit("done")

    def emit(self, phase: str | None = None) -> None:
        """Send one event now."""
        if self._callback is None:
            return
        s = self._collector.snapshot()
        now = time.monotonic()
        t0, read0, xfer0 = self._last
        dt = max(now - t0, 1e-6)
        self._last = (now, s.bytes_read, s.bytes_transferred)
        event = make_event(
            phase or self._phase,
            s,
            self._collector.current_path,
            self._collector.warning_count,
            (s.bytes_read - read0) / dt,
            (s.bytes_transferred - xfer0) / dt,
        )
        try:
            self._callback(event)
        except Exception:  # a broken progress sink must not fail the task
            log.exception("progress callback failed; the task goes on")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.emit()
