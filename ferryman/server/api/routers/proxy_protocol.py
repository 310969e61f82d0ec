"""`/proxy/v1`: the proxy protocol over mutual TLS. The proxy is identified by its certificate."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from ferryman.proxy.protocol import (
    Heartbeat,
    HeartbeatReply,
    PollReply,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)
from ferryman.server.api.deps import get_ctx
from ferryman.server.api.routers.proxies import ctx_gateway
from ferryman.server.ca import serial_of_der
from ferryman.server.context import ServerContext
from ferryman.server.gateway import ProxyGone

router = APIRouter(prefix="/proxy/v1", tags=["proxy protocol"])


def peer_certificate(request: Request) -> bytes | None:
    """The client certificate of this connection (DER), set by `tls.PeerCertH11Protocol`."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) else None


def current_proxy(request: Request, ctx: ServerContext = Depends(get_ctx)) -> int:
    der = peer_certificate(request)
    if der is None:
        raise HTTPException(401, "a proxy client certificate is required (mutual TLS)")
    try:
        return int(ctx_gateway(ctx).proxy_for_serial(serial_of_der(der)))
    except ProxyGone as exc:
        raise HTTPException(403, str(exc)) from exc


@router.post("/heartbeat")
def heartbeat(
    beat: Heartbeat, proxy_id: int = Depends(current_proxy), ctx: ServerContext = Depends(get_ctx)
) -> HeartbeatReply:
    try:
        return ctx_gateway(ctx).heartbeat(proxy_id, beat)  # type: ignore[no-any-return]
    except ProxyGone as exc:
        raise HTTPException(403, str(exc)) from exc


@router.post("/poll")
def poll(
    timeout: float = 20.0,
    proxy_id: int = Depends(current_proxy),
    ctx: ServerContext = Depends(get_ctx),
) -> PollReply:
    try:
        return ctx_gateway(ctx).poll(proxy_id, timeout)  # type: ignore[no-any-return]
    except ProxyGone as exc:
        raise HTTPException(403, str(exc)) from exc


@router.post("/tasks/{task_id}/progress")
def progress(
    task_id: int,
    update: TaskProgress,
    proxy_id: int = Depends(current_proxy),
    ctx: ServerContext = Depends(get_ctx),
) -> dict[str, bool]:
    if update.task_id != task_id:
        raise HTTPException(422, "task_id in the body does not match the URL")
    try:
        ctx_gateway(ctx).progress(proxy_id, update)
    except TaskReassigned as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"keep": True}


@router.post("/tasks/{task_id}/result")
def result(
    task_id: int,
    body: TaskResult,
    proxy_id: int = Depends(current_proxy),
    ctx: ServerContext = Depends(get_ctx),
) -> dict[str, bool]:
    if body.task_id != task_id:
        raise HTTPException(422, "task_id in the body does not match the URL")
    try:
        ctx_gateway(ctx).result(proxy_id, body)
    except TaskReassigned as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"ok": True}
