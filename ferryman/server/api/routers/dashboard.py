"""``GET /dashboard``: the console's first page in one request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import Select, func, select

from ferryman.server.api.deps import Caller, get_ctx, require
from ferryman.server.api.event_hub import recent_sessions
from ferryman.server.api.views import iso, proxy_state, session_summaries
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy, Repository, RestorePoint, Session, Task, utcnow
from ferryman.server.roles import Role
from ferryman.server.sessions import ACTIVE_STATES, SIZED_KINDS

router = APIRouter(tags=["dashboard"])

STATUSES = ("running", "success", "warning", "failed", "stopped")
ATTENTION_LIMIT = 50


@router.get("/dashboard")
def dashboard(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    """Sessions of the last 24 h by status, running sessions, proxy states and slots,
    repositories with their restore points, and failed or warning sessions."""
    now = utcnow()
    with ctx.db.session() as db:
        counts = dict.fromkeys(STATUSES, 0)
        by_status = select(Session.status, func.count()).where(recent_sessions(now))
        for status, count in db.execute(by_status.group_by(Session.status)):
            if status in counts:
                counts[status] = count
        running = list(
            db.scalars(
                select(Session)
                .where(recent_sessions(now), Session.status == "running")
                .order_by(Session.id.desc())
            )
        )
        return {
            "sessions_24h": counts,
            "running": session_summaries(db, running),
            "proxies": _proxies(ctx, db, now),
            "repositories": _repositories(db),
            "attention": _attention(db, now),
        }


def _proxies(ctx: ServerContext, db: Any, now: Any) -> dict[str, int]:
    busy: dict[int, int] = {}
    for proxy_id, count in db.execute(
        select(Task.proxy_id, func.count())
        .where(Task.state.in_(ACTIVE_STATES), Task.proxy_id.is_not(None))
        .group_by(Task.proxy_id)
    ):
        busy[proxy_id] = count
    out = {"online": 0, "offline": 0, "draining": 0, "disabled": 0, "slots_used": 0}
    out["slots_total"] = 0
    for proxy in db.scalars(select(Proxy)):
        used = busy.get(proxy.id, 0)
        state = proxy_state(proxy, used > 0, ctx.config.offline_after, now)
        out[state] += 1
        out["slots_used"] += used
        if state == "online":
            out["slots_total"] += proxy.slots
    return out


def _repositories(db: Any) -> list[dict[str, Any]]:
    points = {
        repo_id: (count, last)
        for repo_id, count, last in db.execute(
            select(RestorePoint.repository_id, func.count(), func.max(RestorePoint.time)).group_by(
                RestorePoint.repository_id
            )
        )
    }
    out = []
    for repo in db.scalars(select(Repository).order_by(Repository.id)):
        count, last = points.get(repo.id, (0, None))
        out.append(
            {
                "id": repo.id,
                "name": repo.name,
                "url": repo.url,
                "bytes_stored": _stored_bytes(db, repo.id),
                "points": count,
                "last_backup": iso(last),
            }
        )
    return out


SIZE_LOOKBACK = 50


def sized_tasks(repository_id: int) -> Select[tuple[Any]]:
    """The stats of a repository's latest finished sized tasks, newest first (read through
    the index ``ix_tasks_repository_ended``, not by scanning every finished task)."""
    return (
        select(Task.stats)
        .where(
            Task.repository_id == repository_id,
            Task.kind.in_(SIZED_KINDS),
            Task.state.in_(("success", "warning")),
            Task.ended.is_not(None),
        )
        .order_by(Task.ended.desc(), Task.id.desc())
        .limit(SIZE_LOOKBACK)
    )


def _stored_bytes(db: Any, repository_id: int) -> int | None:
    """``repository_bytes`` of the latest task that reported it (None before any did)."""
    for stats in db.scalars(sized_tasks(repository_id)):
        value = (stats or {}).get("repository_bytes")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _attention(db: Any, now: Any) -> list[dict[str, Any]]:
    sessions = list(
        db.scalars(
            select(Session)
            .where(recent_sessions(now), Session.status.in_(("failed", "warning")))
            .order_by(Session.ended.desc(), Session.id.desc())
            .limit(ATTENTION_LIMIT)
        )
    )
    warnings = dict.fromkeys((s.id for s in sessions), 0)
    for session_id, listed in db.execute(
        select(Task.session_id, Task.warnings).where(Task.session_id.in_(list(warnings)))
    ):
        warnings[session_id] += len(listed or [])
    return [
        {
            "session": s.id,
            "job": s.job_name,
            "kind": s.kind,
            "status": s.status,
            "ended": iso(s.ended),
            "warnings": warnings[s.id],
            "reason": s.reason,
        }
        for s in sessions
    ]
