"""Request dependencies: the server context, authentication (bearer token or console cookie)
with roles, lookups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.context import ServerContext
from ferryman.server.roles import Role, allows
from ferryman.server.tokens import find_api_token
from ferryman.server.web_sessions import COOKIE, find_web_session

T = TypeVar("T")


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "x-ferryman-web"


@dataclass(frozen=True)
class Caller:
    """Who makes a request: an API token (bearer, or a console sign-in with it) or a user."""

    id: int
    name: str
    role: str
    via: Literal["token", "password"]


def authenticate(request: Request, ctx: ServerContext) -> Caller:
    """The caller of a request: ``Authorization: Bearer`` first, else the console cookie.

    With the cookie, a request that changes something must carry ``X-Ferryman-Web: 1``: a
    page of another site cannot set that header, so it cannot act with the cookie (CSRF).
    """
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)")
        with ctx.db.session() as db:
            row = find_api_token(db, token.strip())
        if row is None:
            raise HTTPException(401, "unknown or revoked API token")
        return Caller(row.id, row.name, row.role, "token")
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise HTTPException(
            401, "missing bearer token (Authorization: Bearer <token>) or console sign-in"
        )
    with ctx.db.session() as db:
        session = find_web_session(db, cookie)
        caller = (
            None
            if session is None
            else Caller(
                session.user_id or session.api_token_id or 0,
                session.name,
                session.role,
                "password" if session.user_id is not None else "token",
            )
        )
    if caller is None:
        raise HTTPException(401, "the console session has expired; sign in again")
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise HTTPException(403, "missing X-Ferryman-Web header")
    return caller


def require(role: Role) -> Callable[..., Caller]:
    def check(request: Request, ctx: ServerContext = Depends(get_ctx)) -> Caller:
        caller = authenticate(request, ctx)
        if not allows(Role.parse(caller.role), role):
            raise HTTPException(403, f"role '{caller.role}' may not do this (needs {role.label})")
        return caller

    return check


def lookup(db: DbSession, model: type[T], ref: str, what: str) -> T:
    """Find an object by id (digits) or by name; 404 with a clear message otherwise."""
    table: Any = model
    row: Any = None
    if ref.isdigit() and len(ref) <= 15:
        row = db.scalar(select(table).where(table.id == int(ref)))
    if row is None and hasattr(table, "name"):
        row = db.scalar(select(table).where(table.name == ref))
    if row is None:
        raise HTTPException(404, f"unknown {what} '{ref}'")
    return row  # type: ignore[no-any-return]
