"""Shares: registered sources with site, include/exclude masks and I/O control."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.errors import FieldError
from ferryman.server.api.views import proxy_state, share_view
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Probe, Proxy, Share, utcnow
from ferryman.server.roles import Role

router = APIRouter(prefix="/shares", tags=["shares"])


IoControl = Literal["lower", "below-normal", "normal", "above-normal", "faster", "adaptive"]


def _globs(value: list[str]) -> list[str]:
    if any(not g.strip() for g in value):
        raise ValueError("empty glob pattern")
    return [inputs.printable(g, "glob pattern") for g in value]


class ShareIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    url: str
    site: str | None = Field(default=None, max_length=200)
    include: list[str] = []
    exclude: list[str] = []
    io_control: IoControl = "normal"
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
        return _globs(value)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        return None if value is None else inputs.printable(value, "site")


def snapshot_config(body: ShareIn | ShareChange) -> dict[str, Any] | None:
    """The stored snapshot configuration of a share from its input."""
    from ferryman.sources.snapshots import parse_snapshot

    return parse_snapshot(body.snapshot, body.snapshot_create, body.snapshot_delete)


_NOT_COLUMNS = {"password", "access_key", "secret_key", "snapshot_create", "snapshot_delete"}


@router.post("", status_code=201)
def add_share(
    body: ShareIn,
    probe: float = Query(default=0, ge=0, le=60),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """Register a share. With ``?probe=SECONDS``, wait that long for the online proxies to
    try it: when every one of them fails, the share is not kept (422 on ``url``)."""
    with ctx.db.session() as db:
        if db.scalar(select(Share).where(Share.name == body.name)):
            raise FieldError(409, f"a share named '{body.name}' already exists", "name")
        share = Share(**body.model_dump(exclude=_NOT_COLUMNS | {"snapshot"}))
        share.snapshot = snapshot_config(body)
        db.add(share)
        db.flush()
        if body.password is not None:
            store_credentials(ctx, share, {"password": body.password})
        if body.access_key is not None and body.secret_key is not None:
            keys = {"access_key": body.access_key, "secret_key": body.secret_key}
            store_credentials(ctx, share, keys)
        view = share_view(share)
    ctx.signals.wake_all_proxies()  # probe the new share right away
    if probe > 0:
        error = unreachable_everywhere(ctx, view["id"], probe)
        if error is not None:
            with ctx.db.session() as db:
                db.execute(delete(Share).where(Share.id == view["id"]))
                forget_probes(db, view["id"])
            raise FieldError(422, f"no proxy can reach {body.url}: {error}", "url")
    return view


def unreachable_everywhere(ctx: ServerContext, share_id: int, seconds: float) -> str | None:
    """The error of a share that no online proxy reaches, once each has probed it; None
    when one reaches it, no proxy is online, or the answers do not come in time."""
    deadline = time.monotonic() + seconds
    while True:
        with ctx.db.session() as db:
            now = utcnow()
            online = [
                p.id
                for p in db.scalars(select(Proxy).where(Proxy.enabled))
                if proxy_state(p, False, ctx.config.offline_after, now) == "online"
            ]
            probes = {
                p.proxy_id: p
                for p in db.scalars(
                    select(Probe).where(Probe.kind == "share", Probe.target_id == share_id)
                )
            }
        if not online or any(p.ok for p in probes.values()):
            return None
        if all(proxy_id in probes for proxy_id in online):
            return probes[online[0]].error or "unreachable"
        if time.monotonic() >= deadline:
            return None
        ctx.signals.wake_all_proxies()
        time.sleep(0.2)


def store_credentials(ctx: ServerContext, share: Share, credentials: dict[str, str]) -> None:
    """Keep a share's password or keys encrypted (handed to proxies with its tasks)."""
    share.credentials_secret = ctx.secrets.encrypt(
        json.dumps(credentials), f"share:{share.id}:credentials"
    )


def forget_probes(db: DbSession, share_id: int) -> None:
    db.execute(delete(Probe).where(Probe.kind == "share", Probe.target_id == share_id))


class ShareChange(BaseModel):
    """`PATCH /shares/{ref}`: only the fields given change; name and url stay."""

    name: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=4096)
    site: str | None = Field(default=None, max_length=200)
    include: list[str] | None = None
    exclude: list[str] | None = None
    io_control: IoControl | None = None
    password: str | None = Field(default=None, repr=False, max_length=1024)
    access_key: str | None = Field(default=None, repr=False, max_length=1024)
    secret_key: str | None = Field(default=None, repr=False, max_length=1024)
    snapshot: str | None = Field(default=None, max_length=1000)
    snapshot_create: str | None = Field(default=None, max_length=4000)
    snapshot_delete: str | None = Field(default=None, max_length=4000)

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _globs(value)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        return None if value is None else inputs.printable(value, "site")


@router.patch("/{ref}")
def change_share(
    ref: str,
    body: ShareChange,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """Change a share's site, masks, I/O control, credentials or snapshot provider."""
    given = body.model_fields_set
    with ctx.db.session() as db:
        share = lookup(db, Share, ref, "share")
        if body.name is not None and body.name != share.name:
            raise FieldError(422, "a share's name cannot be changed; add a new share", "name")
        if body.url is not None and body.url != share.url:
            raise FieldError(422, "a share's url cannot be changed; add a new share", "url")
        if "site" in given:
            share.site = body.site or None
        for name in ("include", "exclude"):
            if name in given:
                setattr(share, name, getattr(body, name) or [])
        if "io_control" in given:
            if body.io_control is None:
                raise FieldError(422, "io_control cannot be empty", "io_control")
            share.io_control = body.io_control
        if given & {"snapshot", "snapshot_create", "snapshot_delete"}:
            share.snapshot = _snapshot(share, body)
        credentials = _credentials(share, body, given)
        if credentials is not None:
            store_credentials(ctx, share, credentials)
            forget_probes(db, share.id)  # made with the old credentials
        view = share_view(share)
    ctx.signals.wake_all_proxies()
    return view


def _snapshot(share: Share, body: ShareChange) -> dict[str, Any] | None:
    try:
        config = snapshot_config(body)
    except ValueError as exc:
        raise FieldError(422, str(exc), "snapshot") from exc
    if config and "://" in share.url:
        raise FieldError(422, "snapshot providers apply to local or mounted paths only", "snapshot")
    return config


def _credentials(share: Share, body: ShareChange, given: set[str]) -> dict[str, str] | None:
    """The new credentials of the share, None when the request leaves them alone."""
    if "password" in given:
        if not share.url.startswith("smb://"):
            raise FieldError(422, "a password only applies to smb:// shares", "password")
        if not body.password:
            raise FieldError(422, "an smb:// share needs a password", "password")
        return {"password": body.password}
    if given & {"access_key", "secret_key"}:
        if not share.url.startswith("s3://"):
            raise FieldError(422, "access and secret keys only apply to s3:// shares", "access_key")
        if not body.access_key or not body.secret_key:
            raise FieldError(422, "give both the access key and the secret key", "access_key")
        return {"access_key": body.access_key, "secret_key": body.secret_key}
    return None


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
