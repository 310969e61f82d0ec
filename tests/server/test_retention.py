"""Keep rules (restic `forget` semantics) on restore point times."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ferryman.proxy.protocol import TaskResult
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Session, Task
from ferryman.server.dispatcher import Dispatcher
from ferryman.server.retention import KeepRules, points_to_keep

from .conftest import Api
from .test_dispatch import add_proxy, tasks

UTC = ZoneInfo("UTC")


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# A month of points: two a day on 2026-03-01..03, one on 03-09, 03-16, 04-01, 04-02.
POINTS = [
    ("a1", t("2026-03-01 01:00")),
    ("a2", t("2026-03-01 13:00")),
    ("b1", t("2026-03-02 01:00")),
    ("b2", t("2026-03-02 13:00")),
    ("c1", t("2026-03-03 01:00")),  # Tuesday, ISO week 10 (03-02..03-08)
    ("c2", t("2026-03-03 13:00")),
    ("d", t("2026-03-09 10:00")),  # week 11
    ("e", t("2026-03-16 10:00")),  # week 12
    ("f", t("2026-04-01 10:00")),  # week 14, April
    ("g", t("2026-04-02 10:00")),
]


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        (KeepRules(), {k for k, _ in POINTS}),  # no rule: keep everything
        (KeepRules(last=1), {"g"}),
        (KeepRules(last=2), {"g", "f"}),
        (KeepRules(last=100), {k for k, _ in POINTS}),
        # newest of each of the 4 newest days that have a point
        (KeepRules(daily=4), {"g", "f", "e", "d"}),
        (KeepRules(daily=7), {"g", "f", "e", "d", "c2", "b2", "a2"}),
        # ISO weeks: 14 (g), 12 (e), 11 (d), 10 (c2), 9 (a2: Sunday 03-01)
        (KeepRules(weekly=3), {"g", "e", "d"}),
        (KeepRules(weekly=5), {"g", "e", "d", "c2", "a2"}),
        (KeepRules(monthly=1), {"g"}),
        (KeepRules(monthly=2), {"g", "e"}),
        (KeepRules(monthly=9), {"g", "e"}),
        # union of the rules
        (KeepRules(last=1, monthly=2), {"g", "e"}),
        (KeepRules(last=3, weekly=4), {"g", "f", "e", "d", "c2"}),
        (KeepRules(daily=2, monthly=2), {"g", "f", "e"}),
    ],
)
def test_keep_rules(rules: KeepRules, kept: set[str]) -> None:
    assert set(points_to_keep(POINTS, rules, UTC)) == kept


def test_order_of_the_input_does_not_matter() -> None:
    shuffled = POINTS[5:] + POINTS[:5]
    assert points_to_keep(shuffled, KeepRules(daily=3), UTC) == points_to_keep(
        POINTS, KeepRules(daily=3), UTC
    )


def test_the_newest_point_is_always_kept_and_says_why() -> None:
    kept = points_to_keep(POINTS, KeepRules(monthly=1, last=1), UTC)
    assert kept == {"g": ["newest", "last", "monthly"]}


def test_days_are_counted_in_the_server_time_zone() -> None:
    # 23:30 UTC on 03-01 is already 03-02 in Paris (UTC+1): one day there, two in UTC
    points = [("late", t("2026-03-01 23:30")), ("next", t("2026-03-02 08:00"))]
    assert set(points_to_keep(points, KeepRules(daily=2), UTC)) == {"late", "next"}
    assert set(points_to_keep(points, KeepRules(daily=2), ZoneInfo("Europe/Paris"))) == {"next"}


def test_no_points_keeps_nothing() -> None:
    assert points_to_keep([], KeepRules(last=3), UTC) == {}


# --- the retention step of a backup session, with a proxy simulated through the gateway ---


def _backup(ctx: ServerContext, api: Api, job: str, proxy_id: int, point_id: str) -> int:
    """Run the job once; its backup task reports `point_id`. Returns the session id."""
    session_id = int(api.post(f"/jobs/{job}/run")["id"])
    Dispatcher(ctx).run_once()
    task = next(t for t in tasks(ctx) if t.session_id == session_id and t.kind == "backup")
    assert task.state == "assigned", task.reason
    output = {"point_id": point_id, "time": dt.datetime.now(dt.UTC).isoformat(), "files": 1}
    ctx.gateway.result(proxy_id, TaskResult(task_id=task.id, state="success", output=output))  # type: ignore[attr-defined]
    return session_id


def _point_ids(api: Api, job: str) -> list[str]:
    return [p["point_id"] for p in api.get(f"/points?job={job}")]


def test_a_backup_session_ends_with_its_retention(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    (tmp_path / "s").mkdir()
    api.post("/shares", {"name": "s", "url": str(tmp_path / "s")})
    api.post("/jobs", {"name": "keep2", "shares": ["s"], "repository": "default", "keep_last": 2})
    api.post("/jobs", {"name": "other", "shares": ["s"], "repository": "default"})
    proxy_id = add_proxy(ctx, "p1", slots=2)
    ids = [f"{n:032x}" for n in range(1, 5)]
    for point_id in ids[:2]:
        assert (
            api.get(f"/sessions/{_backup(ctx, api, 'keep2', proxy_id, point_id)}")["status"]
            == "success"
        )
    _backup(ctx, api, "other", proxy_id, "f" * 32)  # another job's point on the same share

    session_id = _backup(ctx, api, "keep2", proxy_id, ids[2])
    session = api.get(f"/sessions/{session_id}")
    assert session["status"] == "running"
    maintenance = [t for t in tasks(ctx) if t.session_id == session_id and t.kind == "maintenance"]
    assert len(maintenance) == 1
    assert [d["point_id"] for d in maintenance[0].params["delete"]] == [ids[0]]
    Dispatcher(ctx).run_once()
    result = TaskResult(
        task_id=maintenance[0].id,
        state="success",
        stats={"points_removed": 1, "bytes_reclaimed": 1000},
        output={"deleted": [ids[0]], "missing": []},
    )
    ctx.gateway.result(proxy_id, result)  # type: ignore[attr-defined]
    session = api.get(f"/sessions/{session_id}")
    assert session["status"] == "success" and session["trigger"] == "manual"
    assert _point_ids(api, "keep2") == ids[1:3]
    assert _point_ids(api, "other") == ["f" * 32]  # not this job's: left alone

    # a failed retention leaves the points it did not delete, and the backup stands
    session_id = _backup(ctx, api, "keep2", proxy_id, ids[3])
    Dispatcher(ctx).run_once()
    task = next(t for t in tasks(ctx) if t.session_id == session_id and t.kind == "maintenance")
    ctx.gateway.result(proxy_id, TaskResult(task_id=task.id, state="failed", error="disk gone"))  # type: ignore[attr-defined]
    session = api.get(f"/sessions/{session_id}")
    assert session["status"] == "warning" and "retention failed: disk gone" in session["reason"]
    assert _point_ids(api, "keep2") == ids[1:4]


def test_one_maintenance_task_per_repository_at_a_time(ctx: ServerContext, api: Api) -> None:
    add_proxy(ctx, "p1", slots=3)
    first = api.post("/repositories/default/gc")
    second = api.post("/repositories/default/gc")
    assert first["kind"] == "maintenance"
    Dispatcher(ctx).run_once()
    states = {t.session_id: t for t in tasks(ctx)}
    assert states[first["id"]].state == "assigned"
    assert states[second["id"]].state == "waiting"
    assert "another maintenance task" in (states[second["id"]].reason or "")


def test_a_point_being_restored_is_not_removed(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    (tmp_path / "s").mkdir()
    api.post("/shares", {"name": "s", "url": str(tmp_path / "s")})
    api.post("/jobs", {"name": "keep1", "shares": ["s"], "repository": "default", "keep_last": 1})
    proxy_id = add_proxy(ctx, "p1", slots=2)
    _backup(ctx, api, "keep1", proxy_id, "a" * 32)
    with ctx.db.session() as db:  # a restore of that point is still running
        restore = Session(kind="restore", status="running", params={"point_id": "a" * 32})
        db.add(restore)
        db.flush()
        db.add(Task(session_id=restore.id, kind="restore", repository_id=1, state="waiting"))
    session_id = _backup(ctx, api, "keep1", proxy_id, "b" * 32)
    assert api.get(f"/sessions/{session_id}")["status"] == "success"  # nothing to remove now
    assert _point_ids(api, "keep1") == ["a" * 32, "b" * 32]
