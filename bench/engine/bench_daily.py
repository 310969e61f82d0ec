"""Engine benchmark of the run after the daily change, its first run only, repeated.

Run: ``python -m bench.engine.bench_daily [FOLDER] [--work-dir DIR] [--rounds 3]
[--verify] [--json]``

Each round copies ``FOLDER`` (default: the reference share,
``bench/work/workload-reference/share``, never modified) with ``cp -a`` into a
scratch directory, backs the copy up into a fresh repository (local backend,
cache in the scratch directory) the way a proxy runs a task (``run_backup``),
applies the standard daily change (``bench.daily_change``) and times the next
backup with the first as parent: the server path's "after the daily change" step
(it stores the change's new chunks and tree blobs; ``bench_rerun --daily`` times
repeats of it, which find them stored). Prints per round and as medians: wall
seconds, CPU seconds of the process (all threads and reaped children), the walk's
thread CPU, files read and tree blobs written, and the CPU seconds per thread name
(``bench_engine.sampled_thread_cpu``: steadier than wall time on a loaded machine,
and they tell which stage a change saved). ``--verify`` restores the daily
restore point and compares it with the changed copy (not timed); a difference
makes the exit status 1, with or without ``--json``.

Compare two versions by alternating runs of this script under ``flock``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.daily_change import apply_daily_change
from bench.engine.bench_engine import REFERENCE_SHARE, digest_tree, sampled_thread_cpu
from bench.engine.bench_rerun import timed_backup
from ferryman.engine.options import RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, open_backend


def one_round(folder: Path, work: Path, verify: bool) -> dict[str, Any]:
    """Copy, first backup, daily change, timed daily backup (and its restore checked)."""
    share = work / "share"
    subprocess.run(["cp", "-a", str(folder), str(share)], check=True)
    Repository.init(
        open_backend(str(work / "repo")), "bench", scrypt_n=1 << 12, cache_dir=work / "cache"
    ).close()
    repo = Repository.open(open_backend(str(work / "repo")), "bench", cache_dir=work / "cache")
    try:
        base, first = timed_backup(repo, share, "daily")
        change = apply_daily_change(share).summary()
        with sampled_thread_cpu() as threads:
            daily, row = timed_backup(repo, share, "daily", base.restore_point)
        row["thread_cpu_s"] = threads
        row["first_backup_s"] = first["seconds"]
        row["appended_files"] = change["appended_files"]
        if verify:
            assert daily.restore_point is not None
            target = work / "restore"
            run_restore(repo, daily.restore_point, target, RestoreOptions())
            row["restore_identical"] = digest_tree(target) == digest_tree(share)
    finally:
        repo.close()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", type=Path, nargs="?", default=REFERENCE_SHARE)
    ap.add_argument("--work-dir", type=Path, default=None, help="where to put the scratch copies")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--verify", action="store_true", help="restore and compare each daily run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="ferryman-bench-daily-", dir=args.work_dir))
        try:
            rows.append(one_round(args.folder.resolve(), work, args.verify))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not args.json:
            r = rows[-1]
            print(
                f"round {len(rows)}: daily {r['seconds']:.3f} s wall {r['cpu_s']:.3f} s cpu "
                f"{r['walk_cpu_s']:.3f} s walk cpu; files read {r['files_read']}, "
                f"trees {r['trees_written']}; first backup {r['first_backup_s']:.1f} s"
                + (f"; restore identical {r['restore_identical']}" if args.verify else ""),
                flush=True,
            )
            threads = r["thread_cpu_s"]
            print("  thread cpu s: " + ", ".join(f"{k} {v:.2f}" for k, v in threads.items()))
    # a restore that differs from the changed copy fails the run, in either output form
    status = 0 if all(r.get("restore_identical", True) for r in rows) else 1
    if args.json:
        print(json.dumps(rows))
        return status
    med = {k: statistics.median(r[k] for r in rows) for k in ("seconds", "cpu_s", "walk_cpu_s")}
    print(
        f"median of {len(rows)}: daily {med['seconds']:.3f} s wall {med['cpu_s']:.3f} s cpu "
        f"{med['walk_cpu_s']:.3f} s walk cpu"
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
