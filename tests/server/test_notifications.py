"""Session reports sent to real peers on loopback: a webhook (HTTP) and a mail (SMTP)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import warnings
from pathlib import Path

import pytest
from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import (
    NotificationDelivery,
    NotificationTarget,
    Repository,
    Session,
)
from ferryman.server.notifications.notifier import Notifier, RetryPolicy
from ferryman.server.sessions import on_task_finished, start_single_task_session

from .conftest import Api
from .peers import loopback_certificate, smtp_server, webhook_server

FAST = RetryPolicy(attempts=2, backoff=(0.05,), timeout=5)


def end_check_session(ctx: ServerContext, state: str, error: str | None = None) -> int:
    """A check session run to its end through the server's own bookkeeping."""
    with ctx.db.session() as db:
        repo = db.scalar(select(Repository))
        assert repo is not None
        session = start_single_task_session(db, "check", repo, {"read_data": False})
        task = session.tasks[0]
        task.state, task.error, task.proxy_name = state, error, "embedded"
        task.reason = "the only proxy that reaches the repository"
        task.stats = {"packs_checked": 3}
        on_task_finished(db, task)
        assert session.status == state
        return session.id


def deliver_all(ctx: ServerContext) -> list[str]:
    notifier = Notifier(ctx, FAST)
    return [notifier.deliver(d) for d in notifier.scan()]


def test_webhook_gets_the_signed_report(api: Api, ctx: ServerContext) -> None:
    with webhook_server() as (url, received):
        target = api.post(
            "/notifications",
            {"name": "hook", "kind": "webhook", "url": url, "secret": "s3cret-key"},
        )
        assert target["has_secret"] is True and "s3cret-key" not in json.dumps(target)
        assert target["on"] == ["success", "warning", "failed", "stopped"]
        session_id = end_check_session(ctx, "failed", "repository check found 2 problem(s)")
        assert deliver_all(ctx) == ["delivered"]
        headers, body = received.calls[0]
    expected = "sha256=" + hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
    assert headers["x-ferryman-signature"] == expected
    assert headers["x-ferryman-event"] == "session.ended"
    document = json.loads(body)
    assert document["event"] == "session.ended"
    report = document["session"]
    assert report["id"] == session_id and report["status"] == "failed"
    assert "2 problem(s)" in report["reason"]
    assert report["tasks"][0]["proxy"] == "embedded"
    assert report["tasks"][0]["reason"] == "the only proxy that reaches the repository"
    # sent once: a second look finds nothing new
    assert deliver_all(ctx) == []
    [listed] = api.get("/notifications")
    assert listed["last_delivery"]["status"] == "delivered"
    assert listed["last_delivery"]["session"] == session_id


def test_status_filter(api: Api, ctx: ServerContext) -> None:
    with webhook_server() as (url, received):
        api.post("/notifications", {"name": "bad", "kind": "webhook", "url": url, "on": ["failed"]})
        end_check_session(ctx, "success")
        assert deliver_all(ctx) == []
        failed = end_check_session(ctx, "failed", "broken")
        assert deliver_all(ctx) == ["delivered"]
    assert [json.loads(b)["session"]["id"] for _, b in received.calls] == [failed]


def test_unreachable_webhook_is_recorded_and_the_session_is_unaffected(
    api: Api, ctx: ServerContext
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api.post(
        "/notifications",
        {"name": "gone", "kind": "webhook", "url": f"http://127.0.0.1:{port}/hooks/s3cr3t-token"},
    )
    session_id = end_check_session(ctx, "success")
    assert deliver_all(ctx) == ["failed"]
    with ctx.db.session() as db:
        assert db.get_one(Session, session_id).status == "success"
        delivery = db.scalar(select(NotificationDelivery))
        assert delivery is not None and delivery.attempts == 2
    [listed] = api.get("/notifications")
    assert listed["last_delivery"]["status"] == "failed"
    error = listed["last_delivery"]["error"]
    assert f"cannot reach webhook http://127.0.0.1:{port}/…: " in error
    assert "s3cr3t-token" not in error  # a token in the URL is not repeated in errors
    # a webhook answering 4xx is not retried
    with webhook_server(status=404) as (url, received):
        api.post("/notifications", {"name": "nf", "kind": "webhook", "url": url})
        end_check_session(ctx, "success")
        assert "failed" in deliver_all(ctx)
        assert len(received.calls) == 1


def test_email_report_through_a_real_smtp_server(api: Api, ctx: ServerContext) -> None:
    warnings.simplefilter("ignore", UserWarning)  # aiosmtpd: AUTH without TLS (loopback)
    with smtp_server("backup", "mail-pass") as (port, mailbox):
        target = api.post(
            "/notifications",
            {
                "name": "ops-mail",
                "kind": "email",
                "host": "127.0.0.1",
                "port": port,
                "tls": "none",
                "user": "backup",
                "password": "mail-pass",
                "sender": "ferryman@example.org",
                "to": ["ops@example.org", "boss@example.org"],
            },
        )
        assert "mail-pass" not in json.dumps(target) and target["has_secret"]
        with ctx.db.session() as db:
            stored = db.scalar(select(NotificationTarget))
            assert stored is not None and "mail-pass" not in (stored.secret or "")
        session_id = end_check_session(ctx, "failed", "repository check found 1 problem(s)")
        assert deliver_all(ctx) == ["delivered"]
        test = api.post("/notifications/ops-mail/test", expect=200)
        assert test["status"] == "delivered"
    assert mailbox.logins[0] == ("backup", "mail-pass")
    assert mailbox.envelopes[0] == ("ferryman@example.org", ["ops@example.org", "boss@example.org"])
    mail = mailbox.messages[0]
    assert mail["Subject"] == f"[Ferryman] check: FAILED (session {session_id})"
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "repository check found 1 problem(s)" in body
    assert "on embedded" in body and f"ferryman session show {session_id}" in body
    assert "test message" in str(mailbox.messages[1]["Subject"])


def test_wrong_smtp_password_is_reported_without_the_password(api: Api, ctx: ServerContext) -> None:
    warnings.simplefilter("ignore", UserWarning)
    with smtp_server("backup", "right") as (port, _):
        api.post(
            "/notifications",
            {"name": "m", "kind": "email", "host": "127.0.0.1", "port": port, "tls": "none",
             "user": "backup", "password": "wrong-one", "sender": "a@b.c", "to": ["d@e.f"]},
        )  # fmt: skip
        answer = api.post("/notifications/m/test", expect=200)
    assert answer["status"] == "failed"
    assert "refused the login of backup" in answer["error"] and "wrong-one" not in answer["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"kind": "webhook"}, "a webhook needs a url"),
        ({"kind": "webhook", "url": "ftp://x"}, "must start with http"),
        ({"kind": "webhook", "url": "http://x", "on": ["sometimes"]}, "unknown status sometimes"),
        ({"kind": "email", "host": "h", "sender": "a@b"}, "needs to"),
        ({"kind": "email", "host": "h", "sender": "a@b", "to": ["nobody"]}, "not an e-mail"),
        ({"kind": "email", "host": "h", "sender": "a@b", "to": ["x@y"], "port": 0}, "port"),
    ],
)
def test_bad_targets_are_refused_clearly(api: Api, body: dict[str, object], message: str) -> None:
    answer = api.call("POST", "/notifications", json={"name": "t", **body})
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text


def test_roles(api: Api) -> None:
    viewer = api.post("/tokens", {"name": "v", "role": "viewer"})["token"]
    operator = api.post("/tokens", {"name": "o", "role": "operator"})["token"]
    body = {"name": "h", "kind": "webhook", "url": "http://127.0.0.1:9/hooks/T0K3N"}
    assert api.call("POST", "/notifications", json=body, token=operator).status_code == 403
    api.post("/notifications", body)
    # a webhook URL may hold a token: only administrators see it whole
    assert api.get("/notifications")[0]["url"] == "http://127.0.0.1:9/hooks/T0K3N"
    assert api.get("/notifications", token=viewer)[0]["url"] == "http://127.0.0.1:9/…"
    assert "T0K3N" not in api.call("GET", "/notifications/h", token=operator).text
    assert api.call("POST", "/notifications/h/test", token=viewer).status_code == 403
    assert api.call("DELETE", "/notifications/h", token=operator).status_code == 403
    assert api.call("POST", "/notifications", json=body).status_code == 409
    assert api.call("DELETE", "/notifications/h").status_code == 204
    assert api.call("GET", "/notifications/h").status_code == 404


def test_a_secret_that_cannot_be_decrypted_fails_the_delivery_clearly(
    api: Api, ctx: ServerContext
) -> None:
    api.post("/notifications", {"name": "h", "kind": "webhook", "url": "http://127.0.0.1:9/",
                                "secret": "k"})  # fmt: skip
    with ctx.db.session() as db:
        target = db.scalar(select(NotificationTarget))
        assert target is not None
        target.secret = ctx.secrets.encrypt("k", "some:other:purpose")  # as after a key change
    answer = api.post("/notifications/h/test", expect=200)
    assert answer["status"] == "failed" and answer["attempts"] == 0
    assert "cannot use the target's secret" in answer["error"]


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_mail_over_tls_verifies_the_server(
    api: Api, ctx: ServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: str
) -> None:
    warnings.simplefilter("ignore", UserWarning)
    certificate = loopback_certificate(tmp_path)
    body = {"kind": "email", "host": "127.0.0.1", "tls": tls, "user": "backup",
            "password": "pw", "sender": "a@b.c", "to": ["d@e.f"]}  # fmt: skip
    with smtp_server("backup", "pw", tls=tls, certificate=certificate) as (port, mailbox):
        api.post("/notifications", {**body, "name": "tls", "port": port})
        # not trusted: refused, nothing sent, the password never left over plain text
        untrusted = api.post("/notifications/tls/test", expect=200)
        assert untrusted["status"] == "failed" and "certificate" in untrusted["error"].lower()
        assert mailbox.logins == []
        # trusted through the standard OpenSSL variable, as an installation would do
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        assert api.post("/notifications/tls/test", expect=200)["status"] == "delivered"
    assert mailbox.logins == [("backup", "pw")] and len(mailbox.messages) == 1


def test_a_session_ending_while_the_notifier_scans_is_reported_without_waiting_an_interval(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = Notifier(ctx, FAST, interval=60.0)
    scans: list[float] = []
    real_scan = notifier.scan

    def scan() -> list[int]:
        scans.append(time.monotonic())
        found = real_scan()
        if len(scans) == 1:  # a session ends (and says so) after the first scan read
            ctx.signals.session_changed()
        return found

    monkeypatch.setattr(notifier, "scan", scan)
    notifier.start()
    try:
        deadline = time.monotonic() + 20
        while len(scans) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        notifier.stop()
    # the change signalled during the first scan woke the second at once, not 60 s later
    assert len(scans) >= 2 and scans[1] - scans[0] < 20
