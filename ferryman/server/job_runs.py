"""Starting a job's backup session: one code path for `job run` and the scheduler."""

from __future__ import annotations

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job
from ferryman.server.retention import retention_params
from ferryman.server.sessions import SessionConflict, start_backup_session

TRIGGERS = ("manual", "schedule", "catch-up")


class JobNotStarted(Exception):
    """The job cannot start now; the message says why (the API answers 409)."""


class JobGone(JobNotStarted):
    """The job was removed."""


def start_job(ctx: ServerContext, job_id: int, trigger: str) -> int:
    """Start a backup session of a job; returns the session id.

    Raises ``JobNotStarted`` when the job is disabled or already running: a job
    never runs twice at once. The check and the insert are one step under the
    server's job-start lock, so `job run` and the scheduler cannot race.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    config = ctx.config
    with ctx.job_start_lock, ctx.db.session() as db:
        job = db.get(Job, job_id)
        if job is None:
            raise JobGone(f"job #{job_id} does not exist")
        if not job.enabled:
            raise JobNotStarted(f"job '{job.name}' is disabled; enable it to run it")
        try:
            session = start_backup_session(
                db,
                job,
                config.max_partitions,
                (config.partition_min_bytes, config.partition_min_files),
            )
        except SessionConflict as exc:
            raise JobNotStarted(str(exc)) from exc
        session.trigger = trigger
        retention = retention_params(job, config.timezone)
        if retention:
            # the rules in force when the session started are those it applies when it ends
            session.params = {**(session.params or {}), "retention": retention}
        session_id = session.id
    ctx.signals.dispatch.set()
    return session_id
