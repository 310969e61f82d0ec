"""Prometheus metrics of the server (`GET /metrics`, see docs/api.md).

Figures about sessions, tasks, proxies and bytes are read from the configuration
database at each scrape, so they are true after a restart and agree with what the API
shows; only the HTTP latency histogram lives in the process. Each app has its own
registry (no global state).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ferryman.server.api.deps import require
from ferryman.server.api.views import proxy_state
from ferryman.server.context import ServerContext
from ferryman.server.db.models import (
    Job,
    NotificationDelivery,
    NotificationTarget,
    Proxy,
    Session,
    Task,
    utcnow,
)
from ferryman.server.history import BYTE_COUNTERS, tallies
from ferryman.server.roles import Role
from ferryman.server.sessions import ACTIVE_STATES, FINAL_STATES, INTERNAL_KINDS

PROXY_STATES = ("online", "offline", "disabled", "draining")


class ServerCollector(Collector):
    """Reads the current figures from the database when Prometheus scrapes."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        # one snapshot: a history pruning committing between reading the rows and reading
        # the tallies it moved their counts to must not count them twice, or not at all
        with self.ctx.db.snapshot() as db:
            yield from self._sessions(db)
            yield from self._tasks(db)
            yield from self._proxies(db)
            yield from self._jobs(db)
            yield from self._notifications(db)

    def _sessions(self, db) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        done = CounterMetricFamily(
            "ferryman_sessions_completed",
            "Sessions that ended, by kind and final status.",
            labels=["kind", "status"],
        )
        running = GaugeMetricFamily(
            "ferryman_sessions_running", "Sessions running now, by kind.", labels=["kind"]
        )
        rows = db.execute(
            select(Session.kind, Session.status, func.count())
            .where(Session.kind.not_in(INTERNAL_KINDS))
            .group_by(Session.kind, Session.status)
        )
        completed = tallies(db, "sessions_completed")  # what pruned history had counted
        for kind, status, count in rows:
            if status in FINAL_STATES:
                completed[kind, status] = completed.get((kind, status), 0) + count
            elif status == "running":
                running.add_metric([kind], count)
        for (kind, status), count in sorted(completed.items()):
            done.add_metric([kind, status], count)
        yield done
        yield running

    def _tasks(self, db) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        current = GaugeMetricFamily(
            "ferryman_tasks",
            "Tasks not ended yet, by kind and state (waiting, assigned, running, blocked).",
            labels=["kind", "state"],
        )
        done = CounterMetricFamily(
            "ferryman_tasks_completed",
            "Tasks that ended, by kind and state.",
            labels=["kind", "state"],
        )
        queue = GaugeMetricFamily(
            "ferryman_queue_length", "Tasks waiting for a proxy (waiting for resources)."
        )
        waiting = 0
        completed = tallies(db, "tasks_completed")  # what pruned history had counted
        for kind, state, count in db.execute(
            select(Task.kind, Task.state, func.count()).group_by(Task.kind, Task.state)
        ):
            if kind in INTERNAL_KINDS:
                continue
            if state in FINAL_STATES:
                completed[kind, state] = completed.get((kind, state), 0) + count
            else:
                current.add_metric([kind, state], count)
            if state == "waiting":
                waiting += count
        for (kind, state), count in sorted(completed.items()):
            done.add_metric([kind, state], count)
        queue.add_metric([], waiting)
        yield current
        yield done
        yield queue
        sums = [func.sum(Task.stats[key].as_float()) for key in BYTE_COUNTERS]
        totals = {
            kind: values
            for kind, *values in db.execute(
                select(Task.kind, *sums)
                .where(Task.state.in_(FINAL_STATES), Task.kind.not_in(INTERNAL_KINDS))
                .group_by(Task.kind)
            )
        }
        for index, key in enumerate(BYTE_COUNTERS):
            family = CounterMetricFamily(
                f"ferryman_{key}",
                f"Total {key.replace('_', ' ')} by ended tasks, by task kind.",
                labels=["kind"],
                unit="",
            )
            summed = {kind: value for (kind, _), value in tallies(db, key).items()}
            for kind, values in totals.items():
                summed[kind] = summed.get(kind, 0.0) + float(values[index] or 0)
            for kind, value in sorted(summed.items()):
                family.add_metric([kind], value)
            yield family

    def _proxies(self, db) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        states = GaugeMetricFamily("ferryman_proxies", "Proxies by state.", labels=["state"])
        slots = GaugeMetricFamily("ferryman_proxy_slots", "Task slots of online proxies.")
        busy = GaugeMetricFamily("ferryman_proxy_slots_busy", "Busy task slots (all proxies).")
        busy_by_proxy = dict(
            db.execute(
                select(Task.proxy_id, func.count())
                .where(Task.state.in_(ACTIVE_STATES), Task.proxy_id.is_not(None))
                .group_by(Task.proxy_id)
            ).all()
        )
        now = utcnow()
        counts = dict.fromkeys(PROXY_STATES, 0)
        total_slots = 0
        for proxy in db.scalars(select(Proxy)):
            busy_now = bool(busy_by_proxy.get(proxy.id))
            state = proxy_state(proxy, busy_now, self.ctx.config.offline_after, now)
            counts[state] += 1
            if state == "online":
                total_slots += proxy.slots
        for state, count in counts.items():
            states.add_metric([state], count)
        slots.add_metric([], total_slots)
        busy.add_metric([], sum(busy_by_proxy.values()))
        yield states
        yield slots
        yield busy

    def _jobs(self, db) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        last = GaugeMetricFamily(
            "ferryman_job_last_session_end_timestamp_seconds",
            "When the newest ended session of each job ended (Unix time).",
            labels=["job"],
        )
        rows = db.execute(
            select(Job.name, func.max(Session.ended))
            .join(Session, Session.job_id == Job.id)
            .where(Session.ended.is_not(None))
            .group_by(Job.name)
        )
        for name, ended in rows:
            if ended is not None:
                ended = ended if ended.tzinfo else ended.replace(tzinfo=utcnow().tzinfo)
                last.add_metric([name], ended.timestamp())
        yield last

    def _notifications(self, db) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        family = CounterMetricFamily(
            "ferryman_notifications",
            "Session reports sent to notification targets, by target and outcome.",
            labels=["target", "status"],
        )
        rows = db.execute(
            select(NotificationTarget.name, NotificationDelivery.status, func.count())
            .join(NotificationDelivery, NotificationDelivery.target_id == NotificationTarget.id)
            .where(NotificationDelivery.status != "pending")
            .group_by(NotificationTarget.name, NotificationDelivery.status)
        )
        for name, status, count in rows:
            family.add_metric([name, status], count)
        yield family


def install_metrics(app: FastAPI, ctx: ServerContext) -> CollectorRegistry:
    """A registry for this app: the database figures plus an HTTP latency histogram."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(ctx))
    latency = Histogram(
        "ferryman_http_request_duration_seconds",
        "Time to answer API requests, by method, route and status class.",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # the route template (not the raw path) keeps the label set small
        path = _route_template(request.scope)
        # unmatched paths (404s) are not timed: their label set would be unbounded
        if path is not None and path != "/metrics":
            latency.labels(request.method, path, f"{response.status_code // 100}xx").observe(
                time.perf_counter() - started
            )
        return response

    return registry


def _route_template(scope: MutableMapping[str, Any]) -> str | None:
    """``/api/v1/jobs/{ref}`` for a request that matched that route, else None."""
    # FastAPI >= 0.120 keeps included routers whole and records the full path here
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(effective, "path", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def add_metrics_route(app: FastAPI, ctx: ServerContext) -> None:
    """`GET /metrics`: a viewer token is needed unless the server runs with --metrics-public."""
    registry = install_metrics(app, ctx)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not ctx.config.metrics_public:
            require(Role.viewer)(request, ctx)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
