"""Sending one message: a signed JSON POST to a webhook, or a mail through an SMTP server.

Each sender makes one attempt and raises :class:`DeliveryError` with a one-line reason;
retrying is the notifier's job.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-Ferryman-Signature"
EVENT_HEADER = "X-Ferryman-Event"
TLS_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class DeliveryError(Exception):
    """One attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send_webhook(url: str, body: bytes, secret: str | None, event: str, timeout: float) -> None:
    """POST ``body`` (JSON) to ``url``; any 2xx answer is a delivery."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ferryman-notifier",
        EVENT_HEADER: event,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    shown = redacted(url)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"webhook {shown} did not answer within {timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"cannot reach webhook {shown}: {_first_line(exc)}") from exc
    if response.is_success:
        return
    # a 4xx other than 408/429 will not change by itself: do not insist
    retry = response.status_code >= 500 or response.status_code in (408, 429)
    raise DeliveryError(
        f"webhook {shown} answered HTTP {response.status_code}: {_first_line(response.text)}",
        retry=retry,
    )


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    tls: str  # starttls | ssl | none
    sender: str
    to: list[str] = field(default_factory=list)
    user: str | None = None


def send_email(
    settings: MailSettings, password: str | None, subject: str, body: str, timeout: float
) -> None:
    """Send a plain-text mail through the SMTP server of ``settings``."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="ferryman")
    message.set_content(body)
    where = f"SMTP server {settings.host}:{settings.port}"
    try:
        smtp: smtplib.SMTP
        if settings.tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
        with smtp:
            if settings.tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.user:
                smtp.login(settings.user, password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where} refused the login of {settings.user}", retry=False) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(exc.recipients)
        raise DeliveryError(f"{where} refused the recipient(s) {refused}", retry=False) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: {_first_line(exc)}", retry=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: {_first_line(exc) or type(exc).__name__}") from exc


def redacted(url: str) -> str:
    """``https://hooks.example.org/…``: many webhook URLs carry a token in the path or query,
    so errors and logs show the scheme and host only."""
    parts = urlsplit(url)
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else parts.path
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{rest}"


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__
