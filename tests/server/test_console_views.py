"""What the web console reads and edits: throughput samples, the dashboard, proxies with
their running tasks (and drain), PATCH of shares and repositories, and ``field`` on errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from ferryman.proxy.protocol import TaskProgress, TaskResult
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy, Session, Share, Task, TaskSample, utcnow
from ferryman.server.dispatcher import Dispatcher
from ferryman.server.probes import share_credentials

from .conftest import Api
from .test_dispatch import add_proxy, shares_and_job, tasks


@pytest.fixture
def dispatcher(ctx: ServerContext) -> Dispatcher:
    return Dispatcher(ctx)


def started_task(ctx: ServerContext, api: Api, dispatcher: Dispatcher, job: str) -> tuple[int, int]:
    """Run the job; its one task placed on proxy 'p' and picked up. (proxy id, task id)"""
    with ctx.db.session() as db:
        proxy = db.scalar(select(Proxy).where(Proxy.name == "p"))
        proxy_id = proxy.id if proxy else None
    if proxy_id is None:
        proxy_id = add_proxy(ctx, "p", slots=2)
    api.post(f"/jobs/{job}/run")
    dispatcher.run_once()
    reply = ctx.gateway.poll(proxy_id, 0)  # type: ignore[attr-defined]
    (assignment,) = reply.tasks
    return proxy_id, assignment.task_id


def progress(ctx: ServerContext, proxy_id: int, task_id: int, n: int) -> None:
    values = {"files_read": n, "bytes_read": n * 1000, "bytes_transferred": n * 10}
    ctx.gateway.progress(proxy_id, TaskProgress(task_id=task_id, progress=values))  # type: ignore[attr-defined]


def test_throughput_samples_at_most_one_a_second_then_the_final_figures(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    proxy_id, task_id = started_task(ctx, api, dispatcher, "job")
    progress(ctx, proxy_id, task_id, 1)
    progress(ctx, proxy_id, task_id, 2)  # within the same second: not kept
    with ctx.db.session() as db:  # as if the first sample were two seconds old
        db.execute(update(TaskSample).values(time=utcnow() - dt.timedelta(seconds=2)))
    progress(ctx, proxy_id, task_id, 3)
    # an old task is sampled less often: at most every 1/600 of its age (here 10 s)
    with ctx.db.session() as db:
        db.execute(update(Task).values(started=utcnow() - dt.timedelta(seconds=6000)))
        db.execute(update(TaskSample).values(time=utcnow() - dt.timedelta(seconds=5)))
    progress(ctx, proxy_id, task_id, 9)  # 5 s after the last sample: not kept
    with ctx.db.session() as db:
        db.execute(update(TaskSample).values(time=utcnow() - dt.timedelta(seconds=11)))
    progress(ctx, proxy_id, task_id, 10)
    final = {"files_read": 12, "bytes_read": 12000, "bytes_transferred": 120, "files": 12}
    ctx.gateway.result(  # type: ignore[attr-defined]
        proxy_id, TaskResult(task_id=task_id, state="success", stats=final)
    )
    session_id = tasks(ctx)[0].session_id
    samples = api.get(f"/sessions/{session_id}/throughput")["samples"]
    assert [(s["files_read"], s["bytes_read"], s["bytes_transferred"]) for s in samples] == [
        (1, 1000, 10),
        (3, 3000, 30),
        (10, 10000, 100),
        (12, 12000, 120),
    ]
    assert {(s["proxy"], s["task"]) for s in samples} == {("p", task_id)}
    times = [s["t"] for s in samples]
    assert times == sorted(times) and times[-1] - times[0] >= 2
    assert api.error("GET", "/sessions/999999/throughput", 404) == "unknown session 999999"
    assert api.call("GET", "/sessions/x/throughput").status_code == 422
    # samples go with their session
    with ctx.db.session() as db:
        db.execute(delete(Session).where(Session.id == session_id))
    with ctx.db.session() as db:
        assert db.scalar(select(func.count()).select_from(TaskSample)) == 0


def test_proxies_show_running_tasks_and_drain(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1)
    proxy_id, task_id = started_task(ctx, api, dispatcher, "job")
    session_id = tasks(ctx)[0].session_id
    proxy = api.get("/proxies/p")
    assert proxy["running_tasks"] == [{"task": task_id, "session": session_id, "share": "job-s0"}]
    assert proxy["busy_slots"] == 1
    assert proxy["probes"] and all(p["checked"].endswith("Z") for p in proxy["probes"])
    viewer = api.post("/tokens", {"name": "v", "role": "viewer"})["token"]
    assert api.call("POST", "/proxies/p/drain", token=viewer).status_code == 403
    drained = api.post("/proxies/p/drain", expect=200)
    assert (drained["state"], drained["enabled"]) == ("draining", False)
    ctx.gateway.result(proxy_id, TaskResult(task_id=task_id, state="success"))  # type: ignore[attr-defined]
    after = api.get("/proxies/p")
    assert (after["state"], after["running_tasks"]) == ("disabled", [])
    assert api.error("POST", "/proxies/nope/drain", 404) == "unknown proxy 'nope'"


def test_dashboard_counts_sessions_proxies_and_what_needs_attention(
    ctx: ServerContext, api: Api, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    shares_and_job(api, tmp_path, 1, job="good")
    shares_and_job(api, tmp_path, 1, job="bad")
    proxy_id, good = started_task(ctx, api, dispatcher, "good")
    progress(ctx, proxy_id, good, 5)
    board = api.get("/dashboard")
    assert board["sessions_24h"]["running"] == 1
    (running,) = board["running"]
    assert running["job"] == "good" and running["progress"]["bytes_read"] == 5000
    assert board["proxies"]["online"] == 1 and board["proxies"]["slots_used"] == 1
    assert board["proxies"]["slots_total"] == 2 and board["proxies"]["offline"] == 1
    assert board["repositories"][0]["bytes_stored"] is None  # nothing reported yet
    sized = TaskResult(task_id=good, state="success", stats={"repository_bytes": 123456})
    ctx.gateway.result(proxy_id, sized)  # type: ignore[attr-defined]
    _, bad = started_task(ctx, api, dispatcher, "bad")
    warnings = [{"path": "/a", "message": "unreadable"}, {"path": "/b", "message": "gone"}]
    ctx.gateway.result(  # type: ignore[attr-defined]
        proxy_id, TaskResult(task_id=bad, state="warning", warnings=warnings)
    )
    board = api.get("/dashboard")
    counts = board["sessions_24h"]
    assert (counts["running"], counts["success"], counts["warning"], counts["failed"]) == (
        0,
        1,
        1,
        0,
    )
    assert board["running"] == []
    (attention,) = board["attention"]
    assert (attention["job"], attention["status"], attention["warnings"]) == ("bad", "warning", 2)
    (repo,) = board["repositories"]
    assert (repo["name"], repo["points"], repo["last_backup"]) == ("default", 0, None)
    assert repo["bytes_stored"] == 123456  # the warning task after it reported no size


def test_patch_share_changes_what_may_change_and_names_the_field(api: Api, tmp_path: Path) -> None:
    api.post("/shares", {"name": "docs", "url": str(tmp_path)})
    changed = api.call(
        "PATCH",
        "/shares/docs",
        expect=200,
        json={"name": "docs", "site": "hq", "include": ["*.txt"], "io_control": "lower"},
    ).json()
    assert (changed["site"], changed["include"], changed["io_control"]) == (
        "hq",
        ["*.txt"],
        "lower",
    )
    assert changed["max_proxies"] == 1 and changed["url"] == str(tmp_path)
    cases = [
        ({"name": "other"}, 422, "name"),
        ({"url": "/elsewhere"}, 422, "url"),
        ({"password": "secret12"}, 422, "password"),
        ({"access_key": "a", "secret_key": "b"}, 422, "access_key"),
        ({"include": [""]}, 422, "include"),
        ({"io_control": "fastest"}, 422, "io_control"),
        ({"io_control": None}, 422, "io_control"),
        ({"site": "a\x00b"}, 422, "site"),
        ({"snapshot": "zfs"}, 422, "snapshot"),
    ]
    for body, status, field in cases:
        response = api.call("PATCH", "/shares/docs", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
    assert api.get("/shares/docs") == changed  # nothing of the refused changes stuck
    cleared = api.call("PATCH", "/shares/docs", expect=200, json={"site": None, "include": None})
    assert (cleared.json()["site"], cleared.json()["include"]) == (None, [])
    assert api.error("PATCH", "/shares/nope", 404, json={}) == "unknown share 'nope'"
    viewer = api.post("/tokens", {"name": "v", "role": "viewer"})["token"]
    assert api.call("PATCH", "/shares/docs", json={}, token=viewer).status_code == 403


def test_patch_share_replaces_keys_and_snapshot_provider(
    api: Api, ctx: ServerContext, tmp_path: Path
) -> None:
    s3 = "s3://media/photos?endpoint=http://127.0.0.1:9000"
    api.post("/shares", {"name": "photos", "url": s3, "access_key": "OLD", "secret_key": "old"})
    keys = {"access_key": "NEW", "secret_key": "new-secret-key"}
    changed = api.call("PATCH", "/shares/photos", expect=200, json=keys).json()
    assert "new-secret-key" not in str(changed)
    with ctx.db.session() as db:
        row = db.scalar(select(Share).where(Share.name == "photos"))
        assert row is not None and "new-secret-key" not in (row.credentials_secret or "")
        assert share_credentials(row, ctx.secrets) == keys
    api.post("/shares", {"name": "vol", "url": str(tmp_path)})
    btrfs = api.call("PATCH", "/shares/vol", expect=200, json={"snapshot": "btrfs"}).json()
    assert btrfs["snapshot"] == {"provider": "btrfs", "dir": None}
    cleared = api.call("PATCH", "/shares/vol", expect=200, json={"snapshot": None}).json()
    assert cleared["snapshot"] is None
    refused = api.call("PATCH", "/shares/photos", json={"snapshot": "btrfs"})
    assert refused.status_code == 422 and refused.json()["field"] == "snapshot", refused.text


def test_patch_repository_changes_max_tasks_only_within_bounds(api: Api) -> None:
    changed = api.call("PATCH", "/repositories/default", expect=200, json={"max_tasks": 3})
    assert changed.json()["max_tasks"] == 3
    for body, field in (
        ({"max_tasks": 0}, "max_tasks"),
        ({"max_tasks": None}, "max_tasks"),
        ({"name": "renamed"}, "name"),
        ({"url": "/tmp/other"}, "url"),
        ({"access_key": "a", "secret_key": "b"}, "access_key"),
    ):
        response = api.call("PATCH", "/repositories/default", json=body)
        assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert api.get("/repositories/default")["max_tasks"] == 3


def test_errors_name_the_input_at_fault(api: Api, tmp_path: Path) -> None:
    api.post("/shares", {"name": "docs", "url": str(tmp_path)})
    api.post("/jobs", {"name": "j", "shares": ["docs"], "repository": "default"})
    job = {"name": "k", "shares": ["docs"], "repository": "default"}
    repo = {"name": "default", "url": "/tmp/r", "passphrase": "p"}
    cases = [
        ("POST", "/shares", {"name": "docs", "url": str(tmp_path)}, 409, "name"),
        ("POST", "/shares", {"name": "x", "url": "relative/path"}, 422, "url"),
        ("POST", "/jobs", {**job, "name": "j"}, 409, "name"),
        ("POST", "/jobs", {**job, "shares": ["nope"]}, 404, "shares"),
        ("POST", "/jobs", {**job, "repository": "nope"}, 404, "repository"),
        ("POST", "/jobs", {**job, "schedule": "every day"}, 422, "schedule"),
        ("POST", "/jobs", {**job, "proxies": ["nope"]}, 404, "proxies"),
        ("PATCH", "/jobs/j", {"schedule": "61 * * * *"}, 422, "schedule"),
        ("POST", "/repositories", repo, 409, "name"),
        ("POST", "/repositories", {**repo, "name": "r2", "passphrase": None}, 422, "passphrase"),
    ]
    for method, path, body, status, field in cases:
        response = api.call(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        answer = response.json()
        assert answer.get("field") == field and "\n" not in answer["detail"], (body, answer)
    # errors about no single input carry no field
    assert "field" not in api.call("GET", "/jobs/nope").json()
