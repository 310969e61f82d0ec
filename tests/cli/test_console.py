"""The web console against a real server process: `ferryman user …`, sign-in over HTTPS,
the console page, and the live event stream."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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


def test_user_commands_manage_console_sign_in(server: Installation) -> None:
    added = server.ferryman(
        "user", "add", "alice", "--role", "operator", "--password-stdin", input="s3cret pass\n"
    )
    assert added.returncode == 0, added.stderr
    assert "user alice added (operator)" in added.stdout
    assert "s3cret" not in server.server_log()
    users = server.json("user", "list")
    assert [(u["name"], u["role"], u["last_login"]) for u in users] == [("alice", "operator", None)]
    with browser(server) as web:
        page = web.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        signed = web.post("/api/v1/login", json={"user": "alice", "password": "s3cret pass"})
        assert signed.status_code == 200, signed.text
        assert web.get("/api/v1/whoami").json()["via"] == "password"
        changed = server.ferryman(
            "user", "passwd", "alice", "--password-stdin", input="other pw 1\n"
        )
        assert changed.returncode == 0, changed.stderr
        assert web.get("/api/v1/whoami").status_code == 401  # signed out by the change
        again = web.post("/api/v1/login", json={"user": "alice", "password": "other pw 1"})
        assert again.status_code == 200
    assert server.json("user", "list")[0]["last_login"] is not None
    assert "alice" in server.ok("user", "list")
    assert server.ok("user", "remove", "alice").strip() == "user alice removed"
    assert server.json("user", "list") == []


def test_user_commands_refuse_bad_input_in_one_line(server: Installation) -> None:
    add = ("user", "add", "bob", "--role", "viewer")
    assert "use --password-stdin" in error_line(server.ferryman(*add))
    short = server.ferryman(*add, "--password-stdin", input="short\n")
    assert "at least 8 characters" in error_line(short)
    empty = server.ferryman(*add, "--password-stdin", input="")
    assert "no password on standard input" in error_line(empty)
    role = server.ferryman("user", "add", "bob", "--role", "king", "--password-stdin", input="x")
    assert role.returncode == 2 and "king" in error_line(role)
    name = server.ferryman("user", "add", "b/b", "--role", "viewer", "--password-stdin",
                           input="long enough\n")  # fmt: skip
    assert "name" in error_line(name)
    assert "unknown user 'nobody'" in error_line(server.ferryman("user", "remove", "nobody"))
    missing = server.ferryman("user", "passwd", "nobody", "--password-stdin", input="long enough")
    assert "unknown user 'nobody'" in error_line(missing)
    assert server.json("user", "list") == []  # nothing half-created
    server.ferryman(*add, "--password-stdin", input="long enough\n")
    taken = server.ferryman(*add, "--password-stdin", input="long enough\n")
    assert "a user named 'bob' already exists" in error_line(taken)
    server.ok("user", "remove", "bob")
