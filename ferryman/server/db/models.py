"""The configuration database schema (SQLAlchemy 2). Changes go through an Alembic migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who signs in to the web console with a password (scrypt hash, own salt)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(40))
    # "scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>" (see ferryman.server.users)
    password_hash: Mapped[str] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class WebSession(Base):
    """A signed-in browser: the cookie's SHA-256 only, for a user or an API token."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    api_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime] = mapped_column()
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)


class JoinToken(Base):
    __tablename__ = "join_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires: Mapped[dt.datetime] = mapped_column()
    used: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Repository(Base):
    __tablename__ = "repositories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    passphrase_secret: Mapped[str] = mapped_column(Text)
    access_key_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_key_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    max_tasks: Mapped[int] = mapped_column(Integer, default=8)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Share(Base):
    __tablename__ = "shares"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    site: Mapped[str | None] = mapped_column(String(200), nullable=True)
    include: Mapped[list[Any]] = mapped_column(default=list)
    exclude: Mapped[list[Any]] = mapped_column(default=list)
    io_control: Mapped[str] = mapped_column(String(20), default="normal")
    # JSON object of credentials (an SMB share's password), encrypted with the SecretBox
    # under the purpose ``share:<id>:credentials``; never returned by the API
    credentials_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    # snapshot provider of a local share: {"provider": "btrfs"|"nas-dir"|"command", ...}
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # per top-level entry statistics of the last successful run, for partitioning
    last_stats: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"))
    share_ids: Mapped[list[Any]] = mapped_column(default=list)
    schedule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # the scheduler's next firing time, and the scheduled time it last fired for
    next_run: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_run: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    keep_last: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_daily: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_weekly: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_monthly: Mapped[int | None] = mapped_column(Integer, nullable=True)
    proxy_ids: Mapped[list[Any] | None] = mapped_column(nullable=True)  # None = automatic
    priority: Mapped[int] = mapped_column(Integer, default=50)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    repository: Mapped[Repository] = relationship()


class Proxy(Base):
    __tablename__ = "proxies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    site: Mapped[str | None] = mapped_column(String(200), nullable=True)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    addresses: Mapped[list[Any]] = mapped_column(default=list)
    capabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cert_serial: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Probe(Base):
    """Cached connectivity of one proxy to one share or repository."""

    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    proxy_id: Mapped[int] = mapped_column(ForeignKey("proxies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # share | repository
    target_id: Mapped[int] = mapped_column(Integer)
    target_url: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    rtt_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # bytes/s read from the share by a short sample read (shares only)
    throughput: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    checked: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Session(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # backup | restore | check | browse | maintenance
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    job_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    repository_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # what started it: manual (an API call) | schedule | catch-up (a run missed while down)
    trigger: Mapped[str] = mapped_column(String(20), default="manual", server_default="manual")
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    ended: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    tasks: Mapped[list[Task]] = relationship(back_populates="session", order_by="Task.id")


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(
        String(20)
    )  # backup | assemble | restore | check | browse | attach | maintenance
    share_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repository_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    partition: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # waiting | assigned | running | success | warning | failed | stopped | blocked
    state: Mapped[str] = mapped_column(String(20), default="waiting", index=True)
    proxy_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # the session's priority, copied so the queue is read in order from one index
    priority: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    proxy_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    passed_over: Mapped[list[Any]] = mapped_column(default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    queued: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # when a proxy picked up the current attempt (``started`` is the first attempt's)
    attempt_started: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    ended: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    session: Mapped[Session] = relationship(back_populates="tasks")

    __table_args__ = (
        Index("ix_tasks_queue", "state", priority.desc(), "queued", "id"),
        # the dashboard's "latest task of this repository" (stored bytes)
        Index("ix_tasks_repository_ended", "repository_id", "ended"),
    )


class RestorePoint(Base):
    """The server's catalog of restore points (the repository holds the data)."""

    __tablename__ = "restore_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    point_id: Mapped[str] = mapped_column(String(128))
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    share_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    share_name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    job_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class NotificationTarget(Base):
    """Where session reports go when a session ends: a webhook or an e-mail address list."""

    __tablename__ = "notification_targets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # webhook | email
    # webhook: {"url"}; email: {"host", "port", "tls", "user", "sender", "to": [...]}
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the webhook's signing key or the SMTP password, encrypted with the SecretBox under
    # the purpose ``notification:<id>:secret``; never returned by the API
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    on_statuses: Mapped[list[Any]] = mapped_column(default=list)  # session statuses sent
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """One session report sent (or being sent) to one target."""

    __tablename__ = "notification_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_id: Mapped[int] = mapped_column(
        ForeignKey("notification_targets.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: a test
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    __table_args__ = (UniqueConstraint("target_id", "session_id", name="uq_delivery_session"),)


class HistoryTally(Base):
    """What pruned history (see ``ferryman.server.history``) had counted toward a cumulative
    metric, so that the counter read from the remaining rows plus this never goes down."""

    __tablename__ = "history_tallies"
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)  # "" for byte sums
    value: Mapped[float] = mapped_column(Float, default=0.0)


class TaskSample(Base):
    """Cumulative counters of one task at one moment, for the throughput chart of a session."""

    __tablename__ = "task_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    proxy_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    files_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_transferred: Mapped[int] = mapped_column(BigInteger, default=0)
