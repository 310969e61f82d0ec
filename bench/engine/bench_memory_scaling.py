"""Proxy memory against repository size: the same first backup into a fresh repository
and into one that already holds 10x more chunks.

Run: ``python -m bench.engine.bench_memory_scaling [FOLDER] [--extra-blobs N]
[--repeat N] [--cold] [--json]`` (under ``flock /work/notes/bench.lock``); ``make bench``
runs it as a section (defaults: 2 pairs, ~3 min with B built, ~1 min more to build it).

QUALITY.md: proxy peak memory per task "<= 300 MB on the reference share, and growing
< 10 % when the repository holds 10x more chunks". This measures the second half:

1. Repository B, built once and kept under ``bench/work/memory-scaling/`` (reused while
   its marker matches): ``--extra-blobs`` small unique random data blobs (default
   600,000, ~10x the ~60k blobs a first backup of the reference share stores), written
   through the real ``RepositoryWriter.add_blobs`` in batches, in packs of
   ``--fill-pack-kib`` (default 256 KiB) so that B also holds ~10x the packs and index
   segments of one reference backup (~60 data packs of 16 MiB; B has ~650 packs and
   ~110 segments), and a restore point (of another share, its root an empty tree) per
   60,000 blobs. Its index cache (SQLite) is kept with it, as a proxy that wrote or
   synced it before has it. Filling takes ~1 min.
2. Each measurement backs up FOLDER (default the reference share) engine-direct
   (``run_backup`` with the proxy's default options) in a fresh child process: once
   into a fresh repository A, once into a copy of B (``--cold``: also a copy of B
   without its index cache, as a proxy new to B syncs it first). The parent samples
   the child's whole process tree (the child and its saver processes) every 50 ms:
   PSS summed (``bench.tree_memory``); the child reports its own peak RSS and its
   workers' (``bench_engine.peak_rss``) and the peak of what SQLite allocated in it.
3. Prints each run's peaks, the chunks in each repository, and the ratio B / A of the
   peaks against the target < 1.10.

Figures and findings: bench/README.md, "Memory against repository size".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.engine.bench_engine import REFERENCE_SHARE
from bench.tree_memory import TreeMemorySampler, descendants
from ferryman.repository import Repository, open_backend, tree
from ferryman.repository.blob import KIND_DATA, KIND_TREE

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / "work" / "memory-scaling"
PASSPHRASE = "bench"
TARGET_RATIO = 1.10
FILL_BLOB_SIZE = 256
FILL_BATCH = 2000
# a restore point (of another share, root an empty tree) per this many blobs: B also
# holds ~10x the restore points a proxy lists before a first backup
FILL_POINT_EVERY = 60_000


def fill_repository(
    dest: Path, blobs: int, pack_kib: int, blob_size: int = FILL_BLOB_SIZE
) -> dict[str, Any]:
    """Create a repository in ``dest/repo`` (index cache in ``dest/cache``) holding
    ``blobs`` unique random data blobs of ``blob_size`` bytes, written through the
    repository writer in batches; returns its figures."""
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    repo = Repository.init(
        open_backend(str(dest / "repo")), PASSPHRASE, scrypt_n=1 << 12, cache_dir=dest / "cache"
    )
    try:
        root = tree.encode_tree([])
        with repo.open_writer("fill", pack_size=pack_kib << 10) as writer:
            writer.add_blob(KIND_TREE, repo.blob_id(root), root)
            done = 0
            while done < blobs:
                n = min(FILL_BATCH, blobs - done)
                batch = [os.urandom(blob_size) for _ in range(n)]
                writer.add_blobs(KIND_DATA, [(repo.blob_id(d), d) for d in batch])
                done += n
                if done % FILL_POINT_EVERY == 0 or done == blobs:
                    writer.save_restore_point(share="fill", root=repo.blob_id(root))
        count = repo.index_cache.count()
        points = len(repo.list_restore_points())
        packs = len(repo.index_cache.packs())
    finally:
        repo.close()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    segments = sum(1 for _ in (dest / "repo" / "index").rglob("*") if _.is_file())
    return {
        "blobs": count,
        "packs": packs,
        "segments": segments,
        "restore_points": points,
        "seconds": time.perf_counter() - t0,
        "cpu_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
    }


def cached_fill(blobs: int, pack_kib: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Repository B under ``workdir``, built once for these parameters and reused."""
    key = {
        "blobs": blobs,
        "pack_kib": pack_kib,
        "blob_size": FILL_BLOB_SIZE,
        "point_every": FILL_POINT_EVERY,
    }
    dest = workdir / f"B-{blobs}-{pack_kib}k"
    marker = dest / "filled.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("key") == key:
            info["reused"] = True
            return dest, info
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    info = {"key": key, **fill_repository(dest, blobs, pack_kib)}
    marker.write_text(json.dumps(info))
    info["reused"] = False
    return dest, info


def _sqlite_peak_mb() -> float | None:
    """Peak memory SQLite allocated in this process so far (all connections: the index
    cache's page cache, the writer's scratch table...), or None if it cannot be read."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the library Python's sqlite3 module uses
    except OSError:
        return None
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    return float(lib.sqlite3_memory_highwater(0)) / 2**20


def child(repo_dir: Path, folder: Path, workers: int | None) -> dict[str, Any]:
    """In the measured child process: one first backup of ``folder`` into the repository
    in ``repo_dir`` (opened as a proxy opens it, with its cache), as the proxy runs it."""
    from bench.engine.bench_engine import _cpu_s, peak_rss
    from ferryman.engine.backup import run_backup
    from ferryman.engine.options import BackupOptions
    from ferryman.sources.local import LocalSource

    t0 = time.perf_counter()
    repo = Repository.open(
        open_backend(str(repo_dir / "repo")), PASSPHRASE, cache_dir=repo_dir / "cache"
    )
    try:
        opts = BackupOptions(share="bench")
        if workers is not None:
            opts.workers = workers
        with peak_rss() as peaks:
            result = run_backup(LocalSource(folder), repo, opts)
        seconds = time.perf_counter() - t0
        blobs_after = repo.index_cache.count()
    finally:
        repo.close()
    return {
        "seconds": seconds,
        "cpu_s": _cpu_s(),
        "rss_mb": peaks[0],
        "workers_rss_mb": peaks[1],
        "total_rss_mb": peaks[2],
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sqlite_peak_mb": _sqlite_peak_mb(),
        "chunks_new": result.stats.chunks_new,
        "trees_written": result.stats.trees_written,
        "bytes_scanned": result.stats.bytes_scanned,
        "files": result.stats.files_scanned,
        "blobs_after": blobs_after,
    }


def _measured_on(
    repo_dir: Path, cache: str, action: Callable[[Repository], Any]
) -> tuple[Any, float, float, float]:
    """``action`` on the repository in ``repo_dir`` opened with the index cache
    ``repo_dir / cache``: its result, seconds, RSS before and peak RSS (MB)."""
    from bench.engine.bench_engine import _rss_mb, peak_rss

    repo = Repository.open(
        open_backend(str(repo_dir / "repo")), PASSPHRASE, cache_dir=repo_dir / cache
    )
    try:
        before = _rss_mb()
        t0 = time.perf_counter()
        with peak_rss() as peak:
            result = action(repo)
        return result, time.perf_counter() - t0, before, peak[0]
    finally:
        repo.close()


def gc_child(repo_dir: Path) -> dict[str, Any]:
    """In the measured child process: the maintenance task's index consolidation on the
    repository in ``repo_dir`` (``gc`` forced to merge its segments), then a cold sync
    of the consolidated index into a new cache, as a proxy new to it does; peak RSS of
    each."""
    report, gc_s, before, gc_peak = _measured_on(
        repo_dir, "cache", lambda repo: repo.gc(consolidate_above=0, do_mark=False, do_sweep=False)
    )

    def sync(repo: Repository) -> int:
        repo.sync_index()
        return repo.index_cache.count()

    blobs, sync_s, sync_before, sync_peak = _measured_on(repo_dir, "cold", sync)
    return {
        "blobs": blobs,
        "segments_written": report.segments_written,
        "segments_deleted": report.segments_deleted,
        "gc_s": gc_s,
        "gc_rss_before_mb": before,
        "gc_peak_rss_mb": gc_peak,
        "sync_s": sync_s,
        "sync_rss_before_mb": sync_before,
        "sync_peak_rss_mb": sync_peak,
    }


def measure(repo_dir: Path, folder: Path, workers: int | None) -> dict[str, Any]:
    """Run :func:`child` in a fresh process, sampling its process tree's PSS."""
    cmd = [sys.executable, "-m", "bench.engine.bench_memory_scaling", "--child", str(repo_dir)]
    cmd += [str(folder)] + ([] if workers is None else ["--workers", str(workers)])
    proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
    with TreeMemorySampler(lambda: descendants([proc.pid])) as sampler:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the measured backup failed (exit {proc.returncode})")
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    row["tree_pss_mb"] = sampler.peak_bytes / 2**20
    row["tree_processes"] = sampler.peak_processes
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", nargs="?", type=Path, default=None)
    ap.add_argument("--extra-blobs", type=int, default=600_000, help="blobs already in B")
    ap.add_argument("--fill-pack-kib", type=int, default=256, help="pack size while filling B")
    ap.add_argument("--repeat", type=int, default=2, help="A/B pairs, alternating")
    ap.add_argument("--cold", action="store_true", help="also B without its index cache")
    ap.add_argument("--workers", type=int, default=None, help="default: the proxy's")
    ap.add_argument("--workdir", type=Path, default=WORK, help="where B is kept")
    ap.add_argument(
        "--gc",
        action="store_true",
        help="instead: peak RSS of gc's index consolidation on a copy of B, then of a cold "
        "sync of the consolidated index",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gc-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    folder = (args.folder or REFERENCE_SHARE).resolve()
    if args.child is not None:
        print(json.dumps(child(args.child, folder, args.workers)))
        return 0
    if args.gc_child is not None:
        print(json.dumps(gc_child(args.gc_child)))
        return 0
    if not folder.is_dir():
        if args.folder is None:  # as a section of `make bench-small --sections`
            print(f"skipped: {folder} is not built (make bench builds it)")
            return 0
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    template, fill = cached_fill(args.extra_blobs, args.fill_pack_kib, args.workdir)
    if not args.json:
        how = "reused" if fill["reused"] else "built"
        print(
            f"repository B ({how}): {fill['blobs']} blobs, {fill['packs']} packs, "
            f"{fill['segments']} index segments, {fill['restore_points']} restore points; "
            f"filled in {fill['seconds']:.1f} s (CPU {fill['cpu_s']:.1f} s)",
            flush=True,
        )
    if args.gc:
        return measure_gc(template, args.workdir, args.json)
    kinds = ["A", "B"] + (["B-cold"] if args.cold else [])
    runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        for kind in kinds:
            work = Path(tempfile.mkdtemp(prefix=f"ferryman-memscale-{kind}-", dir=args.workdir))
            try:
                if kind == "A":
                    Repository.init(
                        open_backend(str(work / "repo")),
                        PASSPHRASE,
                        scrypt_n=1 << 12,
                        cache_dir=work / "cache",
                    ).close()
                else:
                    shutil.copytree(template / "repo", work / "repo")
                    if kind == "B":
                        shutil.copytree(template / "cache", work / "cache")
                row = {"repo": kind, "pair": i, "load": os.getloadavg()[0]}
                row.update(measure(work, folder, args.workers))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            runs.append(row)
            if not args.json:
                peak = row["sqlite_peak_mb"]
                sqlite = "?" if peak is None else f"{peak:.1f} MB"
                print(
                    f"{kind:<7} pair {i}: {row['seconds']:6.1f} s, CPU {row['cpu_s']:6.1f} s, "
                    f"load {row['load']:.1f}; peak PSS tree {row['tree_pss_mb']:6.1f} MB, "
                    f"RSS own {row['rss_mb']:6.1f} + workers {row['workers_rss_mb']:5.1f} "
                    f"= {row['total_rss_mb']:6.1f} MB, of it SQLite {sqlite}; "
                    f"blobs after {row['blobs_after']}",
                    flush=True,
                )
    summary = summarize(runs, kinds)
    if args.json:
        print(json.dumps({"fill": fill, "runs": runs, "summary": summary}))
        return 0
    for kind, s in summary.items():
        print(
            f"{kind} / A, peak PSS of the tree: {s['pss_ratio_min']:.3f} (lowest runs), "
            f"{s['pss_ratio_median']:.3f} (medians); peak RSS own + workers: "
            f"{s['rss_ratio_min']:.3f}, {s['rss_ratio_median']:.3f} "
            f"(target < {TARGET_RATIO:.2f}: {'met' if s['met'] else 'MISSED'})"
        )
    return 0


def measure_gc(template: Path, workdir: Path, as_json: bool) -> int:
    """``--gc``: :func:`gc_child` on a copy of B, in a fresh process."""
    work = Path(tempfile.mkdtemp(prefix="ferryman-memscale-gc-", dir=workdir))
    try:
        shutil.copytree(template / "repo", work / "repo")
        shutil.copytree(template / "cache", work / "cache")
        cmd = [sys.executable, "-m", "bench.engine.bench_memory_scaling", "--gc-child", str(work)]
        out = subprocess.run(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if as_json:
        print(json.dumps(row))
        return 0
    print(
        f"gc consolidation of {row['blobs']} blobs ({row['segments_deleted']} segments -> "
        f"{row['segments_written']}): {row['gc_s']:.1f} s, RSS {row['gc_rss_before_mb']:.0f} "
        f"-> peak {row['gc_peak_rss_mb']:.0f} MB; cold sync of the consolidated index: "
        f"{row['sync_s']:.1f} s, RSS {row['sync_rss_before_mb']:.0f} -> peak "
        f"{row['sync_peak_rss_mb']:.0f} MB"
    )
    return 0


def summarize(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, dict[str, Any]]:
    """Ratio of each kind's peak to A's, per measure, with two estimators: the lowest
    run of each (the least disturbed) and the median. On this shared machine one
    repository's peak varies by up to ~10 % between runs, as much as the target: the
    verdict takes the worse of the two, so run ``--repeat 3`` or more."""

    def pick(kind: str, key: str, estimator: str) -> float:
        values = [float(r[key]) for r in runs if r["repo"] == kind]
        return min(values) if estimator == "min" else statistics.median(values)

    out: dict[str, dict[str, Any]] = {}
    for kind in kinds[1:]:
        s: dict[str, Any] = {}
        for estimator in ("min", "median"):
            for name, key in (("pss", "tree_pss_mb"), ("rss", "total_rss_mb")):
                s[f"{name}_ratio_{estimator}"] = pick(kind, key, estimator) / pick(
                    "A", key, estimator
                )
        s["met"] = max(s.values()) < TARGET_RATIO
        out[kind] = s
    return out


if __name__ == "__main__":
    raise SystemExit(main())
