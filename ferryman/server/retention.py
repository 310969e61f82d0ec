"""Retention: which restore points a job keeps, and the maintenance task that removes the rest.

When every backup task of a job's session ended well (success or warning), the
session gets one more task, of kind ``maintenance``: a proxy that reaches the
repository deletes the manifests of the points the keep rules let go, then runs
the repository's garbage collection, which frees only data no remaining restore
point reaches (docs/format.md, "Garbage collection"). The catalog rows of the
removed points go when the task reports them deleted. The rules are those of
restic's ``forget`` (docs/cli.md, "Retention").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.db.models import Job, RestorePoint, Session, Task

K = TypeVar("K", bound=Hashable)

RULE_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")


@dataclass(frozen=True)
class KeepRules:
    """How many points of each kind to keep; ``None`` = that rule is not used."""

    last: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    @property
    def active(self) -> bool:
        """Some rule is set (without any, every point is kept)."""
        return any(n is not None for n in (self.last, self.daily, self.weekly, self.monthly))

    @classmethod
    def of_job(cls, job: Job) -> KeepRules:
        return cls(job.keep_last, job.keep_daily, job.keep_weekly, job.keep_monthly)

    def as_params(self) -> dict[str, int | None]:
        return dict(zip(RULE_KEYS, (self.last, self.daily, self.weekly, self.monthly), strict=True))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> KeepRules:
        return cls(*(params.get(key) for key in RULE_KEYS))


def _buckets(zone: ZoneInfo) -> dict[str, Callable[[dt.datetime], Hashable]]:
    def day(t: dt.datetime) -> Hashable:
        return t.astimezone(zone).date()

    def week(t: dt.datetime) -> Hashable:
        return t.astimezone(zone).isocalendar()[:2]  # ISO year and week

    def month(t: dt.datetime) -> Hashable:
        local = t.astimezone(zone)
        return (local.year, local.month)

    return {"daily": day, "weekly": week, "monthly": month}


def points_to_keep(
    points: Sequence[tuple[K, dt.datetime]], rules: KeepRules, zone: ZoneInfo
) -> dict[K, list[str]]:
    """The points to keep, each with the rules that keep it (restic ``forget`` semantics).

    ``keep_last n``: the n newest points. ``keep_daily n`` (weekly, monthly): the
    newest point of each of the n newest days (ISO weeks, months) that have a
    point, days counted in ``zone``. The kept set is the union of the rules; the
    newest point is always kept. Without any rule every point is kept.
    """
    newest_first = sorted(points, key=lambda p: p[1], reverse=True)
    if not rules.active:
        return {key: ["no keep rules"] for key, _ in newest_first}
    kept: dict[K, list[str]] = {}
    if newest_first:
        kept.setdefault(newest_first[0][0], []).append("newest")
    if rules.last is not None:
        for key, _ in newest_first[: rules.last]:
            kept.setdefault(key, []).append("last")
    counts = {"daily": rules.daily, "weekly": rules.weekly, "monthly": rules.monthly}
    for name, bucket_of in _buckets(zone).items():
        wanted = counts[name]
        if wanted is None:
            continue
        seen: set[Hashable] = set()
        for key, time in newest_first:
            if len(seen) >= wanted:
                break
            bucket = bucket_of(time)
            if bucket not in seen:  # the newest point of a bucket comes first
                seen.add(bucket)
                kept.setdefault(key, []).append(name)
    return kept


def retention_params(job: Job, timezone: str) -> dict[str, Any] | None:
    """What a starting backup session records to apply its job's retention when it ends."""
    rules = KeepRules.of_job(job)
    if not rules.active:
        return None
    return {**rules.as_params(), "timezone": timezone}


def _removable(
    db: DbSession, session: Session, rules: KeepRules, zone: ZoneInfo
) -> list[RestorePoint]:
    """The job's points in its repository that its keep rules let go, per share."""
    others = list(
        db.execute(
            select(Session.id, Session.params).where(
                Session.status == "running", Session.id != session.id
            )
        )
    )
    running = {session_id for session_id, _ in others}
    # points a running restore or browse reads stay until it ends (GC fences writers only)
    in_use: set[str] = set()
    for _, params in others:
        params = params or {}
        in_use.update(str(p) for p in params.get("point_ids") or [])
        if params.get("point_id"):
            in_use.add(str(params["point_id"]))
    points = db.scalars(
        select(RestorePoint)
        .where(
            RestorePoint.job_id == session.job_id,
            RestorePoint.repository_id == session.repository_id,
        )
        .order_by(RestorePoint.time, RestorePoint.id)
    )
    by_share: dict[Any, list[RestorePoint]] = {}
    for point in points:
        if point.session_id in running or point.point_id in in_use:
            continue  # a point of a session still running, or being read, is never a candidate
        by_share.setdefault(point.share_id or point.share_name, []).append(point)
    removable: list[RestorePoint] = []
    for share_points in by_share.values():
        keep = points_to_keep([(p.id, p.time) for p in share_points], rules, zone)
        removable.extend(p for p in share_points if p.id not in keep)
    return removable


def queue_maintenance(db: DbSession, session: Session) -> Task | None:
    """After a backup session's tasks all ended well: its maintenance task, if its job's
    keep rules let points go (None otherwise). Called once every task has ended."""
    from ferryman.server.sessions import NEW_TASK_REASON

    params = (session.params or {}).get("retention")
    if session.kind != "backup" or session.job_id is None or not params:
        return None
    if any(t.kind == "maintenance" for t in session.tasks):
        return None
    rules = KeepRules.from_params(params)
    zone = ZoneInfo(str(params.get("timezone") or "UTC"))
    doomed = _removable(db, session, rules, zone)
    if not doomed:
        return None
    task = Task(
        session_id=session.id,
        kind="maintenance",
        repository_id=session.repository_id,
        params={
            "delete": [
                {"point_id": p.point_id, "share": p.share_name, "time": p.time.isoformat()}
                for p in doomed
            ],
            "gc": True,
        },
        priority=session.priority,
        state="waiting",
        reason=NEW_TASK_REASON,
    )
    db.add(task)
    db.flush()
    session.tasks.append(task)
    return task


def on_maintenance_finished(db: DbSession, task: Task) -> None:
    """Drop the catalog rows of the points the task removed from the repository (also after
    a failure: what it reports removed is gone)."""
    output = task.output or {}
    gone = [str(p) for p in (output.get("deleted") or []) + (output.get("missing") or [])]
    if not gone or task.repository_id is None:
        return
    db.execute(
        delete(RestorePoint).where(
            RestorePoint.repository_id == task.repository_id, RestorePoint.point_id.in_(gone)
        )
    )
