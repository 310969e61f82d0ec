"""Integration fixtures: a real server process on SQLite or PostgreSQL, plus proxy processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import ProxyProcess, ServerProcess


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


@pytest.fixture
def processes() -> Iterator[list[ServerProcess | ProxyProcess]]:
    started: list[ServerProcess | ProxyProcess] = []
    yield started
    for item in reversed(started):
        if isinstance(item, ProxyProcess):
            item.kill()
        else:
            item.kill()


@pytest.fixture
def make_server(
    tmp_path: Path, db_url: str | None, processes: list[ServerProcess | ProxyProcess]
) -> Callable[..., ServerProcess]:
    def make(
        embedded: bool = True, name: str = "server", env: dict[str, str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(tmp_path / name, db_url, embedded=embedded, env=env)
        processes.append(server)
        return server.start()

    return make


@pytest.fixture
def make_proxy(
    tmp_path: Path, processes: list[ServerProcess | ProxyProcess]
) -> Callable[..., ProxyProcess]:
    def make(server: ServerProcess, name: str, **kw: object) -> ProxyProcess:
        proxy = ProxyProcess(server, tmp_path / f"proxy-{name}", name, **kw)  # type: ignore[arg-type]
        processes.append(proxy)
        return proxy.start()

    return make
