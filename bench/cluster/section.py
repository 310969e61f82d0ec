"""The cluster benchmarks as parts of ``make bench``: each runs as its own process (so
its clean-up of namespaces and processes happens whatever the harness does), its output
is shown as it comes and kept, with its saved figures, in the harness's results file."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

CLUSTER = ("scaleout", "dispatcher")
TIMEOUT = 1800
SAVED = "results saved to "


def parse_cluster(value: str) -> list[str]:
    """``scaleout,dispatcher`` (or ``all``, or ``none``) → the benchmarks to run, in order."""
    value = value.strip().lower()
    if value in ("", "none"):
        return []
    if value == "all":
        return list(CLUSTER)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLUSTER]
    if unknown:
        raise ValueError(
            f"unknown cluster benchmark {unknown[0]!r}; choose from {', '.join(CLUSTER)}"
        )
    return [n for n in CLUSTER if n in names]


def run_cluster(
    console: Console, names: list[str], small: bool, root: Path
) -> dict[str, dict[str, object]]:
    """Run each named benchmark; returns {name: {returncode, output, figures}}."""
    found: dict[str, dict[str, object]] = {}
    for name in names:
        module = f"bench.cluster.{name}"
        console.print(f"\n[bold]{module}[/bold]")
        argv = [sys.executable, "-m", module, *(["--small"] if small else [])]
        lines: list[str] = []
        with subprocess.Popen(
            argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                console.print(line.rstrip("\n"), markup=False, highlight=False)
                lines.append(line)
            try:
                code = proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.terminate()  # its SIGTERM handler cleans up
                code = proc.wait(60)
        if code != 0:
            console.print(f"{module} FAILED (exit {code})", markup=False)
        figures: object = None
        saved = [line[len(SAVED) :].strip() for line in lines if line.startswith(SAVED)]
        if saved and Path(saved[-1]).exists():
            figures = json.loads(Path(saved[-1]).read_text())
        found[name] = {"returncode": code, "output": "".join(lines), "figures": figures}
    return found


def print_and_save(
    result: dict[str, Any],
    text: str,
    args: argparse.Namespace,
    started: dt.datetime,
    load_before: float,
    name: str,
) -> None:
    """Print a benchmark's report with the load around it, save its figures (`SAVED` line)."""
    load_after = os.getloadavg()[0]
    result["load_average"] = {"before": load_before, "after": load_after}
    print()
    print(text)
    print(
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after "
        f"({os.cpu_count()} CPUs; above ~2 other work was competing)"
    )
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.results / f"{stamp}-{name}{'-small' if args.small else ''}.json"
    out = {"started": started.isoformat(), "args": {k: str(v) for k, v in vars(args).items()}}
    path.write_text(json.dumps({**out, **result}, indent=2))
    print(f"\n{SAVED}{path}")
