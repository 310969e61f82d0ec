"""``make bench``: Ferryman against restic and borg on the reference workload.

Each tool gets its own identical copy of the workload and its own repository
and goes through four steps: first full backup, re-run with nothing changed,
the daily change then a backup, and a full restore into an empty folder. The
tools take turns step by step. Caches are warm (nothing is dropped; every tool
sees the same conditions).

    python -m bench.run [--small] [--tools ferryman,restic,borg] [--workdir DIR]

Then the cluster benchmarks (``bench/cluster/``): scale-out over capped links
(needs root) and the dispatcher with 10,000 queued tasks; ``--only cluster``
runs just those.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import cast

from rich.console import Console

from bench.cluster.section import CLUSTER, parse_cluster, run_cluster
from bench.measure import ESTIMATORS, delete_tree
from bench.peers_install import install_peers
from bench.report import print_report
from bench.sections import run_extra_sections
from bench.targets import RESTORE, STEPS, UNCHANGED, compare, ferryman_memory_check
from bench.tool_run import ToolRun
from bench.tools.base import BackupTool
from bench.tools.borg import Borg
from bench.tools.ferryman import PROXY_MODES
from bench.tools.ferryman_choice import ferryman_candidates
from bench.tools.restic import Restic
from bench.workload import Workload, build_workload, reference_spec, small_spec

BENCH_DIR = Path(__file__).resolve().parent
ALL_TOOLS = ("ferryman", "restic", "borg")
REPEATABLE = (UNCHANGED, RESTORE)  # steps that leave the repository as they found it


def make_tools(
    name: str, ferryman_driver: str, ferryman_proxy: str = "embedded"
) -> list[BackupTool]:
    """The drivers to try for one tool, in order (the first whose setup works runs)."""
    if name == "restic":
        return [Restic()]
    if name == "borg":
        return [Borg()]
    if name == "ferryman":
        return ferryman_candidates(ferryman_driver, ferryman_proxy)
    raise SystemExit(f"unknown tool {name!r}; choose from {', '.join(ALL_TOOLS)}")


def _others(runs: list[ToolRun], name: str) -> list[int]:
    """Background processes (servers) of the tools other than ``name``."""
    return [pid for run in runs if run.tool.name != name for pid in run.tool.background_pids()]


def _prepare(
    name: str,
    args: argparse.Namespace,
    workload: Workload,
    run_dir: Path,
    console: Console,
    runs: list[ToolRun],
) -> ToolRun:
    """Set one tool up, trying its drivers in order; the first that works is kept."""
    candidates = make_tools(name, args.ferryman_driver, args.ferryman_proxy)
    earlier: list[str] = []
    for i, tool in enumerate(candidates):
        others = partial(_others, runs, name)
        run = ToolRun(tool, workload, run_dir, console, others, args.estimator)
        if run.prepare() or i == len(candidates) - 1:
            if earlier:
                run.info["earlier_drivers_failed"] = earlier
            return run
        earlier.append(f"{run.info['description']}: {run.info['setup_error']}")
        console.print("  trying the next driver", markup=False)
    raise AssertionError("make_tools returned no driver")


def _project_commit() -> str:
    """The checkout measured: commit id, "+dirty" when there are local changes."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="~200 MB, ~10k files workload")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset")
    parser.add_argument(
        "--ferryman-driver",
        choices=("auto", "cli", "engine"),
        default="auto",
        help="cli: the real path (server → proxy → repository); engine: engine-direct fallback",
    )
    parser.add_argument(
        "--ferryman-proxy",
        choices=PROXY_MODES,
        default="embedded",
        help="the CLI path's proxy: the server's embedded one, or a standalone `proxy run`",
    )
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "work")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the unchanged re-run and the restore N times each (see --estimator)",
    )
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="best",
        help="which of the N runs to report: the fastest (default; contention only adds"
        " time) or the median",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the workload")
    parser.add_argument("--keep", action="store_true", help="keep copies and restores")
    parser.add_argument("--no-install", action="store_true", help="don't apt-get the peers")
    parser.add_argument(
        "--sections",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the bench/repository and bench/engine micro-benchmarks afterwards"
        " (default: yes, except with --small)",
    )
    parser.add_argument(
        "--cluster",
        default="all",
        metavar="LIST",
        help=f"cluster benchmarks to run afterwards: all, none or a subset of {','.join(CLUSTER)}"
        " (the scale-out one needs root)",
    )
    parser.add_argument(
        "--only",
        choices=("cluster", *CLUSTER),
        default=None,
        help="run only the cluster benchmarks (or one of them): no peer comparison, no sections",
    )
    args = parser.parse_args(argv)
    if args.only:
        args.cluster = "all" if args.only == "cluster" else args.only
        args.sections = False
    try:
        args.cluster_names = parse_cluster(args.cluster)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _cluster_only(args: argparse.Namespace, console: Console) -> int:
    """``--only …``: the cluster benchmarks alone, kept in their own results file."""
    started = datetime.now(UTC)
    cluster = run_cluster(console, args.cluster_names, args.small, BENCH_DIR.parent)
    out: dict[str, object] = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version},
        "project_commit": _project_commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "cluster": cluster,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"{started.strftime('%Y%m%dT%H%M%SZ')}-cluster{'-small' if args.small else ''}.json"
    (args.results / name).write_text(json.dumps(out, indent=2, default=str))
    console.print(f"\ncluster results saved to {args.results / name}")
    return 0 if all(c["returncode"] == 0 for c in cluster.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if args.only:
        return _cluster_only(args, console)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not args.no_install:
        for name in install_peers(names):
            console.print(f"{name} is not installed and could not be: left out")
            names.remove(name)
    spec = small_spec() if args.small else reference_spec()
    console.print(f"building the {spec.name} workload (reused if already built)…")
    workload = build_workload(args.workdir / f"workload-{spec.name}", spec, force=args.rebuild)
    stats = workload.stats
    header = [
        f"workload {spec.name}: {stats.bytes / 1e6:.0f} MB in {stats.files} files, "
        f"{stats.dirs} folders, {stats.symlinks} symlinks ({workload.share})",
        *(f"  {note}" for note in workload.notes),
        "page cache warm for every tool (no cache drop); "
        f"{os.cpu_count()} CPUs, shared machine: compare ratios, not absolute figures",
    ]
    if args.repeat > 1:
        header.append(
            f"re-runs and restores ran {args.repeat} times; shown: the {args.estimator} run"
        )
    console.print(header[0], markup=False, highlight=False)

    started = datetime.now(UTC)
    run_dir = args.workdir / "runs"
    # the last run's repositories: gone before anything is measured (a restore then waits
    # until that deletion is minutes old, see ToolRun._step)
    delete_tree(run_dir, args.workdir)
    runs: list[ToolRun] = []
    try:
        for name in names:
            runs.append(_prepare(name, args, workload, run_dir, console, runs))
        # step by step across the tools, so a noisy minute hits every tool's step alike;
        # a repeated step runs the tools in the reverse order each time (who goes first
        # after the backups, or right after the other tool wrote gigabytes, alternates)
        for step in STEPS:
            for run in runs:
                run.run_step(step)
            for i in range(args.repeat - 1 if step in REPEATABLE else 0):
                for run in runs[::-1] if i % 2 == 0 else runs:
                    run.run_step(step, again=True)
    finally:
        for run in runs:
            run.finish(args.keep)
    results = [r for run in runs for r in run.results]
    tools_info = {run.tool.name: run.info for run in runs}

    peers = [n for n in names if n != "ferryman"]
    comparisons = compare(results, peers) if "ferryman" in names else []
    memory = ferryman_memory_check(results)
    if memory:
        comparisons.append(memory)
    labels = {
        n: n + (" *" if "engine-direct" in str(i.get("description")) else "")
        for n, i in tools_info.items()
    }
    for name, info in tools_info.items():
        header.append(f"{name}: {info['description']}")
        not_used = cast(list[str], info.get("earlier_drivers_failed", []))
        header += [f"  (not used: {e.splitlines()[0]})" for e in not_used]
    console.print()
    print_report(console, results, comparisons, labels, header)

    out: dict[str, object] = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version},
        "project_commit": _project_commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "cache": "warm (no drop)",
        "workload": workload.to_json(),
        "tools": tools_info,
        "results": [r.to_json() for r in results],
        "comparisons": [c.to_json() for c in comparisons],
        "sections": {},
        "cluster": {},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-small' if args.small else ''}.json"
    path = args.results / name
    path.write_text(json.dumps(out, indent=2, default=str))  # saved before the sections run
    console.print(f"\nresults saved to {path}")
    if (not args.small) if args.sections is None else args.sections:
        out["sections"] = run_extra_sections(console, BENCH_DIR)
        path.write_text(json.dumps(out, indent=2, default=str))
        console.print(f"\nsections added to {path}")
    if args.cluster_names:
        out["cluster"] = run_cluster(console, args.cluster_names, args.small, BENCH_DIR.parent)
        path.write_text(json.dumps(out, indent=2, default=str))
        console.print(f"\ncluster benchmarks added to {path}")
    cluster_ok = all(
        c["returncode"] == 0 for c in cast(dict[str, dict[str, object]], out["cluster"]).values()
    )
    return 0 if all(r.ok for r in results) and cluster_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
