"""The REST API as the CLI uses it: shapes, validation, roles, secrets (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Repository, Session, Task

from .conftest import Api


def test_health_ca_openapi_and_auth(api: Api) -> None:
    client = api.client
    assert client.get("/api/v1/health").json()["status"] == "ok"
    assert client.get("/api/v1/ca").text.startswith("-----BEGIN CERTIFICATE-----")
    assert "/api/v1/jobs" in client.get("/api/v1/openapi.json").json()["paths"]
    r = client.get("/api/v1/jobs")
    assert r.status_code == 401 and "bearer" in r.json()["detail"]
    r = client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert api.get("/whoami")["role"] == "administrator"


def test_embedded_proxy_and_default_repository_registered(api: Api) -> None:
    proxies = api.get("/proxies")
    assert [p["name"] for p in proxies] == ["embedded"]
    assert proxies[0]["embedded"] is True and proxies[0]["state"] == "offline"
    for key in (
        "name",
        "state",
        "version",
        "site",
        "slots",
        "busy_slots",
        "running_tasks",
        "last_heartbeat",
        "probes",
    ):
        assert key in proxies[0]
    repos = api.get("/repositories")
    assert [r["name"] for r in repos] == ["default"]
    assert "passphrase" not in str(repos)


def test_secrets_encrypted_at_rest(ctx: ServerContext) -> None:
    with ctx.db.session() as db:
        repo = db.scalar(select(Repository))
        assert repo is not None
        assert repo.passphrase_secret.startswith("v1:")
        clear = ctx.secrets.decrypt(repo.passphrase_secret, f"repository:{repo.id}:passphrase")
        assert len(clear) > 20 and clear not in repo.passphrase_secret
    assert (ctx.home.secret_key.stat().st_mode & 0o777) == 0o600


def test_share_job_session_flow(api: Api, tmp_path: Path) -> None:
    share = api.post(
        "/shares",
        {
            "name": "docs",
            "url": str(tmp_path),
            "site": "hq",
            "include": ["*.txt"],
            "io_control": "lower",
        },
    )
    assert share["max_proxies"] == 1 and share["site"] == "hq"
    api.post("/shares", {"name": "docs", "url": str(tmp_path)}, expect=409)
    job = api.post(
        "/jobs",
        {
            "name": "nightly",
            "shares": ["docs"],
            "repository": "default",
            "schedule": "0 2 * * *",
            "keep_last": 3,
            "priority": 70,
        },
    )
    assert job["shares"] == ["docs"] and job["proxies"] == "auto" and job["keep_last"] == 3
    session = api.post("/jobs/nightly/run")
    assert session["status"] == "running" and session["job"] == "nightly"
    task = session["tasks"][0]
    for key in ("id", "state", "proxy", "reason", "stats", "progress", "passed_over"):
        assert key in task
    api.post("/jobs/nightly/run", expect=409)
    assert [s["id"] for s in api.get("/sessions?job=nightly")] == [session["id"]]
    followed = api.get(f"/sessions/{session['id']}/follow?revision={session['revision']}&timeout=0")
    assert followed["id"] == session["id"]
    stopped = api.post(f"/sessions/{session['id']}/stop", expect=200)
    assert stopped["status"] == "stopped"
    api.call("DELETE", "/shares/docs", expect=409)
    api.call("DELETE", "/jobs/nightly", expect=204)
    api.call("DELETE", "/shares/docs", expect=204)
    assert api.get("/jobs") == []


def test_validation_errors_are_one_line_4xx(api: Api) -> None:
    cases = [
        ("/shares", {"name": "x", "url": "relative/path"}, 422, "absolute path"),
        ("/shares", {"name": "x", "url": "smb://host/share"}, 422, "needs a user"),
        ("/shares", {"name": "bad name", "url": "/tmp"}, 422, "name"),
        ("/shares", {"name": "x", "url": "/tmp", "io_control": "turbo"}, 422, "io_control"),
        ("/jobs", {"name": "j", "shares": ["nope"], "repository": "default"}, 404, "unknown share"),
        (
            "/jobs",
            {"name": "j", "shares": ["a"], "repository": "d", "schedule": "61 * * * *"},
            422,
            "cron",
        ),
        ("/repositories", {"name": "r", "url": "/tmp/r"}, 422, "passphrase is required"),
        ("/repositories", {"name": "r", "url": "ftp://x", "passphrase": "p"}, 422, "unsupported"),
        ("/proxies/join-tokens", {"ttl": "forever"}, 422, "duration"),
        ("/restores", {"point": 1, "to": "/tmp/x", "in_place": True}, 422, "exactly one"),
        ("/restores", {"point": 99, "to": "/tmp/x"}, 404, "unknown restore point"),
        ("/tokens", {"name": "t", "role": "god"}, 422, "unknown role"),
    ]
    for path, body, status, words in cases:
        assert words in api.error("POST", path, status, json=body)
    r = api.call(
        "POST", "/shares", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert api.call("GET", "/sessions/12345").status_code == 404
    assert api.call("GET", "/jobs/nope").status_code == 404


def test_roles_are_enforced(api: Api, tmp_path: Path) -> None:
    tokens = {
        role: api.post("/tokens", {"name": role, "role": role})["token"]
        for role in ("viewer", "restore-operator", "operator")
    }
    api.post("/shares", {"name": "s", "url": str(tmp_path)})
    api.post("/jobs", {"name": "j", "shares": ["s"], "repository": "default"})
    assert api.call("GET", "/jobs", token=tokens["viewer"]).status_code == 200
    r = api.call("POST", "/jobs/j/run", token=tokens["viewer"])
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    assert api.call("POST", "/jobs/j/run", token=tokens["restore-operator"]).status_code == 403
    session = api.call("POST", "/jobs/j/run", token=tokens["operator"], expect=201).json()
    assert (
        api.call(
            "POST", f"/sessions/{session['id']}/stop", token=tokens["restore-operator"]
        ).status_code
        == 403
    )
    for role in tokens:
        body = {"name": "s2", "url": str(tmp_path)}
        assert api.call("POST", "/shares", json=body, token=tokens[role]).status_code == 403
        assert (
            api.call("POST", "/proxies/join-tokens", json={}, token=tokens[role]).status_code == 403
        )
    assert api.call("GET", "/tokens", token=tokens["operator"]).status_code == 403


def test_join_token_shape_and_proxy_routes_need_a_certificate(api: Api) -> None:
    answer = api.post("/proxies/join-tokens", {"ttl": "30m"})
    assert answer["token"].startswith("fmj_") and answer["expires"]
    r = api.client.post("/proxy/v1/heartbeat", json={"slots": 1, "version": "x"})
    assert r.status_code == 401 and "certificate" in r.json()["detail"]


def test_job_with_explicit_proxies_and_unknown_proxy(api: Api, tmp_path: Path) -> None:
    api.post("/shares", {"name": "s", "url": str(tmp_path)})
    job = api.post(
        "/jobs", {"name": "j", "shares": ["s"], "repository": "default", "proxies": ["embedded"]}
    )
    assert job["proxies"] == ["embedded"]
    r = api.call(
        "POST",
        "/jobs",
        json={"name": "k", "shares": ["s"], "repository": "default", "proxies": "ghost"},
    )
    assert r.status_code == 404 and "unknown proxy 'ghost'" in r.json()["detail"]


def test_session_kinds_hidden_from_default_list(api: Api, ctx: ServerContext) -> None:
    with ctx.db.session() as db:
        db.add(Session(kind="browse", status="success"))
    assert api.get("/sessions") == []
    assert len(api.get("/sessions?kind=browse")) == 1
    with ctx.db.session() as db:
        assert db.scalar(select(Task)) is None


def test_hostile_values_never_give_a_5xx(api: Api, tmp_path: Path) -> None:
    huge = "9" * 30
    for path in (
        f"/sessions/{huge}",
        f"/jobs/{huge}",
        f"/points/{huge}",
        "/sessions/-1",
        f"/sessions/{2**63}",
    ):
        r = api.call("GET", path)
        assert r.status_code in (404, 422), (path, r.text)
    bodies = [
        ("/shares", {"name": "n", "url": "/tmp/a\x00b"}),
        ("/shares", {"name": "n", "url": str(tmp_path), "site": "s\x00"}),
        ("/tokens", {"name": "t\x00", "role": "viewer"}),
        ("/jobs", {"name": "j", "shares": ["x"], "repository": "default", "priority": 10**30}),
        ("/jobs", {"name": "j", "shares": ["x"], "repository": "default", "keep_last": 10**12}),
        ("/restores", {"point": 10**30, "to": "/tmp/x"}),
        ("/proxies/join-tokens", {"ttl": 1e300}),
        ("/repositories", {"name": "r", "url": "/tmp/\x00", "passphrase": "p"}),
    ]
    for path, body in bodies:
        r = api.call("POST", path, json=body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)


def test_disabled_job_does_not_run(api: Api, tmp_path: Path) -> None:
    api.post("/shares", {"name": "s", "url": str(tmp_path)})
    api.post("/jobs", {"name": "j", "shares": ["s"], "repository": "default"})
    assert api.post("/jobs/j/disable", expect=200)["enabled"] is False
    r = api.call("POST", "/jobs/j/run")
    assert r.status_code == 409 and "disabled" in r.json()["detail"]
    assert api.post("/jobs/j/enable", expect=200)["enabled"] is True
    api.post("/jobs/j/run")


def test_restore_operator_browses_and_restores_viewer_does_not(api: Api) -> None:
    viewer = api.post("/tokens", {"name": "v", "role": "viewer"})["token"]
    restorer = api.post("/tokens", {"name": "r", "role": "restore-operator"})["token"]
    assert api.call("GET", "/points/1/ls", token=viewer).status_code == 403
    assert api.call("GET", "/versions?share=s&path=/a", token=viewer).status_code == 403
    body = {"point": 1, "to": "/tmp/x"}
    assert api.call("POST", "/restores", json=body, token=viewer).status_code == 403
    # allowed for the restore operator (404: there is no such point here)
    assert api.call("POST", "/restores", json=body, token=restorer).status_code == 404
    assert api.call("GET", "/points/1/ls", token=restorer).status_code == 404


def test_no_5xx_from_schema_driven_junk(api: Api) -> None:
    """Every route, every method, with junk path values, query strings and bodies: never a
    5xx, and every refusal is ``{"detail": "one line"}``."""
    schema = api.client.get("/api/v1/openapi.json").json()
    junk_values = ["-1", "9" * 40, "%00"]
    junk_bodies: list[object] = [
        None,
        [],
        {"name": 1, "url": 2, "shares": "x", "ttl": -5, "point": "a"},
        10**40,
    ]
    for path, methods in schema["paths"].items():
        for method in methods:
            for value in junk_values:
                url = path.replace("/api/v1", "")
                for name in ("ref", "session_id", "token_id", "task_id"):
                    url = url.replace("{" + name + "}", value)
                if url.startswith("/proxy/") or url == "/events":
                    continue  # /events never ends; tests/cli/test_console.py sends it junk
                for body in junk_bodies:
                    r = api.call(
                        method.upper(), f"{url}?path={value}&share={value}&job={value}", json=body
                    )
                    assert r.status_code < 500, (method, url, body, r.status_code, r.text)
                    if r.status_code >= 400:  # refused with one clear line (the console shows it)
                        detail = r.json()["detail"]
                        assert isinstance(detail, str) and detail.strip(), (method, url, r.text)
                        assert "\n" not in detail, (method, url, r.text)


def test_init_refuses_an_existing_home_or_database(server_home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from ferryman.server.init import InitError, init_server

    with pytest.raises(InitError, match="already a Ferryman server home"):
        init_server(server_home.home, "127.0.0.1:1", None)
    with pytest.raises(InitError, match="already holds a Ferryman installation"):
        init_server(tmp_path / "other", "127.0.0.1:1", server_home.db_url)
    assert not (tmp_path / "other" / "secret.key").exists()
