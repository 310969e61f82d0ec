"""Measuring one step: wall time, peak memory of the process tree, repository size."""

from __future__ import annotations

import os
import resource
import shutil
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bench.tree_memory import TreeMemorySampler, harness_processes


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
    cpu_seconds: float = 0.0  # user + system of every process of the step
    load_average: float = 0.0  # 1-minute load when the step started (noise indicator)
    ok: bool = True
    error: str = ""
    note: str = ""
    detail: str = ""  # the tool's own summary of the step, when it gives one
    peak_breakdown: list[tuple[int, str, int]] = field(default_factory=list)
    repeats: list[float] = field(default_factory=list)  # seconds of every run (--repeat)
    rounds: list[dict[str, object]] = field(default_factory=list)  # every run, in full

    @staticmethod
    def from_json(data: dict[str, object]) -> StepResult:
        known = {f.name for f in fields(StepResult)}
        kept = {k: v for k, v in data.items() if k in known}
        kept["peak_breakdown"] = [tuple(x) for x in kept.get("peak_breakdown", [])]  # type: ignore[attr-defined]
        return StepResult(**kept)  # type: ignore[arg-type]

    @property
    def mb_per_s(self) -> float:
        return self.source_bytes / 1e6 / self.seconds if self.ok and self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 2)}


ESTIMATORS = ("best", "median")


def pick_round(rounds: list[StepResult], estimator: str = "best") -> StepResult:
    """The run to report among repetitions of a step, with every run attached.

    ``best``: the fastest — on a shared machine, contention only ever adds time,
    so the fastest run is the closest to what the tool can do. ``median``: the
    middle one (the lower middle for an even count). A failed last run is
    reported as is.
    """
    ok = sorted((r for r in rounds if r.ok), key=lambda r: r.seconds)
    if not ok or not rounds[-1].ok:
        chosen = rounds[-1]
    else:
        chosen = ok[0] if estimator == "best" else ok[(len(ok) - 1) // 2]
    every = [replace(r, rounds=[]).to_json() for r in rounds] if len(rounds) > 1 else []
    return replace(chosen, repeats=[r.seconds for r in rounds], rounds=every, note=rounds[0].note)


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


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """utime + stime + reaped children's, of one process (seconds); 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _CLOCK_TICKS


class CpuMeter:
    """CPU seconds used by the harness's descendants between start and stop.

    Children the harness waited for are counted by ``getrusage``; long-lived ones
    (a server and its proxy) by their /proc counters, which include their own
    reaped children.
    """

    def __init__(self, exclude: Callable[[], Iterable[int]]) -> None:
        self._exclude = exclude
        self._start_rusage = self._rusage()
        self._start = {pid: _cpu_of(pid) for pid in harness_processes(exclude())}

    @staticmethod
    def _rusage() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> float:
        end = {pid: _cpu_of(pid) for pid in harness_processes(self._exclude())}
        waited = self._rusage() - self._start_rusage
        return max(0.0, waited + sum(end.values()) - sum(self._start.values()))


def measure_step(
    tool: str,
    step: str,
    action: Callable[[], None],
    *,
    source_bytes: int,
    repository: Callable[[], Path],
    exclude: Callable[[], Iterable[int]] = tuple,
    interval: float = 0.05,
) -> StepResult:
    """Run ``action`` once, sampling the memory of the harness's child processes.

    ``exclude`` gives the long-lived processes of other tools, left out.
    """
    error = ""
    load = os.getloadavg()[0]
    cpu = CpuMeter(exclude)
    with TreeMemorySampler(lambda: harness_processes(exclude()), interval) as sampler:
        started = time.perf_counter()
        try:
            action()
        except Exception as exc:  # reported in the table, the run goes on
            error = f"{type(exc).__name__}: {exc}"
            if not str(exc):
                error += "\n" + traceback.format_exc(limit=3)
        seconds = time.perf_counter() - started
    cpu_seconds = cpu.stop()
    allocated, apparent = disk_usage(repository())
    return StepResult(
        tool=tool,
        step=step,
        seconds=seconds,
        source_bytes=source_bytes,
        peak_rss_bytes=sampler.peak_bytes,
        repository_bytes=allocated,
        repository_apparent_bytes=apparent,
        cpu_seconds=cpu_seconds,
        load_average=load,
        peak_breakdown=sampler.peak_breakdown,
        ok=not error,
        error=error,
    )


# On ext4 without a journal (these machines' root), creating a file skips every inode
# freed in the last minute (five more while its inode table block is dirty), one
# buffer-cache lookup each: files created within minutes of deleting a large tree cost
# several times more kernel time (a reference restore right after deleting the previous
# ones: 21 s CPU instead of 9). A restore is measured only once the last large deletion
# made by a benchmark is that old.
DELETE_SETTLE_SECONDS = 360.0
_DELETE_MARK = ".last-large-delete"


def delete_tree(path: Path, mark_in: Path) -> None:
    """Delete ``path`` (if there), ``sync``, and record when in ``mark_in``."""
    if not path.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    os.sync()
    mark_in.mkdir(parents=True, exist_ok=True)
    (mark_in / _DELETE_MARK).write_text(f"{time.time():.3f}\n")


def settle_after_deletion(
    mark_in: Path, settle: float = DELETE_SETTLE_SECONDS, say: Callable[[str], None] = print
) -> float:
    """Wait until the deletion recorded in ``mark_in`` is ``settle`` seconds old;
    returns the seconds waited."""
    try:
        deleted = float((mark_in / _DELETE_MARK).read_text())
    except (OSError, ValueError):
        return 0.0
    # never more than ``settle``: the mark is rounded to the millisecond, and a clock
    # stepped back must not make a restore wait for longer than a fresh deletion would
    wait = min(settle, deleted + settle - time.time())
    if wait < 0.001:  # the mark's resolution: time.sleep's clock and time.time() drift apart
        return 0.0
    say(f"waiting {wait:.0f} s: files created soon after a large deletion are slower here")
    time.sleep(wait)
    return wait
