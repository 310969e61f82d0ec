"""``make bench``: Ferryman against restic and borg on the reference workload.

Each tool gets its own identical copy of the workload and its own repository
and goes through four steps: first full backup, re-run with nothing changed,
the daily change then a backup, and a full restore into an empty folder. Caches
are warm (nothing is dropped; every tool sees the same conditions).

    python -m bench.run [--small] [--tools ferryman,restic,borg] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from rich.console import Console

from bench.daily_change import apply_daily_change
from bench.measure import StepResult, measure_step
from bench.peers_install import install_peers
from bench.report import print_report
from bench.sections import run_extra_sections
from bench.targets import DAILY, FIRST, RESTORE, UNCHANGED, compare, ferryman_memory_check
from bench.tools.base import BackupTool
from bench.tools.borg import Borg
from bench.tools.ferryman_choice import ferryman_candidates
from bench.tools.restic import Restic
from bench.tree_compare import compare_trees
from bench.workload import (
    TreeStats,
    Workload,
    build_workload,
    copy_share,
    reference_spec,
    small_spec,
)

BENCH_DIR = Path(__file__).resolve().parent
ALL_TOOLS = ("ferryman", "restic", "borg")


def make_tools(name: str, ferryman_driver: str) -> list[BackupTool]:
    """The drivers to try for one tool, in order (the first whose setup works runs)."""
    if name == "restic":
        return [Restic()]
    if name == "borg":
        return [Borg()]
    if name == "ferryman":
        return ferryman_candidates(ferryman_driver)
    raise SystemExit(f"unknown tool {name!r}; choose from {', '.join(ALL_TOOLS)}")


def _restored_root(target: Path, source: Path) -> Path:
    """Where the share's contents landed (some tools keep the absolute source path)."""
    nested = target / str(source).lstrip("/")
    return nested if nested.is_dir() else target


def run_tool(
    tool: BackupTool, workload: Workload, workdir: Path, console: Console, keep: bool
) -> tuple[list[StepResult], dict[str, object]]:
    """The four steps for one tool on its own copy of the share."""
    base = workdir / tool.name
    if base.exists():
        shutil.rmtree(base)
    source = copy_share(workload, base / "share")
    restore_to = base / "restored"
    info: dict[str, object] = {"description": tool.describe()}
    results: list[StepResult] = []
    console.print(f"[bold]{tool.name}[/bold]: {info['description']}")
    try:
        tool.setup(base, source)
    except Exception as exc:
        info["setup_error"] = f"{type(exc).__name__}: {exc}"
        console.print(f"  setup failed: {info['setup_error']}", markup=False)
        tool.teardown()
        failed = StepResult(tool.name, FIRST, 0.0, 0, 0, 0, 0, ok=False)
        failed.error = f"setup: {info['setup_error']}"
        return [failed], info

    def step(name: str, action: Callable[[], None], source_bytes: int) -> StepResult:
        os.sync()  # no writeback of the previous step inside this one
        result = measure_step(
            tool.name, name, action, source_bytes=source_bytes, repository=tool.repository
        )
        result.detail = str(getattr(tool, "last_detail", ""))
        shown = f"{result.seconds:.1f} s" if result.ok else f"FAILED {result.error[:300]}"
        console.print(f"  {name}: {shown}", markup=False)
        results.append(result)
        return result

    try:
        before = TreeStats.of(source)
        first = step(FIRST, tool.backup, before.bytes)
        if first.ok:
            step(UNCHANGED, tool.backup, before.bytes)
            change = apply_daily_change(source)
            info["daily_change"] = change.summary()
            after = TreeStats.of(source)
            if step(DAILY, tool.backup, after.bytes).ok:
                restored = step(RESTORE, lambda: tool.restore(restore_to), after.bytes)
                if restored.ok:
                    diff = compare_trees(source, _restored_root(restore_to, source))
                    info["restore_check"] = diff.summary()
                    restored.note = "verified" if diff.identical else "restore DIFFERS"
                    console.print(f"  restore check: {diff.summary()}", markup=False)
    finally:
        tool.teardown()
        if not keep:
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(restore_to, ignore_errors=True)
    return results, info


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
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "work")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the workload")
    parser.add_argument("--keep", action="store_true", help="keep copies and restores")
    parser.add_argument("--no-install", action="store_true", help="don't apt-get the peers")
    parser.add_argument("--no-sections", action="store_true", help="skip bench/*/ micro-benchmarks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=120)
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
    console.print(header[0], markup=False, highlight=False)

    started = datetime.now(UTC)
    results: list[StepResult] = []
    tools_info: dict[str, dict[str, object]] = {}
    run_dir = args.workdir / "runs"
    for name in names:
        earlier: list[str] = []
        candidates = make_tools(name, args.ferryman_driver)
        for i, tool in enumerate(candidates):
            tool_results, info = run_tool(tool, workload, run_dir, console, args.keep)
            if "setup_error" in info and i < len(candidates) - 1:
                earlier.append(f"{info['description']}: {info['setup_error']}")
                console.print("  trying the next driver", markup=False)
                continue
            if earlier:
                info["earlier_drivers_failed"] = earlier
            results += tool_results
            tools_info[name] = info
            break

    peers = [n for n in names if n != "ferryman"]
    comparisons = compare(results, peers) if "ferryman" in names else []
    engine_direct = "engine-direct" in str(tools_info.get("ferryman", {}).get("description"))
    memory = ferryman_memory_check(results, "engine process" if engine_direct else "server + proxy")
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

    sections = {} if args.no_sections else run_extra_sections(console, BENCH_DIR)
    out = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version},
        "cache": "warm (no drop)",
        "workload": workload.to_json(),
        "tools": tools_info,
        "results": [r.to_json() for r in results],
        "comparisons": [c.to_json() for c in comparisons],
        "sections": sections,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = (
        args.results / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-small' if args.small else ''}.json"
    )
    path.write_text(json.dumps(out, indent=2, default=str))
    console.print(f"\nresults saved to {path}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
