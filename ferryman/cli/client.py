"""The one HTTP client of the CLI: turns transport failures and HTTP errors into CliError.

It speaks HTTP/1.1 over one kept-alive connection with the standard library's
``http.client``: a command's first request leaves as soon as its options are parsed.
httpx (the proxies' and the tests' client) took ~50 ms of CPU to import and set up on
every command, before that request (docs/cli.md, "Start-up"). What httpx did on its own
is kept: JSON bodies encoded the same way, ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/
``NO_PROXY`` honoured (through a plain ``http://`` proxy).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import select
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from ferryman.cli.config import Connection
from ferryman.cli.errors import ApiError, CliError, ServerUnreachable

API_PREFIX = "/api/v1"
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: the CA is right
NAME_MISMATCH = (62, 64)


@dataclass(frozen=True)
class Response:
    """One complete answer of the server."""

    status_code: int
    reason_phrase: str
    content: bytes
    content_type: str = ""
    location: str = ""  # where a redirect (HTTP 3xx) points

    @property
    def text(self) -> str:
        charset = re.search(r"charset=([\w-]+)", self.content_type)
        try:
            return self.content.decode(charset.group(1) if charset else "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The decoded JSON body; ``ValueError`` when it is not JSON."""
        return json.loads(self.content)


class ApiClient:
    """Calls the backup server's REST API; every failure surfaces as a :class:`CliError`."""

    def __init__(self, connection: Connection, timeout: float = 30.0) -> None:
        self.connection = connection
        self.timeout = timeout
        url = urlsplit(connection.server)
        self._https = url.scheme == "https"
        self._host = url.hostname or ""
        self._netloc = url.netloc  # host[:port] as written ([…] around IPv6)
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/") + API_PREFIX
        self._headers = {"Accept": "application/json", "User-Agent": "ferryman-cli"}
        if connection.token:
            self._headers["Authorization"] = f"Bearer {connection.token}"
        self._tls: ssl.SSLContext | None = None
        self._http: http.client.HTTPConnection | None = None
        self._via_proxy = False  # plain http through a proxy: absolute request targets

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

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
        try:
            answer = self._send(method, path, body, None, timeout=None)
            if answer.status >= 300:
                raise self._refusal(method, path, _complete(answer))
            for line in answer:
                if line.strip():
                    yield json.loads(line)
            answer.read()  # marks the answer complete: the connection can be used again
        except GeneratorExit:  # the caller stopped reading: the rest of the answer is lost
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from exc
        except ValueError as exc:
            self.close()
            server = self.connection.server
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
        try:
            response = _complete(
                self._send(method, path, body, params, self.timeout if timeout is None else timeout)
            )
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from exc
        if response.status_code >= 300:
            raise self._refusal(method, path, response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"the backup server at {server} sent an answer that is not JSON "
                f"({method} {path}, HTTP {response.status_code})"
            ) from exc

    def _refusal(self, method: str, path: str, response: Response) -> CliError:
        """The error for an answer that is no success: the server's message (HTTP 4xx, 5xx),
        or where it redirects to (HTTP 3xx), which the CLI does not follow, as httpx did not:
        a front end's redirect for a DELETE or POST comes without a body."""
        if response.status_code >= 400:
            return ApiError(response.status_code, error_message(response))
        return CliError(
            f"the backup server at {self.connection.server} redirects {method} {path} to "
            f"{response.location or '(no Location)'} (HTTP {response.status_code}): give the "
            "address it redirects to as --server or in the client config"
        )

    def _failure(self, exc: OSError | http.client.HTTPException) -> CliError:
        """The one line for a failed exchange; the connection is closed (its state is lost)."""
        self.close()
        server = self.connection.server
        if isinstance(exc, TimeoutError):
            return ServerUnreachable(f"the backup server at {server} did not answer in time")
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in NAME_MISMATCH:
            return CliError(
                f"the backup server at {server} has a certificate that does not name "
                f"{self._host} (give --server a name or address it holds): {_reason(exc)}"
            )
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            ca = self.connection.ca_file or "the system's trusted CAs"
            return CliError(
                f"the backup server at {server} has a certificate that does not verify "
                f"against {ca} (wrong --ca or client config?): {_reason(exc)}"
            )
        return ServerUnreachable(f"cannot reach the backup server at {server}: {_reason(exc)}")

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> http.client.HTTPResponse:
        """Send the request on the kept-alive connection (a new one if the server closed it)
        and return the answer with its body still to read."""
        target = self._prefix + path
        query = _query(params or {})
        if query:
            target += "?" + query
        headers = dict(self._headers)
        payload = None
        if body is not None:  # as httpx's json=: compact, UTF-8, no NaN
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            payload = text.encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout)
        if self._via_proxy:
            target = f"http://{self._netloc}{target}"
        conn.request(method, target, body=payload, headers=headers)
        return conn.getresponse()

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """The kept-alive connection, connected (again) if need be within ``timeout``, else
        the client's own (a stream waits for its answer, not for a dead server), and set to
        wait ``timeout`` for each read."""
        conn = self._http
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            conn.close()  # the server ended the idle connection: connect again below
        connect_timeout = self.timeout if timeout is None else timeout
        if conn is None:
            conn = self._http = self._open(connect_timeout)
        if conn.sock is None:
            conn.timeout = connect_timeout
            conn.connect()  # CONNECT tunnel and TLS handshake included
        conn.sock.settimeout(timeout)
        return conn

    def _open(self, timeout: float | None) -> http.client.HTTPConnection:
        scheme = "https" if self._https else "http"
        proxy = _environment_proxy(scheme, self._host, self._port)
        if proxy is None:
            return self._plain_or_tls(self._host, self._port, timeout)
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if url.scheme != "http" or not url.hostname:
            raise CliError(f"unsupported proxy {proxy!r} (from the environment): use http://")
        conn = self._plain_or_tls(url.hostname, url.port or 80, timeout)
        auth = _proxy_authorization(url.username, url.password)
        if self._https:
            conn.set_tunnel(self._host, self._port, headers=auth)  # CONNECT, then TLS inside
        else:
            self._headers.update(auth)
            self._via_proxy = True
        return conn

    def _plain_or_tls(
        self, host: str, port: int, timeout: float | None
    ) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context())
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _context(self) -> ssl.SSLContext:
        """The CA file configured, else the system's trusted CAs (OpenSSL's default paths,
        which ``SSL_CERT_FILE``/``SSL_CERT_DIR`` override), as docs/cli.md says."""
        if self._tls is None:
            ca_file = self.connection.ca_file
            cafile = str(ca_file) if ca_file is not None else None
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls


def _complete(answer: http.client.HTTPResponse) -> Response:
    return Response(
        status_code=answer.status,
        reason_phrase=answer.reason,
        content=answer.read(),
        content_type=answer.getheader("Content-Type") or "",
        location=answer.getheader("Location") or "",
    )


def _query(params: Mapping[str, Any]) -> str:
    """Query string of the given (non-None) parameters; booleans as httpx sent them."""
    items = [
        (key, str(value).lower() if isinstance(value, bool) else value)
        for key, value in params.items()
        if value is not None
    ]
    return urlencode(items, doseq=True)


def _closed_by_peer(sock: Any) -> bool:
    """An idle kept-alive connection with something to read has been closed by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _environment_proxy(scheme: str, host: str, port: int) -> str | None:
    """The proxy the environment names for ``scheme`` unless ``NO_PROXY`` exempts the
    server: as httpx read it, an entry may also be ``host:port`` and ``*`` anywhere in the
    list exempts every server (urllib alone knows neither)."""
    if not any(name.lower() in PROXY_VARIABLES for name in os.environ):
        return None
    # only with proxies set (~8 ms to import: tempfile, hashlib, email)
    from urllib.request import getproxies, proxy_bypass

    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or "*" in (name.strip() for name in proxies.get("no", "").split(",")):
        return None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if proxy_bypass(host) or proxy_bypass(address):
        return None
    return proxy


def _proxy_authorization(user: str | None, password: str | None) -> dict[str, str]:
    if user is None:
        return {}
    secret = f"{unquote(user)}:{unquote(password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(secret).decode("ascii")}


def _reason(exc: Exception) -> str:
    """Short reason of a transport error: '[Errno 111] Connection refused' -> 'connection…'."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    text = text.replace("\n", " ").strip()
    return text[:1].lower() + text[1:]


def error_message(response: Response) -> str:
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
