"""The Alembic migrations build exactly the schema the models describe, and upgrade in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from ferryman.server.db.engine import Database, alembic_config
from ferryman.server.db.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


def test_migrations_match_the_models(url: str) -> None:
    db = Database(url)
    db.migrate()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # type-only differences of the timezone-aware DateTime decorator are not schema changes
    real = [d for d in diff if not (isinstance(d, list) and d and d[0][0] == "modify_type")]
    assert real == [], real
    db.dispose()


def test_upgrade_in_place_keeps_data(url: str) -> None:
    db = Database(url)
    config = alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO proxies (name, embedded, enabled, slots, addresses, capabilities,"
                " created) VALUES ('p', false, true, 2, '[]', '{}', CURRENT_TIMESTAMP)"
            )
        )
    db.migrate()
    columns = {c["name"] for c in inspect(db.engine).get_columns("probes")}
    assert "throughput" in columns
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM proxies")).scalar_one() == "p"
    db.dispose()
