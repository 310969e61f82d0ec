"""End to end: session reports to a webhook and by mail, /metrics, JSON logs, names that
are not UTF-8, restore session fields, and a busy port — one real server, driven by the
CLI, with real peers (HTTP and SMTP servers) on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server.peers import smtp_server, webhook_server  # tests/ is on sys.path (rootdir)

from .installation import Installation, new_installation

pytestmark = pytest.mark.timeout(300)
ODD_NAME = b"caf\xe9 \\ menu.txt"  # Latin-1, not UTF-8, with a backslash


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-obs"))
    installation.env["FERRYMAN_LOG_FORMAT"] = "json"
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("obs-share")
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("hello\n" * 1000)
    (root / "same.bin").write_bytes(b"\x00" * 200_000)
    os.mkdir(os.path.join(os.fsencode(root), b"dir-\xff"))
    with open(os.path.join(os.fsencode(root), b"dir-\xff", ODD_NAME), "wb") as f:
        f.write(b"odd name content\n")
    return root


def wait_for(check: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(server: Installation, token: str | None) -> dict[tuple[str, frozenset[Any]], float]:
    client = json.loads((server.home / "client.json").read_text())
    context = ssl.create_default_context(cafile=str(server.home / client["ca"]))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{client['server']}/metrics", headers=headers, verify=context)
    if response.status_code != 200:
        return {("status", frozenset()): response.status_code}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_reports_metrics_logs(server: Installation, source: Path) -> None:
    warnings.simplefilter("ignore", UserWarning)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with webhook_server() as (url, received), smtp_server() as (smtp_port, mailbox):
        env = {"HOOK_KEY": "k3y-for-signing"}
        done = server.ferryman(
            "notify", "add", "webhook", "hook", url, "--secret-env", "HOOK_KEY", env=env
        )
        assert done.returncode == 0, done.stderr
        server.ok("notify", "add", "webhook", "dead", f"http://127.0.0.1:{dead_port}/",
                  "--on", "success,failed")  # fmt: skip
        server.ok("notify", "add", "email", "ops", "--smtp", f"127.0.0.1:{smtp_port}",
                  "--from", "ferryman@example.org", "--to", "ops@example.org",
                  "--to", "lead@example.org", "--tls", "none", "--on", "all")  # fmt: skip
        assert "delivered" in server.ok("notify", "test", "ops")
        server.ok("share", "add", "obs", str(source))
        server.ok("job", "add", "obs-job", "--share", "obs", "--repo", "default")
        assert "ended SUCCESS" in server.ok("job", "run", "obs-job", "--follow")
        session = server.json("session", "list", "--job", "obs-job")[-1]
        received.arrived.wait(30)
        wait_for(lambda: len(mailbox.messages) >= 2, 30, "the session mail")
        headers, body = received.calls[0]

    # the webhook: the session report as JSON, signed with the key from the environment
    signature = "sha256=" + hmac.new(b"k3y-for-signing", body, hashlib.sha256).hexdigest()
    assert headers["x-ferryman-signature"] == signature
    report = json.loads(body)["session"]
    assert report["id"] == session["id"] and report["status"] == "success"
    [task] = report["tasks"]
    assert task["proxy"] == "embedded" and task["reason"]
    assert task["stats"]["bytes_read"] > 0 and task["stats"]["dedup_ratio"] is not None
    # the mail: subject names the job and the status, the body is the report
    mail = mailbox.messages[1]
    assert mail["Subject"] == f"[Ferryman] backup obs-job: SUCCESS (session {session['id']})"
    assert mail["To"] == "ops@example.org, lead@example.org"
    text = mail.get_payload(decode=True).decode()
    assert "why this proxy:" in text and "dedup ratio:" in text

    # the unreachable webhook: recorded as failed, the session was not affected
    def dead_delivery() -> Any:
        targets = {t["name"]: t for t in server.json("notify", "list")}
        last = targets["dead"]["last_delivery"]
        return last if last and last["status"] != "pending" else None

    last = wait_for(dead_delivery, 60, "the failed delivery")
    assert last["status"] == "failed" and f"127.0.0.1:{dead_port}" in last["error"]
    listing = server.ok("notify", "list")
    assert "failed" in listing and "k3y-for-signing" not in listing
    assert "k3y-for-signing" not in json.dumps(server.json("notify", "list"))

    # metrics: a viewer token is needed; the figures match the session
    assert scrape(server, None) == {("status", frozenset()): 401}
    token = json.loads((server.home / "client.json").read_text())["token"]
    metrics = scrape(server, token)
    done_key = frozenset({("kind", "backup"), ("status", "success")})
    assert metrics[("ferryman_sessions_completed_total", done_key)] >= 1
    assert metrics[("ferryman_bytes_read_total", frozenset({("kind", "backup")}))] == sum(
        t["stats"]["bytes_read"]
        for s in server.json("session", "list", "--kind", "backup")
        for t in s["tasks"]
    )
    assert metrics[("ferryman_proxies", frozenset({("state", "online")}))] == 1
    assert metrics[("ferryman_queue_length", frozenset())] == 0
    assert ("ferryman_job_last_session_end_timestamp_seconds",
            frozenset({("job", "obs-job")})) in metrics  # fmt: skip
    assert metrics[("ferryman_notifications_total",
                    frozenset({("target", "dead"), ("status", "failed")}))] == 1  # fmt: skip

    # JSON logs: every line parses, and the session's end is logged with its id
    lines = [json.loads(line) for line in (server.work / "server.log").read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("session") == session["id"] and "ended success" in line["message"]
               for line in lines)  # fmt: skip
    assert "k3y-for-signing" not in (server.work / "server.log").read_text()


def test_names_that_are_not_utf8(server: Installation, source: Path) -> None:
    if "obs-job" not in [j["name"] for j in server.json("job", "list")]:
        server.ok("share", "add", "obs", str(source))
        server.ok("job", "add", "obs-job", "--share", "obs", "--repo", "default")
        server.ok("job", "run", "obs-job", "--follow")
    point = server.json("point", "list", "--job", "obs-job")[-1]["id"]
    top = {e["name"]: e for e in server.json("ls", str(point))}
    odd_dir = top["dir-\\xff"]
    assert base64.b64decode(odd_dir["name_b64"]) == b"dir-\xff"
    assert odd_dir["type"] == "dir" and odd_dir["path"] == "/dir-\\xff"
    [entry] = server.json("ls", str(point), odd_dir["path"])
    assert base64.b64decode(entry["name_b64"]) == ODD_NAME
    assert entry["name"] == "caf\\xe9 \\\\ menu.txt"  # bytes escaped, backslash doubled
    # the shown path reads back to the same file: versions and restore accept it
    [version] = server.json("versions", "obs", entry["path"])
    assert version["size"] == len(b"odd name content\n")
    # and so does the raw name as a shell passes it (surrogates), for restore --path
    raw_arg = os.fsdecode(b"/dir-\xff/" + ODD_NAME)
    target = server.work / "odd-restore"
    done = server.ferryman("restore", str(point), "--path", raw_arg, "--to", str(target),
                           "--follow")  # fmt: skip
    assert done.returncode == 0, done.stderr
    restored = os.path.join(os.fsencode(target), b"dir-\xff", ODD_NAME)
    with open(restored, "rb") as f:
        assert f.read() == b"odd name content\n"
    # the restore session says what it restored, where, and is listed with the job
    restore = server.json("session", "list", "--job", "obs-job", "--kind", "restore")[-1]
    shown = server.json("session", "show", str(restore["id"]))
    assert shown["point"] == point and shown["target"] == str(target)
    assert shown["paths"] == [entry["path"]] and shown["overwrite"] == "replace"


def test_busy_port_is_one_clear_line(server: Installation) -> None:
    done = server.ferryman("server", "run", timeout=60)
    assert done.returncode == 4, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ferryman: error:")]
    assert lines == [
        f"ferryman: error: port 127.0.0.1:{server.port} is in use by another program "
        "(Address already in use); stop it or choose another address with --listen HOST:PORT"
    ], done.stderr
    assert "Traceback" not in done.stderr


def test_remote_proxy_logs_json_with_its_task(server: Installation, source: Path) -> None:
    server.start_proxy("pj")  # inherits FERRYMAN_LOG_FORMAT=json from the installation
    server.wait_online("pj")
    if "obs" not in [s["name"] for s in server.json("share", "list")]:
        server.ok("share", "add", "obs", str(source))
    server.ok("job", "add", "on-pj", "--share", "obs", "--repo", "default", "--proxies", "pj")
    assert "ended SUCCESS" in server.ok("job", "run", "on-pj", "--follow")
    session = server.json("session", "list", "--job", "on-pj")[-1]
    [task] = session["tasks"]
    log = (server.work / "proxy-pj.log").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert all(line["proxy"] == "pj" for line in lines if line["logger"].startswith("ferryman"))
    mine = [line for line in lines if line.get("task") == task["id"]]
    assert mine and all(line["session"] == session["id"] for line in mine)
    assert any("started" in line["message"] for line in mine)
