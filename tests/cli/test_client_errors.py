"""HTTP failures become one clean line (error-path formatting only; the real server
is exercised in test_end_to_end.py)."""

from __future__ import annotations

import socket

import httpx
import pytest

from ferryman.cli.client import ApiClient
from ferryman.cli.config import Connection
from ferryman.cli.errors import ApiError, CliError


def client_answering(status: int, body: object = None, text: str | None = None) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer secret"
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    conn = Connection(server="http://server.test", token="secret", ca_file=None)
    return ApiClient(conn, transport=httpx.MockTransport(handler))


def test_detail_string_is_the_message() -> None:
    client = client_answering(404, {"detail": "share 'nope' not found"})
    with pytest.raises(ApiError) as caught:
        client.get("/shares/nope")
    assert caught.value.message == "share 'nope' not found"
    assert caught.value.status_code == 404


def test_validation_list_names_the_fields() -> None:
    body = {
        "detail": [
            {"loc": ["body", "schedule"], "msg": "Value error, invalid cron expression 'x'"},
            {"loc": ["body", "priority"], "msg": "Input should be less than or equal to 100"},
        ]
    }
    with pytest.raises(ApiError) as caught:
        client_answering(422, body).post("/jobs", {})
    assert caught.value.message == (
        "schedule: invalid cron expression 'x'; priority: Input should be less than or equal to 100"
    )


def test_unauthorized_hints_at_the_token() -> None:
    with pytest.raises(ApiError, match=r"not authenticated: bad token \(check --token"):
        client_answering(401, {"detail": "bad token"}).get("/jobs")


def test_server_error_without_json_is_one_line() -> None:
    with pytest.raises(ApiError) as caught:
        client_answering(502, text="Bad Gateway\n<html>...</html>").get("/jobs")
    assert caught.value.message == "the backup server failed (HTTP 502): Bad Gateway"


def test_non_json_success_is_reported() -> None:
    with pytest.raises(CliError, match="not JSON"):
        client_answering(200, text="<html>").get("/jobs")


def test_empty_answer_is_none() -> None:
    assert client_answering(204, text="").delete("/jobs/x") is None


def test_connection_refused_names_the_server() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ApiClient(Connection(server=f"http://127.0.0.1:{port}", token=None, ca_file=None))
    with pytest.raises(CliError) as caught:
        client.get("/health")
    assert caught.value.message.startswith(
        f"cannot reach the backup server at http://127.0.0.1:{port}: "
    )
    assert "refused" in caught.value.message
