"""Proxy deployment over SSH: deploy, upgrade, uninstall (streamed step lines), the records.

The server performs the deployment itself (it owns the wheelhouse and the join tokens)
and streams one JSON object per line (`application/x-ndjson`) as each step ends; the
last line is `{"event": "done", ...}` or `{"event": "error", "message": ...}`.
SSH secrets in the request body are used for this call only: never logged or stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

import ferryman
from ferryman.server.api.deps import Caller, get_ctx, require
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy
from ferryman.server.deploy import DeployError, steps
from ferryman.server.deploy.target import Credentials, SshTarget
from ferryman.server.roles import Role

router = APIRouter(tags=["deployment"])

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class SshLogin(BaseModel):
    private_key: str | None = Field(default=None, max_length=64_000)
    passphrase: str | None = Field(default=None, max_length=4096)
    password: str | None = Field(default=None, max_length=4096)

    def credentials(self) -> Credentials:
        try:
            return Credentials(self.private_key, self.passphrase, self.password)
        except DeployError as exc:
            raise HTTPException(422, str(exc)) from exc


class DeployIn(SshLogin):
    target: str = Field(max_length=600)
    trust_host_key: bool = False
    name: str | None = Field(default=None, max_length=200)
    site: str | None = Field(default=None, max_length=200)
    slots: int | None = Field(default=None, ge=1, le=1024)
    sudo: bool = False
    force: bool = False
    install_dir: str | None = Field(default=None, max_length=1000)
    server_url: str | None = Field(default=None, max_length=600)


class UpgradeIn(SshLogin):
    force: bool = False
    drain_timeout: float = Field(default=steps.DRAIN_TIMEOUT, ge=0, le=24 * 3600)


def _stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        async for event in events:
            yield (json.dumps(event) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _check_name(name: str | None) -> None:
    if name is not None and not NAME.fullmatch(name):
        raise HTTPException(422, f"name: {name!r} must be letters, digits, '.', '_' or '-'")


def _check_dir(path: str | None) -> None:
    if path is not None and not re.fullmatch(r"(~|/)[A-Za-z0-9._/+-]*", path):
        raise HTTPException(422, "install_dir: an absolute path (or ~/...) of plain characters")


@router.post("/proxies/deploy")
async def deploy_proxy(
    body: DeployIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> StreamingResponse:
    try:
        target = SshTarget.parse(body.target)
    except DeployError as exc:
        raise HTTPException(422, f"target: {exc}") from exc
    _check_name(body.name)
    _check_dir(body.install_dir)
    request = steps.DeployRequest(
        target=target,
        credentials=body.credentials(),
        trust_host_key=body.trust_host_key,
        name=body.name,
        site=body.site,
        slots=body.slots,
        sudo=body.sudo,
        force=body.force,
        install_dir=body.install_dir,
        server_url=body.server_url,
    )
    return _stream(steps.deploy(ctx, request))


@router.post("/proxies/{name}/upgrade")
async def upgrade_proxy(
    name: str,
    body: UpgradeIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> StreamingResponse:
    _check_name(name)
    try:
        request = steps.upgrade_request(
            ctx, name, body.credentials(), body.force, body.drain_timeout
        )
    except DeployError as exc:
        raise HTTPException(404, str(exc)) from exc
    return _stream(steps.deploy(ctx, request))


@router.post("/proxies/{name}/uninstall")
async def uninstall_proxy(
    name: str,
    body: SshLogin,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> StreamingResponse:
    _check_name(name)
    credentials = body.credentials()
    if steps.records(ctx).get(name) is None:
        raise HTTPException(
            404,
            f"proxy {name!r} was not deployed by this server; nothing to uninstall "
            "(remove it without --uninstall)",
        )
    return _stream(steps.uninstall(ctx, name, credentials))


@router.get("/deployments")
def list_deployments(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    """Proxies this server deployed, where, and whether they run the server's version."""
    with ctx.db.session() as db:
        registered = set(db.scalars(select(Proxy.name)))
    return {
        "server_version": ferryman.__version__,
        "deployments": [
            {
                **asdict(r),
                "outdated": r.version != ferryman.__version__,
                # False once removed without --uninstall: the files may still be on the host
                "registered": r.name in registered,
            }
            for r in steps.records(ctx).all()
        ],
    }
