"""API bearer tokens and proxy join tokens: random secrets stored only as SHA-256 hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferryman.server.db.models import ApiToken, JoinToken, utcnow
from ferryman.server.roles import Role

JOIN_PREFIX = "fmj"


class JoinTokenError(Exception):
    """A join token is unknown, already used or expired."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(db: Session, name: str, role: Role) -> tuple[ApiToken, str]:
    token = "fma_" + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role.label, token_hash=digest(token))
    db.add(row)
    db.flush()
    return row, token


def find_api_token(db: Session, token: str) -> ApiToken | None:
    return db.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))


def parse_duration(value: str | int | float) -> dt.timedelta:
    """`3600`, `90s`, `30m`, `1h`, `2d` -> timedelta (positive, at most 365 days)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not match:
            raise ValueError(f"bad duration {value!r}; use e.g. 90s, 30m, 1h, 2d")
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        seconds = float(match.group(1)) * unit
    if not 0 < seconds <= 365 * 86400:
        raise ValueError("duration must be between 1 second and 365 days")
    return dt.timedelta(seconds=seconds)


def create_join_token(db: Session, ttl: dt.timedelta, ca_fingerprint: str) -> tuple[str, JoinToken]:
    """A single-use token carrying the CA fingerprint, so the proxy can authenticate the server."""
    secret = secrets.token_urlsafe(24).replace("_", "x").replace("-", "y")
    row = JoinToken(token_hash=digest(secret), expires=utcnow() + ttl)
    db.add(row)
    db.flush()
    return f"{JOIN_PREFIX}_{secret}_{ca_fingerprint}", row


def split_join_token(token: str) -> tuple[str, str | None]:
    """(secret, CA fingerprint or None)."""
    parts = token.strip().split("_")
    if len(parts) == 3 and parts[0] == JOIN_PREFIX:
        return parts[1], parts[2]
    return token.strip(), None


def consume_join_token(db: Session, token: str, proxy_name: str) -> None:
    """Mark a join token used; raises JoinTokenError when it cannot be used."""
    secret, _ = split_join_token(token)
    row = db.scalar(
        select(JoinToken).where(JoinToken.token_hash == digest(secret)).with_for_update()
    )
    if row is None:
        raise JoinTokenError("unknown join token")
    if row.used is not None:
        raise JoinTokenError("this join token was already used")
    if row.expires <= utcnow():
        raise JoinTokenError("this join token has expired")
    row.used = utcnow()
    row.used_by = proxy_name
