"""Security headers: the console's page and files carry a strict Content-Security-Policy;
every answer forbids sniffing, referrers and framing; sign-in answers are never cached."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from ferryman.server.api.app import create_app
from ferryman.server.context import ServerContext
from ferryman.server.init import InitResult


@pytest.fixture
def db_url() -> None:
    """Headers do not depend on the database: SQLite is enough here."""
    return None


@pytest.fixture
def web(ctx: ServerContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), base_url="https://testserver") as client:
        yield client


def policy(value: str) -> dict[str, str]:
    return {
        part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in value.split("; ") if " " in part
    }


def assert_always(headers: httpx.Headers) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_console_page_and_files_get_a_strict_policy(web: TestClient) -> None:
    for path in ("/", "/static/app.js", "/static/vendor/uPlot.min.css", "/static/missing.js"):
        response = web.get(path)
        assert_always(response.headers)
        csp = policy(response.headers["content-security-policy"])
        assert csp == {
            "default-src": "'self'",
            "script-src": "'self'",
            "style-src": "'self'",
            "img-src": "'self' data:",
            "connect-src": "'self'",
            "object-src": "'none'",
            "frame-ancestors": "'none'",
            "base-uri": "'none'",
            "form-action": "'self'",
        }, path
        assert "unsafe" not in response.headers["content-security-policy"]
    assert web.get("/").headers["cache-control"] == "no-cache"  # files still revalidate


def test_api_answers_forbid_sniffing_and_framing_and_sign_in_is_not_stored(
    web: TestClient, server_home: InitResult
) -> None:
    bearer = {"Authorization": f"Bearer {server_home.token}"}
    proxies = web.get("/api/v1/proxies", headers=bearer)
    assert proxies.status_code == 200
    assert_always(proxies.headers)
    # the API's own documentation page loads Swagger UI from elsewhere: no console policy
    assert "content-security-policy" not in proxies.headers
    assert "content-security-policy" not in web.get("/api/v1/docs").headers
    refused = web.post("/api/v1/login", json={"token": "fma_nope"})
    assert refused.status_code == 401
    assert_always(refused.headers)
    assert refused.headers["cache-control"] == "no-store"
    signed_in = web.post("/api/v1/login", json={"token": server_home.token})
    assert signed_in.status_code == 200 and signed_in.headers["cache-control"] == "no-store"
    me = web.get("/api/v1/whoami")
    assert me.json()["via"] == "token" and me.headers["cache-control"] == "no-store"
    signed_out = web.post("/api/v1/logout", headers={"X-Ferryman-Web": "1"})
    assert signed_out.status_code == 204 and signed_out.headers["cache-control"] == "no-store"
    assert web.get("/api/v1/whoami").headers["cache-control"] == "no-store"  # 401 too
    assert_always(web.get("/api/v1/no-such-route").headers)
