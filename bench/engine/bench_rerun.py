"""Engine benchmark of the walk: unchanged re-runs and runs after the daily change.

Run: ``python -m bench.engine.bench_rerun FOLDER --repo-dir DIR [--reruns 5]
[--daily 3] [--json]``

Backs ``FOLDER`` up once into a fresh repository (local backend, cache in
``DIR``), then times ``--reruns`` unchanged re-runs; with ``--daily N`` it also
copies ``FOLDER`` into ``DIR``, backs the copy up, applies the standard daily
change (``bench.daily_change``) to it and times N runs that each use the
pre-change restore point as parent. Only the first of them stores the change's
new chunks and tree blobs, as a real run after the daily change does (and as the
server path's run, ``bench.run``, does): the later ones find them stored (the
third writes no tree blob) and take ~0.6 s less on the reference share, so the
first is printed on its own line (``daily, first``) and the repeats as ``daily,
again``. Compare the server's daily-change step with ``daily, first``. Prints per
run: wall seconds, CPU seconds of the process (all threads and reaped children)
and of the walk's thread alone (``time.thread_time`` of the calling thread, which
runs the scanner: less disturbed by a busy machine than wall time), files read
and tree blobs written. ``Repository`` open time is printed too (a proxy pays it
per task). Compare two versions by alternating runs under ``flock``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.daily_change import apply_daily_change
from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.repository import Repository, open_backend
from ferryman.sources.local import LocalSource

# bench.sections skips this module: a standalone command (it needs a FOLDER;
# the comparison already times the re-run)
SECTION = False


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_backup(
    repo: Repository, folder: Path, share: str, parent: str | None = None
) -> tuple[BackupResult, dict[str, Any]]:
    """One backup with its figures (seconds, cpu_s, walk_cpu_s, files_read, trees_written)."""
    c0, w0, t0 = _cpu_s(), time.thread_time(), time.perf_counter()
    result = run_backup(LocalSource(folder), repo, BackupOptions(share=share, parent=parent))
    row = {
        "seconds": time.perf_counter() - t0,
        "cpu_s": _cpu_s() - c0,
        "walk_cpu_s": time.thread_time() - w0,
        "files_read": result.stats.files_read,
        "trees_written": result.stats.trees_written,
    }
    return result, row


def run(folder: Path, work: Path, reruns: int, daily: int) -> dict[str, Any]:
    """The first backup, the re-runs and the daily-change runs; returns the figures."""
    repo = Repository.init(
        open_backend(str(work / "repo")), "bench", scrypt_n=1 << 12, cache_dir=work / "cache"
    )
    repo.close()
    t0 = time.perf_counter()
    repo = Repository.open(open_backend(str(work / "repo")), "bench", cache_dir=work / "cache")
    rows: dict[str, Any] = {"folder": str(folder), "open_s": time.perf_counter() - t0}
    try:
        first, rows["first_backup"] = timed_backup(repo, folder, "ref")
        rows["reruns"] = []
        for _ in range(reruns):
            again, row = timed_backup(repo, folder, "ref")
            row["same_tree"] = again.root_tree == first.root_tree
            rows["reruns"].append(row)
        if daily:
            copy = work / "daily"
            shutil.copytree(folder, copy, symlinks=True)
            base, _ = timed_backup(repo, copy, "daily")
            rows["daily_change"] = apply_daily_change(copy).summary()
            rows["daily"] = [
                timed_backup(repo, copy, "daily", base.restore_point)[1] for _ in range(daily)
            ]
    finally:
        repo.close()
    return rows


def _line(name: str, runs: list[dict[str, Any]]) -> str:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return (
        f"{name:<14}{len(runs):>5}{med('seconds'):>9.3f}{med('cpu_s'):>9.3f}"
        f"{med('walk_cpu_s'):>10.3f}{min(r['walk_cpu_s'] for r in runs):>10.3f}"
        f"{runs[-1]['files_read']:>11}{runs[-1]['trees_written']:>8}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--repo-dir", type=Path, default=None, help="where to put the repository")
    ap.add_argument("--reruns", type=int, default=5)
    ap.add_argument("--daily", type=int, default=0, help="runs after the daily change")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ferryman-bench-rerun-", dir=args.repo_dir))
    try:
        rows = run(args.folder.resolve(), work, args.reruns, args.daily)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"walk benchmark on {rows['folder']}; repository open {rows['open_s']:.3f} s")
    print(f"{'phase':<14}{'runs':>5}{'wall':>9}{'cpu':>9}{'walk cpu':>10}{'min walk':>10}", end="")
    print(f"{'files read':>11}{'trees':>8}")
    print(_line("first backup", [rows["first_backup"]]))
    print(_line("unchanged", rows["reruns"]))
    if rows.get("daily"):
        # the first stores the change's data; the repeats find it stored (less work)
        print(_line("daily, first", rows["daily"][:1]))
        if len(rows["daily"]) > 1:
            print(_line("daily, again", rows["daily"][1:]))
    print(
        "medians; re-runs give the first backup's tree:",
        all(r["same_tree"] for r in rows["reruns"]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
