"""Proxy inventory and join: join tokens, join, list, enable/disable, remove (revokes at once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import select

from ferryman.proxy.protocol import JoinRequest, JoinResponse
from ferryman.server import leases
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.views import iso, proxy_view, proxy_views
from ferryman.server.ca import CertificateError
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy
from ferryman.server.gateway import NameTaken
from ferryman.server.roles import Role
from ferryman.server.tokens import JoinTokenError, create_join_token, parse_duration

router = APIRouter(prefix="/proxies", tags=["proxies"])


class JoinTokenIn(BaseModel):
    ttl: str | float = "1h"


@router.post("/join-tokens", status_code=201)
def new_join_token(
    body: JoinTokenIn | None = None,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    try:
        ttl = parse_duration(body.ttl if body else "1h")
    except ValueError as exc:
        raise HTTPException(422, f"ttl: {exc}") from exc
    with ctx.db.session() as db:
        token, row = create_join_token(db, ttl, ctx.ca.fingerprint)
        return {"token": token, "expires": iso(row.expires)}


@router.post("/join")
def join(request: JoinRequest, ctx: ServerContext = Depends(get_ctx)) -> JoinResponse:
    try:
        response: JoinResponse = ctx_gateway(ctx).join(request)
        return response
    except JoinTokenError as exc:
        raise HTTPException(401, str(exc)) from exc
    except NameTaken as exc:
        raise HTTPException(409, str(exc)) from exc
    except CertificateError as exc:
        raise HTTPException(400, str(exc)) from exc


def ctx_gateway(ctx: ServerContext):  # type: ignore[no-untyped-def]
    from ferryman.server.gateway import ProxyGateway

    gateway = getattr(ctx, "gateway", None)
    if gateway is None:
        gateway = ProxyGateway(ctx)
        ctx.gateway = gateway  # type: ignore[attr-defined]
    return gateway


@router.get("")
def list_proxies(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        proxies = db.scalars(select(Proxy).order_by(Proxy.id))
        return proxy_views(db, proxies, ctx.config.offline_after)


@router.get("/{ref}")
def show_proxy(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    with ctx.db.session() as db:
        return proxy_view(db, lookup(db, Proxy, ref, "proxy"), ctx.config.offline_after)


def _set_enabled(ctx: ServerContext, ref: str, enabled: bool) -> dict[str, Any]:
    with ctx.db.session() as db:
        proxy = lookup(db, Proxy, ref, "proxy")
        proxy.enabled = enabled
        db.flush()
        view = proxy_view(db, proxy, ctx.config.offline_after)
    ctx.signals.dispatch.set()
    return view


@router.post("/{ref}/enable")
def enable_proxy(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    return _set_enabled(ctx, ref, True)


@router.post("/{ref}/disable")
def disable_proxy(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    return _set_enabled(ctx, ref, False)


@router.post("/{ref}/drain")
def drain_proxy(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """No new tasks; running ones finish (state ``draining`` until then). Same as disable."""
    return _set_enabled(ctx, ref, False)


@router.delete("/{ref}", status_code=204)
def remove_proxy(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        proxy = lookup(db, Proxy, ref, "proxy")
        if proxy.embedded:
            raise HTTPException(
                409,
                "the embedded proxy cannot be removed; disable it or run with --no-embedded-proxy",
            )
        leases.remove_proxy(db, proxy, f"proxy '{proxy.name}' was removed; requeued")
    ctx.signals.dispatch.set()
    return Response(status_code=204)
