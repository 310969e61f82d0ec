"""Notification targets: where session reports go (webhook, e-mail); add, list, test, remove."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.errors import FieldError
from ferryman.server.api.views import iso
from ferryman.server.context import ServerContext
from ferryman.server.db.models import NotificationDelivery, NotificationTarget
from ferryman.server.notifications.notifier import (
    STATUSES,
    Notifier,
    RetryPolicy,
    secret_purpose,
)
from ferryman.server.notifications.senders import DEFAULT_PORTS, redacted
from ferryman.server.roles import Role, allows

router = APIRouter(prefix="/notifications", tags=["notifications"])
TEST_TIMEOUT = 15.0


class NotificationIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    kind: Literal["webhook", "email"]
    on: list[str] = Field(default_factory=lambda: ["all"], max_length=10, validate_default=True)
    # webhook
    url: str | None = Field(default=None, max_length=2000)
    secret: str | None = Field(default=None, repr=False, max_length=1024)
    # e-mail
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, repr=False, max_length=1024)
    sender: str | None = Field(default=None, max_length=255)
    to: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("on")
    @classmethod
    def _on(cls, value: list[str]) -> list[str]:
        wanted = {v.strip().lower() for v in value if v.strip()}
        if not wanted or "all" in wanted:
            return list(STATUSES)
        unknown = sorted(wanted - set(STATUSES))
        if unknown:
            choices = ", ".join((*STATUSES, "all"))
            raise ValueError(f"unknown status {', '.join(unknown)}; choose from {choices}")
        return [s for s in STATUSES if s in wanted]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        inputs.printable(value, "webhook URL")
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) < 1:
            raise ValueError(f"the webhook URL must start with http:// or https://, got {value!r}")
        return value

    @field_validator("host", "user", "sender")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else inputs.printable(value.strip(), "value")

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            inputs.printable(address, "e-mail address")
            if "@" not in address or " " in address.strip():
                raise ValueError(f"not an e-mail address: {address!r}")
        return [a.strip() for a in value]

    @model_validator(mode="after")
    def _complete(self) -> NotificationIn:
        if self.kind == "webhook":
            if not self.url:
                raise ValueError("a webhook needs a url")
            if self.host or self.to or self.sender or self.password or self.user:
                raise ValueError("SMTP settings only apply to e-mail targets")
        else:
            missing = [n for n in ("host", "sender") if not getattr(self, n)]
            if not self.to:
                missing.append("to")
            if missing:
                raise ValueError(f"an e-mail target needs {', '.join(missing)}")
            if self.sender and "@" not in self.sender:
                raise ValueError(f"not an e-mail address: {self.sender!r}")
            if self.url or self.secret:
                raise ValueError("url and secret only apply to webhooks")
            if self.password and not self.user:
                raise ValueError("a password needs a user")
        return self


def _last_delivery(db: DbSession, target_id: int) -> dict[str, Any] | None:
    row = db.scalar(
        select(NotificationDelivery)
        .where(NotificationDelivery.target_id == target_id)
        .order_by(NotificationDelivery.id.desc())
        .limit(1)
    )
    return _delivery_view(row) if row else None


def _delivery_view(row: NotificationDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "session": row.session_id,
        "status": row.status,
        "attempts": row.attempts,
        "error": row.error,
        "created": iso(row.created),
        "finished": iso(row.finished),
    }


def target_view(db: DbSession, target: NotificationTarget, full_url: bool = True) -> dict[str, Any]:
    """The target as the API shows it: never the secret, only whether there is one.

    A webhook URL often holds a token itself: below administrator it shows host only.
    """
    settings = dict(target.settings or {})
    if not full_url and settings.get("url"):
        settings["url"] = redacted(str(settings["url"]))
    return {
        "id": target.id,
        "name": target.name,
        "kind": target.kind,
        "on": list(target.on_statuses or []),
        **settings,
        "has_secret": bool(target.secret),
        "created": iso(target.created),
        "last_delivery": _last_delivery(db, target.id),
    }


@router.post("", status_code=201)
def add_target(
    body: NotificationIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    if body.kind == "webhook":
        settings: dict[str, Any] = {"url": body.url}
        secret = body.secret
    else:
        settings = {
            "host": body.host,
            "port": body.port or DEFAULT_PORTS[body.tls],
            "tls": body.tls,
            "user": body.user,
            "sender": body.sender,
            "to": body.to,
        }
        secret = body.password
    with ctx.db.session() as db:
        if db.scalar(select(NotificationTarget).where(NotificationTarget.name == body.name)):
            raise FieldError(
                409, f"a notification target named '{body.name}' already exists", "name"
            )
        target = NotificationTarget(
            name=body.name, kind=body.kind, settings=settings, on_statuses=body.on
        )
        db.add(target)
        db.flush()
        if secret:
            target.secret = ctx.secrets.encrypt(secret, secret_purpose(target.id))
        return target_view(db, target)


@router.get("")
def list_targets(
    ctx: ServerContext = Depends(get_ctx), token: Caller = Depends(require(Role.viewer))
) -> list[dict[str, Any]]:
    full = allows(Role.parse(token.role), Role.administrator)
    with ctx.db.session() as db:
        targets = db.scalars(select(NotificationTarget).order_by(NotificationTarget.id))
        return [target_view(db, t, full) for t in targets]


@router.get("/{ref}")
def show_target(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    token: Caller = Depends(require(Role.viewer)),
) -> dict[str, Any]:
    full = allows(Role.parse(token.role), Role.administrator)
    with ctx.db.session() as db:
        target = lookup(db, NotificationTarget, ref, "notification target")
        return target_view(db, target, full)


@router.post("/{ref}/test")
def test_target(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """Send a test message now (one attempt) and answer with the delivery's outcome."""
    with ctx.db.session() as db:
        target = lookup(db, NotificationTarget, ref, "notification target")
        delivery = NotificationDelivery(target_id=target.id, session_id=None)
        db.add(delivery)
        db.flush()
        delivery_id = delivery.id
    Notifier(ctx, RetryPolicy(attempts=1, timeout=TEST_TIMEOUT)).deliver(delivery_id)
    with ctx.db.session() as db:
        row = db.get(NotificationDelivery, delivery_id)
        assert row is not None
        return _delivery_view(row)


@router.delete("/{ref}", status_code=204)
def remove_target(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        target = lookup(db, NotificationTarget, ref, "notification target")
        db.delete(target)
    return Response(status_code=204)
