"""The session report as a notification carries it: a JSON document and a plain-text mail."""

from __future__ import annotations

import json
from typing import Any

EVENT = "session.ended"
MAX_WARNINGS_IN_MAIL = 100


def report_document(session: dict[str, Any]) -> bytes:
    """The webhook body: ``{"event": "session.ended", "session": <session as the API shows>}``."""
    return json.dumps({"event": EVENT, "session": session}, sort_keys=True).encode()


def test_document(target_name: str) -> bytes:
    return json.dumps({"event": "test", "target": target_name, "session": None}).encode()


def subject(session: dict[str, Any]) -> str:
    """``[Ferryman] backup nightly: WARNING (session 7)``."""
    what = str(session.get("kind") or "session")
    if session.get("job"):
        what += f" {session['job']}"
    return f"[Ferryman] {what}: {str(session.get('status')).upper()} (session {session.get('id')})"


def report_text(session: dict[str, Any]) -> str:
    """The report in plain text: status and reason, then each task with its figures."""
    lines = [subject(session).removeprefix("[Ferryman] "), ""]
    status = str(session.get("status", "-")).upper()
    if session.get("reason"):
        status += f" - {session['reason']}"
    lines += [
        f"status:         {status}",
        f"started:        {session.get('started') or '-'}",
        f"ended:          {session.get('ended') or '-'}",
    ]
    points = session.get("restore_points") or []
    if points:
        lines.append(f"restore points: {', '.join(str(p) for p in points)}")
    for key in ("point", "target", "paths", "overwrite"):  # restore sessions
        if session.get(key) not in (None, [], ""):
            lines.append(f"{key + ':':<16}{session[key]}")
    for task in session.get("tasks") or []:
        lines += ["", *_task_lines(task)]
    lines += ["", f"Details: ferryman session show {session.get('id')}"]
    return "\n".join(lines) + "\n"


def _task_lines(task: dict[str, Any]) -> list[str]:
    share = task.get("share") or task.get("kind")
    partition = task.get("partition")
    if isinstance(partition, dict) and partition.get("count"):
        share = f"{share} [{int(partition.get('index', 0)) + 1}/{partition['count']}]"
    stats = task.get("stats") or {}
    lines = [
        f"task {task.get('id')} {share}: {str(task.get('state')).upper()} "
        f"on {task.get('proxy') or '(not placed)'}",
        f"  why this proxy: {task.get('reason') or '-'}",
        f"  duration:       {_seconds(stats.get('duration'))}",
    ]
    if task.get("kind") == "backup" or task.get("kind") == "assemble":
        lines += [
            f"  files:          {stats.get('files', 0)} scanned, {stats.get('files_read', 0)} read",
            f"  bytes:          {_size(stats.get('bytes'))} scanned, "
            f"{_size(stats.get('bytes_read'))} read, {_size(stats.get('bytes_new'))} new, "
            f"{_size(stats.get('bytes_transferred'))} transferred",
            f"  dedup ratio:    {_ratio(stats.get('dedup_ratio'))}   "
            f"compression ratio: {_ratio(stats.get('compression_ratio'))}",
            f"  bottleneck:     {stats.get('bottleneck') or '-'}",
        ]
    elif task.get("kind") == "restore":
        lines.append(
            f"  restored:       {stats.get('files_restored', 0)} files, "
            f"{_size(stats.get('bytes_restored'))}"
        )
    if task.get("error"):
        lines.append(f"  error:          {task['error']}")
    warnings = task.get("warnings") or []
    if warnings:
        lines.append(f"  warnings ({len(warnings)}):")
        for warning in warnings[:MAX_WARNINGS_IN_MAIL]:
            lines.append(f"    {warning.get('path')}: {warning.get('reason')}")
        if len(warnings) > MAX_WARNINGS_IN_MAIL:
            lines.append(f"    … {len(warnings) - MAX_WARNINGS_IN_MAIL} more in the webhook / API")
    return lines


def _size(value: Any) -> str:
    try:
        size = float(value or 0)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _ratio(value: Any) -> str:
    return f"{float(value):.2f}x" if isinstance(value, int | float) else "-"


def _seconds(value: Any) -> str:
    return f"{float(value):.1f}s" if isinstance(value, int | float) else "-"
