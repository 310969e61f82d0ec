"""Reading a session's and its tasks' figures from the session JSON, at any stage.

A running task carries ``progress`` (live counters), a finished one ``stats`` (final
counters). Both views, the report and the live display, read them through here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    (("time_reading", "seconds_reading", "read_seconds"), "source (reading)"),
    (("time_processing", "seconds_processing", "process_seconds"), "proxy (processing)"),
    (("time_writing", "seconds_writing", "write_seconds"), "network/repository (writing)"),
)


def bottleneck(values: dict[str, Any]) -> str | None:
    """Where the task's time went: reported by the server, else derived from stage times."""
    reported = values.get("bottleneck")
    if reported:
        return str(reported)
    spent: list[tuple[float, str]] = []
    for keys, label in _STAGE_TIMES:
        for key in keys:
            if values.get(key) is not None:
                spent.append((number(values, key), label))
                break
    total = sum(seconds for seconds, _ in spent)
    if not spent or total <= 0:
        return None
    seconds, label = max(spent)
    return f"{label}, {seconds / total:.0%} of the stage time"


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
