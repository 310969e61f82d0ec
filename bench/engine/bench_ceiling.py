"""Hardware ceiling of issue 4's targets: the backup and restore data paths with no engine.

Run (about 4 minutes on the reference share, plus up to ``--settle`` seconds):
``flock /work/notes/bench.lock .venv/bin/python -m bench.engine.bench_ceiling [FOLDER]
[--repeat 3] [--levels 0,1,2,3] [--ext4-dir DIR] [--tmpfs-dir DIR] [--json PATH]``

On ``FOLDER`` (default: the reference share), read once first so it is in the
page cache, with the repository's chunker parameters, compression level and
probe, keyed BLAKE3 and AES-256-GCM (``_ceiling_paths``): backup (read, cut,
hash, compress, encrypt) on 2 threads and on 2 processes, with the time split by
stage from a one-thread run of each zstd level (0: none) and the stored bytes
of each level on 2 threads; restore
(read a record, decrypt, decompress, verify, write, set mtime) and bare file
creation (zeros of each file's size) into tmpfs and into an ext4 folder, on 2
threads and 2 processes. Not counted: the walk (shown apart), the index, packs,
trees, metadata beyond the mtime. Medians of ``--repeat`` rounds, the steps in
turn (the order reversed every other round), next to the wall that 3x restic's
throughput allows (``--restic-backup`` / ``--restic-restore`` seconds: 3x
the throughput = a third of restic's wall).

A standalone command, not a ``make bench`` section (``SECTION = False``): it
takes minutes and writes ~17 GB to the ext4 folder (deleted at the end; the
next run waits until that deletion is ``--settle`` seconds old). Figures:
bench/README.md, "Ceiling of the data paths".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.engine import _ceiling_paths as paths
from bench.engine.bench_engine import REFERENCE_SHARE
from bench.measure import DELETE_SETTLE_SECONDS, delete_tree, settle_after_deletion
from ferryman.repository import compression
from ferryman.repository.config import ChunkerParams
from ferryman.repository.crypto import RepositoryKeys

HERE = Path(__file__).resolve().parents[1]
EXT4_DIR = HERE / "work" / "ceiling"  # next to the other benches' restores (ext4 here)
RESTIC_BACKUP_S = 11.0  # restic's first backup of the reference share, quiet machine
RESTIC_RESTORE_S = 6.9  # its restore (6.7-7.1 s)
WORKERS = 2
# bench.sections skips this module: minutes, and ~17 GB written to ext4
SECTION = False


@dataclass
class Step:
    """One measured configuration and its runs."""

    name: str
    kind: str  # backup | restore | bare
    mode: str  # threads | processes
    workers: int
    level: int | None = None
    fs: str | None = None  # tmpfs | ext4 (restore, bare)
    staged: bool = False
    runs: list[paths.RunResult] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


def _steps(levels: list[int]) -> list[Step]:
    repo = compression.DEFAULT_LEVEL
    steps = [
        Step(f"backup L{lv}, 1 thread (stages timed)", "backup", "threads", 1, lv, staged=True)
        for lv in sorted({*levels, repo})
    ]
    steps += [
        Step(f"backup L{repo}, 2 threads", "backup", "threads", WORKERS, repo),
        Step(f"backup L{repo}, 2 processes", "backup", "processes", WORKERS, repo),
    ]
    steps += [
        Step(f"backup L{lv}, 2 threads", "backup", "threads", WORKERS, lv)
        for lv in sorted(set(levels))
        if lv != repo
    ]
    for fs in ("tmpfs", "ext4"):
        for kind in ("restore", "bare"):
            for mode in ("threads", "processes"):
                steps.append(Step(f"{kind} {fs}, 2 {mode}", kind, mode, WORKERS, fs=fs))
    return steps


def _warm(share: paths.Share) -> None:
    """Read every file once (into the page cache)."""
    for e in share.files:
        rel = share.dirs[e.dir]
        with open(os.path.join(bytes(share.root), rel, e.name), "rb") as f:
            while f.read(8 << 20):
                pass


class Targets:
    """Fresh, empty target folders: tmpfs ones are deleted after their run, ext4 ones
    at the end (creating files on ext4 right after a large deletion is slower)."""

    def __init__(self, tmpfs: Path, ext4: Path) -> None:
        self.tmpfs, self.ext4 = tmpfs / f"ferryman-ceiling-{os.getpid()}", ext4
        self.ext4_runs = ext4 / f"runs-{os.getpid()}"
        self.tmpfs.mkdir(parents=True)
        self.ext4_runs.mkdir(parents=True)

    def new(self, fs: str) -> Path:
        return (self.tmpfs if fs == "tmpfs" else self.ext4_runs) / f"t{time.time_ns()}"

    def done(self, target: Path, keep: bool) -> None:
        if not keep and target.is_relative_to(self.tmpfs):
            shutil.rmtree(target)

    def close(self, keep: bool) -> None:
        if keep:
            return
        shutil.rmtree(self.tmpfs, ignore_errors=True)
        delete_tree(self.ext4_runs, self.ext4)


def _run(step: Step, setup: paths.Setup, targets: Targets, keep: bool) -> paths.RunResult:
    runner = paths.run_threads if step.mode == "threads" else paths.run_processes
    pack = setup.pack
    if step.kind == "backup":
        setup.level = compression.DEFAULT_LEVEL if step.level is None else step.level
        setup.staged = step.staged
        os.sync()
        return runner(setup, paths.backup_job, step.workers)
    assert step.fs is not None
    target = targets.new(step.fs)
    setup.target = target
    if step.kind == "bare":
        setup.pack = None
    os.sync()
    try:
        t0 = time.perf_counter()
        paths.make_dirs(setup.share, target)  # the parent's part of a restore: timed
        made = time.perf_counter() - t0
        result = runner(setup, paths.restore_job, step.workers)
        result.wall += made
        return result
    finally:
        setup.pack = pack
        targets.done(target, keep)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(
    steps: list[Step], share: paths.Share, restic_backup: float, restic_restore: float
) -> list[dict[str, object]]:
    """One row per step: medians, MB/s on the share's bytes and the 3x restic wall."""
    mb = share.nbytes / 1e6
    rows: list[dict[str, object]] = []
    for s in steps:
        wall = _median([r.wall for r in s.runs])
        budget = (restic_backup if s.kind == "backup" else restic_restore) / 3
        rows.append(
            {
                "name": s.name,
                "kind": s.kind,
                "mode": s.mode,
                "workers": s.workers,
                "level": s.level,
                "fs": s.fs,
                "wall_s": wall,
                "cpu_s": _median([r.cpu for r in s.runs]),
                "walls": [r.wall for r in s.runs],
                "cpus": [r.cpu for r in s.runs],
                "files": s.runs[-1].files if s.runs else 0,
                "mb": s.runs[-1].nbytes / 1e6 if s.runs else 0.0,
                "mb_s": mb / wall if wall else 0.0,
                "stored_mb": (
                    _median([r.stored / 1e6 for r in s.runs]) if s.kind == "backup" else None
                ),
                "budget_s": budget,
                "wall_over_budget": wall / budget,
                "loads": s.loads,
            }
        )
    return rows


def stage_split(steps: list[Step]) -> dict[str, dict[str, float]]:
    """Median seconds of each stage in each level's one-thread run (``"L3"``: ...)."""
    return {
        f"L{s.level}": {
            name: _median([r.stages[k] for r in s.runs]) for k, name in enumerate(paths.STAGES)
        }
        for s in steps
        if s.staged
    }


def print_table(
    rows: list[dict[str, object]], stages: dict[str, dict[str, float]], mb: float, walk_s: float
) -> None:
    """The medians, each next to the wall 3x restic allows, and the stage split."""
    print(
        f"{'step':<38} {'wall s':>7} {'CPU s':>7} {'MB/s':>7} {'stored MB':>10}"
        f" {'3x restic':>10} {'ratio':>6}"
    )
    for r in rows:
        stored = f"{r['stored_mb']:10.1f}" if r["stored_mb"] is not None else f"{'':10}"
        print(
            f"{r['name']:<38} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['mb_s']:7.0f} {stored}"
            f" {r['budget_s']:8.2f} s {r['wall_over_budget']:6.2f}"
        )
    print(f"{'walk (scandir + lstat, 1 thread)':<38} {walk_s:7.2f}")
    print("seconds in each stage of the one-thread backups (MB/s of the share's bytes):")
    print(f"  {'stage':<10}" + "".join(f" {level:>6}{'':13}" for level in stages))
    for name in paths.STAGES:
        cells = [by[name] for by in stages.values()]
        print(
            f"  {name:<10}"
            + "".join(f" {sec:6.2f} ({mb / sec if sec else 0.0:5.0f} MB/s)" for sec in cells)
        )
    totals = [sum(by.values()) for by in stages.values()]
    print(
        f"  {'all':<10}"
        + "".join(f" {sec:6.2f} ({mb / sec if sec else 0.0:5.0f} MB/s)" for sec in totals)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", nargs="?", type=Path, default=REFERENCE_SHARE)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--levels", default="1,2,3", help="zstd levels, comma-separated")
    ap.add_argument("--ext4-dir", type=Path, default=EXT4_DIR)
    ap.add_argument("--tmpfs-dir", type=Path, default=Path("/dev/shm"))
    ap.add_argument("--settle", type=float, default=DELETE_SETTLE_SECONDS)
    ap.add_argument("--restic-backup", type=float, default=RESTIC_BACKUP_S)
    ap.add_argument("--restic-restore", type=float, default=RESTIC_RESTORE_S)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here too")
    ap.add_argument("--keep", action="store_true", help="leave the restored folders")
    args = ap.parse_args(argv)
    folder: Path = args.folder.resolve()
    if not folder.is_dir():
        print(f"bench_ceiling: {folder} is not a folder", file=sys.stderr)
        return 2
    try:
        levels = [int(x) for x in args.levels.split(",") if x]
    except ValueError:
        print(f"bench_ceiling: --levels {args.levels!r}: give integers like 1,2,3", file=sys.stderr)
        return 2

    load_start = os.getloadavg()
    walks = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        share = paths.scan(folder)
        walks.append(time.perf_counter() - t0)
    _warm(share)
    print(
        f"{folder}: {len(share.files)} files, {share.nbytes / 1e6:.1f} MB, {len(share.jobs)} jobs;"
        f" load {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
        flush=True,
    )
    targets = Targets(args.tmpfs_dir, args.ext4_dir)
    setup = paths.Setup(share, RepositoryKeys.from_master(os.urandom(32)), ChunkerParams())
    setup.salt = os.urandom(len(setup.salt))
    setup.pack = targets.tmpfs / "records"
    steps = _steps(levels)
    try:
        stored = paths.write_records(setup)
        print(f"records for the restores: {stored / 1e6:.1f} MB (untimed pass)", flush=True)
        waited = settle_after_deletion(args.ext4_dir, args.settle)
        if waited:
            print(f"waited {waited:.0f} s after the last deletion in {args.ext4_dir}", flush=True)
        for r in range(args.repeat):
            for step in steps if r % 2 == 0 else steps[::-1]:
                result = _run(step, setup, targets, args.keep)
                step.runs.append(result)
                step.loads.append(round(os.getloadavg()[0], 2))
                print(
                    f"  round {r + 1} {step.name:<38} {result.wall:6.2f} s wall"
                    f" {result.cpu:6.2f} s CPU  load {step.loads[-1]}",
                    flush=True,
                )
    finally:
        targets.close(args.keep)
    rows = summarize(steps, share, args.restic_backup, args.restic_restore)
    stages = stage_split(steps)
    load_end = os.getloadavg()
    print(
        f"\nmedians of {args.repeat}; 3x restic = restic's wall / 3 (first backup"
        f" {args.restic_backup} s, restore {args.restic_restore} s); ratio = wall / that;"
        f" load at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
    )
    print_table(rows, stages, share.nbytes / 1e6, _median(walks))
    if args.json is not None:
        doc = {
            "folder": str(folder),
            "files": len(share.files),
            "mb": share.nbytes / 1e6,
            "walk_s": _median(walks),
            "record_mb": stored / 1e6,
            "stages": stages,
            "rows": rows,
            "load": [load_start, load_end],
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
