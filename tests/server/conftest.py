"""Fixtures for control-plane tests: an initialised server home on SQLite or PostgreSQL,
its context, and an API client (FastAPI TestClient, no sockets)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ferryman.server.api.app import create_app
from ferryman.server.context import ServerContext
from ferryman.server.gateway import ProxyGateway
from ferryman.server.init import InitResult, init_server

FAST_SCRYPT = 2**10


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


@pytest.fixture
def server_home(tmp_path: Path, db_url: str | None) -> InitResult:
    return init_server(tmp_path / "home", "127.0.0.1:18999", db_url, scrypt_n=FAST_SCRYPT)


@pytest.fixture
def ctx(server_home: InitResult) -> Iterator[ServerContext]:
    context = ServerContext.open(server_home.home)
    context.config.offline_after = 30
    context.gateway = ProxyGateway(context)  # type: ignore[attr-defined]
    yield context
    context.db.dispose()


class Api:
    """A tiny client that raises on unexpected status codes, with the admin token by default."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        expect: int | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        response = self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, expect=200, **kw).json()

    def post(self, path: str, body: Any = None, expect: int = 201, **kw: Any) -> Any:
        response = self.call("POST", path, expect=expect, json=body, **kw)
        return response.json() if response.content else None

    def error(self, method: str, path: str, status: int, **kwargs: Any) -> str:
        """The ``detail`` of a request that must fail with ``status``: one line of text."""
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, kwargs, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail, detail
        return detail


@pytest.fixture
def api(ctx: ServerContext, server_home: InitResult) -> Iterator[Api]:
    with TestClient(create_app(ctx)) as client:
        yield Api(client, server_home.token)
