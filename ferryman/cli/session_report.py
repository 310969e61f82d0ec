"""The session report that ``ferryman session show`` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ferryman.cli.output import (
    format_bytes,
    format_count,
    format_duration,
    format_ratio,
    format_time,
    printable,
)
from ferryman.cli.session_figures import (
    bottleneck,
    compression_ratio,
    counters,
    dedup_ratio,
    partition_label,
    session_duration,
)

if TYPE_CHECKING:
    from rich.console import Console

# At most this many warnings per task are printed; --json has them all.
MAX_WARNINGS_SHOWN = 50


def print_report(session: dict[str, Any], console: Console) -> None:
    """Status and reasons, then per task: placement, duration, figures, warnings."""

    def line(text: str = "") -> None:
        console.print(text, markup=False, highlight=False)

    title = f"session {session.get('id')} ({session.get('kind', '-')}"
    if session.get("job"):
        title += f", job {session['job']}"
    line(title + ")")
    status = str(session.get("status", "-")).upper()
    if session.get("reason"):
        status += f" - {session['reason']}"
    line(f"  status:     {status}")
    if session.get("trigger") and session["trigger"] != "manual":
        line(f"  trigger:    {session['trigger']}")
    line(f"  created:    {format_time(session.get('created'))}")
    line(f"  started:    {format_time(session.get('started'))}")
    line(f"  ended:      {format_time(session.get('ended'))}")
    line(f"  duration:   {format_duration(session_duration(session))}")
    points = session.get("restore_points") or []
    line(f"  restore points: {', '.join(str(p) for p in points) if points else '-'}")
    if session.get("kind") == "restore":
        _restore_request(session, line)
    tasks = session.get("tasks") or []
    line(f"  tasks:      {len(tasks)}")
    for task in tasks:
        line()
        _task_block(task, line)


def _restore_request(session: dict[str, Any], line: Any) -> None:
    """What a restore session was asked: which point, what, where, and how."""
    paths = session.get("paths") or []
    line(f"  from point: {session.get('point', '-')}")
    line(
        f"  paths:      {', '.join(printable(str(p)) for p in paths) if paths else '(everything)'}"
    )
    where = "in place" if session.get("in_place") else "to"
    line(f"  target:     {where} {printable(str(session.get('target') or '-'))}")
    line(f"  overwrite:  {session.get('overwrite') or '-'}")


def _task_block(task: dict[str, Any], line: Any) -> None:
    values = counters(task)
    line(
        f"  task {task.get('id')} {partition_label(task)}: "
        f"{str(task.get('state', '-')).upper()} on {task.get('proxy') or '(not placed)'}"
    )
    if task.get("reason"):
        label = "why this proxy:" if task.get("proxy") else "why not placed:"
        line(f"    {label:<17}{task['reason']}")
    for passed in task.get("passed_over") or []:
        line(f"    passed over:     {passed.get('proxy')}: {passed.get('reason')}")
    duration = values.get("duration")
    if duration is None:
        duration = session_duration(task)
    line(f"    duration:        {format_duration(duration)}   attempts: {task.get('attempts', 1)}")
    kind = task.get("kind")
    if kind == "restore":
        _restore_figures(values, line)
    elif kind == "check":
        _check_figures(values, line)
    elif kind == "maintenance":
        _maintenance_figures(task.get("stats") or {}, line)
    else:
        _backup_figures(values, line)
        _snapshot_line((task.get("stats") or {}).get("snapshot"), line)
        _adaptive_line((task.get("stats") or {}).get("io_adaptive"), line)
    if task.get("error"):
        line(f"    error:           {task['error']}")
    warnings = task.get("warnings") or []
    if warnings:
        line(f"    warnings ({len(warnings)}):")
        for warning in warnings[:MAX_WARNINGS_SHOWN]:
            line(f"      {printable(str(warning.get('path')))}: {warning.get('reason')}")
        if len(warnings) > MAX_WARNINGS_SHOWN:
            line(f"      … {len(warnings) - MAX_WARNINGS_SHOWN} more (see --json)")


def _snapshot_line(snap: Any, line: Any) -> None:
    """Which snapshot a backup read, and whether it was removed (shares with a provider)."""
    if not isinstance(snap, dict):
        return
    state = "removed" if snap.get("removed") else f"NOT removed: {snap.get('remove_error')}"
    leftovers = len(snap.get("leftovers_removed") or [])
    extra = f"; {leftovers} leftover(s) of interrupted runs removed" if leftovers else ""
    where = printable(str(snap.get("path")))
    line(f"    snapshot:        {snap.get('provider')} {where} ({state}){extra}")


def _adaptive_line(info: Any, line: Any) -> None:
    """How adaptive I/O control moved the task's parallel source reads (adaptive shares)."""
    if not isinstance(info, dict):
        return
    steps = [info.get("max_parallelism")]
    for value in (info.get("min_parallelism"), info.get("final_parallelism")):
        if value != steps[-1]:
            steps.append(value)
    path = "→".join(str(v) for v in steps)
    base, peak = info.get("baseline_latency_ms"), info.get("peak_latency_ms")
    per = " per MiB" if info.get("latency_unit") == "MiB" else ""
    latency = (
        f", source latency{per} {base:.1f} ms → {peak:.1f} ms (peak)"
        if isinstance(base, int | float) and isinstance(peak, int | float)
        else ""
    )
    line(f"    adaptive I/O:    parallelism {path} ({info.get('changes', 0)} changes){latency}")


def _backup_figures(values: dict[str, Any], line: Any) -> None:
    line(
        f"    files:           {format_count(values.get('files_scanned'))} scanned, "
        f"{format_count(values.get('files_read'))} read"
        + (
            f", {format_count(values['files_unchanged'])} unchanged"
            if values.get("files_unchanged") is not None
            else ""
        )
    )
    line(
        f"    bytes:           {format_bytes(values.get('bytes_scanned'))} scanned, "
        f"{format_bytes(values.get('bytes_read'))} read, "
        f"{format_bytes(values.get('bytes_new'))} new, "
        f"{format_bytes(values.get('bytes_transferred'))} transferred"
    )
    line(
        f"    dedup ratio:     {format_ratio(dedup_ratio(values))}   "
        f"compression ratio: {format_ratio(compression_ratio(values))}"
    )
    line(f"    bottleneck:      {bottleneck(values) or '-'}")


def _restore_figures(values: dict[str, Any], line: Any) -> None:
    line(
        f"    files:           {format_count(values.get('files_restored'))} restored, "
        f"{format_count(values.get('files_skipped'))} skipped, "
        f"{format_count(values.get('dirs_restored'))} folders, "
        f"{format_count(values.get('links_restored'))} links"
    )
    line(f"    bytes:           {format_bytes(values.get('bytes_restored'))} restored")
    errors = values.get("errors")
    count = len(errors) if isinstance(errors, list) else errors
    line(f"    errors:          {format_count(count)}")


def _check_figures(values: dict[str, Any], line: Any) -> None:
    line(
        f"    checked:         {format_count(values.get('points_checked'))} restore points, "
        f"{format_count(values.get('packs_checked'))} packs "
        f"({format_count(values.get('packs_read'))} read), "
        f"{format_count(values.get('blobs_read'))} blobs read"
    )
    for label in ("errors", "damaged"):
        items = values.get(label)
        if isinstance(items, list):
            line(f"    {label + ':':<17}{len(items)}")
            for item in items[:MAX_WARNINGS_SHOWN]:
                line(f"      {item}")


def _maintenance_figures(stats: dict[str, Any], line: Any) -> None:
    removed = stats.get("removed") or []
    line(f"    retention:       {format_count(stats.get('points_removed', len(removed)))} "
         "restore point(s) removed")  # fmt: skip
    for item in removed[:MAX_WARNINGS_SHOWN]:
        line(f"      {item.get('share')} {format_time(item.get('time'))} {item.get('point_id')}")
    if "bytes_reclaimed" in stats:
        line(
            f"    garbage:         {format_bytes(stats.get('bytes_reclaimed'))} reclaimed, "
            f"{format_count(stats.get('packs_deleted'))} pack(s) deleted, "
            f"{format_count(stats.get('packs_repacked'))} repacked; "
            f"{format_bytes(stats.get('bytes_after'))} stored now"
        )
    if stats.get("gc_waiting"):
        line(
            f"    waiting:         {stats['gc_waiting']} GC generation(s) wait for running "
            "backups to end; the next maintenance frees them"
        )
