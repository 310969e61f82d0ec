"""Health, CA certificate, identity and API tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

import ferryman
from ferryman.server.api.deps import Caller, get_ctx, require
from ferryman.server.api.views import iso
from ferryman.server.context import ServerContext
from ferryman.server.db.models import ApiToken
from ferryman.server.roles import Role
from ferryman.server.tokens import create_api_token

router = APIRouter(tags=["server"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": ferryman.__version__}


@router.get("/ca", response_class=Response)
def ca_certificate(ctx: ServerContext = Depends(get_ctx)) -> Response:
    return Response(ctx.ca.cert_pem, media_type="text/plain")


@router.get("/whoami")
def whoami(caller: Caller = Depends(require(Role.viewer))) -> dict[str, Any]:
    """Who the request is from; ``via``: token (bearer or token sign-in) or password."""
    return {"id": caller.id, "name": caller.name, "role": caller.role, "via": caller.via}


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: str = Field(max_length=40)


def _token_view(row: ApiToken) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "role": row.role, "created": iso(row.created)}


@router.post("/tokens", status_code=201)
def add_token(
    body: TokenIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    try:
        role = Role.parse(body.role)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    with ctx.db.session() as db:
        row, token = create_api_token(db, body.name, role)
        return {**_token_view(row), "token": token}


@router.get("/tokens")
def list_tokens(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.administrator))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        return [_token_view(t) for t in db.scalars(select(ApiToken).order_by(ApiToken.id))]


@router.delete("/tokens/{token_id}", status_code=204)
def remove_token(
    token_id: int,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        row = db.get(ApiToken, token_id) if 0 < token_id < 2**62 else None
        if row is None:
            raise HTTPException(404, f"unknown token {token_id}")
        db.delete(row)
    return Response(status_code=204)
