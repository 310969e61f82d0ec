"""The CLI's HTTP client against a real local HTTP server: HTTP failures become one clean
line, requests carry what the API expects, and one kept-alive connection is reused or
replaced when the server closed it (the backup server itself is exercised in
test_end_to_end.py)."""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ferryman.cli.client import ApiClient, _environment_proxy
from ferryman.cli.config import Connection
from ferryman.cli.errors import ApiError, CliError, ServerUnreachable
from ferryman.server.ca import CertificateAuthority

from .connect_proxy import ConnectProxy


class Answer:
    """What the test server answers next, and what it was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.content_type = "application/json"
        self.close_after = False  # end the connection after answering (an idle timeout)
        self.drop = False  # end the connection after reading the request, without answering
        self.headers: dict[str, str] = {}  # more headers of the answer
        self.chunks: list[bytes] | None = None  # the body in these chunks (as uvicorn streams)
        self.seen: list[dict[str, Any]] = []  # method, target, headers, body, connection


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def _answer(self) -> None:
        answer: Answer = self.server.answer  # type: ignore[attr-defined]
        self.close_connection = answer.close_after  # read before answering: the test goes on
        length = int(self.headers.get("Content-Length") or 0)
        answer.seen.append(
            {
                "method": self.command,
                "target": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length),
                "connection": self.client_address,
            }
        )
        if answer.drop:
            self.close_connection = True
            return
        # the whole answer taken before any of it is sent: the client has it once the
        # headers (and a Content-Length: 0 body) are out, and the test may then set the
        # next answer while this one is still being written
        status, body, chunks = answer.status, answer.body, answer.chunks
        headers = {"Content-Type": answer.content_type, **answer.headers}
        self.send_response(status)
        if chunks is None:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if chunks is None:
            self.wfile.write(body)
        else:
            for chunk in [*chunks, b""]:  # the empty one ends the body
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
        self.wfile.flush()

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Answer]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.answer = Answer()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.answer  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Answer, Path]]:
    """An HTTPS server whose certificate, from its own CA (the path given), names
    127.0.0.1 only (not localhost)."""
    ca = CertificateAuthority.create(tmp_path / "ca.pem", tmp_path / "ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferryman-server")])
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = ca._leaf(subject, key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.answer = Answer()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", httpd.answer, tmp_path / "ca.pem"  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def no_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own requests go straight to their local servers, whatever proxy the
    environment running them names; a test sets the variables it is about."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@contextmanager
def environment_proxy(monkeypatch: pytest.MonkeyPatch, scheme: str) -> Iterator[list[str]]:
    """A CONNECT proxy named by {scheme}_PROXY; yields the request lines it was sent."""
    proxy = ConnectProxy()
    threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
    try:
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        yield proxy.requests
    finally:
        proxy.shutdown()
        proxy.server_close()


def client_answering(
    server: tuple[str, Answer], status: int, body: object = None, text: str | None = None
) -> ApiClient:
    url, answer = server
    answer.status = status
    if text is not None:
        answer.body, answer.content_type = text.encode(), "text/plain; charset=utf-8"
    else:
        answer.body = json.dumps(body).encode()
    return ApiClient(Connection(server=url, token="secret", ca_file=None))


def test_detail_string_is_the_message(server: tuple[str, Answer]) -> None:
    client = client_answering(server, 404, {"detail": "share 'nope' not found"})
    with pytest.raises(ApiError) as caught:
        client.get("/shares/nope")
    assert caught.value.message == "share 'nope' not found"
    assert caught.value.status_code == 404
    assert server[1].seen[0]["headers"]["Authorization"] == "Bearer secret"


def test_validation_list_names_the_fields(server: tuple[str, Answer]) -> None:
    body = {
        "detail": [
            {"loc": ["body", "schedule"], "msg": "Value error, invalid cron expression 'x'"},
            {"loc": ["body", "priority"], "msg": "Input should be less than or equal to 100"},
        ]
    }
    with pytest.raises(ApiError) as caught:
        client_answering(server, 422, body).post("/jobs", {})
    assert caught.value.message == (
        "schedule: invalid cron expression 'x'; priority: Input should be less than or equal to 100"
    )


def test_unauthorized_hints_at_the_token(server: tuple[str, Answer]) -> None:
    with pytest.raises(ApiError, match=r"not authenticated: bad token \(check --token"):
        client_answering(server, 401, {"detail": "bad token"}).get("/jobs")


def test_server_error_without_json_is_one_line(server: tuple[str, Answer]) -> None:
    with pytest.raises(ApiError) as caught:
        client_answering(server, 502, text="Bad Gateway\n<html>...</html>").get("/jobs")
    assert caught.value.message == "the backup server failed (HTTP 502): Bad Gateway"


def test_error_without_a_body_gives_the_reason_phrase(server: tuple[str, Answer]) -> None:
    with pytest.raises(ApiError) as caught:
        client_answering(server, 503, text="").get("/jobs")
    assert caught.value.message == "the backup server failed (HTTP 503): Service Unavailable"


def test_non_json_success_is_reported(server: tuple[str, Answer]) -> None:
    with pytest.raises(CliError, match=r"not JSON \(GET /jobs, HTTP 200\)"):
        client_answering(server, 200, text="<html>").get("/jobs")


def test_empty_answer_is_none(server: tuple[str, Answer]) -> None:
    assert client_answering(server, 204, text="").delete("/jobs/x") is None


def test_a_redirect_is_not_taken_for_a_success(server: tuple[str, Answer]) -> None:
    """A front end sending the CLI elsewhere (http -> https): not followed, and not an
    empty success either (a DELETE would have reported a removal that did not happen)."""
    url, answer = server
    client = client_answering(server, 308, text="")
    answer.headers["Location"] = "https://backup.example.com/api/v1/jobs/x"
    expected = (
        f"the backup server at {url} redirects DELETE /jobs/x to "
        "https://backup.example.com/api/v1/jobs/x (HTTP 308): give the address it redirects "
        "to as --server or in the client config"
    )
    with pytest.raises(CliError) as caught:
        client.delete("/jobs/x")
    assert caught.value.message == expected
    answer.status, answer.body = 301, b"<html>Moved Permanently</html>"
    with pytest.raises(CliError) as caught:
        client.get("/jobs")
    assert caught.value.message.startswith(f"the backup server at {url} redirects GET /jobs ")
    with pytest.raises(CliError) as caught:
        list(client.stream("POST", "/proxies/deploy", {}))
    assert "redirects POST /proxies/deploy to https://backup.example.com" in caught.value.message
    assert [seen["method"] for seen in answer.seen] == ["DELETE", "GET", "POST"]


def test_requests_carry_the_prefix_query_and_a_json_body(server: tuple[str, Answer]) -> None:
    client = client_answering(server, 200, {"id": 7})
    assert client.post("/jobs/a%2Fb/run", {"name": "é", "n": 1}, params={"x": True}) == {"id": 7}
    params = {"revision": 3, "timeout": 10, "job": None, "path": "/a b/ü"}
    client.get("/sessions/7/follow", params)
    post, get = server[1].seen
    assert post["method"] == "POST" and post["target"] == "/api/v1/jobs/a%2Fb/run?x=true"
    assert post["headers"]["Content-Type"] == "application/json"
    assert json.loads(post["body"]) == {"name": "é", "n": 1}
    assert post["body"] == '{"name":"é","n":1}'.encode()  # as httpx encoded it
    assert get["target"] == "/api/v1/sessions/7/follow?revision=3&timeout=10&path=%2Fa+b%2F%C3%BC"
    assert get["body"] == b"" and "Content-Type" not in get["headers"]


def test_one_connection_is_kept_for_every_request(server: tuple[str, Answer]) -> None:
    client = client_answering(server, 200, {"ok": True})
    for _ in range(3):
        client.get("/health")
    assert len({seen["connection"] for seen in server[1].seen}) == 1


def test_a_connection_the_server_closed_is_replaced(server: tuple[str, Answer]) -> None:
    """An idle keep-alive connection the server ended is not used for the next request."""
    answer = server[1]
    client = client_answering(server, 200, {"ok": True})
    answer.close_after = True
    client.get("/health")
    answer.close_after = False
    sock = client._http.sock if client._http is not None else None
    if sock is not None:  # wait until the close has reached us, as after an idle timeout
        select.select([sock], [], [], 5)
    assert client.get("/health") == {"ok": True}
    assert client.post("/jobs/x/run") == {"ok": True}
    first, second, third = (seen["connection"] for seen in answer.seen)
    assert first != second == third


def test_a_request_the_server_dropped_after_receiving_it_is_not_sent_again(
    server: tuple[str, Answer],
) -> None:
    """The server ended the kept-alive connection after receiving the POST, without
    answering: the job may have started, so the POST is not sent a second time."""
    answer = server[1]
    client = client_answering(server, 200, {"ok": True})
    assert client.get("/health") == {"ok": True}  # the connection is now kept alive
    answer.drop = True
    with pytest.raises(ServerUnreachable) as caught:
        client.post("/jobs/nightly/run")
    assert caught.value.message == (
        f"cannot reach the backup server at {server[0]}: remote end closed connection "
        "without response"
    )
    assert [seen["method"] for seen in answer.seen] == ["GET", "POST"]
    answer.drop = False
    assert client.get("/health") == {"ok": True}  # a new connection for the next request
    assert [seen["method"] for seen in answer.seen] == ["GET", "POST", "GET"]


def test_a_stream_yields_each_line(server: tuple[str, Answer]) -> None:
    lines = [{"step": 1}, {"step": 2, "done": True}]
    client = client_answering(server, 200)
    server[1].body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    assert list(client.stream("POST", "/proxies/deploy", {"host": "h"})) == lines
    server[1].body = b'{"ok": true}'
    assert client.get("/health") == {"ok": True}  # the connection is reused after a stream
    assert len({seen["connection"] for seen in server[1].seen}) == 1


def test_chunked_answers_are_read_whole_and_by_line(server: tuple[str, Answer]) -> None:
    """The server streams its answers chunked; a line may span chunks, or a chunk hold
    several lines; the connection is kept for the next request."""
    answer = server[1]
    client = client_answering(server, 200)
    answer.chunks = [b'{"jobs": [1,', b" 2]}"]
    assert client.get("/jobs") == {"jobs": [1, 2]}
    answer.chunks = [b'{"step": 1}\n{"st', b'ep": 2}\n', b'\n{"step": 3, "done": true}\n']
    events = list(client.stream("POST", "/proxies/deploy", {}))
    assert events == [{"step": 1}, {"step": 2}, {"step": 3, "done": True}]
    answer.chunks = None
    answer.body = b'{"ok": true}'
    assert client.get("/health") == {"ok": True}
    assert len({seen["connection"] for seen in answer.seen}) == 1


def test_a_stream_left_before_its_end_does_not_spoil_the_next_request(
    server: tuple[str, Answer],
) -> None:
    """proxy_deploy's follow returns at the "done" event, before the answer's end."""
    client = client_answering(server, 200)
    server[1].body = b'{"event": "done"}\n{"event": "late"}\n'
    for event in client.stream("POST", "/proxies/x/upgrade", {}):
        assert event == {"event": "done"}
        break
    server[1].body = b'{"ok": true}'
    assert client.get("/health") == {"ok": True}


def test_a_stream_refused_is_the_server_message(server: tuple[str, Answer]) -> None:
    client = client_answering(server, 409, {"detail": "already deploying"})
    with pytest.raises(ApiError, match=r"^already deploying$"):
        list(client.stream("POST", "/proxies/deploy", {}))


def test_connection_refused_names_the_server() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ApiClient(Connection(server=f"http://127.0.0.1:{port}", token=None, ca_file=None))
    with pytest.raises(ServerUnreachable) as caught:
        client.get("/health")
    assert caught.value.message == (
        f"cannot reach the backup server at http://127.0.0.1:{port}: connection refused"
    )


def test_a_silent_server_is_a_timeout() -> None:
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = ApiClient(Connection(server=url, token=None, ca_file=None), timeout=0.3)
        with pytest.raises(ServerUnreachable) as caught:
            client.get("/health")
    assert caught.value.message == f"the backup server at {url} did not answer in time"


@pytest.mark.timeout(20)
def test_a_stream_from_a_silent_server_gives_up_at_the_connect_timeout() -> None:
    """The answer of a stream may take long (no read timeout), but connecting, TLS
    handshake included, is bounded by the client's timeout as any request's."""
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        client = ApiClient(Connection(server=url, token=None, ca_file=None), timeout=0.3)
        with pytest.raises(ServerUnreachable) as caught:
            list(client.stream("POST", "/proxies/deploy", {}))
    assert caught.value.message == f"the backup server at {url} did not answer in time"


def test_a_stream_names_a_certificate_that_does_not_verify(
    tls_server: tuple[str, Answer, Path], tmp_path: Path
) -> None:
    url, answer, _ = tls_server
    CertificateAuthority.create(tmp_path / "other-ca.pem", tmp_path / "other-ca.key", "Other")
    client = ApiClient(Connection(server=url, token=None, ca_file=tmp_path / "other-ca.pem"))
    with pytest.raises(CliError) as caught:
        list(client.stream("POST", "/proxies/deploy", {}))
    assert caught.value.message.startswith(
        f"the backup server at {url} has a certificate that does not verify against "
        f"{tmp_path / 'other-ca.pem'} (wrong --ca or client config?): "
    )
    assert answer.seen == []


def test_the_environments_proxy_is_used(
    server: tuple[str, Answer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY (as httpx honoured it) carries the requests; NO_PROXY exempts a host."""
    with environment_proxy(monkeypatch, "http") as requests:
        url, _ = server
        assert client_answering(server, 200, {"ok": 1}).get("/health") == {"ok": 1}
        assert requests == [f"GET {url}/api/v1/health HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert client_answering(server, 200, {"ok": 2}).get("/health") == {"ok": 2}
        assert len(requests) == 1


@pytest.mark.parametrize(
    ("no_proxy", "host", "bypassed"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1:8443", "127.0.0.1", True),  # host:port, as httpx honoured it
        ("127.0.0.1:9999", "127.0.0.1", False),  # another port of the host
        ("other, *", "127.0.0.1", True),  # "*" anywhere in the list, as httpx
        ("*", "backup.example.com", True),
        (" other.org , .Example.COM", "backup.example.com", True),  # dot, case, spaces
        ("example.com", "Backup.Example.com", True),
        ("example.com", "example.com", True),
        ("ample.com", "backup.example.com", False),  # a suffix, but not a domain's
        ("::1", "::1", True),
        ("[::1]:8443", "::1", True),
        ("", "backup.example.com", False),
    ],
)
def test_no_proxy_exempts_hosts_as_the_common_convention(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, host: str, bypassed: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    expected = None if bypassed else "http://proxy.test:3128"
    assert _environment_proxy("https", host, 8443) == expected


def test_an_unsupported_proxy_is_one_line(
    server: tuple[str, Answer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(CliError, match=r"unsupported proxy 'socks5://127\.0\.0\.1:1080'"):
        client_answering(server, 200, {}).get("/health")


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "through-https-proxy"])
def test_tls_verifies_the_certificate_and_the_name(
    tls_server: tuple[str, Answer, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tunnel: bool,
) -> None:
    """The configured CA file verifies the server (and only it: another CA is refused), the
    certificate must name the host, directly and inside the CONNECT tunnel; each refusal
    is one line, before any request is sent."""
    url, answer, ca = tls_server
    port = url.rsplit(":", 1)[1]
    CertificateAuthority.create(tmp_path / "other-ca.pem", tmp_path / "other-ca.key", "Other")
    proxy: AbstractContextManager[list[str]] = nullcontext([])
    if tunnel:
        proxy = environment_proxy(monkeypatch, "https")
    with proxy as requests:
        client = ApiClient(Connection(server=url, token="secret", ca_file=ca))
        assert client.get("/health") == {}
        other_ca = Connection(server=url, token="secret", ca_file=tmp_path / "other-ca.pem")
        with pytest.raises(CliError) as wrong_ca:
            ApiClient(other_ca).get("/health")
        by_name = Connection(server=f"https://localhost:{port}", token="secret", ca_file=ca)
        with pytest.raises(CliError) as wrong_name:
            ApiClient(by_name).get("/health")
    assert len(answer.seen) == 1
    assert wrong_ca.value.message.startswith(
        f"the backup server at {url} has a certificate that does not verify against "
        f"{tmp_path / 'other-ca.pem'} (wrong --ca or client config?): "
    )
    assert "unable to get local issuer certificate" in wrong_ca.value.message
    assert "certificate is not valid for 'localhost'" in wrong_name.value.message
    assert wrong_name.value.message.startswith(  # the CA is right: no hint at --ca
        f"the backup server at https://localhost:{port} has a certificate that does not name "
        "localhost (give --server a name or address it holds): "
    )
    assert "\n" not in wrong_ca.value.message + wrong_name.value.message
    if tunnel:
        assert [line.rsplit(" ", 1)[0] for line in requests] == [
            f"CONNECT 127.0.0.1:{port}",
            f"CONNECT 127.0.0.1:{port}",
            f"CONNECT localhost:{port}",
        ]
