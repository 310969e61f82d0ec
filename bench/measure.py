"""Measuring one step: wall time, peak memory of the process tree, repository size."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.tree_memory import TreeMemorySampler, descendants


@dataclass
class StepResult:
    """One tool's figures for one step."""

    tool: str
    step: str
    seconds: float
    source_bytes: int
    peak_rss_bytes: int
    repository_bytes: int
    repository_apparent_bytes: int
    ok: bool = True
    error: str = ""
    note: str = ""
    detail: str = ""  # the tool's own summary of the step, when it gives one

    @property
    def mb_per_s(self) -> float:
        return self.source_bytes / 1e6 / self.seconds if self.ok and self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 2)}


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of everything under ``root``."""
    allocated = apparent = 0
    if not root.exists():
        return 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def _children_of_harness() -> list[int]:
    """Every process this harness started, and theirs (not the harness itself)."""
    me = os.getpid()
    return sorted(descendants([me]) - {me})


def measure_step(
    tool: str,
    step: str,
    action: Callable[[], None],
    *,
    source_bytes: int,
    repository: Callable[[], Path],
    interval: float = 0.05,
) -> StepResult:
    """Run ``action`` once, sampling the memory of all the harness's child processes."""
    error = ""
    with TreeMemorySampler(_children_of_harness, interval) as sampler:
        started = time.perf_counter()
        try:
            action()
        except Exception as exc:  # reported in the table, the run goes on
            error = f"{type(exc).__name__}: {exc}"
            if not str(exc):
                error += "\n" + traceback.format_exc(limit=3)
        seconds = time.perf_counter() - started
    allocated, apparent = disk_usage(repository())
    return StepResult(
        tool=tool,
        step=step,
        seconds=seconds,
        source_bytes=source_bytes,
        peak_rss_bytes=sampler.peak_bytes,
        repository_bytes=allocated,
        repository_apparent_bytes=apparent,
        ok=not error,
        error=error,
    )
