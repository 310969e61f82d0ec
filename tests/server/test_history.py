"""Old history goes: ended sessions with their tasks and throughput samples, a day after
for hidden browse/attach sessions, ``history_days`` after for the others, never a job's
newest ended session nor a running one; the cumulative metrics never go down."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server import history
from ferryman.server.context import ServerContext
from ferryman.server.db.models import (
    Job,
    NotificationDelivery,
    NotificationTarget,
    Repository,
    RestorePoint,
    Session,
    Task,
    TaskSample,
    utcnow,
)
from ferryman.server.history import HistoryPruner, prune_history
from ferryman.server.history import tallies as read_tallies

from .conftest import Api
from .test_metrics import scrape

DAY = dt.timedelta(days=1)
COUNTERS = (
    "ferryman_sessions_completed_total",
    "ferryman_tasks_completed_total",
    "ferryman_bytes_read_total",
    "ferryman_bytes_new_total",
    "ferryman_bytes_transferred_total",
)


def add_session(
    ctx: ServerContext,
    kind: str,
    ended_ago: dt.timedelta | None,
    status: str = "success",
    job: str | None = None,
    tasks: int = 1,
    samples: int = 2,
    repository_bytes: int | None = None,
) -> int:
    """A session ended ``ended_ago`` (None: still running) with ``tasks`` ended tasks, each
    with ``samples`` throughput samples and a few bytes in its statistics (and, given
    ``repository_bytes``, the repository's stored size, as backups report it)."""
    now = utcnow()
    ended = None if ended_ago is None else now - ended_ago
    created = (ended or now) - dt.timedelta(hours=1)
    with ctx.db.session() as db:
        job_row = db.scalar(select(Job).where(Job.name == job)) if job else None
        if job and job_row is None:
            repository = db.scalar(select(Repository))
            assert repository is not None
            job_row = Job(name=job, repository_id=repository.id)
            db.add(job_row)
            db.flush()
        session = Session(
            kind=kind,
            job_id=job_row.id if job_row else None,
            job_name=job,
            status="running" if ended is None else status,
            created=created,
            started=created,
            ended=ended,
        )
        db.add(session)
        db.flush()
        stats = {"bytes_read": 1000, "bytes_new": 100, "bytes_transferred": 10}
        if repository_bytes is not None:
            stats["repository_bytes"] = repository_bytes
        for _ in range(tasks):
            task = Task(
                session_id=session.id,
                repository_id=job_row.repository_id if job_row else None,
                kind=kind,
                state="running" if ended is None else status,
                stats=stats,
                created=created,
                started=created,
                ended=ended,
            )
            db.add(task)
            db.flush()
            for i in range(samples):
                db.add(
                    TaskSample(
                        session_id=session.id,
                        task_id=task.id,
                        time=created + dt.timedelta(seconds=i),
                        bytes_read=i,
                    )
                )
        return session.id


def remaining(ctx: ServerContext) -> tuple[set[int], int, int]:
    """(session ids, task count, sample count) left in the database."""
    with ctx.db.session() as db:
        return (
            set(db.scalars(select(Session.id))),
            db.scalar(select(func.count()).select_from(Task)) or 0,
            db.scalar(select(func.count()).select_from(TaskSample)) or 0,
        )


def counters(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {key: value for key, value in scrape(api).items() if key[0] in COUNTERS}


def test_old_sessions_go_with_their_tasks_and_samples_but_never_a_job_s_last_result(
    ctx: ServerContext, api: Api
) -> None:
    ctx.config.history_days = 365
    old_job_run = add_session(ctx, "backup", 400 * DAY, job="nightly", tasks=2, samples=3)
    failed_job_run = add_session(ctx, "backup", 380 * DAY, "failed", job="nightly")
    newest_job_run = add_session(ctx, "backup", 370 * DAY, job="nightly")  # its last result
    old_restore = add_session(ctx, "restore", 400 * DAY, "warning")
    old_browse = add_session(ctx, "browse", 2 * DAY, samples=0)
    fresh_browse = add_session(ctx, "browse", dt.timedelta(hours=1), samples=0)
    long_running = add_session(ctx, "backup", None, job="weekly")
    recent = add_session(ctx, "check", 10 * DAY, "failed")
    before = counters(api)
    assert (
        before[("ferryman_sessions_completed_total", (("kind", "backup"), ("status", "success")))]
        == 2
    )

    pruned = prune_history(ctx)

    assert (pruned.sessions, pruned.tasks, pruned.samples) == (4, 5, 10)
    sessions, tasks, samples = remaining(ctx)
    assert sessions == {newest_job_run, fresh_browse, long_running, recent}
    assert not sessions & {old_job_run, failed_job_run, old_restore, old_browse}
    assert (tasks, samples) == (4, 6)  # one task each, two samples each (browse: none)
    # the counters read the same as before: what the removed rows counted is kept aside
    assert counters(api) == before
    listed = {s["id"] for s in api.get("/sessions?limit=100")}
    assert old_job_run not in listed and newest_job_run in listed
    # the job still shows its last result
    (job,) = [j for j in api.get("/jobs") if j["name"] == "nightly"]
    assert job["last_session"]["id"] == newest_job_run
    assert prune_history(ctx).sessions == 0  # nothing more to do


def test_a_repository_keeps_its_stored_size_while_its_job_fails_for_longer_than_history(
    ctx: ServerContext, api: Api
) -> None:
    ctx.config.history_days = 365
    older_success = add_session(ctx, "backup", 420 * DAY, job="nightly", repository_bytes=1)
    last_success = add_session(ctx, "backup", 400 * DAY, job="nightly", repository_bytes=12_345)
    failures = [add_session(ctx, "backup", d * DAY, "failed", job="nightly") for d in (390, 370)]

    prune_history(ctx)

    sessions, _, _ = remaining(ctx)
    assert last_success in sessions and failures[-1] in sessions
    assert older_success not in sessions and failures[0] not in sessions
    (repo,) = api.get("/dashboard")["repositories"]
    assert repo["bytes_stored"] == 12_345


def test_the_stored_size_kept_is_the_one_the_dashboard_shows_when_ids_and_end_times_disagree(
    ctx: ServerContext, api: Api
) -> None:
    """A task created later (larger id) can end before an earlier one (a long backup and a
    quick maintenance overlapping): the kept session is the one that ended last."""
    ctx.config.history_days = 365
    ended_last = add_session(ctx, "backup", 400 * DAY, job="nightly", repository_bytes=777)
    ended_first = add_session(ctx, "backup", 410 * DAY, job="nightly", repository_bytes=5)
    add_session(ctx, "backup", 380 * DAY, "failed", job="nightly")

    before = api.get("/dashboard")["repositories"][0]["bytes_stored"]
    prune_history(ctx)

    sessions, _, _ = remaining(ctx)
    assert ended_last in sessions and ended_first not in sessions
    assert before == 777
    assert api.get("/dashboard")["repositories"][0]["bytes_stored"] == 777


def test_the_stored_size_kept_is_the_last_one_reported_not_a_later_task_without_one(
    ctx: ServerContext, api: Api
) -> None:
    """A partition's backup task reports no repository size; when it is the sized task
    that ended last (its assembly failed), the size the dashboard shows is an older
    task's, and that task's session stays."""
    ctx.config.history_days = 365
    sized = add_session(ctx, "backup", 400 * DAY, job="nightly", repository_bytes=4_321)
    partition = add_session(ctx, "backup", 390 * DAY, job="nightly")  # no repository_bytes
    add_session(ctx, "backup", 370 * DAY, "failed", job="nightly")

    prune_history(ctx)

    sessions, _, _ = remaining(ctx)
    assert sized in sessions and partition not in sessions
    assert api.get("/dashboard")["repositories"][0]["bytes_stored"] == 4_321


def test_restore_points_of_pruned_sessions_stay_and_no_longer_link_to_them(
    ctx: ServerContext, api: Api
) -> None:
    ctx.config.history_days = 365
    old = add_session(ctx, "backup", 400 * DAY, job="nightly")
    new = add_session(ctx, "backup", 1 * DAY, job="nightly")
    with ctx.db.session() as db:
        repository = db.scalar(select(Repository))
        assert repository is not None
        for n, session_id in enumerate((old, new)):
            db.add(
                RestorePoint(
                    point_id=f"p{n}",
                    repository_id=repository.id,
                    share_name="docs",
                    job_name="nightly",
                    session_id=session_id,
                    time=utcnow() - (400 - n) * DAY,
                )
            )

    assert prune_history(ctx).sessions == 1

    assert [(p["point_id"], p["session"]) for p in api.get("/points")] == [
        ("p0", None),
        ("p1", new),
    ]
    assert api.get("/points/p0")["session"] is None
    assert api.get("/points/p1")["session"] == new


def test_a_pruning_committed_in_the_middle_of_a_scrape_is_counted_once(
    ctx: ServerContext, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.config.history_days = 365
    add_session(ctx, "restore", 400 * DAY)
    for _ in range(3):
        add_session(ctx, "backup", 400 * DAY, job="nightly")
    before = counters(api)
    pruned: list[int] = []

    def prune_first(db: DbSession, metric: str) -> dict[tuple[str, str], float]:
        # the scrape has read the rows; a pruning moves them to the tallies and commits
        if not pruned:
            pruned.append(prune_history(ctx).sessions)
        return read_tallies(db, metric)

    monkeypatch.setattr("ferryman.server.metrics.tallies", prune_first)
    assert counters(api) == before  # neither twice nor missing
    assert pruned == [3]  # two old job runs and the restore went
    assert counters(api) == before


def test_counters_stay_right_across_several_prunings_in_small_batches(
    ctx: ServerContext, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "BATCH", 2)
    ctx.config.history_days = 30
    for _ in range(5):
        add_session(ctx, "restore", 40 * DAY)
    before = counters(api)
    assert prune_history(ctx).sessions == 4  # the newest of all stays (its id is not reused)
    after_first = counters(api)
    assert after_first == before
    for _ in range(3):
        add_session(ctx, "restore", 40 * DAY)
    assert prune_history(ctx).sessions == 3  # adds to the tallies kept by the first pruning
    completed = ("ferryman_sessions_completed_total", (("kind", "restore"), ("status", "success")))
    assert counters(api)[completed] == 8
    assert counters(api)[("ferryman_bytes_read_total", (("kind", "restore"),))] == 8000
    sessions, tasks, samples = remaining(ctx)
    assert (len(sessions), tasks, samples) == (1, 1, 2)


def test_history_days_zero_keeps_every_visible_session(ctx: ServerContext) -> None:
    ctx.config.history_days = 0
    old_browse = add_session(ctx, "attach", 3 * DAY, samples=0)
    ancient = add_session(ctx, "backup", 3000 * DAY)
    assert HistoryPruner(ctx).run_once().sessions == 1
    sessions, _, _ = remaining(ctx)
    assert sessions == {ancient}
    assert old_browse not in sessions


def test_a_job_s_last_result_stays_while_its_next_run_is_running(
    ctx: ServerContext, api: Api
) -> None:
    ctx.config.history_days = 30
    older = add_session(ctx, "backup", 60 * DAY, job="nightly")
    last_result = add_session(ctx, "backup", 40 * DAY, "warning", job="nightly")
    next_run = add_session(ctx, "backup", None, job="nightly")
    last_end = ("ferryman_job_last_session_end_timestamp_seconds", (("job", "nightly"),))
    before = scrape(api)[last_end]

    assert prune_history(ctx).sessions == 1

    sessions, _, _ = remaining(ctx)
    assert older not in sessions
    assert {last_result, next_run} <= sessions
    assert scrape(api)[last_end] == before  # still when its last result ended


def test_a_session_waiting_for_its_report_and_the_newest_ids_stay(ctx: ServerContext) -> None:
    """A pending notification keeps its session; the newest session (and the one with the
    newest task) stay, so SQLite never hands their ids to new sessions."""
    ctx.config.history_days = 30
    waiting = add_session(ctx, "restore", 40 * DAY, "failed")
    plain = add_session(ctx, "restore", 40 * DAY, "failed")
    newest = add_session(ctx, "check", 40 * DAY)
    with ctx.db.session() as db:
        target = NotificationTarget(name="ops", kind="webhook", settings={"url": "https://x"})
        db.add(target)
        db.flush()
        db.add(NotificationDelivery(target_id=target.id, session_id=waiting, status="pending"))

    assert prune_history(ctx).sessions == 1
    sessions, _, _ = remaining(ctx)
    assert sessions == {waiting, newest}
    assert plain not in sessions
    later = add_session(ctx, "restore", dt.timedelta(hours=1))
    assert later > newest  # a new id, not one already used
    with ctx.db.session() as db:  # once sent, the session may go like any other
        delivery = db.scalar(select(NotificationDelivery))
        assert delivery is not None
        delivery.status = "delivered"
    assert prune_history(ctx).sessions == 2  # waiting, and newest now that it is not the newest
    assert remaining(ctx)[0] == {later}
