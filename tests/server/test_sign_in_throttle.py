"""Console sign-in throttling: repeated failures for one user name or from one address are
answered 429 with Retry-After, without computing a password hash, for a growing period."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ferryman.server import users
from ferryman.server.api.app import create_app
from ferryman.server.api.routers import users as users_router
from ferryman.server.context import ServerContext
from ferryman.server.sign_in_throttle import (
    ADDRESS_LIMIT,
    USER_LIMIT,
    SignInLocked,
    SignInThrottle,
)

from .conftest import Api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_url() -> None:
    """The throttle lives in the server's memory: SQLite is enough here."""
    return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(ctx: ServerContext, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setattr(users_router, "FAILED_LOGIN_DELAY", 0.0)
    app = create_app(ctx)
    app.state.sign_in_throttle = SignInThrottle(clock)
    return app


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each password hash computed (the real scrypt still runs)."""
    calls: list[str] = []
    real = users._scrypt

    def counted(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        calls.append(password)
        return real(password, salt, n, r, p)

    monkeypatch.setattr(users, "_scrypt", counted)
    return calls


def client(app: FastAPI, address: str = "192.0.2.1") -> TestClient:
    return TestClient(app, base_url="https://testserver", client=(address, 40000))


@pytest.fixture
def web(app: FastAPI) -> Iterator[TestClient]:
    with client(app) as c:
        yield c


def login(web: TestClient, user: str, password: str) -> tuple[int, dict[str, str], str | None]:
    response = web.post("/api/v1/login", json={"user": user, "password": password})
    return response.status_code, response.json(), response.headers.get("retry-after")


def test_failures_for_one_user_lock_it_for_a_growing_period_without_hashing(
    api: Api, web: TestClient, clock: Clock, scrypt_calls: list[str]
) -> None:
    api.post("/users", {"name": "alice", "role": "viewer", "password": "correct horse"})
    for _ in range(USER_LIMIT):
        assert login(web, "alice", "wrong guess")[0] == 401
    scrypt_calls.clear()
    # locked: even the right password is refused, and no hash is computed for it
    status, body, retry_after = login(web, "alice", "correct horse")
    assert (status, body, retry_after) == (
        429,
        {"detail": "too many failed sign-ins; try again in 30 s"},
        "30",
    )
    assert scrypt_calls == []
    clock.now += 20
    assert login(web, "alice", "correct horse")[1]["detail"].endswith("try again in 10 s")
    # another user name from the same address is not held up by alice's lock
    assert login(web, "bob", "wrong guess")[0] == 401

    clock.now += 11  # the lock is over; failing again locks for twice as long
    for _ in range(USER_LIMIT):
        assert login(web, "alice", "wrong guess")[0] == 401
    assert login(web, "alice", "correct horse")[2] == "60"


def test_a_successful_sign_in_resets_the_user_count(
    api: Api, web: TestClient, clock: Clock
) -> None:
    api.post("/users", {"name": "alice", "role": "viewer", "password": "correct horse"})
    for _ in range(USER_LIMIT - 1):
        assert login(web, "alice", "wrong guess")[0] == 401
    assert login(web, "alice", "correct horse")[0] == 200
    for _ in range(USER_LIMIT - 1):  # counting starts again from zero
        assert login(web, "alice", "wrong guess")[0] == 401
    assert login(web, "alice", "correct horse")[0] == 200
    # after a lock, the success also forgets that there was one: the next lock is 30 s again
    for _ in range(USER_LIMIT):
        login(web, "alice", "wrong guess")
    clock.now += 31
    assert login(web, "alice", "correct horse")[0] == 200
    for _ in range(USER_LIMIT):
        login(web, "alice", "wrong guess")
    assert login(web, "alice", "correct horse")[2] == "30"


def test_failures_from_one_address_lock_that_address_only(
    api: Api, app: FastAPI, web: TestClient, clock: Clock, scrypt_calls: list[str]
) -> None:
    api.post("/users", {"name": "alice", "role": "viewer", "password": "correct horse"})
    # one client trying a different user name each time (and bad API tokens)
    for n in range(ADDRESS_LIMIT - 1):
        assert login(web, f"guess{n}", "password1")[0] == 401
    bad_token = web.post("/api/v1/login", json={"token": "fma_nope"})
    assert bad_token.status_code == 401
    scrypt_calls.clear()
    status, body, retry_after = login(web, "alice", "correct horse")
    assert status == 429 and retry_after == "30", body
    locked_token = web.post("/api/v1/login", json={"token": "fma_nope"})
    assert locked_token.status_code == 429
    assert scrypt_calls == []
    # the same user from another address signs in
    with client(app, "198.51.100.7") as elsewhere:
        assert login(elsewhere, "alice", "correct horse")[0] == 200
    clock.now += 30
    assert login(web, "alice", "correct horse")[0] == 200


def test_attempts_in_flight_count_so_parallel_guesses_cannot_all_slip_in(clock: Clock) -> None:
    """Many sign-ins sent at once for one name: only the limit's worth get a password check."""
    throttle = SignInThrottle(clock)
    started = [throttle.begin("alice", f"203.0.113.{n}") for n in range(USER_LIMIT)]
    with pytest.raises(SignInLocked) as refused:
        throttle.begin("alice", "203.0.113.99")
    assert refused.value.retry_after == 1  # the checks under way decide; ask again soon
    for attempt in started:
        throttle.failed(attempt)
    with pytest.raises(SignInLocked, match="try again in 30 s"):
        throttle.begin("alice", "203.0.113.99")
