"""Engine benchmark: first backup, unchanged re-run, restore of one folder, engine only.

Run: ``python -m bench.engine.bench_engine [FOLDER] [--workers 2] [--processes N]
[--repo-dir DIR] [--json] [--first-only]``

Calls ``run_backup`` / ``run_restore`` directly (no server, no proxy) against a
fresh repository on the local backend, the way a proxy runs a task. Prints, per
phase, seconds, MB/s (10^6 bytes of scanned data per second), files/s, peak RSS
of this process during the phase (sampled from /proc every 20 ms) and of its
worker processes (summed, sampled at the same instants), CPU seconds (user +
system, this process and its reaped children), and the engine's own time split
(source read / processing / repository write). The restore is compared with the
source (sizes and SHA-256 of every regular file). For the first backup it also
reports user and system CPU apart and the CPU seconds of each of this process's
threads by name (``saver``, ``tree-saver``, ``MainThread``: the scanner, ...),
sampled from ``/proc/self/task`` with the RSS: on a loaded machine a thread's CPU
varies less between runs than the whole process's. ``--first-only`` stops after
the first backup.

Without FOLDER it uses the bench workload share if it was built
(``bench/work/workload-small/share``), else ``/usr/share/doc``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, open_backend
from ferryman.sources.local import LocalSource

T = TypeVar("T")
HERE = Path(__file__).resolve().parent.parent
# the reference workload as `make bench` builds it (bench.workload); never modified
REFERENCE_SHARE = HERE / "work" / "workload-reference" / "share"


def _rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass  # a worker that just ended
    return 0.0


def _children_rss_mb() -> float:
    """Summed RSS of this process's worker processes (saver/restore processes)."""
    return sum(_rss_mb(p.pid) for p in multiprocessing.active_children() if p.pid)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each live thread of this process, by native id,
    with its Python thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        name = names.get(int(tid), "other")
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return out


def thread_cpu_by_name(
    before: dict[int, tuple[str, float]], seen: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per thread name (pool threads' ``_<n>`` suffix dropped) spent since
    ``before``: ``seen`` holds each thread's last sample."""
    per: dict[str, float] = {}
    for tid, (name, cpu) in seen.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        group = re.sub(r"_\d+$", "", name)
        per[group] = per.get(group, 0.0) + spent
    return {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Samples RSS while the block runs; yields [peak MB of this process, peak MB of
    its worker processes (summed), peak MB of both sampled together]."""
    peak = [_rss_mb(), 0.0, _rss_mb()]

    def take() -> None:
        own, workers = _rss_mb(), _children_rss_mb()
        peak[0], peak[1] = max(peak[0], own), max(peak[1], workers)
        peak[2] = max(peak[2], own + workers)

    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            take()

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        take()


@contextmanager
def sampled_thread_cpu() -> Iterator[dict[str, float]]:
    """Yields a dict filled, when the block ends, with the CPU seconds each thread name
    spent during it (``thread_cpu_by_name``; sampled every 100 ms, so a thread that
    ended loses at most its last 100 ms)."""
    before, seen = _thread_cpu(), {}
    result: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            seen.update(_thread_cpu())

    t = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    t.start()
    try:
        yield result
    finally:
        stop.set()
        t.join()
        seen.update(_thread_cpu())
        result.update(thread_cpu_by_name(before, seen))


def _user_sys_s() -> tuple[float, float]:
    """User and system CPU seconds of this process and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def _cpu_s() -> float:
    return sum(_user_sys_s())


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, seconds, peak RSS MB of this process)."""
    result, seconds, peaks, _cpu = measured(fn)
    return result, seconds, peaks[0]


def measured(fn: Callable[[], T]) -> tuple[T, float, list[float], float]:
    """(result, seconds, [peak RSS MB: own, workers, total], CPU seconds incl. workers)."""
    with peak_rss() as peak:
        c0 = _cpu_s()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        cpu = _cpu_s() - c0
    return result, seconds, peak, cpu


def digest_tree(root: Path) -> dict[str, tuple[int, str]]:
    """Size and SHA-256 of every regular file (symlinks not followed)."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            h = hashlib.sha256()
            try:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (os.path.getsize(p), h.hexdigest())
    return out


def default_folder() -> Path:
    for candidate in (HERE / "work" / "workload-small" / "share", Path("/usr/share/doc")):
        if candidate.is_dir():
            return candidate
    return Path(sys.prefix)


def run(
    folder: Path,
    workers: int,
    repo_dir: Path,
    verify: bool,
    processes: int | None = None,
    first_only: bool = False,
) -> dict[str, Any]:
    """Run the three phases (the first backup only with ``first_only``); returns the figures."""
    repo = Repository.init(
        open_backend(str(repo_dir / "repo")),
        "bench",
        scrypt_n=1 << 12,
        cache_dir=repo_dir / "cache",
    )
    opts = BackupOptions(share="bench", workers=workers, processes=processes)
    rows: dict[str, Any] = {
        "folder": str(folder),
        "workers": workers,
        "processes": opts.saver_processes(),
    }
    try:
        user0, sys0 = _user_sys_s()
        with sampled_thread_cpu() as threads:
            first, s1, peaks, cpu1 = measured(lambda: run_backup(LocalSource(folder), repo, opts))
        user1, sys1 = _user_sys_s()
        scanned = first.stats.bytes_scanned
        rows["first_backup"] = {
            "seconds": s1,
            "cpu_s": cpu1,
            "user_s": user1 - user0,
            "sys_s": sys1 - sys0,
            "thread_cpu_s": threads,
            "load": os.getloadavg()[0],
            "mb_s": scanned / 1e6 / s1,
            "files_s": first.stats.files_scanned / s1,
            "peak_rss_mb": peaks[0],
            "workers_peak_rss_mb": peaks[1],
            "total_peak_rss_mb": peaks[2],
            "files": first.stats.files_scanned,
            "bytes": scanned,
            "bytes_new": first.stats.bytes_new,
            "bytes_stored": first.stats.bytes_transferred,
            "read_s": first.stats.seconds_source_read,
            "processing_s": first.stats.seconds_processing,
            "repo_write_s": first.stats.seconds_repository_write,
            "bottleneck": first.bottleneck,
            "warnings": len(first.warnings),
        }
        if first_only:
            return rows
        again, s2, m2 = timed(lambda: run_backup(LocalSource(folder), repo, opts))
        rows["unchanged_rerun"] = {
            "seconds": s2,
            "files_s": again.stats.files_scanned / s2,
            "peak_rss_mb": m2,
            "files_read": again.stats.files_read,
            "trees_written": again.stats.trees_written,
        }
        target = repo_dir / "restore"
        point = again.restore_point or ""
        rest, s3, m3 = timed(
            lambda: run_restore(repo, point, target, RestoreOptions(workers=workers))
        )
        rows["restore"] = {
            "seconds": s3,
            "mb_s": rest.stats.bytes_restored / 1e6 / s3,
            "peak_rss_mb": m3,
            "files": rest.stats.files_restored,
            "errors": rest.stats.errors,
        }
        if verify:
            same = digest_tree(folder) == digest_tree(target)
            rows["restore"]["identical"] = same
    finally:
        repo.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", nargs="?", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--processes",
        type=int,
        default=None,
        help="saver processes for small files (default: automatic; 0 = threads only)",
    )
    ap.add_argument("--repo-dir", type=Path, default=None, help="where to put repo+restore")
    ap.add_argument("--no-verify", action="store_true", help="skip comparing the restore")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--first-only", action="store_true", help="time the first backup only (no re-run, restore)"
    )
    args = ap.parse_args(argv)
    folder = (args.folder or default_folder()).resolve()
    work = Path(tempfile.mkdtemp(prefix="ferryman-bench-engine-", dir=args.repo_dir))
    try:
        rows = run(folder, args.workers, work, not args.no_verify, args.processes, args.first_only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows))
        return 0
    fb = rows["first_backup"]
    mb = fb["bytes"] / 1e6
    print(
        f"engine benchmark on {folder} ({fb['files']} files, {mb:.0f} MB), "
        f"{args.workers} workers, {rows['processes']} saver processes"
    )
    print(f"{'phase':<16}{'seconds':>9}{'MB/s':>9}{'files/s':>10}{'peak RSS MB':>13}")
    table = [("first backup", fb["seconds"], f"{fb['mb_s']:.0f}", fb["files_s"], fb["peak_rss_mb"])]
    if not args.first_only:
        rr, rs = rows["unchanged_rerun"], rows["restore"]
        table.append(("unchanged rerun", rr["seconds"], "", rr["files_s"], rr["peak_rss_mb"]))
        table.append(
            (
                "restore",
                rs["seconds"],
                f"{rs['mb_s']:.0f}",
                rs["files"] / rs["seconds"],
                rs["peak_rss_mb"],
            )
        )
    for name, secs, rate, files_s, rss in table:
        print(f"{name:<16}{secs:>9.2f}{rate:>9}{files_s:>10.0f}{rss:>13.0f}")
    print(
        f"first backup: CPU {fb['cpu_s']:.2f} s (incl. workers; user {fb['user_s']:.2f}, "
        f"system {fb['sys_s']:.2f}; load {fb['load']:.1f}); peak RSS MB this process "
        f"{fb['peak_rss_mb']:.0f}, saver processes {fb['workers_peak_rss_mb']:.0f}, "
        f"both {fb['total_peak_rss_mb']:.0f}"
    )
    threads = ", ".join(f"{name} {cpu:.2f}" for name, cpu in fb["thread_cpu_s"].items())
    print(f"first backup CPU s by thread: {threads}")
    print(
        f"first backup time split (thread-seconds): read {fb['read_s']:.2f}, "
        f"processing {fb['processing_s']:.2f}, repository write {fb['repo_write_s']:.2f} "
        f"-> bottleneck {fb['bottleneck']}; new {fb['bytes_new'] / 1e6:.0f} MB, "
        f"stored {fb['bytes_stored'] / 1e6:.0f} MB; warnings {fb['warnings']}"
    )
    if args.first_only:
        return 0
    identical = rs.get("identical", "not checked")
    print(
        f"rerun read {rr['files_read']} files, wrote {rr['trees_written']} tree blobs; "
        f"restore errors {rs['errors']}, identical: {identical}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
