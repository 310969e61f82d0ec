"""Shares: registered sources with site, include/exclude masks and I/O control."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select

from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.views import share_view
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Share
from ferryman.server.roles import Role

router = APIRouter(prefix="/shares", tags=["shares"])


class ShareIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    url: str
    site: str | None = Field(default=None, max_length=200)
    include: list[str] = []
    exclude: list[str] = []
    io_control: Literal["lower", "below-normal", "normal", "above-normal", "faster", "adaptive"] = (
        "normal"
    )
    # an smb:// share's password: stored encrypted, handed to proxies with tasks, never returned
    password: str | None = Field(default=None, repr=False, max_length=1024)
    # an s3:// share's keys (else the proxy's AWS environment): stored like the password
    access_key: str | None = Field(default=None, repr=False, max_length=1024)
    secret_key: str | None = Field(default=None, repr=False, max_length=1024)
    # snapshot provider of a local share: btrfs[:DIR] | nas-dir:GLOB | command (+ create/delete)
    snapshot: str | None = Field(default=None, max_length=1000)
    snapshot_create: str | None = Field(default=None, max_length=4000)
    snapshot_delete: str | None = Field(default=None, max_length=4000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return inputs.share_url(value)

    @model_validator(mode="after")
    def _password(self) -> ShareIn:
        smb = self.url.startswith("smb://")
        if smb and self.password is None:
            raise ValueError("an smb:// share needs a password (CLI: --password-env VAR)")
        if not smb and self.password is not None:
            raise ValueError("a password only applies to smb:// shares")
        return self

    @model_validator(mode="after")
    def _s3_keys_and_snapshot(self) -> ShareIn:
        s3 = self.url.startswith("s3://")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both the access key and the secret key, or neither")
        if not s3 and self.access_key is not None:
            raise ValueError("access and secret keys only apply to s3:// shares")
        snapshot_config(self)  # raises ValueError with a message fit for a user
        if self.snapshot and "://" in self.url:
            raise ValueError("snapshot providers apply to local or mounted paths only")
        return self

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        if any(not g.strip() for g in value):
            raise ValueError("empty glob pattern")
        return [inputs.printable(g, "glob pattern") for g in value]

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        return None if value is None else inputs.printable(value, "site")


def snapshot_config(body: ShareIn) -> dict[str, Any] | None:
    """The stored snapshot configuration of a share from its input."""
    from ferryman.sources.snapshots import parse_snapshot

    return parse_snapshot(body.snapshot, body.snapshot_create, body.snapshot_delete)


_NOT_COLUMNS = {"password", "access_key", "secret_key", "snapshot_create", "snapshot_delete"}


@router.post("", status_code=201)
def add_share(
    body: ShareIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    with ctx.db.session() as db:
        if db.scalar(select(Share).where(Share.name == body.name)):
            raise HTTPException(409, f"a share named '{body.name}' already exists")
        share = Share(**body.model_dump(exclude=_NOT_COLUMNS | {"snapshot"}))
        share.snapshot = snapshot_config(body)
        db.add(share)
        db.flush()
        if body.password is not None:
            share.credentials_secret = ctx.secrets.encrypt(
                json.dumps({"password": body.password}), f"share:{share.id}:credentials"
            )
        if body.access_key is not None:
            keys = {"access_key": body.access_key, "secret_key": body.secret_key}
            share.credentials_secret = ctx.secrets.encrypt(
                json.dumps(keys), f"share:{share.id}:credentials"
            )
        view = share_view(share)
    ctx.signals.wake_all_proxies()  # probe the new share right away
    return view


@router.get("")
def list_shares(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        return [share_view(s) for s in db.scalars(select(Share).order_by(Share.id))]


@router.get("/{ref}")
def show_share(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    with ctx.db.session() as db:
        return share_view(lookup(db, Share, ref, "share"))


@router.delete("/{ref}", status_code=204)
def remove_share(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        share = lookup(db, Share, ref, "share")
        users = [j.name for j in db.scalars(select(Job)) if share.id in (j.share_ids or [])]
        if users:
            raise HTTPException(409, f"share '{share.name}' is used by job(s): {', '.join(users)}")
        db.delete(share)
    return Response(status_code=204)
