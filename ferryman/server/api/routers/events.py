"""``GET /events``: server-sent events for the web console (sessions, proxies, one session).

The streams share one poller per server (``api/event_hub.py``): it checks the database about
once a second and builds each changed view once for every open stream. A stream holds no
database connection; it ends when the server stops, or within RECHECK_EVERY seconds of its
caller's sign-out, token revocation or removal.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from ferryman.server.api.deps import Caller, authenticate, get_ctx, require
from ferryman.server.api.event_hub import CHECK_EVERY, EventHub
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Session
from ferryman.server.roles import Role

router = APIRouter(tags=["events"])

KEEP_ALIVE_EVERY = 15.0
# How often a stream checks that its caller may still read (one light query a stream).
RECHECK_EVERY = 5.0


async def _stream(
    hub: EventHub, session_id: int | None, allowed: Callable[[], bool]
) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    last_sent = last_checked = time.monotonic()
    async with hub.subscribe(session_id) as subscription:
        while True:
            for text in subscription.pending():
                yield text
                last_sent = time.monotonic()
            if hub.closed:
                return
            if time.monotonic() - last_checked >= RECHECK_EVERY:
                if not await anyio.to_thread.run_sync(allowed):
                    return  # signed out, token revoked or user removed
                last_checked = time.monotonic()
            if time.monotonic() - last_sent >= KEEP_ALIVE_EVERY:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await subscription.wait(CHECK_EVERY * 2)


@router.get("/events")
async def events(
    request: Request,
    session: int | None = Query(default=None, ge=1, lt=2**62),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> StreamingResponse:
    """``text/event-stream`` of ``sessions``, ``proxies`` and (with ``?session=ID``)
    ``session`` events, each sent when it changed; a keep-alive comment every 15 s."""

    def known() -> bool:
        with ctx.db.session() as db:
            return db.get(Session, session) is not None

    def allowed() -> bool:
        try:
            authenticate(request, ctx)
        except HTTPException:
            return False
        return True

    if session is not None and not await anyio.to_thread.run_sync(known):
        raise HTTPException(404, f"unknown session {session}")
    hub: EventHub = request.app.state.event_hub
    return StreamingResponse(
        _stream(hub, session, allowed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
