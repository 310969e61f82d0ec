"""Cron evaluation, clock jumps, catch-up and "never twice at once", on the real database."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Session
from ferryman.server.job_runs import JobNotStarted, start_job
from ferryman.server.scheduler import ScheduleError, Scheduler, decide, next_fire, time_zone

from .conftest import Api

UTC = ZoneInfo("UTC")


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


HOURLY = "0 * * * *"


def test_a_new_schedule_waits_for_its_first_firing_time() -> None:
    decision = decide(HOURLY, None, t("2026-03-01 10:20"), UTC)
    assert not decision.due and decision.next_run == t("2026-03-01 11:00")


def test_due_at_its_time_then_the_next_one() -> None:
    decision = decide(HOURLY, t("2026-03-01 11:00"), t("2026-03-01 11:00:00.3"), UTC)
    assert decision.due
    assert decision.scheduled_for == t("2026-03-01 11:00")
    assert decision.next_run == t("2026-03-01 12:00")
    assert decision.missed == 1
    assert not decide(HOURLY, t("2026-03-01 12:00"), t("2026-03-01 11:59:59"), UTC).due


def test_a_clock_jump_forward_fires_once_for_every_missed_run() -> None:
    decision = decide(HOURLY, t("2026-03-01 11:00"), t("2026-03-04 11:30"), UTC)
    assert decision.due and decision.missed == 73
    assert decision.scheduled_for == t("2026-03-04 11:00")
    assert decision.next_run == t("2026-03-04 12:00")


def test_a_clock_jump_back_pulls_the_next_run_back() -> None:
    # next_run was computed when the clock said 2026-03-04; now it says 03-01 10:20
    decision = decide(HOURLY, t("2026-03-04 12:00"), t("2026-03-01 10:20"), UTC)
    assert not decision.due and decision.next_run == t("2026-03-01 11:00")


def test_schedules_follow_the_server_time_zone() -> None:
    paris = time_zone("Europe/Paris")
    # 02:00 in Paris is 01:00 UTC in winter, 00:00 UTC in summer
    assert next_fire("0 2 * * *", t("2026-01-10 12:00"), paris) == t("2026-01-11 01:00")
    assert next_fire("0 2 * * *", t("2026-07-10 12:00"), paris) == t("2026-07-11 00:00")
    with pytest.raises(ScheduleError, match="unknown time zone"):
        time_zone("Mars/Olympus")


def test_a_sixth_field_counts_seconds() -> None:
    assert next_fire("* * * * * */10", t("2026-03-01 10:20:03"), UTC) == t("2026-03-01 10:20:10")


def _job(api: Api, tmp_path: Path, schedule: str) -> int:
    (tmp_path / "s").mkdir(exist_ok=True)
    api.post("/shares", {"name": "s", "url": str(tmp_path / "s")})
    return int(api.post("/jobs", {"name": "j", "shares": ["s"], "repository": "default",
                                  "schedule": schedule})["id"])  # fmt: skip


def _set_next_run(ctx: ServerContext, job_id: int, when: dt.datetime) -> None:
    with ctx.db.session() as db:
        db.get_one(Job, job_id).next_run = when


def _sessions(ctx: ServerContext) -> list[tuple[str, str]]:
    with ctx.db.session() as db:
        return [(s.trigger, s.status) for s in db.scalars(select(Session).order_by(Session.id))]


def test_missed_runs_are_caught_up_once_and_a_running_job_is_not_started_twice(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    job_id = _job(api, tmp_path, HOURLY)
    shown = api.get(f"/jobs/{job_id}")
    assert shown["next_run"] is not None and shown["last_run"] is None
    now = dt.datetime.now(dt.UTC)
    _set_next_run(ctx, job_id, now - dt.timedelta(hours=5))  # the server was down 5 hours
    scheduler = Scheduler(ctx)
    assert len(scheduler.run_once(now, startup=True)) == 1
    assert _sessions(ctx) == [("catch-up", "running")]
    shown = api.get(f"/jobs/{job_id}")
    assert shown["last_run"] is not None and shown["next_run"] > shown["last_run"]
    # its next firing time comes while the session still runs: skipped, not started twice
    _set_next_run(ctx, job_id, now)
    assert scheduler.run_once(now + dt.timedelta(seconds=1)) == []
    assert _sessions(ctx) == [("catch-up", "running")]
    # and `job run` is refused the same way
    api.call("POST", f"/jobs/{job_id}/run", expect=409)


def test_catch_up_can_be_turned_off(ctx: ServerContext, api: Api, tmp_path: Path) -> None:
    job_id = _job(api, tmp_path, HOURLY)
    now = dt.datetime.now(dt.UTC)
    _set_next_run(ctx, job_id, now - dt.timedelta(hours=5))
    assert Scheduler(ctx, catch_up=False).run_once(now, startup=True) == []
    assert _sessions(ctx) == []
    assert api.get(f"/jobs/{job_id}")["next_run"] > now.isoformat()


def test_a_disabled_job_has_no_next_run_and_runs_missed_while_disabled_are_not_run(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    job_id = _job(api, tmp_path, HOURLY)
    api.call("POST", f"/jobs/{job_id}/disable", expect=200)
    assert api.get(f"/jobs/{job_id}")["next_run"] is None
    assert Scheduler(ctx).run_once(dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)) == []
    api.call("POST", f"/jobs/{job_id}/enable", expect=200)
    assert api.get(f"/jobs/{job_id}")["next_run"] is not None
    assert Scheduler(ctx).run_once() == []
    assert _sessions(ctx) == []


def test_changing_a_job_moves_its_next_run_and_bad_input_changes_nothing(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    job_id = _job(api, tmp_path, HOURLY)
    hourly = api.get(f"/jobs/{job_id}")["next_run"]
    changed = api.call(
        "PATCH", f"/jobs/{job_id}", json={"schedule": "* * * * * */5", "keep_daily": 7}
    ).json()
    assert changed["schedule"] == "* * * * * */5" and changed["keep_daily"] == 7
    assert changed["next_run"] < hourly
    for bad in (
        {"schedule": "61 * * * *"},
        {"schedule": "0 0 30 2 *"},  # February 30th: never fires
        {"keep_last": 0},
        {"priority": None},
    ):
        response = api.call("PATCH", f"/jobs/{job_id}", json=bad)
        assert response.status_code == 422, response.text
    assert api.get(f"/jobs/{job_id}") == changed
    cleared = api.call("PATCH", f"/jobs/{job_id}", json={"schedule": None, "keep_daily": None})
    assert cleared.json()["next_run"] is None and cleared.json()["keep_daily"] is None


def test_concurrent_starts_of_one_job_start_one_session(
    ctx: ServerContext, api: Api, tmp_path: Path
) -> None:
    """`job run` calls and the scheduler racing: exactly one session, the others refused."""
    job_id = _job(api, tmp_path, HOURLY)
    outcomes: list[str] = []

    def start(trigger: str) -> None:
        try:
            start_job(ctx, job_id, trigger)
            outcomes.append("started")
        except JobNotStarted as exc:
            outcomes.append(str(exc))

    threads = [
        threading.Thread(target=start, args=("schedule" if i % 2 else "manual",)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("started") == 1, outcomes
    assert all("already running" in o for o in outcomes if o != "started")
    assert len(_sessions(ctx)) == 1
