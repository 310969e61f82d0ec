"""`GET /metrics`: Prometheus text that matches what the database and the API say."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Proxy, Session, Task
from ferryman.server.metrics import PROXY_STATES
from ferryman.server.sessions import on_task_finished, start_backup_session

from .conftest import Api


def scrape(
    api: Api, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/metrics", headers={"Authorization": f"Bearer {token or api.token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_follow_sessions_tasks_and_proxies(
    api: Api, ctx: ServerContext, tmp_path: Path
) -> None:
    api.post("/shares", {"name": "a", "url": str(tmp_path)})
    api.post("/shares", {"name": "b", "url": str(tmp_path)})
    api.post("/jobs", {"name": "nightly", "shares": ["a", "b"], "repository": "default"})
    with ctx.db.session() as db:
        job = db.scalar(select(Job))
        assert job is not None
        session = start_backup_session(db, job, 1, (1 << 40, 1 << 30))
        session_id = session.id
        proxy = db.scalar(select(Proxy))
        assert proxy is not None
        proxy.last_heartbeat = dt.datetime.now(dt.UTC)
        proxy.slots = 3
    before = scrape(api)
    assert before[("ferryman_sessions_running", (("kind", "backup"),))] == 1
    assert before[("ferryman_queue_length", ())] == 2
    assert before[("ferryman_tasks", (("kind", "backup"), ("state", "waiting")))] == 2
    assert before[("ferryman_proxies", (("state", "online"),))] == 1
    assert before[("ferryman_proxies", (("state", "offline"),))] == 0
    assert before[("ferryman_proxy_slots", ())] == 3

    with ctx.db.session() as db:
        first, second = db.get_one(Session, session_id).tasks
        first.state, first.proxy_id = "running", proxy.id
    running = scrape(api)
    assert running[("ferryman_proxy_slots_busy", ())] == 1
    assert running[("ferryman_queue_length", ())] == 1

    with ctx.db.session() as db:
        first, second = db.get_one(Session, session_id).tasks
        for task, read in ((first, 1000), (second, 5_000_000_000)):  # sums past 32 bits
            task.state = "success"
            task.stats = {
                "bytes_read": read,
                "bytes_new": read // 2,
                "bytes_transferred": read // 4,
            }
            on_task_finished(db, task)
        ended = db.get_one(Session, session_id).ended
        assert ended is not None
    after = scrape(api)
    backup = (("kind", "backup"),)
    assert (
        after[("ferryman_sessions_completed_total", (("kind", "backup"), ("status", "success")))]
        == 1
    )
    assert after.get(("ferryman_sessions_running", backup), 0) == 0
    assert (
        after[("ferryman_tasks_completed_total", (("kind", "backup"), ("state", "success")))] == 2
    )
    assert after[("ferryman_bytes_read_total", backup)] == 5_000_001_000
    assert after[("ferryman_bytes_new_total", backup)] == 2_500_000_500
    assert after[("ferryman_bytes_transferred_total", backup)] == 1_250_000_250
    assert after[("ferryman_queue_length", ())] == 0
    stamp = after[("ferryman_job_last_session_end_timestamp_seconds", (("job", "nightly"),))]
    assert abs(stamp - ended.timestamp()) < 0.001
    # API requests are timed by route template
    assert any(
        name == "ferryman_http_request_duration_seconds_count"
        and dict(labels).get("route") == "/api/v1/shares"
        for name, labels in after
    )


def test_metrics_need_a_token_unless_public(api: Api, ctx: ServerContext) -> None:
    assert api.client.get("/metrics").status_code == 401
    viewer = api.post("/tokens", {"name": "prom", "role": "viewer"})["token"]
    assert ("ferryman_queue_length", ()) in scrape(api, viewer)
    ctx.config.metrics_public = True
    assert api.client.get("/metrics").status_code == 200


def test_proxy_states_agree_with_the_api(api: Api, ctx: ServerContext, tmp_path: Path) -> None:
    api.post("/shares", {"name": "a", "url": str(tmp_path)})
    api.post("/jobs", {"name": "nightly", "shares": ["a"], "repository": "default"})
    with ctx.db.session() as db:
        job = db.scalar(select(Job))
        proxy = db.scalar(select(Proxy))
        assert job is not None and proxy is not None
        task = start_backup_session(db, job, 1, (1 << 40, 1 << 30)).tasks[0]
        proxy.last_heartbeat = dt.datetime.now(dt.UTC)
        task.state, task.proxy_id = "running", proxy.id
        task_id = task.id
    api.post("/proxies/embedded/disable", expect=200)

    def states() -> dict[str, float]:
        values = scrape(api)
        return {s: values[("ferryman_proxies", (("state", s),))] for s in PROXY_STATES}

    assert api.get("/proxies/embedded")["state"] == "draining"
    assert states() == {"online": 0, "offline": 0, "disabled": 0, "draining": 1}
    assert scrape(api)[("ferryman_proxy_slots", ())] == 0  # only online proxies count
    with ctx.db.session() as db:
        db.get_one(Task, task_id).state = "success"
    assert api.get("/proxies/embedded")["state"] == "disabled"
    assert states() == {"online": 0, "offline": 0, "disabled": 1, "draining": 0}
