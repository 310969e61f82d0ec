"""Adaptive I/O control: fewer parallel source reads while the source is slow.

A share with ``io_control = adaptive`` backs up through an ``IoGovernor``. Every
read from the source (a small file's open+read, one segment of a large file) holds
a token of the governor's gate while it runs and reports its duration. The governor
keeps an exponentially weighted moving average (EWMA) of the read latency and
compares it with a baseline learned over the first ``warmup`` seconds of reads.
Small reads (per call) and bulk reads (per MiB, reads over one MiB) are two kinds
with their own EWMA and baseline, so a walk that moves from small files to large
ones does not look like a slowdown. Then (``GovernorSettings``):

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
class GovernorSettings:
    """How the governor reacts; the defaults suit a NAS under production load."""

    warmup: float = 5.0  # seconds of reads (and at least warmup_reads) to learn the baseline
    warmup_reads: int = 16
    alpha: float = 0.2  # EWMA weight of a new read
    slow_factor: float = 2.5
    recover_factor: float = 1.5
    hold: float = 3.0  # seconds a condition must last before the limit changes
    cooldown: float = 3.0  # seconds at least between two changes
    floor: float = 0.0005  # latencies under it never count as slow (seconds)

    def __post_init__(self) -> None:
        if not 1.0 <= self.recover_factor < self.slow_factor:
            raise ValueError("need 1 <= recover_factor < slow_factor")


@dataclass(slots=True)
class _Latency:
    """Latency of one kind of read: small (per call) or bulk (per MiB, reads > 1 MiB)."""

    first: float | None = None
    warm_sum: float = 0.0
    warm_n: int = 0
    samples: int = 0
    baseline: float | None = None
    ewma: float | None = None
    peak: float = 0.0


@dataclass(slots=True, frozen=True)
class Change:
    """One change of the parallelism limit."""

    at: float  # seconds since the first read
    old: int
    new: int
    latency: float  # EWMA of the read latency when the change was made, seconds
    baseline: float


@dataclass(slots=True)
class ReadMeter:
    """What one read moved; the body of ``IoGovernor.reading`` sets the bytes it got."""

    nbytes: int


class IoGovernor:
    """A resizable gate on source reads, driven by the measured read latency."""

    def __init__(
        self,
        max_parallelism: int,
        settings: GovernorSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_parallelism < 1:
            raise ValueError("max_parallelism must be at least 1")
        self.max_parallelism = max_parallelism
        self.settings = settings or GovernorSettings()
        self._clock = clock
        self._cond = threading.Condition()
        self._limit = max_parallelism
        self._active = 0
        self._start: float | None = None
        # small reads and bulk reads (large-file segments) have their own baseline: a
        # walk reaching large files must not look like a slowdown
        self._small = _Latency()
        self._bulk = _Latency()
        self._slow_since: float | None = None
        self._fast_since: float | None = None
        self._last_change = float("-inf")
        self.changes: list[Change] = []

    @property
    def limit(self) -> int:
        """How many source reads may run at once now."""
        with self._cond:
            return self._limit

    @property
    def baseline(self) -> float | None:
        """The learned latency of the unhurried source (seconds; the main kind of reads)."""
        with self._cond:
            return self._main().baseline

    def _main(self) -> _Latency:
        return self._bulk if self._bulk.samples > self._small.samples else self._small

    @contextmanager
    def reading(self, nbytes: int = 0) -> Iterator[ReadMeter]:
        """Hold a read token while the body reads from the source, and time the read.

        ``nbytes``: the bytes asked for; the body sets ``meter.nbytes`` to the bytes
        it got (a short or empty read at the end of a file is not a fast full one).
        A read that raises is not measured (a missing file says nothing of latency).
        """
        meter = ReadMeter(nbytes)
        self.acquire()
        t0 = self._clock()
        try:
            yield meter
            elapsed = self._clock() - t0
        finally:
            self.release()
        self.observe(elapsed, meter.nbytes)

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
        cfg = self.settings
        bulk = nbytes > MIB
        latency = elapsed / (nbytes / MIB) if bulk else elapsed
        with self._cond:
            now = self._clock()
            if self._start is None:
                self._start = now - elapsed
            kind = self._bulk if bulk else self._small
            kind.samples += 1
            if kind.first is None:
                kind.first = now - elapsed
            if kind.ewma is None:
                kind.ewma = latency
            else:
                kind.ewma += cfg.alpha * (latency - kind.ewma)
            if kind.baseline is None:
                kind.warm_sum += latency
                kind.warm_n += 1
                if kind.warm_n >= cfg.warmup_reads and now - kind.first >= cfg.warmup:
                    kind.baseline = kind.ewma = kind.warm_sum / kind.warm_n
                return
            ewma = kind.ewma
            kind.peak = max(kind.peak, ewma)
            base = max(kind.baseline, cfg.floor)
            if ewma > cfg.slow_factor * base:
                self._fast_since = None
                if self._slow_since is None:
                    self._slow_since = now
                elif now - self._slow_since >= cfg.hold and self._may_change(now):
                    self._set_limit(max(1, self._limit // 2), now, kind)
                    self._slow_since = now
            elif ewma < cfg.recover_factor * base:
                self._slow_since = None
                if self._fast_since is None:
                    self._fast_since = now
                elif now - self._fast_since >= cfg.hold and self._may_change(now):
                    self._set_limit(min(self.max_parallelism, self._limit + 1), now, kind)
                    self._fast_since = now
            else:
                self._slow_since = self._fast_since = None

    def _may_change(self, now: float) -> bool:
        return now - self._last_change >= self.settings.cooldown

    def _set_limit(self, new: int, now: float, kind: _Latency) -> None:
        if new == self._limit:
            return
        assert self._start is not None and kind.baseline is not None and kind.ewma is not None
        self.changes.append(Change(now - self._start, self._limit, new, kind.ewma, kind.baseline))
        self._limit = new
        self._last_change = now
        self._cond.notify_all()

    def report(self) -> dict[str, Any]:
        """The task statistics' ``io_adaptive`` entry (JSON-ready; latencies in ms).

        Baseline and peak latency are those of the main kind of reads: per read for
        small files, per MiB for large-file segments (``latency_unit``).
        """
        with self._cond:
            main = self._main()
            return {
                "max_parallelism": self.max_parallelism,
                "min_parallelism": min([self.max_parallelism, *(c.new for c in self.changes)]),
                "final_parallelism": self._limit,
                "changes": len(self.changes),
                "baseline_latency_ms": None
                if main.baseline is None
                else round(main.baseline * 1000, 3),
                "peak_latency_ms": round(main.peak * 1000, 3),
                "latency_unit": "MiB" if main is self._bulk else "read",
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
