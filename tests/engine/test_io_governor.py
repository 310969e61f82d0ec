"""Adaptive I/O control: the governor's decisions on a driven clock, then a real backup
whose source slows down for a while and recovers."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.io_governor import GovernorSettings, IoGovernor
from ferryman.engine.options import BackupOptions
from ferryman.repository import Repository
from ferryman.sources.local import LocalDir, LocalFile, LocalSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(
    gov: IoGovernor,
    clock: Clock,
    latency: float,
    seconds: float,
    step: float = 0.05,
    nbytes: int = 64 << 10,
) -> None:
    """Reads of ``nbytes`` taking ``latency`` seconds, one every ``step`` seconds."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        gov.observe(latency, nbytes)


# quicker than the defaults (5 s warm-up, 3 s hold and cooldown) to keep tests short
QUICK = GovernorSettings(warmup=2.0, warmup_reads=8, hold=1.0, cooldown=1.0)


def make(max_parallelism: int = 8) -> tuple[IoGovernor, Clock]:
    clock = Clock()
    gov = IoGovernor(max_parallelism, QUICK, clock=clock)
    return gov, clock


def test_learns_baseline_then_halves_down_to_one_when_the_source_slows() -> None:
    gov, clock = make(8)
    drive(gov, clock, 0.002, 2.5)
    assert gov.baseline == pytest.approx(0.002)
    assert gov.limit == 8 and gov.changes == []
    drive(gov, clock, 0.030, 10.0)  # 15x slower for 10 s
    assert gov.limit == 1
    assert [(c.old, c.new) for c in gov.changes] == [(8, 4), (4, 2), (2, 1)]
    drive(gov, clock, 0.060, 5.0)  # slower still: never below one
    assert gov.limit == 1 and len(gov.changes) == 3
    report = gov.report()
    assert report["min_parallelism"] == 1 and report["max_parallelism"] == 8
    assert report["baseline_latency_ms"] == pytest.approx(2.0)
    assert report["peak_latency_ms"] > 50


def test_raises_one_step_at_a_time_when_the_source_recovers_and_never_above_max() -> None:
    gov, clock = make(4)
    drive(gov, clock, 0.002, 2.5)
    drive(gov, clock, 0.020, 5.0)
    assert gov.limit == 1
    drive(gov, clock, 0.002, 2.0)
    assert gov.limit == 2  # one step, not back to the maximum at once
    drive(gov, clock, 0.002, 20.0)
    assert gov.limit == 4
    steps = [(c.old, c.new) for c in gov.changes]
    assert steps == [(4, 2), (2, 1), (1, 2), (2, 3), (3, 4)]
    times = [c.at for c in gov.changes]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))  # cooldown
    assert gov.report()["final_parallelism"] == 4


def test_hysteresis_a_moderate_or_brief_slowdown_changes_nothing() -> None:
    gov, clock = make(4)
    drive(gov, clock, 0.002, 2.5)
    drive(gov, clock, 0.004, 10.0)  # 2x: inside the band (recover 1.5x .. slow 2.5x)
    assert gov.limit == 4 and gov.changes == []
    drive(gov, clock, 0.002, 3.0)
    drive(gov, clock, 0.050, 0.2)  # a spike shorter than the hold time
    drive(gov, clock, 0.002, 3.0)
    assert gov.limit == 4 and gov.changes == []
    # lowered once, a latency in the band holds the limit where it is
    drive(gov, clock, 0.020, 1.2)
    assert gov.limit == 2
    drive(gov, clock, 0.004, 10.0)
    assert gov.limit == 2


def test_large_file_reads_have_their_own_baseline() -> None:
    gov, clock = make(4)
    drive(gov, clock, 0.001, 2.5)  # small files: 1 ms per read
    # the walk reaches large files: 8 MiB segments at 10 ms per MiB (10x a small read)
    drive(gov, clock, 0.080, 10.0, step=0.1, nbytes=8 << 20)
    assert gov.limit == 4 and gov.changes == []
    drive(gov, clock, 0.320, 3.0, step=0.1, nbytes=8 << 20)  # the NAS slows: 40 ms per MiB
    assert gov.limit < 4
    assert gov.changes[0].baseline == pytest.approx(0.010)  # per MiB, of the bulk reads
    assert gov.report()["latency_unit"] == "MiB"


def test_latencies_under_the_floor_never_count_as_slow() -> None:
    gov, clock = make(4)
    drive(gov, clock, 0.00001, 2.5)  # page-cache speed
    drive(gov, clock, 0.0004, 5.0)  # 40x, still a fast disk read
    assert gov.limit == 4


def test_an_empty_read_at_the_end_of_a_file_is_not_a_fast_bulk_read() -> None:
    gov, clock = make(4)
    for _ in range(60):  # 3 s of 8 MiB asks that each got nothing, 2 ms apiece
        clock.now += 0.05
        with gov.reading(8 << 20) as meter:
            clock.now += 0.002
            meter.nbytes = 0
    # timed per call (2 ms), not per MiB of what was asked (0.25 ms)
    assert gov.baseline == pytest.approx(0.002)


def test_gate_admits_at_most_the_limit_and_follows_it_down() -> None:
    gov, clock = make(3)
    drive(gov, clock, 0.002, 2.5)
    drive(gov, clock, 0.020, 1.5)
    assert gov.limit == 1
    inside, peak = 0, 0
    lock = threading.Lock()

    def reader() -> None:
        nonlocal inside, peak
        with gov.reading(0):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IoGovernor(0)
    with pytest.raises(ValueError, match="recover_factor"):
        GovernorSettings(recover_factor=3.0, slow_factor=2.0)


# -- a real backup whose source slows down ----------------------------------------------
#
# The source is the real LocalSource; its files' reads are delayed (time.sleep) to play
# a NAS whose latency rises while production users load it. What is exercised is the
# source's read *latency*, which is what the governor measures; a FUSE or network
# throttle would add a service to the test without changing what it proves.

BASE_DELAY = 0.004
SLOW_DELAY = 0.040


class Weather:
    """When the source is slow: from ``slow_at`` for ``slow_for`` seconds after start."""

    def __init__(self, slow_at: float, slow_for: float) -> None:
        self.start = time.monotonic()
        self.slow_at, self.slow_for = slow_at, slow_for
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def delay(self) -> float:
        t = time.monotonic() - self.start
        return SLOW_DELAY if self.slow_at <= t < self.slow_at + self.slow_for else BASE_DELAY

    @contextmanager
    def read(self) -> Iterator[None]:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        try:
            time.sleep(self.delay())
            yield
        finally:
            with self.lock:
                self.inside -= 1


class SlowFile(LocalFile):
    __slots__ = ("weather",)

    def __init__(self, fd: int, weather: Weather) -> None:
        super().__init__(fd)
        self.weather = weather

    def read_all(self, size_hint: int) -> bytes:
        with self.weather.read():
            return super().read_all(size_hint)

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        with self.weather.read():
            return super().read_at(buf, offset)


class SlowDir(LocalDir):
    __slots__ = ("weather",)

    def __init__(self, fd: int, weather: Weather) -> None:
        super().__init__(fd)
        self.weather = weather

    def open_dir(self, name: bytes) -> SlowDir:
        d = super().open_dir(name)
        return SlowDir(d.fd, self.weather)

    def open_file(self, name: bytes) -> SlowFile:
        f = super().open_file(name)
        return SlowFile(f.fd, self.weather)


class SlowSource(LocalSource):
    def __init__(self, root: Path, weather: Weather) -> None:
        super().__init__(root)
        self.weather = weather

    def open_root(self) -> SlowDir:
        d = super().open_root()
        return SlowDir(d.fd, self.weather)

    def snapshot(self) -> AbstractContextManager[SlowSource]:
        return nullcontext(self)


def test_backup_lowers_parallelism_while_the_source_is_slow_and_raises_it_after(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for d in range(50):
        sub = src / f"d{d:02}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:03}").write_bytes(os.urandom(64) + f"{d}/{i}".encode())
    weather = Weather(slow_at=2.5, slow_for=3.0)
    options = BackupOptions(share="nas", workers=4, adaptive_io=QUICK)
    result = run_backup(SlowSource(src, weather), repo, options)
    assert result.status == "success", result.warnings
    info = result.io_adaptive
    assert info is not None
    steps = [(e["from"], e["to"]) for e in info["events"]]
    # lowered while the source was slow (halving), down to one read at a time ...
    assert steps[:2] == [(4, 2), (2, 1)], info
    assert info["min_parallelism"] == 1
    # ... and raised again, one step at a time, once it recovered
    raises = steps[2:]
    assert raises and all(new == old + 1 for old, new in raises), info
    assert info["final_parallelism"] > 1
    assert info["changes"] == len(steps)
    assert info["peak_latency_ms"] > 3 * info["baseline_latency_ms"]
    assert 2 <= weather.peak <= 4  # the reads did run in parallel, never beyond the workers
    assert result.stats.files_read == 5000 and result.restore_point is not None


def test_static_levels_have_no_adaptive_report(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 100)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.io_adaptive is None
