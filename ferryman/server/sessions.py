"""Sessions and their tasks: creating them, finishing them, computing the final status."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.db.models import Job, Repository, RestorePoint, Session, Share, Task, utcnow
from ferryman.server.partitions import plan_partitions

FINAL_STATES = ("success", "warning", "failed", "stopped")
ACTIVE_STATES = ("assigned", "running")
# hidden sessions: a look into a restore point (browse, attach); no report, no metrics
INTERNAL_KINDS = ("browse", "attach")
# tasks that report the repository's stored size when they end (docs/api.md, Sessions)
SIZED_KINDS = ("backup", "assemble", "maintenance")
NEW_TASK_REASON = "waiting for placement"

log = logging.getLogger("ferryman.server.sessions")


class SessionConflict(Exception):
    """The job already has a running session."""


def touch(session: Session) -> None:
    """Bump the revision that followers long-poll on."""
    session.revision = (session.revision or 0) + 1


def running_session_of(db: DbSession, job: Job) -> Session | None:
    return db.scalar(
        select(Session).where(Session.job_id == job.id, Session.status == "running").limit(1)
    )


def start_backup_session(
    db: DbSession, job: Job, max_partitions: int, thresholds: tuple[int, int]
) -> Session:
    if running_session_of(db, job) is not None:
        raise SessionConflict(f"job '{job.name}' is already running")
    session = Session(
        kind="backup",
        job_id=job.id,
        job_name=job.name,
        repository_id=job.repository_id,
        status="running",
        priority=job.priority,
        started=utcnow(),
    )
    db.add(session)
    db.flush()
    for share_id in job.share_ids:
        share = db.get(Share, share_id)
        if share is None:
            continue
        partitions = plan_partitions(share.last_stats, max_partitions, *thresholds)
        if len(partitions) <= 1:
            _add_task(db, session, "backup", share, job.repository_id)
        else:
            for index, paths in enumerate(partitions):
                part: dict[str, Any] = {"index": index, "count": len(partitions), "paths": paths}
                if index == 0:
                    # top-level entries that appeared since the last run land in partition 0
                    part["rest_except"] = sorted(n for p in partitions[1:] for n in p)
                _add_task(db, session, "backup", share, job.repository_id, partition=part)
    touch(session)
    return session


def start_single_task_session(
    db: DbSession,
    kind: str,
    repository: Repository,
    params: dict[str, Any],
    share: Share | None = None,
    job_name: str | None = None,
    priority: int = 50,
) -> Session:
    """A restore, check, browse or attach session: one task."""
    session = Session(
        kind=kind,
        job_name=job_name,
        repository_id=repository.id,
        status="running",
        priority=priority,
        params={k: v for k, v in params.items() if k != "passphrase"},
        started=utcnow(),
    )
    db.add(session)
    db.flush()
    _add_task(db, session, kind, share, repository.id, params=params)
    touch(session)
    return session


def start_restore_session(
    db: DbSession,
    repository: Repository,
    share: Share | None,
    params: dict[str, Any],
    job_name: str | None,
    max_partitions: int,
    thresholds: tuple[int, int],
) -> Session:
    """A restore session; a whole-share restore of a large share is split like its backup."""
    session = start_single_task_session(
        db, "restore", repository, params, share=share, job_name=job_name, priority=80
    )
    if params.get("paths") or share is None:
        return session
    partitions = plan_partitions(share.last_stats, max_partitions, *thresholds)
    if len(partitions) <= 1:
        return session
    first = session.tasks[0]
    for index, names in enumerate(partitions):
        part: dict[str, Any] = {"index": index, "count": len(partitions), "paths": names}
        if index == 0:
            part["rest_except"] = sorted(n for p in partitions[1:] for n in p)
            first.partition = part
        else:
            _add_task(db, session, "restore", share, repository.id, partition=part, params=params)
    db.flush()
    db.refresh(session)
    return session


def _add_task(
    db: DbSession,
    session: Session,
    kind: str,
    share: Share | None,
    repository_id: int | None,
    partition: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Task:
    task = Task(
        session_id=session.id,
        kind=kind,
        share_id=share.id if share else None,
        repository_id=repository_id,
        partition=partition,
        params=params or {},
        priority=session.priority,
        state="waiting",
        reason=NEW_TASK_REASON,
    )
    db.add(task)
    db.flush()
    return task


def requeue(task: Task, reason: str) -> None:
    """Put a task back in the queue (lease expired, proxy gone, interrupted)."""
    task.state = "waiting"
    task.proxy_id = None
    task.lease_expires = None
    task.attempt_started = None
    task.queued = utcnow()
    task.reason = reason


def on_task_finished(db: DbSession, task: Task) -> None:
    """Record what a finished task produced and finish its session when every task has ended."""
    session = task.session
    output = task.output or {}
    if task.state in ("success", "warning") and output.get("point_id"):
        _record_point(db, session, task, output)
    if session.kind == "backup" and task.kind == "backup" and task.partition:
        _maybe_assemble(db, session, task)
    if task.kind == "maintenance":
        from ferryman.server.retention import on_maintenance_finished

        on_maintenance_finished(db, task)
    if (
        task.kind in ("backup", "assemble")
        and task.state in ("success", "warning")
        and output.get("share_stats")
    ):
        share = db.get(Share, task.share_id) if task.share_id else None
        if share is not None and not task.partition:
            share.last_stats = output["share_stats"]
    touch(session)
    finish_session_if_done(db, session)


def _record_point(db: DbSession, session: Session, task: Task, output: dict[str, Any]) -> None:
    share = db.get(Share, task.share_id) if task.share_id else None
    point = RestorePoint(
        point_id=str(output["point_id"]),
        repository_id=task.repository_id or session.repository_id or 0,
        share_id=task.share_id,
        share_name=share.name if share else output.get("share", "?"),
        job_id=session.job_id,
        job_name=session.job_name,
        session_id=session.id,
        time=_parse_time(output.get("time")) or utcnow(),
        files=int(output.get("files") or 0),
        bytes=int(output.get("bytes") or 0),
    )
    db.add(point)
    db.flush()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _maybe_assemble(db: DbSession, session: Session, task: Task) -> None:
    siblings = [
        t
        for t in session.tasks
        if t.kind == "backup" and t.share_id == task.share_id and t.partition
    ]
    if any(t.state not in ("success", "warning") for t in siblings):
        return
    if any(t.kind == "assemble" and t.share_id == task.share_id for t in session.tasks):
        return
    ordered = sorted(siblings, key=lambda t: (t.partition or {}).get("index", 0))
    results = [(t.output or {}).get("partial") for t in ordered]
    share = db.get(Share, task.share_id) if task.share_id else None
    assemble = _add_task(
        db, session, "assemble", share, task.repository_id, params={"results": results}
    )
    session.tasks.append(assemble)


def finish_session_if_done(db: DbSession, session: Session) -> None:
    if session.status != "running":
        return
    tasks = list(session.tasks)
    if any(t.state not in FINAL_STATES for t in tasks):
        return
    if session.kind == "backup" and not session.stop_requested:
        # partitions that finished in concurrent transactions may not have queued their
        # assemble task yet: do it now, before the session could end without a restore point
        for task in tasks:
            if task.kind == "backup" and task.partition:
                _maybe_assemble(db, session, task)
        if any(t.state not in FINAL_STATES for t in session.tasks):
            return
        if all(t.state in ("success", "warning") for t in session.tasks):
            from ferryman.server.retention import queue_maintenance

            if queue_maintenance(db, session) is not None:
                touch(session)
                return  # the session ends with its retention
        tasks = list(session.tasks)
    states = {t.state for t in tasks}
    # a failed retention does not undo the backup: the session ends with a warning
    retention = [t for t in tasks if t.kind == "maintenance" and session.kind == "backup"]
    failed = [t for t in tasks if t.state == "failed" and t not in retention]
    if failed:
        session.status = "failed"
        first = failed[0]
        session.reason = f"task {first.id} failed: {first.error or 'no reason given'}"
    elif "stopped" in states or session.stop_requested:
        session.status = "stopped"
        session.reason = session.reason or "stopped by request"
    elif any(t.state == "failed" for t in retention):
        session.status = "warning"
        session.reason = f"retention failed: {retention[0].error or 'no reason given'}"
    elif "warning" in states:
        session.status = "warning"
        count = sum(len(t.warnings or []) for t in tasks)
        session.reason = f"{count} item(s) could not be processed"
    else:
        session.status = "success"
    session.ended = utcnow()
    touch(session)
    log.info(
        "session %d (%s%s) ended %s%s",
        session.id,
        session.kind,
        f", job {session.job_name}" if session.job_name else "",
        session.status,
        f": {session.reason}" if session.reason else "",
        extra={"session": session.id, "job": session.job_name},
    )


def stop_session(db: DbSession, session: Session, reason: str = "stopped by request") -> None:
    """Waiting tasks stop now; running ones are cancelled through their proxy's next heartbeat."""
    if session.status != "running":
        return
    session.stop_requested = True
    session.reason = reason
    for task in session.tasks:
        if task.state == "waiting":
            task.state = "stopped"
            task.ended = utcnow()
            task.reason = reason
    touch(session)
    finish_session_if_done(db, session)


def fail_task(task: Task, error: str) -> None:
    task.state = "failed"
    task.error = error
    task.ended = utcnow()
    task.lease_expires = None
