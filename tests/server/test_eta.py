"""`eta_seconds` in a running backup task's progress, from the share's previous run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ferryman.proxy.protocol import TaskProgress
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Proxy, Session, Share
from ferryman.server.eta import expected_bytes
from ferryman.server.sessions import start_backup_session

from .conftest import Api

LAST_RUN = {"files": 4, "bytes": 1000, "top": {"a": [1, 600], "b": [2, 300], "new": [1, 100]}}


def running_task(api: Api, ctx: ServerContext, tmp_path: Path, last_stats: object) -> int:
    api.post("/shares", {"name": "docs", "url": str(tmp_path)})
    api.post("/jobs", {"name": "j", "shares": ["docs"], "repository": "default"})
    with ctx.db.session() as db:
        share = db.scalar(select(Share))
        assert share is not None
        share.last_stats = last_stats
        job = db.scalar(select(Job))
        assert job is not None
        session = start_backup_session(db, job, 1, (1 << 40, 1 << 30))
        proxy = db.scalar(select(Proxy))
        assert proxy is not None
        task = session.tasks[0]
        task.state, task.proxy_id = "running", proxy.id
        task.started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
        return session.id


def progress_of(api: Api, ctx: ServerContext, session_id: int, scanned: int) -> dict[str, object]:
    with ctx.db.session() as db:
        task = db.get_one(Session, session_id).tasks[0]
        task_id, proxy_id = task.id, task.proxy_id
    assert proxy_id is not None
    progress = {"bytes_scanned": scanned, "files_scanned": 1}
    ctx.gateway.progress(proxy_id, TaskProgress(task_id=task_id, progress=progress))  # type: ignore[attr-defined]
    progress_view: dict[str, object] = api.get(f"/sessions/{session_id}")["tasks"][0]["progress"]
    return progress_view


def test_eta_from_the_previous_run(api: Api, ctx: ServerContext, tmp_path: Path) -> None:
    session_id = running_task(api, ctx, tmp_path, LAST_RUN)
    # a quarter of last run's 1000 bytes in 10 s: 30 s to go
    assert progress_of(api, ctx, session_id, 250)["eta_seconds"] == pytest.approx(30, abs=0.5)
    # the share grew past last run's size: small, never negative
    assert 0 < progress_of(api, ctx, session_id, 5000)["eta_seconds"] < 1  # type: ignore[operator]


def test_no_eta_without_a_previous_run(api: Api, ctx: ServerContext, tmp_path: Path) -> None:
    session_id = running_task(api, ctx, tmp_path, None)
    assert "eta_seconds" not in progress_of(api, ctx, session_id, 250)


def test_partitions_count_their_own_entries() -> None:
    assert expected_bytes(LAST_RUN, None) == 1000
    assert expected_bytes(LAST_RUN, {"index": 1, "count": 2, "paths": ["b"]}) == 300
    # partition 0 also takes the entries no partition names ("new" appeared since)
    first = {"index": 0, "count": 2, "paths": ["a"], "rest_except": ["b"]}
    assert expected_bytes(LAST_RUN, first) == 700
