"""``GET /events``: server-sent events for the web console (sessions, proxies, one session).

Each stream checks the database about once a second with a few light queries (session
revisions, proxy rows and counters) and builds the full views only when these changed.
No database connection is held between checks; the stream ends when the server stops.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, and_, or_, select

from ferryman.server.api.deps import Caller, get_ctx, require
from ferryman.server.api.views import (
    HIDDEN_KINDS,
    proxy_state,
    proxy_view,
    session_summaries,
    session_view,
)
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Probe, Proxy, Session, Task, utcnow
from ferryman.server.roles import Role
from ferryman.server.sessions import ACTIVE_STATES

router = APIRouter(tags=["events"])

CHECK_EVERY = 1.0
KEEP_ALIVE_EVERY = 15.0
RECENT = dt.timedelta(hours=24)


def recent_sessions(now: dt.datetime) -> ColumnElement[bool]:
    """Running sessions and those that ended in the last 24 h (helper sessions left out)."""
    return and_(
        Session.kind.not_in(HIDDEN_KINDS),
        or_(Session.status == "running", Session.ended >= now - RECENT),
    )


class Watcher:
    """What one stream last sent, and the checks that find what changed since."""

    def __init__(self, ctx: ServerContext, session_id: int | None) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.sessions: tuple[tuple[int, int, str], ...] | None = None
        self.proxies: tuple[Any, ...] | None = None
        self.revision: int | None = None

    def changes(self) -> list[tuple[str, Any]]:
        """The events to send now: ``(name, data)`` pairs (none when nothing changed)."""
        out: list[tuple[str, Any]] = []
        now = utcnow()
        with self.ctx.db.session() as db:
            rows = db.execute(
                select(Session.id, Session.revision, Session.status)
                .where(recent_sessions(now))
                .order_by(Session.id)
            )
            sessions = tuple((r[0], r[1], r[2]) for r in rows)
            if sessions != self.sessions:
                self.sessions = sessions
                found = list(db.scalars(select(Session).where(recent_sessions(now))))
                found.sort(key=lambda s: s.id, reverse=True)
                out.append(("sessions", session_summaries(db, found)))
            proxies = self._proxy_fingerprint(db, now)
            if proxies != self.proxies:
                self.proxies = proxies
                listed = db.scalars(select(Proxy).order_by(Proxy.id))
                offline_after = self.ctx.config.offline_after
                out.append(("proxies", [proxy_view(db, p, offline_after) for p in listed]))
            if self.session_id is not None:
                revision = db.scalar(select(Session.revision).where(Session.id == self.session_id))
                if revision is not None and revision != self.revision:
                    self.revision = revision
                    session = db.get_one(Session, self.session_id)
                    out.append(("session", session_view(db, session)))
        return out

    def _proxy_fingerprint(self, db: Any, now: dt.datetime) -> tuple[Any, ...]:
        """Everything a proxy view shows that can change, except the ages of things."""
        busy = {
            (task_id, proxy_id)
            for task_id, proxy_id in db.execute(
                select(Task.id, Task.proxy_id).where(Task.state.in_(ACTIVE_STATES))
            )
        }
        busy_proxies = {proxy_id for _, proxy_id in busy}
        offline_after = self.ctx.config.offline_after
        proxies = tuple(
            (
                p.id,
                p.name,
                p.enabled,
                p.site,
                p.slots,
                p.version,
                proxy_state(p, p.id in busy_proxies, offline_after, now),
            )
            for p in db.scalars(select(Proxy).order_by(Proxy.id))
        )
        probes = tuple(
            db.execute(
                select(Probe.id, Probe.ok, Probe.checked, Probe.error).order_by(Probe.id)
            ).all()
        )
        return proxies, tuple(sorted(busy, key=lambda x: (x[0], x[1] or 0))), probes


def _message(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(ctx: ServerContext, watcher: Watcher) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    last_sent = time.monotonic()
    while not ctx.shutting_down.is_set():
        for event, data in await anyio.to_thread.run_sync(watcher.changes):
            yield _message(event, data)
            last_sent = time.monotonic()
        if time.monotonic() - last_sent >= KEEP_ALIVE_EVERY:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(CHECK_EVERY)


@router.get("/events")
async def events(
    session: int | None = Query(default=None, ge=1, lt=2**62),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> StreamingResponse:
    """``text/event-stream`` of ``sessions``, ``proxies`` and (with ``?session=ID``)
    ``session`` events, each sent when it changed; a keep-alive comment every 15 s."""

    def known() -> bool:
        with ctx.db.session() as db:
            return db.get(Session, session) is not None

    if session is not None and not await anyio.to_thread.run_sync(known):
        raise HTTPException(404, f"unknown session {session}")
    return StreamingResponse(
        _stream(ctx, Watcher(ctx, session)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
