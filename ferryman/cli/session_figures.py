"""Reading a session's and its tasks' figures from the session JSON, at any stage.

A running task carries ``progress`` (live counters), a finished one ``stats`` (final
counters). Both views, the report and the live display, read them through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ferryman.cli.output import format_bytes, format_count

ENDED_STATES = frozenset({"success", "warning", "failed", "stopped"})


def session_ended(session: dict[str, Any]) -> bool:
    return session.get("status") in ENDED_STATES


def counters(task: dict[str, Any]) -> dict[str, Any]:
    """One dict of counters: the final ``stats`` once the task ended, else live ``progress``.

    ``stats`` names the scanned totals ``files``/``bytes`` and the live counters name
    them ``files_scanned``/``bytes_scanned``; both names are filled in.
    """
    progress = task.get("progress") or {}
    stats = task.get("stats") or {}
    ended = task.get("state") in ENDED_STATES
    base, top = (progress, stats) if ended else (stats, progress)
    merged = {key: value for key, value in base.items() if value is not None}
    merged.update({key: value for key, value in top.items() if value is not None})
    for total, live in (("files", "files_scanned"), ("bytes", "bytes_scanned")):
        if ended and stats.get(total) is not None:
            merged[live] = stats[total]
        elif merged.get(live) is None and merged.get(total) is not None:
            merged[live] = merged[total]
    return merged


def number(values: dict[str, Any], key: str) -> float:
    try:
        return float(values.get(key) or 0)
    except (TypeError, ValueError):
        return 0.0


def dedup_ratio(values: dict[str, Any]) -> float | None:
    """Bytes read per byte that was new to the repository."""
    if values.get("dedup_ratio") is not None:
        return float(values["dedup_ratio"])
    read, new = number(values, "bytes_read"), number(values, "bytes_new")
    return read / new if new > 0 else None


def compression_ratio(values: dict[str, Any]) -> float | None:
    """New bytes per byte transferred to the repository."""
    if values.get("compression_ratio") is not None:
        return float(values["compression_ratio"])
    new, sent = number(values, "bytes_new"), number(values, "bytes_transferred")
    return new / sent if sent > 0 else None


# Time spent per stage, as the engine may name it, mapped to the bottleneck it shows.
_STAGE_TIMES = (
    (("seconds_source_read", "time_reading"), "source (reading)"),
    (("seconds_processing", "time_processing"), "proxy (processing)"),
    (("seconds_repository_write", "time_writing"), "network/repository (writing)"),
)


def stage_times(values: dict[str, Any]) -> list[tuple[str, float]]:
    """Seconds spent reading the source, processing, writing to the repository."""
    spent: list[tuple[str, float]] = []
    for keys, label in _STAGE_TIMES:
        for key in keys:
            if values.get(key) is not None:
                spent.append((label, number(values, key)))
                break
    return spent


def bottleneck(values: dict[str, Any]) -> str | None:
    """Where the task's time went: as reported by the server, else the slowest stage."""
    spent = stage_times(values)
    total = sum(seconds for _, seconds in spent)
    if values.get("bottleneck"):
        named = str(values["bottleneck"])
    elif total > 0:
        named = max(spent, key=lambda item: item[1])[0]
    else:
        return None
    if total <= 0:
        return named
    shares = ", ".join(f"{label.split(' ')[0]} {seconds / total:.0%}" for label, seconds in spent)
    return f"{named} (time: {shares})"


def headline(task: dict[str, Any]) -> str:
    """The task's (or a kind's summed) main figures in a few words, by task kind."""
    values = counters(task)
    kind = task.get("kind")
    if kind == "restore":
        files = values.get("files_restored", values.get("files_read"))
        size = values.get("bytes_restored", values.get("bytes_read"))
        parts = [f"{format_count(files)} files", f"{format_bytes(size)} restored"]
        if number(values, "files_skipped"):
            parts.append(f"{format_count(values['files_skipped'])} skipped")
        if _count(values.get("errors")):
            parts.append(f"{_count(values.get('errors'))} error(s)")
    elif kind == "check":
        parts = [
            f"{format_count(values.get('points_checked'))} restore points",
            f"{format_count(values.get('packs_checked'))} packs checked",
            f"{format_count(values.get('packs_read'))} read",
            f"{_count(values.get('errors'))} error(s)",
        ]
        if _count(values.get("damaged")):
            parts.append(f"{_count(values.get('damaged'))} damaged")
    else:
        parts = [
            f"{format_count(values.get('files_scanned'))} files",
            f"{format_bytes(values.get('bytes_read'))} read",
            f"{format_bytes(values.get('bytes_transferred'))} sent",
        ]
    return ", ".join(parts)


def _count(value: Any) -> int:
    """A count that the server gives either as a number or as the list of items."""
    if isinstance(value, list | tuple):
        return len(value)
    return int(number({"v": value}, "v"))


def summed(tasks: list[dict[str, Any]], kind: str | None) -> dict[str, Any]:
    """One pseudo-task whose counters are the sums over ``tasks`` (for summary lines)."""
    totals: dict[str, Any] = {}
    for task in tasks:
        for key, value in counters(task).items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                totals[key] = totals.get(key, 0) + value
            elif isinstance(value, list):
                totals[key] = _count(totals.get(key)) + len(value)
    return {"kind": kind, "state": "success", "stats": totals}


def partition_label(task: dict[str, Any]) -> str:
    """``docs`` or ``docs [2/3]`` for a partition of a share."""
    share = str(task.get("share") or task.get("kind") or "-")
    partition = task.get("partition")
    if isinstance(partition, dict) and partition.get("count"):
        return f"{share} [{int(partition.get('index', 0)) + 1}/{partition['count']}]"
    return share


def session_duration(session: dict[str, Any]) -> float | None:
    """Seconds from start (or creation) to end, when both are known."""
    start = session.get("started") or session.get("created")
    end = session.get("ended")
    if not start or not end:
        return None
    try:
        begin = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        finish = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (finish - begin).total_seconds())


def session_elapsed(session: dict[str, Any]) -> float | None:
    """Seconds since the session started (its duration once it ended)."""
    if session.get("ended"):
        return session_duration(session)
    start = session.get("started") or session.get("created")
    if not start:
        return None
    try:
        begin = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    except ValueError:
        return None
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - begin).total_seconds())


def task_elapsed(task: dict[str, Any]) -> float | None:
    """Seconds the task has been running (or ran)."""
    if not task.get("started"):
        return None
    return session_elapsed({"started": task["started"], "ended": task.get("ended")})


def eta_seconds(task: dict[str, Any], expected_bytes: Mapping[str, float]) -> float | None:
    """The server's ETA for a running task, else an estimate from the share's previous size.

    The estimate assumes the share is about as big as its newest restore point and
    that the rest goes as fast as what was scanned so far; partitions have no estimate.
    """
    values = counters(task)
    if values.get("eta_seconds") is not None:
        return number(values, "eta_seconds")
    total = expected_bytes.get(str(task.get("share")))
    scanned = number(values, "bytes_scanned")
    elapsed = task_elapsed(task)
    if task.get("partition") or not total or scanned <= 0 or not elapsed:
        return None
    done = min(scanned / total, 0.99)
    return elapsed * (1 - done) / done
