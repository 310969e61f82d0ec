"""The notifier: a background thread that sends each ended session's report to its targets.

Which sessions still need a report is read from the database (a session ended after the
target was created, with a status the target wants, and no delivery row yet), so reports
are not lost when the server restarts. Sending runs on a small thread pool with a timeout
and retries; it never blocks the dispatcher or changes a session. Every outcome is kept
in ``notification_deliveries`` (``notify list`` shows the last one per target).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.api.views import session_view
from ferryman.server.context import ServerContext
from ferryman.server.db.models import (
    NotificationDelivery,
    NotificationTarget,
    Session,
    utcnow,
)
from ferryman.server.notifications import report
from ferryman.server.notifications.senders import (
    DeliveryError,
    MailSettings,
    send_email,
    send_webhook,
)
from ferryman.server.secrets import SecretError

log = logging.getLogger("ferryman.server.notify")

# Session kinds that produce a report (browse and attach sessions are internal).
REPORTED_KINDS = ("backup", "restore", "check", "maintenance")
STATUSES = ("success", "warning", "failed", "stopped")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: Sequence[float] = (2.0, 10.0)  # seconds before the 2nd, 3rd… attempt
    timeout: float = 10.0  # per attempt


def secret_purpose(target_id: int) -> str:
    return f"notification:{target_id}:secret"


class Notifier:
    def __init__(
        self, ctx: ServerContext, policy: RetryPolicy | None = None, interval: float = 2.0
    ) -> None:
        self.ctx = ctx
        self.policy = policy or RetryPolicy()
        self.interval = interval
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        with self.ctx.db.session() as db:
            # deliveries interrupted by a stop or crash are sent again
            pending = list(
                db.scalars(
                    select(NotificationDelivery.id).where(NotificationDelivery.status == "pending")
                )
            )
        for delivery_id in pending:
            self._submit(delivery_id)
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.ctx.signals.session_changed()  # wake the loop from its wait for a change
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # read before scanning: a session ending during the scan wakes the wait at once
            # instead of waiting for the next interval
            generation = self.ctx.signals.session_generation()
            try:
                for delivery_id in self.scan():
                    self._submit(delivery_id)
            except Exception:  # the notifier must outlive a database hiccup
                log.exception("could not look for ended sessions to report")
            self.ctx.signals.wait_session_change(self.interval, since=generation)
            self._stop.wait(0.2)  # progress updates wake us often: at most ~5 scans a second

    # --- finding what to send -------------------------------------------------------------
    def scan(self) -> list[int]:
        """Create a pending delivery for each (target, ended session) not reported yet.

        Returns their ids; the caller sends them (the background loop submits them).
        """
        created: list[int] = []
        with self.ctx.db.session() as db:
            for target in db.scalars(select(NotificationTarget)):
                for session_id in self._unreported(db, target):
                    delivery = NotificationDelivery(target_id=target.id, session_id=session_id)
                    db.add(delivery)
                    db.flush()
                    created.append(delivery.id)
        return created

    def _unreported(self, db: DbSession, target: NotificationTarget) -> list[int]:
        statuses = [s for s in (target.on_statuses or STATUSES) if s in STATUSES]
        done = exists().where(
            NotificationDelivery.target_id == target.id,
            NotificationDelivery.session_id == Session.id,
        )
        query = (
            select(Session.id)
            .where(
                Session.status.in_(statuses),
                Session.kind.in_(REPORTED_KINDS),
                Session.ended >= target.created,
                ~done,
            )
            .order_by(Session.id)
            .limit(100)
        )
        return list(db.scalars(query))

    # --- sending ----------------------------------------------------------------------------
    def _submit(self, delivery_id: int) -> None:
        with self._lock:
            if delivery_id in self._in_flight:
                return
            self._in_flight.add(delivery_id)
        try:
            self._pool.submit(self._deliver, delivery_id)
        except RuntimeError:  # shutting down: sent again at the next start
            with self._lock:
                self._in_flight.discard(delivery_id)

    def _deliver(self, delivery_id: int) -> None:
        try:
            self.deliver(delivery_id)
        except Exception:
            log.exception("notification delivery %d failed unexpectedly", delivery_id)
        finally:
            with self._lock:
                self._in_flight.discard(delivery_id)

    def deliver(self, delivery_id: int) -> str:
        """Send one delivery with retries; record and return its final status."""
        with self.ctx.db.session() as db:
            delivery = db.get(NotificationDelivery, delivery_id)
            if delivery is None or delivery.status != "pending":
                return delivery.status if delivery else "gone"
            target = db.get(NotificationTarget, delivery.target_id)
            if target is None:
                return "gone"
            name, kind, settings = target.name, target.kind, dict(target.settings or {})
            session_id = delivery.session_id
            session = db.get(Session, session_id) if session_id else None
            view = session_view(db, session) if session is not None else None
            secret: str | None = None
            error: str | None = None
            if target.secret:
                try:
                    secret = self.ctx.secrets.decrypt(target.secret, secret_purpose(target.id))
                except SecretError as exc:  # the server key file was replaced
                    error = f"cannot use the target's secret: {exc}"
        context = {"session": session_id, "target": name}
        attempts = 0
        tries = max(1, self.policy.attempts) if error is None else 0
        for attempt in range(1, tries + 1):
            attempts = attempt
            try:
                self._send_once(kind, name, settings, secret, view)
                error = None
                break
            except DeliveryError as exc:
                error = str(exc)
                log.warning(
                    "notification to %s, attempt %d: %s", name, attempt, error, extra=context
                )
                if not exc.retry or attempt >= self.policy.attempts or self._stop.is_set():
                    break
                delays = list(self.policy.backoff) or [0.0]
                self._stop.wait(delays[min(attempt - 1, len(delays) - 1)])
        status = "failed" if error else "delivered"
        with self.ctx.db.session() as db:
            row = db.get(NotificationDelivery, delivery_id)
            if row is not None:
                row.status, row.error, row.attempts, row.finished = (
                    status,
                    error,
                    attempts,
                    utcnow(),
                )
        if status == "delivered":
            log.info("session report sent to %s", name, extra=context)
        return status

    def _send_once(
        self,
        kind: str,
        name: str,
        settings: dict[str, object],
        secret: str | None,
        view: dict[str, object] | None,
    ) -> None:
        timeout = self.policy.timeout
        if kind == "webhook":
            body = report.report_document(view) if view else report.test_document(name)
            event = report.EVENT if view else "test"
            send_webhook(str(settings["url"]), body, secret, event, timeout)
        elif kind == "email":
            mail = MailSettings(
                host=str(settings["host"]),
                port=int(str(settings["port"])),
                tls=str(settings.get("tls", "starttls")),
                sender=str(settings["sender"]),
                to=[str(a) for a in settings.get("to") or []],  # type: ignore[attr-defined]
                user=str(settings["user"]) if settings.get("user") else None,
            )
            if view:
                subject, text = report.subject(view), report.report_text(view)
            else:
                subject = f"[Ferryman] test message to notification target {name}"
                text = f"This is a test of the Ferryman notification target '{name}'.\n"
            send_email(mail, secret, subject, text, timeout)
        else:
            raise DeliveryError(f"unknown notification kind {kind!r}", retry=False)
