"""Request dependencies: the server context, bearer-token authentication with roles, lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.context import ServerContext
from ferryman.server.db.models import ApiToken
from ferryman.server.roles import Role, allows
from ferryman.server.tokens import find_api_token

T = TypeVar("T")


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def require(role: Role) -> Callable[..., ApiToken]:
    def check(request: Request, ctx: ServerContext = Depends(get_ctx)) -> ApiToken:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)")
        with ctx.db.session() as db:
            row = find_api_token(db, token.strip())
        if row is None:
            raise HTTPException(401, "unknown or revoked API token")
        if not allows(Role.parse(row.role), role):
            raise HTTPException(403, f"role '{row.role}' may not do this (needs {role.label})")
        return row

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
