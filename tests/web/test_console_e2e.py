"""The web console end to end, in Debian's chromium against a real server and two proxies.

Sign in (password, API token), create a repository, a share and a job through the forms
(with their validation errors), run the job and follow the session live to success,
browse the restore point and restore one folder elsewhere, and check what each role may
do. Every page visited must log no console error (see ``browsing`` in conftest.py).
The tests run in file order and build on each other's objects; run alone (``-k``), a
test makes what it needs through the CLI first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cli.test_end_to_end import tree

from .conftest import Browsing, Console, fill, go, need_playwright, sign_in, submit, view

expect = need_playwright()

pytestmark = pytest.mark.timeout(300)

REPO, SHARE, JOB = "web-repo", "web-share", "web-job"
REPO_PASSPHRASE = "web console passphrase"
SESSION_URL = re.compile(r"#/sessions/(\d+)$")


def _names(console: Console, kind: str) -> list[str]:
    return [item["name"] for item in console.installation.json(kind, "list")]


def ensure_job(console: Console) -> None:
    """The repository, share and job the form test creates, when that test did not run."""
    inst = console.installation
    if REPO not in _names(console, "repo"):
        done = inst.ferryman("repo", "add", REPO, str(inst.work / REPO), "--passphrase-env",
                             "WEB_PASS", env={"WEB_PASS": REPO_PASSPHRASE})  # fmt: skip
        assert done.returncode == 0, done.stderr
    if SHARE not in _names(console, "share"):
        inst.ok("share", "add", SHARE, str(console.source))
    if JOB not in _names(console, "job"):
        inst.ok("job", "add", JOB, "--share", SHARE, "--repo", REPO)


def ensure_backup(console: Console) -> int:
    """The id of the newest restore point of the share (a backup is run if there is none)."""
    ensure_job(console)
    inst = console.installation
    points = inst.json("point", "list", "--share", SHARE)
    if not points:
        running = inst.json("session", "list", "--job", JOB, "--kind", "backup")
        if running and running[-1]["status"] == "running":  # started by the run test
            inst.ferryman("session", "follow", str(running[-1]["id"]))
        else:
            inst.ok("job", "run", JOB, "--follow")
        points = inst.json("point", "list", "--share", SHARE)
    return int(points[-1]["id"])


def follow_session(page: Any) -> tuple[int, Any]:
    """After run/restore-start: the session page the console moved to, and its status."""
    page.wait_for_url(SESSION_URL)
    match = SESSION_URL.search(page.url)
    assert match, page.url
    detail = view(page, "session")
    return int(match.group(1)), detail.locator("[data-session-status]")


def status_is(word: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{word}\s*$", re.IGNORECASE)


def no_buttons(page: Any, *actions: str) -> None:
    for action in actions:
        expect(page.locator(f'[data-action="{action}"]')).to_have_count(0)


def web_post(page: Any, path: str, body: dict[str, Any] | None = None) -> int:
    """POST from inside the page with the signed-in cookie, as the console's own code does."""
    return int(
        page.evaluate(
            """async ([path, body]) => (await fetch('/api/v1' + path, {
                method: 'POST', credentials: 'same-origin',
                headers: {'X-Ferryman-Web': '1', 'Content-Type': 'application/json'},
                body: JSON.stringify(body || {}),
            })).status""",
            [path, body],
        )
    )


def test_sign_in_with_user_and_password_then_sign_out(console: Console, browsing: Browsing) -> None:
    page = browsing.open()
    login = view(page, "login")
    console.shot(page, "login")
    form = login.locator('form[data-form="login"]')
    fill(form, "user", "alice")
    fill(form, "password", "not the password")
    submit(form)
    expect(form.locator('[data-error="form"]')).to_contain_text("wrong user name or password")
    expect(page.locator('[data-view="dashboard"]')).to_have_count(0)

    sign_in(page, user="alice", password=console.passwords["alice"])
    me = page.request.get("/api/v1/whoami")
    assert me.status == 200
    assert {k: me.json()[k] for k in ("name", "role", "via")} == {
        "name": "alice",
        "role": "administrator",
        "via": "password",
    }
    # the session cookie alone does not make a state-changing request (CSRF guard)
    tokens = len(console.api("GET", "/tokens").json())
    refused = page.request.post("/api/v1/tokens", data={"name": "csrf", "role": "administrator"})
    assert refused.status == 403, refused.text()
    assert refused.json()["detail"] == "missing X-Ferryman-Web header"
    assert len(console.api("GET", "/tokens").json()) == tokens

    page.locator('[data-action="logout"]').click()
    view(page, "login")
    assert page.request.get("/api/v1/whoami").status == 401


def test_create_repository_share_and_job_through_the_forms(
    console: Console, browsing: Browsing
) -> None:
    inst = console.installation
    page = browsing.open("alice")

    # repository: a taken name is refused next to the name; then the real one
    repos = go(page, "#/repositories", "repositories")
    repos.locator('[data-action="create"]').click()
    form = page.locator('form[data-form="repository"]')
    fill(form, "name", "default")
    fill(form, "url", str(inst.work / REPO))
    fill(form, "passphrase", REPO_PASSPHRASE)
    submit(form)
    expect(form.locator('[data-error-for="name"]')).to_contain_text("already exists")
    expect(form.locator('[name="url"]')).to_have_value(str(inst.work / REPO))  # nothing lost
    fill(form, "name", REPO)
    submit(form)
    expect(repos.get_by_text(REPO, exact=True).first).to_be_visible()
    stored = {r["name"]: r for r in inst.json("repo", "list")}
    assert stored[REPO]["url"] == str(inst.work / REPO)
    assert (inst.work / REPO).is_dir()  # a proxy initialised it

    # share: a path no proxy can reach is refused next to the path; then the real one
    shares = go(page, "#/shares", "shares")
    shares.locator('[data-action="create"]').click()
    form = page.locator('form[data-form="share"]')
    fill(form, "name", SHARE)
    fill(form, "url", str(console.source / "no-such-folder"))
    submit(form)
    expect(form.locator('[data-error-for="url"]')).to_be_visible()
    expect(form.locator('[name="name"]')).to_have_value(SHARE)
    assert SHARE not in _names(console, "share")
    fill(form, "url", str(console.source))
    submit(form)
    expect(shares.get_by_text(SHARE, exact=True).first).to_be_visible()
    stored = {s["name"]: s for s in inst.json("share", "list")}
    assert stored[SHARE]["url"] == str(console.source)

    # job: a bad cron expression is refused next to the schedule, a taken name next to it
    jobs = go(page, "#/jobs", "jobs")
    jobs.locator('[data-action="create"]').click()
    form = page.locator('form[data-form="job"]')
    fill(form, "name", JOB)
    fill(form, "shares", [SHARE])
    fill(form, "repository", REPO)
    fill(form, "schedule", "61 * * x")
    submit(form)
    expect(form.locator('[data-error-for="schedule"]')).to_contain_text("cron")
    assert JOB not in _names(console, "job")
    fill(form, "schedule", "0 0 1 1 *")  # once a year: never fires during the tests
    submit(form)
    expect(jobs.locator(f'[data-action="run-job"][data-job="{JOB}"]')).to_be_visible()
    job = next(j for j in inst.json("job", "list") if j["name"] == JOB)
    assert job["schedule"] == "0 0 1 1 *"
    assert job["repository"] == REPO and job["shares"] == [SHARE]

    jobs.locator('[data-action="create"]').click()
    form = page.locator('form[data-form="job"]')
    fill(form, "name", JOB)
    fill(form, "shares", [SHARE])
    fill(form, "repository", REPO)
    submit(form)
    expect(form.locator('[data-error-for="name"]')).to_contain_text("already exists")
    assert _names(console, "job").count(JOB) == 1


def test_run_the_job_and_follow_the_session_live_to_success(
    console: Console, browsing: Browsing
) -> None:
    ensure_job(console)
    inst = console.installation
    page = browsing.open("alice")
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/v1/events" in r.url else None)
    # with every proxy disabled the task waits: the page is open before anything moves
    inst.ok("proxy", "disable", "embedded")
    inst.ok("proxy", "disable", "branch-1")
    try:
        jobs = go(page, "#/jobs", "jobs")
        jobs.locator(f'[data-action="run-job"][data-job="{JOB}"]').click()
        session_id, status = follow_session(page)
        expect(status).to_have_text(status_is("running"))
        expect(page.locator("[data-task]").first).to_contain_text("waiting")
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    finally:
        inst.ok("proxy", "enable", "embedded")
        inst.ok("proxy", "enable", "branch-1")

    expect(status).to_have_text(status_is("success"))
    assert page.evaluate("window.__sameDocument === true"), "the session view was reloaded"
    assert any(f"session={session_id}" in url for url in streams), streams

    shown = inst.json("session", "show", str(session_id))
    assert shown["status"] == "success" and shown["job"] == JOB
    detail = view(page, "session")
    rows = detail.locator("[data-task]")
    expect(rows).to_have_count(len(shown["tasks"]))
    for task in shown["tasks"]:
        row = detail.locator(f'[data-task="{task["id"]}"]')
        expect(row).to_contain_text(task["proxy"])
    chart = detail.locator('[data-chart="throughput"]')
    expect(chart).to_be_visible()
    samples = console.api("GET", f"/sessions/{session_id}/throughput").json()["samples"]
    assert {s["task"] for s in samples} == {t["id"] for t in shown["tasks"]}
    # the chart draws once the samples span more than one second (two 1 s buckets)
    times = [s["t"] for s in samples]
    if max(times) - min(times) > 1:
        expect(chart.locator("canvas").first).to_be_visible()
    else:
        expect(chart).to_contain_text("No throughput figures")
    console.shot(page, "session")


def test_browse_the_restore_point_and_restore_one_folder_elsewhere(
    console: Console, browsing: Browsing
) -> None:
    point = ensure_backup(console)
    target = console.installation.work / "restored-from-web"
    page = browsing.open("alice")
    restore = go(page, "#/restore", "restore")
    restore.locator('select[name="share"]').select_option(SHARE)
    restore.locator(f'[data-point="{point}"]').click()
    # the picked point is announced as pressed, by its name
    picked = restore.get_by_role("button", name=f"restore point #{point},")
    expect(picked).to_have_attribute("aria-pressed", "true")
    expect(restore.locator('[data-path="/readme.txt"]')).to_be_visible()
    restore.locator('[data-action="versions"][data-path="/readme.txt"]').click()
    versions = restore.locator('[data-versions="/readme.txt"]')
    expect(versions.locator(f'[data-version="{point}"]')).to_be_visible()
    # the file row is a keyboard control too: focused, Enter lists the versions again
    versions.get_by_role("button", name="Close").click()
    expect(versions).to_have_count(0)
    restore.locator('[data-path="/readme.txt"]').press("Enter")
    expect(versions.locator(f'[data-version="{point}"]')).to_be_visible()
    restore.locator('[data-open="/projects"]').click()
    expect(restore.locator('[data-path="/projects/alpha"]')).to_be_visible()
    expect(restore.locator('[data-path="/projects/beta"]')).to_be_visible()
    restore.locator('input[type="checkbox"][data-select="/projects"]').check()
    restore.locator('input[name="to"]').fill(str(target))
    restore.locator('select[name="overwrite"]').select_option("replace")
    console.shot(page, "restore")
    restore.locator('[data-action="restore-start"]').click()

    session_id, status = follow_session(page)
    expect(status).to_have_text(status_is("success"))
    shown = console.installation.json("session", "show", str(session_id))
    assert shown["kind"] == "restore" and shown["status"] == "success"
    assert tree(target / "projects") == tree(console.source / "projects")
    assert sorted(p.name for p in target.iterdir()) == ["projects"]  # that folder only


def test_an_api_token_signs_in_with_its_role(console: Console, browsing: Browsing) -> None:
    ensure_job(console)
    made = console.api("POST", "/tokens", json={"name": "web operator", "role": "operator"})
    assert made.status_code == 201, made.text
    page = browsing.open()
    sign_in(page, token=made.json()["token"])
    me = page.request.get("/api/v1/whoami").json()
    assert (me["name"], me["role"], me["via"]) == ("web operator", "operator", "token")
    # an operator runs jobs but does not create or remove them
    jobs = go(page, "#/jobs", "jobs")
    expect(jobs.locator(f'[data-action="run-job"][data-job="{JOB}"]')).to_be_visible()
    no_buttons(page, "create", "delete")


def test_a_viewer_sees_everything_but_cannot_run_or_restore(
    console: Console, browsing: Browsing
) -> None:
    point = ensure_backup(console)
    before = len(console.installation.json("session", "list"))
    page = browsing.open("victor")
    expect(page.locator('[data-nav="users"]')).to_have_count(0)  # administrators only
    users = go(page, "#/users", "users")  # as from a bookmark: no list, no buttons
    expect(users).to_contain_text("Only administrators")
    expect(users.locator("table")).to_have_count(0)
    no_buttons(page, "create", "password", "delete")
    jobs = go(page, "#/jobs", "jobs")
    expect(jobs.get_by_text(JOB, exact=True).first).to_be_visible()
    no_buttons(page, "run-job", "create", "edit", "delete", "enable", "disable")
    for route, name, row in (
        ("#/repositories", "repositories", REPO),
        ("#/shares", "shares", SHARE),
    ):
        listed = go(page, route, name)
        expect(listed.locator(f'[data-row="{row}"]')).to_be_visible()  # the rows are there
        no_buttons(page, "create", "edit", "delete")
    proxies = go(page, "#/proxies", "proxies")
    expect(proxies.locator('[data-row="branch-1"]')).to_be_visible()
    no_buttons(page, "enable", "disable", "drain", "delete")
    restore = go(page, "#/restore", "restore")
    restore.locator('select[name="share"]').select_option(SHARE)
    restore.locator(f'[data-point="{point}"]').click()
    expect(restore).to_contain_text("needs the restore-operator role")  # file names: no
    expect(restore.locator("[data-path]")).to_have_count(0)
    no_buttons(page, "restore-start")
    assert page.request.get(f"/api/v1/points/{point}/ls").status == 403

    # and the API refuses it all the same
    assert web_post(page, f"/jobs/{JOB}/run") == 403
    assert page.request.get("/api/v1/users").status == 403
    intruder = {"name": "mallory", "role": "administrator", "password": "long enough password"}
    assert web_post(page, "/users", intruder) == 403
    assert "mallory" not in _names(console, "user")
    target = str(console.installation.work / "viewer-restore")
    refused = page.request.post(
        "/api/v1/restores",
        headers={"X-Ferryman-Web": "1"},
        data={"point": point, "paths": ["/projects"], "to": target},
    )
    assert refused.status == 403, refused.text()
    assert len(console.installation.json("session", "list")) == before
    assert not Path(target).exists()


def test_a_restore_operator_restores_but_changes_no_job(
    console: Console, browsing: Browsing
) -> None:
    point = ensure_backup(console)
    page = browsing.open("olga")
    jobs = go(page, "#/jobs", "jobs")
    expect(jobs.get_by_text(JOB, exact=True).first).to_be_visible()
    no_buttons(page, "run-job", "create", "edit", "delete")
    restore = go(page, "#/restore", "restore")
    restore.locator('select[name="share"]').select_option(SHARE)
    restore.locator(f'[data-point="{point}"]').click()
    expect(restore.locator('[data-action="restore-start"]')).to_be_visible()
    # a restore operator may browse the point's files and tick them
    expect(restore.locator('[data-path="/readme.txt"]')).to_be_visible()
    expect(restore.locator('input[type="checkbox"][data-select="/projects"]')).to_be_enabled()
    assert web_post(page, f"/jobs/{JOB}/run") == 403


def test_an_administrator_disables_and_enables_a_proxy(
    console: Console, browsing: Browsing
) -> None:
    inst = console.installation
    page = browsing.open("alice")
    proxies = go(page, "#/proxies", "proxies")
    row = proxies.locator('[data-row="branch-1"]')
    try:
        proxies.locator('[data-action="disable"][data-proxy="branch-1"]').click()
        expect(row).to_have_attribute("data-proxy-state", "disabled")
        states = {p["name"]: p["state"] for p in inst.json("proxy", "list")}
        assert states["branch-1"] == "disabled" and states["embedded"] == "online"
        proxies.locator('[data-action="enable"][data-proxy="branch-1"]').click()
        expect(row).to_have_attribute("data-proxy-state", "online")
    finally:
        inst.ok("proxy", "enable", "branch-1")
    assert {p["name"]: p["state"] for p in inst.json("proxy", "list")}["branch-1"] == "online"


def test_every_view_renders_without_console_errors(console: Console, browsing: Browsing) -> None:
    ensure_backup(console)
    session_id = console.installation.json("session", "list", "--job", JOB)[-1]["id"]
    page = browsing.open("alice")
    views = [
        ("#/dashboard", "dashboard"),
        ("#/proxies", "proxies"),
        ("#/repositories", "repositories"),
        ("#/shares", "shares"),
        ("#/jobs", "jobs"),
        ("#/sessions", "sessions"),
        (f"#/sessions/{session_id}", "session"),
        ("#/restore", "restore"),
        ("#/users", "users"),
    ]
    for route, name in views:
        page.goto("/" + route)  # a full load of each, as from a bookmark
        view(page, name)
    dashboard = go(page, "#/dashboard", "dashboard")
    expect(dashboard.get_by_text(JOB).first).to_be_visible()
    console.shot(page, "dashboard")
    proxies = go(page, "#/proxies", "proxies")
    for name in ("embedded", "branch-1"):
        expect(proxies.get_by_text(name, exact=True).first).to_be_visible()
    expect(proxies.get_by_text("branch", exact=True).first).to_be_visible()  # its site
    console.shot(page, "proxies")
    for route, name, shown in (
        ("#/repositories", "repositories", REPO),
        ("#/shares", "shares", SHARE),
        ("#/jobs", "jobs", JOB),
        ("#/sessions", "sessions", JOB),
        ("#/users", "users", "olga"),
    ):
        listed = go(page, route, name)
        expect(listed.locator("table").get_by_text(shown, exact=True).first).to_be_visible()
        console.shot(page, name)
    assert browsing.problems == [], "\n".join(browsing.problems)


def test_an_administrator_edits_and_removes_a_job_from_its_row(
    console: Console, browsing: Browsing
) -> None:
    ensure_job(console)
    inst = console.installation
    spare = "web-job-spare"
    if spare not in _names(console, "job"):
        inst.ok("job", "add", spare, "--share", SHARE, "--repo", REPO)
    page = browsing.open("alice")
    jobs = go(page, "#/jobs", "jobs")

    jobs.locator(f'[data-action="edit"][data-job="{spare}"]').click()
    form = page.locator('form[data-form="job"][data-mode="edit"]')
    fill(form, "priority", "7")
    submit(form)
    expect(form).to_have_count(0)
    assert next(j for j in inst.json("job", "list") if j["name"] == spare)["priority"] == 7

    # remove asks in place; only the confirmation removes it
    jobs.locator(f'[data-action="delete"][data-job="{spare}"]').click()
    assert spare in _names(console, "job")
    jobs.locator('[data-action="confirm"]').click()
    expect(jobs.locator(f'[data-row="{spare}"]')).to_have_count(0)
    assert spare not in _names(console, "job")
    expect(jobs.locator(f'[data-row="{JOB}"]')).to_be_visible()


def test_an_administrator_adds_a_user_sets_a_password_and_removes_the_user(
    console: Console, browsing: Browsing
) -> None:
    inst = console.installation
    page = browsing.open("alice")
    page.locator('[data-nav="users"]').click()
    users = view(page, "users")
    expect(users.locator('[data-row="victor"]')).to_contain_text("viewer")

    elsewhere = browsing.open()  # its own cookies: alice stays signed in on ``page``

    def sign_in_status(password: str) -> int:
        answer = elsewhere.request.post(
            "/api/v1/login", data={"user": "wendy", "password": password}
        )
        return int(answer.status)

    users.locator('[data-action="create"]').click()
    form = page.locator('form[data-form="user"][data-mode="create"]')
    fill(form, "name", "alice")  # taken
    form.locator('select[name="role"]').select_option("operator")
    fill(form, "password", "long enough password")
    submit(form)
    expect(form.locator('[data-error-for="name"]')).to_contain_text("alice")
    fill(form, "name", "wendy")
    fill(form, "password", "short")
    submit(form)
    expect(form.locator('[data-error-for="password"]')).to_contain_text("8")
    assert "wendy" not in _names(console, "user")
    fill(form, "password", "first password of wendy")
    submit(form)
    expect(form).to_have_count(0)
    expect(users.locator('[data-row="wendy"]')).to_contain_text("operator")
    assert {u["name"]: u["role"] for u in inst.json("user", "list")}["wendy"] == "operator"
    assert sign_in_status("first password of wendy") == 200

    users.locator('[data-action="password"][data-user="wendy"]').click()
    form = page.locator('form[data-form="user"][data-mode="edit"]')
    fill(form, "password", "short")
    submit(form)
    expect(form.locator('[data-error-for="password"]')).to_contain_text("8")
    assert sign_in_status("first password of wendy") == 200  # refused: nothing changed
    fill(form, "password", "second password of wendy")
    submit(form)
    expect(form).to_have_count(0)
    assert sign_in_status("first password of wendy") == 401
    assert sign_in_status("second password of wendy") == 200

    users.locator('[data-action="delete"][data-user="wendy"]').click()
    users.locator('[data-action="confirm"]').click()
    expect(users.locator('[data-row="wendy"]')).to_have_count(0)
    assert "wendy" not in _names(console, "user")
    assert sign_in_status("second password of wendy") == 401
    # alice's own session is untouched by all this
    assert page.request.get("/api/v1/whoami").json()["name"] == "alice"
    # the same request without the console's header (a cross-site form cannot set it)
    forged = page.request.post(
        "/api/v1/users", data={"name": "mallory", "role": "viewer", "password": "long enough"}
    )
    assert forged.status == 403, forged.text()
    assert "mallory" not in _names(console, "user")
