"""Backup jobs: add, list, run, enable/disable, remove."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.errors import FieldError, field_lookup
from ferryman.server.api.views import job_view, session_view
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Proxy, Repository, Session, Share, utcnow
from ferryman.server.job_runs import JobGone, JobNotStarted, start_job
from ferryman.server.roles import Role
from ferryman.server.scheduler import next_fire, time_zone
from ferryman.server.sessions import running_session_of

router = APIRouter(prefix="/jobs", tags=["jobs"])


class JobIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    shares: list[str] = Field(min_length=1)
    repository: str = Field(min_length=1)
    schedule: str | None = None
    keep_last: int | None = Field(default=None, ge=1, le=100_000)
    keep_daily: int | None = Field(default=None, ge=1, le=100_000)
    keep_weekly: int | None = Field(default=None, ge=1, le=100_000)
    keep_monthly: int | None = Field(default=None, ge=1, le=100_000)
    proxies: str | list[str] = "auto"
    priority: int = Field(default=50, ge=0, le=100)
    enabled: bool = True

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return inputs.cron(value)


@router.post("", status_code=201)
def add_job(
    body: JobIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    with ctx.db.session() as db:
        if db.scalar(select(Job).where(Job.name == body.name)):
            raise FieldError(409, f"a job named '{body.name}' already exists", "name")
        share_ids = []
        for ref in body.shares:
            share = field_lookup(db, Share, ref, "share", "shares")
            if share.id not in share_ids:
                share_ids.append(share.id)
        repo = field_lookup(db, Repository, body.repository, "repository", "repository")
        proxy_ids = None
        if isinstance(body.proxies, list) or body.proxies != "auto":
            names = body.proxies if isinstance(body.proxies, list) else body.proxies.split(",")
            names = [n.strip() for n in names if n.strip()]
            if not names:
                raise FieldError(422, "proxies must be 'auto' or a list of proxy names", "proxies")
            proxy_ids = [field_lookup(db, Proxy, n, "proxy", "proxies").id for n in names]
        job = Job(
            name=body.name,
            repository_id=repo.id,
            share_ids=share_ids,
            schedule=body.schedule,
            keep_last=body.keep_last,
            keep_daily=body.keep_daily,
            keep_weekly=body.keep_weekly,
            keep_monthly=body.keep_monthly,
            proxy_ids=proxy_ids,
            priority=body.priority,
            enabled=body.enabled,
        )
        job.next_run = _next_run(ctx, job)
        db.add(job)
        db.flush()
        return job_view(db, job)


class JobChange(BaseModel):
    """`PATCH /jobs/{ref}`: only the fields given change; `null` clears a schedule or a rule."""

    schedule: str | None = None
    keep_last: int | None = Field(default=None, ge=1, le=100_000)
    keep_daily: int | None = Field(default=None, ge=1, le=100_000)
    keep_weekly: int | None = Field(default=None, ge=1, le=100_000)
    keep_monthly: int | None = Field(default=None, ge=1, le=100_000)
    priority: int | None = Field(default=None, ge=0, le=100)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return inputs.cron(value)


@router.patch("/{ref}")
def change_job(
    ref: str,
    body: JobChange,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """Change a job's schedule, keep rules or priority (a running session keeps its rules)."""
    given = body.model_fields_set
    with ctx.db.session() as db:
        job = lookup(db, Job, ref, "job")
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            if name in given:
                setattr(job, name, getattr(body, name))
        if "priority" in given:
            if body.priority is None:
                raise FieldError(422, "priority must be an integer from 0 to 100", "priority")
            job.priority = body.priority
        if "schedule" in given and body.schedule != job.schedule:
            job.schedule = body.schedule
            job.next_run = _next_run(ctx, job)
        return job_view(db, job)


@router.get("")
def list_jobs(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        return [job_view(db, j) for j in db.scalars(select(Job).order_by(Job.id))]


@router.get("/{ref}")
def show_job(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    with ctx.db.session() as db:
        return job_view(db, lookup(db, Job, ref, "job"))


def _start(ctx: ServerContext, job_ref: str) -> dict[str, Any]:
    with ctx.db.session() as db:
        job_id = lookup(db, Job, job_ref, "job").id
    try:
        session_id = start_job(ctx, job_id, trigger="manual")
    except JobGone as exc:
        raise HTTPException(404, str(exc)) from exc
    except JobNotStarted as exc:
        raise HTTPException(409, str(exc)) from exc
    with ctx.db.session() as db:
        return session_view(db, db.get_one(Session, session_id))


@router.post("/{ref}/run", status_code=201)
def run_job(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.operator))
) -> dict[str, Any]:
    return _start(ctx, ref)


def _next_run(ctx: ServerContext, job: Job) -> dt.datetime | None:
    """When the scheduler will start the job (runs missed while it was disabled are not run)."""
    if not job.enabled or not job.schedule:
        return None
    return next_fire(job.schedule, utcnow(), time_zone(ctx.config.timezone))


def _set_enabled(ctx: ServerContext, ref: str, enabled: bool) -> dict[str, Any]:
    with ctx.db.session() as db:
        job = lookup(db, Job, ref, "job")
        if job.enabled != enabled:
            job.enabled = enabled
            job.next_run = _next_run(ctx, job)
        return job_view(db, job)


@router.post("/{ref}/enable")
def enable_job(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.operator))
) -> dict[str, Any]:
    return _set_enabled(ctx, ref, True)


@router.post("/{ref}/disable")
def disable_job(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.operator))
) -> dict[str, Any]:
    return _set_enabled(ctx, ref, False)


@router.delete("/{ref}", status_code=204)
def remove_job(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        job = lookup(db, Job, ref, "job")
        running = running_session_of(db, job)
        if running is not None:
            raise HTTPException(409, f"job '{job.name}' is running (session {running.id})")
        db.delete(job)
    return Response(status_code=204)
