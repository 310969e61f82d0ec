"""Throughput samples: the cumulative counters of each task over time, for the console's chart.

A sample is kept when progress arrives, at most one per task per second — and, as a task
grows old, at most one per 1/600 of its age so far, so a 10-hour task keeps about 3,000
rather than 36,000 — and the task's final statistics are its last sample. Samples go with
their session (foreign key cascade).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.db.models import Task, TaskSample, utcnow
from ferryman.server.sessions import INTERNAL_KINDS

SAMPLE_EVERY = dt.timedelta(seconds=1)
SAMPLES_PER_AGE = 600
COUNTERS = ("files_read", "bytes_read", "bytes_transferred")
# Short helper tasks whose progress nobody charts.
UNSAMPLED_KINDS = INTERNAL_KINDS


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(value), 2**62))


def record_sample(db: DbSession, task: Task, values: dict[str, Any], final: bool = False) -> None:
    """Keep the task's counters now, unless its last sample is too recent (see the module
    docstring); a task's final figures are always kept."""
    if task.kind in UNSAMPLED_KINDS:
        return
    now = utcnow()
    if not final:
        last = db.scalar(
            select(TaskSample.time)
            .where(TaskSample.task_id == task.id)
            .order_by(TaskSample.id.desc())
            .limit(1)
        )
        age = now - task.started if task.started is not None else dt.timedelta(0)
        if last is not None and now - last < max(SAMPLE_EVERY, age / SAMPLES_PER_AGE):
            return
    db.add(
        TaskSample(
            session_id=task.session_id,
            task_id=task.id,
            proxy_name=task.proxy_name,
            time=now,
            **{key: _count(values.get(key)) for key in COUNTERS},
        )
    )


def session_samples(db: DbSession, session_id: int) -> list[dict[str, Any]]:
    """The samples of a session, oldest first, as the API returns them."""
    rows = db.scalars(
        select(TaskSample)
        .where(TaskSample.session_id == session_id)
        .order_by(TaskSample.time, TaskSample.id)
    )
    return [
        {
            "t": round(row.time.timestamp(), 3),
            "proxy": row.proxy_name,
            "task": row.task_id,
            "bytes_read": row.bytes_read,
            "bytes_transferred": row.bytes_transferred,
            "files_read": row.files_read,
        }
        for row in rows
    ]
