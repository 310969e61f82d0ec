"""The Alembic migrations build exactly the schema the models describe, and upgrade in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from ferryman.server.api.routers.dashboard import sized_tasks
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


def test_the_dashboard_finds_a_repository_s_latest_task_through_an_index(tmp_path: Path) -> None:
    """Migration 0010: the stored-bytes lookup does not read every finished task."""
    db = Database(f"sqlite:///{tmp_path / 'plan.db'}")
    db.migrate()
    query = sized_tasks(1).compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.engine.connect() as connection:
        plan = " | ".join(
            str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {query}"))
        )
    assert "USING INDEX ix_tasks_repository_ended (repository_id=?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # the index gives the order too
    db.dispose()
