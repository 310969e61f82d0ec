"""Dispatcher, gateway and leases against the real database, with proxies simulated through
the gateway (the same calls the mTLS routes and the embedded channel make)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from ferryman.proxy.protocol import (
    Heartbeat,
    ProbeResult,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy, Repository, Share, Task
from ferryman.server.dispatcher import Dispatcher

from .conftest import Api


def add_proxy(
    ctx: ServerContext,
    name: str,
    site: str | None = None,
    slots: int = 1,
    unreachable: set[str] | None = None,
) -> int:
    with ctx.db.session() as db:
        proxy = Proxy(name=name, site=site, slots=slots, cert_serial=name)
        db.add(proxy)
        db.flush()
        proxy_id = proxy.id
    beat(ctx, proxy_id, slots=slots, site=site, unreachable=unreachable or set())
    return proxy_id


def beat(
    ctx: ServerContext,
    proxy_id: int,
    slots: int = 1,
    site: str | None = None,
    running: list[int] | None = None,
    unreachable: set[str] | None = None,
) -> list[int]:
    """Heartbeat, answering every probe the server asks for. Returns tasks to cancel."""
    gateway = ctx.gateway  # type: ignore[attr-defined]
    hb = Heartbeat(slots=slots, version="t", site=site, running_tasks=running or [])
    reply = gateway.heartbeat(proxy_id, hb)
    if reply.probes:
        names = {}
        with ctx.db.session() as db:
            names.update({("share", s.id): s.name for s in db.scalars(select(Share))})
            names.update({("repository", r.id): r.name for r in db.scalars(select(Repository))})
        results = [
            ProbeResult(
                kind=p.kind,
                target_id=p.target_id,
                url=p.url,
                ok=names[(p.kind, p.target_id)] not in (unreachable or set()),
                error="not mounted here",
                rtt_ms=0.1,
            )
            for p in reply.probes
        ]
        reply = gateway.heartbeat(proxy_id, hb.model_copy(update={"probe_results": results}))
    cancel: list[int] = reply.cancel_tasks
    return cancel


def tasks(ctx: ServerContext) -> list[Task]:
    with ctx.db.session() as db:
        rows = list(db.scalars(select(Task).order_by(Task.id)))
        for row in rows:
            db.expunge(row)
        return rows


def finish(ctx: ServerContext, proxy_id: int, task_id: int, state: str = "success") -> None:
    result = TaskResult.model_validate({"task_id": task_id, "state": state})
    ctx.gateway.result(proxy_id, result)  # type: ignore[attr-defined]


@pytest.fixture
def dispatcher(ctx: ServerContext) -> Dispatcher:
    return Dispatcher(ctx)


def shares_and_job(
    api: Api,
    tmp_path: Path,
    count: int,
    site: str | None = None,
    io: str = "normal",
    priority: int = 50,
    job: str = "job",
) -> None:
    names = []
    for i in range(count):
        name = f"{job}-s{i}"
        (tmp_path / name).mkdir(exist_ok=True)
        api.post(
            "/shares", {"name": name, "url": str(tmp_path / name), "site": site, "io_control": io}
        )
        names.append(name)
    api.post("/jobs", {"name": job, "shares": names, "repository": "default", "priority": priority})


def test_site_slots_and_reasons(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 4, site="hq")
    near = add_proxy(ctx, "near", site="hq", slots=2)
    add_proxy(ctx, "far-big", site="branch", slots=4)
    add_proxy(
        ctx, "blind", site="hq", slots=4, unreachable={"job-s0", "job-s1", "job-s2", "job-s3"}
    )
    api.post("/jobs/job/run")
    dispatcher.run_once()
    placed = {t.id: t for t in tasks(ctx)}
    by_proxy: dict[str | None, int] = {}
    for t in placed.values():
        by_proxy[t.proxy_name] = by_proxy.get(t.proxy_name, 0) + 1
    # the two slots at the share's site first, the rest on the far proxy; never the blind one
    assert by_proxy == {"near": 2, "far-big": 2}
    first = placed[min(placed)]
    assert first.proxy_name == "near" and "same site 'hq'" in (first.reason or "")
    passed = {p["proxy"]: p["reason"] for p in first.passed_over}
    assert "cannot reach share" in passed["blind"]
    assert passed["far-big"] == "not at the share's site 'hq'"
    later = next(t for t in placed.values() if t.proxy_name == "far-big")
    assert "no eligible proxy at the share's site" in (later.reason or "")
    assert any(p["reason"] == "all 2 task slots busy" for p in later.passed_over)
    # the session view carries it all
    session = api.get(f"/sessions/{first.session_id}")
    assert {t["proxy"] for t in session["tasks"]} == {"near", "far-big"}
    assert near


def test_load_balancing_spreads_over_equal_proxies(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 4)
    add_proxy(ctx, "a", slots=4)
    add_proxy(ctx, "b", slots=4)
    api.post("/jobs/job/run")
    dispatcher.run_once()
    names = sorted(t.proxy_name or "" for t in tasks(ctx))
    assert names == ["a", "a", "b", "b"]


def test_waiting_then_placed_when_a_slot_frees_fair_by_priority(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1, job="low", priority=10)
    shares_and_job(api, tmp_path, 1, job="high", priority=90)
    shares_and_job(api, tmp_path, 1, job="first", priority=50)
    pid = add_proxy(ctx, "only", slots=1)
    api.post("/jobs/first/run")
    dispatcher.run_once()
    api.post("/jobs/low/run")
    api.post("/jobs/high/run")
    dispatcher.run_once()
    by_job = {t.session_id: t for t in tasks(ctx)}
    running = [t for t in by_job.values() if t.state == "assigned"]
    waiting = [t for t in by_job.values() if t.state == "waiting"]
    assert len(running) == 1 and len(waiting) == 2
    assert all("waiting for resources" in (t.reason or "") for t in waiting)
    reply = ctx.gateway.poll(pid, 0)  # type: ignore[attr-defined]
    assert [a.task_id for a in reply.tasks] == [running[0].id]
    started = time.monotonic()
    finish(ctx, pid, running[0].id)
    dispatcher.run_once()
    now_running = [t for t in tasks(ctx) if t.state == "assigned"]
    assert len(now_running) == 1
    with ctx.db.session() as db:
        task = db.get(Task, now_running[0].id)
        assert task is not None and task.session.job_name == "high"
    assert time.monotonic() - started < 1.0


def test_lease_expiry_requeues_and_the_old_proxy_drops_the_task(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    ctx.config.lease_seconds = 0.3
    shares_and_job(api, tmp_path, 1)
    dead = add_proxy(ctx, "dead", slots=1)
    api.post("/jobs/job/run")
    dispatcher.run_once()
    task = tasks(ctx)[0]
    assert task.proxy_name == "dead"
    gateway = ctx.gateway  # type: ignore[attr-defined]
    gateway.poll(dead, 0)
    gateway.progress(dead, TaskProgress(task_id=task.id, progress={"files_scanned": 3}))
    alive = add_proxy(ctx, "alive", slots=1)
    time.sleep(0.5)
    beat(ctx, alive, slots=1)
    dispatcher.run_once()
    moved = tasks(ctx)[0]
    assert moved.proxy_name == "alive" and moved.attempts == 2
    with pytest.raises(TaskReassigned):
        gateway.progress(dead, TaskProgress(task_id=task.id, progress={}))
    with pytest.raises(TaskReassigned):
        finish(ctx, dead, task.id)
    # the returning proxy is told to drop it
    assert beat(ctx, dead, running=[task.id]) == [task.id]
    gateway.poll(alive, 0)
    finish(ctx, alive, task.id)
    dispatcher.run_once()
    session = api.get(f"/sessions/{task.session_id}")
    assert session["status"] == "success"


def test_a_retried_task_that_waited_long_is_not_requeued_by_a_heartbeat_sent_before_pickup(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    first = add_proxy(ctx, "first", slots=1)
    api.post("/jobs/job/run")
    dispatcher.run_once()
    task_id = ctx.gateway.poll(first, 0).tasks[0].task_id  # type: ignore[attr-defined]
    finish(ctx, first, task_id, state="stopped")  # interrupted: back in the queue
    with ctx.db.session() as db:  # ... where it then waited far longer than the grace
        task = db.get_one(Task, task_id)
        assert task.state == "waiting"
        long_ago = task.queued - dt.timedelta(minutes=10)
        task.queued = task.started = long_ago
    dispatcher.run_once()
    assert ctx.gateway.poll(first, 0).tasks[0].task_id == task_id  # type: ignore[attr-defined]
    # a heartbeat composed before the pickup (it does not list the task) arrives now
    assert beat(ctx, first, running=[]) == []
    (task,) = tasks(ctx)
    assert (task.state, task.attempts) == ("running", 2), task.reason
    # a proxy that really dropped the task is still caught once the grace has passed
    with ctx.db.session() as db:
        db.get_one(Task, task_id).attempt_started = long_ago
    beat(ctx, first, running=[])
    (task,) = tasks(ctx)
    assert task.state == "waiting" and "no longer runs the task" in (task.reason or "")


def test_io_control_caps_proxies_per_share(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    (tmp_path / "big").mkdir()
    api.post("/shares", {"name": "big", "url": str(tmp_path / "big"), "io_control": "lower"})
    api.post("/jobs", {"name": "job", "shares": ["big"], "repository": "default"})
    with ctx.db.session() as db:
        share = db.scalar(select(Share))
        assert share is not None
        top = {f"d{i}": [100_000, 2 * 1024**3] for i in range(4)}
        share.last_stats = {"files": 400_000, "bytes": 8 * 1024**3, "top": top}
    for name in ("p1", "p2", "p3"):
        add_proxy(ctx, name, slots=2)
    session = api.post("/jobs/job/run")
    assert len(session["tasks"]) == 2 and session["tasks"][0]["partition"]["count"] == 2
    dispatcher.run_once()
    placed = tasks(ctx)
    assert {t.proxy_name for t in placed} == {"p1"}  # "lower": one proxy at a time


def test_stop_cancels_running_tasks_through_heartbeat(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    pid = add_proxy(ctx, "p", slots=1)
    session = api.post("/jobs/job/run")
    dispatcher.run_once()
    task_id = ctx.gateway.poll(pid, 0).tasks[0].task_id  # type: ignore[attr-defined]
    api.post(f"/sessions/{session['id']}/stop", expect=200)
    assert beat(ctx, pid, running=[task_id]) == [task_id]
    finish(ctx, pid, task_id, state="stopped")
    assert api.get(f"/sessions/{session['id']}")["status"] == "stopped"


def test_interrupted_task_is_requeued_not_stopped(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    pid = add_proxy(ctx, "p", slots=1)
    session = api.post("/jobs/job/run")
    dispatcher.run_once()
    task_id = ctx.gateway.poll(pid, 0).tasks[0].task_id  # type: ignore[attr-defined]
    finish(ctx, pid, task_id, state="stopped")
    task = tasks(ctx)[0]
    assert task.state == "waiting" and "interrupted" in (task.reason or "")
    assert api.get(f"/sessions/{session['id']}")["status"] == "running"


def test_removed_proxy_is_revoked_and_its_tasks_requeued(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    add_proxy(ctx, "gone", slots=1)
    api.post("/jobs/job/run")
    dispatcher.run_once()
    api.call("DELETE", "/proxies/gone", expect=204)
    assert tasks(ctx)[0].state == "waiting"
    from ferryman.server.gateway import ProxyGone

    with pytest.raises(ProxyGone):
        ctx.gateway.proxy_for_serial(int("9999", 16))  # type: ignore[attr-defined]


def test_disabled_proxy_drains_and_gets_no_new_tasks(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 2)
    pid = add_proxy(ctx, "p", slots=2)
    api.post("/jobs/job/run")
    with ctx.db.session() as db:
        first = db.scalars(select(Task).order_by(Task.id)).first()
        assert first is not None
        db.delete(first)  # keep one task for the proxy, the other comes later
    dispatcher.run_once()
    running = ctx.gateway.poll(pid, 0).tasks  # type: ignore[attr-defined]
    assert len(running) == 1
    assert api.post("/proxies/p/disable", expect=200)["state"] == "draining"
    shares_and_job(api, tmp_path, 1, job="later")
    later = api.post("/jobs/later/run")
    dispatcher.run_once()
    waiting = api.get(f"/sessions/{later['id']}")["tasks"][0]
    assert waiting["state"] == "waiting"
    assert {"proxy": "p", "reason": "disabled"} in waiting["passed_over"]
    finish(ctx, pid, running[0].task_id)
    assert api.get("/proxies/p")["state"] == "disabled"


def test_a_proxy_that_cannot_reach_the_share_hands_the_task_on(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    first = add_proxy(ctx, "first", slots=1)
    api.post("/jobs/job/run")
    dispatcher.run_once()
    task_id = ctx.gateway.poll(first, 0).tasks[0].task_id  # type: ignore[attr-defined]
    second = add_proxy(ctx, "second", slots=1)
    failure = TaskResult(
        task_id=task_id, state="failed", error="share gone", output={"unreachable": "share"}
    )
    ctx.gateway.result(first, failure)  # type: ignore[attr-defined]
    task = tasks(ctx)[0]
    assert task.state == "waiting" and "could not reach the share" in (task.reason or "")
    dispatcher.run_once()
    task = tasks(ctx)[0]
    # the first proxy must be probed again before it is used for this share
    assert task.proxy_name == "second" and "attempt 2" in (task.reason or "")
    assert second


def test_a_share_no_proxy_can_reach_fails_after_a_while(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    add_proxy(ctx, "blind", slots=1, unreachable={"job-s0"})
    session = api.post("/jobs/job/run")
    dispatcher.run_once()
    assert api.get(f"/sessions/{session['id']}")["status"] == "running"
    ctx.config.unreachable_timeout = 0
    dispatcher.run_once()
    view = api.get(f"/sessions/{session['id']}")
    assert view["status"] == "failed"
    assert "no proxy can reach" in view["tasks"][0]["error"]
    assert "blind: cannot reach share 'job-s0'" in view["reason"]


def test_in_place_restore_goes_to_a_proxy_that_reaches_the_share(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    from ferryman.server.db.models import RestorePoint

    shares_and_job(api, tmp_path, 1)
    add_proxy(ctx, "a-blind", slots=1, unreachable={"job-s0"})
    add_proxy(ctx, "b-sees", slots=1)
    with ctx.db.session() as db:
        share = db.scalar(select(Share))
        assert share is not None
        db.add(
            RestorePoint(point_id="p", repository_id=1, share_id=share.id, share_name=share.name)
        )
    in_place = api.post("/restores", {"point": 1, "in_place": True})
    elsewhere = api.post("/restores", {"point": 1, "to": str(tmp_path / "out")})
    dispatcher.run_once()
    assert api.get(f"/sessions/{in_place['id']}")["tasks"][0]["proxy"] == "b-sees"
    assert api.get(f"/sessions/{elsewhere['id']}")["tasks"][0]["proxy"] == "a-blind"


def test_a_job_whose_proxies_were_all_removed_fails_at_once(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    (tmp_path / "s").mkdir()
    api.post("/shares", {"name": "s", "url": str(tmp_path / "s")})
    add_proxy(ctx, "only", slots=1)
    api.post("/jobs", {"name": "j", "shares": ["s"], "repository": "default", "proxies": ["only"]})
    api.call("DELETE", "/proxies/only", expect=204)
    session = api.post("/jobs/j/run")
    dispatcher.run_once()
    view = api.get(f"/sessions/{session['id']}")
    assert view["status"] == "failed" and "none of the proxies" in view["reason"]


def test_adaptive_io_reaches_the_proxy_and_its_report_the_session(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1, io="adaptive")
    assert api.get("/shares")[0]["max_proxies"] == 2  # placement as "normal"
    pid = add_proxy(ctx, "p1")
    session = api.post("/jobs/job/run")
    dispatcher.run_once()
    reply = ctx.gateway.poll(pid, 0)  # type: ignore[attr-defined]
    (assignment,) = reply.tasks
    assert assignment.share is not None and assignment.share.io_control == "adaptive"
    report = {
        "max_parallelism": 4,
        "min_parallelism": 1,
        "final_parallelism": 3,
        "changes": 4,
        "baseline_latency_ms": 2.1,
        "peak_latency_ms": 38.0,
        "events": [{"at": 3.5, "from": 4, "to": 2, "latency_ms": 38.0}],
    }
    result = TaskResult(
        task_id=assignment.task_id, state="success", stats={"files": 1, "io_adaptive": report}
    )
    ctx.gateway.result(pid, result)  # type: ignore[attr-defined]
    shown = api.get(f"/sessions/{session['id']}")
    assert shown["tasks"][0]["stats"]["io_adaptive"] == report


def test_a_round_with_nothing_to_do_reads_little_and_wakes_no_follower(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    # While a backup runs the dispatcher still wakes twice a second, in the process that
    # runs the embedded proxy's backup: such a round must stay a few indexed reads, and
    # must not wake the session followers (CLI, console, notifier) to re-read for nothing.
    shares_and_job(api, tmp_path, 1)
    proxy = add_proxy(ctx, "p")
    api.post("/jobs/job/run")
    seen = ctx.signals.session_generation()
    dispatcher.run_once()  # places the task: a change the followers are woken for
    assert [t.proxy_id for t in tasks(ctx)] == [proxy]
    assert ctx.signals.session_generation() > seen

    statements: list[str] = []

    def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        statements.append(sql)

    event.listen(ctx.db.engine, "before_cursor_execute", count)
    try:
        seen = ctx.signals.session_generation()
        dispatcher.run_once()  # the task runs, nothing waits, nothing changes
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", count)
    assert ctx.signals.session_generation() == seen
    # expired leases, "does anything wait", sessions left without open tasks
    assert len(statements) <= 3, statements

    finish(ctx, proxy, tasks(ctx)[0].id)
    assert [t.state for t in tasks(ctx)] == ["success"]


def test_a_queued_task_reaches_a_waiting_proxy_without_a_timed_round(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    """`job run` wakes the dispatcher and the placement wakes the proxy's long-poll: with
    the dispatcher's timed round an hour away, the waiting poll still gets the task (its
    own 1 s re-check only reads tasks already placed). The result then ends the
    session, and a follower waiting for a newer revision gets the end."""
    shares_and_job(api, tmp_path, 1)
    proxy = add_proxy(ctx, "p")
    ctx.config.dispatch_interval = 3600.0  # no timed round: only a wake-up places a task
    dispatcher.start()
    polled: list[list[int]] = []
    poller = threading.Thread(
        target=lambda: polled.append(
            [a.task_id for a in ctx.gateway.poll(proxy, timeout=60).tasks]  # type: ignore[attr-defined]
        )
    )
    try:
        poller.start()
        session = api.post("/jobs/job/run")
        poller.join(30)  # a long-poll that waited for its 60 s timeout would still be here
        assert not poller.is_alive()
        assert polled == [[t.id for t in tasks(ctx)]] and len(polled[0]) == 1

        follows: list[dict[str, Any]] = []
        revision = api.get(f"/sessions/{session['id']}")["revision"]
        follower = threading.Thread(
            target=lambda: follows.append(
                api.get(f"/sessions/{session['id']}/follow?revision={revision}&timeout=60")
            )
        )
        follower.start()
        finish(ctx, proxy, polled[0][0])
        follower.join(30)
        assert not follower.is_alive()
        assert follows[0]["status"] == "success"
    finally:
        dispatcher.stop()
