"""Console sign-in: users with scrypt passwords, cookie sessions, the CSRF header, roles,
and the console's static files served by the same app."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from ferryman.server.api.app import create_app
from ferryman.server.context import ServerContext
from ferryman.server.db.models import User, WebSession
from ferryman.server.init import InitError, InitResult, init_server
from ferryman.server.users import LastAdministrator, remove_user
from ferryman.server.web_sessions import COOKIE

from .conftest import FAST_SCRYPT, Api

WEB = {"X-Ferryman-Web": "1"}


@pytest.fixture
def browser(ctx: ServerContext) -> Iterator[TestClient]:
    """A client on https (the cookie is Secure) that keeps cookies like a browser."""
    with TestClient(create_app(ctx), base_url="https://testserver") as client:
        yield client


def add_user(api: Api, name: str, role: str, password: str = "correct horse") -> None:
    api.post("/users", {"name": name, "role": role, "password": password})


def sign_in(browser: TestClient, name: str, password: str = "correct horse") -> None:
    response = browser.post("/api/v1/login", json={"user": name, "password": password})
    assert response.status_code == 200, response.text


def test_password_sign_in_sets_a_strict_cookie_and_whoami_says_password(
    api: Api, browser: TestClient, ctx: ServerContext
) -> None:
    add_user(api, "alice", "operator")
    response = browser.post("/api/v1/login", json={"user": "alice", "password": "correct horse"})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "alice", "role": "operator"}
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("ferryman_session=", "httponly", "secure", "samesite=strict", "path=/"):
        assert attribute in cookie
    me = browser.get("/api/v1/whoami").json()
    assert (me["name"], me["role"], me["via"]) == ("alice", "operator", "password")
    with ctx.db.session() as db:
        user = db.scalars(select(User)).one()
        assert user.last_login is not None
        assert "correct horse" not in user.password_hash
        assert user.password_hash.startswith("scrypt$16384$8$1$")
    # the password never comes back from the API
    assert "password" not in str(api.get("/users"))


def test_wrong_password_and_unknown_user_get_the_same_answer(api: Api, browser: TestClient) -> None:
    add_user(api, "alice", "viewer")
    wrong = browser.post("/api/v1/login", json={"user": "alice", "password": "not it at all"})
    unknown = browser.post("/api/v1/login", json={"user": "mallory", "password": "whatever1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong user name or password"}
    assert COOKIE not in wrong.cookies and COOKIE not in browser.cookies
    assert browser.get("/api/v1/whoami").status_code == 401


def test_same_password_gets_a_different_salt(api: Api, ctx: ServerContext) -> None:
    add_user(api, "a", "viewer")
    add_user(api, "b", "viewer")
    with ctx.db.session() as db:
        hashes = [u.password_hash for u in db.scalars(select(User))]
    assert hashes[0] != hashes[1]


def test_token_sign_in_then_logout_ends_the_session(
    browser: TestClient, server_home: InitResult, ctx: ServerContext
) -> None:
    response = browser.post("/api/v1/login", json={"token": server_home.token})
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "administrator"
    assert browser.get("/api/v1/whoami").json()["via"] == "token"
    bad = browser.post("/api/v1/login", json={"token": "fma_nope"})
    assert bad.status_code == 401 and bad.json()["detail"] == "unknown or revoked API token"
    stolen = browser.cookies[COOKIE]
    # another site's page cannot sign the user out: the header is needed with the cookie
    forged = browser.post("/api/v1/logout")
    assert forged.status_code == 403 and forged.json()["detail"] == "missing X-Ferryman-Web header"
    assert browser.get("/api/v1/whoami").status_code == 200
    assert browser.post("/api/v1/logout", headers=WEB).status_code == 204
    assert browser.get("/api/v1/whoami").status_code == 401
    with ctx.db.session() as db:
        assert db.scalars(select(WebSession)).all() == []
    # the old cookie value is worthless after logout
    replay = browser.get("/api/v1/whoami", headers={"Cookie": f"{COOKIE}={stolen}"})
    assert replay.status_code == 401


def test_idle_session_expires(api: Api, browser: TestClient, ctx: ServerContext) -> None:
    add_user(api, "alice", "viewer")
    sign_in(browser, "alice")
    assert browser.get("/api/v1/jobs").status_code == 200
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with ctx.db.session() as db:
        db.execute(update(WebSession).values(expires=past))
    response = browser.get("/api/v1/jobs")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_cookie_changes_need_the_console_header(api: Api, browser: TestClient) -> None:
    add_user(api, "root", "administrator")
    sign_in(browser, "root")
    body = {"name": "bob", "role": "viewer", "password": "long enough"}
    refused = browser.post("/api/v1/users", json=body)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "missing X-Ferryman-Web header"}
    assert [u["name"] for u in api.get("/users")] == ["root"]  # nothing was created
    assert browser.post("/api/v1/users", json=body, headers=WEB).status_code == 201
    # a bearer token needs no such header
    api.post("/users", {"name": "carol", "role": "viewer", "password": "long enough"})


def test_roles_apply_to_cookie_sessions(api: Api, browser: TestClient, ctx: ServerContext) -> None:
    add_user(api, "vera", "viewer")
    add_user(api, "olga", "operator")
    sign_in(browser, "vera")
    assert browser.get("/api/v1/jobs").status_code == 200
    refused = browser.post("/api/v1/jobs/nightly/run", headers=WEB)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "role 'viewer' may not do this (needs operator)"
    assert browser.get("/api/v1/users").status_code == 403
    sign_in(browser, "olga")  # a second sign-in replaces the cookie and the old session
    with ctx.db.session() as db:
        assert [s.name for s in db.scalars(select(WebSession))] == ["olga"]
    assert browser.post("/api/v1/jobs/nightly/run", headers=WEB).status_code == 404
    assert browser.get("/api/v1/users").status_code == 403


def test_user_management_errors_name_the_field(api: Api) -> None:
    add_user(api, "alice", "viewer")
    cases = [
        ({"name": "alice", "role": "viewer", "password": "long enough"}, 409, "name"),
        ({"name": "bob", "role": "viewer", "password": "short"}, 422, "password"),
        ({"name": "bob", "role": "king", "password": "long enough"}, 422, "role"),
        ({"name": "bad name", "role": "viewer", "password": "long enough"}, 422, "name"),
        ({"name": "bob", "role": "viewer", "password": "nul\x00in it"}, 422, "password"),
        ({"name": "bob", "role": "viewer"}, 422, "password"),
    ]
    for body, status, field in cases:
        response = api.call("POST", "/users", json=body)
        assert response.status_code == status, (body, response.text)
        answer = response.json()
        assert answer["field"] == field and "\n" not in answer["detail"], answer
    assert [u["name"] for u in api.get("/users")] == ["alice"]
    bad: object
    for bad in ({}, {"user": "a"}, {"user": "a", "password": "b", "token": "c"}, []):
        assert api.call("POST", "/login", json=bad).status_code == 422


def test_password_change_and_removal_sign_the_user_out(
    api: Api, browser: TestClient, ctx: ServerContext
) -> None:
    add_user(api, "alice", "viewer")
    sign_in(browser, "alice")
    api.post("/users/alice/password", {"password": "a new secret"}, expect=204)
    assert browser.get("/api/v1/whoami").status_code == 401
    wrong = browser.post("/api/v1/login", json={"user": "alice", "password": "correct horse"})
    assert wrong.status_code == 401
    sign_in(browser, "alice", "a new secret")
    api.post("/users/alice/password", {"password": "x"}, expect=422)
    api.call("DELETE", "/users/alice", expect=204)
    assert browser.get("/api/v1/whoami").status_code == 401
    with ctx.db.session() as db:
        assert db.scalars(select(WebSession)).all() == []
    assert api.error("DELETE", "/users/alice", 404) == "unknown user 'alice'"


def test_the_last_administrator_cannot_be_removed(api: Api, browser: TestClient) -> None:
    users = api.get("/users")
    admins = [u["name"] for u in users if u["role"] == "administrator"]
    others = {u["name"]: u["role"] for u in users if u["role"] != "administrator"}
    for name in ("alice", "bob"):
        add_user(api, name, "administrator")
    add_user(api, "carol", "viewer")
    for name in [*admins, "alice"]:  # another administrator remains: allowed
        api.call("DELETE", f"/users/{name}", expect=204)
    sign_in(browser, "bob")
    detail = api.error("DELETE", "/users/bob", 409)
    assert detail == "'bob' is the last administrator; add another administrator first"
    # nothing was lost: bob is still there and still signed in
    assert browser.get("/api/v1/whoami").json()["name"] == "bob"
    remaining = {u["name"]: u["role"] for u in api.get("/users")}
    assert remaining == {**others, "bob": "administrator", "carol": "viewer"}
    api.call("DELETE", "/users/carol", expect=204)  # other roles can always go
    add_user(api, "dave", "administrator")
    api.call("DELETE", "/users/bob", expect=204)  # no longer the last one


def test_two_administrators_removed_at_once_leave_one(api: Api, ctx: ServerContext) -> None:
    for name in ("alice", "bob"):
        add_user(api, name, "administrator")
    for user in api.get("/users"):
        if user["name"] not in ("alice", "bob"):
            api.call("DELETE", f"/users/{user['name']}", expect=204)
    alice_removed, commit_alice = threading.Event(), threading.Event()
    outcome: list[str] = []

    def remove(name: str, hold: bool) -> None:
        try:
            with ctx.db.session() as db:
                remove_user(db, db.scalars(select(User).where(User.name == name)).one())
                if hold:  # not committed yet while the other removal starts
                    alice_removed.set()
                    commit_alice.wait(10)
            outcome.append(f"{name} removed")
        except LastAdministrator:
            outcome.append(f"{name} refused")

    first = threading.Thread(target=remove, args=("alice", True))
    first.start()
    assert alice_removed.wait(10)
    second = threading.Thread(target=remove, args=("bob", False))
    second.start()
    second.join(0.5)  # bob's removal waits for alice's to commit (its lock, or its check)
    commit_alice.set()
    first.join()
    second.join()
    # alice's thread records after its commit, which also wakes bob's: either may record first
    assert sorted(outcome) == ["alice removed", "bob refused"]
    assert [(u["name"], u["role"]) for u in api.get("/users")] == [("bob", "administrator")]


def test_revoking_an_api_token_ends_its_console_sessions_at_once(
    api: Api, browser: TestClient, ctx: ServerContext
) -> None:
    made = api.post("/tokens", {"name": "ops", "role": "operator"})
    response = browser.post("/api/v1/login", json={"token": made["token"]})
    assert response.status_code == 200, response.text
    assert browser.get("/api/v1/whoami").json()["via"] == "token"
    api.call("DELETE", f"/tokens/{made['id']}", expect=204)
    refused = browser.get("/api/v1/whoami")
    assert refused.status_code == 401, refused.text
    with ctx.db.session() as db:
        assert db.scalars(select(WebSession)).all() == []
    again = browser.post("/api/v1/login", json={"token": made["token"]})
    assert again.status_code == 401


def test_console_files_are_served_on_the_same_app(browser: TestClient) -> None:
    page = browser.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    module = browser.get("/static/vendor/htm-preact-standalone.module.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert module.headers["cache-control"] == "no-cache"
    assert browser.get("/static/no-such-file.js").status_code == 404
    assert browser.get("/static/../../server/init.py").status_code == 404
    redirect = browser.get("/ui", follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/"


def test_server_init_can_add_a_console_administrator(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="invalid user name"):
        init_server(tmp_path / "bad", "127.0.0.1:18999", None, admin_user=("r/t", "long enough"))
    assert not (tmp_path / "bad").exists()
    result = init_server(
        tmp_path / "home",
        "127.0.0.1:18999",
        None,
        scrypt_n=FAST_SCRYPT,
        admin_user=("root", "long enough pw"),
    )
    context = ServerContext.open(result.home)
    try:
        with TestClient(create_app(context), base_url="https://testserver") as client:
            sign_in(client, "root", "long enough pw")
            me = client.get("/api/v1/whoami").json()
            assert (me["name"], me["role"], me["via"]) == ("root", "administrator", "password")
    finally:
        context.db.dispose()
