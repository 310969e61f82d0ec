"""JSON shapes of API objects (see docs/api.md). Secrets never appear here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.proxy.path_names import json_safe
from ferryman.server.db.models import (
    Job,
    Probe,
    Proxy,
    Repository,
    RestorePoint,
    Session,
    Share,
    Task,
    utcnow,
)
from ferryman.server.placement import IO_CONTROL_MAX_PROXIES
from ferryman.server.sessions import ACTIVE_STATES, INTERNAL_KINDS

STAT_KEYS = (
    "files",
    "bytes",
    "files_read",
    "bytes_read",
    "bytes_new",
    "bytes_transferred",
    "duration",
)
PROGRESS_KEYS = ("files_scanned", "bytes_scanned", "files_read", "bytes_read", "bytes_transferred")


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def repository_view(repo: Repository) -> dict[str, Any]:
    return {
        "id": repo.id,
        "name": repo.name,
        "url": repo.url,
        "max_tasks": repo.max_tasks,
        "has_credentials": bool(repo.access_key_secret),
        "created": iso(repo.created),
    }


def share_view(share: Share) -> dict[str, Any]:
    return {
        "id": share.id,
        "name": share.name,
        "url": share.url,
        "site": share.site,
        "include": share.include or [],
        "exclude": share.exclude or [],
        "io_control": share.io_control,
        "max_proxies": IO_CONTROL_MAX_PROXIES.get(share.io_control),
        "snapshot": share.snapshot,
        "created": iso(share.created),
    }


def job_view(db: DbSession, job: Job) -> dict[str, Any]:
    shares = {s.id: s.name for s in db.scalars(select(Share).where(Share.id.in_(job.share_ids)))}
    proxies: Any = "auto"
    if job.proxy_ids:
        names = {p.id: p.name for p in db.scalars(select(Proxy).where(Proxy.id.in_(job.proxy_ids)))}
        proxies = [names.get(i, f"#{i}") for i in job.proxy_ids]
    last = db.scalar(
        select(Session).where(Session.job_id == job.id).order_by(Session.id.desc()).limit(1)
    )
    return {
        "id": job.id,
        "name": job.name,
        "shares": [shares.get(i, f"#{i}") for i in job.share_ids],
        "repository": job.repository.name,
        "schedule": job.schedule,
        "next_run": iso(job.next_run),
        "last_run": iso(job.last_run),
        "keep_last": job.keep_last,
        "keep_daily": job.keep_daily,
        "keep_weekly": job.keep_weekly,
        "keep_monthly": job.keep_monthly,
        "proxies": proxies,
        "priority": job.priority,
        "enabled": job.enabled,
        "created": iso(job.created),
        "last_session": {"id": last.id, "status": last.status, "created": iso(last.created)}
        if last
        else None,
    }


def task_view(task: Task, share_names: dict[int, str]) -> dict[str, Any]:
    stats = dict(task.stats or {})
    for key in STAT_KEYS:
        stats.setdefault(key, 0)
    if task.kind in ("backup", "assemble") and task.state in ("success", "warning"):
        stats.update(_ratios(stats))
    progress = dict(task.progress or {})
    for key in PROGRESS_KEYS:
        progress.setdefault(key, 0)
    # last line of defence: text from a filesystem may hold bytes JSON cannot carry
    progress, stats = json_safe(progress), json_safe(stats)
    return {
        "id": task.id,
        "kind": task.kind,
        "share": share_names.get(task.share_id) if task.share_id else None,
        "partition": json_safe(task.partition),
        "state": task.state,
        "proxy": task.proxy_name,
        "reason": task.reason,
        "passed_over": task.passed_over or [],
        "attempts": task.attempts,
        "created": iso(task.created),
        "started": iso(task.started),
        "ended": iso(task.ended),
        "progress": progress,
        "stats": stats,
        "warnings": json_safe(task.warnings or []),
        "error": json_safe(task.error),
    }


def _ratios(stats: dict[str, Any]) -> dict[str, float | None]:
    """Dedup ratio (read / new) and compression ratio (new / transferred) of a backup."""
    read, new, sent = (
        float(stats.get(k) or 0) for k in ("bytes_read", "bytes_new", "bytes_transferred")
    )
    return {
        "dedup_ratio": round(read / new, 3) if new > 0 else None,
        "compression_ratio": round(new / sent, 3) if sent > 0 else None,
    }


# What a restore session was asked to do (its parameters minus secrets).
RESTORE_KEYS = ("point", "target", "paths", "overwrite", "in_place")


def session_view(db: DbSession, session: Session) -> dict[str, Any]:
    return session_views(db, [session])[0]


def session_views(db: DbSession, sessions: list[Session]) -> list[dict[str, Any]]:
    """Views of several sessions with a fixed number of queries (lists stay fast)."""
    ids = [s.id for s in sessions]
    tasks: dict[int, list[Task]] = {i: [] for i in ids}
    for task in db.scalars(select(Task).where(Task.session_id.in_(ids)).order_by(Task.id)):
        tasks[task.session_id].append(task)
    share_ids = {t.share_id for ts in tasks.values() for t in ts if t.share_id}
    names = {s.id: s.name for s in db.scalars(select(Share).where(Share.id.in_(share_ids)))}
    points: dict[int, list[int]] = {i: [] for i in ids}
    for point_id, session_id in db.execute(
        select(RestorePoint.id, RestorePoint.session_id)
        .where(RestorePoint.session_id.in_(ids))
        .order_by(RestorePoint.id)
    ):
        if session_id is not None:
            points[session_id].append(point_id)
    return [
        {
            "id": session.id,
            "kind": session.kind,
            "job": session.job_name,
            "trigger": session.trigger or "manual",
            "status": session.status,
            "reason": session.reason,
            "created": iso(session.created),
            "started": iso(session.started),
            "ended": iso(session.ended),
            "revision": session.revision,
            "restore_points": points[session.id],
            "tasks": [task_view(t, names) for t in tasks[session.id]],
            **(
                {key: (session.params or {}).get(key) for key in RESTORE_KEYS}
                if session.kind == "restore"
                else {}
            ),
        }
        for session in sessions
    ]


# Counters of running tasks summed into a session summary.
SUMMARY_KEYS = ("files_read", "bytes_read", "bytes_transferred", "rate")
# What lists of sessions leave out: short-lived helper sessions of other requests.
HIDDEN_KINDS = INTERNAL_KINDS


def session_summaries(db: DbSession, sessions: list[Session]) -> list[dict[str, Any]]:
    """Sessions without their tasks: status plus the summed progress of running tasks.

    ``eta_seconds`` is the longest estimate of a running task (None when none is known).
    """
    progress: dict[int, dict[str, Any]] = {
        s.id: {**dict.fromkeys(SUMMARY_KEYS, 0), "eta_seconds": None} for s in sessions
    }
    running = [s.id for s in sessions if s.status == "running"]
    if running:
        rows = db.execute(
            select(Task.session_id, Task.progress).where(
                Task.session_id.in_(running), Task.state == "running"
            )
        )
        for session_id, values in rows:
            total = progress[session_id]
            for key in SUMMARY_KEYS:
                value = (values or {}).get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    total[key] += value
            eta = (values or {}).get("eta_seconds")
            if isinstance(eta, int | float) and (total["eta_seconds"] or 0) < eta:
                total["eta_seconds"] = eta
    return [
        {
            "id": s.id,
            "kind": s.kind,
            "job": s.job_name,
            "status": s.status,
            "revision": s.revision,
            "created": iso(s.created),
            "started": iso(s.started),
            "ended": iso(s.ended),
            "progress": progress[s.id],
        }
        for s in sessions
    ]


def point_view(
    point: RestorePoint, repo_names: dict[int, str], session_kept: bool = True
) -> dict[str, Any]:
    """A restore point; ``session`` is None once history pruning removed its session."""
    return {
        "id": point.id,
        "share": point.share_name,
        "job": point.job_name,
        "session": point.session_id if session_kept else None,
        "repository": repo_names.get(point.repository_id),
        "time": iso(point.time),
        "files": point.files,
        "bytes": point.bytes,
        "point_id": point.point_id,
    }


def proxy_state(proxy: Proxy, busy: bool, offline_after: float, now: dt.datetime) -> str:
    """online, offline, disabled, or draining (disabled, online and still running tasks)."""
    age = (now - proxy.last_heartbeat).total_seconds() if proxy.last_heartbeat else None
    online = age is not None and age <= offline_after
    if not proxy.enabled:
        return "draining" if busy and online else "disabled"
    return "online" if online else "offline"


def target_names(db: DbSession) -> dict[tuple[str, int], str]:
    """``("share"|"repository", id) -> name``: what proxy views name tasks and probes by."""
    names = {("share", s.id): s.name for s in db.scalars(select(Share))}
    names.update({("repository", r.id): r.name for r in db.scalars(select(Repository))})
    return names


def proxy_views(
    db: DbSession, proxies: Iterable[Proxy], offline_after: float
) -> list[dict[str, Any]]:
    """`proxy_view` of several proxies, reading the share and repository names once."""
    names = target_names(db)
    return [proxy_view(db, p, offline_after, names) for p in proxies]


def proxy_view(
    db: DbSession,
    proxy: Proxy,
    offline_after: float,
    names: dict[tuple[str, int], str] | None = None,
) -> dict[str, Any]:
    now = utcnow()
    running = db.execute(
        select(Task.id, Task.session_id, Task.share_id)
        .where(Task.proxy_id == proxy.id, Task.state.in_(ACTIVE_STATES))
        .order_by(Task.id)
    ).all()
    state = proxy_state(proxy, bool(running), offline_after, now)
    if names is None:
        names = target_names(db)
    tasks = [
        {
            "task": task_id,
            "session": session_id,
            "share": names.get(("share", share_id)) if share_id is not None else None,
        }
        for task_id, session_id, share_id in running
    ]
    probes = [
        {
            "kind": p.kind,
            "target": names.get((p.kind, p.target_id), f"#{p.target_id}"),
            "ok": p.ok,
            "rtt_ms": p.rtt_ms,
            "throughput": p.throughput,
            "error": p.error,
            "checked": iso(p.checked),
            "age_seconds": round((now - p.checked).total_seconds(), 1),
        }
        for p in db.scalars(select(Probe).where(Probe.proxy_id == proxy.id).order_by(Probe.id))
    ]
    return {
        "id": proxy.id,
        "name": proxy.name,
        "state": state,
        "embedded": proxy.embedded,
        "enabled": proxy.enabled,
        "version": proxy.version,
        "site": proxy.site,
        "slots": proxy.slots,
        "busy_slots": len(running),
        "running_tasks": tasks,
        "last_heartbeat": iso(proxy.last_heartbeat),
        "addresses": proxy.addresses or [],
        "capabilities": proxy.capabilities or {},
        "probes": probes,
        "created": iso(proxy.created),
    }
