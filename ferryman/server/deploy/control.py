"""The server-side half of a deployment: join tokens, drain, online checks (database only)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from ferryman.server import leases
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy, Task, utcnow
from ferryman.server.sessions import ACTIVE_STATES
from ferryman.server.tokens import create_join_token

JOIN_TOKEN_TTL = dt.timedelta(minutes=15)


def proxy_exists(ctx: ServerContext, name: str) -> bool:
    with ctx.db.session() as db:
        return db.scalar(select(Proxy.id).where(Proxy.name == name)) is not None


def new_join_token(ctx: ServerContext) -> str:
    with ctx.db.session() as db:
        token, _ = create_join_token(db, JOIN_TOKEN_TTL, ctx.ca.fingerprint)
        return token


def remove_proxy(ctx: ServerContext, name: str, reason: str) -> bool:
    """Delete the proxy row: revokes its certificate at once and requeues its tasks."""
    with ctx.db.session() as db:
        proxy = db.scalar(select(Proxy).where(Proxy.name == name))
        if proxy is None or proxy.embedded:
            return False
        leases.remove_proxy(db, proxy, reason)
    ctx.signals.dispatch.set()
    return True


def set_enabled(ctx: ServerContext, name: str, enabled: bool) -> bool | None:
    """Set the flag; returns the previous value (None when the proxy is unknown)."""
    with ctx.db.session() as db:
        proxy = db.scalar(select(Proxy).where(Proxy.name == name))
        if proxy is None:
            return None
        previous = proxy.enabled
        proxy.enabled = enabled
    ctx.signals.dispatch.set()
    return previous


def active_tasks(ctx: ServerContext, name: str) -> int:
    with ctx.db.session() as db:
        return int(
            db.scalar(
                select(func.count(Task.id))
                .join(Proxy, Proxy.id == Task.proxy_id)
                .where(Proxy.name == name, Task.state.in_(ACTIVE_STATES))
            )
            or 0
        )


def online_with(ctx: ServerContext, name: str, version: str, since: dt.datetime) -> str | None:
    """The proxy's version when it heartbeated since `since` with `version`; else None."""
    with ctx.db.session() as db:
        proxy = db.scalar(select(Proxy).where(Proxy.name == name))
        if proxy is None or proxy.last_heartbeat is None or proxy.last_heartbeat < since:
            return None
        age = (utcnow() - proxy.last_heartbeat).total_seconds()
        if age > ctx.config.offline_after or proxy.version != version:
            return None
        return proxy.version
