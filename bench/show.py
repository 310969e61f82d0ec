"""Print the tables of a saved results file again, optionally with another estimator.

    python -m bench.show bench/results/<file>.json [--estimator best|median]

Files written before every run was kept in full ("rounds") only have the times
of the repetitions: there the estimator changes the seconds (and MB/s), and the
other columns stay those of the run that was reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from bench.measure import ESTIMATORS, StepResult, pick_round
from bench.report import print_report
from bench.targets import compare, ferryman_memory_check


def _repick(result: StepResult, estimator: str) -> StepResult:
    if result.rounds:
        return pick_round([StepResult.from_json(r) for r in result.rounds], estimator)
    if len(result.repeats) > 1 and result.ok:
        times = sorted(result.repeats)
        result.seconds = times[0] if estimator == "best" else times[(len(times) - 1) // 2]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--estimator", choices=ESTIMATORS, default=None)
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    results = [StepResult.from_json(r) for r in data["results"]]
    if args.estimator:
        results = [_repick(r, args.estimator) for r in results]
    tools = data.get("tools", {})
    names = [str(n) for n in tools]
    comparisons = compare(results, [n for n in names if n != "ferryman"])
    memory = ferryman_memory_check(results)
    if memory:
        comparisons.append(memory)
    labels = {
        n: n + (" *" if "engine-direct" in str(i.get("description")) else "")
        for n, i in tools.items()
    }
    stats = data["workload"]["stats"]
    header = [
        f"{args.results.name}: project {data.get('project_commit', '?')}, "
        f"started {data.get('started', '?')}",
        f"workload {data['workload']['spec']['name']}: {stats['bytes'] / 1e6:.0f} MB in "
        f"{stats['files']} files; cache {data.get('cache', '?')}",
        *(f"{n}: {i.get('description', '')}" for n, i in tools.items()),
    ]
    if args.estimator:
        header.append(f"repeated steps shown with the {args.estimator} run")
    console = Console() if sys.stdout.isatty() else Console(width=120)
    print_report(console, results, comparisons, labels, header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
