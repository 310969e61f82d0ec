"""Pure arithmetic and table layout of the cluster benchmarks (unit-tested, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SCALE_OUT_TARGET = 0.8  # throughput with N proxies >= 0.8 x N x one proxy
FREED_SLOT_TARGET_MS = 50.0  # median, freed slot -> next task handed to a proxy
API_P99_TARGET_MS = 200.0  # with 10,000 queued tasks


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class ScaleRun:
    """One job run with ``proxies`` proxies online."""

    proxies: int
    seconds: float
    bytes: int
    tasks: int = 0
    status: str = "success"

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScaleRow:
    proxies: int
    seconds: float
    mb_per_s: float
    speed_up: float
    efficiency: float
    passed: bool
    status: str


def scale_rows(runs: Sequence[ScaleRun], target: float = SCALE_OUT_TARGET) -> list[ScaleRow]:
    """Speed-up and efficiency = throughput_N / (N x throughput_1) against the one-proxy run."""
    base = next((r for r in runs if r.proxies == 1), None)
    if base is None or base.mb_per_s <= 0:
        raise ValueError("the one-proxy run is the baseline and is missing or empty")
    rows = []
    for run in sorted(runs, key=lambda r: r.proxies):
        speed_up = run.mb_per_s / base.mb_per_s
        efficiency = speed_up / run.proxies
        rows.append(
            ScaleRow(
                proxies=run.proxies,
                seconds=run.seconds,
                mb_per_s=run.mb_per_s,
                speed_up=speed_up,
                efficiency=efficiency,
                passed=run.status == "success" and efficiency >= target - 1e-9,
                status=run.status,
            )
        )
    return rows


def scale_table(rows: Sequence[ScaleRow], target: float = SCALE_OUT_TARGET) -> list[list[str]]:
    """Header then one line per proxy count, ready to print."""
    table = [["proxies", "seconds", "MB/s", "speed-up", "efficiency", f"target >= {target}"]]
    for row in rows:
        verdict = "pass" if row.passed else "miss"
        if row.status != "success":
            verdict += f" ({row.status})"
        table.append(
            [
                str(row.proxies),
                f"{row.seconds:.1f}",
                f"{row.mb_per_s:.2f}",
                f"{row.speed_up:.2f}x",
                f"{row.efficiency:.3f}",
                verdict,
            ]
        )
    return table


def format_table(table: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, the first left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def gaps_ms(ended: Sequence[float], started: Sequence[float]) -> list[float]:
    """Freed slot -> next start: for tasks run one after another on one slot, the time from
    each task's end (``ended[i]``) to the next task's start (``started[i + 1]``), in ms.

    Both lists are in the order the tasks ran (epoch seconds); a pair where the next task
    started before the previous ended (not sequential) is an error in the setup."""
    if len(ended) != len(started):
        raise ValueError("ended and started must have one entry per task")
    gaps = []
    for i in range(len(ended) - 1):
        gap = started[i + 1] - ended[i]
        if gap < 0:
            raise ValueError(f"task {i + 1} started {-gap * 1000:.1f} ms before task {i} ended")
        gaps.append(gap * 1000)
    return gaps


@dataclass
class Verdict:
    measure: str
    value: float
    target: str
    passed: bool

    def line(self) -> str:
        return f"{self.measure}: {self.value:.1f} ms (target {self.target}) {self._word()}"

    def _word(self) -> str:
        return "pass" if self.passed else "miss"


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "count": float(len(samples_ms)),
        "p50_ms": percentile(samples_ms, 50),
        "p90_ms": percentile(samples_ms, 90),
        "p99_ms": percentile(samples_ms, 99),
        "max_ms": max(samples_ms),
    }
