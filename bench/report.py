"""Printing the results: a table per step, then Ferryman's ratios against the targets."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from bench.measure import StepResult
from bench.targets import STEPS, Comparison

MB = 1e6


def _step_table(step: str, results: list[StepResult], labels: dict[str, str]) -> Table:
    table = Table(title=step, title_justify="left", show_edge=False)
    table.add_column("tool")
    table.add_column("seconds", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("peak RSS MB", justify="right")
    table.add_column("repo MB", justify="right")
    table.add_column("load")
    table.add_column("status")
    for r in results:
        if r.step != step:
            continue
        lines = [line.strip() for line in r.error.splitlines() if line.strip()]
        status = "ok" if r.ok else f"FAILED: {(lines[-1] if lines else '?')[:90]}"
        if r.note:
            status += f" ({r.note})"
        if len(r.repeats) > 1:
            status += f" runs: {' '.join(f'{t:.2f}' for t in r.repeats)}"
        table.add_row(
            labels.get(r.tool, r.tool),
            f"{r.seconds:.2f}",
            f"{r.mb_per_s:.0f}" if r.ok else "-",
            f"{r.cpu_seconds:.1f}",
            f"{r.peak_rss_bytes / MB:.0f}",
            f"{r.repository_bytes / MB:.1f}",
            f"{r.load_average:.1f}",
            status,
        )
    return table


_SESSION_END = re.compile(r"ended (\w+) in (?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?")


def session_seconds(detail: str) -> tuple[str, float] | None:
    """(status, seconds) from a ``… ended SUCCESS in 1m02s: …`` summary line."""
    match = _SESSION_END.search(detail)
    if not match:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups()[1:])
    return match.group(1), hours * 3600 + minutes * 60 + seconds


def _details_table(results: list[StepResult], tool: str) -> Table:
    """Where one tool's time and memory went: its own summary and the biggest processes."""
    table = Table(title=f"{tool}: inside each step", title_justify="left", show_edge=False)
    table.add_column("step")
    table.add_column("wall s", justify="right")
    table.add_column("session s", justify="right")
    table.add_column("peak RSS by process (MB)")
    for r in results:
        if r.tool != tool:
            continue
        session = session_seconds(r.detail)
        biggest = ", ".join(f"{cmd[:48]} {rss / MB:.0f}" for _, cmd, rss in r.peak_breakdown[:3])
        table.add_row(r.step, f"{r.seconds:.2f}", f"{session[1]:.2f}" if session else "-", biggest)
    return table


def _ratio_table(comparisons: list[Comparison]) -> Table:
    table = Table(title="Ferryman against the peers", title_justify="left", show_edge=False)
    table.add_column("measure")
    table.add_column("peer")
    table.add_column("ratio", justify="right")
    table.add_column("reads as")
    table.add_column("target")
    table.add_column("result")
    for c in comparisons:
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}"
        if c.passed is None:
            verdict = "" if c.target is None else "n/a"
        else:
            verdict = "[green]pass[/green]" if c.passed else "[red]miss[/red]"
        table.add_row(c.measure, c.peer, ratio, c.meaning, c.target or "", verdict)
    return table


def print_report(
    console: Console,
    results: list[StepResult],
    comparisons: list[Comparison],
    labels: dict[str, str],
    header: list[str],
) -> None:
    for line in header:
        console.print(line, markup=False, highlight=False)
    for step in STEPS:
        console.print()
        console.print(_step_table(step, results, labels))
    if any(r.tool == "ferryman" for r in results):
        console.print()
        console.print(_details_table(results, "ferryman"))
        console.print(
            "session s: the server's own duration of the session; the rest of the wall time"
            " is the CLI starting, dispatch and following",
            highlight=False,
        )
    for tool, label in labels.items():
        if label.endswith("*"):
            console.print(f"* {tool}: engine-direct (not through server): data path only")
    if comparisons:
        console.print()
        console.print(_ratio_table(comparisons))
