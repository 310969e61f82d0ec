"""Signed-in browsers of the web console: a random cookie, stored only as its SHA-256."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ferryman.server.db.models import ApiToken, User, WebSession, utcnow
from ferryman.server.tokens import digest

COOKIE = "ferryman_session"
# A session ends after this long without a request.
IDLE_TIMEOUT = dt.timedelta(hours=12)
# last_seen/expires are written at most this often (not on every request).
TOUCH_EVERY = dt.timedelta(seconds=60)


def open_web_session(
    db: Session, *, user: User | None = None, token: ApiToken | None = None
) -> str:
    """A new session for a user (password sign-in) or an API token; returns the cookie value."""
    who = user if user is not None else token
    assert who is not None
    now = utcnow()
    db.execute(delete(WebSession).where(WebSession.expires <= now))
    cookie = secrets.token_urlsafe(32)
    db.add(
        WebSession(
            token_hash=digest(cookie),
            user_id=user.id if user is not None else None,
            api_token_id=token.id if token is not None else None,
            name=who.name,
            role=who.role,
            created=now,
            expires=now + IDLE_TIMEOUT,
            last_seen=now,
        )
    )
    db.flush()
    return cookie


def find_web_session(db: Session, cookie: str) -> WebSession | None:
    """The live session of a cookie (its idle timer restarted); None if unknown or expired."""
    row = db.scalar(select(WebSession).where(WebSession.token_hash == digest(cookie)))
    if row is None:
        return None
    now = utcnow()
    if row.expires <= now:
        db.delete(row)
        return None
    if now - row.last_seen >= TOUCH_EVERY:
        row.last_seen = now
        row.expires = now + IDLE_TIMEOUT
    return row


def close_web_session(db: Session, cookie: str) -> None:
    db.execute(delete(WebSession).where(WebSession.token_hash == digest(cookie)))


def close_user_sessions(db: Session, user_id: int) -> None:
    """Sign a user out everywhere (after a password change)."""
    db.execute(delete(WebSession).where(WebSession.user_id == user_id))
