"""The web console against a real server process: `ferryman user …`, sign-in over HTTPS,
the console page, and the live event stream."""

from __future__ import annotations

import io
import json
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ferryman.cli.main import run

from .conftest import one_error_line
from .installation import Installation, new_installation

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("console"))
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


def client_config(server: Installation) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((server.home / "client.json").read_text())
    return data


def browser(server: Installation) -> httpx.Client:
    config = client_config(server)
    verify = ssl.create_default_context(cafile=config["ca"])
    return httpx.Client(base_url=config["server"], verify=verify, timeout=30)


def error_line(done: Any) -> str:
    assert done.returncode != 0 and done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferryman: error: "), done.stderr
    return str(lines[0])


Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(
    server: Installation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    """The CLI run in-process (fast) against the real server: (exit code, stdout or the
    one error line); ``stdin`` is what the command reads."""
    for name in ("FERRYMAN_SERVER", "FERRYMAN_TOKEN", "FERRYMAN_CA"):
        monkeypatch.delenv(name, raising=False)

    def ferryman(*args: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = run(["--home", str(server.home), *args])
        return code, one_error_line(capsys) if code else capsys.readouterr().out

    return ferryman


def test_user_commands_manage_console_sign_in(server: Installation, cli: Cli) -> None:
    added = server.ferryman(  # once as a real process, as a user types it
        "user", "add", "alice", "--role", "operator", "--password-stdin", input="s3cret pass\n"
    )
    assert added.returncode == 0, added.stderr
    assert "user alice added (operator)" in added.stdout
    assert "s3cret" not in server.server_log()
    users = json.loads(cli("user", "list", "--json")[1])
    assert [(u["name"], u["role"], u["last_login"]) for u in users] == [("alice", "operator", None)]
    with browser(server) as web:
        page = web.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        signed = web.post("/api/v1/login", json={"user": "alice", "password": "s3cret pass"})
        assert signed.status_code == 200, signed.text
        assert web.get("/api/v1/whoami").json()["via"] == "password"
        changed = cli("user", "passwd", "alice", "--password-stdin", stdin="other pw 1\n")
        assert changed == (0, "password of user alice changed\n")
        assert web.get("/api/v1/whoami").status_code == 401  # signed out by the change
        again = web.post("/api/v1/login", json={"user": "alice", "password": "other pw 1"})
        assert again.status_code == 200
    assert json.loads(cli("user", "list", "--json")[1])[0]["last_login"] is not None
    assert "alice" in cli("user", "list")[1]
    assert cli("user", "remove", "alice") == (0, "user alice removed\n")
    assert cli("user", "list", "--json") == (0, "[]\n")


def test_user_commands_refuse_bad_input_in_one_line(cli: Cli) -> None:
    """Each bad input: one line on stderr, a non-zero exit, nothing changed."""
    add = ("user", "add", "bob", "--role", "viewer")
    assert "use --password-stdin" in cli(*add)[1]
    assert "at least 8 characters" in cli(*add, "--password-stdin", stdin="short\n")[1]
    assert "no password on standard input" in cli(*add, "--password-stdin")[1]
    code, error = cli("user", "add", "bob", "--role", "king", "--password-stdin")
    assert code == 2 and "king" in error
    bad_name = cli("user", "add", "b/b", "--role", "viewer", "--password-stdin",
                   stdin="long enough\n")  # fmt: skip
    assert "name" in bad_name[1]
    assert "unknown user 'nobody'" in cli("user", "remove", "nobody")[1]
    missing = cli("user", "passwd", "nobody", "--password-stdin", stdin="long enough")
    assert "unknown user 'nobody'" in missing[1]
    assert cli("user", "list", "--json") == (0, "[]\n")  # nothing half-created
    assert cli(*add, "--password-stdin", stdin="long enough\n")[0] == 0
    taken = cli(*add, "--password-stdin", stdin="long enough\n")
    assert "a user named 'bob' already exists" in taken[1]
    assert cli("user", "remove", "bob") == (0, "user bob removed\n")


def read_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs of a server-sent event stream (comments skipped)."""
    event, data = "message", ""
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]


def bearer(server: Installation) -> dict[str, str]:
    return {"Authorization": f"Bearer {client_config(server)['token']}"}


def test_event_stream_sends_changes_only(server: Installation, tmp_path: Any) -> None:
    (tmp_path / "a.txt").write_text("live\n" * 1000)
    server.ok("share", "add", "live", str(tmp_path))
    server.ok("job", "add", "live-job", "--share", "live", "--repo", "default")
    with browser(server) as web:
        assert web.get("/api/v1/events").status_code == 401
        assert web.get("/api/v1/events?session=999999", headers=bearer(server)).status_code == 404
        assert web.get("/api/v1/events?session=x", headers=bearer(server)).status_code == 422
        quiet = httpx.Timeout(30, read=3)
        with web.stream("GET", "/api/v1/events", headers=bearer(server), timeout=quiet) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = read_events(stream.iter_lines())
            first = dict([next(events), next(events)])
            assert first["sessions"] == []
            assert [p["name"] for p in first["proxies"]] == ["embedded"]
            with pytest.raises(httpx.ReadTimeout):  # nothing changed: nothing sent
                next(events)

        # follow one session with the console cookie (a token sign-in)
        assert web.post("/api/v1/login", json={"token": client_config(server)["token"]}).is_success
        run = web.post("/api/v1/jobs/live-job/run", headers={"X-Ferryman-Web": "1"})
        assert run.status_code == 201, run.text
        session_id = run.json()["id"]
        statuses = []
        with web.stream("GET", f"/api/v1/events?session={session_id}") as stream:
            for event, data in read_events(stream.iter_lines()):
                if event == "session":
                    assert data["id"] == session_id and data["tasks"]
                    statuses.append(data["status"])
                    if data["status"] != "running":
                        break
        assert statuses[-1] == "success", statuses
        with web.stream("GET", "/api/v1/events") as stream:
            kind, summaries = next(read_events(stream.iter_lines()))
        assert kind == "sessions"
        (summary,) = summaries
        assert (summary["id"], summary["job"], summary["status"]) == (
            session_id,
            "live-job",
            "success",
        )
        assert set(summary["progress"]) == {
            "files_read",
            "bytes_read",
            "bytes_transferred",
            "rate",
            "eta_seconds",
        }


def test_event_stream_ends_when_its_token_is_revoked(server: Installation) -> None:
    """A console signed in with an API token stops receiving events once the token is revoked
    (the stream rechecks its caller every few seconds; it does not wait for a reconnect)."""
    with browser(server) as web:
        made = web.post(
            "/api/v1/tokens", json={"name": "live-viewer", "role": "viewer"}, headers=bearer(server)
        )
        assert made.status_code == 201, made.text
        assert web.post("/api/v1/login", json={"token": made.json()["token"]}).is_success
        with web.stream("GET", "/api/v1/events", timeout=httpx.Timeout(30, read=20)) as stream:
            lines = stream.iter_lines()
            events = read_events(lines)
            assert {next(events)[0], next(events)[0]} == {"sessions", "proxies"}
            revoked = web.delete(f"/api/v1/tokens/{made.json()['id']}", headers=bearer(server))
            assert revoked.status_code == 204, revoked.text
            start = time.monotonic()
            for line in lines:  # keep-alives every 15 s would keep a forgotten stream open
                assert time.monotonic() - start < 15, f"the stream outlived its token: {line!r}"
            assert time.monotonic() - start < 15  # the server ended it
        assert web.get("/api/v1/events").status_code == 401


def test_share_form_refuses_a_path_no_proxy_reaches(server: Installation, tmp_path: Any) -> None:
    with browser(server) as web:
        missing = {"name": "ghost", "url": str(tmp_path / "not-here")}
        refused = web.post("/api/v1/shares?probe=20", json=missing, headers=bearer(server))
        assert refused.status_code == 422, refused.text
        answer = refused.json()
        assert answer["field"] == "url" and "no proxy can reach" in answer["detail"]
        assert "ghost" not in [s["name"] for s in server.json("share", "list")]
        there = {"name": "ghost", "url": str(tmp_path)}
        kept = web.post("/api/v1/shares?probe=20", json=there, headers=bearer(server))
        assert kept.status_code == 201, kept.text
    server.ok("share", "remove", "ghost")


def test_event_streams_share_one_poller_and_all_get_each_change(
    server: Installation, tmp_path: Any
) -> None:
    """Two consoles open at once: one change reaches both, with the same data."""
    (tmp_path / "b.txt").write_text("fan-out\n")
    server.ok("share", "add", "fan", str(tmp_path))
    server.ok("job", "add", "fan-job", "--share", "fan", "--repo", "default")
    with (
        browser(server) as web,
        web.stream("GET", "/api/v1/events", headers=bearer(server)) as one,
        web.stream("GET", "/api/v1/events", headers=bearer(server)) as two,
    ):
        streams = [read_events(one.iter_lines()), read_events(two.iter_lines())]
        for events in streams:  # each starts with the current state
            assert [next(events)[0], next(events)[0]] == ["sessions", "proxies"]
        run = web.post("/api/v1/jobs/fan-job/run", headers=bearer(server))
        assert run.status_code == 201, run.text
        session_id = run.json()["id"]
        seen = []
        for events in streams:
            for event, data in events:
                if event == "sessions" and session_id in [s["id"] for s in data]:
                    seen.append(next(s for s in data if s["id"] == session_id))
                    break
        assert [s["job"] for s in seen] == ["fan-job", "fan-job"]
    server.ok("session", "follow", str(session_id), timeout=120)


def test_event_stream_ends_when_the_server_stops(server: Installation) -> None:
    """Runs last in this module: it stops the server."""
    assert server.process is not None
    with (
        browser(server) as web,
        web.stream("GET", "/api/v1/events", headers=bearer(server)) as stream,
    ):
        lines = stream.iter_lines()
        next(read_events(lines))
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        rest = list(lines)  # ends cleanly instead of hanging until a timeout
        assert time.monotonic() - started < 10, rest
    assert server.process.wait(timeout=15) == 0, server.server_log()


def test_server_init_refuses_a_bad_admin_password_before_creating_anything(
    tmp_path: Any,
) -> None:
    fresh = new_installation(tmp_path)
    bad = fresh.ferryman("server", "init", "--admin-user", "root", input="short\n")
    assert "at least 8 characters" in error_line(bad)
    assert not fresh.home.exists() or not any(fresh.home.iterdir())  # nothing half-made


def test_server_init_adds_a_console_administrator_from_stdin(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from ferryman.server.api.app import create_app
    from ferryman.server.context import ServerContext

    fresh = new_installation(tmp_path)
    made = fresh.ferryman("server", "init", "--admin-user", "root", input="long enough pw\n")
    assert made.returncode == 0, made.stderr
    assert "console user:   root (administrator)\n" in made.stdout
    context = ServerContext.open(fresh.home)
    try:
        with TestClient(create_app(context), base_url="https://testserver") as web:
            signed = web.post("/api/v1/login", json={"user": "root", "password": "long enough pw"})
            assert signed.status_code == 200, signed.text  # the line read, without its newline
            me = web.get("/api/v1/whoami").json()
            assert (me["name"], me["role"], me["via"]) == ("root", "administrator", "password")
    finally:
        context.db.dispose()
