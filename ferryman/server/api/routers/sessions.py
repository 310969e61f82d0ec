"""Sessions: list, show, follow (long-poll), stop."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.views import HIDDEN_KINDS, session_view, session_views
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, RestorePoint, Session
from ferryman.server.roles import Role, allows
from ferryman.server.sessions import stop_session
from ferryman.server.throughput import session_samples

router = APIRouter(prefix="/sessions", tags=["sessions"])


def _get(db: DbSession, session_id: int) -> Session:
    session = db.get(Session, session_id) if 0 < session_id < 2**62 else None
    if session is None:
        raise HTTPException(404, f"unknown session {session_id}")
    return session


def _of_job(job: Job) -> ColumnElement[bool]:
    """The job's own sessions, and restores of its restore points."""
    points = select(RestorePoint.id).where(RestorePoint.job_id == job.id)
    restores = and_(
        Session.kind == "restore",
        or_(Session.params["point"].as_integer().in_(points), Session.job_name == job.name),
    )
    return or_(Session.job_id == job.id, restores)


@router.get("")
def list_sessions(
    job: str | None = None,
    kind: str | None = None,
    limit: int | None = Query(default=None, ge=1, le=10000),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        query = select(Session)
        if job is not None:
            query = query.where(_of_job(lookup(db, Job, job, "job")))
        if kind is not None:
            query = query.where(Session.kind == kind)
        else:
            query = query.where(Session.kind.not_in(HIDDEN_KINDS))
        query = query.order_by(Session.id.desc())
        if limit:
            query = query.limit(limit)
        sessions = list(db.scalars(query))
        return session_views(db, sessions[::-1])


@router.get("/{session_id}")
def show_session(
    session_id: int,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> dict[str, Any]:
    with ctx.db.session() as db:
        return session_view(db, _get(db, session_id))


@router.get("/{session_id}/follow")
def follow_session(
    session_id: int,
    revision: int = -1,
    timeout: float = Query(default=20.0, ge=0, le=60),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        seen = ctx.signals.session_generation()  # before reading: no change can slip past
        with ctx.db.session() as db:
            session = _get(db, session_id)
            if (
                session.revision > revision
                or session.status != "running"
                or time.monotonic() >= deadline
                or ctx.shutting_down.is_set()
            ):
                return session_view(db, session)
        ctx.signals.wait_session_change(
            min(0.5, max(0.01, deadline - time.monotonic())), since=seen
        )


@router.get("/{session_id}/throughput")
def throughput(
    session_id: int,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> dict[str, Any]:
    """Cumulative counters of each task over time (oldest first), for a throughput chart."""
    with ctx.db.session() as db:
        _get(db, session_id)
        return {"samples": session_samples(db, session_id)}


@router.post("/{session_id}/stop")
def stop(
    session_id: int,
    ctx: ServerContext = Depends(get_ctx),
    token: Caller = Depends(require(Role.restore_operator)),
) -> dict[str, Any]:
    with ctx.db.session() as db:
        session = _get(db, session_id)
        if session.kind != "restore" and not allows(Role.parse(token.role), Role.operator):
            raise HTTPException(403, f"role '{token.role}' may only stop restore sessions")
        stop_session(db, session, f"stopped by {token.name}")
        view = session_view(db, session)
    ctx.signals.dispatch.set()
    ctx.signals.wake_all_proxies()
    return view
