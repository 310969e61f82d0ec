"""The live events of the web console: one poller per server process checks the database
about once a second, builds the views that changed once, and hands them to every open
``GET /events`` stream, so the cost does not grow with the number of open consoles.

The poller starts with the first stream, idles (no queries) while no stream is open, and
stops when the server shuts down; streams then end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import ColumnElement, and_, or_, select

from ferryman.server.api.views import (
    HIDDEN_KINDS,
    proxy_state,
    proxy_views,
    session_summaries,
    session_view,
)
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Probe, Proxy, Session, Task, utcnow
from ferryman.server.sessions import ACTIVE_STATES

log = logging.getLogger("ferryman.server.api.events")

CHECK_EVERY = 1.0
RECENT = dt.timedelta(hours=24)

# A message's key: "sessions", "proxies", or ("session", id).
Key = str | tuple[str, int]


def recent_sessions(now: dt.datetime) -> ColumnElement[bool]:
    """Running sessions and those that ended in the last 24 h (helper sessions left out)."""
    return and_(
        Session.kind.not_in(HIDDEN_KINDS),
        or_(Session.status == "running", Session.ended >= now - RECENT),
    )


def message(event: str, data: Any) -> str:
    """One server-sent event, as sent on the wire."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class _Check:
    """What one poll found: the new fingerprints and the messages of what changed."""

    sessions: Any = None
    proxies: Any = None
    revisions: dict[int, int] = field(default_factory=dict)
    messages: dict[Key, str] = field(default_factory=dict)


class Subscription:
    """One stream's view of the hub: which version of each message it has sent."""

    def __init__(self, hub: EventHub, session_id: int | None) -> None:
        self.hub = hub
        self.session_id = session_id
        self.after_tick = hub.ticks  # only what a poll made after this stream opened
        self.sent: dict[Key, int] = {}

    def pending(self) -> list[str]:
        """The messages this stream has not sent yet (sessions, proxies, then its session)."""
        hub = self.hub
        if hub.ticks <= self.after_tick:
            return []
        keys: list[Key] = ["sessions", "proxies"]
        if self.session_id is not None:
            keys.append(("session", self.session_id))
        out = []
        for key in keys:
            found = hub.messages.get(key)
            if found is not None and self.sent.get(key) != found[0]:
                self.sent[key] = found[0]
                out.append(found[1])
        return out

    async def wait(self, timeout: float) -> None:
        """Until the next poll (or ``timeout`` seconds, or the hub's end)."""
        if self.hub.closed:
            return
        with anyio.move_on_after(timeout):
            await self.hub.polled.wait()


class EventHub:
    """The shared poller and the latest message of each kind (one per server process)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.ticks = 0
        self.closed = False
        self.messages: dict[Key, tuple[int, str]] = {}
        self._version = 0
        self._sessions: Any = None
        self._proxies: Any = None
        self._revisions: dict[int, int] = {}
        self._watched: Counter[int] = Counter()
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.polled = anyio.Event()
        self._wake = anyio.Event()

    @asynccontextmanager
    async def subscribe(self, session_id: int | None) -> AsyncIterator[Subscription]:
        """Register a stream (the poller starts if needed and polls at once)."""
        self._start()
        self._subscribers += 1
        if session_id is not None:
            self._watched[session_id] += 1
        self._wake.set()
        try:
            yield Subscription(self, session_id)
        finally:
            self._subscribers -= 1
            if session_id is not None:
                self._watched[session_id] -= 1
                if self._watched[session_id] <= 0:
                    del self._watched[session_id]
                    self._revisions.pop(session_id, None)
                    self.messages.pop(("session", session_id), None)

    async def close(self) -> None:
        """Stop the poller; open streams end."""
        self._finish()
        task, self._task = self._task, None
        if task is not None and not task.done() and self._loop is asyncio.get_running_loop():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.closed or (self._task is not None and self._loop is loop):
            return
        # first stream (or a new event loop, as in tests): fresh events bound to this loop
        self._loop = loop
        self.polled = anyio.Event()
        self._wake = anyio.Event()
        self._task = loop.create_task(self._run(), name="ferryman-event-hub")

    def _finish(self) -> None:
        self.closed = True
        self.polled.set()

    async def _run(self) -> None:
        try:
            while not self.ctx.shutting_down.is_set():
                if self._subscribers > 0:
                    self._wake = anyio.Event()
                    await self._poll()
                with anyio.move_on_after(CHECK_EVERY):
                    await self._wake.wait()
        finally:
            self._finish()

    async def _poll(self) -> None:
        watched = {sid: self._revisions.get(sid) for sid in self._watched}
        try:
            found = await anyio.to_thread.run_sync(self._check, watched)
        except Exception as exc:  # a database hiccup: streams stay open, the next poll retries
            log.warning("live events: checking for changes failed: %s", exc)
            return
        self._sessions, self._proxies = found.sessions, found.proxies
        for sid, revision in found.revisions.items():
            if sid in self._watched:
                self._revisions[sid] = revision
        for key, text in found.messages.items():
            if isinstance(key, tuple) and key[1] not in self._watched:
                continue  # its last stream closed while the poll ran
            self._version += 1
            self.messages[key] = (self._version, text)
        self.ticks += 1
        polled, self.polled = self.polled, anyio.Event()
        polled.set()

    def _check(self, watched: dict[int, int | None]) -> _Check:
        """Runs in a worker thread: a few light queries, full views only for what changed."""
        found = _Check(sessions=self._sessions, proxies=self._proxies)
        now = utcnow()
        with self.ctx.db.session() as db:
            rows = db.execute(
                select(Session.id, Session.revision, Session.status)
                .where(recent_sessions(now))
                .order_by(Session.id)
            )
            sessions = tuple((r[0], r[1], r[2]) for r in rows)
            if sessions != self._sessions:
                found.sessions = sessions
                listed = list(
                    db.scalars(
                        select(Session).where(recent_sessions(now)).order_by(Session.id.desc())
                    )
                )
                found.messages["sessions"] = message("sessions", session_summaries(db, listed))
            proxies = self._proxy_fingerprint(db, now)
            if proxies != self._proxies:
                found.proxies = proxies
                offline_after = self.ctx.config.offline_after
                listed_proxies = db.scalars(select(Proxy).order_by(Proxy.id))
                views = proxy_views(db, listed_proxies, offline_after)
                found.messages["proxies"] = message("proxies", views)
            if watched:
                for sid, revision in db.execute(
                    select(Session.id, Session.revision).where(Session.id.in_(list(watched)))
                ):
                    session = db.get(Session, sid) if revision != watched[sid] else None
                    if session is not None:  # None: unchanged, or pruned since the query
                        found.revisions[sid] = revision
                        found.messages[("session", sid)] = message(
                            "session", session_view(db, session)
                        )
        return found

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
