"""The FastAPI application: `/api/v1` for people, `/proxy/v1` for proxies (mutual TLS)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

import ferryman
from ferryman.server.api.console import add_console_routes
from ferryman.server.api.errors import FieldError
from ferryman.server.api.event_hub import EventHub
from ferryman.server.api.routers import (
    dashboard,
    deployments,
    events,
    jobs,
    notifications,
    points,
    proxies,
    proxy_protocol,
    repositories,
    sessions,
    shares,
    system,
    users,
)
from ferryman.server.api.security_headers import SecurityHeaders
from ferryman.server.context import ServerContext
from ferryman.server.metrics import add_metrics_route
from ferryman.server.sign_in_throttle import SignInThrottle

log = logging.getLogger("ferryman.server.api")


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("body", "query", "path"))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def _first_field(exc: RequestValidationError) -> str | None:
    """The top-level input named by the first error (``include`` for ``body.include.2``)."""
    for error in exc.errors()[:1]:
        loc = [x for x in error.get("loc", ()) if x not in ("body", "query", "path")]
        if loc and isinstance(loc[0], str):
            return loc[0]
    return None


# Long-polls (proxies waiting for tasks, people following sessions) each hold a worker
# thread; the default of 40 would cap an installation at a few dozen proxies.
WORKER_THREADS = 400


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    try:
        yield
    finally:
        await app.state.event_hub.close()  # open /events streams end


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="Ferryman backup server",
        version=ferryman.__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.sign_in_throttle = SignInThrottle()  # per server process
    app.state.event_hub = EventHub(ctx)  # one poller for all /events streams
    api_routers = (system, users, repositories, shares, jobs, sessions, points, proxies)
    for module in (*api_routers, notifications, deployments, events, dashboard):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(proxy_protocol.router)
    add_metrics_route(app, ctx)
    add_console_routes(app)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"detail": _one_line(exc)}
        field = _first_field(exc)
        if field:
            body["field"] = field
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        body = {"detail": detail}
        if isinstance(exc, FieldError):
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "a value is out of range or contains characters that cannot be stored"},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    return app
