"""Adaptive I/O control: fewer parallel source reads while the source is slow.

A share with ``io_control = adaptive`` backs up through an ``IoGovernor``. Every
read from the source (a small file's open+read, one segment of a large file) holds
a token of the governor's gate while it runs and reports its duration. The governor
keeps an exponentially weighted moving average (EWMA) of the read latency, per call
and per MiB for reads larger than one MiB, and compares it with a baseline learned
in the first seconds of the task:

* latency above ``slow_factor`` x baseline for ``hold`` seconds: the limit is
  halved (never below 1) — a NAS that slows down because production users need it
  gets fewer concurrent reads from the backup;
* latency below ``recover_factor`` x baseline for ``hold`` seconds: the limit goes
  up by one (never above the task's worker count);
* in between (hysteresis band) nothing changes, and two changes are at least
  ``cooldown`` seconds apart, so the limit does not flap.

Latencies below ``floor`` seconds never count as slow (a page-cache baseline of a
few microseconds would otherwise make every disk read look like a slowdown). Every
change is recorded and reported in the task's statistics (``report()``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
MAX_EVENTS_REPORTED = 20


@dataclass(slots=True, frozen=True)
class Change:
    """One change of the parallelism limit."""

    at: float  # seconds since the first read
    old: int
    new: int
    latency: float  # EWMA of the read latency when the change was made, seconds
    baseline: float


class IoGovernor:
    """A resizable gate on source reads, driven by the measured read latency."""

    def __init__(
        self,
        max_parallelism: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        warmup: float = 2.0,
        warmup_reads: int = 8,
        alpha: float = 0.2,
        slow_factor: float = 2.5,
        recover_factor: float = 1.5,
        hold: float = 1.0,
        cooldown: float = 1.0,
        floor: float = 0.0005,
    ) -> None:
        if max_parallelism < 1:
            raise ValueError("max_parallelism must be at least 1")
        if not 1.0 <= recover_factor < slow_factor:
            raise ValueError("need 1 <= recover_factor < slow_factor")
        self.max_parallelism = max_parallelism
        self._clock = clock
        self._warmup = warmup
        self._warmup_reads = warmup_reads
        self._alpha = alpha
        self._slow = slow_factor
        self._recover = recover_factor
        self._hold = hold
        self._cooldown = cooldown
        self._floor = floor
        self._cond = threading.Condition()
        self._limit = max_parallelism
        self._active = 0
        self._start: float | None = None
        self._warm_sum = 0.0
        self._warm_n = 0
        self._baseline: float | None = None
        self._ewma: float | None = None
        self._peak = 0.0
        self._slow_since: float | None = None
        self._fast_since: float | None = None
        self._last_change = float("-inf")
        self._min_limit = max_parallelism
        self.changes: list[Change] = []

    @property
    def limit(self) -> int:
        """How many source reads may run at once now."""
        with self._cond:
            return self._limit

    @property
    def baseline(self) -> float | None:
        """The learned per-read latency of the unhurried source (seconds), once known."""
        with self._cond:
            return self._baseline

    @contextmanager
    def reading(self, nbytes: Callable[[], int] | int = 0) -> Iterator[None]:
        """Hold a read token while the body reads from the source, and time the read.

        ``nbytes``: the bytes read (a callable is asked after the body, once known).
        A read that raises is not measured (a missing file says nothing of latency).
        """
        self.acquire()
        t0 = self._clock()
        try:
            yield
            elapsed = self._clock() - t0
        finally:
            self.release()
        self.observe(elapsed, nbytes() if callable(nbytes) else nbytes)

    def acquire(self) -> None:
        with self._cond:
            while self._active >= self._limit:
                self._cond.wait()
            self._active += 1

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def observe(self, elapsed: float, nbytes: int = 0) -> None:
        """Account one finished read of ``nbytes`` that took ``elapsed`` seconds."""
        latency = elapsed / max(1.0, nbytes / MIB)
        with self._cond:
            now = self._clock()
            if self._start is None:
                self._start = now - elapsed
            ewma = (
                latency if self._ewma is None else self._ewma + self._alpha * (latency - self._ewma)
            )
            self._ewma = ewma
            if self._baseline is None:
                self._warm_sum += latency
                self._warm_n += 1
                if self._warm_n >= self._warmup_reads and now - self._start >= self._warmup:
                    self._baseline = self._warm_sum / self._warm_n
                    self._ewma = self._baseline
                return
            self._peak = max(self._peak, ewma)
            base = max(self._baseline, self._floor)
            if ewma > self._slow * base:
                self._fast_since = None
                if self._slow_since is None:
                    self._slow_since = now
                elif now - self._slow_since >= self._hold and self._may_change(now):
                    self._set_limit(max(1, self._limit // 2), now, ewma)
                    self._slow_since = now
            elif ewma < self._recover * base:
                self._slow_since = None
                if self._fast_since is None:
                    self._fast_since = now
                elif now - self._fast_since >= self._hold and self._may_change(now):
                    self._set_limit(min(self.max_parallelism, self._limit + 1), now, ewma)
                    self._fast_since = now
            else:
                self._slow_since = self._fast_since = None

    def _may_change(self, now: float) -> bool:
        return now - self._last_change >= self._cooldown

    def _set_limit(self, new: int, now: float, ewma: float) -> None:
        if new == self._limit:
            return
        assert self._start is not None and self._baseline is not None
        self.changes.append(Change(now - self._start, self._limit, new, ewma, self._baseline))
        self._limit = new
        self._min_limit = min(self._min_limit, new)
        self._last_change = now
        self._cond.notify_all()

    def report(self) -> dict[str, Any]:
        """The task statistics' ``io_adaptive`` entry (JSON-ready; latencies in ms)."""
        with self._cond:
            return {
                "max_parallelism": self.max_parallelism,
                "min_parallelism": self._min_limit,
                "final_parallelism": self._limit,
                "changes": len(self.changes),
                "baseline_latency_ms": None
                if self._baseline is None
                else round(self._baseline * 1000, 3),
                "peak_latency_ms": round(self._peak * 1000, 3),
                "events": [
                    {
                        "at": round(c.at, 3),
                        "from": c.old,
                        "to": c.new,
                        "latency_ms": round(c.latency * 1000, 3),
                    }
                    for c in self.changes[:MAX_EVENTS_REPORTED]
                ],
            }
