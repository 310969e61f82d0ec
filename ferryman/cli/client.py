"""The one HTTP client of the CLI: turns transport failures and HTTP errors into CliError."""

from __future__ import annotations

import json
import re
import ssl
import sys
from collections.abc import Iterator
from typing import Any

if "httpx" not in sys.modules:
    # httpx's package import also loads its own command-line tool (httpx._main), which pulls
    # in click, rich and pygments: a quarter of the CLI's start-up. Marking that module as
    # absent makes httpx fall back to its stub ``httpx.main`` (it guards that import with
    # ``except ImportError``); the client never uses it. A process that already imported
    # httpx (the server, the tests) is left as it is.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx

from ferryman.cli.config import Connection
from ferryman.cli.errors import ApiError, CliError, ServerUnreachable

API_PREFIX = "/api/v1"


class ApiClient:
    """Calls the backup server's REST API; every failure surfaces as a :class:`CliError`."""

    def __init__(
        self,
        connection: Connection,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.connection = connection
        headers = {"Accept": "application/json"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        verify: ssl.SSLContext | bool = True
        if connection.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(connection.ca_file))
        self._http = httpx.Client(
            base_url=connection.server + API_PREFIX,
            headers=headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def get(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def post(
        self,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        return self.request("POST", path, body=body, params=params, timeout=timeout)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Send one request and yield the JSON objects of a line-per-object (NDJSON) answer."""
        server = self.connection.server
        try:
            with self._http.stream(method, path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, error_message(response))
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the backup server at {server}: {_reason(exc)}"
            ) from exc
        except ValueError as exc:
            raise CliError(f"the backup server at {server} sent a line that is not JSON") from exc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (``None`` when empty)."""
        server = self.connection.server
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._http.request(
                method, path, json=body, params=clean_params or None, **extra
            )
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(
                f"the backup server at {server} did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                ca = self.connection.ca_file or "the system's trusted CAs"
                raise CliError(
                    f"the backup server at {server} has a certificate that does not verify "
                    f"against {ca} (wrong --ca or client config?): {_reason(exc)}"
                ) from exc
            raise ServerUnreachable(
                f"cannot reach the backup server at {server}: {_reason(exc)}"
            ) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_message(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"the backup server at {server} sent an answer that is not JSON "
                f"({method} {path}, HTTP {response.status_code})"
            ) from exc


def _reason(exc: Exception) -> str:
    """Short reason of a transport error: '[Errno 111] Connection refused' -> 'connection…'."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    text = text.replace("\n", " ").strip()
    return text[:1].lower() + text[1:]


def error_message(response: httpx.Response) -> str:
    """One line from a FastAPI error body (``detail`` string or validation list)."""
    detail: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body.get("error")))
    if isinstance(detail, list):
        detail = "; ".join(_validation_item(item) for item in detail)
    elif isinstance(detail, dict):
        detail = detail.get("message") or detail.get("msg") or str(detail)
    if not detail:
        text = response.text.strip().splitlines()
        detail = text[0] if text else response.reason_phrase
    message = " ".join(str(detail).split())
    if response.status_code == 401:
        return f"not authenticated: {message} (check --token / FERRYMAN_TOKEN or the client config)"
    if response.status_code == 403:
        return f"not allowed: {message}"
    if response.status_code >= 500:
        return f"the backup server failed (HTTP {response.status_code}): {message}"
    return message


def _validation_item(item: Any) -> str:
    """``{"loc": ["body", "schedule"], "msg": "bad cron"}`` -> ``schedule: bad cron``."""
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", []) if part not in ("body", "query", "path")]
    msg = str(item.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {msg}" if loc else msg
