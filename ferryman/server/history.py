"""Pruning old history: ended sessions with their tasks and throughput samples.

Every look into a restore point (console browser, ``ferryman browse``, attach) is a
hidden session of its own; those go a day after they end. Other sessions go
``history_days`` after they end (server setting; 0 keeps them forever), except each
job's newest ended session, which the dashboard, the job list and the
``ferryman_job_last_session_end_timestamp_seconds`` metric show as its last result.
Restore points are the repository's, not history: pruning never touches them.

The session holding each repository's newest successful backup, assembly or maintenance
task stays too: the dashboard shows the repository's stored size from it, and a job
failing for longer than ``history_days`` must not blank that out.

Two more sessions always stay: one whose report is still waiting to be sent (a
pending notification delivery), and the newest of all together with the one that
holds the newest task (SQLite hands a deleted largest id out again, and a new
session or task must never take the id of one that reports, links and restore
points already name).

The cumulative metrics (sessions and tasks completed, bytes moved) are read from the
rows; what pruned rows had counted is added to ``history_tallies`` in the same
transaction that deletes them, so those counters never go down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.context import ServerContext
from ferryman.server.db.models import (
    HistoryTally,
    NotificationDelivery,
    Session,
    Task,
    TaskSample,
    utcnow,
)
from ferryman.server.sessions import FINAL_STATES, INTERNAL_KINDS, SIZED_KINDS

log = logging.getLogger(__name__)

INTERNAL_KEEP = dt.timedelta(days=1)
BATCH = 500  # sessions deleted per transaction
PRUNE_INTERVAL = 3600.0  # seconds between rounds of the server's pruner
FIRST_ROUND_DELAY = 60.0  # let a starting server settle first
# the task statistics summed into the ``ferryman_<key>`` byte counters
BYTE_COUNTERS = ("bytes_read", "bytes_new", "bytes_transferred")


@dataclass
class Pruned:
    """What one pruning removed."""

    sessions: int = 0
    tasks: int = 0
    samples: int = 0


def _newest_sized_of_each_repository() -> Select[int]:
    """The session of each repository's stored size as the dashboard shows it: its sized
    task that reported ``repository_bytes`` and ended last (``dashboard.sized_tasks``; a
    partition's backup task reports none)."""
    ranked = (
        select(
            Task.session_id,
            func.row_number()
            .over(partition_by=Task.repository_id, order_by=(Task.ended.desc(), Task.id.desc()))
            .label("rank"),
        )
        .where(
            Task.repository_id.is_not(None),
            Task.kind.in_(SIZED_KINDS),
            Task.state.in_(("success", "warning")),
            Task.ended.is_not(None),
            Task.stats["repository_bytes"].as_string().is_not(None),
        )
        .subquery()
    )
    return select(ranked.c.session_id).where(ranked.c.rank == 1)


def _prunable(db: DbSession, now: dt.datetime, history_days: int) -> list[int]:
    """Up to ``BATCH`` ids of ended sessions old enough to go."""
    internal = Session.kind.in_(INTERNAL_KINDS) & (Session.ended < now - INTERNAL_KEEP)
    condition = internal
    if history_days > 0:
        newest_of_each_job = (
            select(func.max(Session.id))
            .where(Session.job_id.is_not(None), Session.ended.is_not(None))
            .group_by(Session.job_id)
        )
        condition = internal | (
            Session.kind.not_in(INTERNAL_KINDS)
            & (Session.ended < now - dt.timedelta(days=history_days))
            & Session.id.not_in(newest_of_each_job)
            & Session.id.not_in(_newest_sized_of_each_repository())
        )
    unreported = select(NotificationDelivery.session_id).where(
        NotificationDelivery.status == "pending", NotificationDelivery.session_id.is_not(None)
    )
    newest_task = select(Task.session_id).where(
        Task.id == select(func.max(Task.id)).scalar_subquery()
    )
    query = (
        select(Session.id)
        .where(
            Session.ended.is_not(None),
            Session.status != "running",
            condition,
            Session.id.not_in(unreported),
            Session.id != select(func.max(Session.id)).scalar_subquery(),
            Session.id.not_in(newest_task),
        )
        .order_by(Session.id)
        .limit(BATCH)
    )
    return list(db.scalars(query))


def _add_tallies(db: DbSession, rows: Iterable[tuple[str, str, str, float]]) -> None:
    for metric, kind, status, value in rows:
        if not value:
            continue
        tally = db.get(HistoryTally, (metric, kind, status))
        if tally is None:
            db.add(HistoryTally(metric=metric, kind=kind, status=status, value=float(value)))
        else:
            tally.value += float(value)


def _tally_removed(db: DbSession, ids: list[int]) -> None:
    """Add what the sessions ``ids`` and their tasks count in the cumulative metrics."""
    sessions = db.execute(
        select(Session.kind, Session.status, func.count())
        .where(
            Session.id.in_(ids),
            Session.kind.not_in(INTERNAL_KINDS),
            Session.status.in_(FINAL_STATES),
        )
        .group_by(Session.kind, Session.status)
    )
    _add_tallies(db, (("sessions_completed", k, s, n) for k, s, n in sessions))
    ended_tasks = (
        Task.session_id.in_(ids),
        Task.kind.not_in(INTERNAL_KINDS),
        Task.state.in_(FINAL_STATES),
    )
    by_state = select(Task.kind, Task.state, func.count()).where(*ended_tasks)
    tasks = db.execute(by_state.group_by(Task.kind, Task.state))
    _add_tallies(db, (("tasks_completed", k, s, n) for k, s, n in tasks))
    sums = [func.sum(Task.stats[key].as_float()) for key in BYTE_COUNTERS]
    by_kind = select(Task.kind, *sums).where(*ended_tasks).group_by(Task.kind)
    for kind, *values in db.execute(by_kind):
        moved = zip(BYTE_COUNTERS, values, strict=True)
        _add_tallies(db, ((key, kind, "", value or 0) for key, value in moved))


def prune_batch(db: DbSession, now: dt.datetime, history_days: int) -> Pruned:
    """Remove one batch of old sessions (with their tasks and samples) in ``db``'s
    transaction; ``Pruned().sessions == 0`` when nothing is left to remove."""
    ids = _prunable(db, now, history_days)
    if not ids:
        return Pruned()
    _tally_removed(db, ids)
    pruned = Pruned(
        sessions=len(ids),
        tasks=db.scalar(select(func.count()).where(Task.session_id.in_(ids))) or 0,
        samples=db.scalar(select(func.count()).where(TaskSample.session_id.in_(ids))) or 0,
    )
    db.execute(delete(TaskSample).where(TaskSample.session_id.in_(ids)))
    db.execute(delete(Task).where(Task.session_id.in_(ids)))
    db.execute(delete(Session).where(Session.id.in_(ids)))
    return pruned


def prune_history(ctx: ServerContext, now: dt.datetime | None = None) -> Pruned:
    """Remove every session old enough to go, a batch per transaction (other writers are
    never held up long); returns the totals."""
    now = now or utcnow()
    total = Pruned()
    while True:
        with ctx.db.session() as db:
            batch = prune_batch(db, now, ctx.config.history_days)
        total.sessions += batch.sessions
        total.tasks += batch.tasks
        total.samples += batch.samples
        if batch.sessions < BATCH:
            return total


def tallies(db: DbSession, metric: str) -> dict[tuple[str, str], float]:
    """``{(kind, status): value}`` that pruned history adds to ``metric``."""
    rows = db.execute(
        select(HistoryTally.kind, HistoryTally.status, HistoryTally.value).where(
            HistoryTally.metric == metric
        )
    )
    return {(kind, status): value for kind, status, value in rows}


class HistoryPruner:
    """The server's background pruning: a round a minute after start, then hourly."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Pruned:
        pruned = prune_history(self.ctx)
        if pruned.sessions:
            log.info(
                "history: removed %d ended sessions (%d tasks, %d throughput samples)",
                pruned.sessions,
                pruned.tasks,
                pruned.samples,
            )
        return pruned

    def _loop(self) -> None:
        delay = FIRST_ROUND_DELAY
        while not self._stop.wait(delay) and not self.ctx.shutting_down.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("history pruning failed; trying again in an hour")
            delay = PRUNE_INTERVAL

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="history-pruner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
