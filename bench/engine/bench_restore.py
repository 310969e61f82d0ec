"""Restore benchmark, engine only: one backup, then restores with different settings, alternating.

Run: ``python -m bench.engine.bench_restore FOLDER --repo-dir DIR [--variant default
--variant threads --variant processes=2 --variant default@/tmp/old] [--rounds 2]``

A variant is ``default`` (``RestoreOptions()``), ``threads`` (no worker
processes) or ``processes=N``, with ``,workers=M`` to add; ``@DIR`` runs it
with the ``ferryman`` package found in ``DIR`` (e.g. ``git archive HEAD
ferryman | tar -x -C DIR``) to compare two versions in one run.

The folder is backed up once into ``DIR/repo`` (reused by later runs while it
exists). Each restore then runs in a fresh child process into a **new empty
folder**; its CPU seconds are the child's (``wait4``) plus its worker
processes', sampled from /proc every 50 ms (they are children of the fork
server, which ``wait4`` never sees: before, the CPU column left them out); the
variants take turns round by round, in the reverse order every other round.
Memory: the peak of the summed PSS of the restoring process and its worker
processes (``bench.tree_memory``, every 50 ms), with each one's share at
that peak (the walk's process first). Nothing is deleted between restores, and
the first one waits until the last deletion this script made is ``--settle``
seconds old (default 360): on ext4 without a journal, creating files within
minutes of deleting many skips the recently freed inodes one buffer-cache lookup
at a time, which would slow whichever restore comes next
(``bench.measure.DELETE_SETTLE_SECONDS``). The restored folders are deleted at
the end, then ``sync``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, open_backend
from ferryman.sources.local import LocalSource

# bench.sections skips this module: a standalone command (it needs a FOLDER and
# --repo-dir; the comparison already times the restore)
SECTION = False

PASSPHRASE = "bench"


def _open(repo_dir: Path) -> Repository:
    return Repository.open(
        open_backend(str(repo_dir / "repo")), PASSPHRASE, cache_dir=repo_dir / "cache"
    )


def ensure_backup(folder: Path, repo_dir: Path) -> None:
    """Back ``folder`` up into ``repo_dir/repo`` unless a restore point is there."""
    if (repo_dir / "repo").exists():
        return
    repo = Repository.init(
        open_backend(str(repo_dir / "repo")),
        PASSPHRASE,
        scrypt_n=1 << 12,
        cache_dir=repo_dir / "cache",
    )
    try:
        run_backup(LocalSource(folder), repo, BackupOptions(share="bench"))
    finally:
        repo.close()


def parse_variant(text: str) -> RestoreOptions:
    """``default``, ``threads`` or ``processes=N`` (optionally ``,workers=M``)."""
    opts = RestoreOptions()
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "default":
            continue
        if key == "threads":
            opts.processes = 0
        elif key in ("processes", "workers"):
            setattr(opts, key, int(value))
        else:
            raise SystemExit(f"unknown variant part {part!r}")
    return opts


def restore_once(repo_dir: Path, target: Path, variant: str) -> dict[str, object]:
    """One restore in this process (the child side)."""
    repo = _open(repo_dir)
    try:
        point = repo.list_restore_points()[-1].id
        t0 = time.perf_counter()
        result = run_restore(repo, point, target, parse_variant(variant))
        seconds = time.perf_counter() - t0
    finally:
        repo.close()
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_walk": own.ru_utime + own.ru_stime,  # this process: the walk (and threads)
        "files": result.stats.files_restored,
        "bytes": result.stats.bytes_restored,
        "errors": result.stats.errors,
    }


def run_child(repo_dir: Path, target: Path, variant: str) -> dict[str, object]:
    """Restore in a child process; adds its and its worker processes' CPU seconds and the
    peak of its and its worker processes' summed PSS, with each one's share at the peak."""
    from bench.tree_memory import TreeMemorySampler, descendants  # parent side only

    options, _, checkout = variant.partition("@")
    cmd = [sys.executable, __file__, "--child", str(target)]
    cmd += ["--repo-dir", str(repo_dir), "--variant", options]
    env = dict(os.environ)
    if checkout:  # another checkout's ferryman (e.g. an export of the last commit)
        env["PYTHONPATH"] = checkout
    os.sync()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    with TreeMemorySampler(lambda: descendants([proc.pid]), cpu=True) as memory:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"restore child failed ({proc.returncode})")
    row: dict[str, object] = json.loads(out)
    own = usage.ru_utime + usage.ru_stime
    # the worker processes are the fork server's children, which no wait4 here reaps:
    # their CPU seconds as last sampled (each misses at most its last 50 ms)
    workers = sum(s for pid, s in memory.cpu_by_pid.items() if pid != proc.pid)
    row["cpu"], row["cpu_workers"], row["cpu_all"] = own, workers, own + workers
    row["variant"] = variant
    row["peak_pss_mb"] = memory.peak_bytes / 1e6
    # at the peak: the walk's process first, then its worker processes (largest first)
    row["peak_processes_mb"] = [
        round(pss / 1e6, 1)
        for pid, _, pss in sorted(memory.peak_breakdown, key=lambda p: (p[0] != proc.pid, -p[2]))
    ]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--repo-dir", type=Path, required=True)
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--keep", action="store_true", help="leave the restores (no deletion: no settling next)"
    )
    ap.add_argument("--settle", type=float, default=None, help="seconds (default 360)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(restore_once(args.repo_dir, args.folder, args.variant[0])))
        return 0
    # imported here: a child runs this file as a script, maybe with another checkout first
    # on its path, where only the ``ferryman`` package is looked up
    from bench.measure import DELETE_SETTLE_SECONDS, delete_tree, settle_after_deletion

    variants = args.variant or ["threads"]
    ensure_backup(args.folder.resolve(), args.repo_dir)
    out_dir = args.repo_dir / "restores"
    out_dir.mkdir(exist_ok=True)
    rows = []
    settle = DELETE_SETTLE_SECONDS if args.settle is None else args.settle
    settle_after_deletion(args.repo_dir, settle)
    try:
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]  # same order effects for all
            for variant in order:
                target = out_dir / f"{time.time_ns()}"
                row = run_child(args.repo_dir, target, variant)
                row["load"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(
                    f"{variant:<28} {row['seconds']:7.2f} s wall {row['cpu_all']:7.2f} s CPU"
                    f" ({row['cpu']:.2f} s in the walk's process, {row['cpu_workers']:.2f} s"
                    " in its worker processes)"
                    f"  {row['files']} files, {row['errors']} errors, load {row['load']},"
                    f" peak PSS {row['peak_pss_mb']:.1f} MB {row['peak_processes_mb']}",
                    flush=True,
                )
    finally:
        if not args.keep:
            delete_tree(out_dir, args.repo_dir)
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            best = min(mine, key=lambda r: float(r["seconds"]))  # type: ignore[arg-type]
            peak = max(float(r["peak_pss_mb"]) for r in mine)  # type: ignore[arg-type]
            print(
                f"best {variant:<23} {best['seconds']:7.2f} s wall {best['cpu_all']:7.2f} s CPU,"
                f" highest peak PSS {peak:.1f} MB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
